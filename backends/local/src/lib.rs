//! A [`StorageBackend`] on the local disk, confined to one root directory.
//!
//! # Layout
//! - `lib.rs`: [`LocalBackend`], the metadata operations (stat, mkdir, rmdir, delete,
//!   rename, set_modified), each on a blocking thread.
//! - `confine`: virtual path → disk path under the root, refusing symbolic links that
//!   resolve outside it; the start-up sweep of leftover temporary files.
//! - `stream`: reads and listings, streamed from a blocking thread through a bounded
//!   channel (a listing is never collected whole).
//! - `upload`: uploads written by one blocking thread to a temporary file in the target
//!   directory, committed with `sync_all`, rename (hard link for `CreateNew`) and a
//!   directory fsync.
//!
//! # Behaviour
//! - Temporary files are named `.ftpgate-tmp-<random>`; they never appear in listings,
//!   clients cannot use such names, and [`LocalBackend::new`] removes leftovers of a
//!   crash. Two servers must therefore not share a root.
//! - A symbolic link is followed only when it resolves inside the root; otherwise every
//!   operation through it is `PermissionDenied` and listings skip it. Names that are not
//!   UTF-8 and special files (FIFOs, sockets, devices) are skipped too.
//! - Unix only: the `unique` fact is `<dev>g<ino>` in hex.

#![warn(missing_docs)]

mod confine;
mod stream;
mod upload;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use ftpgate_storage::{
    ByteStream, Capabilities, EntryStream, ErrorKind, Metadata, Result, StorageBackend,
    StorageError, Upload, VPath, WriteMode,
};

use confine::confine;
pub use confine::TEMP_PREFIX;

/// Local-disk storage under a root directory.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    /// Canonical (absolute, no symbolic links), so containment is a prefix check.
    root: Arc<PathBuf>,
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
        let removed = confine::remove_temp_files(&root);
        if removed > 0 {
            tracing::info!(root = %root.display(), removed, "removed leftover temporary files");
        }
        Ok(Self {
            root: Arc::new(root),
        })
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs `f(root)` on a blocking thread.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T> + Send + 'static,
    {
        let root = Arc::clone(&self.root);
        tokio::task::spawn_blocking(move || f(&root))
            .await
            .unwrap_or_else(|e| Err(join_error(e)))
    }
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
            let full = confine(root, &path)?;
            let meta = fs::metadata(full).map_err(|e| StorageError::from_io(&path, e))?;
            confine::served_meta(&meta, &path)
        })
        .await
    }

    async fn list(&self, dir: &VPath) -> Result<EntryStream> {
        stream::list(Arc::clone(&self.root), dir.clone()).await
    }

    async fn read(&self, path: &VPath, offset: u64) -> Result<ByteStream> {
        stream::read(Arc::clone(&self.root), path.clone(), offset).await
    }

    async fn create(&self, path: &VPath, mode: WriteMode) -> Result<Box<dyn Upload>> {
        upload::start(Arc::clone(&self.root), path.clone(), mode).await
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
            let full = confine(root, &path)?;
            fs::remove_file(full).map_err(|e| StorageError::from_io(&path, e))
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
            let full = confine(root, &path)?;
            fs::create_dir(full).map_err(|e| StorageError::from_io(&path, e))
        })
        .await
    }

    async fn rmdir(&self, path: &VPath) -> Result<()> {
        if path.is_root() {
            return Err(StorageError::root_refused("remove"));
        }
        let path = path.clone();
        self.blocking(move |root| {
            let full = confine(root, &path)?;
            fs::remove_dir(full).map_err(|e| StorageError::from_io(&path, e))
        })
        .await
    }

    async fn rename(&self, from: &VPath, to: &VPath) -> Result<()> {
        if from.is_root() || to.is_root() {
            return Err(StorageError::root_refused("rename"));
        }
        let (from, to) = (from.clone(), to.clone());
        self.blocking(move |root| {
            let src = confine(root, &from)?;
            let dst = confine(root, &to)?;
            // Report a missing source as such, not as whatever rename(2) says first.
            fs::symlink_metadata(&src).map_err(|e| StorageError::from_io(&from, e))?;
            fs::rename(src, dst).map_err(|e| StorageError::from_io(format!("{from} -> {to}"), e))
        })
        .await
    }

    async fn set_modified(&self, path: &VPath, time: SystemTime) -> Result<()> {
        let path = path.clone();
        self.blocking(move |root| {
            let full = file_or_dir(root, &path)?;
            // Opening read-only works for directories too; setting times needs
            // ownership, not write access.
            let file = File::open(full).map_err(|e| StorageError::from_io(&path, e))?;
            file.set_modified(time)
                .map_err(|e| StorageError::from_io(&path, e))
        })
        .await
    }

    /// `SITE CHMOD`: only the permission bits (`mode & 0o777`); setuid, setgid and
    /// sticky bits are never set from FTP.
    async fn set_permissions(&self, path: &VPath, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = path.clone();
        self.blocking(move |root| {
            let full = file_or_dir(root, &path)?;
            fs::set_permissions(&full, fs::Permissions::from_mode(mode & 0o777))
                .map_err(|e| StorageError::from_io(&path, e))
        })
        .await
    }
}

/// The host path of `path` when it is a regular file or a directory (never a
/// FIFO, socket or device: metadata changes apply to those two only).
fn file_or_dir(root: &Path, path: &VPath) -> Result<PathBuf> {
    let full = confine(root, path)?;
    let meta = fs::metadata(&full).map_err(|e| StorageError::from_io(path, e))?;
    if !meta.is_file() && !meta.is_dir() {
        return Err(confine::special(path));
    }
    Ok(full)
}
