//! Runs the shared storage conformance suite against [`S3Backend`] on a local moto
//! server (see `common/mod.rs` for how moto is found, started and stopped).

mod common;

// The factory is a plain block evaluated inside each generated async test: without
// moto it `return`s from the test (after printing SKIPPED), otherwise it yields a
// ready future of a backend on a fresh bucket.
ftpgate_storage::conformance_suite!({
    let Some(moto) = common::moto() else {
        return;
    };
    std::future::ready(moto.backend().await.0)
});
