//! Runs the shared storage conformance suite against [`LocalBackend`] on a temporary
//! directory.

use ftpgate_backend_local::LocalBackend;
use ftpgate_storage::testkit::Fixture;

ftpgate_storage::conformance_suite!(async {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path().join("root")).unwrap();
    Fixture::with_guard(backend, dir)
});
