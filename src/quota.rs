//! Storage quotas per user (`users.quota_bytes`, `users.quota_files`): an upload
//! that would go beyond them ends with 552 (RFC 959 §4.2 "552 Requested file action
//! aborted. Exceeded storage allocation") and stores nothing.
//!
//! # Where usage comes from
//! Usage is counted per *area*: a backend and a home directory. An area's usage is
//! computed the first time an upload needs it (a walk of the home with the
//! backend's `list`, at most [`MAX_WALK_ENTRIES`] entries), so it survives restarts
//! because it is read from what is stored. From then on every change made through
//! this process is applied to it by [`AccountedBackend`], a wrapper around each
//! backend that sees every commit, delete and rename, whichever command made it
//! (one place records a change). Changes made by other processes (another replica,
//! a shell on the disk) are only seen after a restart.
//!
//! Two users with the same home share one area: each user's own limits apply to
//! the area's total. A change inside a nested home counts in every area that
//! contains it.
//!
//! # Concurrency
//! Uploads reserve before they store: [`Reservation::start`] at STOR and
//! [`Reservation::update`] as bytes arrive take room from the area under one lock,
//! so parallel uploads of one user (any number of sessions) can never both pass.
//! A committed upload's real size is applied by the wrapper before its reservation
//! is released (briefly counted twice, never not at all).

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use ftpgate_storage::{
    ByteStream, Capabilities, EntryKind, EntryStream, ErrorKind, Metadata, PendingKey,
    PendingUpload, PendingUsage, ReadSource, Result, Resumed, StorageBackend, StorageError, Upload,
    VPath, WriteMode,
};
use futures::StreamExt;

/// Most entries (files and directories) a usage walk reads before giving up.
pub const MAX_WALK_ENTRIES: u64 = 1_000_000;

/// What an area holds and what running uploads have reserved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of stored files.
    pub bytes: u64,
    /// Number of stored files (directories do not count).
    pub files: u64,
    /// Bytes reserved by running uploads.
    pub reserved_bytes: u64,
    /// Files reserved by running uploads (new names).
    pub reserved_files: u64,
}

#[derive(Debug, Default)]
struct AreaState {
    /// Usage is known (walked) and kept up to date.
    loaded: bool,
    usage: Usage,
}

/// One backend's home directory whose usage is counted.
#[derive(Debug)]
pub struct Area {
    backend: String,
    home: VPath,
    state: Mutex<AreaState>,
    /// Held while walking, so concurrent first uploads walk once.
    walking: tokio::sync::Mutex<()>,
}

/// The quota of one user: which limit an upload ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// `users.quota_bytes`.
    Bytes,
    /// `users.quota_files`.
    Files,
}

impl Exceeded {
    /// The config key that was exceeded.
    pub fn key(self) -> &'static str {
        match self {
            Exceeded::Bytes => "quota_bytes",
            Exceeded::Files => "quota_files",
        }
    }
}

/// A user's limits (`None`: that one is unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    /// `users.quota_bytes`.
    pub bytes: Option<u64>,
    /// `users.quota_files`.
    pub files: Option<u64>,
}

impl Area {
    fn lock(&self) -> std::sync::MutexGuard<'_, AreaState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Usage now (zero until loaded).
    pub fn usage(&self) -> Usage {
        self.lock().usage
    }

    /// Walks the home once (the first caller; the others wait for it) so usage is
    /// known; later calls return at once.
    pub async fn load(&self, storage: &dyn StorageBackend) -> Result<Usage> {
        if self.lock().loaded {
            return Ok(self.usage());
        }
        let _walking = self.walking.lock().await;
        if self.lock().loaded {
            return Ok(self.usage());
        }
        let started = std::time::Instant::now();
        let (bytes, files) = walk(storage, &self.home).await?;
        let mut s = self.lock();
        s.loaded = true;
        s.usage.bytes = bytes;
        s.usage.files = files;
        tracing::info!(
            home = %self.home,
            backend = %self.backend,
            bytes,
            files,
            ms = started.elapsed().as_millis() as u64,
            "quota usage computed"
        );
        Ok(s.usage)
    }

    fn covers(&self, backend: &str, path: &VPath) -> bool {
        self.backend == backend && path.starts_with(&self.home)
    }
}

/// Sums the sizes and counts the files under `home` (listing each directory).
pub async fn walk(storage: &dyn StorageBackend, home: &VPath) -> Result<(u64, u64)> {
    let (mut bytes, mut files, mut seen) = (0u64, 0u64, 0u64);
    let mut dirs = vec![home.clone()];
    while let Some(dir) = dirs.pop() {
        let mut entries = match storage.list(&dir).await {
            Ok(s) => s,
            // Removed meanwhile (or a home not created yet): nothing there.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        while let Some(e) = entries.next().await {
            let e = match e {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            seen += 1;
            if seen > MAX_WALK_ENTRIES {
                return Err(StorageError::new(
                    ErrorKind::Other,
                    format!("quota usage of {home}: more than {MAX_WALK_ENTRIES} entries"),
                ));
            }
            match e.meta.kind {
                EntryKind::File => {
                    bytes = bytes.saturating_add(e.meta.size);
                    files += 1;
                }
                EntryKind::Dir => {
                    if let Ok(child) = dir.child(&e.name) {
                        dirs.push(child);
                    }
                }
            }
        }
    }
    Ok((bytes, files))
}

/// Every counted area of the process.
#[derive(Debug, Default)]
pub struct Quotas {
    areas: Mutex<Vec<Arc<Area>>>,
}

impl Quotas {
    /// The area of `home` on `backend` (the backend's metrics label), created
    /// (not yet loaded) on first use.
    pub fn area(&self, backend: &str, home: &VPath) -> Arc<Area> {
        let mut areas = self.areas.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = areas
            .iter()
            .find(|a| a.backend == backend && a.home == *home)
        {
            return a.clone();
        }
        let a = Arc::new(Area {
            backend: backend.to_owned(),
            home: home.clone(),
            state: Mutex::default(),
            walking: tokio::sync::Mutex::new(()),
        });
        areas.push(a.clone());
        a
    }

    /// Loaded areas on `backend` for which `pick` is true.
    fn loaded(&self, pick: impl Fn(&Area) -> bool) -> Vec<Arc<Area>> {
        let areas = self.areas.lock().unwrap_or_else(|p| p.into_inner());
        areas
            .iter()
            .filter(|a| pick(a) && a.lock().loaded)
            .cloned()
            .collect()
    }

    fn covered(&self, backend: &str, path: &VPath) -> bool {
        !self.loaded(|a| a.covers(backend, path)).is_empty()
    }

    /// Applies a change of `bytes` and `files` to every loaded area `pick` selects.
    fn apply(&self, pick: impl Fn(&Area) -> bool, bytes: i128, files: i64) {
        for a in self.loaded(pick) {
            let mut s = a.lock();
            s.usage.bytes = add(s.usage.bytes, bytes);
            s.usage.files = add(s.usage.files, i128::from(files));
        }
    }

    /// Forgets the usage of the areas `pick` selects: the next upload walks again.
    fn invalidate(&self, pick: impl Fn(&Area) -> bool) {
        for a in self.loaded(pick) {
            a.lock().loaded = false;
        }
    }
}

fn add(v: u64, d: i128) -> u64 {
    (i128::from(v) + d).clamp(0, i128::from(u64::MAX)) as u64
}

/// Room taken in an area by one running upload; released when dropped (the
/// upload committed, failed or was aborted).
#[derive(Debug)]
pub struct Reservation {
    area: Arc<Area>,
    limits: QuotaLimits,
    /// Bytes the target keeps before the new ones (APPE, REST, a resumed upload).
    base: u64,
    /// Size of the file the upload replaces (0 for a new name).
    old: u64,
    bytes: u64,
    files: u64,
}

impl Reservation {
    /// Reserves for an upload to a target that holds `old` (`None`: a new file)
    /// and keeps its first `base` bytes: refused when the area has no room even
    /// before the first byte (a new file beyond `quota_files`, or no byte left).
    pub fn start(
        area: Arc<Area>,
        limits: QuotaLimits,
        base: u64,
        old: Option<u64>,
    ) -> std::result::Result<Self, Exceeded> {
        let files = u64::from(old.is_none());
        let mut r = Self {
            area,
            limits,
            base,
            old: old.unwrap_or(0),
            bytes: 0,
            files: 0,
        };
        {
            let mut s = r.area.lock();
            let u = &mut s.usage;
            if let Some(max) = limits.files {
                if files > 0 && u.files + u.reserved_files + files > max {
                    return Err(Exceeded::Files);
                }
            }
            if let Some(max) = limits.bytes {
                if old.is_none() && u.bytes + u.reserved_bytes >= max {
                    return Err(Exceeded::Bytes);
                }
            }
            u.reserved_files += files;
            r.files = files;
        }
        r.update(0)?;
        Ok(r)
    }

    /// `received` bytes have arrived: takes the room they need beyond the old
    /// file; refused (nothing more taken) when that passes `quota_bytes`.
    pub fn update(&mut self, received: u64) -> std::result::Result<(), Exceeded> {
        let need = self.base.saturating_add(received).saturating_sub(self.old);
        if need <= self.bytes {
            return Ok(());
        }
        let extra = need - self.bytes;
        let mut s = self.area.lock();
        let u = &mut s.usage;
        if let Some(max) = self.limits.bytes {
            if u.bytes
                .saturating_add(u.reserved_bytes)
                .saturating_add(extra)
                > max
            {
                return Err(Exceeded::Bytes);
            }
        }
        u.reserved_bytes += extra;
        self.bytes = need;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut s = self.area.lock();
        s.usage.reserved_bytes = s.usage.reserved_bytes.saturating_sub(self.bytes);
        s.usage.reserved_files = s.usage.reserved_files.saturating_sub(self.files);
    }
}

/// A backend wrapper that applies every change to the counted areas it touches
/// (commits, deletes, renames). Costs nothing beyond a lock while no area of this
/// backend is loaded; otherwise a `stat` before a delete, a rename or an upload
/// inside a counted area (the sizes that leave or get replaced).
#[derive(Debug)]
pub struct AccountedBackend {
    inner: Arc<dyn StorageBackend>,
    label: String,
    quotas: Arc<Quotas>,
}

impl AccountedBackend {
    /// Wraps `inner`, whose metrics label (`storage`, `[backends.NAME]`) is `label`.
    pub fn new(inner: Arc<dyn StorageBackend>, label: &str, quotas: Arc<Quotas>) -> Self {
        Self {
            inner,
            label: label.to_owned(),
            quotas,
        }
    }

    /// Size of the file at `path`, `None` when there is none (or it is a directory).
    async fn file_size(&self, path: &VPath) -> Option<u64> {
        match self.inner.stat(path).await {
            Ok(m) if m.is_file() => Some(m.size),
            _ => None,
        }
    }

    async fn wrap(&self, path: &VPath, inner: Box<dyn Upload>) -> Box<dyn Upload> {
        if !self.quotas.covered(&self.label, path) {
            return inner;
        }
        let old = self.file_size(path).await;
        Box::new(AccountedUpload {
            inner,
            path: path.clone(),
            old,
            label: self.label.clone(),
            quotas: self.quotas.clone(),
        })
    }
}

struct AccountedUpload {
    inner: Box<dyn Upload>,
    path: VPath,
    old: Option<u64>,
    label: String,
    quotas: Arc<Quotas>,
}

#[async_trait]
impl Upload for AccountedUpload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.inner.write(data).await
    }

    async fn complete(self: Box<Self>) -> Result<Metadata> {
        let meta = self.inner.complete().await?;
        let bytes = i128::from(meta.size) - i128::from(self.old.unwrap_or(0));
        let files = i64::from(self.old.is_none());
        let (label, path) = (&self.label, &self.path);
        self.quotas.apply(|a| a.covers(label, path), bytes, files);
        Ok(meta)
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.inner.abort().await
    }

    fn set_sha256(&mut self, digest: [u8; 32]) {
        self.inner.set_sha256(digest);
    }

    async fn suspend(self: Box<Self>, key: &PendingKey) -> Result<Option<u64>> {
        self.inner.suspend(key).await
    }

    fn hash_sha256(&mut self) -> bool {
        self.inner.hash_sha256()
    }

    fn sha256(&mut self) -> Option<[u8; 32]> {
        self.inner.sha256()
    }
}

#[async_trait]
impl StorageBackend for AccountedBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn check(&self) -> Result<()> {
        self.inner.check().await
    }

    async fn stat(&self, path: &VPath) -> Result<Metadata> {
        self.inner.stat(path).await
    }

    async fn list(&self, dir: &VPath) -> Result<EntryStream> {
        self.inner.list(dir).await
    }

    async fn read(&self, path: &VPath, offset: u64) -> Result<ByteStream> {
        self.inner.read(path, offset).await
    }

    async fn create(&self, path: &VPath, mode: WriteMode) -> Result<Box<dyn Upload>> {
        let up = self.inner.create(path, mode).await?;
        Ok(self.wrap(path, up).await)
    }

    async fn delete(&self, path: &VPath) -> Result<()> {
        if !self.quotas.covered(&self.label, path) {
            return self.inner.delete(path).await;
        }
        let size = self.file_size(path).await;
        self.inner.delete(path).await?;
        if let Some(size) = size {
            let label = &self.label;
            self.quotas
                .apply(|a| a.covers(label, path), -i128::from(size), -1);
        }
        Ok(())
    }

    async fn mkdir(&self, path: &VPath) -> Result<()> {
        self.inner.mkdir(path).await
    }

    async fn rmdir(&self, path: &VPath) -> Result<()> {
        self.inner.rmdir(path).await
    }

    async fn rename(&self, from: &VPath, to: &VPath) -> Result<()> {
        let label = &self.label;
        // Onto itself nothing moves (and the "replaced" file is the source).
        if from == to || !self.quotas.covered(label, from) && !self.quotas.covered(label, to) {
            return self.inner.rename(from, to).await;
        }
        let src = self.inner.stat(from).await?;
        let replaced = self.file_size(to).await;
        self.inner.rename(from, to).await?;
        // Areas holding only one end of the move.
        let only_from = |a: &Area| a.covers(label, from) && !a.covers(label, to);
        let only_to = |a: &Area| a.covers(label, to) && !a.covers(label, from);
        if src.is_dir() {
            // A whole subtree moved in or out: walk those areas again.
            self.quotas.invalidate(|a| only_from(a) || only_to(a));
            return Ok(());
        }
        if let Some(d) = replaced {
            self.quotas
                .apply(|a| a.covers(label, to), -i128::from(d), -1);
        }
        let s = i128::from(src.size);
        self.quotas.apply(only_from, -s, -1);
        self.quotas.apply(only_to, s, 1);
        Ok(())
    }

    async fn set_modified(&self, path: &VPath, time: SystemTime) -> Result<()> {
        self.inner.set_modified(path, time).await
    }

    async fn open(&self, path: &VPath, offset: u64) -> Result<(Metadata, ByteStream)> {
        self.inner.open(path, offset).await
    }

    async fn open_source(&self, path: &VPath, offset: u64) -> Result<(Metadata, ReadSource)> {
        self.inner.open_source(path, offset).await
    }

    async fn stored_sha256(&self, path: &VPath) -> Result<Option<([u8; 32], u64)>> {
        self.inner.stored_sha256(path).await
    }

    async fn set_permissions(&self, path: &VPath, mode: u32) -> Result<()> {
        self.inner.set_permissions(path, mode).await
    }

    async fn pending_upload(&self, key: &PendingKey) -> Result<Option<PendingUpload>> {
        self.inner.pending_upload(key).await
    }

    async fn resume_upload(&self, key: &PendingKey, offset: u64) -> Result<Resumed> {
        let r = self.inner.resume_upload(key, offset).await?;
        Ok(Resumed {
            upload: self.wrap(&key.path, r.upload).await,
            prefix: r.prefix,
        })
    }

    fn may_have_pending(&self, key: &PendingKey) -> bool {
        self.inner.may_have_pending(key)
    }

    async fn discard_pending(&self, key: &PendingKey) -> Result<bool> {
        self.inner.discard_pending(key).await
    }

    async fn pending_usage(&self, owner: Option<&str>) -> Result<PendingUsage> {
        self.inner.pending_usage(owner).await
    }

    async fn expire_pending(&self, before: SystemTime) -> Result<PendingUsage> {
        self.inner.expire_pending(before).await
    }
}

#[cfg(test)]
mod tests {
    /// Every defaulted storage method reaches the wrapped backend (sendfile,
    /// resumable uploads and the backend's own hash state depend on it).
    #[tokio::test]
    async fn the_wrapper_forwards_every_method() {
        ftpgate_storage::testkit::wrapper_forwards_every_method(|inner| {
            std::sync::Arc::new(super::AccountedBackend::new(
                inner,
                "storage",
                std::sync::Arc::new(super::Quotas::default()),
            ))
        })
        .await;
    }

    use super::*;
    use ftpgate_backend_memory::MemoryBackend;

    fn p(s: &str) -> VPath {
        VPath::parse(s).unwrap()
    }

    async fn put(b: &dyn StorageBackend, path: &str, len: usize) {
        let mut u = b.create(&p(path), WriteMode::Truncate).await.unwrap();
        u.write(Bytes::from(vec![7u8; len])).await.unwrap();
        u.complete().await.unwrap();
    }

    #[tokio::test]
    async fn wrapper_follows_every_change() {
        let quotas = Arc::new(Quotas::default());
        let inner: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
        let b = AccountedBackend::new(inner.clone(), "storage", quotas.clone());
        for d in ["/a", "/a/sub", "/b"] {
            b.mkdir(&p(d)).await.unwrap();
        }
        put(&b, "/a/one", 100).await;
        put(&b, "/a/sub/two", 50).await;
        put(&b, "/b/other", 7).await;
        let a = quotas.area("storage", &p("/a"));
        let nested = quotas.area("storage", &p("/a/sub"));
        let usage = a.load(&b).await.unwrap();
        assert_eq!((usage.bytes, usage.files), (150, 2));
        nested.load(&b).await.unwrap();
        // Overwrite: the difference.
        put(&b, "/a/one", 30).await;
        assert_eq!((a.usage().bytes, a.usage().files), (80, 2));
        // A new file in the nested home counts in both.
        put(&b, "/a/sub/three", 5).await;
        assert_eq!((a.usage().bytes, a.usage().files), (85, 3));
        assert_eq!((nested.usage().bytes, nested.usage().files), (55, 2));
        // Moved out of /a/sub but still inside /a.
        b.rename(&p("/a/sub/three"), &p("/a/three")).await.unwrap();
        assert_eq!((a.usage().bytes, a.usage().files), (85, 3));
        assert_eq!((nested.usage().bytes, nested.usage().files), (50, 1));
        // Moved out of /a, replacing nothing; then in again over a file.
        b.rename(&p("/a/three"), &p("/b/three")).await.unwrap();
        assert_eq!((a.usage().bytes, a.usage().files), (80, 2));
        b.rename(&p("/b/other"), &p("/a/one")).await.unwrap();
        assert_eq!((a.usage().bytes, a.usage().files), (57, 2));
        // Renamed onto itself: nothing changes.
        b.rename(&p("/a/one"), &p("/a/one")).await.unwrap();
        assert_eq!((a.usage().bytes, a.usage().files), (57, 2));
        b.delete(&p("/a/one")).await.unwrap();
        assert_eq!((a.usage().bytes, a.usage().files), (50, 1));
        // A directory moving out: walked again next time.
        b.rename(&p("/a/sub"), &p("/b/sub")).await.unwrap();
        assert_eq!(a.load(&b).await.unwrap().bytes, 0);
        // Another backend label never touches these areas.
        let other = AccountedBackend::new(inner, "other", quotas.clone());
        put(&other, "/a/x", 9).await;
        assert_eq!(a.usage().bytes, 0);
    }

    #[tokio::test]
    async fn reservations_never_let_two_uploads_pass() {
        let quotas = Quotas::default();
        let mem = MemoryBackend::new();
        let area = quotas.area("storage", &VPath::root());
        area.load(&mem).await.unwrap();
        let lim = QuotaLimits {
            bytes: Some(100),
            files: Some(2),
        };
        let mut r1 = Reservation::start(area.clone(), lim, 0, None).unwrap();
        let mut r2 = Reservation::start(area.clone(), lim, 0, None).unwrap();
        assert_eq!(
            Reservation::start(area.clone(), lim, 0, None).unwrap_err(),
            Exceeded::Files
        );
        r1.update(60).unwrap();
        assert_eq!(r2.update(60), Err(Exceeded::Bytes));
        r2.update(40).unwrap();
        assert_eq!(area.usage().reserved_bytes, 100);
        drop(r2);
        assert_eq!(area.usage().reserved_bytes, 60);
        // Overwriting a 60-byte file with 90 needs 30 more.
        drop(r1);
        area.lock().usage.bytes = 60;
        area.lock().usage.files = 1;
        let mut over = Reservation::start(area.clone(), lim, 0, Some(60)).unwrap();
        over.update(90).unwrap();
        assert_eq!(area.usage().reserved_bytes, 30);
        assert_eq!(over.update(101), Err(Exceeded::Bytes));
        drop(over);
        // Appending 41 to it does not fit; 40 does.
        let mut app = Reservation::start(area.clone(), lim, 60, Some(60)).unwrap();
        assert_eq!(app.update(41), Err(Exceeded::Bytes));
        app.update(40).unwrap();
        drop(app);
        area.lock().usage.bytes = 100;
        // Full: a new file is refused before any byte.
        assert_eq!(
            Reservation::start(area.clone(), lim, 0, None).unwrap_err(),
            Exceeded::Bytes
        );
        assert_eq!(area.usage().reserved_files, 0);
    }
}
