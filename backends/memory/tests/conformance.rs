//! Runs the shared storage conformance suite against [`MemoryBackend`], plus a few
//! memory-specific checks.

use ftpgate_backend_memory::MemoryBackend;
use ftpgate_storage::testkit::{get, p, payload, put};
use ftpgate_storage::StorageBackend;
use futures::StreamExt;

ftpgate_storage::conformance_suite!(async { MemoryBackend::new() });

#[tokio::test]
async fn kind_is_memory() {
    assert_eq!(MemoryBackend::new().kind(), "memory");
}

#[tokio::test]
async fn clones_share_the_tree() {
    let a = MemoryBackend::new();
    let b = a.clone();
    put(&a, "/f", b"shared").await;
    assert_eq!(get(&b, "/f").await, b"shared");
}

#[tokio::test]
async fn read_streams_in_slices() {
    let store = MemoryBackend::new();
    let data = payload(1024 * 1024 + 1, 1);
    put(&store, "/f", &data).await;
    let chunks: Vec<_> = store
        .read(&p("/f"), 0)
        .await
        .unwrap()
        .map(|c| c.unwrap().len())
        .collect()
        .await;
    assert_eq!(
        chunks,
        vec![256 * 1024, 256 * 1024, 256 * 1024, 256 * 1024, 1]
    );
}
