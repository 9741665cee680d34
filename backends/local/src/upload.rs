//! Uploads: one blocking thread per upload writes to `<dir>/.ftpgate-tmp-<random>`,
//! fed by a bounded channel so socket reads and disk writes overlap, then commits with
//! `sync_all`, a rename (or a hard link for `CreateNew`) and a directory fsync.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use ftpgate_storage::{ErrorKind, Metadata, Result, StorageError, Upload, VPath, WriteMode};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::confine::{confine, special, to_meta, TEMP_PREFIX};
use crate::join_error;

/// Chunks buffered between the connection and the writing thread.
const UPLOAD_QUEUE: usize = 4;

enum Msg {
    Data(Bytes),
    Commit,
}

/// Everything the writing thread needs, settled before `create` returns.
struct Prepared {
    path: VPath,
    file: File,
    temp: PathBuf,
    target: PathBuf,
    parent: PathBuf,
    create_new: bool,
    /// For `Append`/`Offset`: the existing file (opened at `create`) and how many of
    /// its bytes to keep.
    keep: Option<(File, u64)>,
}

/// Starts an upload: checks the target and creates the temporary file on the writing
/// thread, returning once that succeeded.
pub(crate) async fn start(
    root: Arc<PathBuf>,
    path: VPath,
    mode: WriteMode,
) -> Result<Box<dyn Upload>> {
    let (tx, rx) = mpsc::channel(UPLOAD_QUEUE);
    let (ready_tx, ready_rx) = oneshot::channel();
    let vpath = path.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let prepared = match prepare(&root, &path, mode) {
            Ok(p) => p,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return Err(StorageError::new(ErrorKind::Other, "upload not started"));
            }
        };
        if ready_tx.send(Ok(prepared.temp.clone())).is_err() {
            // `create` was cancelled.
            let _ = fs::remove_file(&prepared.temp);
            return Err(StorageError::new(ErrorKind::Other, "upload cancelled"));
        }
        run(prepared, rx)
    });
    let temp = match ready_rx.await {
        Ok(Ok(temp)) => temp,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(match worker.await {
                Err(join) => join_error(join),
                Ok(Err(e)) => e,
                Ok(Ok(_)) => StorageError::new(ErrorKind::Other, "upload thread stopped"),
            })
        }
    };
    Ok(Box::new(LocalUpload {
        path: vpath,
        temp,
        tx: Some(tx),
        worker: Some(worker),
        done: false,
    }))
}

fn prepare(root: &Path, path: &VPath, mode: WriteMode) -> Result<Prepared> {
    let io_err = |e| StorageError::from_io(path, e);
    let target = confine(root, path)?;
    let (Some(parent), false) = (target.parent(), path.is_root()) else {
        return Err(StorageError::new(
            ErrorKind::IsADirectory,
            "/: is a directory",
        ));
    };
    let parent = parent.to_path_buf();
    match fs::metadata(&parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(StorageError::new(
                ErrorKind::NotADirectory,
                format!("{path}: the parent is not a directory"),
            ))
        }
        Err(e) => return Err(io_err(e)),
    }
    let existing = match fs::metadata(&target) {
        Ok(m) if m.is_dir() => {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                format!("{path}: is a directory"),
            ))
        }
        Ok(m) if !m.is_file() => return Err(special(path)),
        Ok(m) => Some(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(e)),
    };
    let keep_len = match mode {
        WriteMode::Truncate => None,
        WriteMode::CreateNew => {
            if existing.is_some() {
                return Err(StorageError::new(
                    ErrorKind::AlreadyExists,
                    format!("{path}: already exists"),
                ));
            }
            None
        }
        WriteMode::Append => existing,
        WriteMode::Offset(n) => {
            let size = existing.unwrap_or(0);
            if n > size {
                return Err(StorageError::new(
                    ErrorKind::InvalidInput,
                    format!("{path}: offset {n} is beyond the size {size}"),
                ));
            }
            Some(n)
        }
    };
    let keep = match keep_len {
        Some(n) if n > 0 => {
            let src = File::open(&target).map_err(io_err)?;
            // Appending keeps whatever the file holds now, not the size seen above.
            let n = match mode {
                WriteMode::Append => src.metadata().map_err(io_err)?.len(),
                _ => n,
            };
            Some((src, n))
        }
        _ => None,
    };
    let temp = parent.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(io_err)?;
    Ok(Prepared {
        path: path.clone(),
        file,
        temp,
        target,
        parent,
        create_new: mode == WriteMode::CreateNew,
        keep,
    })
}

/// Bytes written between two writeback starts.
const WRITEBACK_EVERY: u64 = 16 * 1024 * 1024;

/// Starts disk writeback of each completed region while the upload goes on, so the
/// final `sync_all` (which `226` waits for) only has the tail left to flush.
struct Writeback {
    pos: u64,
    started: u64,
}

impl Writeback {
    fn new(pos: u64) -> Self {
        Self { pos, started: pos }
    }

    fn written(&mut self, file: &File, len: u64) {
        self.pos += len;
        if self.pos - self.started >= WRITEBACK_EVERY {
            start_writeback(file, self.started, self.pos - self.started);
            self.started = self.pos;
        }
    }
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: queue the range for writeback without
/// waiting. Only a hint; durability still comes from `sync_all` at commit.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is owned by `file`, alive for this call; the call only
    // reads its arguments.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// The writing thread: copies the kept prefix, writes chunks until `Commit` (or until
/// the channel closes, which aborts), then commits. On any failure the temporary file
/// is removed.
fn run(p: Prepared, rx: mpsc::Receiver<Msg>) -> Result<Metadata> {
    let result = write_and_commit(&p, rx);
    if result.is_err() {
        let _ = fs::remove_file(&p.temp);
    }
    result
}

fn write_and_commit(p: &Prepared, mut rx: mpsc::Receiver<Msg>) -> Result<Metadata> {
    let io_err = |e| StorageError::from_io(&p.path, e);
    let mut file = &p.file;
    if let Some((src, n)) = &p.keep {
        // `io::copy` between files uses copy_file_range where the kernel has it.
        let copied = io::copy(&mut src.take(*n), &mut file).map_err(io_err)?;
        if copied < *n {
            return Err(StorageError::new(
                ErrorKind::InvalidInput,
                format!("{}: the file shrank below offset {n}", p.path),
            ));
        }
        if let Ok(m) = src.metadata() {
            let _ = p.file.set_permissions(m.permissions());
        }
    }
    // Whatever has queued up is written with one `writev`, without copying.
    let mut batch: Vec<Bytes> = Vec::with_capacity(UPLOAD_QUEUE + 1);
    let mut commit = false;
    let mut writeback = Writeback::new(p.keep.as_ref().map_or(0, |(_, n)| *n));
    while !commit {
        match rx.blocking_recv() {
            Some(Msg::Data(b)) => batch.push(b),
            Some(Msg::Commit) => commit = true,
            None => return Err(StorageError::new(ErrorKind::Other, "upload aborted")),
        }
        while !commit {
            match rx.try_recv() {
                Ok(Msg::Data(b)) => batch.push(b),
                Ok(Msg::Commit) => commit = true,
                Err(_) => break,
            }
        }
        let len: u64 = batch.iter().map(|b| b.len() as u64).sum();
        write_all_chunks(&mut file, &mut batch).map_err(io_err)?;
        writeback.written(&p.file, len);
    }
    drop(rx);
    p.file.sync_all().map_err(io_err)?;
    let meta = p.file.metadata().map_err(io_err)?;
    if p.create_new {
        link_new(&p.temp, &p.target).map_err(io_err)?;
        if let Err(e) = fs::remove_file(&p.temp) {
            tracing::warn!(temp = %p.temp.display(), error = %e, "cannot remove temporary file after commit");
        }
    } else {
        fs::rename(&p.temp, &p.target).map_err(io_err)?;
    }
    if let Err(e) = File::open(&p.parent).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %p.parent.display(), error = %e, "cannot fsync directory after upload");
    }
    to_meta(&meta).ok_or_else(|| special(&p.path))
}

/// Publishes `temp` as `target` only if `target` does not exist: a hard link fails
/// atomically with `AlreadyExists`. File systems without hard links fall back to a
/// check followed by a rename.
fn link_new(temp: &Path, target: &Path) -> io::Result<()> {
    match fs::hard_link(temp, target) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
            ) =>
        {
            match fs::symlink_metadata(target) {
                Ok(_) => Err(io::Error::from(io::ErrorKind::AlreadyExists)),
                Err(missing) if missing.kind() == io::ErrorKind::NotFound => {
                    fs::rename(temp, target)
                }
                Err(_) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Writes every chunk with vectored writes, then empties `chunks`.
fn write_all_chunks(file: &mut &File, chunks: &mut Vec<Bytes>) -> io::Result<()> {
    chunks.retain(|c| !c.is_empty());
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    drop(slices);
    chunks.clear();
    Ok(())
}

/// An upload in progress on a [`LocalBackend`](crate::LocalBackend).
struct LocalUpload {
    path: VPath,
    temp: PathBuf,
    /// `None` once the upload failed, completed or was aborted.
    tx: Option<mpsc::Sender<Msg>>,
    worker: Option<JoinHandle<Result<Metadata>>>,
    /// Set once the temporary file needs no removal on drop.
    done: bool,
}

impl LocalUpload {
    /// The outcome of the writing thread, once it has stopped.
    async fn outcome(&mut self) -> Result<Metadata> {
        match self.worker.take() {
            Some(worker) => worker.await.unwrap_or_else(|e| Err(join_error(e))),
            None => Err(self.failed()),
        }
    }

    fn failed(&self) -> StorageError {
        StorageError::new(
            ErrorKind::Other,
            format!("{}: the upload failed earlier", self.path),
        )
    }
}

#[async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let Some(tx) = &self.tx else {
            return Err(self.failed());
        };
        if tx.send(Msg::Data(data)).await.is_ok() {
            return Ok(());
        }
        // The thread stopped: it failed, and says why.
        self.tx = None;
        match self.outcome().await {
            Err(e) => Err(e),
            Ok(_) => Err(self.failed()),
        }
    }

    async fn complete(mut self: Box<Self>) -> Result<Metadata> {
        let Some(tx) = self.tx.take() else {
            return Err(self.failed());
        };
        // A failed send means the thread already stopped with an error.
        let _ = tx.send(Msg::Commit).await;
        drop(tx);
        let result = self.outcome().await;
        if result.is_ok() {
            self.done = true;
        }
        result
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        drop(self.tx.take());
        // The thread removes the temporary file when the channel closes; wait for it.
        let _ = self.outcome().await;
        Ok(())
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if !self.done {
            // The thread may still be writing; unlinking now leaves nothing behind
            // whatever it does next (a late rename fails on the missing file).
            match fs::remove_file(&self.temp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(temp = %self.temp.display(), error = %e, "cannot remove temporary file");
                }
            }
        }
    }
}
