//! The shared storage conformance suite through [`InstrumentedBackend`] (the
//! metrics wrapper every backend runs behind in the server) around the local
//! backend: a trait method the wrapper forgets to forward would fall back to the
//! trait's default and change behaviour; the suite catches that.

use std::sync::Arc;

use ftpgate::metrics::{InstrumentedBackend, Metrics};
use ftpgate_backend_local::LocalBackend;
use ftpgate_storage::testkit::Fixture;

ftpgate_storage::conformance_suite!(async {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path().join("root")).unwrap();
    let wrapped = InstrumentedBackend::new(Arc::new(backend), "storage", Arc::new(Metrics::new()));
    Fixture::with_guard(wrapped, dir)
});
