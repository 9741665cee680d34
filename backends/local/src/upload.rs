//! Uploads: one blocking thread per upload writes to `<dir>/.ftpgate-tmp-<random>`,
//! fed by a bounded channel so socket reads and disk writes overlap, then commits with
//! `sync_all`, a rename (or a hard link for `CreateNew`) and a directory fsync.
//! An interrupted upload can instead be suspended: fsynced and moved to the pending
//! directory (see `pending`), from where [`resume`] takes it up again.

use std::fs::File;
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use ftpgate_storage::{
    ErrorKind, Metadata, PendingKey, Result, StorageError, Upload, VPath, WriteMode,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use crate::confine::{error, special, to_meta, Root, TEMP_PREFIX};
use crate::join_error;
use crate::pending;

/// Chunks buffered between the connection and the writing thread.
const UPLOAD_QUEUE: usize = 4;

enum Msg {
    Data(Bytes),
    Commit,
    /// Keep the file as the pending upload of this name in the pending directory.
    Suspend(String),
}

/// Everything the writing thread needs, settled before `create` returns. The target
/// directory is held by descriptor: the temporary file, the commit and the cleanup all
/// happen in that directory, whatever is renamed or swapped meanwhile.
struct Prepared {
    path: VPath,
    file: File,
    /// The directory of the target (`O_PATH`), shared with [`LocalUpload`] for cleanup.
    dir: Arc<OwnedFd>,
    temp: String,
    name: String,
    create_new: bool,
    /// For `Append`/`Offset`: the existing file (opened at `create`) and how many of
    /// its bytes to keep.
    keep: Option<(File, u64)>,
    /// The root, for the pending directory.
    root: Arc<Root>,
    /// Bytes already in `file` (a resumed upload), written after.
    start_at: u64,
}

type Prepare = Box<dyn FnOnce() -> Result<(Prepared, Option<File>)> + Send>;

/// Starts an upload: checks the target and creates the temporary file on the writing
/// thread, returning once that succeeded.
pub(crate) async fn start(
    root: Arc<Root>,
    path: VPath,
    mode: WriteMode,
) -> Result<Box<dyn Upload>> {
    let vpath = path.clone();
    let prep: Prepare = Box::new(move || prepare(&root, &path, mode).map(|p| (p, None)));
    spawn(vpath, prep).await.map(|(upload, _)| upload)
}

/// Takes up the pending upload `key` of `offset` bytes; returns the upload and the
/// file opened for reading its kept bytes (for the digest).
pub(crate) async fn resume(
    root: Arc<Root>,
    key: PendingKey,
    offset: u64,
) -> Result<(Box<dyn Upload>, File)> {
    let vpath = key.path.clone();
    let prep: Prepare =
        Box::new(move || prepare_resume(&root, &key, offset).map(|(p, reader)| (p, Some(reader))));
    match spawn(vpath, prep).await? {
        (upload, Some(reader)) => Ok((upload, reader)),
        (upload, None) => {
            let _ = upload.abort().await;
            Err(StorageError::new(ErrorKind::Other, "resume: no reader"))
        }
    }
}

/// Starts the writing thread with what `prep` settles on it.
async fn spawn(vpath: VPath, prep: Prepare) -> Result<(Box<dyn Upload>, Option<File>)> {
    let (tx, rx) = mpsc::channel(UPLOAD_QUEUE);
    let (ready_tx, ready_rx) = oneshot::channel();
    let worker = tokio::task::spawn_blocking(move || {
        let (prepared, reader) = match prep() {
            Ok(p) => p,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return Err(StorageError::new(ErrorKind::Other, "upload not started"));
            }
        };
        let temp = (Arc::clone(&prepared.dir), prepared.temp.clone());
        if ready_tx.send(Ok((temp, reader))).is_err() {
            // `create` was cancelled.
            let _ = rfs::unlinkat(prepared.dir.as_fd(), &prepared.temp, AtFlags::empty());
            return Err(StorageError::new(ErrorKind::Other, "upload cancelled"));
        }
        run(prepared, rx)
    });
    let (temp, reader) = match ready_rx.await {
        Ok(Ok(ready)) => ready,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(match worker.await {
                Err(join) => join_error(join),
                Ok(Err(e)) => e,
                Ok(Ok(_)) => StorageError::new(ErrorKind::Other, "upload thread stopped"),
            })
        }
    };
    let upload: Box<dyn Upload> = Box::new(LocalUpload {
        path: vpath,
        temp,
        tx: Some(tx),
        worker: Some(worker),
        done: false,
    });
    Ok((upload, reader))
}

/// Moves the pending upload `key` back into the target directory as this upload's
/// temporary file (one `renameat`: a second session finds it gone), cuts it to its
/// first `offset` bytes and opens it positioned there; also returns it opened for
/// reading.
fn prepare_resume(root: &Arc<Root>, key: &PendingKey, offset: u64) -> Result<(Prepared, File)> {
    let path = &key.path;
    let (dir, name) = root.parent(path)?;
    if let Some(st) = root.entry(dir.as_fd(), name, path)? {
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                format!("{path}: is a directory"),
            ));
        }
    }
    let Some(pdir) = pending::open_dir(root, false, OFlags::PATH)? else {
        return Err(pending::gone(key));
    };
    let pname = pending::file_name(key);
    let temp = format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>());
    match rfs::renameat(&pdir, pname.as_str(), &dir, temp.as_str()) {
        Ok(()) => {}
        Err(rustix::io::Errno::NOENT) => return Err(pending::gone(key)),
        Err(e) => return Err(error(path, e)),
    }
    let put_back = |e: StorageError| {
        if let Err(err) = rfs::renameat(&dir, temp.as_str(), &pdir, pname.as_str()) {
            tracing::warn!(path = %path, error = %err, "cannot put a pending upload back");
        }
        e
    };
    let open = |flags| {
        rfs::openat(
            &dir,
            temp.as_str(),
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(|e| error(path, e))
    };
    let mut file = open(OFlags::WRONLY).map_err(put_back)?;
    let reader = open(OFlags::RDONLY).map_err(put_back)?;
    let size = file
        .seek(SeekFrom::End(0))
        .map_err(|e| put_back(StorageError::from_io(path, e)))?;
    if size < offset {
        return Err(put_back(StorageError::new(
            ErrorKind::InvalidInput,
            format!("{path}: the pending upload holds {size} bytes, fewer than {offset}"),
        )));
    }
    if size > offset {
        // A client that resumes a little before the end (wput: 512 bytes) resends
        // the rest.
        file.set_len(offset)
            .and_then(|()| file.seek(SeekFrom::Start(offset)))
            .map_err(|e| put_back(StorageError::from_io(path, e)))?;
    }
    let prepared = Prepared {
        path: path.clone(),
        file,
        dir: Arc::new(dir),
        temp,
        name: name.to_owned(),
        create_new: false,
        keep: None,
        root: Arc::clone(root),
        start_at: offset,
    };
    Ok((prepared, reader))
}

fn prepare(root: &Arc<Root>, path: &VPath, mode: WriteMode) -> Result<Prepared> {
    let (dir, name) = root.parent(path)?;
    let existing = match root.entry(dir.as_fd(), name, path)? {
        None => None,
        Some(st) => {
            // A link (checked to stay inside) is followed to what it names.
            let st = if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                let fd = root.open_path(path, OFlags::PATH)?;
                rfs::fstat(&fd).map_err(|e| error(path, e))?
            } else {
                st
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    return Err(StorageError::new(
                        ErrorKind::IsADirectory,
                        format!("{path}: is a directory"),
                    ))
                }
                FileType::RegularFile => Some(u64::try_from(st.st_size).unwrap_or(0)),
                _ => return Err(special(path)),
            }
        }
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
            // Non-blocking open and a type check on the descriptor: whatever the name
            // holds now, only a regular file is copied from.
            let src = root.open_path(path, OFlags::RDONLY | OFlags::NONBLOCK)?;
            let st = rfs::fstat(&src).map_err(|e| error(path, e))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return Err(special(path));
            }
            rfs::fcntl_setfl(&src, OFlags::empty()).map_err(|e| error(path, e))?;
            // Appending keeps whatever the file holds now, not the size seen above.
            let n = match mode {
                WriteMode::Append => u64::try_from(st.st_size).unwrap_or(0),
                _ => n,
            };
            Some((File::from(src), n))
        }
        _ => None,
    };
    let temp = format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>());
    let file = rfs::openat(
        &dir,
        temp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o666),
    )
    .map_err(|e| error(path, e))?;
    Ok(Prepared {
        path: path.clone(),
        file: File::from(file),
        dir: Arc::new(dir),
        temp,
        name: name.to_owned(),
        create_new: mode == WriteMode::CreateNew,
        keep,
        root: Arc::clone(root),
        start_at: 0,
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
        let _ = rfs::unlinkat(p.dir.as_fd(), &p.temp, AtFlags::empty());
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
    let mut end: Option<Option<String>> = None;
    let mut writeback = Writeback::new(p.keep.as_ref().map_or(p.start_at, |(_, n)| *n));
    while end.is_none() {
        match rx.blocking_recv() {
            Some(Msg::Data(b)) => batch.push(b),
            Some(Msg::Commit) => end = Some(None),
            Some(Msg::Suspend(name)) => end = Some(Some(name)),
            None => return Err(StorageError::new(ErrorKind::Other, "upload aborted")),
        }
        while end.is_none() {
            match rx.try_recv() {
                Ok(Msg::Data(b)) => batch.push(b),
                Ok(Msg::Commit) => end = Some(None),
                Ok(Msg::Suspend(name)) => end = Some(Some(name)),
                Err(_) => break,
            }
        }
        let len: u64 = batch.iter().map(|b| b.len() as u64).sum();
        write_all_chunks(&mut file, &mut batch).map_err(io_err)?;
        writeback.written(&p.file, len);
    }
    drop(rx);
    p.file.sync_all().map_err(io_err)?;
    let meta = rfs::fstat(&p.file).map_err(|e| error(&p.path, e))?;
    let dir = p.dir.as_fd();
    if let Some(Some(pname)) = end {
        return suspend(p, &pname, &meta);
    }
    if p.create_new {
        link_new(dir, &p.temp, &p.name).map_err(|e| error(&p.path, e))?;
        if let Err(e) = rfs::unlinkat(dir, &p.temp, AtFlags::empty()) {
            tracing::warn!(path = %p.path, temp = %p.temp, error = %e, "cannot remove temporary file after commit");
        }
    } else {
        rfs::renameat(dir, &p.temp, dir, &p.name).map_err(|e| error(&p.path, e))?;
    }
    let synced = rfs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .and_then(rfs::fsync);
    if let Err(e) = synced {
        tracing::warn!(path = %p.path, error = %e, "cannot fsync directory after upload");
    }
    to_meta(&meta).ok_or_else(|| special(&p.path))
}

/// Moves the fsynced temporary file into the pending directory as `pname`
/// (replacing an older pending upload of the same key) and fsyncs that directory.
fn suspend(p: &Prepared, pname: &str, meta: &rfs::Stat) -> Result<Metadata> {
    let pdir = pending::open_dir(&p.root, true, OFlags::RDONLY)?
        .ok_or_else(|| StorageError::new(ErrorKind::Other, "no pending directory"))?;
    rfs::renameat(p.dir.as_fd(), p.temp.as_str(), &pdir, pname).map_err(|e| error(&p.path, e))?;
    if let Err(e) = rfs::fsync(&pdir) {
        tracing::warn!(path = %p.path, error = %e, "cannot fsync the pending directory");
    }
    to_meta(meta).ok_or_else(|| special(&p.path))
}

/// Publishes `temp` as `target` (both in `dir`) only if `target` does not exist: a
/// hard link fails atomically with `EEXIST`. File systems without hard links fall back
/// to a check followed by a rename.
fn link_new(dir: BorrowedFd<'_>, temp: &str, target: &str) -> rustix::io::Result<()> {
    use rustix::io::Errno;
    match rfs::linkat(dir, temp, dir, target, AtFlags::empty()) {
        Ok(()) => Ok(()),
        Err(e @ (Errno::OPNOTSUPP | Errno::PERM)) => {
            match rfs::statat(dir, target, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => Err(Errno::EXIST),
                Err(Errno::NOENT) => rfs::renameat(dir, temp, dir, target),
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
    /// The target directory and the temporary file's name in it.
    temp: (Arc<OwnedFd>, String),
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

    async fn suspend(mut self: Box<Self>, key: &PendingKey) -> Result<Option<u64>> {
        let Some(tx) = self.tx.take() else {
            return Err(self.failed());
        };
        let _ = tx.send(Msg::Suspend(pending::file_name(key))).await;
        drop(tx);
        let meta = self.outcome().await?;
        self.done = true;
        Ok(Some(meta.size))
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
            let (dir, temp) = &self.temp;
            match rfs::unlinkat(dir.as_fd(), temp, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => {
                    tracing::warn!(path = %self.path, temp = %temp, error = %e, "cannot remove temporary file");
                }
            }
        }
    }
}
