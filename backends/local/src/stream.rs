//! Reads and listings as streams fed by the blocking pool one step at a time: each
//! step (one chunk of a file, one batch of directory entries) runs as its own
//! blocking task that takes the open file or directory and hands it back with what it
//! read, and the next step starts as soon as the previous one is handed to the
//! consumer. So disk and network overlap, and a consumer that stops pulling (a client
//! that stops reading a download or a listing, over TLS or throttled) holds no thread:
//! at most one step finishes and the thread goes back to the pool, instead of a
//! thread parked for the stall timeout per stalled transfer (which a few hundred
//! stalled clients would turn into an exhausted blocking pool, stopping every other
//! session's file-system work).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::sync::Arc;

use bytes::Bytes;
use ftpgate_storage::{
    validate_segment, ByteStream, DirEntry, EntryStream, ErrorKind, FileRange, Metadata, Result,
    StorageError, VPath,
};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::task::JoinHandle;

use rustix::fs::{self as rfs, AtFlags, FileType, OFlags};

use crate::confine::{error, served_meta, special, to_meta, Root, TEMP_PREFIX};
use crate::{join_error, on_blocking_thread};

/// Bytes per read step. A download whose client stops reading holds at most two
/// chunks = 256 KiB: the one handed to the data connection and the one read ahead
/// (issue 11 §3).
const READ_CHUNK: u64 = 128 * 1024;
/// Entries per listing step.
const LIST_BATCH: usize = 64;

/// What one blocking step produced: items for the consumer, and the state for the
/// next step (`None`: the stream ends after these items).
type Stepped<S, T> = (Vec<Result<T>>, Option<S>);

/// A stream of the items that `step` produces from `state`, one blocking task per
/// step, the next step running while the consumer takes the previous one's items.
fn blocking_steps<S, T>(state: S, step: fn(S) -> Stepped<S, T>) -> BoxStream<'static, Result<T>>
where
    S: Send + 'static,
    T: Send + 'static,
{
    struct Driver<S, T> {
        items: VecDeque<Result<T>>,
        next: Option<JoinHandle<Stepped<S, T>>>,
        step: fn(S) -> Stepped<S, T>,
    }
    fn spawn<S: Send + 'static, T: Send + 'static>(
        step: fn(S) -> Stepped<S, T>,
        state: S,
    ) -> JoinHandle<Stepped<S, T>> {
        tokio::task::spawn_blocking(move || step(state))
    }
    let driver = Driver {
        items: VecDeque::new(),
        next: Some(spawn(step, state)),
        step,
    };
    stream::unfold(driver, |mut d| async move {
        loop {
            if let Some(item) = d.items.pop_front() {
                return Some((item, d));
            }
            let (items, state) = match d.next.take()?.await {
                Ok(stepped) => stepped,
                // The step panicked: reported, and the stream ends.
                Err(e) => (vec![Err(join_error(e))], None),
            };
            d.next = state.map(|st| spawn(d.step, st));
            d.items.extend(items);
        }
    })
    .boxed()
}

/// Streams the file at `path` from `offset`.
pub(crate) async fn read(root: Arc<Root>, path: VPath, offset: u64) -> Result<ByteStream> {
    let at = path.clone();
    let (file, remaining) = on_blocking_thread(move || open_at(&root, &at, offset)).await?;
    Ok(file_chunks(file, remaining, path))
}

/// Streams the first `len` bytes of the open `file` (positioned at 0), whatever is
/// appended to it meanwhile (the kept bytes of a resumed upload, for its digest).
pub(crate) fn stream_prefix(file: File, len: u64, path: VPath) -> ByteStream {
    file_chunks(file.take(len), len, path)
}

/// Metadata and content of the file at `path` from `offset`, opened once on one
/// blocking thread (a RETR costs one hop, and the size reported is the size of what
/// is read, whatever is renamed over the name meanwhile).
pub(crate) async fn open(
    root: Arc<Root>,
    path: VPath,
    offset: u64,
) -> Result<(Metadata, ByteStream)> {
    let at = path.clone();
    let (meta, file, len) = on_blocking_thread(move || positioned(&root, &at, offset)).await?;
    Ok((meta, file_chunks(file, len, path)))
}

/// Metadata and the open file at `path` with the range from `offset` a download
/// sends (for `sendfile(2)`), checked as [`open_at`] checks it.
pub(crate) async fn open_file(
    root: Arc<Root>,
    path: VPath,
    offset: u64,
) -> Result<(Metadata, FileRange)> {
    on_blocking_thread(move || open_range(&root, &path, offset)).await
}

/// The open file positioned at `offset`, and the bytes left after it. Opened with
/// `O_NONBLOCK` (a FIFO swapped in cannot block the thread), then its type checked on
/// the descriptor: only a regular file is read.
pub(crate) fn open_at(root: &Root, path: &VPath, offset: u64) -> Result<(File, u64)> {
    positioned(root, path, offset).map(|(_, file, len)| (file, len))
}

/// [`open_at`] with the file's metadata.
fn positioned(root: &Root, path: &VPath, offset: u64) -> Result<(Metadata, File, u64)> {
    let (meta, FileRange { mut file, len, .. }) = open_range(root, path, offset)?;
    if offset > 0 {
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| StorageError::from_io(path, e))?;
    }
    Ok((meta, file, len))
}

/// The regular file at `path` (opened non-blocking, its type checked on the
/// descriptor, then switched to blocking reads), its metadata, and the range from
/// `offset` to its end; `InvalidInput` for an offset beyond the end.
fn open_range(root: &Root, path: &VPath, offset: u64) -> Result<(Metadata, FileRange)> {
    let fd = root.open_path(path, OFlags::RDONLY | OFlags::NONBLOCK)?;
    let st = rfs::fstat(&fd).map_err(|e| error(path, e))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {}
        FileType::Directory => {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                format!("{path}: is a directory"),
            ))
        }
        _ => return Err(special(path)),
    }
    // Blocking reads from here on (a regular file ignores the flag anyway).
    rfs::fcntl_setfl(&fd, OFlags::empty()).map_err(|e| error(path, e))?;
    let len = u64::try_from(st.st_size).unwrap_or(0);
    if offset > len {
        return Err(StorageError::new(
            ErrorKind::InvalidInput,
            format!("{path}: offset {offset} is beyond the size {len}"),
        ));
    }
    let meta = served_meta(&st, path)?;
    let file = File::from(fd);
    Ok((
        meta,
        FileRange {
            file,
            offset,
            len: len - offset,
        },
    ))
}

/// The stream of `file`'s chunks, `remaining` bytes promised (see [`read_step`]).
fn file_chunks<R: Read + Send + 'static>(file: R, remaining: u64, path: VPath) -> ByteStream {
    blocking_steps(
        FileReader {
            file,
            remaining,
            first: true,
            path,
        },
        read_step::<R>,
    )
}

/// An open file being streamed: what one [`read_step`] takes and hands back.
struct FileReader<R> {
    file: R,
    /// Bytes promised at open and not yet read.
    remaining: u64,
    /// No chunk read yet (an empty file needs one read of one byte to see its end).
    first: bool,
    path: VPath,
}

/// Reads one chunk. The stream ends at end of file, after an error, or — with an
/// error — when the file ends before the `remaining` bytes promised (truncated in
/// place meanwhile): the transfer fails instead of looking complete. (An upload
/// replaces a file by renaming, so the open file keeps the content it had when
/// opened; a file that grew meanwhile is read on in full chunks.)
fn read_step<R: Read>(mut r: FileReader<R>) -> Stepped<FileReader<R>, Bytes> {
    // One `read` per chunk for a regular file: the buffer is full-sized from the
    // start (growing it read by read cost ~7 syscalls per chunk). Sized to what is
    // left plus one byte (so end of file shows in the same read), so a small file
    // does not cost a zeroed full-sized buffer.
    let size = match r.remaining {
        0 if r.first => 1,
        0 => READ_CHUNK,
        n => READ_CHUNK.min(n.saturating_add(1)),
    } as usize;
    let mut buf = vec![0u8; size];
    let mut filled = 0;
    let mut failure = None;
    while filled < buf.len() {
        match r.file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                failure = Some(StorageError::from_io(&r.path, e));
                break;
            }
        }
    }
    let mut items = Vec::with_capacity(2);
    if filled > 0 {
        buf.truncate(filled);
        items.push(Ok(Bytes::from(buf)));
    }
    if let Some(e) = failure {
        items.push(Err(e));
        return (items, None);
    }
    if filled < size {
        // End of file: short of what was promised when the file shrank.
        if (filled as u64) < r.remaining {
            items.push(Err(shrank(&r.path, r.remaining - filled as u64)));
        }
        return (items, None);
    }
    r.remaining = r.remaining.saturating_sub(filled as u64);
    r.first = false;
    (items, Some(r))
}

/// The error for a file that ended `missing` bytes before the size it had at open.
pub(crate) fn shrank(path: &VPath, missing: u64) -> StorageError {
    StorageError::new(
        ErrorKind::Transient,
        format!("read {path}: the file shrank while being read ({missing} bytes missing)"),
    )
}

/// Streams the entries of the directory at `dir`.
pub(crate) async fn list(root: Arc<Root>, dir: VPath) -> Result<EntryStream> {
    let (at, of) = (Arc::clone(&root), dir.clone());
    let entries = on_blocking_thread(move || {
        at.open_path(&of, OFlags::RDONLY | OFlags::DIRECTORY)
            .and_then(|fd| rfs::Dir::new(fd).map_err(|e| error(&of, e)))
    })
    .await?;
    Ok(blocking_steps(DirReader { root, dir, entries }, list_step))
}

/// An open directory being listed: what one [`list_step`] takes and hands back.
struct DirReader {
    root: Arc<Root>,
    dir: VPath,
    entries: rfs::Dir,
}

/// Reads up to [`LIST_BATCH`] listed entries (skipped ones do not count); the
/// stream ends at the end of the directory.
fn list_step(mut r: DirReader) -> Stepped<DirReader, DirEntry> {
    let mut items = Vec::new();
    while items.len() < LIST_BATCH {
        let Some(entry) = r.entries.read() else {
            return (items, None);
        };
        match entry.and_then(|e| dir_entry(&r.root, &r.dir, &r.entries, &e)) {
            Ok(Some(e)) => items.push(Ok(e)),
            Ok(None) => {}
            Err(e) => items.push(Err(error(&r.dir, e))),
        }
    }
    (items, Some(r))
}

/// One listed entry, or `None` when it is skipped: `.` and `..`, temporary files, names
/// that are not UTF-8 or that no virtual path can name (line breaks, backslashes),
/// links that dangle or lead outside the root, special files, and entries that
/// vanished while being listed.
fn dir_entry(
    root: &Root,
    dir: &VPath,
    entries: &rfs::Dir,
    entry: &rfs::DirEntry,
) -> rustix::io::Result<Option<DirEntry>> {
    let raw = entry.file_name();
    let Ok(name) = raw.to_str() else {
        tracing::debug!(dir = %dir, name = ?raw, "skipping a name that is not UTF-8");
        return Ok(None);
    };
    if name.starts_with(TEMP_PREFIX) || validate_segment(name).is_err() {
        return Ok(None);
    }
    let st = match rfs::statat(entries.fd()?, raw, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        // Followed the way every operation would follow it; skipped when that fails
        // (dangling, outside the root, a loop).
        let Ok(child) = dir.child(name) else {
            return Ok(None);
        };
        let Ok(fd) = root.open_path(&child, OFlags::PATH) else {
            return Ok(None);
        };
        rfs::fstat(fd.as_fd())?
    } else {
        st
    };
    Ok(to_meta(&st).map(|meta| DirEntry {
        name: name.to_owned(),
        meta,
    }))
}
