//! Data transfers: RETR, STOR, APPE, STOU (RFC 959 §4.1.3, RFC 1123 §4.1.2.9) and
//! the listings LIST, NLST (RFC 959) and MLSD (RFC 3659 §7).
//!
//! Everything that can fail before data flows (permissions, paths, missing files,
//! unsupported modes) is answered before the 150 reply. The transfer then runs as a
//! task; its final reply is 226 only after the backend committed an upload, 426
//! when the client broke the connection or sent ABOR, 425 when no data connection
//! could be made, and 451/452 for storage failures (RFC 959 §4.2).

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use ftpgate_storage::{
    ByteStream, EntryStream, ErrorKind, FileRange, ReadSource, Resumed, StorageError, Upload,
    VPath, WriteMode,
};
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio_util::sync::CancellationToken;

use super::{target, tri, user, Ctx, Outcome, Transfer, TransferEnd};
use crate::auth::{Permission, User};
use crate::checksum::{hex, UploadDigest};
use crate::datachan::{self, DataEndpoint, DataStream};
use crate::errors::storage_reply;
use crate::listing::{list_line, mlsx_line, name_is_listable, perm_fact, Facts};
use crate::liveness::ControlProbe;
use crate::protocol::code;
use crate::protocol::{Reply, TransferType};
use crate::resume::{self, Park};

/// Bytes gathered from the data socket before each backend write on upload. With
/// the local backend's queue of 4 chunks, one upload holds at most ~5 MiB.
const UPLOAD_CHUNK: usize = 1024 * 1024;

/// The chunk size once more than [`MANY_UPLOADS`] uploads run (issue 13 §5).
const SMALL_UPLOAD_CHUNK: usize = 256 * 1024;

/// Uploads running at once above which chunks shrink to [`SMALL_UPLOAD_CHUNK`]: 300
/// uploads holding two or three 1 MiB chunks each took 600 MiB of fresh pages (a
/// page fault each) for nothing, since the disk and hashing pools drain no faster
/// for deeper buffers; one stream still gets large writes.
const MANY_UPLOADS: usize = 32;

/// Uploads receiving now.
static UPLOADS_RECEIVING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts one receiving upload for as long as it lives.
struct Receiving;

impl Receiving {
    fn start() -> Self {
        UPLOADS_RECEIVING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Receiving
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        UPLOADS_RECEIVING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The size of the next chunk to gather: [`UPLOAD_CHUNK`], or
/// [`SMALL_UPLOAD_CHUNK`] while more than [`MANY_UPLOADS`] uploads run.
fn chunk_target() -> usize {
    if UPLOADS_RECEIVING.load(std::sync::atomic::Ordering::Relaxed) > MANY_UPLOADS {
        SMALL_UPLOAD_CHUNK
    } else {
        UPLOAD_CHUNK
    }
}

/// Largest piece of a throttled download written at once (`users.download_bytes_per_sec`).
const THROTTLE_SLICE: usize = 64 * 1024;

/// STOR or APPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StoreKind {
    /// Replace (or continue at REST offset).
    Stor,
    /// Append.
    Appe,
}

/// Which listing format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListKind {
    /// `ls -l` lines.
    List,
    /// Names only.
    Nlst,
    /// RFC 3659 facts.
    Mlsd,
}

/// How the transfer task reaches the client.
struct DataLink {
    endpoint: DataEndpoint,
    policy: datachan::DataPolicy,
    stall: Duration,
    /// `PROT P`: TLS on the data connection, bound to this control connection.
    tls: Option<crate::tls::ConnTls>,
}

impl DataLink {
    async fn open(self) -> Result<DataConn, TransferEnd> {
        let stall = self.stall;
        let tcp = datachan::open(self.endpoint, &self.policy)
            .await
            .map_err(|e| {
                tracing::info!(error = %e, "data connection failed");
                end(code::CANT_OPEN_DATA, "Cannot open data connection", 0)
            })?;
        let sock = match self.tls {
            None => DataStream::Plain(tcp),
            Some(tls) => match tls.accept_data(tcp).await {
                Ok(s) => DataStream::Tls(Box::new(s)),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    tracing::warn!(error = %e, "data connection refused");
                    return Err(end(code::CANT_OPEN_DATA, crate::tls::NOT_RESUMED, 0));
                }
                Err(e) => {
                    tracing::info!(error = %e, "TLS on the data connection failed");
                    return Err(end(
                        code::CANT_OPEN_DATA,
                        "Cannot open data connection: TLS negotiation failed",
                        0,
                    ));
                }
            },
        };
        Ok(DataConn { sock, stall })
    }
}

/// An open data connection whose reads and writes fail when the peer makes no
/// progress for `stall` (a client that stops reading must not pin a transfer forever).
struct DataConn {
    sock: DataStream,
    stall: Duration,
}

fn stalled() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "data connection stalled")
}

impl DataConn {
    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(self.stall, self.sock.write_all(buf))
            .await
            .unwrap_or_else(|_| Err(stalled()))
    }

    async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        tokio::time::timeout(self.stall, self.sock.read_buf(buf))
            .await
            .unwrap_or_else(|_| Err(stalled()))
    }
}

fn end(code: u16, text: &str, bytes: u64) -> TransferEnd {
    TransferEnd {
        reply: Reply::new(code, text),
        bytes,
        sha256: None,
    }
}

fn aborted(bytes: u64) -> TransferEnd {
    end(
        code::TRANSFER_ABORTED,
        "Connection closed; transfer aborted",
        bytes,
    )
}

/// The pending data endpoint, or 425 when PASV/PORT did not come first; 521 when
/// TLS is required and the client did not send `PROT P` (RFC 4217 §9).
fn data_link(ctx: &mut Ctx<'_>) -> Result<DataLink, Reply> {
    if ctx.session.tls_required() && !ctx.session.prot_private {
        return Err(Reply::new(
            code::PROT_REQUIRED,
            "Data connections must be protected: send PBSZ 0 and PROT P",
        ));
    }
    let endpoint = ctx
        .data
        .take()
        .map(|e| *e)
        .ok_or_else(|| Reply::new(code::CANT_OPEN_DATA, "Use PORT, PASV or EPSV first"))?;
    Ok(DataLink {
        endpoint,
        policy: ctx
            .server
            .data_policy(ctx.session.peer.ip(), ctx.session.socket_local.ip()),
        stall: Duration::from_secs(ctx.server.config.server.idle_timeout_secs),
        tls: if ctx.session.prot_private {
            // PROT P needs AUTH TLS, which sets the context; never fall back to
            // a clear data connection.
            Some(ctx.session.tls.clone().ok_or_else(|| {
                Reply::new(
                    code::CANT_OPEN_DATA,
                    "Cannot open data connection: no TLS on the control connection",
                )
            })?)
        } else {
            None
        },
    })
}

fn ascii(ctx: &Ctx<'_>) -> bool {
    ctx.session.transfer_type == TransferType::Ascii && ctx.server.config.transfer.ascii_conversion
}

fn mode_word(ascii: bool) -> &'static str {
    if ascii {
        "ASCII"
    } else {
        "BINARY"
    }
}

fn transfer(
    preliminary: Reply,
    path: &VPath,
    cancel: CancellationToken,
    job: impl std::future::Future<Output = TransferEnd> + Send + 'static,
) -> Outcome {
    Outcome::Transfer(Transfer {
        preliminary,
        job: Box::pin(job),
        cancel,
        path: path.to_string(),
    })
}

/// RETR: stream a file (from the REST offset) to the client.
pub(super) async fn retr(ctx: &mut Ctx<'_>, arg: &str) -> Outcome {
    let offset = ctx.session.rest.take().unwrap_or(0);
    let t = tri!(target(ctx, arg, Some(Permission::Read)));
    if ctx.data.is_none() {
        return Reply::new(code::CANT_OPEN_DATA, "Use PORT, PASV or EPSV first").into();
    }
    let storage = ctx.storage();
    // A binary RETR over a plain data connection (`PROT P` is what makes it TLS, see
    // `data_link`) may take the local file itself, for sendfile(2).
    // A throttled user (`users.download_bytes_per_sec`) is paced by the streamed path.
    let zero_copy =
        !ascii(ctx) && !ctx.session.prot_private && ctx.session.throttles.download.is_none();
    // One step (S3: one GET): metadata and content together.
    let opened = if zero_copy {
        storage.open_source(&t.storage, offset).await
    } else {
        storage
            .open(&t.storage, offset)
            .await
            .map(|(meta, stream)| (meta, ReadSource::Stream(stream)))
    };
    let (meta, source) = match opened {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::InvalidInput => {
            return Reply::new(
                code::INVALID_PARAMETER,
                format!("Restart offset {offset} is beyond the end of the file"),
            )
            .into()
        }
        Err(e) => return storage_reply(&e).into(),
    };
    let ascii = ascii(ctx);
    let link = tri!(data_link(ctx));
    let throttle = ctx.session.throttles.download.clone();
    let metrics = ctx.server.metrics.clone();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let pre = Reply::new(
        code::OPENING_DATA,
        format!(
            "Opening {} mode data connection for {} ({} bytes)",
            mode_word(ascii),
            t.shown,
            meta.size.saturating_sub(offset)
        ),
    );
    transfer(pre, &t.storage, cancel, async move {
        let sock = match link.open().await {
            Ok(s) => s,
            Err(e) => return e,
        };
        match source {
            ReadSource::Stream(stream) => send_file(sock, stream, ascii, c, throttle).await,
            ReadSource::File(range) => send_range(sock, range, &metrics, c).await,
        }
    })
}

/// A binary RETR of a local file over a plain data connection: `sendfile(2)` from
/// the file to the socket (see [`crate::sendfile`]); the replies are those of
/// [`send_file`]: 426 when the client breaks off, sends `ABOR` or stalls, 451 when
/// reading fails or the file shrank (never 226 with fewer bytes than announced).
async fn send_range(
    mut sock: DataConn,
    range: FileRange,
    metrics: &crate::metrics::Metrics,
    cancel: CancellationToken,
) -> TransferEnd {
    use crate::sendfile::{send, Sent};
    let DataStream::Plain(tcp) = &sock.sock else {
        // `zero_copy` in `retr` rules this out: TLS streams the file instead.
        tracing::warn!("a file source reached a TLS data connection");
        return end(
            code::LOCAL_ERROR,
            "Transfer failed: local error in processing",
            0,
        );
    };
    let sent = send(
        tcp,
        &range.file,
        range.offset,
        range.len,
        sock.stall,
        &cancel,
    )
    .await;
    metrics.transfer_sendfile_bytes.inc_by(sent.bytes());
    match sent {
        Sent::Complete(n) => {
            if sock.sock.shutdown().await.is_err() {
                return aborted(n);
            }
            end(code::CLOSING_DATA, "Transfer complete", n)
        }
        Sent::Shrank { sent, missing } => {
            tracing::warn!(sent, missing, "file shrank while being sent");
            end(
                code::LOCAL_ERROR,
                "Transfer failed: the file shrank while being sent",
                sent,
            )
        }
        Sent::Cancelled(n) | Sent::Stalled(n) => aborted(n),
        Sent::Broken(n, e) => {
            tracing::debug!(error = %e, "data connection broke during sendfile");
            aborted(n)
        }
        Sent::ReadFailed(n, e) => {
            tracing::warn!(error = %e, "reading a file for sendfile failed");
            end(
                code::LOCAL_ERROR,
                "Transfer failed: Local error in processing",
                n,
            )
        }
    }
}

/// Sends a file; `throttle` is the user's shared download bucket
/// (`users.download_bytes_per_sec`).
async fn send_file(
    mut sock: DataConn,
    mut stream: ByteStream,
    ascii: bool,
    cancel: CancellationToken,
    throttle: Option<std::sync::Arc<crate::limits::Throttle>>,
) -> TransferEnd {
    let mut sent = 0u64;
    let mut prev_cr = false;
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return aborted(sent),
            n = stream.next() => n,
        };
        let chunk = match next {
            None => break,
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                let r = storage_reply(&e);
                return end(
                    code::LOCAL_ERROR,
                    &format!("Transfer failed: {}", r.lines.join(" ")),
                    sent,
                );
            }
        };
        let chunk = if ascii {
            to_crlf(&chunk, &mut prev_cr)
        } else {
            chunk
        };
        // Throttled: pieces of at most THROTTLE_SLICE, each after its tokens, so a
        // slow rate sends steadily instead of pausing a whole chunk's time.
        let step = if throttle.is_some() {
            THROTTLE_SLICE
        } else {
            chunk.len().max(1)
        };
        let mut at = 0;
        while at < chunk.len() {
            let piece = chunk.slice(at..(at + step).min(chunk.len()));
            at += piece.len();
            if let Some(t) = &throttle {
                if !t.pass(piece.len() as u64, &cancel).await {
                    return aborted(sent);
                }
            }
            let w = tokio::select! {
                biased;
                _ = cancel.cancelled() => return aborted(sent),
                w = sock.write_all(&piece) => w,
            };
            if w.is_err() {
                return aborted(sent);
            }
            sent += piece.len() as u64;
        }
    }
    drop(stream);
    if sock.sock.shutdown().await.is_err() {
        return aborted(sent);
    }
    end(code::CLOSING_DATA, "Transfer complete", sent)
}

/// LF → CRLF for TYPE A sends (RFC 959 §3.1.1.1); `prev_cr` carries a CR that
/// ended the previous chunk.
pub fn to_crlf(chunk: &[u8], prev_cr: &mut bool) -> Bytes {
    let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 32);
    for &b in chunk {
        if b == b'\n' && !*prev_cr {
            out.push(b'\r');
        }
        out.push(b);
        *prev_cr = b == b'\r';
    }
    Bytes::from(out)
}

/// CRLF → LF for TYPE A receives; `pending_cr` holds a CR that ended a chunk.
pub fn from_crlf(chunk: &[u8], pending_cr: &mut bool) -> Bytes {
    let mut out = Vec::with_capacity(chunk.len() + 1);
    for &b in chunk {
        if *pending_cr {
            *pending_cr = false;
            if b != b'\n' {
                out.push(b'\r');
            }
        }
        if b == b'\r' {
            *pending_cr = true;
        } else {
            out.push(b);
        }
    }
    Bytes::from(out)
}

/// STOR / APPE: receive into an [`Upload`] that commits only at the end.
pub(super) async fn stor(ctx: &mut Ctx<'_>, arg: &str, kind: StoreKind) -> Outcome {
    let rest = ctx.session.rest.take();
    let t = tri!(target(ctx, arg, Some(Permission::Write)));
    let mode = match (kind, rest) {
        (StoreKind::Appe, _) => WriteMode::Append,
        (StoreKind::Stor, Some(n)) if n > 0 => WriteMode::Offset(n),
        (StoreKind::Stor, _) => WriteMode::Truncate,
    };
    // Usage known before a pending upload is taken up (see `quota_area`).
    tri!(quota_area(ctx).await);
    let park = park_plan(ctx, &t.storage);
    // A plain STOR only discards a pending upload: skipped when the backend knows
    // there is none (S3: no request per upload, see `may_have_pending`).
    let lookup = park
        .as_ref()
        .filter(|p| mode != WriteMode::Truncate || ctx.storage().may_have_pending(&p.key));
    if let (Some(p), Some(window)) = (lookup, ctx.storage_config().resume_window()) {
        let storage = ctx.storage();
        let metrics = &ctx.server.metrics;
        match resume::find(&*storage, window, &p.key, metrics).await {
            // APPE, or REST n with n the size SIZE reported — or a little less, as
            // wput sends (512 bytes before): continue it from there.
            resume::Found::Live(pending) if resume_offset(mode, pending.size).is_some() => {
                let offset = resume_offset(mode, pending.size).unwrap_or(pending.size);
                match storage.resume_upload(&p.key, offset).await {
                    Ok(r) => {
                        let p = Park {
                            resumed_from: offset,
                            ..p.clone()
                        };
                        tracing::info!(user = %p.key.owner, path = %p.key.path, offset, kept = pending.size, "resuming a pending upload");
                        resume::event(metrics, "resumed");
                        let shown = t.shown.to_string();
                        return begin_upload_with(
                            ctx,
                            t.storage,
                            shown,
                            mode,
                            None,
                            Some(p),
                            Some(r),
                        )
                        .await;
                    }
                    // Taken meanwhile by another session: the upload is a plain one.
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return storage_reply(&e).into(),
                }
            }
            resume::Found::None => {}
            // A plain STOR, or another offset: start over.
            _ => resume::discard(&*storage, &p.key).await,
        }
    }
    begin_upload_with(ctx, t.storage, t.shown.to_string(), mode, None, park, None).await
}

/// Where an upload in `mode` continues a pending upload of `size` bytes: APPE at its
/// end, `REST n` at `n` for 0 < n ≤ size; `None` (start over) otherwise.
fn resume_offset(mode: WriteMode, size: u64) -> Option<u64> {
    match mode {
        WriteMode::Append => Some(size),
        WriteMode::Offset(n) if n > 0 && n <= size => Some(n),
        _ => None,
    }
}

/// How an interrupted upload to `path` would be kept for resuming: `None` when
/// `storage.resume_window_secs` is 0, before login, or under TYPE A conversion (its
/// byte counts are not the file's).
fn park_plan(ctx: &Ctx<'_>, path: &VPath) -> Option<Park> {
    let config = ctx.storage_config();
    config.resume_window()?;
    let user = ctx.session.user()?;
    if ascii(ctx) {
        return None;
    }
    Some(Park {
        storage: ctx.storage(),
        key: resume::key(&user.name, path),
        bounds: config.resume_bounds(),
        metrics: ctx.server.metrics.clone(),
        resumed_from: 0,
    })
}

/// Whether uploads to the user's backend are hashed (`storage.upload_sha256`). An
/// APPE or REST+STOR upload hashes only the new bytes, so its digest is not the
/// file's: those are not hashed.
fn hashes_uploads(ctx: &Ctx<'_>, mode: WriteMode) -> bool {
    matches!(mode, WriteMode::Truncate | WriteMode::CreateNew)
        && ctx.storage_config().upload_sha256.unwrap_or(true)
}

/// STOU: store under a name that does not exist yet; the 150 reply carries
/// `FILE: name` (RFC 1123 §4.1.2.9). A user without `list` (a drop box) always
/// gets the proposed name with a random suffix, so the reply never tells whether
/// the plain name exists.
pub(super) async fn stou(ctx: &mut Ctx<'_>, arg: Option<&str>) -> Outcome {
    ctx.session.rest = None;
    let blind = !tri!(user(ctx)).may(Permission::List);
    let base = match arg {
        Some(a) => a.to_owned(),
        None => format!(
            "ftpgate-{}",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        ),
    };
    for i in 0..1000u32 {
        let candidate = if blind {
            format!("{base}.{:016x}", rand::random::<u64>())
        } else if i == 0 {
            base.clone()
        } else {
            format!("{base}.{i}")
        };
        let t = tri!(target(ctx, &candidate, Some(Permission::Write)));
        match ctx.storage().stat(&t.storage).await {
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let name = t.shown.file_name().unwrap_or_default().to_owned();
                return begin_upload(
                    ctx,
                    t.storage,
                    t.shown.to_string(),
                    WriteMode::CreateNew,
                    Some(name),
                )
                .await;
            }
            Err(e) => return storage_reply(&e).into(),
        }
    }
    Reply::new(code::NAME_NOT_ALLOWED, "Could not find a unique file name").into()
}

async fn begin_upload(
    ctx: &mut Ctx<'_>,
    path: VPath,
    shown: String,
    mode: WriteMode,
    unique: Option<String>,
) -> Outcome {
    begin_upload_with(ctx, path, shown, mode, unique, None, None).await
}

/// [`begin_upload`] that keeps an interrupted upload per `park`, and continues the
/// pending upload `resumed` (whose kept bytes are hashed first) instead of creating one.
async fn begin_upload_with(
    ctx: &mut Ctx<'_>,
    path: VPath,
    shown: String,
    mode: WriteMode,
    unique: Option<String>,
    park: Option<Park>,
    resumed: Option<Resumed>,
) -> Outcome {
    if ctx.data.is_none() {
        if let Some(r) = resumed {
            resume::park(r.upload, park.as_ref(), 0).await;
        }
        return Reply::new(code::CANT_OPEN_DATA, "Use PORT, PASV or EPSV first").into();
    }
    let kept = park.as_ref().map_or(0, |p| p.resumed_from);
    let quota = match reserve_quota(ctx, &path, mode, resumed.as_ref().map(|_| kept)).await {
        Ok(q) => q,
        Err(r) => {
            if let Some(r) = resumed {
                resume::park(r.upload, park.as_ref(), 0).await;
            }
            return r.into();
        }
    };
    let (mut upload, prefix, digest) = match resumed {
        Some(r) => {
            let hash = ctx.storage_config().upload_sha256.unwrap_or(true);
            (r.upload, r.prefix, hash.then(UploadDigest::default))
        }
        None => match ctx.storage().create(&path, mode).await {
            Ok(u) => (
                u,
                None,
                hashes_uploads(ctx, mode).then(UploadDigest::default),
            ),
            Err(e) => return storage_reply(&e).into(),
        },
    };
    // The backend hashes itself where it keeps hash state with pending uploads (S3);
    // else the kept bytes of a resumed upload are read back, or there is no digest.
    let backend_sha256 = digest.is_some() && upload.hash_sha256();
    let digest = digest.filter(|_| !backend_sha256 && (kept == 0 || prefix.is_some()));
    let ascii = ascii(ctx);
    let limits = UploadLimits {
        max: ctx
            .session
            .user()
            .and_then(|u| u.max_upload_bytes)
            .map(|l| l.saturating_sub(kept)),
        quota,
        throttle: ctx.session.throttles.upload.clone(),
        metrics: ctx.server.metrics.clone(),
    };
    let link = match data_link(ctx) {
        Ok(l) => l,
        Err(r) => {
            resume::park(upload, park.as_ref(), 0).await;
            return r.into();
        }
    };
    let probe = ctx.control.probe().map(|p| {
        let wait = ctx.server.config.server.upload_close_wait_us;
        (p, Duration::from_micros(wait))
    });
    let pre = match &unique {
        Some(name) => Reply::new(code::OPENING_DATA, format!("FILE: {name}")),
        None => Reply::new(
            code::OPENING_DATA,
            format!("Ok to send data for {shown} ({} mode)", mode_word(ascii)),
        ),
    };
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let own = ctx.session.own_uploads();
    let stored = path.clone();
    transfer(pre, &path, cancel, async move {
        let sock = match link.open().await {
            Ok(s) => s,
            Err(e) => {
                resume::park(upload, park.as_ref(), 0).await;
                return e;
            }
        };
        let digest = match prefix {
            Some(prefix) => hash_prefix(digest, prefix, kept).await,
            None => digest,
        };
        let mut r = receive_file(
            sock,
            upload,
            ascii,
            limits,
            digest,
            c,
            UploadEnd {
                probe,
                park,
                backend_sha256,
            },
        )
        .await;
        if r.reply.code == code::CLOSING_DATA {
            crate::session::remember_upload(&own, stored);
        }
        if let (Some(name), code::CLOSING_DATA) = (unique, r.reply.code) {
            r.reply = Reply::new(
                code::CLOSING_DATA,
                format!("Transfer complete; unique file name {name}"),
            );
        }
        r
    })
}

/// The quota reservation of an upload to `path` (`users.quota_bytes`,
/// `users.quota_files`): `None` for a user without quota; 552 (RFC 959 §4.2
/// "Exceeded storage allocation") when even its first byte does not fit. Usage is
/// walked on first use. `resumed_from`: the kept bytes of a resumed upload.
async fn reserve_quota(
    ctx: &Ctx<'_>,
    path: &VPath,
    mode: WriteMode,
    resumed_from: Option<u64>,
) -> Result<Option<crate::quota::Reservation>, Reply> {
    let Some(user) = ctx.session.user() else {
        return Ok(None);
    };
    let Some(limits) = user.quota() else {
        return Ok(None);
    };
    let Some(area) = quota_area(ctx).await? else {
        return Ok(None);
    };
    let storage = ctx.storage();
    let old = match storage.stat(path).await {
        Ok(m) if m.is_file() => Some(m.size),
        _ => None,
    };
    let base = match (resumed_from, mode) {
        (Some(kept), _) => kept,
        (None, WriteMode::Append) => old.unwrap_or(0),
        (None, WriteMode::Offset(n)) => n,
        (None, WriteMode::Truncate | WriteMode::CreateNew) => 0,
    };
    crate::quota::Reservation::start(area, limits, base, old)
        .map(Some)
        .map_err(|e| {
            ctx.server.metrics.user_limit_refused("quota");
            tracing::info!(limit = e.key(), "upload refused: user's quota is full");
            quota_reply(e)
        })
}

/// The user's counted area with its usage loaded (walked on first use), `None`
/// for a user without quota; 451 when the walk fails. Loaded before any upload
/// object exists, so the backend wrapper accounts for it (a resumed one too).
async fn quota_area(ctx: &Ctx<'_>) -> Result<Option<std::sync::Arc<crate::quota::Area>>, Reply> {
    let Some(area) = ctx.session.logged_in().and_then(|c| c.quota.clone()) else {
        return Ok(None);
    };
    match area.load(&*ctx.storage()).await {
        Ok(_) => Ok(Some(area)),
        Err(e) => {
            tracing::warn!(error = %e, "quota usage could not be computed");
            Err(Reply::new(
                code::LOCAL_ERROR,
                "Requested action aborted: quota usage could not be computed",
            ))
        }
    }
}

/// 552 for an upload over the user's quota.
fn quota_reply(e: crate::quota::Exceeded) -> Reply {
    Reply::new(
        code::EXCEEDED_STORAGE,
        format!("Exceeded storage allocation ({}); nothing stored", e.key()),
    )
}

/// What bounds an upload while it streams.
struct UploadLimits {
    /// `users.max_upload_bytes`, less bytes kept by a resumed upload.
    max: Option<u64>,
    /// Room taken from the user's quota, grown as bytes arrive.
    quota: Option<crate::quota::Reservation>,
    /// The user's shared upload bucket (`users.upload_bytes_per_sec`).
    throttle: Option<std::sync::Arc<crate::limits::Throttle>>,
    /// For `ftpgate_user_limit_refusals_total`.
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// Feeds the kept bytes of a resumed upload into its digest; `None` (no digest) when
/// they cannot be read in full.
async fn hash_prefix(
    digest: Option<UploadDigest>,
    mut prefix: ByteStream,
    kept: u64,
) -> Option<UploadDigest> {
    let mut d = digest?;
    let started = std::time::Instant::now();
    let mut read = 0u64;
    while let Some(chunk) = prefix.next().await {
        match chunk {
            Ok(b) => {
                read += b.len() as u64;
                d.update(b).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the kept bytes of a resumed upload: no digest");
                return None;
            }
        }
    }
    tracing::info!(
        bytes = read,
        ms = started.elapsed().as_millis() as u64,
        "kept bytes of a resumed upload hashed"
    );
    (read == kept).then_some(d)
}

/// What decides an upload's fate when its data stops: whether the client is still
/// there to have meant the end (`probe`, see `liveness`) and where an upload that
/// did not end cleanly is kept for resuming (`park`, issue 12 §2).
struct UploadEnd {
    probe: Option<(ControlProbe, Duration)>,
    park: Option<Park>,
    /// The upload computes its SHA-256 itself ([`Upload::hash_sha256`]).
    backend_sha256: bool,
}

/// Receives until EOF into `upload`; more than the user's `max_upload_bytes`, or
/// more than the quota has room for, aborts it with 552 (RFC 959 §4.2 "Exceeded
/// storage allocation"). Reads wait for the user's upload bucket.
async fn receive_file(
    mut sock: DataConn,
    mut upload: Box<dyn Upload>,
    ascii: bool,
    mut limits: UploadLimits,
    mut digest: Option<UploadDigest>,
    cancel: CancellationToken,
    UploadEnd {
        probe,
        park,
        backend_sha256,
    }: UploadEnd,
) -> TransferEnd {
    let mut received = 0u64;
    let mut pending_cr = false;
    let _receiving = Receiving::start();
    let mut buf = BytesMut::new();
    let mut recycler = Recycler::default();
    let mut eof = false;
    let mut data_end = tokio::time::Instant::now();
    while !eof {
        // Fill one chunk from as many socket reads as it takes, so the backend gets
        // few large writes instead of one per (often 64 KiB) read.
        let target = chunk_target();
        if buf.capacity() < target {
            buf = recycler.buffer(target);
        }
        while buf.len() < target {
            let read = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    received += drain_ready(&mut sock.sock, &mut buf).await;
                    resume::park(upload, park.as_ref(), received).await;
                    return aborted(received);
                }
                r = sock.read_buf(&mut buf) => r,
            };
            match read {
                Ok(0) => {
                    data_end = tokio::time::Instant::now();
                    // Answer the client's close_notify with ours (RFC 4217 §10) so
                    // TLS clients that wait for it (Python's unwrap) finish cleanly.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), sock.sock.shutdown()).await;
                    eof = true;
                    break;
                }
                Ok(n) => {
                    received += n as u64;
                    if let Some(Err(e)) = limits.quota.as_mut().map(|q| q.update(received)) {
                        limits.metrics.user_limit_refused("quota");
                        tracing::info!(received, limit = e.key(), "upload over the user's quota");
                        let _ = upload.abort().await;
                        return TransferEnd {
                            reply: quota_reply(e),
                            bytes: received,
                            sha256: None,
                        };
                    }
                    if let Some(t) = &limits.throttle {
                        if !t.pass(n as u64, &cancel).await {
                            resume::park(upload, park.as_ref(), received).await;
                            return aborted(received);
                        }
                    }
                    if limits.max.is_some_and(|l| received > l) {
                        tracing::info!(received, "upload over the user's max_upload_bytes");
                        let _ = upload.abort().await;
                        return end(
                            code::EXCEEDED_STORAGE,
                            "Exceeded storage allocation (max_upload_bytes); nothing stored",
                            received,
                        );
                    }
                }
                Err(e) => {
                    // A reset (not a clean FIN) means the client did not finish:
                    // never commit.
                    tracing::info!(error = %e, "data connection broken during upload");
                    resume::park(upload, park.as_ref(), received).await;
                    return aborted(received);
                }
            }
        }
        if buf.is_empty() {
            continue;
        }
        let chunk = buf.split().freeze();
        let chunk = if ascii {
            from_crlf(&chunk, &mut pending_cr)
        } else {
            chunk
        };
        if let Some(d) = digest.as_mut() {
            d.update(chunk.clone()).await;
        }
        recycler.keep(&chunk);
        if let Err(e) = upload.write(chunk).await {
            let _ = upload.abort().await;
            return upload_failed(&e, received);
        }
    }
    if pending_cr {
        if let Some(d) = digest.as_mut() {
            d.update(Bytes::from_static(b"\r")).await;
        }
        if let Err(e) = upload.write(Bytes::from_static(b"\r")).await {
            let _ = upload.abort().await;
            return upload_failed(&e, received);
        }
    }
    // The data connection ended cleanly, but a killed client closes both of its
    // connections: commit only if the control connection is still open or was
    // closed after QUIT (see `liveness`).
    if let Some((mut probe, wait)) = probe {
        let there = tokio::select! {
            biased;
            _ = cancel.cancelled() => false,
            t = probe.client_still_there(data_end, wait) => t,
        };
        if !there {
            // Never committed: kept as a pending upload where resuming applies
            // (`storage.resume_window_secs`, issue 12 §2), else discarded.
            tracing::info!(
                received,
                "control connection closed before the upload ended: upload not committed"
            );
            resume::park(upload, park.as_ref(), received).await;
            return end(
                code::TRANSFER_ABORTED,
                "Control connection closed; upload not committed",
                received,
            );
        }
    }
    let sha256 = if backend_sha256 {
        upload.sha256()
    } else {
        match digest {
            Some(d) => d.finish().await,
            None => None,
        }
    };
    if let Some(d) = sha256 {
        upload.set_sha256(d);
    }
    match upload.complete().await {
        Ok(_) => TransferEnd {
            sha256: sha256.map(|d| hex(&d)),
            ..end(code::CLOSING_DATA, "Transfer complete", received)
        },
        Err(e) => upload_failed(&e, received),
    }
}

/// Most chunk buffers a [`Recycler`] keeps.
const RECYCLE_MAX: usize = 10;

/// The buffers of chunks handed to storage (and to the hashing pool), taken back
/// for the next chunk once both are done with them (issue 13 §2): a fresh 1 MiB
/// buffer per chunk cost fresh pages, page faults and zeroing, ~12 % of a STOR's
/// CPU (perf). Chunks are done in order, so only the oldest is looked at; a backend
/// that keeps chunks (memory) just never hands one back.
#[derive(Default)]
struct Recycler(std::collections::VecDeque<Bytes>);

impl Recycler {
    /// Remembers a chunk about to be handed on.
    fn keep(&mut self, chunk: &Bytes) {
        if self.0.len() >= RECYCLE_MAX {
            self.0.pop_front();
        }
        self.0.push_back(chunk.clone());
    }

    /// An empty buffer of at least `size` bytes: the oldest chunk's when nobody else
    /// holds it any more, else a new one.
    fn buffer(&mut self, size: usize) -> BytesMut {
        if self.0.front().is_some_and(Bytes::is_unique) {
            if let Some(Ok(mut b)) = self.0.pop_front().map(Bytes::try_into_mut) {
                if b.capacity() >= size {
                    b.clear();
                    return b;
                }
            }
        }
        BytesMut::with_capacity(size)
    }
}

/// Most bytes [`drain_ready`] counts after ABOR.
const DRAIN_MAX: u64 = 64 * 1024 * 1024;

/// Reads (and discards) what the client already sent and the kernel holds, without
/// waiting: an ABORted upload's `transfer` event then reports every byte the
/// client got onto the wire, not only those the task had picked up.
async fn drain_ready(sock: &mut DataStream, buf: &mut BytesMut) -> u64 {
    let mut n = 0u64;
    while n < DRAIN_MAX {
        buf.clear();
        buf.reserve(UPLOAD_CHUNK);
        match sock.read_buf(buf).now_or_never() {
            Some(Ok(k)) if k > 0 => n += k as u64,
            _ => break,
        }
    }
    n
}

fn upload_failed(e: &StorageError, bytes: u64) -> TransferEnd {
    let r = storage_reply(e);
    end(
        crate::errors::transfer_failure_code(e, &r),
        &format!("Upload failed, nothing stored: {}", r.lines.join(" ")),
        bytes,
    )
}

/// True when the last segment of a LIST/NLST argument is a wildcard pattern.
fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// `*` and `?` matching for NLST/LIST patterns (`mget *.pdf` sends `NLST *.pdf`).
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// LIST, NLST, MLSD of a directory (or, for LIST/NLST, of one file).
pub(super) async fn list(ctx: &mut Ctx<'_>, arg: Option<&str>, kind: ListKind) -> Outcome {
    ctx.session.rest = None;
    let u = tri!(user(ctx));
    let (arg_dir, pattern) = match arg {
        Some(a) if kind != ListKind::Mlsd && is_pattern(a.rsplit('/').next().unwrap_or("")) => {
            match a.rsplit_once('/') {
                Some((d, p)) => (
                    Some(if d.is_empty() {
                        "/".to_owned()
                    } else {
                        d.to_owned()
                    }),
                    Some(p.to_owned()),
                ),
                None => (None, Some(a.to_owned())),
            }
        }
        other => (other.map(str::to_owned), None),
    };
    let t = tri!(target(
        ctx,
        arg_dir.as_deref().unwrap_or(""),
        Some(Permission::List)
    ));
    if ctx.data.is_none() {
        return Reply::new(code::CANT_OPEN_DATA, "Use PORT, PASV or EPSV first").into();
    }
    let storage = ctx.storage();
    // List first and stat only when the target is not a directory (LIST of one file):
    // on S3 a stat before every listing would cost two more requests.
    let (meta, listing) = match storage.list(&t.storage).await {
        Ok(s) => (None, Some(s)),
        Err(e) if e.kind() == ErrorKind::NotADirectory => match storage.stat(&t.storage).await {
            Ok(m) => (Some(m), None),
            Err(e) => return storage_reply(&e).into(),
        },
        Err(e) => return storage_reply(&e).into(),
    };
    // NLST with a directory argument names entries as `dir/name` (like `ls dir`).
    let prefix = match (&arg_dir, kind) {
        (Some(d), ListKind::Nlst) => Some(if d.ends_with('/') {
            d.clone()
        } else {
            format!("{d}/")
        }),
        _ => None,
    };
    let is_dir = listing.is_some();
    let source = if let Some(s) = listing {
        Source::Dir(s)
    } else if kind == ListKind::Mlsd {
        return Reply::new(
            code::ARGUMENT_SYNTAX_ERROR,
            "MLSD needs a directory; use MLST for a file",
        )
        .into();
    } else if let Some(meta) = meta {
        let name = match (kind, &arg_dir) {
            (ListKind::Nlst, Some(a)) => a.clone(),
            _ => t.shown.file_name().unwrap_or("/").to_owned(),
        };
        Source::File(ftpgate_storage::DirEntry { name, meta })
    } else {
        return Reply::new(code::LOCAL_ERROR, "Listing failed").into();
    };
    let fmt = Formatter {
        kind,
        facts: ctx.session.facts,
        user: u,
        append: storage.capabilities().append,
        pattern,
        prefix: if is_dir { prefix } else { None },
    };
    let link = tri!(data_link(ctx));
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    transfer(
        Reply::new(code::OPENING_DATA, "Here comes the directory listing"),
        &t.storage,
        cancel,
        async move {
            let sock = match link.open().await {
                Ok(s) => s,
                Err(e) => return e,
            };
            send_listing(sock, source, fmt, c).await
        },
    )
}

enum Source {
    Dir(EntryStream),
    File(ftpgate_storage::DirEntry),
}

struct Formatter {
    kind: ListKind,
    facts: Facts,
    user: std::sync::Arc<User>,
    append: bool,
    pattern: Option<String>,
    prefix: Option<String>,
}

impl Formatter {
    /// One listing line with CRLF, or `None` for entries that are filtered out.
    fn line(&self, e: &ftpgate_storage::DirEntry, now: SystemTime) -> Option<String> {
        if !name_is_listable(&e.name) {
            return None;
        }
        if let Some(p) = &self.pattern {
            if !wildcard_match(p, &e.name) {
                return None;
            }
        }
        let mut s = match self.kind {
            ListKind::List => list_line(e, now),
            ListKind::Nlst => match &self.prefix {
                Some(p) => format!("{p}{}", e.name),
                None => e.name.clone(),
            },
            ListKind::Mlsd => {
                let perm = perm_fact(&e.meta, &self.user, self.append);
                mlsx_line(&e.name, &e.meta, self.facts, &perm, now)
            }
        };
        s.push_str("\r\n");
        Some(s)
    }
}

async fn send_listing(
    conn: DataConn,
    source: Source,
    fmt: Formatter,
    cancel: CancellationToken,
) -> TransferEnd {
    let now = SystemTime::now();
    let mut out = BufWriter::with_capacity(64 * 1024, conn.sock);
    let mut sent = 0u64;
    let mut stream = match source {
        Source::File(e) => futures::stream::iter([Ok(e)]).boxed(),
        Source::Dir(s) => s,
    };
    loop {
        // When the next entry is not ready (the backend is fetching its next page),
        // send what is buffered first: the client sees the first page at once.
        let next = match stream.next().now_or_never() {
            Some(n) => n,
            None => {
                if out.flush().await.is_err() {
                    return aborted(sent);
                }
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return aborted(sent),
                    n = stream.next() => n,
                }
            }
        };
        if cancel.is_cancelled() {
            return aborted(sent);
        }
        let entry = match next {
            None => break,
            Some(Ok(e)) => e,
            // An entry removed while listing is skipped, not an error.
            Some(Err(e)) if e.kind() == ErrorKind::NotFound => continue,
            Some(Err(e)) => {
                let r = storage_reply(&e);
                return end(
                    code::LOCAL_ERROR,
                    &format!("Listing failed: {}", r.lines.join(" ")),
                    sent,
                );
            }
        };
        if let Some(line) = fmt.line(&entry, now) {
            if out.write_all(line.as_bytes()).await.is_err() {
                return aborted(sent);
            }
            sent += line.len() as u64;
        }
    }
    if out.flush().await.is_err() || out.shutdown().await.is_err() {
        return aborted(sent);
    }
    end(code::CLOSING_DATA, "Directory send OK", sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_conversion_across_chunks() {
        let mut cr = false;
        assert_eq!(&to_crlf(b"a\nb\r", &mut cr)[..], b"a\r\nb\r");
        assert_eq!(&to_crlf(b"\nc", &mut cr)[..], b"\nc");
        let mut p = false;
        let mut out = from_crlf(b"a\r\nb\r", &mut p).to_vec();
        out.extend_from_slice(&from_crlf(b"\nc\rd", &mut p));
        assert_eq!(out, b"a\nb\nc\rd");
    }

    #[test]
    fn resume_offsets() {
        assert_eq!(resume_offset(WriteMode::Append, 10), Some(10));
        assert_eq!(resume_offset(WriteMode::Offset(10), 10), Some(10));
        assert_eq!(resume_offset(WriteMode::Offset(9), 10), Some(9));
        assert_eq!(resume_offset(WriteMode::Offset(11), 10), None);
        assert_eq!(resume_offset(WriteMode::Offset(0), 10), None);
        assert_eq!(resume_offset(WriteMode::Truncate, 10), None);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.pdf", "scan 1.pdf"));
        assert!(!wildcard_match("*.pdf", "scan.pdf.txt"));
        assert!(wildcard_match("a?c*", "abcdef"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("?", ""));
    }
}
