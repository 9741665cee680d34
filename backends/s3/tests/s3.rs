//! S3-specific behaviour against a local moto server, checked through boto3 where
//! what matters is what really lands in the bucket: multipart uploads, aborts (also on
//! drop), verbatim keys, directory markers, paginated listings, CreateNew conflicts.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use ftpgate_backend_s3::{S3Backend, S3Config};
use ftpgate_storage::testkit::{get, names, p, payload, put};
use ftpgate_storage::{EntryKind, ErrorKind, StorageBackend, WriteMode};

const MIB: usize = 1024 * 1024;

macro_rules! moto_or_skip {
    () => {
        match common::moto() {
            Some(moto) => moto,
            None => return,
        }
    };
}

/// Waits (letting spawned tasks run) until no multipart upload is pending.
async fn wait_no_pending(moto: &common::Moto, bucket: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pending = moto.pending_uploads(bucket);
        if pending.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "multipart uploads still pending: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn multipart_upload_round_trip() {
    let moto = moto_or_skip!();
    let (store, bucket) = moto.backend().await;
    let data = payload(12 * MIB + 12_345, 1);
    let mut up = store.create(&p("/big"), WriteMode::Truncate).await.unwrap();
    for chunk in data.chunks(MIB + 17) {
        up.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    // Two 5 MiB parts are sent by now, but nothing is visible.
    assert_eq!(moto.pending_uploads(&bucket), vec!["big".to_owned()]);
    assert!(moto.keys(&bucket).is_empty());
    let meta = up.complete().await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert!(get(&store, "/big").await == data, "content differs");
    let stat = store.stat(&p("/big")).await.unwrap();
    assert_eq!((stat.kind, stat.size), (EntryKind::File, data.len() as u64));
    let size = moto.boto(
        &bucket,
        "print(json.dumps(s3.head_object(Bucket=bucket, Key='big')['ContentLength']))",
    );
    assert_eq!(size, json!(data.len()));
    assert!(moto.pending_uploads(&bucket).is_empty());
}

#[tokio::test]
async fn one_large_write_is_split_into_parts() {
    let moto = moto_or_skip!();
    let (store, _) = moto.backend().await;
    let data = payload(11 * MIB, 2);
    let meta = ftpgate_storage::testkit::upload(&store, &p("/one"), WriteMode::Truncate, &[&data])
        .await
        .unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert!(get(&store, "/one").await == data);
}

#[tokio::test]
async fn abort_leaves_no_object_and_no_pending_upload() {
    let moto = moto_or_skip!();
    let (store, bucket) = moto.backend().await;
    let mut up = store.create(&p("/f"), WriteMode::Truncate).await.unwrap();
    up.write(Bytes::from(payload(11 * MIB, 3))).await.unwrap();
    assert_eq!(moto.pending_uploads(&bucket), vec!["f".to_owned()]);
    up.abort().await.unwrap();
    assert!(moto.pending_uploads(&bucket).is_empty());
    assert!(moto.keys(&bucket).is_empty());
    assert_eq!(
        store.stat(&p("/f")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn drop_without_complete_aborts_the_multipart_upload() {
    let moto = moto_or_skip!();
    let (store, bucket) = moto.backend().await;
    let mut up = store.create(&p("/f"), WriteMode::Truncate).await.unwrap();
    up.write(Bytes::from(payload(6 * MIB, 4))).await.unwrap();
    assert_eq!(moto.pending_uploads(&bucket), vec!["f".to_owned()]);
    drop(up);
    wait_no_pending(moto, &bucket).await;
    assert!(moto.keys(&bucket).is_empty());
}

#[tokio::test]
async fn failed_part_aborts_and_never_commits() {
    let moto = moto_or_skip!();
    let (store, bucket) = moto.backend().await;
    let mut up = store.create(&p("/f"), WriteMode::Truncate).await.unwrap();
    up.write(Bytes::from(payload(6 * MIB, 7))).await.unwrap();
    // Someone else aborts the multipart upload: later parts fail with NoSuchUpload.
    moto.boto(
        &bucket,
        "for u in s3.list_multipart_uploads(Bucket=bucket).get('Uploads', []):\n\
         \x20   s3.abort_multipart_upload(Bucket=bucket, Key=u['Key'], UploadId=u['UploadId'])\n\
         print('null')",
    );
    let mut write_failed = false;
    for i in 0..4 {
        if up
            .write(Bytes::from(payload(5 * MIB, 8 + i)))
            .await
            .is_err()
        {
            write_failed = true;
            break;
        }
    }
    assert!(write_failed, "writes after the upload vanished must fail");
    assert!(
        up.complete().await.is_err(),
        "complete after a failed write"
    );
    assert!(moto.keys(&bucket).is_empty());
    assert!(moto.pending_uploads(&bucket).is_empty());
}

#[tokio::test]
async fn keys_are_verbatim() {
    let moto = moto_or_skip!();
    let (store, bucket) = moto.backend().await;
    store.mkdir(&p("/dir #%+ ü")).await.unwrap();
    put(&store, "/dir #%+ ü/a b #1 %+ü.txt", b"x").await;
    put(&store, "/100%", b"y").await;
    assert_eq!(
        moto.keys(&bucket),
        vec!["100%", "dir #%+ ü/", "dir #%+ ü/a b #1 %+ü.txt"]
    );
    // And keys written by another client read back under the same names.
    moto.boto(
        &bucket,
        "s3.put_object(Bucket=bucket, Key='other/%41 #x', Body=b'z')\nprint('null')",
    );
    assert_eq!(names(&store, "/other").await, vec!["%41 #x".to_owned()]);
    assert_eq!(get(&store, "/other/%41 #x").await, b"z");
}

#[tokio::test]
async fn prefix_keeps_keys_below_it() {
    let moto = moto_or_skip!();
    let bucket = moto.bucket();
    let mut cfg = moto.config(&bucket);
    cfg.prefix = Some("/site/one/".into());
    let store = S3Backend::new(cfg).await.unwrap();
    moto.boto(
        &bucket,
        "s3.put_object(Bucket=bucket, Key='outside', Body=b'o')\nprint('null')",
    );
    assert!(names(&store, "/").await.is_empty());
    store.mkdir(&p("/d")).await.unwrap();
    put(&store, "/d/f", b"1").await;
    assert_eq!(
        moto.keys(&bucket),
        vec!["outside", "site/one/d/", "site/one/d/f"]
    );
    assert_eq!(names(&store, "/").await, vec!["d".to_owned()]);
}

#[tokio::test]
async fn empty_directories_are_markers() {
    let moto = moto_or_skip!();
    let (store, bucket) = moto.backend().await;
    store.mkdir(&p("/e")).await.unwrap();
    store.mkdir(&p("/e/sub")).await.unwrap();
    assert_eq!(moto.keys(&bucket), vec!["e/", "e/sub/"]);
    let size = moto.boto(
        &bucket,
        "print(json.dumps(s3.head_object(Bucket=bucket, Key='e/')['ContentLength']))",
    );
    assert_eq!(size, json!(0));
    assert_eq!(names(&store, "/e").await, vec!["sub".to_owned()]);
    assert!(names(&store, "/e/sub").await.is_empty());
    store.rmdir(&p("/e/sub")).await.unwrap();
    assert_eq!(moto.keys(&bucket), vec!["e/"]);
}

#[tokio::test]
async fn directories_without_markers_exist_implicitly() {
    let moto = moto_or_skip!();
    let (store, bucket) = moto.backend().await;
    moto.boto(
        &bucket,
        "s3.put_object(Bucket=bucket, Key='implicit/deep/x.txt', Body=b'x')\nprint('null')",
    );
    let root = ftpgate_storage::testkit::list_all(&store, &p("/"))
        .await
        .unwrap();
    assert_eq!(root["implicit"].kind, EntryKind::Dir);
    assert!(root["implicit"].modified.is_some());
    let stat = store.stat(&p("/implicit/deep")).await.unwrap();
    assert_eq!(stat.kind, EntryKind::Dir);
    assert!(stat.modified.is_some());
    assert_eq!(
        store.rmdir(&p("/implicit")).await.unwrap_err().kind(),
        ErrorKind::DirectoryNotEmpty
    );
    put(&store, "/implicit/new", b"n").await;
    store.delete(&p("/implicit/deep/x.txt")).await.unwrap();
    assert_eq!(
        store.stat(&p("/implicit/deep")).await.unwrap_err().kind(),
        ErrorKind::NotFound,
        "a directory without marker goes with its last key"
    );
}

#[tokio::test]
async fn listing_streams_every_page() {
    let moto = moto_or_skip!();
    let (store, bucket) = moto.backend().await;
    store.mkdir(&p("/many")).await.unwrap();
    // 2,000 files and 500 directory markers, written by boto3 (16 threads) for speed.
    moto.boto(
        &bucket,
        "from concurrent.futures import ThreadPoolExecutor\n\
         def put(i):\n\
         \x20   key = f'many/k{i:05}/' if i % 5 == 0 else f'many/k{i:05}'\n\
         \x20   s3.put_object(Bucket=bucket, Key=key, Body=b'')\n\
         with ThreadPoolExecutor(16) as pool:\n\
         \x20   list(pool.map(put, range(2500)))\n\
         print('null')",
    );
    let mut stream = store.list(&p("/many")).await.unwrap();
    let mut names = Vec::new();
    while let Some(entry) = stream.next().await {
        let entry = entry.unwrap();
        let i: usize = entry.name[1..].parse().unwrap();
        let kind = if i.is_multiple_of(5) {
            EntryKind::Dir
        } else {
            EntryKind::File
        };
        assert_eq!(entry.meta.kind, kind, "{}", entry.name);
        names.push(entry.name);
    }
    names.sort();
    let expected: Vec<String> = (0..2500).map(|i| format!("k{i:05}")).collect();
    assert_eq!(names.len(), 2500);
    assert_eq!(names, expected);
}

#[tokio::test]
async fn create_new_conflicts() {
    let moto = moto_or_skip!();
    let (store, bucket) = moto.backend().await;
    put(&store, "/taken", b"old").await;
    assert_eq!(
        store
            .create(&p("/taken"), WriteMode::CreateNew)
            .await
            .err()
            .map(|e| e.kind()),
        Some(ErrorKind::AlreadyExists),
        "CreateNew on an existing file fails early"
    );
    // Multipart: the target appears while the upload runs.
    let mut up = store.create(&p("/m"), WriteMode::CreateNew).await.unwrap();
    up.write(Bytes::from(payload(6 * MIB, 5))).await.unwrap();
    put(&store, "/m", b"theirs").await;
    assert_eq!(
        up.complete().await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(get(&store, "/m").await, b"theirs");
    assert!(moto.pending_uploads(&bucket).is_empty());
    // Multipart on a free name completes.
    let data = payload(6 * MIB, 6);
    ftpgate_storage::testkit::upload(&store, &p("/n"), WriteMode::CreateNew, &[&data])
        .await
        .unwrap();
    assert!(get(&store, "/n").await == data);
}

#[tokio::test]
async fn check_reports_bucket_and_endpoint() {
    let moto = moto_or_skip!();
    let (store, _) = moto.backend().await;
    store.check().await.unwrap();
    let cfg = moto.config("no-such-bucket-here");
    let missing = S3Backend::new(cfg).await.unwrap();
    let err = missing.check().await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no-such-bucket-here"), "{msg}");
    assert!(msg.contains(&moto.endpoint()), "{msg}");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{msg}");
}

#[tokio::test]
async fn control_characters_are_invalid_names() {
    let moto = moto_or_skip!();
    let (store, _) = moto.backend().await;
    let err = store
        .create(&p("/tab\there"), WriteMode::Truncate)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidName);
}

#[tokio::test]
async fn capabilities_are_honest() {
    let moto = moto_or_skip!();
    let (store, _) = moto.backend().await;
    assert_eq!(store.kind(), "s3");
    let caps = store.capabilities();
    assert!(
        !caps.append && !caps.write_at_offset && !caps.rename_directories && !caps.atomic_rename
    );
    // MFMT works by rewriting the object with `mtime` metadata.
    assert!(caps.set_modified);
}

/// MFMT's time and the upload's SHA-256 are object metadata other S3 clients see
/// (`x-amz-meta-mtime` in rclone's format), the content and other metadata survive the
/// rewrite, and stat and listings report the stored time.
#[tokio::test]
async fn mtime_and_sha256_are_object_metadata() {
    let moto = moto_or_skip!();
    let (store, bucket) = moto.backend().await;
    let data = payload(100_000, 7);
    let mut up = store.create(&p("/f"), WriteMode::Truncate).await.unwrap();
    up.write(Bytes::from(data.clone())).await.unwrap();
    up.set_sha256([0xab; 32]);
    up.complete().await.unwrap();
    let (digest, size) = store.stored_sha256(&p("/f")).await.unwrap().unwrap();
    assert_eq!((digest, size), ([0xab; 32], data.len() as u64));
    let time = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    store.set_modified(&p("/f"), time).await.unwrap();
    let m = moto.boto(
        &bucket,
        "print(json.dumps(s3.head_object(Bucket=bucket, Key='f')['Metadata']))",
    );
    assert_eq!(m["mtime"], json!("1500000000.000000000"), "{m}");
    assert_eq!(m["sha256"], json!("ab".repeat(32)), "{m}");
    assert!(
        get(&store, "/f").await == data,
        "content changed by the rewrite"
    );
    assert_eq!(store.stat(&p("/f")).await.unwrap().modified, Some(time));
    let listed: Vec<_> = store
        .list(&p("/"))
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_eq!(listed[0].meta.modified, Some(time));
    // open: metadata and content in one step, from an offset.
    let (meta, stream) = store.open(&p("/f"), 99_990).await.unwrap();
    assert_eq!((meta.size, meta.modified), (100_000, Some(time)));
    let tail: Vec<u8> = stream
        .map(|c| c.unwrap().to_vec())
        .collect::<Vec<_>>()
        .await
        .concat();
    assert_eq!(tail, data[99_990..]);
    let (_, empty) = store.open(&p("/f"), 100_000).await.unwrap();
    assert_eq!(empty.count().await, 0);
    assert_eq!(
        store.open(&p("/f"), 100_001).await.err().unwrap().kind(),
        ErrorKind::InvalidInput
    );
    store.mkdir(&p("/d")).await.unwrap();
    assert_eq!(
        store.open(&p("/d"), 0).await.err().unwrap().kind(),
        ErrorKind::IsADirectory
    );
    assert_eq!(
        store.set_modified(&p("/d"), time).await.unwrap_err().kind(),
        ErrorKind::IsADirectory
    );
    assert_eq!(
        store
            .set_modified(&p("/nope"), time)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    // A multipart rewrite keeps the content too.
    let big = payload(11 * MIB, 8);
    put(&store, "/big", &big).await;
    store.set_modified(&p("/big"), time).await.unwrap();
    assert!(
        get(&store, "/big").await == big,
        "multipart rewrite changed content"
    );
    assert_eq!(store.stat(&p("/big")).await.unwrap().modified, Some(time));
    wait_no_pending(moto, &bucket).await;
}

#[tokio::test]
async fn new_rejects_invalid_config() {
    let mut cfg = S3Config::new("b");
    cfg.part_size_mib = 1;
    let err = S3Backend::new(cfg).await.unwrap_err();
    assert!(err.message().contains("s3.part_size_mib"), "{err}");
}

/// A loopback port on which nothing listens: connections are refused.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A backend whose endpoint refuses connections.
async fn unreachable_backend(tune: impl FnOnce(&mut S3Config)) -> (S3Backend, String) {
    let endpoint = format!("http://127.0.0.1:{}", dead_port());
    let mut cfg = S3Config::new("nowhere");
    cfg.endpoint = Some(endpoint.clone());
    cfg.force_path_style = true;
    cfg.allow_http = true;
    cfg.access_key_id = Some("testing".into());
    cfg.secret_access_key = Some("testing".into());
    tune(&mut cfg);
    (S3Backend::new(cfg).await.unwrap(), endpoint)
}

/// Runs `op`, which must fail as Transient; returns how long it took.
async fn transient_failure<T>(
    what: &str,
    op: impl std::future::Future<Output = ftpgate_storage::Result<T>>,
) -> Duration {
    let started = Instant::now();
    let Err(err) = op.await else {
        panic!("{what}: succeeded against a port where nothing listens");
    };
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Transient, "{what}: {err}");
    took
}

#[tokio::test]
async fn unreachable_server_fails_transient_within_retry_timeout() {
    // Many retries allowed: the 2 s retry timeout is what ends them.
    let (store, endpoint) = unreachable_backend(|cfg| {
        cfg.retry_timeout_secs = 2;
        cfg.max_retries = 20;
    })
    .await;
    let create_and_complete = async {
        // create() already lists the target's prefix, so it fails there; were it to
        // succeed, the upload's completion must fail the same way.
        let mut up = store.create(&p("/f"), WriteMode::Truncate).await?;
        up.write(Bytes::from_static(b"data")).await?;
        up.complete().await
    };
    let (a, d) = (p("/a"), p("/d"));
    // All at once: each request has its own retry budget.
    let (stat, list, read, create) = futures::join!(
        transient_failure("stat", store.stat(&a)),
        transient_failure("list", store.list(&d)),
        transient_failure("read", store.read(&a, 0)),
        transient_failure("create+complete", create_and_complete),
    );
    let took = [
        ("stat", stat),
        ("list", list),
        ("read", read),
        ("create+complete", create),
    ];
    for (what, took) in took {
        assert!(
            took >= Duration::from_secs(1),
            "{what} gave up after {took:?}: it did not retry"
        );
        assert!(
            took < Duration::from_secs(5),
            "{what} took {took:?} with retry_timeout_secs = 2"
        );
    }
    let err = store.check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.to_string().contains(&endpoint), "{err}");
}

#[tokio::test]
async fn unreachable_server_with_default_retries_fails_fast() {
    // Defaults: 3 retries with backoffs of at most 0.1 + 0.2 + 0.4 s.
    let (store, _) = unreachable_backend(|_| {}).await;
    let took = transient_failure("stat", store.stat(&p("/a"))).await;
    assert!(took < Duration::from_secs(3), "stat took {took:?}");
}

#[tokio::test]
async fn new_rejects_invalid_retry_settings() {
    let mut cfg = S3Config::new("b");
    cfg.max_retries = 1000;
    let err = S3Backend::new(cfg).await.unwrap_err();
    assert!(err.message().contains("s3.max_retries"), "{err}");
    let mut cfg = S3Config::new("b");
    cfg.retry_timeout_secs = 0;
    let err = S3Backend::new(cfg).await.unwrap_err();
    assert!(err.message().contains("s3.retry_timeout_secs"), "{err}");
}

/// Above the CopyObject limit (5 GiB on S3; lowered to 1 MiB here) a rename streams
/// the object through the gateway into a multipart upload, then deletes the source.
#[tokio::test]
async fn rename_above_the_copy_limit_streams_through_a_multipart_upload() {
    let moto = moto_or_skip!();
    let (store, bucket) = moto.backend().await;
    let store = store.with_copy_limit(MIB as u64);
    let data = payload(11 * MIB + 7, 4);
    put(&store, "/huge.bin", &data).await;
    put(&store, "/target.bin", b"old").await;
    store
        .rename(&p("/huge.bin"), &p("/target.bin"))
        .await
        .unwrap();
    assert!(get(&store, "/target.bin").await == data, "content differs");
    expect_not_found(store.stat(&p("/huge.bin")).await);
    assert_eq!(moto.keys(&bucket), vec!["target.bin".to_owned()]);
    wait_no_pending(moto, &bucket).await;
}

fn expect_not_found<T: std::fmt::Debug>(r: ftpgate_storage::Result<T>) {
    match r {
        Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound, "{e:?}"),
        Ok(v) => panic!("expected NotFound, got {v:?}"),
    }
}

/// A TCP relay to `upstream` that closes the first `cuts` connections once they have
/// carried `after` bytes of responses (mid-body of a large GET); returns its port and
/// the number of connections it cut so far.
async fn cutting_relay(
    upstream: std::net::SocketAddr,
    after: u64,
    cuts: usize,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = cut.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    let _ = sw.shutdown().await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                let mut carried = 0u64;
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if carried + n as u64 > after
                        && counter
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                                (c < cuts).then_some(c + 1)
                            })
                            .is_ok()
                    {
                        // Mid-body: the response breaks off here.
                        break;
                    }
                    carried += n as u64;
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    (port, cut)
}

/// A ranged GET whose response breaks off in the middle (a reset, as S3 may do to a
/// GET that waited long behind a slow client) is asked again from the byte where it
/// stopped: the download is whole and in order, and no byte is read twice. The retry
/// budget counts breaks in a row: the 32 MiB GET here breaks after every MiB, 22 times
/// or more — more than object_store's own body retries (3 per request) times ours (3)
/// allow without progress resetting the count — and is still read to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ranged_get_that_breaks_off_is_continued_where_it_stopped() {
    let moto = moto_or_skip!();
    let (direct, bucket) = moto.backend().await;
    let data = payload(40 * MIB + 77, 9);
    put(&direct, "/big", &data).await;
    let upstream = moto
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    // Two ranges (32 MiB and 8 MiB + 77), both read at once; thirty cuts, of which the
    // 8 MiB range can take at most eight.
    let (port, cut) = cutting_relay(upstream, MIB as u64, 30).await;
    let mut cfg = moto.config(&bucket);
    cfg.endpoint = Some(format!("http://127.0.0.1:{port}"));
    cfg.read_parallelism = 2;
    cfg.read_chunk_mib = 32;
    let store = S3Backend::new(cfg).await.unwrap();
    let mut stream = store.read(&p("/big"), 0).await.unwrap();
    let mut got = Vec::with_capacity(data.len());
    while let Some(piece) = stream.next().await {
        got.extend_from_slice(&piece.expect("the download goes on after a cut"));
    }
    assert_eq!(
        cut.load(std::sync::atomic::Ordering::SeqCst),
        30,
        "the relay cut thirty responses"
    );
    // A continuation from the range's start would repeat bytes: the content differs.
    assert!(got == data, "content differs after the cuts");
}
