//! Parallel ranged reads (RETR of large objects): a bounded window of ranged GETs
//! streamed in order.
//!
//! A RETR starts with one GET from its offset (`open`), exactly as for a small object;
//! its headers tell the size and the ETag. When more than one chunk (`read_chunk_mib`)
//! remains, that response serves only the first chunk and is then dropped, while the
//! following chunks are fetched by ranged GETs (`Range: bytes=a-b`), each by its own
//! task, conditional on the ETag of the first response (`If-Match`), so an object
//! replaced during the transfer fails the read (412, [`ErrorKind::Transient`]) instead
//! of mixing two versions (RFC 9110 §13.1.1). A response without an ETag cannot be
//! pinned: such an object is read with the one GET.
//!
//! The window: `read_parallelism` GETs run at once, the one being sent to the client
//! and the next ones ahead of it; the next starts as soon as the one being sent ends.
//! Each GET streams its body into 1 MiB pieces and keeps at most [`GET_BUFFER`]
//! (4 MiB) of them: then it stops reading its response until the client has taken
//! some, and TCP flow control holds the rest at the S3 server. So the number of GETs
//! (the S3 server's parallelism, and the number of requests: one per `read_chunk_mib`)
//! and the memory are set apart: one download holds at most
//! `read_parallelism × min(read_chunk_mib, 4) MiB` + one piece (33 MiB with the
//! defaults 8 × 8 MiB), and a client that stops reading stops the reads. A GET whose
//! response breaks off (a reset, a stall while it was read) is asked again from the
//! byte where it stopped, of the same version, up to [`BODY_RETRIES`] times in a row
//! without progress: a GET waiting behind a slow client may sit idle for long, each
//! time it is read on.
//!
//! Dropping the stream (ABOR, a closed data connection, an error) aborts every task,
//! and with it its request. Every request goes through the transport's response and
//! stall timeouts (`response_timeout_secs`, `stall_timeout_secs`); the stall timer
//! runs only while a body is being read, not while a GET waits for the client.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use ftpgate_storage::{ByteStream, ErrorKind, Result, StorageError};

use crate::backend::Inner;
use crate::errors::map_error;

/// The size of the pieces a GET's body is gathered into and handed on in (as the data
/// connection sends them): few large socket writes instead of one per HTTP frame.
const PIECE: usize = 1 << 20;

/// Most bytes one ranged GET holds that the client has not taken yet: the pieces
/// queued for the consumer plus the one being filled.
pub(crate) const GET_BUFFER: usize = 4 * PIECE;

/// Pieces queued per GET (the one being filled makes up [`GET_BUFFER`]).
const QUEUED_PIECES: usize = GET_BUFFER / PIECE - 1;

/// How often in a row one GET's response is asked again from where it broke off
/// without having handed on a byte in between.
pub(crate) const BODY_RETRIES: u32 = 3;

/// The ranges a read of `offset..size` is split into: chunks of `chunk` bytes from
/// `offset`, the last one shorter. The first is the one the opening GET serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RangePlan {
    next: u64,
    end: u64,
    chunk: u64,
}

impl RangePlan {
    /// The plan for bytes `offset..size` in chunks of `chunk` (at least 1).
    pub(crate) fn new(offset: u64, size: u64, chunk: u64) -> Self {
        Self {
            next: offset.min(size),
            end: size,
            chunk: chunk.max(1),
        }
    }
}

impl Iterator for RangePlan {
    type Item = Range<u64>;

    fn next(&mut self) -> Option<Range<u64>> {
        if self.next >= self.end {
            return None;
        }
        let start = self.next;
        let end = start.saturating_add(self.chunk).min(self.end);
        self.next = end;
        Some(start..end)
    }
}

/// The most bytes one download holds in memory with `window` GETs of `chunk` bytes
/// each: what each GET may buffer, and the piece being sent.
#[cfg(test)]
fn download_memory_bound(window: usize, chunk: u64) -> u64 {
    let per_get = chunk.min(GET_BUFFER as u64);
    per_get * window.max(1) as u64 + PIECE as u64
}

/// True when a read of `remaining` bytes is split into ranged GETs: parallelism on
/// and more than one chunk left.
pub(crate) fn is_parallel(remaining: u64, chunk: u64, window: usize) -> bool {
    window > 1 && remaining > chunk
}

/// One ranged GET: its task (aborted, with its request, when dropped) and the
/// pieces it read, in order.
struct Fetch {
    task: JoinHandle<()>,
    pieces: mpsc::Receiver<Result<Bytes>>,
    /// Bytes of the range not yet handed on.
    left: u64,
}

impl Drop for Fetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the stream yields from next.
struct State {
    /// The object version read, shared with every GET.
    target: Arc<Target>,
    /// The opening response and how many bytes of it still belong to the first chunk.
    first: Option<(BoxStream<'static, Result<Bytes>>, u64)>,
    /// GETs running or read but not yet handed on, in order.
    fetches: VecDeque<Fetch>,
    /// Pieces handed on, kept until the data connection has dropped them; then their
    /// buffers go back to the target's pool.
    sent: VecDeque<Bytes>,
    plan: RangePlan,
    window: usize,
    failed: bool,
}

/// What a ranged GET needs to know: the object version, and the download's piece
/// buffers.
struct Target {
    inner: Arc<Inner>,
    location: Path,
    context: String,
    e_tag: String,
    pool: PiecePool,
}

/// The piece buffers of one download: a piece the data connection has sent and
/// dropped is taken back and refilled by a GET, so a download allocates its pieces
/// once (fresh buffers cost page faults and heap growth: peak RSS +8 MiB, measured).
#[derive(Default)]
struct PiecePool(std::sync::Mutex<Vec<BytesMut>>);

impl PiecePool {
    /// An empty buffer of [`PIECE`] bytes, reused when one is free.
    fn take(&self) -> BytesMut {
        let spare = self.0.lock().ok().and_then(|mut free| free.pop());
        spare.unwrap_or_else(|| BytesMut::with_capacity(PIECE))
    }

    /// Takes back a sent piece's buffer.
    fn give(&self, mut buf: BytesMut) {
        buf.clear();
        if let Ok(mut free) = self.0.lock() {
            free.push(buf);
        }
    }
}

/// One ranged GET of `range`, conditional on the ETag: its body gathered into
/// [`PIECE`]s sent to `tx` (which holds at most [`QUEUED_PIECES`]: a full queue stops
/// the reading). A response that breaks off is asked again from where it stopped
/// ([`BODY_RETRIES`] times in a row without progress); an error ends the pieces.
/// Returns when done, on an error, or when the consumer is gone.
async fn fetch_range(t: Arc<Target>, range: Range<u64>, tx: mpsc::Sender<Result<Bytes>>) {
    let mut at = range.start;
    let mut retries = 0;
    while at < range.end {
        let (got, broke) = match read_from(&t, at..range.end, &tx).await {
            Ok(Ended::Done(n)) | Ok(Ended::Broke(n, _)) if n == range.end - at => return,
            Ok(Ended::Done(n)) => (
                n,
                StorageError::new(
                    ErrorKind::Transient,
                    format!(
                        "{}: a ranged read ended {} bytes early",
                        t.context,
                        range.end - at - n
                    ),
                ),
            ),
            Ok(Ended::Broke(n, e)) => (n, e),
            Ok(Ended::Gone) => return,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        at += got;
        // The budget is for breaks in a row: a GET that progressed between breaks (one
        // behind a slow client, idle for long each time) is never given up on.
        if got > 0 {
            retries = 0;
        }
        if retries >= BODY_RETRIES {
            let _ = tx.send(Err(broke)).await;
            return;
        }
        retries += 1;
        tracing::info!(context = %t.context, at, error = %broke, retry = retries,
            "a ranged read broke off; asking again from where it stopped");
    }
}

/// How one request of [`fetch_range`] ended.
enum Ended {
    /// The body ended after this many bytes were handed on.
    Done(u64),
    /// The body broke off (a transient error) after this many bytes.
    Broke(u64, StorageError),
    /// The consumer is gone.
    Gone,
}

/// One conditional GET of `range`, its body handed on in pieces. `Err` when the
/// request fails (after the transport's own retries) or the object changed: not
/// asked again.
async fn read_from(
    t: &Target,
    range: Range<u64>,
    tx: &mpsc::Sender<Result<Bytes>>,
) -> Result<Ended> {
    let want = range.end - range.start;
    let options = GetOptions {
        range: Some(GetRange::Bounded(range)),
        if_match: Some(t.e_tag.clone()),
        ..Default::default()
    };
    let result = t
        .inner
        .store
        .get_opts(&t.location, options)
        .await
        .map_err(|e| changed_or(&t.context, e))?;
    let mut body = result.into_stream();
    let mut sent = 0u64;
    let mut piece = BytesMut::new();
    loop {
        let frame = match body.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                let changed = matches!(e, object_store::Error::Precondition { .. });
                let e = changed_or(&t.context, e);
                if changed || e.kind() != ErrorKind::Transient {
                    return Err(e);
                }
                if !hand_on(&mut piece, &mut sent, tx).await {
                    return Ok(Ended::Gone);
                }
                return Ok(Ended::Broke(sent, e));
            }
            None => {
                if !hand_on(&mut piece, &mut sent, tx).await {
                    return Ok(Ended::Gone);
                }
                return Ok(Ended::Done(sent));
            }
        };
        if sent + (piece.len() + frame.len()) as u64 > want {
            return Err(StorageError::new(
                ErrorKind::Transient,
                format!(
                    "{}: a ranged read returned more than {want} bytes",
                    t.context
                ),
            ));
        }
        let mut frame = frame;
        while !frame.is_empty() {
            if piece.capacity() == 0 {
                piece = t.pool.take();
            }
            let take = (PIECE - piece.len()).min(frame.len());
            piece.extend_from_slice(&frame.split_to(take));
            if piece.len() == PIECE && !hand_on(&mut piece, &mut sent, tx).await {
                return Ok(Ended::Gone);
            }
        }
    }
}

/// Sends the gathered piece on (waiting while the queue is full); false when the
/// consumer is gone.
async fn hand_on(piece: &mut BytesMut, sent: &mut u64, tx: &mpsc::Sender<Result<Bytes>>) -> bool {
    if piece.is_empty() {
        return true;
    }
    let out = std::mem::take(piece).freeze();
    *sent += out.len() as u64;
    tx.send(Ok(out)).await.is_ok()
}

/// A failed precondition is a replaced object; other errors map as usual.
pub(crate) fn changed_or(context: &str, e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::Precondition { .. } => StorageError::new(
            ErrorKind::Transient,
            format!("{context}: the file changed during the transfer"),
        )
        .with_source(e),
        e => map_error(context, e),
    }
}

impl State {
    /// Starts ranged GETs until `window` run (the opening GET counts while it serves).
    fn top_up(&mut self) {
        let busy = usize::from(self.first.is_some());
        while self.fetches.len() + busy < self.window {
            let Some(range) = self.plan.next() else {
                return;
            };
            let (tx, pieces) = mpsc::channel(QUEUED_PIECES);
            let left = range.end - range.start;
            let task = tokio::spawn(fetch_range(Arc::clone(&self.target), range, tx));
            self.fetches.push_back(Fetch { task, pieces, left });
        }
    }

    /// The next piece in order, `None` at the end.
    async fn next_piece(&mut self) -> Option<Result<Bytes>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some((body, left)) = self.first.as_mut() {
                match body.next().await {
                    Some(Ok(mut piece)) => {
                        if piece.len() as u64 >= *left {
                            piece.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                            // The first chunk is complete: drop the opening response
                            // (its connection is closed, not reused) and let the
                            // window's next GET start.
                            self.first = None;
                            self.top_up();
                        } else {
                            *left -= piece.len() as u64;
                        }
                        if piece.is_empty() {
                            continue;
                        }
                        return Some(Ok(piece));
                    }
                    Some(Err(e)) => return Some(Err(self.fail(e))),
                    None => {
                        let e = StorageError::new(
                            ErrorKind::Transient,
                            format!("{}: the response ended early", self.target.context),
                        );
                        return Some(Err(self.fail(e)));
                    }
                }
            }
            self.top_up();
            let head = self.fetches.front_mut()?;
            match head.pieces.recv().await {
                Some(Ok(piece)) if piece.len() as u64 <= head.left => {
                    head.left -= piece.len() as u64;
                    if head.left == 0 {
                        // This range is done: the next GET of the window starts.
                        self.fetches.pop_front();
                        self.top_up();
                    }
                    // (Never empty: a GET hands on only pieces with bytes.)
                    self.recycle(&piece);
                    return Some(Ok(piece));
                }
                Some(Ok(_)) => {
                    let e = StorageError::new(
                        ErrorKind::Transient,
                        format!(
                            "{}: a ranged read returned too many bytes",
                            self.target.context
                        ),
                    );
                    return Some(Err(self.fail(e)));
                }
                Some(Err(e)) => return Some(Err(self.fail(e))),
                None => {
                    // The task ended without its bytes or an error: it panicked.
                    let e = StorageError::new(
                        ErrorKind::Other,
                        format!("{}: a ranged read task stopped early", self.target.context),
                    );
                    return Some(Err(self.fail(e)));
                }
            }
        }
    }

    /// Takes back the buffers of sent pieces nobody holds any more (the data
    /// connection drops each after writing it; they are freed in order), and keeps
    /// `piece`, about to be handed on.
    fn recycle(&mut self, piece: &Bytes) {
        while self.sent.front().is_some_and(Bytes::is_unique) {
            if let Some(Ok(buf)) = self.sent.pop_front().map(Bytes::try_into_mut) {
                if buf.capacity() >= PIECE {
                    self.target.pool.give(buf);
                }
            }
        }
        // A consumer that keeps pieces (none does) must not make this list grow.
        if self.sent.len() >= self.window * GET_BUFFER / PIECE {
            self.sent.pop_front();
        }
        self.sent.push_back(piece.clone());
    }

    /// Stops everything after an error (the remaining tasks are aborted).
    fn fail(&mut self, e: StorageError) -> StorageError {
        self.failed = true;
        self.first = None;
        self.fetches.clear();
        self.sent.clear();
        e
    }
}

/// The bytes `start..size` of the object version `e_tag` at `location`, in order.
///
/// `first`, when given, is a response that begins at `start` (the opening GET): it
/// serves the first chunk. The rest comes from ranged GETs, `read_parallelism` at
/// once. Must run inside a tokio runtime.
pub(crate) fn stream(
    inner: Arc<Inner>,
    location: Path,
    context: String,
    e_tag: String,
    start: u64,
    size: u64,
    first: Option<BoxStream<'static, Result<Bytes>>>,
) -> ByteStream {
    let chunk = inner.read_chunk;
    let window = inner.read_parallelism.max(1);
    let mut plan = RangePlan::new(start, size, chunk);
    let first = first.and_then(|body| plan.next().map(|r| (body, r.end - r.start)));
    let mut state = State {
        target: Arc::new(Target {
            inner,
            location,
            context,
            e_tag,
            pool: PiecePool::default(),
        }),
        first,
        fetches: VecDeque::new(),
        sent: VecDeque::new(),
        plan,
        window,
        failed: false,
    };
    // The chunks after the first are fetched from the start.
    state.top_up();
    stream::unfold(state, |mut st| async move {
        let piece = st.next_piece().await?;
        Some((piece, st))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn plan_covers_the_rest_in_chunks_from_the_offset() {
        let size = 40 * MIB;
        for offset in [
            0,
            1,
            3 * MIB + 17,
            8 * MIB - 1,
            8 * MIB,
            8 * MIB + 1,
            size - 1,
        ] {
            let ranges: Vec<_> = RangePlan::new(offset, size, 8 * MIB).collect();
            assert_eq!(ranges[0].start, offset, "first range starts at the offset");
            assert_eq!(ranges.last().map(|r| r.end), Some(size));
            for w in ranges.windows(2) {
                assert_eq!(w[0].end, w[1].start, "contiguous");
            }
            assert!(ranges
                .iter()
                .all(|r| r.end - r.start <= 8 * MIB && r.end > r.start));
            assert!(ranges[..ranges.len() - 1]
                .iter()
                .all(|r| r.end - r.start == 8 * MIB));
        }
        assert_eq!(
            RangePlan::new(0, 20, 8).collect::<Vec<_>>(),
            vec![0..8, 8..16, 16..20]
        );
        assert_eq!(RangePlan::new(5, 5, 8).count(), 0);
        assert_eq!(RangePlan::new(9, 5, 8).count(), 0);
        assert_eq!(RangePlan::new(0, 3, 0).count(), 3, "chunk 0 counts as 1");
        assert_eq!(RangePlan::new(u64::MAX - 2, u64::MAX, 8).count(), 1);
    }

    #[test]
    fn window_bounds_the_memory() {
        // Defaults: 8 GETs of 8 MiB, each holding at most 4 MiB, and one piece.
        assert_eq!(download_memory_bound(8, 8 * MIB), 33 * MIB);
        // Chunks below the per-GET buffer are held whole.
        assert_eq!(download_memory_bound(4, 2 * MIB), 9 * MIB);
        assert_eq!(download_memory_bound(64, 1024 * MIB), 257 * MIB);
        assert_eq!(QUEUED_PIECES, 3);
        // Small reads (≤ one chunk) and parallelism 1 stay one GET.
        assert!(!is_parallel(8 * MIB, 8 * MIB, 4));
        assert!(is_parallel(8 * MIB + 1, 8 * MIB, 4));
        assert!(!is_parallel(100 * MIB, 8 * MIB, 1));
    }
}
