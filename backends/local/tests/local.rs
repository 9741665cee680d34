//! Local-disk specifics: symbolic links confined to the root, temporary files hidden
//! and cleaned up, and the disk layout behind the virtual paths.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ftpgate_backend_local::{LocalBackend, TEMP_PREFIX};
use ftpgate_storage::testkit::{expect_err, get, names, p, payload, put, read_all};
use ftpgate_storage::{ErrorKind, StorageBackend, WriteMode};
use futures::StreamExt;
use tempfile::TempDir;

#[path = "../../../tests/common/swap.rs"]
mod swap;
use swap::Swapper;

/// A root inside a temporary directory, beside an `outside` directory with a secret.
struct Setup {
    dir: TempDir,
    store: LocalBackend,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        fs::write(dir.path().join("outside/secret"), b"secret").unwrap();
        let store = LocalBackend::new(dir.path().join("root")).unwrap();
        Self { dir, store }
    }

    /// The same, resolving by the per-component walk (kernels without openat2).
    fn walking() -> Self {
        let s = Self::new();
        Self {
            store: s.store.without_openat2().unwrap(),
            dir: s.dir,
        }
    }

    fn root(&self) -> PathBuf {
        self.store.root().to_path_buf()
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }
}

fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(TEMP_PREFIX))
        .collect()
}

#[tokio::test]
async fn new_creates_and_canonicalises_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBackend::new(dir.path().join("a/b/../c")).unwrap();
    assert_eq!(
        store.root(),
        fs::canonicalize(dir.path().join("a/c")).unwrap()
    );
    assert!(store.root().is_dir());
    assert_eq!(store.kind(), "local");

    fs::write(dir.path().join("file"), b"x").unwrap();
    let err = LocalBackend::new(dir.path().join("file")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotADirectory, "{err}");
}

#[tokio::test]
async fn escaping_symlinks_are_refused() {
    escaping_symlinks_refused_with(Setup::new()).await;
}

#[tokio::test]
async fn escaping_symlinks_are_refused_by_the_walk() {
    escaping_symlinks_refused_with(Setup::walking()).await;
}

async fn escaping_symlinks_refused_with(s: Setup) {
    let root = s.root();
    symlink(s.outside(), root.join("esc")).unwrap(); // absolute, to a sibling directory
    symlink("../outside/secret", root.join("escfile")).unwrap(); // relative, to a file
    symlink("..", root.join("up")).unwrap(); // the parent of the root
    symlink("/tmp", root.join("tmp")).unwrap();
    let store = &s.store;
    let denied = &[ErrorKind::PermissionDenied];

    for path in [
        "/esc",
        "/escfile",
        "/up",
        "/tmp",
        "/esc/secret",
        "/up/outside/secret",
    ] {
        expect_err(store.stat(&p(path)).await, denied, &format!("stat {path}"));
        expect_err(
            read_all(store, &p(path), 0).await,
            denied,
            &format!("read {path}"),
        );
        expect_err(store.list(&p(path)).await, denied, &format!("list {path}"));
        expect_err(
            store.delete(&p(path)).await,
            denied,
            &format!("delete {path}"),
        );
        expect_err(
            store
                .set_modified(&p(path), std::time::SystemTime::now())
                .await,
            denied,
            &format!("set_modified {path}"),
        );
        expect_err(
            store.rename(&p(path), &p("/moved")).await,
            denied,
            &format!("rename {path}"),
        );
    }
    for path in ["/esc/new", "/up/new", "/tmp/ftpgate-should-not-exist"] {
        expect_err(
            store.create(&p(path), WriteMode::Truncate).await,
            denied,
            &format!("create {path}"),
        );
        expect_err(
            store.mkdir(&p(path)).await,
            denied,
            &format!("mkdir {path}"),
        );
    }
    expect_err(store.rmdir(&p("/esc")).await, denied, "rmdir /esc");
    expect_err(
        store.create(&p("/escfile"), WriteMode::Append).await,
        denied,
        "append through a link",
    );
    put(store, "/inside", b"x").await;
    expect_err(
        store.rename(&p("/inside"), &p("/esc/inside")).await,
        denied,
        "rename into a link",
    );

    // Nothing happened outside, and the links are still there.
    assert_eq!(fs::read(s.outside().join("secret")).unwrap(), b"secret");
    assert_eq!(
        fs::read_dir(s.outside()).unwrap().count(),
        1,
        "nothing was created outside the root"
    );
    assert!(!Path::new("/tmp/ftpgate-should-not-exist").exists());
    assert!(fs::symlink_metadata(root.join("escfile")).is_ok());
    // Listings skip the escaping links.
    assert_eq!(names(store, "/").await, vec!["inside".to_owned()]);
}

#[tokio::test]
async fn symlinks_inside_the_root_work() {
    symlinks_inside_work_with(Setup::new()).await;
}

#[tokio::test]
async fn symlinks_inside_the_root_work_with_the_walk() {
    symlinks_inside_work_with(Setup::walking()).await;
}

async fn symlinks_inside_work_with(s: Setup) {
    let root = s.root();
    let store = &s.store;
    store.mkdir(&p("/real")).await.unwrap();
    put(store, "/real/f", b"content").await;
    symlink("real", root.join("dirlink")).unwrap();
    symlink(root.join("real/f"), root.join("filelink")).unwrap();
    symlink("../real", root.join("real/loop")).unwrap();

    assert!(store.stat(&p("/dirlink")).await.unwrap().is_dir());
    let meta = store.stat(&p("/filelink")).await.unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.size, 7);
    assert_eq!(get(store, "/filelink").await, b"content");
    assert_eq!(get(store, "/dirlink/f").await, b"content");
    assert_eq!(get(store, "/real/loop/loop/f").await, b"content");
    assert_eq!(names(store, "/dirlink").await, vec!["f", "loop"]);
    put(store, "/dirlink/new", b"via link").await;
    assert_eq!(fs::read(root.join("real/new")).unwrap(), b"via link");

    let listed = ftpgate_storage::testkit::list_all(store, &p("/"))
        .await
        .unwrap();
    assert!(listed["dirlink"].is_dir());
    assert!(listed["filelink"].is_file());
    assert_eq!(listed["filelink"].size, 7);

    // An absolute link to the root itself, and `..` that stays inside.
    symlink(&root, root.join("rootlink")).unwrap();
    symlink("../real/f", root.join("real/sibling")).unwrap();
    assert_eq!(get(store, "/rootlink/real/f").await, b"content");
    assert_eq!(get(store, "/real/sibling").await, b"content");
    // A loop is an error, not a hang, and listings skip it.
    symlink("loop-b", root.join("loop-a")).unwrap();
    symlink("loop-a", root.join("loop-b")).unwrap();
    assert!(store.stat(&p("/loop-a")).await.is_err());
    assert!(!names(store, "/").await.contains(&"loop-a".to_owned()));
    // Metadata changes go to the target; delete and rename act on the link itself.
    store.set_permissions(&p("/filelink"), 0o600).await.unwrap();
    assert_eq!(
        fs::metadata(root.join("real/f")).unwrap().mode() & 0o777,
        0o600
    );
    store.rename(&p("/filelink"), &p("/renamed")).await.unwrap();
    assert!(fs::symlink_metadata(root.join("renamed"))
        .unwrap()
        .is_symlink());
    store.delete(&p("/renamed")).await.unwrap();
    assert_eq!(fs::read(root.join("real/f")).unwrap(), b"content");
    // Uploading over an in-root link replaces the link, not its target.
    put(store, "/dirlink/new", b"replaced").await;
    symlink("real/new", root.join("newlink")).unwrap();
    put(store, "/newlink", b"own file").await;
    assert!(fs::symlink_metadata(root.join("newlink"))
        .unwrap()
        .is_file());
    assert_eq!(fs::read(root.join("real/new")).unwrap(), b"replaced");
}

/// In process, for both resolvers: `/d` (a real directory) is swapped with
/// `/l -> <outside>` by `renameat2(RENAME_EXCHANGE)` in a tight loop while every kind
/// of operation runs on `/d/...`; nothing outside changes and no read returns the
/// outside content.
async fn swap_race_with(s: Setup) {
    let root = s.root();
    let store = &s.store;
    store.mkdir(&p("/d")).await.unwrap();
    put(store, "/d/f", b"inside").await;
    symlink(s.outside(), root.join("l")).unwrap();
    let outside_before = outside_state(&s.outside());

    let swapper = Swapper::start(&root, "d", "l");
    let mut inside_reads = 0;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    for i in 0..400 {
        if let Ok(data) = read_all(store, &p("/d/f"), 0).await {
            assert_eq!(data, b"inside", "read returned outside content");
            inside_reads += 1;
        }
        let _ =
            ftpgate_storage::testkit::upload(store, &p("/d/x"), WriteMode::Truncate, &[b"PWNED"])
                .await;
        let _ = ftpgate_storage::testkit::upload(store, &p("/d/x"), WriteMode::Append, &[b"PWNED"])
            .await;
        let _ = store.set_permissions(&p("/d/x"), 0o600).await;
        let _ = store.set_modified(&p("/d/x"), t).await;
        let _ = store.stat(&p("/d/x")).await;
        let _ = store.rename(&p("/d/x"), &p(&format!("/d/moved{i}"))).await;
        let _ = store.delete(&p(&format!("/d/moved{i}"))).await;
        let _ = store.delete(&p("/d/x")).await;
        let _ = store.mkdir(&p("/d/sub")).await;
        let _ = store.rmdir(&p("/d/sub")).await;
        if let Ok(mut entries) = store.list(&p("/d")).await {
            while let Some(e) = entries.next().await {
                if let Ok(e) = e {
                    assert_ne!(e.name, "secret", "listed the outside directory");
                }
            }
        }
        assert_eq!(
            outside_state(&s.outside()),
            outside_before,
            "round {i} changed the outside"
        );
    }
    let swaps = swapper.finish();
    assert!(swaps > 100, "the swapper barely ran: {swaps}");
    assert!(inside_reads > 0, "no read found the real directory");
}

/// Name → (content, mode, mtime) of every entry of the outside directory.
fn outside_state(dir: &Path) -> Vec<(String, Vec<u8>, u32, std::time::SystemTime)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            let data = if m.is_file() {
                fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (
                e.file_name().to_string_lossy().into_owned(),
                data,
                m.mode(),
                m.modified().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_a_directory_with_an_outside_link_never_escapes() {
    swap_race_with(Setup::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_a_directory_with_an_outside_link_never_escapes_the_walk() {
    swap_race_with(Setup::walking()).await;
}

#[tokio::test]
async fn dangling_special_and_unnameable_entries_are_skipped() {
    let s = Setup::new();
    let root = s.root();
    symlink("nowhere", root.join("dangling")).unwrap();
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"bad-\xff-utf8")),
        b"x",
    )
    .unwrap();
    fs::write(root.join("line\r\nbreak"), b"x").unwrap();
    fs::write(root.join("back\\slash"), b"x").unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(root.join("fifo"))
        .status()
        .unwrap();
    assert!(status.success());
    put(&s.store, "/ok", b"x").await;
    assert_eq!(names(&s.store, "/").await, vec!["ok"]);
    expect_err(
        s.store.stat(&p("/dangling")).await,
        &[ErrorKind::NotFound],
        "stat of a dangling link",
    );
    expect_err(
        read_all(&s.store, &p("/fifo"), 0).await,
        &[ErrorKind::PermissionDenied],
        "read of a FIFO",
    );
}

#[tokio::test]
async fn new_removes_leftover_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::create_dir(dir.path().join("elsewhere")).unwrap();
    for f in [
        format!("{TEMP_PREFIX}a"),
        format!("sub/{TEMP_PREFIX}b"),
        format!("sub/deeper/{TEMP_PREFIX}c"),
    ] {
        fs::write(root.join(f), b"partial").unwrap();
    }
    fs::write(root.join("sub/keep.txt"), b"keep").unwrap();
    let foreign = dir.path().join(format!("elsewhere/{TEMP_PREFIX}d"));
    fs::write(&foreign, b"not ours").unwrap();
    symlink(dir.path().join("elsewhere"), root.join("link")).unwrap();

    let store = LocalBackend::new(&root).unwrap();
    assert!(temp_files(&root).is_empty());
    assert!(temp_files(&root.join("sub")).is_empty());
    assert!(temp_files(&root.join("sub/deeper")).is_empty());
    assert_eq!(fs::read(root.join("sub/keep.txt")).unwrap(), b"keep");
    assert!(foreign.exists(), "the sweep must not follow symbolic links");
    assert_eq!(names(&store, "/sub").await, vec!["deeper", "keep.txt"]);
}

#[tokio::test]
async fn temp_file_hidden_while_uploading_and_gone_after() {
    let s = Setup::new();
    let root = s.root();
    let store = &s.store;
    store.mkdir(&p("/d")).await.unwrap();

    let mut up = store.create(&p("/d/f"), WriteMode::Truncate).await.unwrap();
    up.write(Bytes::from(payload(100_000, 1))).await.unwrap();
    assert_eq!(
        temp_files(&root.join("d")).len(),
        1,
        "the upload writes a temp file"
    );
    assert!(
        names(store, "/d").await.is_empty(),
        "but the listing hides it"
    );
    up.complete().await.unwrap();
    assert!(
        temp_files(&root.join("d")).is_empty(),
        "no temp file after complete"
    );
    assert_eq!(fs::read(root.join("d/f")).unwrap().len(), 100_000);

    let mut up = store.create(&p("/d/g"), WriteMode::Truncate).await.unwrap();
    up.write(Bytes::from_static(b"x")).await.unwrap();
    up.abort().await.unwrap();
    assert!(
        temp_files(&root.join("d")).is_empty(),
        "no temp file after abort"
    );

    let mut up = store.create(&p("/d/h"), WriteMode::Append).await.unwrap();
    up.write(Bytes::from_static(b"x")).await.unwrap();
    drop(up);
    assert!(
        temp_files(&root.join("d")).is_empty(),
        "no temp file after drop"
    );

    let up = store.create(&p("/d/f"), WriteMode::CreateNew).await;
    expect_err(up, &[ErrorKind::AlreadyExists], "CreateNew over /d/f");
    let mut up = store
        .create(&p("/d/i"), WriteMode::CreateNew)
        .await
        .unwrap();
    up.write(Bytes::from_static(b"i")).await.unwrap();
    up.complete().await.unwrap();
    assert!(
        temp_files(&root.join("d")).is_empty(),
        "no temp file after CreateNew"
    );
    let mut on_disk: Vec<_> = fs::read_dir(root.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, vec!["f", "i"]);
}

#[tokio::test]
async fn temp_names_are_reserved() {
    let s = Setup::new();
    let name = format!("/{TEMP_PREFIX}mine");
    expect_err(
        s.store.create(&p(&name), WriteMode::Truncate).await,
        &[ErrorKind::InvalidName],
        "create with the temp prefix",
    );
    expect_err(
        s.store.mkdir(&p(&name)).await,
        &[ErrorKind::InvalidName],
        "mkdir with the temp prefix",
    );
}

#[tokio::test]
async fn unique_fact_is_dev_and_inode() {
    let s = Setup::new();
    put(&s.store, "/f", b"x").await;
    let meta = s.store.stat(&p("/f")).await.unwrap();
    let disk = fs::metadata(s.root().join("f")).unwrap();
    assert_eq!(
        meta.unique.unwrap(),
        format!("{:x}g{:x}", disk.dev(), disk.ino())
    );
}

#[tokio::test]
async fn reads_stream_in_chunks_and_stop_when_dropped() {
    let s = Setup::new();
    let data = payload(3 * 1024 * 1024 + 5, 2);
    put(&s.store, "/big", &data).await;
    let mut stream = s.store.read(&p("/big"), 0).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty() && first.len() <= 1024 * 1024);
    assert_eq!(first, data[..first.len()]);
    drop(stream);
    // The file is still usable (nothing holds it in a broken state).
    assert!(get(&s.store, "/big").await == data);
}

#[tokio::test]
async fn offset_keeps_permissions_of_the_original() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    put(&s.store, "/f", b"0123456789").await;
    fs::set_permissions(s.root().join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    ftpgate_storage::testkit::upload(&s.store, &p("/f"), WriteMode::Offset(3), &[b"x"])
        .await
        .unwrap();
    assert_eq!(get(&s.store, "/f").await, b"012x");
    let mode = fs::metadata(s.root().join("f")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

#[tokio::test]
async fn set_modified_on_a_directory() {
    let s = Setup::new();
    s.store.mkdir(&p("/d")).await.unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    s.store.set_modified(&p("/d"), t).await.unwrap();
    assert_eq!(s.store.stat(&p("/d")).await.unwrap().modified, Some(t));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_round_trip_on_multi_thread_runtime() {
    let s = Setup::new();
    // 40 MiB: crosses the 16 MiB writeback-start threshold twice.
    let data = payload(40 * 1024 * 1024, 3);
    let mut up = s
        .store
        .create(&p("/big"), WriteMode::Truncate)
        .await
        .unwrap();
    for chunk in data.chunks(64 * 1024) {
        up.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let meta = up.complete().await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert!(fs::read(s.root().join("big")).unwrap() == data);
}

/// Open descriptors of this process that refer to `path`.
fn open_fds_to(path: &Path) -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

#[tokio::test]
async fn dropped_read_stream_releases_the_file() {
    let s = Setup::new();
    put(&s.store, "/big", &payload(8 * 1024 * 1024, 4)).await;
    let disk = s.root().join("big");
    let mut stream = s.store.read(&p("/big"), 0).await.unwrap();
    stream.next().await.unwrap().unwrap();
    assert_eq!(open_fds_to(&disk), 1, "the reading thread holds the file");
    drop(stream);
    for _ in 0..200 {
        if open_fds_to(&disk) == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("the reading thread did not stop after the stream was dropped");
}

/// Streams whose consumer stopped pulling (clients that stopped reading a TLS or
/// throttled download, or a listing) hold no blocking thread: with a pool of two
/// threads and twenty stalled downloads and listings, other file-system work still
/// runs.
#[test]
fn stalled_streams_hold_no_blocking_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = Setup::new();
    let all = async {
        let data = payload(4 * 1024 * 1024, 5);
        put(&s.store, "/big", &data).await;
        s.store.mkdir(&p("/d")).await.unwrap();
        for i in 0..200 {
            put(&s.store, &format!("/d/f{i}"), b"x").await;
        }
        let mut stalled = Vec::new();
        let mut listings = Vec::new();
        for _ in 0..10 {
            let mut stream = s.store.read(&p("/big"), 0).await.unwrap();
            let first = stream.next().await.unwrap().unwrap();
            assert_eq!(first, data[..first.len()]);
            stalled.push(stream);
            let mut listing = s.store.list(&p("/d")).await.unwrap();
            listing.next().await.unwrap().unwrap();
            listings.push(listing);
        }
        let stat = s.store.stat(&p("/big")).await.unwrap();
        assert_eq!(stat.size, data.len() as u64);
        // And the stalled streams still deliver everything, in order, when resumed.
        let mut rest = Vec::new();
        let mut stream = stalled.pop().unwrap();
        while let Some(chunk) = stream.next().await {
            rest.extend_from_slice(&chunk.unwrap());
        }
        assert!(rest == data[data.len() - rest.len()..]);
        let mut listing = listings.pop().unwrap();
        let mut n = 1;
        while let Some(e) = listing.next().await {
            e.unwrap();
            n += 1;
        }
        assert_eq!(n, 200);
    };
    // Every step needs a blocking thread: held threads would hang it, not slow it.
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(30), all)
            .await
            .expect("file-system work waited for threads held by stalled streams")
    });
}

#[tokio::test]
async fn complete_fails_cleanly_when_the_directory_vanished() {
    let s = Setup::new();
    s.store.mkdir(&p("/d")).await.unwrap();
    let mut up = s
        .store
        .create(&p("/d/f"), WriteMode::Truncate)
        .await
        .unwrap();
    up.write(Bytes::from_static(b"data")).await.unwrap();
    fs::remove_dir_all(s.root().join("d")).unwrap();
    expect_err(
        up.complete().await,
        &[ErrorKind::NotFound],
        "complete into a removed directory",
    );
    assert!(names(&s.store, "/").await.is_empty());
}
