//! Runs the shared storage conformance suite against [`S3Backend`] on a local s3s-fs
//! server: a second, independent S3 implementation next to moto (`conformance.rs`), so
//! that the backend is not tuned to one server's quirks. See `common/mod.rs` for how
//! s3s-fs is found, started and stopped.
//!
//! # What s3s-fs 0.14.1 cannot do
//! s3s-fs stores every key as a file path under its root, so S3's flat key space with
//! `/` as an ordinary character is not what it serves:
//! - A key ending in `/` (our directory marker) becomes a filesystem directory; its
//!   PutObject answer has no ETag, which object_store rejects ("ETag Header missing").
//! - Directories on disk are never listed, so an empty directory would be invisible.
//! - HEAD of a key that is a directory on disk (`d` while `d/x` exists) answers
//!   500 Internal Server Error instead of S3's 404, so nothing can `stat` a directory.
//! - A key and a key prefix of the same name (`a` and `a/b`) cannot coexist.
//! - There is no ListMultipartUploads (only the moto tests check pending uploads).
//!
//! These are s3s-fs's, not the backend's (moto, and S3, answer as the backend
//! expects). The cases in [`NEEDS_DIRECTORIES`] create directories, so they print
//! `SKIPPED` on s3s-fs and run only on moto; every other case runs on both. The flat
//! tests below keep the parts of two skipped cases that need no directory (special
//! names, a listing over several pages) running on s3s-fs.

mod common;

use std::collections::BTreeMap;

use ftpgate_storage::testkit::{get, names, p, put};
use ftpgate_storage::StorageBackend;

/// Conformance cases that need directories, which s3s-fs cannot hold (see above).
const NEEDS_DIRECTORIES: &[&str] = &[
    "mkdir_stat_list_rmdir",
    "mkdir_existing_fails",
    "rmdir_non_empty_fails",
    "delete_missing_fails",
    "delete_dir_fails",
    "upload_invisible_until_complete",
    "abort_leaves_nothing",
    "drop_leaves_nothing",
    "rmdir_during_upload",
    "read_dir_fails",
    "create_on_dir_fails",
    "list_kinds_and_sizes",
    "list_hides_in_progress_upload",
    "rename_file",
    "rename_directory",
    "modified_times_present",
    "special_names_round_trip",
    "list_many_entries",
];

// The test harness names each test's thread after the test, which is the case's name.
ftpgate_storage::conformance_suite!({
    let case = std::thread::current().name().unwrap_or_default().to_owned();
    if NEEDS_DIRECTORIES.contains(&case.as_str()) {
        println!("SKIPPED: {case} needs directories, which s3s-fs cannot hold");
        return;
    }
    let Some(server) = common::s3s_fs() else {
        return;
    };
    std::future::ready(server.backend().await.0)
});

/// The skip list names real cases, so a renamed case is not silently skipped forever.
#[test]
fn skipped_cases_exist() {
    let testkit = include_str!("../../storage/src/testkit.rs");
    for case in NEEDS_DIRECTORIES {
        assert!(
            testkit.contains(&format!("pub async fn {case}(store: &dyn StorageBackend)")),
            "{case} is not a conformance case any more"
        );
    }
}

/// The file part of `special_names_round_trip`, at the root.
#[tokio::test]
async fn flat_special_names_round_trip() {
    let Some(server) = common::s3s_fs() else {
        return;
    };
    let (store, _) = server.backend().await;
    let files = ftpgate_storage::testkit::SPECIAL_NAMES;
    for name in files {
        put(&store, &format!("/{name}"), name.as_bytes()).await;
    }
    let mut expected: Vec<String> = files.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(names(&store, "/").await, expected);
    for name in files {
        let path = format!("/{name}");
        assert_eq!(get(&store, &path).await, name.as_bytes(), "{path}");
        let stat = store.stat(&p(&path)).await.expect("stat");
        assert_eq!(stat.size, name.len() as u64, "{path}");
    }
}

/// The listing part of `list_many_entries`: 1,050 files at the root take two pages of
/// s3s-fs's own ListObjectsV2 pagination.
#[tokio::test]
async fn flat_listing_over_pages() {
    let Some(server) = common::s3s_fs() else {
        return;
    };
    let (store, _) = server.backend().await;
    let mut expected = BTreeMap::new();
    for i in 0..1050u64 {
        let name = format!("entry-{i:04}");
        let data = vec![b'x'; (i % 7) as usize];
        put(&store, &format!("/{name}"), &data).await;
        expected.insert(name, data.len() as u64);
    }
    let listed = ftpgate_storage::testkit::list_all(&store, &p("/"))
        .await
        .expect("list /");
    let listed: BTreeMap<String, u64> = listed.into_iter().map(|(n, m)| (n, m.size)).collect();
    assert_eq!(listed, expected);
}
