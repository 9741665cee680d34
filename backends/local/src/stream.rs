//! Reads and listings: a blocking thread does the file-system work and feeds a bounded
//! channel that the caller consumes as a stream, so disk and network overlap and the
//! thread stops as soon as the stream is dropped.

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
use tokio::sync::{mpsc, oneshot};

use rustix::fs::{self as rfs, AtFlags, FileType, OFlags};

use crate::confine::{error, served_meta, special, to_meta, Root, TEMP_PREFIX};
use crate::join_error;

/// Bytes per read chunk. With [`READ_QUEUE`], a download whose client stops
/// reading holds at most (queue + 2) chunks = 512 KiB: the queued ones, the one
/// the thread waits to send and the one being written to the socket (issue 11 §3;
/// 512 KiB × 6 = 3 MiB before).
const READ_CHUNK: u64 = 128 * 1024;
/// Chunks buffered between the reading thread and the consumer.
const READ_QUEUE: usize = 2;
/// Entries buffered between the listing thread and the consumer.
const LIST_QUEUE: usize = 64;

fn receiver_stream<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> BoxStream<'static, T> {
    stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// Waits for the blocking thread's "opened" signal; a thread that vanished without
/// one panicked.
async fn ready(rx: oneshot::Receiver<Result<()>>) -> Result<()> {
    rx.await.unwrap_or_else(|_| {
        Err(StorageError::new(
            ErrorKind::Other,
            "storage thread stopped unexpectedly",
        ))
    })
}

/// Streams the file at `path` from `offset`.
pub(crate) async fn read(root: Arc<Root>, path: VPath, offset: u64) -> Result<ByteStream> {
    let (tx, rx) = mpsc::channel(READ_QUEUE);
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = tokio::task::spawn_blocking(move || match open_at(&root, &path, offset) {
        Err(e) => {
            let _ = ready_tx.send(Err(e));
        }
        Ok((file, remaining)) => {
            if ready_tx.send(Ok(())).is_ok() {
                pump(file, remaining, &path, &tx);
            }
        }
    });
    if let Err(e) = ready(ready_rx).await {
        // Surface a panic of the thread rather than a vague message.
        if let Err(join) = task.await {
            return Err(join_error(join));
        }
        return Err(e);
    }
    Ok(receiver_stream(rx))
}

/// Streams the first `len` bytes of the open `file` (positioned at 0), whatever is
/// appended to it meanwhile (the kept bytes of a resumed upload, for its digest).
pub(crate) fn stream_prefix(file: File, len: u64, path: VPath) -> ByteStream {
    let (tx, rx) = mpsc::channel(READ_QUEUE);
    tokio::task::spawn_blocking(move || pump(file.take(len), len, &path, &tx));
    receiver_stream(rx)
}

/// Metadata and content of the file at `path` from `offset`, opened once on one
/// blocking thread (a RETR costs one hop, and the size reported is the size of what
/// is read, whatever is renamed over the name meanwhile).
pub(crate) async fn open(
    root: Arc<Root>,
    path: VPath,
    offset: u64,
) -> Result<(Metadata, ByteStream)> {
    let (tx, rx) = mpsc::channel(READ_QUEUE);
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = tokio::task::spawn_blocking(move || match positioned(&root, &path, offset) {
        Err(e) => {
            let _ = ready_tx.send(Err(e));
        }
        Ok((meta, file, len)) => {
            if ready_tx.send(Ok(meta)).is_ok() {
                pump(file, len, &path, &tx);
            }
        }
    });
    let meta = match ready_rx.await {
        Ok(Ok(meta)) => meta,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(match task.await {
                Err(join) => join_error(join),
                Ok(()) => {
                    StorageError::new(ErrorKind::Other, "storage thread stopped unexpectedly")
                }
            })
        }
    };
    Ok((meta, receiver_stream(rx)))
}

/// Metadata and the open file at `path` with the range from `offset` a download
/// sends (for `sendfile(2)`), checked as [`open_at`] checks it.
pub(crate) async fn open_file(
    root: Arc<Root>,
    path: VPath,
    offset: u64,
) -> Result<(Metadata, FileRange)> {
    tokio::task::spawn_blocking(move || open_range(&root, &path, offset))
        .await
        .unwrap_or_else(|e| Err(join_error(e)))
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

/// Reads chunks until end of file and sends them; returns early once the receiver
/// is gone or after sending an error. (An upload replaces a file by renaming, so the
/// open file keeps the content it had when opened.) A file that ends before the
/// `remaining` bytes promised (truncated in place meanwhile) ends the stream with an
/// error: the transfer fails instead of looking complete.
fn pump(mut file: impl Read, remaining: u64, path: &VPath, tx: &mpsc::Sender<Result<Bytes>>) {
    // An empty file needs one read of one byte to see its end.
    let mut remaining = remaining;
    let mut first = true;
    loop {
        // One `read` per chunk for a regular file: the buffer is full-sized from the
        // start (growing it read by read cost ~7 syscalls per chunk). Sized to what
        // is left plus one byte (so end of file shows in the same read), so a small
        // file does not cost a zeroed 512 KiB buffer.
        // (A file that grew meanwhile is read on in full chunks.)
        let size = match remaining {
            0 if first => 1,
            0 => READ_CHUNK,
            n => READ_CHUNK.min(n.saturating_add(1)),
        } as usize;
        let mut buf = vec![0u8; size];
        let mut filled = 0;
        let mut failure = None;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    failure = Some(StorageError::from_io(path, e));
                    break;
                }
            }
        }
        if filled > 0 {
            buf.truncate(filled);
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return;
            }
        }
        if let Some(e) = failure {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        if filled < size {
            // End of file: short of what was promised when the file shrank.
            if (filled as u64) < remaining {
                let _ = tx.blocking_send(Err(shrank(path, remaining - filled as u64)));
            }
            return;
        }
        remaining = remaining.saturating_sub(filled as u64);
        first = false;
    }
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
    let (tx, rx) = mpsc::channel(LIST_QUEUE);
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = tokio::task::spawn_blocking(move || {
        let opened = root
            .open_path(&dir, OFlags::RDONLY | OFlags::DIRECTORY)
            .and_then(|fd| rfs::Dir::new(fd).map_err(|e| error(&dir, e)));
        match opened {
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
            Ok(entries) => {
                if ready_tx.send(Ok(())).is_ok() {
                    feed_entries(&root, &dir, entries, &tx);
                }
            }
        }
    });
    if let Err(e) = ready(ready_rx).await {
        if let Err(join) = task.await {
            return Err(join_error(join));
        }
        return Err(e);
    }
    Ok(receiver_stream(rx))
}

fn feed_entries(
    root: &Root,
    dir: &VPath,
    mut entries: rfs::Dir,
    tx: &mpsc::Sender<Result<DirEntry>>,
) {
    while let Some(entry) = entries.read() {
        let item = match entry.and_then(|e| dir_entry(root, dir, &entries, &e)) {
            Ok(Some(e)) => Ok(e),
            Ok(None) => continue,
            Err(e) => Err(error(dir, e)),
        };
        if tx.blocking_send(item).is_err() {
            return;
        }
    }
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
