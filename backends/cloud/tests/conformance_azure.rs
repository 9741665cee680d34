//! Runs the shared storage conformance suite against [`CloudBackend`] on Azurite,
//! started by the test (see `common/mod.rs`). Every case runs.

mod common;

ftpgate_storage::conformance_suite!({
    let Some(azurite) = common::azure() else {
        return;
    };
    std::future::ready(azurite.backend())
});
