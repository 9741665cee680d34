//! `HASH` (draft-bryan-ftpext-hash-02 §3) and the legacy `XSHA256`, `XSHA1`, `XMD5`,
//! `XCRC` commands.
//!
//! draft §3.3: "213 <SP> <hashname> <SP> <start-point>-<end-point> <SP> <filehash>
//! <SP> <filename>". Ranges (`RANG`) are not offered, so the range is always the whole
//! file, `0-<size>`. A SHA-256 stored at upload (S3 object metadata) answers without
//! reading the file; everything else streams the file through the digest as a job
//! beside the control channel: it holds the session's one transfer slot, ABOR stops
//! it (426, then 226 — RFC 959 §4.1.3), so does the end of the control connection,
//! and files above `server.max_hash_bytes` are refused with 504 before any reading.

use ftpgate_storage::{ByteStream, ErrorKind, StorageError};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{target, tri, Ctx, Job, Outcome, TransferEnd};
use crate::auth::Permission;
use crate::checksum::{hex, Algorithm, Hasher};
use crate::errors::storage_reply;
use crate::protocol::code;
use crate::protocol::Reply;

/// A digest to compute, or one already known.
enum Digest {
    /// Stored at upload (`stored_sha256`): hex and size.
    Known(String, u64),
    /// The file, opened, to read through the digest.
    Read {
        stream: ByteStream,
        size: u64,
        path: String,
    },
}

/// Opens the file to hash (or finds its stored SHA-256), or the reply explaining
/// why not: 504 above `server.max_hash_bytes`.
async fn prepare(ctx: &Ctx<'_>, arg: &str, algorithm: Algorithm) -> Result<Digest, Reply> {
    let t = target(ctx, arg, Some(Permission::Read))?;
    let storage = ctx.storage();
    if algorithm == Algorithm::Sha256 {
        match storage.stored_sha256(&t.storage).await {
            Ok(Some((d, size))) => return Ok(Digest::Known(hex(&d), size)),
            Ok(None) => {}
            Err(e) => return Err(storage_reply(&e)),
        }
    }
    let (meta, stream) = storage
        .open(&t.storage, 0)
        .await
        .map_err(|e| storage_reply(&e))?;
    let limit = ctx.server.config.server.max_hash_bytes;
    if limit > 0 && meta.size > limit {
        tracing::info!(
            size = meta.size,
            limit,
            "HASH refused: file above server.max_hash_bytes"
        );
        return Err(Reply::new(
            code::NOT_IMPLEMENTED_FOR_PARAMETER,
            format!(
                "{} of a {}-byte file refused: larger than this server hashes \
                 (server.max_hash_bytes = {limit})",
                algorithm.name(),
                meta.size
            ),
        ));
    }
    Ok(Digest::Read {
        stream,
        size: meta.size,
        path: t.storage.to_string(),
    })
}

/// Streams `stream` through the digest until its end or `cancel`: the hex digest
/// and the bytes read, or the final reply (426 when cancelled).
async fn read_digest(
    mut stream: ByteStream,
    size: u64,
    algorithm: Algorithm,
    path: &str,
    cancel: CancellationToken,
) -> Result<(String, u64), TransferEnd> {
    let failed = |reply: Reply, bytes| TransferEnd {
        reply,
        bytes,
        sha256: None,
    };
    let mut hasher = Hasher::new(algorithm);
    let mut read = 0u64;
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                tracing::info!(path, read, size, "hash cancelled: ABOR or control connection closed");
                return Err(failed(Reply::new(code::TRANSFER_ABORTED, "Digest aborted; none computed"), read));
            }
            n = stream.next() => n,
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| failed(storage_reply(&e), read))?;
        read += chunk.len() as u64;
        hasher.update(&chunk);
    }
    if read != size {
        // Replaced while it was read: the digest would belong to neither version.
        let e = StorageError::new(
            ErrorKind::Transient,
            format!("digest of {path}: the file changed while it was read"),
        );
        return Err(failed(storage_reply(&e), read));
    }
    Ok((hasher.finish_hex(), read))
}

/// Answers at once with a known digest, or starts the job that reads the file;
/// `reply` builds the success reply from the hex digest and the size.
fn run(
    digest: Digest,
    algorithm: Algorithm,
    reply: impl FnOnce(String, u64) -> Reply + Send + 'static,
) -> Outcome {
    let (stream, size, path) = match digest {
        Digest::Known(hex, size) => return reply(hex, size).into(),
        Digest::Read { stream, size, path } => (stream, size, path),
    };
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let p = path.clone();
    Outcome::Job(Job {
        job: Box::pin(async move {
            match read_digest(stream, size, algorithm, &p, c).await {
                Ok((hex, read)) => TransferEnd {
                    reply: reply(hex, read),
                    bytes: read,
                    sha256: None,
                },
                Err(end) => end,
            }
        }),
        cancel,
        path,
    })
}

/// HASH: the digest of the algorithm chosen with `OPTS HASH` (default SHA-256).
/// The reply names the octet range hashed with an inclusive end point, as RANG does
/// (draft-bryan-ftpext-hash-02 §3, §3.4: `0-49` is the first 50 octets): the whole
/// file is `0-<size - 1>`, an empty one `0-0`.
pub(super) async fn hash(ctx: &mut Ctx<'_>, arg: &str) -> Outcome {
    let algorithm = ctx.session.hash_algorithm;
    let digest = tri!(prepare(ctx, arg, algorithm).await);
    let arg = arg.to_owned();
    run(digest, algorithm, move |hex, size| {
        let end = size.saturating_sub(1);
        Reply::new(
            code::FILE_STATUS,
            format!("{} 0-{end} {hex} {arg}", algorithm.name()),
        )
    })
}

/// XSHA256 / XSHA1 / XMD5 / XCRC: `250 <hex>` as ProFTPD's mod_digest answers.
pub(super) async fn xhash(ctx: &mut Ctx<'_>, algorithm: Algorithm, arg: &str) -> Outcome {
    let digest = tri!(prepare(ctx, arg, algorithm).await);
    run(digest, algorithm, |hex, _| {
        Reply::new(code::FILE_ACTION_OK, hex)
    })
}
