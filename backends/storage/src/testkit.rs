//! The shared conformance suite that every backend runs from its own tests.
//!
//! Each public `async fn` in the "cases" part takes an **empty** backend and checks one
//! part of the crate-level `# Contract`, panicking with a message that names what broke.
//! Capability-dependent cases check the `Unsupported` answer when the capability is off.
//! [`conformance_suite!`](crate::conformance_suite) expands to one `#[tokio::test]` per
//! case, so a backend's test output lists every case by name:
//!
//! ```ignore
//! // backends/memory/tests/conformance.rs
//! ftpgate_storage::conformance_suite!(async { ftpgate_backend_memory::MemoryBackend::new() });
//!
//! // a backend that needs a temporary directory kept alive for the test
//! ftpgate_storage::conformance_suite!(async {
//!     let dir = tempfile::tempdir().unwrap();
//!     let backend = LocalBackend::new(dir.path().join("root")).unwrap();
//!     ftpgate_storage::testkit::Fixture::with_guard(backend, dir)
//! });
//! ```
//!
//! The factory expression is evaluated and awaited once per test and must yield a
//! backend, an `Arc<dyn StorageBackend>` or a [`Fixture`]. The calling crate needs
//! `tokio` (features `macros` and `rt`) as a dev-dependency for `#[tokio::test]`.
//!
//! Where the contract leaves a choice (an error reported by `read()` or by the first
//! stream item, `NotFound` or `NotADirectory` below a file), the cases accept either.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;

use crate::{EntryKind, ErrorKind, Metadata, Result, StorageBackend, VPath, WriteMode};

// ---------------------------------------------------------------------------------------
// Fixture and helpers
// ---------------------------------------------------------------------------------------

/// A backend under test plus whatever must outlive it (a temporary directory, a server).
///
/// The backend is dropped before the guard.
pub struct Fixture {
    backend: Arc<dyn StorageBackend>,
    _guard: Option<Box<dyn Any + Send>>,
}

impl Fixture {
    /// A fixture that owns only the backend.
    pub fn new(backend: impl StorageBackend) -> Self {
        Self {
            backend: Arc::new(backend),
            _guard: None,
        }
    }

    /// A fixture that keeps `guard` alive until after the backend is dropped.
    pub fn with_guard(backend: impl StorageBackend, guard: impl Any + Send) -> Self {
        Self {
            backend: Arc::new(backend),
            _guard: Some(Box::new(guard)),
        }
    }

    /// The backend as a trait object, the way the cases take it.
    pub fn backend(&self) -> &dyn StorageBackend {
        self.backend.as_ref()
    }

    /// A shared handle to the backend.
    pub fn shared(&self) -> Arc<dyn StorageBackend> {
        Arc::clone(&self.backend)
    }
}

impl fmt::Debug for Fixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixture")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl<B: StorageBackend> From<B> for Fixture {
    fn from(backend: B) -> Self {
        Self::new(backend)
    }
}

impl From<Arc<dyn StorageBackend>> for Fixture {
    fn from(backend: Arc<dyn StorageBackend>) -> Self {
        Self {
            backend,
            _guard: None,
        }
    }
}

/// Parses a test path; panics on an invalid one.
pub fn p(path: &str) -> VPath {
    VPath::parse(path).unwrap_or_else(|e| panic!("test path {path:?} is invalid: {e}"))
}

/// `len` deterministic pseudo-random bytes (xorshift), so misplaced bytes are noticed.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Uploads `chunks` to `path` with `mode` and completes the upload.
pub async fn upload(
    store: &dyn StorageBackend,
    path: &VPath,
    mode: WriteMode,
    chunks: &[&[u8]],
) -> Result<Metadata> {
    let mut up = store.create(path, mode).await?;
    for chunk in chunks {
        up.write(Bytes::copy_from_slice(chunk)).await?;
    }
    up.complete().await
}

/// Writes `data` to `path` (replacing any file) in one chunk; panics on failure.
pub async fn put(store: &dyn StorageBackend, path: &str, data: &[u8]) -> Metadata {
    upload(store, &p(path), WriteMode::Truncate, &[data])
        .await
        .unwrap_or_else(|e| panic!("upload of {path} failed: {e:?}"))
}

/// Reads a file from `offset` to the end. An error may come from `read()` itself or
/// from the stream; both end up here.
pub async fn read_all(store: &dyn StorageBackend, path: &VPath, offset: u64) -> Result<Vec<u8>> {
    let mut stream = store.read(path, offset).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Reads a whole file; panics on failure.
pub async fn get(store: &dyn StorageBackend, path: &str) -> Vec<u8> {
    read_all(store, &p(path), 0)
        .await
        .unwrap_or_else(|e| panic!("read of {path} failed: {e:?}"))
}

/// Collects a listing by name, checking that names are valid single segments (never
/// `.`/`..`) and appear only once. An error may come from `list()` or from the stream.
pub async fn list_all(
    store: &dyn StorageBackend,
    dir: &VPath,
) -> Result<BTreeMap<String, Metadata>> {
    let mut stream = store.list(dir).await?;
    let mut out = BTreeMap::new();
    while let Some(entry) = stream.next().await {
        let entry = entry?;
        assert!(
            crate::validate_segment(&entry.name).is_ok(),
            "listing of {dir} has an invalid name {:?}",
            entry.name
        );
        let name = entry.name.clone();
        assert!(
            out.insert(entry.name, entry.meta).is_none(),
            "listing of {dir} repeats {name:?}"
        );
    }
    Ok(out)
}

/// The sorted names in a directory; panics on failure.
pub async fn names(store: &dyn StorageBackend, dir: &str) -> Vec<String> {
    list_all(store, &p(dir))
        .await
        .unwrap_or_else(|e| panic!("list of {dir} failed: {e:?}"))
        .into_keys()
        .collect()
}

/// Asserts that `res` failed with one of `kinds`.
#[track_caller]
pub fn expect_err<T>(res: Result<T>, kinds: &[ErrorKind], what: &str) {
    match res {
        Ok(_) => panic!("{what}: succeeded, expected an error of kind {kinds:?}"),
        Err(e) => assert!(
            kinds.contains(&e.kind()),
            "{what}: expected kind {kinds:?}, got {:?} ({e})",
            e.kind()
        ),
    }
}

/// Asserts that `path` does not exist.
async fn assert_missing(store: &dyn StorageBackend, path: &str) {
    expect_err(
        store.stat(&p(path)).await,
        &[ErrorKind::NotFound],
        &format!("stat {path} (should not exist)"),
    );
}

fn strs(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// A date well after the epoch and before any plausible clock: modified times must
/// fall after it.
fn year_2001() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(978_307_200)
}

fn close_to(a: SystemTime, b: SystemTime, tolerance: Duration) -> bool {
    match a.duration_since(b) {
        Ok(d) => d <= tolerance,
        Err(e) => e.duration() <= tolerance,
    }
}

// ---------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------

/// `/` exists, is a directory, and is empty on a fresh backend.
pub async fn stat_root_is_dir(store: &dyn StorageBackend) {
    let meta = store.stat(&VPath::root()).await.expect("stat /");
    assert_eq!(meta.kind, EntryKind::Dir, "/ must be a directory");
    assert_eq!(names(store, "/").await, Vec::<String>::new(), "fresh root");
}

/// mkdir creates a directory that stat and list show; rmdir removes it again.
pub async fn mkdir_stat_list_rmdir(store: &dyn StorageBackend) {
    store.mkdir(&p("/d")).await.expect("mkdir /d");
    let meta = store.stat(&p("/d")).await.expect("stat /d");
    assert_eq!(meta.kind, EntryKind::Dir);
    assert_eq!(meta.size, 0, "directories have size 0");
    let root = list_all(store, &p("/")).await.expect("list /");
    assert_eq!(root.keys().cloned().collect::<Vec<_>>(), strs(&["d"]));
    assert_eq!(root["d"].kind, EntryKind::Dir);
    assert!(
        names(store, "/d").await.is_empty(),
        "new directory is empty"
    );

    store.mkdir(&p("/d/e")).await.expect("mkdir /d/e");
    assert_eq!(names(store, "/d").await, strs(&["e"]));
    assert_eq!(
        names(store, "/").await,
        strs(&["d"]),
        "a listing shows only direct children"
    );

    store.rmdir(&p("/d/e")).await.expect("rmdir /d/e");
    assert!(names(store, "/d").await.is_empty());
    store.rmdir(&p("/d")).await.expect("rmdir /d");
    assert_missing(store, "/d").await;
    assert!(names(store, "/").await.is_empty());
    expect_err(
        store.rmdir(&p("/d")).await,
        &[ErrorKind::NotFound],
        "rmdir of a missing directory",
    );
}

/// mkdir creates one level only: a missing parent is `NotFound`, a file parent fails.
pub async fn mkdir_needs_parent(store: &dyn StorageBackend) {
    expect_err(
        store.mkdir(&p("/a/b")).await,
        &[ErrorKind::NotFound],
        "mkdir /a/b without /a",
    );
    assert_missing(store, "/a").await;
    assert_missing(store, "/a/b").await;
    put(store, "/f", b"file").await;
    expect_err(
        store.mkdir(&p("/f/x")).await,
        &[ErrorKind::NotADirectory, ErrorKind::NotFound],
        "mkdir below a file",
    );
    assert_eq!(get(store, "/f").await, b"file");
}

/// mkdir of an existing directory or file is `AlreadyExists` and changes nothing.
pub async fn mkdir_existing_fails(store: &dyn StorageBackend) {
    store.mkdir(&p("/d")).await.expect("mkdir /d");
    put(store, "/d/inner", b"x").await;
    expect_err(
        store.mkdir(&p("/d")).await,
        &[ErrorKind::AlreadyExists],
        "mkdir of an existing directory",
    );
    assert_eq!(names(store, "/d").await, strs(&["inner"]));
    put(store, "/f", b"content").await;
    expect_err(
        store.mkdir(&p("/f")).await,
        &[ErrorKind::AlreadyExists],
        "mkdir over an existing file",
    );
    assert_eq!(get(store, "/f").await, b"content");
    expect_err(
        store.mkdir(&VPath::root()).await,
        &[ErrorKind::AlreadyExists],
        "mkdir /",
    );
}

/// rmdir of a directory with a file or a subdirectory is `DirectoryNotEmpty`.
pub async fn rmdir_non_empty_fails(store: &dyn StorageBackend) {
    store.mkdir(&p("/d")).await.expect("mkdir /d");
    put(store, "/d/f", b"x").await;
    expect_err(
        store.rmdir(&p("/d")).await,
        &[ErrorKind::DirectoryNotEmpty],
        "rmdir of a directory holding a file",
    );
    assert_eq!(get(store, "/d/f").await, b"x");

    store.mkdir(&p("/e")).await.expect("mkdir /e");
    store.mkdir(&p("/e/sub")).await.expect("mkdir /e/sub");
    expect_err(
        store.rmdir(&p("/e")).await,
        &[ErrorKind::DirectoryNotEmpty],
        "rmdir of a directory holding a directory",
    );
    assert_eq!(names(store, "/e").await, strs(&["sub"]));
}

/// rmdir of a file is `NotADirectory` and leaves the file; of a missing path `NotFound`.
pub async fn rmdir_file_fails(store: &dyn StorageBackend) {
    put(store, "/f", b"keep").await;
    expect_err(
        store.rmdir(&p("/f")).await,
        &[ErrorKind::NotADirectory],
        "rmdir of a file",
    );
    assert_eq!(get(store, "/f").await, b"keep");
    expect_err(
        store.rmdir(&p("/missing")).await,
        &[ErrorKind::NotFound],
        "rmdir of a missing path",
    );
}

/// delete of a missing file is `NotFound`, also inside an existing directory.
pub async fn delete_missing_fails(store: &dyn StorageBackend) {
    expect_err(
        store.delete(&p("/nope")).await,
        &[ErrorKind::NotFound],
        "delete /nope",
    );
    store.mkdir(&p("/d")).await.expect("mkdir /d");
    expect_err(
        store.delete(&p("/d/nope")).await,
        &[ErrorKind::NotFound],
        "delete /d/nope",
    );
    expect_err(
        store.delete(&p("/x/y/z")).await,
        &[ErrorKind::NotFound],
        "delete below a missing directory",
    );
}

/// delete of a directory is `IsADirectory` and leaves it in place.
pub async fn delete_dir_fails(store: &dyn StorageBackend) {
    store.mkdir(&p("/d")).await.expect("mkdir /d");
    expect_err(
        store.delete(&p("/d")).await,
        &[ErrorKind::IsADirectory],
        "delete of a directory",
    );
    assert!(store.stat(&p("/d")).await.expect("stat /d").is_dir());
    expect_err(
        store.delete(&VPath::root()).await,
        &[ErrorKind::IsADirectory, ErrorKind::PermissionDenied],
        "delete /",
    );
}

/// delete removes a file from stat, read and list.
pub async fn delete_file(store: &dyn StorageBackend) {
    put(store, "/f", b"bye").await;
    put(store, "/g", b"stay").await;
    store.delete(&p("/f")).await.expect("delete /f");
    assert_missing(store, "/f").await;
    expect_err(
        read_all(store, &p("/f"), 0).await,
        &[ErrorKind::NotFound],
        "read of a deleted file",
    );
    assert_eq!(names(store, "/").await, strs(&["g"]));
}

/// An upload in several uneven chunks reads back byte for byte; `complete` returns
/// the new metadata and `stat` agrees.
pub async fn upload_chunks_read_back(store: &dyn StorageBackend) {
    let data = payload(100_003, 1);
    let chunks: Vec<&[u8]> = vec![
        &data[..1],
        &data[1..4097],
        &data[4097..4097],
        &data[4097..70_000],
        &data[70_000..],
    ];
    let meta = upload(store, &p("/f.bin"), WriteMode::Truncate, &chunks)
        .await
        .expect("upload /f.bin");
    assert_eq!(meta.kind, EntryKind::File);
    assert_eq!(meta.size, data.len() as u64, "size returned by complete");
    let stat = store.stat(&p("/f.bin")).await.expect("stat /f.bin");
    assert_eq!(stat.kind, EntryKind::File);
    assert_eq!(stat.size, data.len() as u64, "size from stat");
    assert!(get(store, "/f.bin").await == data, "content differs");
}

/// A 3 MiB upload reads back byte for byte, whole and from an offset.
pub async fn upload_large_file(store: &dyn StorageBackend) {
    let data = payload(3 * 1024 * 1024, 2);
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut pos = 0;
    for size in [1000, 65_536, 1024 * 1024 + 7, 12_345].iter().cycle() {
        if pos >= data.len() {
            break;
        }
        let end = (pos + size).min(data.len());
        chunks.push(&data[pos..end]);
        pos = end;
    }
    let meta = upload(store, &p("/big"), WriteMode::Truncate, &chunks)
        .await
        .expect("upload /big");
    assert_eq!(meta.size, data.len() as u64);
    assert!(get(store, "/big").await == data, "3 MiB content differs");
    let offset = 1024 * 1024 + 3;
    let tail = read_all(store, &p("/big"), offset as u64)
        .await
        .expect("read /big at an offset");
    assert!(
        tail == data[offset..],
        "content from offset {offset} differs"
    );
}

/// An upload without data (and one with only an empty chunk) makes an empty file.
pub async fn upload_empty_file(store: &dyn StorageBackend) {
    let meta = upload(store, &p("/empty"), WriteMode::Truncate, &[])
        .await
        .expect("upload /empty");
    assert_eq!(meta.size, 0);
    let meta = upload(store, &p("/empty2"), WriteMode::Truncate, &[b""])
        .await
        .expect("upload /empty2");
    assert_eq!(meta.size, 0);
    for name in ["/empty", "/empty2"] {
        let stat = store.stat(&p(name)).await.expect("stat empty file");
        assert_eq!((stat.kind, stat.size), (EntryKind::File, 0), "{name}");
        assert!(get(store, name).await.is_empty(), "{name} reads empty");
    }
    let list = list_all(store, &p("/")).await.expect("list /");
    assert_eq!(list.len(), 2);
    assert!(list
        .values()
        .all(|m| m.kind == EntryKind::File && m.size == 0));
}

/// Until `complete` returns, the target is absent from stat and list (and so is any
/// temporary file); afterwards it is there.
pub async fn upload_invisible_until_complete(store: &dyn StorageBackend) {
    store.mkdir(&p("/d")).await.expect("mkdir /d");
    let mut up = store
        .create(&p("/d/f"), WriteMode::Truncate)
        .await
        .expect("create /d/f");
    up.write(Bytes::from_static(b"partial "))
        .await
        .expect("write");
    up.write(Bytes::from(payload(200_000, 3)))
        .await
        .expect("write");
    assert_missing(store, "/d/f").await;
    assert!(
        names(store, "/d").await.is_empty(),
        "an upload in progress must not show in its directory"
    );
    assert_eq!(names(store, "/").await, strs(&["d"]));
    expect_err(
        read_all(store, &p("/d/f"), 0).await,
        &[ErrorKind::NotFound],
        "read of an upload in progress",
    );
    up.write(Bytes::from_static(b"end")).await.expect("write");
    up.complete().await.expect("complete");
    let stat = store.stat(&p("/d/f")).await.expect("stat after complete");
    assert_eq!(stat.size, 8 + 200_000 + 3);
    assert_eq!(names(store, "/d").await, strs(&["f"]));
}

/// `abort` discards the upload: nothing new appears and an existing file is kept.
pub async fn abort_leaves_nothing(store: &dyn StorageBackend) {
    store.mkdir(&p("/d")).await.expect("mkdir /d");
    let mut up = store
        .create(&p("/d/f"), WriteMode::Truncate)
        .await
        .expect("create /d/f");
    up.write(Bytes::from(payload(300_000, 4)))
        .await
        .expect("write");
    up.abort().await.expect("abort");
    assert_missing(store, "/d/f").await;
    assert!(names(store, "/d").await.is_empty(), "abort left an entry");

    put(store, "/d/old", b"old content").await;
    let mut up = store
        .create(&p("/d/old"), WriteMode::Truncate)
        .await
        .expect("create /d/old");
    up.write(Bytes::from_static(b"new")).await.expect("write");
    up.abort().await.expect("abort");
    assert_eq!(get(store, "/d/old").await, b"old content");
    assert_eq!(names(store, "/d").await, strs(&["old"]));
}

/// Dropping an upload without `complete` behaves like `abort`.
pub async fn drop_leaves_nothing(store: &dyn StorageBackend) {
    store.mkdir(&p("/d")).await.expect("mkdir /d");
    {
        let mut up = store
            .create(&p("/d/f"), WriteMode::Truncate)
            .await
            .expect("create /d/f");
        up.write(Bytes::from(payload(300_000, 5)))
            .await
            .expect("write");
        drop(up);
    }
    assert_missing(store, "/d/f").await;
    assert!(names(store, "/d").await.is_empty(), "drop left an entry");

    put(store, "/d/old", b"old content").await;
    {
        let mut up = store
            .create(&p("/d/old"), WriteMode::Truncate)
            .await
            .expect("create /d/old");
        up.write(Bytes::from_static(b"new")).await.expect("write");
        drop(up);
    }
    // Dropping before any write, too.
    drop(
        store
            .create(&p("/d/g"), WriteMode::Truncate)
            .await
            .expect("create /d/g"),
    );
    assert_eq!(get(store, "/d/old").await, b"old content");
    assert_eq!(names(store, "/d").await, strs(&["old"]));
}

/// `Truncate` over an existing file: the old content stays readable until `complete`,
/// then the new (shorter) content replaces it entirely.
pub async fn truncate_replaces_existing(store: &dyn StorageBackend) {
    let old = payload(50_000, 6);
    put(store, "/f", &old).await;
    let mut up = store
        .create(&p("/f"), WriteMode::Truncate)
        .await
        .expect("create /f");
    up.write(Bytes::from_static(b"short new"))
        .await
        .expect("write");
    assert!(
        get(store, "/f").await == old,
        "old content must stay readable during the upload"
    );
    assert_eq!(store.stat(&p("/f")).await.expect("stat").size, 50_000);
    let meta = up.complete().await.expect("complete");
    assert_eq!(meta.size, 9);
    assert_eq!(get(store, "/f").await, b"short new");
    assert_eq!(names(store, "/").await, strs(&["f"]));
}

/// `CreateNew` fails with `AlreadyExists` when the target exists, whether at `create`
/// or appearing before `complete`, and leaves the existing content.
pub async fn create_new_refuses_existing(store: &dyn StorageBackend) {
    put(store, "/f", b"old").await;
    expect_err(
        upload(store, &p("/f"), WriteMode::CreateNew, &[b"new"]).await,
        &[ErrorKind::AlreadyExists],
        "CreateNew over an existing file",
    );
    assert_eq!(get(store, "/f").await, b"old");

    // The check happens at commit: the target appears while the upload runs.
    let mut up = store
        .create(&p("/g"), WriteMode::CreateNew)
        .await
        .expect("CreateNew on a free name");
    up.write(Bytes::from_static(b"mine")).await.expect("write");
    put(store, "/g", b"theirs").await;
    expect_err(
        up.complete().await,
        &[ErrorKind::AlreadyExists],
        "CreateNew complete after the target appeared",
    );
    assert_eq!(get(store, "/g").await, b"theirs");

    let meta = upload(store, &p("/h"), WriteMode::CreateNew, &[b"fresh"])
        .await
        .expect("CreateNew on a free name");
    assert_eq!(meta.size, 5);
    assert_eq!(get(store, "/h").await, b"fresh");
    assert_eq!(names(store, "/").await, strs(&["f", "g", "h"]));
}

/// `Append` adds after the existing bytes (and creates a missing file); without the
/// capability `create` answers `Unsupported`.
pub async fn append_mode(store: &dyn StorageBackend) {
    put(store, "/f", b"hello ").await;
    if !store.capabilities().append {
        expect_err(
            store.create(&p("/f"), WriteMode::Append).await,
            &[ErrorKind::Unsupported],
            "Append without the capability",
        );
        assert_eq!(get(store, "/f").await, b"hello ");
        return;
    }
    let mut up = store
        .create(&p("/f"), WriteMode::Append)
        .await
        .expect("create Append");
    up.write(Bytes::from_static(b"wor")).await.expect("write");
    up.write(Bytes::from_static(b"ld")).await.expect("write");
    assert_eq!(
        get(store, "/f").await,
        b"hello ",
        "appended bytes must not show before complete"
    );
    let meta = up.complete().await.expect("complete Append");
    assert_eq!(meta.size, 11);
    assert_eq!(get(store, "/f").await, b"hello world");

    let big = payload(600_000, 7);
    upload(store, &p("/f"), WriteMode::Append, &[&big])
        .await
        .expect("append a larger chunk");
    let all = get(store, "/f").await;
    assert_eq!(&all[..11], b"hello world");
    assert!(all[11..] == big, "second append differs");

    let meta = upload(store, &p("/new"), WriteMode::Append, &[b"created"])
        .await
        .expect("Append to a missing file creates it");
    assert_eq!(meta.size, 7);
    assert_eq!(get(store, "/new").await, b"created");

    let mut up = store
        .create(&p("/f"), WriteMode::Append)
        .await
        .expect("create Append");
    up.write(Bytes::from_static(b"discarded"))
        .await
        .expect("write");
    up.abort().await.expect("abort Append");
    assert_eq!(get(store, "/f").await.len(), 11 + big.len());
}

/// `Offset(n)` keeps the first `n` bytes and continues from there; `n` beyond the
/// size is `InvalidInput`. Without the capability `create` answers `Unsupported`.
pub async fn offset_mode(store: &dyn StorageBackend) {
    put(store, "/f", b"0123456789").await;
    if !store.capabilities().write_at_offset {
        expect_err(
            store.create(&p("/f"), WriteMode::Offset(4)).await,
            &[ErrorKind::Unsupported],
            "Offset without the capability",
        );
        assert_eq!(get(store, "/f").await, b"0123456789");
        return;
    }
    let meta = upload(store, &p("/f"), WriteMode::Offset(4), &[b"ab"])
        .await
        .expect("Offset(4)");
    assert_eq!(meta.size, 6);
    assert_eq!(get(store, "/f").await, b"0123ab");

    upload(store, &p("/f"), WriteMode::Offset(6), &[b"XY"])
        .await
        .expect("Offset(size)");
    assert_eq!(get(store, "/f").await, b"0123abXY");

    upload(store, &p("/f"), WriteMode::Offset(8), &[])
        .await
        .expect("Offset(size) without data");
    assert_eq!(get(store, "/f").await, b"0123abXY");

    expect_err(
        upload(store, &p("/f"), WriteMode::Offset(9), &[b"!"]).await,
        &[ErrorKind::InvalidInput],
        "Offset beyond the size",
    );
    assert_eq!(get(store, "/f").await, b"0123abXY");

    upload(store, &p("/f"), WriteMode::Offset(0), &[b"z"])
        .await
        .expect("Offset(0)");
    assert_eq!(get(store, "/f").await, b"z");

    let big = payload(400_000, 8);
    put(store, "/big", &big).await;
    upload(store, &p("/big"), WriteMode::Offset(300_001), &[b"tail"])
        .await
        .expect("Offset into a larger file");
    let got = get(store, "/big").await;
    assert_eq!(got.len(), 300_005);
    assert!(got[..300_001] == big[..300_001], "kept prefix differs");
    assert_eq!(&got[300_001..], b"tail");

    upload(store, &p("/new"), WriteMode::Offset(0), &[b"n"])
        .await
        .expect("Offset(0) on a missing file creates it");
    assert_eq!(get(store, "/new").await, b"n");
    expect_err(
        upload(store, &p("/missing"), WriteMode::Offset(5), &[b"n"]).await,
        &[ErrorKind::InvalidInput, ErrorKind::NotFound],
        "Offset(5) on a missing file",
    );
    assert_missing(store, "/missing").await;
}

/// A reader that started before a file was replaced sees the old content or the new
/// one, never a mix.
pub async fn read_during_replace_sees_one_version(store: &dyn StorageBackend) {
    let old = payload(3 * 1024 * 1024, 14);
    let new = payload(3 * 1024 * 1024, 15);
    put(store, "/f", &old).await;
    let mut stream = store.read(&p("/f"), 0).await.expect("read /f");
    let mut got = Vec::new();
    if let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.expect("first chunk"));
    }
    put(store, "/f", &new).await;
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.expect("later chunk"));
    }
    assert!(
        got == old || got == new,
        "a read across a replacement mixed old and new content"
    );
    assert!(get(store, "/f").await == new, "the replacement is in place");
}

/// Removing the target directory while an upload into it runs either fails (the
/// backend keeps its temporary file there) or makes `complete` fail with `NotFound`;
/// nothing half-done appears either way.
pub async fn rmdir_during_upload(store: &dyn StorageBackend) {
    store.mkdir(&p("/d")).await.expect("mkdir /d");
    let mut up = store
        .create(&p("/d/f"), WriteMode::Truncate)
        .await
        .expect("create /d/f");
    up.write(Bytes::from_static(b"data")).await.expect("write");
    match store.rmdir(&p("/d")).await {
        Ok(()) => {
            expect_err(
                up.complete().await,
                &[ErrorKind::NotFound],
                "complete after the directory was removed",
            );
            assert_missing(store, "/d").await;
            assert!(names(store, "/").await.is_empty());
        }
        Err(e) => {
            assert_eq!(
                e.kind(),
                ErrorKind::DirectoryNotEmpty,
                "rmdir during an upload: {e}"
            );
            up.complete()
                .await
                .expect("complete after the failed rmdir");
            assert_eq!(get(store, "/d/f").await, b"data");
        }
    }
}

/// Reads from an offset: the middle, exactly the size (empty) and beyond (`InvalidInput`).
pub async fn read_at_offset(store: &dyn StorageBackend) {
    let data = payload(1000, 9);
    put(store, "/f", &data).await;
    let mid = read_all(store, &p("/f"), 500).await.expect("read at 500");
    assert!(mid == data[500..], "content from 500 differs");
    let last = read_all(store, &p("/f"), 999).await.expect("read at 999");
    assert_eq!(last, data[999..]);
    let end = read_all(store, &p("/f"), 1000).await.expect("read at size");
    assert!(end.is_empty(), "read at the size must be empty");
    expect_err(
        read_all(store, &p("/f"), 1001).await,
        &[ErrorKind::InvalidInput],
        "read beyond the size",
    );

    put(store, "/empty", b"").await;
    assert!(read_all(store, &p("/empty"), 0)
        .await
        .expect("read empty file")
        .is_empty());
    expect_err(
        read_all(store, &p("/empty"), 1).await,
        &[ErrorKind::InvalidInput],
        "read beyond an empty file",
    );
}

/// Reading a directory is `IsADirectory`; reading a missing file is `NotFound`.
pub async fn read_dir_fails(store: &dyn StorageBackend) {
    store.mkdir(&p("/d")).await.expect("mkdir /d");
    expect_err(
        read_all(store, &p("/d"), 0).await,
        &[ErrorKind::IsADirectory],
        "read of a directory",
    );
    expect_err(
        read_all(store, &VPath::root(), 0).await,
        &[ErrorKind::IsADirectory],
        "read of /",
    );
    expect_err(
        read_all(store, &p("/missing"), 0).await,
        &[ErrorKind::NotFound],
        "read of a missing file",
    );
    expect_err(
        read_all(store, &p("/d/missing"), 0).await,
        &[ErrorKind::NotFound],
        "read of a missing file in a directory",
    );
}

/// `create` below a missing directory is `NotFound` (from `create`, before any data);
/// below a file it fails too.
pub async fn create_missing_parent_fails(store: &dyn StorageBackend) {
    expect_err(
        store.create(&p("/nope/f"), WriteMode::Truncate).await,
        &[ErrorKind::NotFound],
        "create below a missing directory",
    );
    expect_err(
        store
            .create(&p("/nope/deeper/f"), WriteMode::CreateNew)
            .await,
        &[ErrorKind::NotFound],
        "create below a missing directory (CreateNew)",
    );
    assert_missing(store, "/nope").await;
    put(store, "/file", b"x").await;
    expect_err(
        store.create(&p("/file/f"), WriteMode::Truncate).await,
        &[ErrorKind::NotADirectory, ErrorKind::NotFound],
        "create below a file",
    );
    assert_eq!(names(store, "/").await, strs(&["file"]));
}

/// `create` where the target is a directory is `IsADirectory` (from `create`).
pub async fn create_on_dir_fails(store: &dyn StorageBackend) {
    store.mkdir(&p("/d")).await.expect("mkdir /d");
    for mode in [WriteMode::Truncate, WriteMode::CreateNew] {
        expect_err(
            store.create(&p("/d"), mode).await,
            &[ErrorKind::IsADirectory],
            &format!("create over a directory ({mode:?})"),
        );
    }
    expect_err(
        store.create(&VPath::root(), WriteMode::Truncate).await,
        &[ErrorKind::IsADirectory],
        "create /",
    );
    assert!(store.stat(&p("/d")).await.expect("stat /d").is_dir());
}

/// `list` of a file is `NotADirectory`, reported by `list` itself.
pub async fn list_file_fails(store: &dyn StorageBackend) {
    put(store, "/f", b"x").await;
    expect_err(
        store.list(&p("/f")).await,
        &[ErrorKind::NotADirectory],
        "list of a file",
    );
}

/// `list` of a missing directory is `NotFound`, reported by `list` itself.
pub async fn list_missing_fails(store: &dyn StorageBackend) {
    expect_err(
        store.list(&p("/nope")).await,
        &[ErrorKind::NotFound],
        "list of a missing directory",
    );
    expect_err(
        store.list(&p("/nope/deeper")).await,
        &[ErrorKind::NotFound],
        "list below a missing directory",
    );
}

/// A listing shows files and directories with the right kind and size (as `stat`
/// does), only direct children, and distinct `unique` facts where they exist.
pub async fn list_kinds_and_sizes(store: &dyn StorageBackend) {
    put(store, "/a.txt", b"0123456789").await;
    put(store, "/b.bin", b"").await;
    store.mkdir(&p("/sub")).await.expect("mkdir /sub");
    put(store, "/sub/inner", b"12345").await;
    store.mkdir(&p("/sub/deeper")).await.expect("mkdir");

    let root = list_all(store, &p("/")).await.expect("list /");
    assert_eq!(
        root.keys().cloned().collect::<Vec<_>>(),
        strs(&["a.txt", "b.bin", "sub"])
    );
    assert_eq!(
        (root["a.txt"].kind, root["a.txt"].size),
        (EntryKind::File, 10)
    );
    assert_eq!(
        (root["b.bin"].kind, root["b.bin"].size),
        (EntryKind::File, 0)
    );
    assert_eq!((root["sub"].kind, root["sub"].size), (EntryKind::Dir, 0));
    for (name, meta) in &root {
        let stat = store
            .stat(&p(&format!("/{name}")))
            .await
            .expect("stat listed entry");
        assert_eq!((stat.kind, stat.size), (meta.kind, meta.size), "{name}");
    }
    if let (Some(a), Some(b)) = (&root["a.txt"].unique, &root["b.bin"].unique) {
        assert_ne!(a, b, "two files share a unique fact");
    }

    let sub = list_all(store, &p("/sub")).await.expect("list /sub");
    assert_eq!(
        sub.keys().cloned().collect::<Vec<_>>(),
        strs(&["deeper", "inner"])
    );
    assert_eq!((sub["inner"].kind, sub["inner"].size), (EntryKind::File, 5));
    assert_eq!(sub["deeper"].kind, EntryKind::Dir);
}

/// Uploads in progress (and their temporary files) never show in a listing, even
/// while other entries change around them.
pub async fn list_hides_in_progress_upload(store: &dyn StorageBackend) {
    put(store, "/keep", b"k").await;
    let mut a = store
        .create(&p("/new-a"), WriteMode::Truncate)
        .await
        .expect("create /new-a");
    let mut b = store
        .create(&p("/keep"), WriteMode::Truncate)
        .await
        .expect("create over /keep");
    a.write(Bytes::from(payload(70_000, 10)))
        .await
        .expect("write a");
    b.write(Bytes::from_static(b"replacement"))
        .await
        .expect("write b");
    store.mkdir(&p("/dir")).await.expect("mkdir during uploads");
    let list = list_all(store, &p("/")).await.expect("list /");
    assert_eq!(
        list.keys().cloned().collect::<Vec<_>>(),
        strs(&["dir", "keep"])
    );
    assert_eq!(list["keep"].size, 1, "the old file's size until complete");
    a.complete().await.expect("complete a");
    b.complete().await.expect("complete b");
    let list = list_all(store, &p("/")).await.expect("list /");
    assert_eq!(
        list.keys().cloned().collect::<Vec<_>>(),
        strs(&["dir", "keep", "new-a"])
    );
    assert_eq!(list["keep"].size, 11);
    assert_eq!(list["new-a"].size, 70_000);
}

/// Two uploads to different files, interleaved, both land intact.
pub async fn concurrent_uploads(store: &dyn StorageBackend) {
    let x = payload(300_000, 11);
    let y = payload(200_000, 12);
    let mut a = store
        .create(&p("/x"), WriteMode::Truncate)
        .await
        .expect("create /x");
    let mut b = store
        .create(&p("/y"), WriteMode::Truncate)
        .await
        .expect("create /y");
    for (cx, cy) in x
        .chunks(50_000)
        .zip(y.chunks(50_000).chain(std::iter::repeat(&[][..])))
    {
        a.write(Bytes::copy_from_slice(cx)).await.expect("write x");
        b.write(Bytes::copy_from_slice(cy)).await.expect("write y");
    }
    b.complete().await.expect("complete y");
    a.complete().await.expect("complete x");
    assert!(get(store, "/x").await == x, "/x differs");
    assert!(get(store, "/y").await == y, "/y differs");
}

/// Rename moves a file (to another name and into another directory).
pub async fn rename_file(store: &dyn StorageBackend) {
    let data = payload(10_000, 13);
    put(store, "/a", &data).await;
    store.mkdir(&p("/d")).await.expect("mkdir /d");
    store
        .rename(&p("/a"), &p("/b"))
        .await
        .expect("rename /a /b");
    assert_missing(store, "/a").await;
    assert!(get(store, "/b").await == data);
    store
        .rename(&p("/b"), &p("/d/c"))
        .await
        .expect("rename /b /d/c");
    assert_missing(store, "/b").await;
    assert!(get(store, "/d/c").await == data);
    assert_eq!(names(store, "/").await, strs(&["d"]));
    assert_eq!(names(store, "/d").await, strs(&["c"]));
    expect_err(
        store.rename(&p("/missing"), &p("/other")).await,
        &[ErrorKind::NotFound],
        "rename of a missing file",
    );
    assert_missing(store, "/other").await;
}

/// Rename over an existing file replaces it.
pub async fn rename_over_existing_file(store: &dyn StorageBackend) {
    put(store, "/a", b"new content").await;
    put(store, "/b", b"old").await;
    store
        .rename(&p("/a"), &p("/b"))
        .await
        .expect("rename over a file");
    assert_missing(store, "/a").await;
    assert_eq!(get(store, "/b").await, b"new content");
    let list = list_all(store, &p("/")).await.expect("list /");
    assert_eq!(list.keys().cloned().collect::<Vec<_>>(), strs(&["b"]));
    assert_eq!(list["b"].size, 11);
}

/// Rename into a missing directory is `NotFound` and leaves the source.
pub async fn rename_into_missing_dir_fails(store: &dyn StorageBackend) {
    put(store, "/a", b"stay").await;
    expect_err(
        store.rename(&p("/a"), &p("/nope/a")).await,
        &[ErrorKind::NotFound],
        "rename into a missing directory",
    );
    assert_eq!(get(store, "/a").await, b"stay");
    assert_eq!(names(store, "/").await, strs(&["a"]));
}

/// Rename of a directory moves its whole subtree (with the capability); without it
/// the answer is `Unsupported` and nothing moves.
pub async fn rename_directory(store: &dyn StorageBackend) {
    store.mkdir(&p("/d")).await.expect("mkdir /d");
    store.mkdir(&p("/d/sub")).await.expect("mkdir /d/sub");
    put(store, "/d/f", b"f").await;
    put(store, "/d/sub/g", b"g").await;
    if !store.capabilities().rename_directories {
        expect_err(
            store.rename(&p("/d"), &p("/e")).await,
            &[ErrorKind::Unsupported],
            "rename of a directory without the capability",
        );
        assert_eq!(get(store, "/d/sub/g").await, b"g");
        assert_missing(store, "/e").await;
        return;
    }
    store
        .rename(&p("/d"), &p("/e"))
        .await
        .expect("rename /d /e");
    assert_missing(store, "/d").await;
    assert_missing(store, "/d/f").await;
    assert!(store.stat(&p("/e")).await.expect("stat /e").is_dir());
    assert_eq!(names(store, "/").await, strs(&["e"]));
    assert_eq!(names(store, "/e").await, strs(&["f", "sub"]));
    assert_eq!(names(store, "/e/sub").await, strs(&["g"]));
    assert_eq!(get(store, "/e/f").await, b"f");
    assert_eq!(get(store, "/e/sub/g").await, b"g");

    store.mkdir(&p("/other")).await.expect("mkdir /other");
    store
        .rename(&p("/e/sub"), &p("/other/moved"))
        .await
        .expect("rename a directory into another one");
    assert_eq!(get(store, "/other/moved/g").await, b"g");
    assert_eq!(names(store, "/e").await, strs(&["f"]));

    assert!(
        store.rename(&p("/e"), &p("/e/inside")).await.is_err(),
        "renaming a directory into itself must fail"
    );
    assert_eq!(get(store, "/e/f").await, b"f");
    assert_missing(store, "/e/inside").await;
}

/// `set_modified` changes the time shown by stat and list (with the capability);
/// without it the answer is `Unsupported`.
pub async fn set_modified_time(store: &dyn StorageBackend) {
    put(store, "/f", b"x").await;
    let time = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    if !store.capabilities().set_modified {
        expect_err(
            store.set_modified(&p("/f"), time).await,
            &[ErrorKind::Unsupported],
            "set_modified without the capability",
        );
        return;
    }
    store
        .set_modified(&p("/f"), time)
        .await
        .expect("set_modified /f");
    let stat = store.stat(&p("/f")).await.expect("stat /f");
    let got = stat.modified.expect("modified time after set_modified");
    assert!(
        close_to(got, time, Duration::from_secs(1)),
        "stat shows {got:?}, set {time:?}"
    );
    let list = list_all(store, &p("/")).await.expect("list /");
    let listed = list["f"].modified.expect("listed modified time");
    assert!(
        close_to(listed, time, Duration::from_secs(1)),
        "list shows {listed:?}, set {time:?}"
    );
    assert_eq!(get(store, "/f").await, b"x", "content unchanged");
    expect_err(
        store.set_modified(&p("/missing"), time).await,
        &[ErrorKind::NotFound],
        "set_modified of a missing file",
    );
}

/// Files and directories report a modified time, recent and never the Unix epoch.
pub async fn modified_times_present(store: &dyn StorageBackend) {
    put(store, "/f", b"x").await;
    store.mkdir(&p("/d")).await.expect("mkdir /d");
    let now = SystemTime::now();
    let plausible =
        |t: SystemTime| t > year_2001() && close_to(t, now, Duration::from_secs(86_400));
    for name in ["/f", "/d"] {
        let stat = store.stat(&p(name)).await.expect("stat");
        let t = stat
            .modified
            .unwrap_or_else(|| panic!("{name} has no modified time"));
        assert!(plausible(t), "{name} modified {t:?} is not plausible");
    }
    for (name, meta) in list_all(store, &p("/")).await.expect("list /") {
        let t = meta
            .modified
            .unwrap_or_else(|| panic!("listed {name} has no modified time"));
        assert!(
            plausible(t),
            "listed {name} modified {t:?} is not plausible"
        );
    }
    if let Some(t) = store.stat(&VPath::root()).await.expect("stat /").modified {
        assert!(t > year_2001(), "/ modified {t:?} is not plausible");
    }
}

/// File names every backend must store and list unchanged: spaces (also leading and
/// trailing), unicode, `#`, `%`, `+` and other punctuation.
pub const SPECIAL_NAMES: &[&str] = &[
    "with space.txt",
    " leading space",
    "trailing space ",
    "ünïcödé-日本語.txt",
    "crab 🦀",
    "hash#1",
    "100%",
    "%2e%2e",
    "%41",
    "a+b",
    "semi;colon",
    "[brackets]{}",
    "quote'\"",
    "star*?",
    "~tilde",
    ".hidden",
];

/// Names with spaces, unicode, `#`, `%`, `+` and other punctuation round-trip
/// through upload, list, stat, read and mkdir unchanged.
pub async fn special_names_round_trip(store: &dyn StorageBackend) {
    let files = SPECIAL_NAMES;
    let dir = "dir #%+ ü";
    store
        .mkdir(&p(&format!("/{dir}")))
        .await
        .expect("mkdir with special characters");
    for name in files {
        put(store, &format!("/{name}"), name.as_bytes()).await;
        put(store, &format!("/{dir}/{name}"), name.as_bytes()).await;
    }
    let mut expected: Vec<String> = strs(files);
    expected.push(dir.to_owned());
    expected.sort();
    assert_eq!(names(store, "/").await, expected);
    let mut inner = strs(files);
    inner.sort();
    assert_eq!(names(store, &format!("/{dir}")).await, inner);
    for name in files {
        for path in [format!("/{name}"), format!("/{dir}/{name}")] {
            assert_eq!(get(store, &path).await, name.as_bytes(), "{path}");
            let stat = store.stat(&p(&path)).await.expect("stat");
            assert_eq!(stat.size, name.len() as u64, "{path}");
        }
    }
}

/// A directory of 1000 entries (files and directories) lists every one of them.
pub async fn list_many_entries(store: &dyn StorageBackend) {
    store.mkdir(&p("/many")).await.expect("mkdir /many");
    let mut expected = Vec::new();
    for i in 0..1000 {
        let name = format!("entry-{i:04}");
        if i % 10 == 0 {
            put(store, &format!("/many/{name}"), name.as_bytes()).await;
        } else {
            store
                .mkdir(&p(&format!("/many/{name}")))
                .await
                .expect("mkdir entry");
        }
        expected.push(name);
    }
    let list = list_all(store, &p("/many")).await.expect("list /many");
    assert_eq!(list.len(), 1000, "entries in the listing");
    assert_eq!(list.keys().cloned().collect::<Vec<_>>(), expected);
    for (name, meta) in &list {
        let i: usize = name[6..].parse().expect("entry number");
        let kind = if i.is_multiple_of(10) {
            EntryKind::File
        } else {
            EntryKind::Dir
        };
        assert_eq!(meta.kind, kind, "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// The macro
// ---------------------------------------------------------------------------------------

/// Expands to one `#[tokio::test]` per conformance case, each running the case on a
/// fresh backend from `$factory`, an expression that is awaited and converted into a
/// [`Fixture`](crate::testkit::Fixture) (a backend, an `Arc<dyn StorageBackend>` or a
/// `Fixture`). The calling crate needs `tokio` with `macros` and `rt`.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr $(,)?) => {
        $crate::__conformance_cases!(
            $factory;
            stat_root_is_dir,
            mkdir_stat_list_rmdir,
            mkdir_needs_parent,
            mkdir_existing_fails,
            rmdir_non_empty_fails,
            rmdir_file_fails,
            delete_missing_fails,
            delete_dir_fails,
            delete_file,
            upload_chunks_read_back,
            upload_large_file,
            upload_empty_file,
            upload_invisible_until_complete,
            abort_leaves_nothing,
            drop_leaves_nothing,
            truncate_replaces_existing,
            create_new_refuses_existing,
            read_during_replace_sees_one_version,
            rmdir_during_upload,
            append_mode,
            offset_mode,
            read_at_offset,
            read_dir_fails,
            create_missing_parent_fails,
            create_on_dir_fails,
            list_file_fails,
            list_missing_fails,
            list_kinds_and_sizes,
            list_hides_in_progress_upload,
            concurrent_uploads,
            rename_file,
            rename_over_existing_file,
            rename_into_missing_dir_fails,
            rename_directory,
            set_modified_time,
            modified_times_present,
            special_names_round_trip,
            list_many_entries,
        );
    };
}

/// Implementation detail of [`conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $case() {
                let fixture: $crate::testkit::Fixture = ::core::convert::Into::into($factory.await);
                $crate::testkit::$case(fixture.backend()).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------
// Wrappers forward every method
// ---------------------------------------------------------------------------------------

/// The trait methods with a default body, which a wrapper (metrics, quotas) silently
/// falls back to when it forgets to forward them: the backend's own behaviour
/// (sendfile, resumable uploads, its own hash state) is then lost without an error.
pub const DEFAULTED: &[&str] = &[
    "check",
    "open",
    "open_source",
    "stored_sha256",
    "pending_upload",
    "resume_upload",
    "may_have_pending",
    "discard_pending",
    "pending_usage",
    "expire_pending",
    "set_permissions",
    "upload.set_sha256",
    "upload.suspend",
    "upload.hash_sha256",
    "upload.sha256",
];

type Calls = Arc<std::sync::Mutex<std::collections::BTreeSet<&'static str>>>;

fn note(calls: &Calls, name: &'static str) {
    calls.lock().unwrap_or_else(|p| p.into_inner()).insert(name);
}

/// A backend that overrides every defaulted method and notes each call.
#[derive(Debug, Default)]
struct Probe {
    calls: Calls,
}

struct ProbeUpload {
    calls: Calls,
}

#[async_trait::async_trait]
impl crate::Upload for ProbeUpload {
    async fn write(&mut self, _data: Bytes) -> Result<()> {
        Ok(())
    }
    async fn complete(self: Box<Self>) -> Result<Metadata> {
        Err(crate::StorageError::new(ErrorKind::Other, "probe"))
    }
    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
    fn set_sha256(&mut self, _digest: [u8; 32]) {
        note(&self.calls, "upload.set_sha256");
    }
    async fn suspend(self: Box<Self>, _key: &crate::PendingKey) -> Result<Option<u64>> {
        note(&self.calls, "upload.suspend");
        Ok(Some(42))
    }
    fn hash_sha256(&mut self) -> bool {
        note(&self.calls, "upload.hash_sha256");
        true
    }
    fn sha256(&mut self) -> Option<[u8; 32]> {
        note(&self.calls, "upload.sha256");
        Some([7; 32])
    }
}

impl Probe {
    fn upload(&self) -> Box<dyn crate::Upload> {
        Box::new(ProbeUpload {
            calls: self.calls.clone(),
        })
    }
}

#[async_trait::async_trait]
impl StorageBackend for Probe {
    fn kind(&self) -> &'static str {
        "probe"
    }
    fn capabilities(&self) -> crate::Capabilities {
        crate::Capabilities::all()
    }
    async fn check(&self) -> Result<()> {
        note(&self.calls, "check");
        Ok(())
    }
    async fn stat(&self, path: &VPath) -> Result<Metadata> {
        Err(crate::StorageError::new(
            ErrorKind::NotFound,
            format!("{path}"),
        ))
    }
    async fn list(&self, _dir: &VPath) -> Result<crate::EntryStream> {
        Ok(futures::stream::empty().boxed())
    }
    async fn read(&self, _path: &VPath, _offset: u64) -> Result<crate::ByteStream> {
        Ok(futures::stream::empty().boxed())
    }
    async fn create(&self, _path: &VPath, _mode: WriteMode) -> Result<Box<dyn crate::Upload>> {
        Ok(self.upload())
    }
    async fn delete(&self, _path: &VPath) -> Result<()> {
        Ok(())
    }
    async fn mkdir(&self, _path: &VPath) -> Result<()> {
        Ok(())
    }
    async fn rmdir(&self, _path: &VPath) -> Result<()> {
        Ok(())
    }
    async fn rename(&self, _from: &VPath, _to: &VPath) -> Result<()> {
        Ok(())
    }
    async fn set_modified(&self, _path: &VPath, _time: SystemTime) -> Result<()> {
        Ok(())
    }
    async fn open(&self, _path: &VPath, _offset: u64) -> Result<(Metadata, crate::ByteStream)> {
        note(&self.calls, "open");
        Ok((file_meta(3), futures::stream::empty().boxed()))
    }
    async fn open_source(
        &self,
        _path: &VPath,
        _offset: u64,
    ) -> Result<(Metadata, crate::ReadSource)> {
        note(&self.calls, "open_source");
        let empty = futures::stream::empty().boxed();
        Ok((file_meta(3), crate::ReadSource::Stream(empty)))
    }
    async fn stored_sha256(&self, _path: &VPath) -> Result<Option<([u8; 32], u64)>> {
        note(&self.calls, "stored_sha256");
        Ok(Some(([7; 32], 3)))
    }
    async fn pending_upload(
        &self,
        _key: &crate::PendingKey,
    ) -> Result<Option<crate::PendingUpload>> {
        note(&self.calls, "pending_upload");
        Ok(Some(crate::PendingUpload {
            size: 42,
            modified: UNIX_EPOCH,
        }))
    }
    async fn resume_upload(
        &self,
        _key: &crate::PendingKey,
        _offset: u64,
    ) -> Result<crate::Resumed> {
        note(&self.calls, "resume_upload");
        Ok(crate::Resumed {
            upload: self.upload(),
            prefix: None,
        })
    }
    fn may_have_pending(&self, _key: &crate::PendingKey) -> bool {
        note(&self.calls, "may_have_pending");
        false
    }
    async fn discard_pending(&self, _key: &crate::PendingKey) -> Result<bool> {
        note(&self.calls, "discard_pending");
        Ok(true)
    }
    async fn pending_usage(&self, _owner: Option<&str>) -> Result<crate::PendingUsage> {
        note(&self.calls, "pending_usage");
        Ok(crate::PendingUsage {
            count: 1,
            bytes: 42,
        })
    }
    async fn expire_pending(&self, _before: SystemTime) -> Result<crate::PendingUsage> {
        note(&self.calls, "expire_pending");
        Ok(crate::PendingUsage {
            count: 1,
            bytes: 42,
        })
    }
    async fn set_permissions(&self, _path: &VPath, _mode: u32) -> Result<()> {
        note(&self.calls, "set_permissions");
        Ok(())
    }
}

fn file_meta(size: u64) -> Metadata {
    Metadata {
        kind: EntryKind::File,
        size,
        modified: Some(UNIX_EPOCH),
        unique: None,
    }
}

/// Checks that a wrapping backend forwards every method that has a default body
/// ([`DEFAULTED`]) to the backend it wraps, and passes the answers through.
/// `wrap` builds the wrapper around the given backend. Panics naming the methods
/// that fell back to the default.
pub async fn wrapper_forwards_every_method(
    wrap: impl FnOnce(Arc<dyn StorageBackend>) -> Arc<dyn StorageBackend>,
) {
    let probe = Arc::new(Probe::default());
    let calls = probe.calls.clone();
    let w = wrap(probe);
    let p = VPath::parse("/f").expect("path");
    let key = crate::PendingKey {
        owner: "u".into(),
        path: p.clone(),
    };
    let _ = w.check().await;
    let _ = w.open(&p, 0).await;
    let _ = w.open_source(&p, 0).await;
    assert_eq!(w.stored_sha256(&p).await.ok().flatten(), Some(([7; 32], 3)));
    let pending = w.pending_upload(&key).await.ok().flatten().map(|u| u.size);
    assert_eq!(pending, Some(42), "pending_upload answer");
    assert!(!w.may_have_pending(&key), "may_have_pending answer");
    assert_eq!(w.discard_pending(&key).await.ok(), Some(true));
    let usage = crate::PendingUsage {
        count: 1,
        bytes: 42,
    };
    assert_eq!(w.pending_usage(None).await.ok(), Some(usage));
    assert_eq!(w.expire_pending(UNIX_EPOCH).await.ok(), Some(usage));
    let _ = w.set_permissions(&p, 0o644).await;
    if let Ok(resumed) = w.resume_upload(&key, 42).await {
        let _ = resumed.upload.abort().await;
    }
    let mut up = w.create(&p, WriteMode::Truncate).await.expect("create");
    assert!(up.hash_sha256(), "hash_sha256 answer");
    assert_eq!(up.sha256(), Some([7; 32]), "sha256 answer");
    up.set_sha256([1; 32]);
    assert_eq!(up.suspend(&key).await.ok().flatten(), Some(42));
    let seen = calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let missing: Vec<&str> = DEFAULTED
        .iter()
        .copied()
        .filter(|m| !seen.contains(m))
        .collect();
    assert!(
        missing.is_empty(),
        "the wrapper does not forward: {missing:?} (their defaults ran instead)"
    );
}
