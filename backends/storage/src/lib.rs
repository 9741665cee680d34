//! The storage contract of ftpgate.
//!
//! Every FTP file-system operation reaches storage through [`StorageBackend`], used as
//! `Arc<dyn StorageBackend>`. Backends live in their own crates (local disk, memory,
//! S3); cross-cutting concerns are wrappers that implement the same trait.
//!
//! # Contract
//! - **Paths** are [`VPath`]s: absolute, normalised, validated. A backend never sees
//!   `..`, NUL, CR/LF or backslashes. `/` is the backend's root and always exists.
//! - **Uploads commit on success.** [`StorageBackend::create`] returns an [`Upload`].
//!   Nothing is visible under the final name until [`Upload::complete`] returned `Ok`,
//!   and by then the data is durable (fsynced, or acknowledged by the object store).
//!   [`Upload::abort`] — or dropping the upload — leaves no trace under the final name.
//!   A completed upload replaces an existing file atomically (readers see the old or
//!   the new content, never a mix), except with [`WriteMode::CreateNew`], which fails
//!   with [`ErrorKind::AlreadyExists`] instead.
//! - **Listings** are streams in no particular order; they never include `.`/`..` nor
//!   a backend's own temporary files.
//! - **Reads** stream from a byte offset; an offset equal to the size yields an empty
//!   stream, an offset beyond it fails with [`ErrorKind::InvalidInput`]. A read that
//!   ends before the size reported at open (the file shrank meanwhile) ends with an
//!   error, never quietly short. [`StorageBackend::open_source`] may instead hand out
//!   the open local file ([`ReadSource::File`]) for zero-copy sends.
//! - **Rename** replaces an existing *file* target atomically where
//!   [`Capabilities::atomic_rename`] says so; a directory source needs
//!   [`Capabilities::rename_directories`].
//! - **Directories**: `mkdir` creates one level (the parent must exist); `rmdir` only
//!   removes an empty directory; `delete` only removes files.

#![warn(missing_docs)]

mod error;
mod path;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{BoxError, ErrorKind, Result, StorageError};
pub use path::{validate_segment, PathError, VPath, MAX_PATH_LEN, MAX_SEGMENT_LEN};

use std::fmt::Debug;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// A stream of file content chunks.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;
/// A stream of directory entries.
pub type EntryStream = BoxStream<'static, Result<DirEntry>>;

/// Whether an entry is a file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (or object).
    File,
    /// A directory (or prefix).
    Dir,
}

/// What a backend knows about one entry (RFC 3659 facts come from this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes; 0 for directories.
    pub size: u64,
    /// Last modification time. Backends must not report the Unix epoch for
    /// synthetic directories: FileZilla hides such entries.
    pub modified: Option<SystemTime>,
    /// A stable identity (RFC 3659 §7.5.2 `unique` fact), where one exists.
    pub unique: Option<String>,
}

impl Metadata {
    /// True for directories.
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }
    /// True for files.
    pub fn is_file(&self) -> bool {
        self.kind == EntryKind::File
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name inside the listed directory (a single segment).
    pub name: String,
    /// Its metadata.
    pub meta: Metadata,
}

/// How [`StorageBackend::create`] treats an existing file at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Replace any existing file (STOR).
    Truncate,
    /// Fail with `AlreadyExists` at commit if the target exists (STOU).
    CreateNew,
    /// Keep the existing bytes and add the new ones after them (APPE).
    /// Needs [`Capabilities::append`].
    Append,
    /// Keep the first `n` existing bytes and continue from there (REST n + STOR).
    /// Needs [`Capabilities::write_at_offset`]; `n` beyond the current size is
    /// `InvalidInput`.
    Offset(u64),
}

/// What a backend can do, so the FTP layer answers 502/504/550 honestly and FEAT
/// advertises only what works (rclone sends MFMT after each upload when FEAT lists it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// [`WriteMode::Append`] works.
    pub append: bool,
    /// [`WriteMode::Offset`] works.
    pub write_at_offset: bool,
    /// Renaming a directory works.
    pub rename_directories: bool,
    /// Rename over an existing file is a single atomic step.
    pub atomic_rename: bool,
    /// [`StorageBackend::set_modified`] works.
    pub set_modified: bool,
}

impl Capabilities {
    /// Everything supported (local disk, memory).
    pub const fn all() -> Self {
        Self {
            append: true,
            write_at_offset: true,
            rename_directories: true,
            atomic_rename: true,
            set_modified: true,
        }
    }
}

/// An upload in progress. Exactly one of [`complete`](Upload::complete) or
/// [`abort`](Upload::abort) should be called; dropping it is a best-effort abort.
#[async_trait]
pub trait Upload: Send {
    /// Adds the next chunk of content.
    async fn write(&mut self, data: Bytes) -> Result<()>;
    /// Makes the content durable and visible under the final name, then returns
    /// the new metadata. On error nothing partial is visible.
    async fn complete(self: Box<Self>) -> Result<Metadata>;
    /// Discards everything written; nothing becomes visible.
    async fn abort(self: Box<Self>) -> Result<()>;

    /// The SHA-256 of everything written, computed by the FTP layer while the data
    /// streamed in; called before [`complete`](Upload::complete). Backends that can keep
    /// it with the file (S3: object metadata) do, so `HASH` (draft-bryan-ftpext-hash)
    /// answers without reading the file again. The default ignores it.
    fn set_sha256(&mut self, _digest: [u8; 32]) {}

    /// Keeps what was written so far as the pending upload `key` instead of discarding
    /// it (an interrupted STOR that the same user may continue with `REST n` + `STOR`
    /// or `APPE`, RFC 3659 §5), replacing an earlier pending upload of that key.
    /// Nothing becomes visible under the final name. Returns the durable byte count
    /// kept, or `None` when the backend cannot keep uploads: the default aborts.
    async fn suspend(self: Box<Self>, _key: &PendingKey) -> Result<Option<u64>> {
        self.abort().await.map(|()| None)
    }

    /// Asks the upload to compute the SHA-256 of its whole content itself, the bytes
    /// it kept from a pending upload it resumed included, so the FTP layer does not
    /// hash the stream; called before the first write. Returns `true` when it does
    /// ([`sha256`](Upload::sha256) then answers), `false` (the default) when the
    /// caller must hash. A backend that cannot read kept bytes back (S3: parts of an
    /// incomplete multipart upload) hashes itself and keeps the hash state with a
    /// pending upload (issue 12 §2), so a resumed upload's digest needs no read.
    fn hash_sha256(&mut self) -> bool {
        false
    }

    /// The SHA-256 of the whole content, after the last write and before
    /// [`complete`](Upload::complete), when [`hash_sha256`](Upload::hash_sha256)
    /// returned `true`; `None` otherwise.
    fn sha256(&mut self) -> Option<[u8; 32]> {
        None
    }
}

/// Who left an interrupted upload where: a pending upload belongs to one user and
/// one path, and only that user's `SIZE`/`REST`/`APPE` of that path see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingKey {
    /// The FTP user name.
    pub owner: String,
    /// The upload's target path.
    pub path: VPath,
}

/// A pending (interrupted, resumable) upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingUpload {
    /// Durable bytes kept: where a resume must continue (`REST n`).
    pub size: u64,
    /// When it was last written (suspended).
    pub modified: SystemTime,
}

/// How many pending uploads hold how many bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PendingUsage {
    /// Pending uploads.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A pending upload taken up again by [`StorageBackend::resume_upload`].
pub struct Resumed {
    /// The upload, continuing after the kept bytes; it completes or is suspended
    /// again like any other.
    pub upload: Box<dyn Upload>,
    /// The kept bytes, to be read once (for the upload's SHA-256), where the backend
    /// can read them back; `None` otherwise.
    pub prefix: Option<ByteStream>,
}

/// Where a download's bytes come from ([`StorageBackend::open_source`]).
pub enum ReadSource {
    /// Chunks streamed by the backend (every backend; S3 and memory always).
    Stream(ByteStream),
    /// A regular file on local disk, for the FTP layer to send with `sendfile(2)`
    /// straight to a plain data connection (no copy through user space), as vsftpd
    /// does. Only a backend that checked the descriptor's type returns this: never a
    /// FIFO, socket or device.
    File(FileRange),
}

/// An open regular file and the range of it a download sends.
#[derive(Debug)]
pub struct FileRange {
    /// The file, opened for reading (its position is irrelevant: readers use `offset`).
    pub file: std::fs::File,
    /// Where the download starts (`REST`).
    pub offset: u64,
    /// The bytes promised from `offset` (the size at open minus `offset`). A reader
    /// sends until end of file and fails the transfer when the file ended before
    /// `len` bytes (it was truncated meanwhile), like the streamed read does.
    pub len: u64,
}

/// The storage trait: one implementation per backend, object-safe, used as
/// `Arc<dyn StorageBackend>`. See the crate-level `# Contract`.
#[async_trait]
pub trait StorageBackend: Send + Sync + Debug + 'static {
    /// A short name for logs and metrics (`local`, `memory`, `s3`).
    fn kind(&self) -> &'static str;

    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Whether the backend is reachable now (readiness probes, start-up check).
    /// Default: `stat` of the root.
    async fn check(&self) -> Result<()> {
        self.stat(&VPath::root()).await.map(|_| ())
    }

    /// Metadata of one entry; `NotFound` if it does not exist.
    async fn stat(&self, path: &VPath) -> Result<Metadata>;

    /// Streams the entries of a directory. `NotFound` if missing, `NotADirectory`
    /// for a file.
    async fn list(&self, dir: &VPath) -> Result<EntryStream>;

    /// Streams a file's content from `offset`.
    async fn read(&self, path: &VPath, offset: u64) -> Result<ByteStream>;

    /// Starts an upload to `path`. The parent directory must exist. Errors that can
    /// be known up front (missing parent, target is a directory, unsupported mode)
    /// are returned here, before any data is sent.
    async fn create(&self, path: &VPath, mode: WriteMode) -> Result<Box<dyn Upload>>;

    /// Deletes a file; `IsADirectory` for directories.
    async fn delete(&self, path: &VPath) -> Result<()>;

    /// Creates one directory; its parent must exist.
    async fn mkdir(&self, path: &VPath) -> Result<()>;

    /// Removes an empty directory.
    async fn rmdir(&self, path: &VPath) -> Result<()>;

    /// Renames a file (or a directory, where supported). An existing file at `to`
    /// is replaced.
    async fn rename(&self, from: &VPath, to: &VPath) -> Result<()>;

    /// Sets a file's modification time (MFMT); `Unsupported` where impossible.
    async fn set_modified(&self, path: &VPath, time: SystemTime) -> Result<()>;

    /// Metadata and content of a file from `offset` in one step, so a backend can
    /// answer RETR with one request (S3: one GET instead of HEAD + GET). Errors as
    /// [`stat`](Self::stat) and [`read`](Self::read); `IsADirectory` for directories.
    /// The default calls both.
    async fn open(&self, path: &VPath, offset: u64) -> Result<(Metadata, ByteStream)> {
        let meta = self.stat(path).await?;
        if meta.is_dir() {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                format!("read {path}: is a directory"),
            ));
        }
        let stream = self.read(path, offset).await?;
        Ok((meta, stream))
    }

    /// [`open`](Self::open) for a download that may bypass user space: a backend on
    /// local disk returns the open file ([`ReadSource::File`]) so that a binary RETR
    /// over a plain data connection is sent with `sendfile(2)`. Callers that must see
    /// the bytes (TLS, TYPE A conversion) call [`open`](Self::open) instead. The
    /// default wraps [`open`](Self::open)'s stream: S3 and memory need nothing more.
    async fn open_source(&self, path: &VPath, offset: u64) -> Result<(Metadata, ReadSource)> {
        let (meta, stream) = self.open(path, offset).await?;
        Ok((meta, ReadSource::Stream(stream)))
    }

    /// The SHA-256 stored with a file at upload ([`Upload::set_sha256`]) and the file's
    /// size, if this backend keeps digests and has one for this file (it is written with
    /// the content, so it is current); `Ok(None)` otherwise (the caller then reads the
    /// file). The default keeps none.
    async fn stored_sha256(&self, _path: &VPath) -> Result<Option<([u8; 32], u64)>> {
        Ok(None)
    }

    /// The pending upload `key` left by [`Upload::suspend`], if any. Default: none
    /// (the backend keeps no pending uploads).
    async fn pending_upload(&self, _key: &PendingKey) -> Result<Option<PendingUpload>> {
        Ok(None)
    }

    /// Takes up the pending upload `key`, continuing after the first `offset` of its
    /// kept bytes (the rest is dropped); `NotFound` when there is none (or another
    /// session took it), `InvalidInput` when it holds fewer than `offset` bytes.
    /// Default: `Unsupported`.
    async fn resume_upload(&self, key: &PendingKey, _offset: u64) -> Result<Resumed> {
        Err(StorageError::unsupported(format!(
            "resume {}: this storage keeps no pending uploads",
            key.path
        )))
    }

    /// Whether `key` may have a pending upload, answered from what the backend
    /// already knows, without a request: `false` only when it knows there is none.
    /// A plain STOR (which would only discard it) skips the lookup then, so backends
    /// where the lookup is a network request (S3) keep their request count per
    /// upload. Default: `true`.
    fn may_have_pending(&self, _key: &PendingKey) -> bool {
        true
    }

    /// Removes the pending upload `key`; `Ok(false)` when there was none.
    async fn discard_pending(&self, _key: &PendingKey) -> Result<bool> {
        Ok(false)
    }

    /// The pending uploads of `owner` (all owners for `None`).
    async fn pending_usage(&self, _owner: Option<&str>) -> Result<PendingUsage> {
        Ok(PendingUsage::default())
    }

    /// Removes every pending upload last written before `before`; returns what was
    /// removed.
    async fn expire_pending(&self, _before: SystemTime) -> Result<PendingUsage> {
        Ok(PendingUsage::default())
    }

    /// Sets Unix permission bits (`SITE CHMOD`); `Unsupported` where storage has no
    /// such notion (S3, memory), which the FTP layer answers as a documented no-op.
    async fn set_permissions(&self, path: &VPath, _mode: u32) -> Result<()> {
        Err(StorageError::unsupported(format!(
            "set permissions of {path}: not kept by this storage"
        )))
    }
}
