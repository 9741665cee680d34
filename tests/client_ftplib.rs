//! End-to-end: Python's ftplib (tests/ftplib_suite.py) against the real binary,
//! once per storage backend. The suite exercises every implemented command and
//! exits non-zero when any check fails; its output is printed either way.
//! ftplib's own `abort()` (ABOR with TCP urgent data) runs as a test of its own.

mod common;

use common::{Gate, Opts};

/// The test that needs urgent-data handling; run separately.
const OOB_ABORT: &str = "test_abor_ftplib";

#[test]
fn ftplib_suite_local() {
    if !common::require("python3") {
        return;
    }
    let gate = Gate::start();
    let root = gate.root();
    common::ftplib_suite(&gate, Some(&root), &[], &[OOB_ABORT]);
    // Nothing the suite did may leave temporary upload files behind.
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".ftpgate-tmp-"),
                "leftover temp file {}",
                e.path().display()
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
}

#[test]
fn ftplib_suite_memory() {
    if !common::require("python3") {
        return;
    }
    let gate = Gate::start_with(Opts {
        storage: "memory",
        ..Default::default()
    });
    common::ftplib_suite(&gate, None, &[], &[OOB_ABORT]);
}

/// `ftplib.FTP.abort()` sends `ABOR\r\n` with MSG_OOB: the final `\n` is TCP
/// urgent data. The server must still see the whole line and answer 426 + 226.
#[test]
fn ftplib_abort_with_urgent_data() {
    if !common::require("python3") {
        return;
    }
    let gate = Gate::start();
    common::ftplib_suite(&gate, Some(&gate.root()), &[OOB_ABORT], &[]);
}
