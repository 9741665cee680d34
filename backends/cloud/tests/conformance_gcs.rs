//! Runs the shared storage conformance suite against [`CloudBackend`] on
//! fake-gcs-server, started by the test (see `common/mod.rs`).

mod common;

ftpgate_storage::conformance_suite!({
    let Some(gcs) = common::gcs() else {
        return;
    };
    std::future::ready(gcs.backend())
});
