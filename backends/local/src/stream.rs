//! Reads and listings: a blocking thread does the file-system work and feeds a bounded
//! channel that the caller consumes as a stream, so disk and network overlap and the
//! thread stops as soon as the stream is dropped.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use ftpgate_storage::{
    validate_segment, ByteStream, DirEntry, EntryStream, ErrorKind, Result, StorageError, VPath,
};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::confine::{confine, link_target_inside, special, to_meta, TEMP_PREFIX};
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
pub(crate) async fn read(root: Arc<PathBuf>, path: VPath, offset: u64) -> Result<ByteStream> {
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

/// The open file positioned at `offset`, and the bytes left after it.
fn open_at(root: &Path, path: &VPath, offset: u64) -> Result<(File, u64)> {
    let full = confine(root, path)?;
    let io_err = |e| StorageError::from_io(path, e);
    // Opening a FIFO would block: look before opening, then check what was opened.
    let before = fs::metadata(&full).map_err(io_err)?;
    if !before.is_file() && !before.is_dir() {
        return Err(special(path));
    }
    let mut file = File::open(&full).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if meta.is_dir() {
        return Err(StorageError::new(
            ErrorKind::IsADirectory,
            format!("{path}: is a directory"),
        ));
    }
    if !meta.is_file() {
        return Err(special(path));
    }
    if offset > meta.len() {
        return Err(StorageError::new(
            ErrorKind::InvalidInput,
            format!("{path}: offset {offset} is beyond the size {}", meta.len()),
        ));
    }
    file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
    Ok((file, meta.len() - offset))
}

/// Reads chunks until end of file and sends them; returns early once the receiver
/// is gone or after sending an error. (An upload replaces a file by renaming, so the
/// open file keeps the content it had when opened.)
fn pump(mut file: File, remaining: u64, path: &VPath, tx: &mpsc::Sender<Result<Bytes>>) {
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
            return; // end of file
        }
        remaining = remaining.saturating_sub(filled as u64);
        first = false;
    }
}

/// Streams the entries of the directory at `dir`.
pub(crate) async fn list(root: Arc<PathBuf>, dir: VPath) -> Result<EntryStream> {
    let (tx, rx) = mpsc::channel(LIST_QUEUE);
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = tokio::task::spawn_blocking(move || {
        let opened = confine(&root, &dir)
            .and_then(|full| fs::read_dir(full).map_err(|e| StorageError::from_io(&dir, e)));
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
    root: &Path,
    dir: &VPath,
    entries: fs::ReadDir,
    tx: &mpsc::Sender<Result<DirEntry>>,
) {
    for entry in entries {
        let item = match entry {
            Ok(entry) => match dir_entry(root, &entry) {
                Ok(Some(e)) => Ok(e),
                Ok(None) => continue,
                Err(e) => Err(StorageError::from_io(dir, e)),
            },
            Err(e) => Err(StorageError::from_io(dir, e)),
        };
        if tx.blocking_send(item).is_err() {
            return;
        }
    }
}

/// One listed entry, or `None` when it is skipped: temporary files, names that are not
/// UTF-8 or that no virtual path can name (line breaks, backslashes), links that dangle or lead outside the root, special files, and entries that
/// vanished while being listed.
fn dir_entry(root: &Path, entry: &fs::DirEntry) -> io::Result<Option<DirEntry>> {
    let Ok(name) = entry.file_name().into_string() else {
        tracing::debug!(path = %entry.path().display(), "skipping a name that is not UTF-8");
        return Ok(None);
    };
    if name.starts_with(TEMP_PREFIX) || validate_segment(&name).is_err() {
        return Ok(None);
    }
    let meta = match entry.file_type() {
        Ok(t) if t.is_symlink() => match link_target_inside(root, &entry.path()) {
            Some(real) => fs::metadata(real),
            None => return Ok(None),
        },
        Ok(_) => entry.metadata(),
        Err(e) => Err(e),
    };
    match meta {
        Ok(m) => Ok(to_meta(&m).map(|meta| DirEntry { name, meta })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
