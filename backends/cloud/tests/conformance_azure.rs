//! Runs the shared storage conformance suite against [`CloudBackend`] on Azurite,
//! started by the test (see `common/mod.rs`). Every case runs.

mod common;

ftpgate_storage::conformance_suite!({
    let Some(azurite) = common::azure() else {
        return;
    };
    std::future::ready(azurite.backend())
});

/// The SHA-256 handed to a single-PUT upload is stored as `sha256` metadata and read
/// back with one HEAD (HASH without a download); a folder blob is not a file.
#[tokio::test]
async fn sha256_metadata_round_trip() {
    use ftpgate_storage::testkit::p;
    use ftpgate_storage::{StorageBackend, WriteMode};
    let Some(azurite) = common::azure() else {
        return;
    };
    let backend = azurite.backend();
    let mut upload = backend
        .create(&p("/f"), WriteMode::Truncate)
        .await
        .expect("create");
    upload
        .write(bytes::Bytes::from_static(b"hello"))
        .await
        .expect("write");
    upload.set_sha256([7u8; 32]);
    upload.complete().await.expect("complete");
    assert_eq!(
        backend.stored_sha256(&p("/f")).await.expect("head"),
        Some(([7u8; 32], 5))
    );
    backend.mkdir(&p("/d")).await.expect("mkdir");
    assert_eq!(backend.stored_sha256(&p("/d")).await.expect("head"), None);
    let err = backend.read(&p("/d"), 0).await.err().expect("a directory");
    assert_eq!(err.kind(), ftpgate_storage::ErrorKind::IsADirectory);
}

/// A frozen service never hangs a command: with Azurite stopped (SIGSTOP) a stat fails
/// as `Transient` once the response timeout and the retries are spent, and works again
/// once it continues.
#[tokio::test]
async fn frozen_service_fails_in_bounded_time() {
    use ftpgate_storage::testkit::p;
    use ftpgate_storage::{ErrorKind, StorageBackend};
    use std::time::{Duration, Instant};
    let Some(azurite) = common::private_azure() else {
        return;
    };
    let mut cfg = azurite.azure_config(&common::fresh_prefix());
    cfg.tuning.response_timeout_secs = 2;
    cfg.tuning.stall_timeout_secs = 2;
    cfg.tuning.max_retries = 1;
    cfg.tuning.retry_timeout_secs = 3;
    let backend = ftpgate_backend_cloud::CloudBackend::azure(cfg).expect("backend");
    backend.mkdir(&p("/d")).await.expect("mkdir");
    azurite.signal("-STOP");
    let start = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(120), backend.stat(&p("/d"))).await;
    let elapsed = start.elapsed();
    azurite.signal("-CONT");
    let err = res
        .expect("stat hung for 120 s on a frozen service")
        .expect_err("stat of a frozen service");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    println!("frozen Azurite: stat failed after {elapsed:?}: {err}");
    assert!(backend
        .stat(&p("/d"))
        .await
        .expect("after SIGCONT")
        .is_dir());
}
