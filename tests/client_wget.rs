//! End-to-end: GNU wget against the real binary. `wget -m` mirrors a tree (wget
//! parses the LIST output to recurse), single files download in passive and
//! active mode, and a missing file is an error.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{payload, run_for, sha, sha_file, tail, tree_hashes, Ctl, Gate, Opts, PASS, USER};

/// Runs wget without user configuration or proxies; returns (exit code, log).
fn wget(home: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new("wget");
    cmd.args([
        "--no-config",
        "--no-proxy",
        "--tries=1",
        "--timeout=10",
        "--no-verbose",
    ])
    .arg(format!("--user={USER}"))
    .arg(format!("--password={PASS}"))
    .args(args)
    .env("HOME", home)
    .env("LC_ALL", "C.UTF-8");
    common::no_proxy(&mut cmd);
    let (code, out, err) = run_for(&mut cmd, Duration::from_secs(45));
    (code, format!("{out}{err}"))
}

fn wget_ok(gate: &Gate, home: &Path, args: &[&str]) -> String {
    let (code, log) = wget(home, args);
    assert_eq!(
        code,
        Some(0),
        "wget {args:?} failed (None = timed out):\n{log}\n--- server log (tail) ---\n{}",
        tail(&gate.logs(), 60)
    );
    log
}

/// Uploads a tree through FTP (works for every backend); returns path → SHA-256
/// relative to `base`.
fn upload_tree(c: &mut Ctl, base: &str) -> BTreeMap<String, String> {
    let mib = 1024 * 1024;
    let files: Vec<(&str, usize)> = vec![
        ("empty.txt", 0),
        ("small.txt", 10),
        ("block.bin", 4096),
        ("one mib.bin", mib + 1),
        ("two mib.bin", 2 * mib),
        ("with space.txt", 300),
        ("ü日本.txt", 400),
        ("hash#1.txt", 500),
        // wget unescapes %XX in remote names when it saves them ("%41" → "A").
        ("100% done.txt", 600),
        ("a/inner.txt", 1000),
        ("a/b/deep.bin", 70_000),
        ("a/b/c/deeper.txt", 0),
        ("dir with space/x.txt", 2000),
        ("日本/ü.bin", 3000),
    ];
    assert_eq!(c.cmd(&format!("MKD {base}")).code, 257);
    let mut map = BTreeMap::new();
    for (i, (rel, len)) in files.iter().enumerate() {
        let mut dir = String::from(base);
        let parts: Vec<&str> = rel.split('/').collect();
        for d in &parts[..parts.len() - 1] {
            dir = format!("{dir}/{d}");
            let r = c.cmd(&format!("MKD {dir}"));
            assert!(r.code == 257 || r.code == 550, "{r:?}");
        }
        let data = payload(*len, 500 + i as u64);
        let (pre, fin) = c.store(&format!("STOR {base}/{rel}"), &data);
        assert_eq!((pre.code, fin.code), (150, 226), "{rel}: {pre:?} {fin:?}");
        map.insert(rel.to_string(), sha(&data));
    }
    map
}

fn mirror(gate: &Gate) {
    let mut c = gate.login();
    let expected = upload_tree(&mut c, "/site");
    let home = tempfile::tempdir().unwrap();
    let dest = home.path().join("dest");
    let url = format!("ftp://127.0.0.1:{}/site/", gate.port());
    wget_ok(
        gate,
        home.path(),
        &[
            "-m",
            "-nH",
            "--restrict-file-names=nocontrol",
            "-P",
            dest.to_str().unwrap(),
            &url,
        ],
    );
    let got = tree_hashes(&dest.join("site"));
    assert_eq!(got, expected, "wget -m result differs from the server tree");
    assert!(
        dest.join("site/.listing").is_file(),
        "wget -m keeps its LIST output"
    );
}

#[test]
fn wget_mirror_local() {
    if !common::require("wget") {
        return;
    }
    let gate = Gate::start();
    mirror(&gate);
    // What wget mirrored is also what is on disk.
    let disk = tree_hashes(&gate.root().join("site"));
    assert_eq!(disk.len(), 14);
}

#[test]
fn wget_mirror_memory() {
    if !common::require("wget") {
        return;
    }
    let gate = Gate::start_with(Opts {
        storage: "memory",
        ..Default::default()
    });
    mirror(&gate);
    single_files(&gate);
}

fn single_files(gate: &Gate) {
    let home = tempfile::tempdir().unwrap();
    let data = payload(3 * 1024 * 1024 + 11, 77);
    let mut c = gate.login();
    let (_, fin) = c.store("STOR /single file.bin", &data);
    assert_eq!(fin.code, 226);

    // Passive (wget's default), credentials from the options.
    let out = home.path().join("passive.bin");
    let url = format!("ftp://127.0.0.1:{}/single%20file.bin", gate.port());
    wget_ok(gate, home.path(), &["-O", out.to_str().unwrap(), &url]);
    assert_eq!(sha_file(&out), sha(&data));

    // Active mode: wget listens on the control connection's address (127.0.0.1).
    let out = home.path().join("active.bin");
    wget_ok(
        gate,
        home.path(),
        &["--no-passive-ftp", "-O", out.to_str().unwrap(), &url],
    );
    assert_eq!(sha_file(&out), sha(&data));
    gate.wait_logs("PORT or EPRT from wget --no-passive-ftp", |logs| {
        logs.contains("verb=\"PORT\"") || logs.contains("verb=\"EPRT\"")
    });

    // Credentials in the URL, password percent-encoded.
    let out = home.path().join("url-creds.bin");
    let (code, log) = {
        let mut cmd = Command::new("wget");
        cmd.args([
            "--no-config",
            "--no-proxy",
            "--tries=1",
            "--timeout=10",
            "-O",
            out.to_str().unwrap(),
        ])
        .arg(format!("{}/single%20file.bin", gate.url()))
        .env("HOME", home.path());
        let (code, o, e) = run_for(&mut cmd, Duration::from_secs(45));
        (code, format!("{o}{e}"))
    };
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(sha_file(&out), sha(&data));

    // A missing file: exit status 8 ("server issued an error response").
    let (code, log) = wget(
        home.path(),
        &[
            "-O",
            home.path().join("missing").to_str().unwrap(),
            &format!("ftp://127.0.0.1:{}/nothing.bin", gate.port()),
        ],
    );
    assert_eq!(code, Some(8), "{log}");
    // A wrong password: wget gives up with 6 (authentication failure).
    let mut cmd = Command::new("wget");
    cmd.args([
        "--no-config",
        "--no-proxy",
        "--tries=1",
        "--timeout=10",
        "-O",
        "/dev/null",
    ])
    .arg(format!(
        "ftp://{USER}:wrong@127.0.0.1:{}/single%20file.bin",
        gate.port()
    ))
    .env("HOME", home.path());
    let (code, o, e) = run_for(&mut cmd, Duration::from_secs(45));
    assert_eq!(code, Some(6), "{o}{e}");
}

#[test]
fn wget_single_files_local() {
    if !common::require("wget") {
        return;
    }
    let gate = Gate::start();
    single_files(&gate);
    assert!(gate.root().join("single file.bin").is_file());
}
