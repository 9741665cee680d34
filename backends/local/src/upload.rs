//! Uploads: the chunks of an upload are written to `<dir>/.ftpgate-tmp-<random>` by a
//! small pool of threads shared by every upload to a file system ([`writers`], see
//! `lanes`), fed by a bounded queue per upload so socket reads and disk writes
//! overlap; the upload then commits on the blocking pool with `sync_all`, a rename (or
//! a hard link for `CreateNew`) and a directory fsync.
//! An interrupted upload can instead be suspended: fsynced and moved to the pending
//! directory (see `pending`), from where [`resume`] takes it up again.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use ftpgate_storage::{
    ErrorKind, Metadata, PendingKey, Result, StorageError, Upload, VPath, WriteMode,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use crate::confine::{error, special, to_meta, Root, TEMP_PREFIX};
use crate::lanes::{LaneSender, Pool, Worker};
use crate::pending;
use crate::{join_error, on_blocking_thread};

/// Most chunks queued between the connection and the writers for one upload; fewer
/// when many uploads run ([`Pool::queue_depth`]).
const UPLOAD_QUEUE: usize = 4;

/// The threads that write the uploads' chunks (issue 13 §5): two per core, so a write
/// that waits for the disk leaves others running, instead of one thread per upload
/// (300 uploads: 300 threads). One pool per file system (`st_dev` of the upload's
/// file): a file system that freezes (a hung NFS mount under one `[backends.NAME]`)
/// holds only its own pool's threads, never the uploads to another file system.
fn writers(dev: u64) -> &'static Pool {
    static POOLS: Mutex<BTreeMap<u64, &'static Pool>> = Mutex::new(BTreeMap::new());
    let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    // One small pool per mounted file system the process writes to: bounded by the
    // mounts, so leaking them is the same as a `static` each.
    pools
        .entry(dev)
        .or_insert_with(|| Box::leak(Box::new(Pool::new("ftpgate-write", 2))))
}

/// Everything the writers need, settled before `create` returns. The target
/// directory is held by descriptor: the temporary file, the commit and the cleanup all
/// happen in that directory, whatever is renamed or swapped meanwhile. Dropped before
/// it was published, it removes its temporary file.
struct Prepared {
    path: VPath,
    /// The temporary file; taken (and closed, its error checked) by [`commit`].
    file: Option<File>,
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
    /// The temporary file was renamed or linked away: nothing to remove.
    published: bool,
}

impl Prepared {
    /// The temporary file, open until [`commit`] closes it.
    fn file(&self) -> &File {
        // Taken only by `commit`, which consumes `self`.
        self.file
            .as_ref()
            .expect("the temporary file is open until the commit")
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.published {
            let _ = rfs::unlinkat(self.dir.as_fd(), &self.temp, AtFlags::empty());
        }
    }
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

/// Settles the upload with `prep` on the blocking pool, then copies the kept prefix
/// (if any) there while the first chunks queue up.
async fn spawn(vpath: VPath, prep: Prepare) -> Result<(Box<dyn Upload>, Option<File>)> {
    // A `create` cancelled meanwhile drops the result, and `Prepared` its file.
    let (prepared, reader) = on_blocking_thread(prep).await?;
    let temp = (Arc::clone(&prepared.dir), prepared.temp.clone());
    let stage = if prepared.keep.is_some() {
        Stage::Copying(tokio::task::spawn_blocking(move || {
            copy_kept(&prepared)?;
            Ok(prepared)
        }))
    } else {
        open_lane(prepared)
    };
    let upload: Box<dyn Upload> = Box::new(LocalUpload {
        path: vpath,
        temp,
        stage,
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
        file: Some(file),
        dir: Arc::new(dir),
        temp,
        name: name.to_owned(),
        create_new: false,
        keep: None,
        root: Arc::clone(root),
        start_at: offset,
        published: false,
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
        file: Some(File::from(file)),
        dir: Arc::new(dir),
        temp,
        name: name.to_owned(),
        create_new: mode == WriteMode::CreateNew,
        keep,
        root: Arc::clone(root),
        start_at: 0,
        published: false,
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

/// Copies the kept prefix of an `Append`/`Offset` upload into the temporary file.
fn copy_kept(p: &Prepared) -> Result<()> {
    let Some((src, n)) = &p.keep else {
        return Ok(());
    };
    let mut file = p.file();
    // `io::copy` between files uses copy_file_range where the kernel has it.
    let copied =
        io::copy(&mut src.take(*n), &mut file).map_err(|e| StorageError::from_io(&p.path, e))?;
    if copied < *n {
        return Err(StorageError::new(
            ErrorKind::InvalidInput,
            format!("{}: the file shrank below offset {n}", p.path),
        ));
    }
    if let Ok(m) = src.metadata() {
        let _ = p.file().set_permissions(m.permissions());
    }
    Ok(())
}

/// An upload's lane on its file system's [`writers`]: writes each chunk in order; after the last (or
/// the first failure) hands the prepared file back for the commit.
struct WriteLane {
    prepared: Option<Prepared>,
    writeback: Writeback,
    failed: Option<StorageError>,
    back: Option<oneshot::Sender<Result<Prepared>>>,
}

impl Worker for WriteLane {
    type Item = Bytes;

    fn handle(&mut self, chunk: Bytes) -> bool {
        let Some(p) = &self.prepared else {
            return false;
        };
        match p.file().write_all(&chunk) {
            Ok(()) => {
                self.writeback.written(p.file(), chunk.len() as u64);
                true
            }
            Err(e) => {
                self.failed = Some(StorageError::from_io(&p.path, e));
                false
            }
        }
    }

    fn finish(mut self) {
        let result = match (self.failed.take(), self.prepared.take()) {
            (None, Some(p)) => Ok(p),
            (Some(e), _) => Err(e),
            (None, None) => Err(StorageError::new(ErrorKind::Other, "upload lost")),
        };
        if let Some(back) = self.back.take() {
            // Nobody waiting (the upload was dropped): the file goes with `result`.
            let _ = back.send(result);
        }
    }
}

/// Opens the upload's lane on the [`writers`] of its file system.
fn open_lane(p: Prepared) -> Stage {
    let dev = rfs::fstat(p.file()).map_or(0, |st| st.st_dev);
    let (back, written) = oneshot::channel();
    let start = p.keep.as_ref().map_or(p.start_at, |(_, n)| *n);
    let lane = WriteLane {
        prepared: Some(p),
        writeback: Writeback::new(start),
        failed: None,
        back: Some(back),
    };
    let pool = writers(dev);
    let tx = pool.lane(lane, pool.queue_depth(UPLOAD_QUEUE));
    Stage::Writing { tx, written }
}

/// After the last chunk: `sync_all`, then publishes the file (a rename; for
/// `CreateNew` a hard link) and fsyncs the directory, or with `suspend_as` moves it
/// to the pending directory under that name.
fn commit(mut p: Prepared, suspend_as: Option<String>) -> Result<Metadata> {
    p.file()
        .sync_all()
        .map_err(|e| StorageError::from_io(&p.path, e))?;
    let meta = rfs::fstat(p.file()).map_err(|e| error(&p.path, e))?;
    // Closed before it is published, and its error counts: FUSE and NFS clients may
    // report an upload's write error only at close (rclone's mount: its upload's
    // result, at the flush; its fsync does nothing), so a 226 never covers bytes that
    // did not land.
    if let Some(file) = p.file.take() {
        close_checked(file).map_err(|e| StorageError::from_io(&p.path, e))?;
    }
    if let Some(pname) = suspend_as {
        let m = suspend(&p, &pname, &meta)?;
        p.published = true;
        return Ok(m);
    }
    let dir = p.dir.as_fd();
    if p.create_new {
        link_new(dir, &p.temp, &p.name).map_err(|e| error(&p.path, e))?;
        if let Err(e) = rfs::unlinkat(dir, &p.temp, AtFlags::empty()) {
            tracing::warn!(path = %p.path, temp = %p.temp, error = %e, "cannot remove temporary file after commit");
        }
    } else {
        rfs::renameat(dir, &p.temp, dir, &p.name).map_err(|e| error(&p.path, e))?;
    }
    p.published = true;
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

/// Closes `file`, returning what `close(2)` returned (`File`'s drop ignores it).
fn close_checked(file: File) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just taken out of an owned `File`, so nothing else closes or
    // uses it; it is closed exactly once, here (also when the call fails: Linux frees
    // the descriptor even then).
    unsafe { rustix::io::try_close(fd) }.map_err(io::Error::from)
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

/// Where an upload stands.
enum Stage {
    /// Copying the kept prefix on the blocking pool.
    Copying(JoinHandle<Result<Prepared>>),
    /// Chunks go to the upload's lane; `written` gets the file back after the last.
    Writing {
        tx: LaneSender<Bytes>,
        written: oneshot::Receiver<Result<Prepared>>,
    },
    /// Failed, completed or aborted.
    Over,
}

/// An upload in progress on a [`LocalBackend`](crate::LocalBackend).
struct LocalUpload {
    path: VPath,
    /// The target directory and the temporary file's name in it.
    temp: (Arc<OwnedFd>, String),
    stage: Stage,
    /// Set once the temporary file needs no removal on drop.
    done: bool,
}

impl LocalUpload {
    fn failed(&self) -> StorageError {
        StorageError::new(
            ErrorKind::Other,
            format!("{}: the upload failed earlier", self.path),
        )
    }

    /// Waits for the kept prefix to be copied, then opens the lane.
    async fn copied(&mut self) -> Result<()> {
        if let Stage::Copying(_) = &self.stage {
            let Stage::Copying(copy) = std::mem::replace(&mut self.stage, Stage::Over) else {
                return Err(self.failed());
            };
            let prepared = copy.await.unwrap_or_else(|e| Err(join_error(e)))?;
            self.stage = open_lane(prepared);
        }
        Ok(())
    }

    /// Ends the lane and waits until every queued chunk is written: the file, or
    /// why the writes failed.
    async fn written(&mut self) -> Result<Prepared> {
        self.copied().await?;
        match std::mem::replace(&mut self.stage, Stage::Over) {
            Stage::Writing { tx, written } => {
                drop(tx);
                written.await.unwrap_or_else(|_| {
                    Err(StorageError::new(
                        ErrorKind::Other,
                        "the upload's writer stopped",
                    ))
                })
            }
            _ => Err(self.failed()),
        }
    }

    /// Commits (or suspends) on the blocking pool once every chunk is written.
    async fn finish(&mut self, suspend_as: Option<String>) -> Result<Metadata> {
        let prepared = self.written().await?;
        let result = on_blocking_thread(move || commit(prepared, suspend_as)).await;
        if result.is_ok() {
            self.done = true;
        }
        result
    }
}

#[async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.copied().await?;
        let Stage::Writing { tx, .. } = &mut self.stage else {
            return Err(self.failed());
        };
        if tx.send(data).await.is_ok() {
            return Ok(());
        }
        // The lane stopped: a write failed, and says why.
        match self.written().await {
            Err(e) => Err(e),
            Ok(_) => Err(self.failed()),
        }
    }

    async fn complete(mut self: Box<Self>) -> Result<Metadata> {
        self.finish(None).await
    }

    async fn suspend(mut self: Box<Self>, key: &PendingKey) -> Result<Option<u64>> {
        let meta = self.finish(Some(pending::file_name(key))).await?;
        Ok(Some(meta.size))
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        // Dropping the file removes it, once the queued chunks are through.
        let _ = self.written().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks its pool thread on `release` for its first item; reports each item.
    struct Stuck {
        release: Option<std::sync::mpsc::Receiver<()>>,
        seen: tokio::sync::mpsc::UnboundedSender<u32>,
    }

    impl Worker for Stuck {
        type Item = u32;
        fn handle(&mut self, item: u32) -> bool {
            if let Some(r) = self.release.take() {
                let _ = r.recv();
            }
            self.seen.send(item).is_ok()
        }
        fn finish(self) {}
    }

    /// Every writer thread of one file system frozen (a hung mount): an upload to
    /// another file system is still written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_file_system_holds_only_its_own_writers() {
        let (frozen, other) = (u64::MAX - 7, u64::MAX - 8);
        assert!(std::ptr::eq(writers(frozen), writers(frozen)));
        assert!(!std::ptr::eq(writers(frozen), writers(other)));
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let mut releases = Vec::new();
        let mut stuck = Vec::new();
        for i in 0..writers(frozen).threads() + 1 {
            let (release, wait) = std::sync::mpsc::channel();
            releases.push(release);
            let worker = Stuck {
                release: Some(wait),
                seen: seen_tx.clone(),
            };
            let mut tx = writers(frozen).lane(worker, 1);
            assert!(tx.send(i as u32).await.is_ok());
            stuck.push(tx);
        }
        let worker = Stuck {
            release: None,
            seen: seen_tx.clone(),
        };
        let mut tx = writers(other).lane(worker, 1);
        assert!(tx.send(1000).await.is_ok());
        let first = tokio::time::timeout(std::time::Duration::from_secs(30), seen.recv()).await;
        assert_eq!(
            first.ok().flatten(),
            Some(1000),
            "the other file system's write waited"
        );
        for r in releases {
            let _ = r.send(());
        }
        drop(stuck);
    }
}
