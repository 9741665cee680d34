//! A [`StorageBackend`] on the local disk, confined to one root directory.
//!
//! # Layout
//! - `lib.rs`: [`LocalBackend`], the metadata operations (stat, mkdir, rmdir, delete,
//!   rename, set_modified), each on a blocking thread.
//! - `confine`: virtual path → descriptor beneath the root (`openat2` with
//!   `RESOLVE_BENEATH`, or a per-component `O_NOFOLLOW` walk), refusing symbolic links
//!   that resolve outside it; the start-up sweep of leftover temporary files.
//! - `stream`: reads and listings, streamed from a blocking thread through a bounded
//!   channel (a listing is never collected whole); for downloads that the FTP layer
//!   sends with `sendfile(2)`, the checked open file itself (`open_source`).
//! - `upload`: uploads written to a temporary file in the target directory by a small
//!   pool of threads shared by all uploads (`lanes`: each upload's chunks in order),
//!   committed on a blocking thread with `sync_all`, rename (hard link for `CreateNew`)
//!   and a directory fsync.
//! - `lanes`: that pool (also the FTP layer's upload hashing), many ordered streams of
//!   blocking work on a few threads, round robin, with bounded queues.
//! - `pending`: interrupted uploads kept for resuming in `<root>/.ftpgate-tmp-pending/`
//!   (suspend moves the fsynced temporary file there, a resume moves it back), their
//!   per-owner usage and expiry.
//!
//! # Behaviour
//! - Temporary files are named `.ftpgate-tmp-<random>`; they never appear in listings,
//!   clients cannot use such names, and [`LocalBackend::new`] removes leftovers of a
//!   crash. Two servers must therefore not share a root.
//! - Every operation resolves its path beneath a descriptor of the root and acts on the
//!   last name relative to its parent's descriptor: entries renamed or swapped inside the
//!   root by another process mid-operation cannot make it act outside the root.
//! - A symbolic link is followed only when it resolves inside the root (relative links
//!   that never climb above it, absolute links under the root's canonical path);
//!   otherwise every operation through it is `PermissionDenied` and listings skip it.
//!   Names that are not UTF-8 and special files (FIFOs, sockets, devices) are skipped
//!   too; files are opened non-blocking and their type checked on the descriptor, so a
//!   FIFO swapped in for a file never blocks.
//! - Unix only: the `unique` fact is `<dev>g<ino>` in hex.

#![warn(missing_docs)]

mod confine;
pub mod lanes;
mod pending;
mod stream;
mod upload;

use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use ftpgate_storage::{
    ByteStream, Capabilities, EntryStream, ErrorKind, Metadata, PendingKey, PendingUpload,
    PendingUsage, ReadSource, Result, Resumed, StorageBackend, StorageError, Upload, VPath,
    WriteMode,
};

use confine::Root;
pub use confine::TEMP_PREFIX;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

/// Local-disk storage under a root directory.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    /// The canonical root and a descriptor of it that every path is resolved beneath.
    root: Arc<Root>,
}

impl LocalBackend {
    /// Serves the directory `root`: creates it if missing, canonicalises it and removes
    /// leftover temporary files anywhere below it (without following symbolic links).
    ///
    /// Blocking; call it at start-up.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let shown = root.display().to_string();
        match fs::metadata(&root) {
            Ok(m) if !m.is_dir() => {
                return Err(StorageError::new(
                    ErrorKind::NotADirectory,
                    format!("{shown}: not a directory"),
                ))
            }
            Ok(_) => {}
            Err(_) => fs::create_dir_all(&root).map_err(|e| StorageError::from_io(&shown, e))?,
        }
        let root = fs::canonicalize(&root).map_err(|e| StorageError::from_io(&shown, e))?;
        let root = Root::open(root).map_err(|e| StorageError::from_io(&shown, e))?;
        let removed = confine::remove_temp_files(&root);
        if removed > 0 {
            tracing::info!(root = %root.path().display(), removed, "removed leftover temporary files");
        }
        Ok(Self {
            root: Arc::new(root),
        })
    }

    /// The same backend resolving every path with the per-component walk, as on
    /// kernels without `openat2` (for tests and benchmarks of that fallback).
    #[doc(hidden)]
    pub fn without_openat2(self) -> Result<Self> {
        let root = self
            .root
            .walk_only()
            .map_err(|e| StorageError::from_io(self.root.path().display(), e))?;
        Ok(Self {
            root: Arc::new(root),
        })
    }

    /// Opens `path` for reading exactly as a download does (resolution, non-blocking
    /// open, type check on the descriptor), on the calling thread: for benchmarks of
    /// the per-open cost.
    #[doc(hidden)]
    pub fn open_for_read_blocking(&self, path: &VPath) -> Result<File> {
        stream::open_at(&self.root, path, 0).map(|(file, _)| file)
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Runs `f(root)` on a blocking thread.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Root) -> Result<T> + Send + 'static,
    {
        let root = Arc::clone(&self.root);
        on_blocking_thread(move || f(&root)).await
    }
}

/// Runs `f` on tokio's blocking pool; a panic there becomes a [`join_error`].
pub(crate) async fn on_blocking_thread<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(join_error(e)))
}

/// A blocking thread panicked or was cancelled.
pub(crate) fn join_error(e: tokio::task::JoinError) -> StorageError {
    StorageError::new(ErrorKind::Other, "storage thread failed").with_source(e)
}

#[async_trait]
impl StorageBackend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn stat(&self, path: &VPath) -> Result<Metadata> {
        let path = path.clone();
        self.blocking(move |root| {
            // O_PATH: opening never blocks nor has side effects, whatever the type.
            let fd = root.open_path(&path, OFlags::PATH)?;
            let st = rfs::fstat(&fd).map_err(|e| confine::error(&path, e))?;
            confine::served_meta(&st, &path)
        })
        .await
    }

    async fn list(&self, dir: &VPath) -> Result<EntryStream> {
        stream::list(Arc::clone(&self.root), dir.clone()).await
    }

    async fn read(&self, path: &VPath, offset: u64) -> Result<ByteStream> {
        stream::read(Arc::clone(&self.root), path.clone(), offset).await
    }

    /// One blocking hop: the size reported is that of the descriptor that is read.
    async fn open(&self, path: &VPath, offset: u64) -> Result<(Metadata, ByteStream)> {
        stream::open(Arc::clone(&self.root), path.clone(), offset).await
    }

    /// The open regular file (type checked on the descriptor: never a FIFO or
    /// device), for `sendfile(2)`.
    async fn open_source(&self, path: &VPath, offset: u64) -> Result<(Metadata, ReadSource)> {
        stream::open_file(Arc::clone(&self.root), path.clone(), offset)
            .await
            .map(|(meta, range)| (meta, ReadSource::File(range)))
    }

    async fn create(&self, path: &VPath, mode: WriteMode) -> Result<Box<dyn Upload>> {
        upload::start(Arc::clone(&self.root), path.clone(), mode).await
    }

    async fn pending_upload(&self, key: &PendingKey) -> Result<Option<PendingUpload>> {
        let key = key.clone();
        self.blocking(move |root| pending::find(root, &key)).await
    }

    async fn resume_upload(&self, key: &PendingKey, offset: u64) -> Result<Resumed> {
        let (upload, reader) = upload::resume(Arc::clone(&self.root), key.clone(), offset).await?;
        Ok(Resumed {
            upload,
            prefix: Some(stream::stream_prefix(reader, offset, key.path.clone())),
        })
    }

    async fn discard_pending(&self, key: &PendingKey) -> Result<bool> {
        let key = key.clone();
        self.blocking(move |root| pending::discard(root, &key))
            .await
    }

    async fn pending_usage(&self, owner: Option<&str>) -> Result<PendingUsage> {
        let owner = owner.map(str::to_owned);
        self.blocking(move |root| pending::usage(root, owner.as_deref()))
            .await
    }

    async fn expire_pending(&self, before: SystemTime) -> Result<PendingUsage> {
        self.blocking(move |root| pending::expire(root, before))
            .await
    }

    async fn delete(&self, path: &VPath) -> Result<()> {
        if path.is_root() {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                "/: is a directory",
            ));
        }
        let path = path.clone();
        self.blocking(move |root| {
            let (dir, name) = root.parent(&path)?;
            root.entry(dir.as_fd(), name, &path)?;
            rfs::unlinkat(&dir, name, AtFlags::empty()).map_err(|e| confine::error(&path, e))
        })
        .await
    }

    async fn mkdir(&self, path: &VPath) -> Result<()> {
        if path.is_root() {
            return Err(StorageError::new(
                ErrorKind::AlreadyExists,
                "/: already exists",
            ));
        }
        let path = path.clone();
        self.blocking(move |root| {
            let (dir, name) = root.parent(&path)?;
            root.entry(dir.as_fd(), name, &path)?;
            rfs::mkdirat(&dir, name, Mode::from_raw_mode(0o777))
                .map_err(|e| confine::error(&path, e))
        })
        .await
    }

    async fn rmdir(&self, path: &VPath) -> Result<()> {
        if path.is_root() {
            return Err(StorageError::root_refused("remove"));
        }
        let path = path.clone();
        self.blocking(move |root| {
            let (dir, name) = root.parent(&path)?;
            root.entry(dir.as_fd(), name, &path)?;
            rfs::unlinkat(&dir, name, AtFlags::REMOVEDIR).map_err(|e| confine::error(&path, e))
        })
        .await
    }

    async fn rename(&self, from: &VPath, to: &VPath) -> Result<()> {
        if from.is_root() || to.is_root() {
            return Err(StorageError::root_refused("rename"));
        }
        let (from, to) = (from.clone(), to.clone());
        self.blocking(move |root| {
            let (src_dir, src) = root.parent(&from)?;
            let (dst_dir, dst) = root.parent(&to)?;
            // Report a missing source as such, not as whatever rename(2) says first.
            if root.entry(src_dir.as_fd(), src, &from)?.is_none() {
                return Err(StorageError::not_found(&from));
            }
            root.entry(dst_dir.as_fd(), dst, &to)?;
            rfs::renameat(&src_dir, src, &dst_dir, dst)
                .map_err(|e| confine::error(format_args!("{from} -> {to}"), e))
        })
        .await
    }

    async fn set_modified(&self, path: &VPath, time: SystemTime) -> Result<()> {
        let path = path.clone();
        self.blocking(move |root| {
            // Setting times needs ownership, not write access.
            let (fd, readable) = root.open_for_change(&path)?;
            set_mtime_on(fd, readable, time).map_err(|e| StorageError::from_io(&path, e))
        })
        .await
    }

    /// `SITE CHMOD`: only the permission bits (`mode & 0o777`); setuid, setgid and
    /// sticky bits are never set from FTP.
    async fn set_permissions(&self, path: &VPath, mode: u32) -> Result<()> {
        let path = path.clone();
        self.blocking(move |root| {
            let (fd, readable) = root.open_for_change(&path)?;
            set_mode_on(&fd, readable, mode & 0o777).map_err(|e| StorageError::from_io(&path, e))
        })
        .await
    }
}

/// Sets the modification time of the file `fd` holds (access time untouched):
/// `futimens` on a readable descriptor, else `utimensat` through [`fd_path`].
fn set_mtime_on(fd: OwnedFd, readable: bool, time: SystemTime) -> std::io::Result<()> {
    if readable {
        return File::from(fd).set_modified(time);
    }
    // Seconds and nanoseconds since the epoch, the nanoseconds always positive.
    let (sec, nsec) = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let sec = i64::try_from(d.as_secs()).map_or(i64::MIN, |s| -s);
            match d.subsec_nanos() {
                0 => (sec, 0),
                n => (sec.saturating_sub(1), 1_000_000_000 - n),
            }
        }
    };
    let times = rfs::Timestamps {
        last_access: rfs::Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        last_modification: rfs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec.into(),
        },
    };
    rfs::utimensat(rfs::CWD, fd_path(&fd), &times, AtFlags::empty()).map_err(Into::into)
}

/// Sets the permission bits of the file `fd` holds: `fchmod` on a readable
/// descriptor, else `chmod` through [`fd_path`].
fn set_mode_on(fd: &OwnedFd, readable: bool, mode: u32) -> std::io::Result<()> {
    let mode = Mode::from_raw_mode(mode);
    if readable {
        rfs::fchmod(fd, mode)?;
    } else {
        rfs::chmod(fd_path(fd), mode)?;
    }
    Ok(())
}

/// `/proc/self/fd/<n>`: acts on exactly the inode `fd` holds (the kernel follows this
/// magic link to the open file, never by name), for calls that refuse `O_PATH`
/// descriptors.
fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::time::Duration;

    /// The `O_PATH` route (taken when the file cannot be opened for reading, which
    /// root never sees): mode and time land on the inode the descriptor holds.
    #[test]
    fn metadata_changes_through_an_o_path_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let fd = || rfs::open(&file, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();
        set_mode_on(&fd(), false, 0o640).unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o640
        );
        for t in [
            UNIX_EPOCH + Duration::new(1_500_000_000, 123_456_789),
            UNIX_EPOCH - Duration::new(86_400, 250_000_000),
        ] {
            set_mtime_on(fd(), false, t).unwrap();
            assert_eq!(fs::metadata(&file).unwrap().modified().unwrap(), t);
        }
        let before = fs::metadata(&file).unwrap().atime();
        set_mtime_on(fd(), false, UNIX_EPOCH).unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().atime(),
            before,
            "atime untouched"
        );
    }
}
