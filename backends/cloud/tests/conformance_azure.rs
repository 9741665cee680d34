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
