//! Pending (interrupted, resumable) uploads of the local backend: suspend keeps the
//! bytes out of sight, only one resume can take them, the resumed upload commits all
//! the bytes, usage is per owner, the start-up sweep keeps them and expiry removes them.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ftpgate_backend_local::LocalBackend;
use ftpgate_storage::testkit::{expect_err, get, names, p, payload};
use ftpgate_storage::{ErrorKind, PendingKey, StorageBackend, WriteMode};
use futures::StreamExt;

fn key(owner: &str, path: &str) -> PendingKey {
    PendingKey {
        owner: owner.to_owned(),
        path: p(path),
    }
}

#[tokio::test]
async fn suspend_resume_once_complete_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let store = LocalBackend::new(&root).unwrap();
    store.mkdir(&p("/d")).await.unwrap();
    let data = payload((3 << 20) + 7, 1);
    let cut = 1usize << 20;
    let k = key("alice", "/d/f.bin");

    let mut up = store.create(&k.path, WriteMode::Truncate).await.unwrap();
    up.write(Bytes::copy_from_slice(&data[..cut]))
        .await
        .unwrap();
    assert_eq!(up.suspend(&k).await.unwrap(), Some(cut as u64));

    // Out of sight: no file, nothing listed, only this owner and path see it.
    expect_err(store.stat(&k.path).await, &[ErrorKind::NotFound], "stat");
    assert_eq!(names(&store, "/").await, vec!["d".to_owned()]);
    assert_eq!(names(&store, "/d").await, Vec::<String>::new());
    let info = store.pending_upload(&k).await.unwrap().unwrap();
    assert_eq!(info.size, cut as u64);
    assert!(store
        .pending_upload(&key("bob", "/d/f.bin"))
        .await
        .unwrap()
        .is_none());
    assert!(store
        .pending_upload(&key("alice", "/d/g.bin"))
        .await
        .unwrap()
        .is_none());
    let u = store.pending_usage(Some("alice")).await.unwrap();
    assert_eq!((u.count, u.bytes), (1, cut as u64));
    assert_eq!(store.pending_usage(Some("bob")).await.unwrap().count, 0);

    // A restart's sweep of temporary files keeps it.
    let store = LocalBackend::new(&root).unwrap();
    assert!(store.pending_upload(&k).await.unwrap().is_some());

    // More than it holds: refused, and still there.
    let more = store.resume_upload(&k, cut as u64 + 1).await;
    assert!(matches!(more, Err(ref e) if e.kind() == ErrorKind::InvalidInput));
    assert!(store.pending_upload(&k).await.unwrap().is_some());

    // One session takes it; a second finds it gone.
    let r = store.resume_upload(&k, cut as u64).await.unwrap();
    let second = store.resume_upload(&k, cut as u64).await;
    assert!(matches!(second, Err(ref e) if e.kind() == ErrorKind::NotFound));
    let mut prefix = Vec::new();
    let mut stream = r.prefix.expect("local keeps readable bytes");
    while let Some(chunk) = stream.next().await {
        prefix.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(prefix, &data[..cut]);
    let mut up = r.upload;
    up.write(Bytes::copy_from_slice(&data[cut..]))
        .await
        .unwrap();
    up.complete().await.unwrap();
    assert_eq!(get(&store, "/d/f.bin").await, data);
    assert!(store.pending_upload(&k).await.unwrap().is_none());

    // Expiry removes what is older than the limit, and only that.
    let mut up = store.create(&k.path, WriteMode::Truncate).await.unwrap();
    up.write(Bytes::from_static(b"abc")).await.unwrap();
    up.suspend(&k).await.unwrap();
    let past = SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(store.expire_pending(past).await.unwrap().count, 0);
    let future = SystemTime::now() + Duration::from_secs(1);
    let gone = store.expire_pending(future).await.unwrap();
    assert_eq!((gone.count, gone.bytes), (1, 3));
    assert!(store.pending_upload(&k).await.unwrap().is_none());
    assert_eq!(get(&store, "/d/f.bin").await, data);
}
