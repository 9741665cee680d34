//! Interrupted transfers: the client resets the data connection (RST, via
//! SO_LINGER 0 from a small python3 helper since std cannot do it) in the middle of
//! a STOR or RETR. The server must answer 426/451, store nothing under the final
//! name, leave no temporary file visible, and keep the control connection usable.

mod common;

use common::{interrupted_stor, payload, reset_data, sha, Ctl, Gate, Opts, Resp};

fn assert_failed_upload(r: &Resp, gate: &Gate) {
    assert!(
        r.code == 426 || r.code == 451,
        "interrupted upload must end with 426 or 451, got {r:?}\n{}",
        gate.logs()
    );
}

fn temp_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ftpgate-tmp-"))
        .collect()
}

fn check_storage_clean(c: &mut Ctl, dir: &str, expect: &[&str]) {
    let (r, listing) = c.list(&format!("LIST {dir}"));
    assert_eq!(r.code, 226, "{r:?}");
    let (r, names) = c.list(&format!("NLST {dir}"));
    assert_eq!(r.code, 226, "{r:?}");
    let mut got: Vec<String> = names
        .lines()
        .map(|l| l.rsplit('/').next().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want: Vec<String> = expect.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        got, want,
        "NLST after interrupted upload; LIST was:\n{listing}"
    );
    assert_eq!(
        listing.lines().count(),
        expect.len(),
        "LIST shows more than expected:\n{listing}"
    );
    let (r, mlsd) = c.list(&format!("MLSD {dir}"));
    assert_eq!(r.code, 226, "{r:?}");
    assert!(
        !mlsd.contains("ftpgate-tmp"),
        "MLSD shows a temporary file:\n{mlsd}"
    );
}

fn run_interrupted_upload(gate: &Gate, local: bool) {
    let mut c = gate.login();
    assert_eq!(c.cmd("TYPE I").code, 200);
    assert_eq!(c.cmd("MKD /up").code, 257);

    // 1. A new file: nothing may appear under its name.
    let r = interrupted_stor(&mut c, "/up/new file ü#%.bin", 3 * 1024 * 1024);
    assert_failed_upload(&r, gate);
    assert_eq!(c.cmd("NOOP").code, 200, "control connection must survive");
    // On local disk the cut upload is kept for resuming (storage.resume_window_secs):
    // its own user's SIZE reports it (tests/resume.rs); memory keeps nothing.
    let r = c.cmd("SIZE /up/new file ü#%.bin");
    assert_eq!(r.code, if local { 213 } else { 550 }, "{r:?}");
    check_storage_clean(&mut c, "/up", &[]);
    if local {
        let dir = gate.root().join("up");
        assert!(
            !dir.join("new file ü#%.bin").exists(),
            "partial upload stored under the final name"
        );
        assert_eq!(
            temp_files(&dir),
            Vec::<String>::new(),
            "temporary file left on disk"
        );
    }

    // 2. Replacing an existing file: the old content must survive intact.
    let old = payload(500_000, 1);
    let (pre, fin) = c.store("STOR /up/keep.bin", &old);
    assert_eq!((pre.code, fin.code), (150, 226), "{pre:?} {fin:?}");
    let r = interrupted_stor(&mut c, "/up/keep.bin", 1024 * 1024);
    assert_failed_upload(&r, gate);
    let (r, got) = c.retr("/up/keep.bin");
    assert_eq!(r.code, 226, "{r:?}");
    assert_eq!(
        sha(&got),
        sha(&old),
        "an interrupted STOR damaged the existing file"
    );
    check_storage_clean(&mut c, "/up", &["keep.bin"]);
    if local {
        assert_eq!(
            common::sha_file(&gate.root().join("up/keep.bin")),
            sha(&old)
        );
        assert_eq!(temp_files(&gate.root().join("up")), Vec::<String>::new());
    }

    // 3. A small interrupted upload (everything already buffered by the server).
    let r = interrupted_stor(&mut c, "/up/tiny.bin", 10);
    assert_failed_upload(&r, gate);
    check_storage_clean(&mut c, "/up", &["keep.bin"]);

    // 4. The same connection uploads normally afterwards.
    let data = payload(2 * 1024 * 1024 + 5, 2);
    let (pre, fin) = c.store("STOR /up/new file ü#%.bin", &data);
    assert_eq!((pre.code, fin.code), (150, 226), "{pre:?} {fin:?}");
    let (r, got) = c.retr("/up/new file ü#%.bin");
    assert_eq!(r.code, 226);
    assert_eq!(sha(&got), sha(&data));
    if local {
        assert_eq!(
            common::sha_file(&gate.root().join("up/new file ü#%.bin")),
            sha(&data)
        );
    }
    assert_eq!(c.cmd("QUIT").code, 221);
}

#[test]
fn interrupted_upload_local() {
    if !common::require("python3") {
        return;
    }
    let gate = Gate::start();
    run_interrupted_upload(&gate, true);
}

#[test]
fn interrupted_upload_memory() {
    if !common::require("python3") {
        return;
    }
    let gate = Gate::start_with(Opts {
        storage: "memory",
        ..Default::default()
    });
    run_interrupted_upload(&gate, false);
}

#[test]
fn interrupted_download() {
    if !common::require("python3") {
        return;
    }
    let gate = Gate::start();
    let mut c = gate.login();
    let data = payload(16 * 1024 * 1024, 3);
    let (_, fin) = c.store("STOR big.bin", &data);
    assert_eq!(fin.code, 226, "{fin:?}");
    let port = c.epsv_port();
    let r = c.cmd("RETR big.bin");
    assert_eq!(r.code, 150, "{r:?}");
    reset_data(port, 0, 100_000);
    let r = c.read();
    assert_eq!(
        r.code,
        426,
        "a reset RETR must end with 426: {r:?}\n{}",
        gate.logs()
    );
    assert_eq!(c.cmd("NOOP").code, 200);
    let (r, got) = c.retr("big.bin");
    assert_eq!(r.code, 226);
    assert_eq!(sha(&got), sha(&data), "the file must be untouched");
}
