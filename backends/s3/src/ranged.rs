//! Parallel ranged reads (RETR of large objects): a bounded window of ranged GETs
//! whose chunks are yielded in order.
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
//! Memory: at most `read_parallelism` chunks at a time — the one being sent to the
//! client plus `read_parallelism − 1` fetched ahead, the next ranged GET starting as
//! soon as a chunk is taken for sending — so one download holds at most
//! `read_parallelism × read_chunk_mib` MiB (32 MiB with the defaults 8 × 4 MiB). A
//! sent chunk's buffer is refilled by a later ranged GET instead of being freed and a
//! new one mapped (each new buffer costs a page fault per 4 KiB: ~25 % of the
//! gateway's CPU in a download, measured), so a download allocates at most
//! `read_parallelism` buffers and frees them when its stream is dropped.
//! Dropping the stream (ABOR, a closed data connection, an error) aborts every task,
//! and with it its request. Every request goes through the transport's response and
//! stall timeouts (`response_timeout_secs`, `stall_timeout_secs`).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::task::JoinHandle;

use ftpgate_storage::{ByteStream, ErrorKind, Result, StorageError};

use crate::backend::Inner;
use crate::errors::map_error;

/// Largest piece a fetched chunk is handed on in (as the data connection sends it).
const SEND_PIECE: usize = 1 << 20;

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

/// How many ranged GETs run ahead of the chunk being sent, for `window` chunks in
/// memory at most (the one being sent counts).
pub(crate) fn fetch_ahead(window: usize) -> usize {
    window.saturating_sub(1).max(1)
}

/// True when a read of `remaining` bytes is split into ranged GETs: parallelism on
/// and more than one chunk left.
pub(crate) fn is_parallel(remaining: u64, chunk: u64, window: usize) -> bool {
    window > 1 && remaining > chunk
}

/// A task fetching one range into one buffer; aborted (with its request) when dropped.
struct Fetch(JoinHandle<Result<Bytes>>);

impl Drop for Fetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the stream yields from next.
struct State {
    inner: Arc<Inner>,
    location: Path,
    context: Arc<str>,
    e_tag: String,
    /// The opening response and how many bytes of it still belong to the first chunk.
    first: Option<(BoxStream<'static, Result<Bytes>>, u64)>,
    /// Pieces of the current chunk not yet yielded.
    ready: VecDeque<Bytes>,
    /// The whole current chunk: once its pieces are sent and dropped, its buffer is
    /// taken back for the next ranged GET.
    current: Option<Bytes>,
    /// Buffers of sent chunks, refilled by the next ranged GETs (no new allocation:
    /// a fresh chunk-sized buffer is mapped anew and every page faulted in again,
    /// ~25 % of the gateway's CPU in a download, measured with perf).
    spare: Vec<BytesMut>,
    /// Ranges fetching or fetched, in order.
    fetches: VecDeque<Fetch>,
    plan: RangePlan,
    ahead: usize,
    failed: bool,
}

/// One ranged GET of `range`, conditional on `e_tag`, read whole into `buf` (a
/// sent chunk's buffer, or a new one).
async fn fetch_range(
    inner: Arc<Inner>,
    location: Path,
    context: Arc<str>,
    e_tag: String,
    range: Range<u64>,
    buf: Option<BytesMut>,
) -> Result<Bytes> {
    let want = range.end - range.start;
    let options = GetOptions {
        range: Some(GetRange::Bounded(range)),
        if_match: Some(e_tag),
        ..Default::default()
    };
    let result = inner
        .store
        .get_opts(&location, options)
        .await
        .map_err(|e| changed_or(&context, e))?;
    // One allocation of the chunk's size, reused for the following chunks and freed
    // with the stream (above glibc's mmap threshold: returned to the system then, so
    // the memory bound holds for RSS, not only live data).
    let want_len = usize::try_from(want).unwrap_or(0);
    let mut buf = buf.unwrap_or_else(|| BytesMut::with_capacity(want_len));
    buf.clear();
    buf.reserve(want_len);
    let mut body = result.into_stream();
    let mut got = 0u64;
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| changed_or(&context, e))?;
        got += piece.len() as u64;
        if got > want {
            break;
        }
        buf.extend_from_slice(&piece);
    }
    if got != want {
        return Err(StorageError::new(
            ErrorKind::Transient,
            format!("{context}: a ranged read returned {got} bytes instead of {want}"),
        ));
    }
    Ok(buf.freeze())
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
    /// Starts ranged GETs until `ahead` are fetching or fetched.
    fn top_up(&mut self) {
        while self.fetches.len() < self.ahead {
            let Some(range) = self.plan.next() else {
                return;
            };
            let task = tokio::spawn(fetch_range(
                Arc::clone(&self.inner),
                self.location.clone(),
                Arc::clone(&self.context),
                self.e_tag.clone(),
                range,
                self.spare.pop(),
            ));
            self.fetches.push_back(Fetch(task));
        }
    }

    /// The next piece in order, `None` at the end.
    async fn next_piece(&mut self) -> Option<Result<Bytes>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(piece) = self.ready.pop_front() {
                return Some(Ok(piece));
            }
            if let Some((body, left)) = self.first.as_mut() {
                match body.next().await {
                    Some(Ok(mut piece)) => {
                        if piece.len() as u64 >= *left {
                            piece.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                            // The first chunk is complete: drop the opening response
                            // (its connection is closed, not reused).
                            self.first = None;
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
                            format!("{}: the response ended early", self.context),
                        );
                        return Some(Err(self.fail(e)));
                    }
                }
            }
            // The chunk being sent is done: its buffer serves the next ranged GET
            // (when the consumer dropped every piece of it), which is started now.
            if let Some(sent) = self.current.take() {
                if let Ok(buf) = sent.try_into_mut() {
                    self.spare.push(buf);
                }
            }
            self.top_up();
            let fetch = self.fetches.pop_front()?;
            // And the one after the window while this one is awaited and sent: the
            // window counts the chunk being sent, so `ahead` may fetch meanwhile.
            self.top_up();
            let joined = {
                let mut fetch = fetch;
                let r = (&mut fetch.0).await;
                drop(fetch);
                r
            };
            match joined {
                Ok(Ok(chunk)) => {
                    // Handed on in pieces of at most SEND_PIECE (zero-copy slices).
                    self.ready.extend(
                        (0..chunk.len())
                            .step_by(SEND_PIECE)
                            .map(|at| chunk.slice(at..(at + SEND_PIECE).min(chunk.len()))),
                    );
                    self.current = Some(chunk);
                }
                Ok(Err(e)) => return Some(Err(self.fail(e))),
                Err(e) => {
                    let e = StorageError::new(
                        ErrorKind::Other,
                        format!("{}: a ranged read task failed: {e}", self.context),
                    );
                    return Some(Err(self.fail(e)));
                }
            }
        }
    }

    /// Stops everything after an error (the remaining tasks are aborted).
    fn fail(&mut self, e: StorageError) -> StorageError {
        self.failed = true;
        self.first = None;
        self.ready.clear();
        self.current = None;
        self.spare.clear();
        self.fetches.clear();
        e
    }
}

/// The bytes `start..size` of the object version `e_tag` at `location`, in order.
///
/// `first`, when given, is a response that begins at `start` (the opening GET): it
/// serves the first chunk. The rest comes from ranged GETs, `window − 1` ahead of the
/// chunk being sent. Must run inside a tokio runtime.
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
    let ahead = fetch_ahead(inner.read_parallelism);
    let mut plan = RangePlan::new(start, size, chunk);
    let first = first.and_then(|body| plan.next().map(|r| (body, r.end - r.start)));
    let mut state = State {
        inner,
        location,
        context: context.into(),
        e_tag,
        first,
        ready: VecDeque::new(),
        current: None,
        spare: Vec::new(),
        fetches: VecDeque::new(),
        plan,
        ahead,
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
    fn window_bounds_the_chunks_in_memory() {
        assert_eq!(fetch_ahead(4), 3);
        assert_eq!(fetch_ahead(2), 1);
        // Small reads (≤ one chunk) and parallelism 1 stay one GET.
        assert!(!is_parallel(8 * MIB, 8 * MIB, 4));
        assert!(is_parallel(8 * MIB + 1, 8 * MIB, 4));
        assert!(!is_parallel(100 * MIB, 8 * MIB, 1));
    }
}
