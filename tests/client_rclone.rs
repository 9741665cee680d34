//! End-to-end: rclone's FTP backend against the real binary: copy a tree up,
//! `check --download`, `lsf -R`, `size`, copy back down with SHA-256 comparison,
//! detect a changed file, `moveto`, `purge`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{payload, run_for, sha, sha_file, tail, tree_hashes, Gate, Opts, PASS, USER};

struct Rclone<'a> {
    gate: &'a Gate,
    home: tempfile::TempDir,
    remote: String,
}

impl<'a> Rclone<'a> {
    fn new(gate: &'a Gate) -> Self {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("rclone.conf"), "").unwrap();
        let (ok, out, err) = common::run(
            Command::new("rclone")
                .args(["obscure", PASS])
                .env("HOME", home.path()),
        );
        assert!(ok, "rclone obscure: {err}");
        let obscured = out.trim().to_owned();
        assert!(!obscured.is_empty() && !obscured.contains([',', ':', '"']));
        let remote = format!(
            ":ftp,host=127.0.0.1,port={},user={USER},pass={obscured}:",
            gate.port()
        );
        Rclone { gate, home, remote }
    }

    fn path(&self, p: &str) -> String {
        format!("{}{p}", self.remote)
    }

    /// Runs rclone; returns (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let mut cmd = Command::new("rclone");
        cmd.arg("--config")
            .arg(self.home.path().join("rclone.conf"))
            .args([
                "--low-level-retries",
                "1",
                "--retries",
                "1",
                "--timeout",
                "10s",
                "--contimeout",
                "5s",
            ])
            .args(args)
            .env("HOME", self.home.path())
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("RCLONE_CONFIG");
        run_for(&mut cmd, Duration::from_secs(45))
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(
            code,
            Some(0),
            "rclone {args:?} failed (None = timed out):\n{out}\n{err}\n--- server log (tail) ---\n{}",
            tail(&self.gate.logs(), 60)
        );
        out
    }
}

/// Builds a local tree; returns relative path → SHA-256 and the directories.
fn make_tree(root: &Path) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mib = 1024 * 1024;
    let files: Vec<(&str, usize)> = vec![
        ("empty.txt", 0),
        ("small.txt", 17),
        ("odd.bin", 65_537),
        ("two mib.bin", 2 * mib + 3),
        ("with space.txt", 1000),
        ("ü日本.txt", 2000),
        ("hash#1.txt", 300),
        ("pct%41.txt", 400),
        ("mixed ü #%20 日.bin", 50_000),
        ("a/inner.txt", 5000),
        ("a/b/deep.bin", 300_000),
        ("a/b/c/zero", 0),
        ("dir with space/x y.txt", 6000),
        ("日本 dir/#% mix/f#1.txt", 7000),
        ("日本 dir/#% mix/f%2.txt", 8000),
    ];
    let mut map = BTreeMap::new();
    let mut dirs = BTreeSet::new();
    for (i, (rel, len)) in files.iter().enumerate() {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let data = payload(*len, 300 + i as u64);
        std::fs::write(&p, &data).unwrap();
        map.insert(rel.to_string(), sha(&data));
        let mut d = Path::new(rel).parent();
        while let Some(x) = d {
            if !x.as_os_str().is_empty() {
                dirs.insert(format!("{}/", x.to_str().unwrap()));
            }
            d = x.parent();
        }
    }
    (map, dirs)
}

fn round_trip(gate: &Gate, local: bool) {
    let rc = Rclone::new(gate);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let (expected, dirs) = make_tree(&src);
    let src_s = src.to_str().unwrap();
    let dest = rc.path("dest ü");

    rc.ok(&["copy", src_s, &dest]);
    if local {
        assert_eq!(
            tree_hashes(&gate.root().join("dest ü")),
            expected,
            "server disk differs"
        );
    }

    // check --download compares the content byte for byte.
    let (code, out, err) = rc.run(&["check", src_s, &dest, "--download"]);
    assert_eq!(
        code,
        Some(0),
        "rclone check failed:\n{out}\n{err}\n{}",
        tail(&gate.logs(), 60)
    );
    assert!(err.contains("0 differences found"), "{err}");

    // lsf -R lists every file and directory.
    let out = rc.ok(&["lsf", "-R", &dest]);
    let got: BTreeSet<String> = out.lines().map(str::to_owned).collect();
    let want: BTreeSet<String> = expected
        .keys()
        .cloned()
        .chain(dirs.iter().cloned())
        .collect();
    assert_eq!(got, want);

    // size agrees with the source.
    let out = rc.ok(&["size", "--json", &dest]);
    let total: u64 = walk_len(&src);
    assert!(
        out.contains(&format!("\"count\":{}", expected.len())),
        "{out}"
    );
    assert!(out.contains(&format!("\"bytes\":{total}")), "{out}");

    // Copy back down and compare.
    let back = work.path().join("back");
    rc.ok(&["copy", &dest, back.to_str().unwrap()]);
    assert_eq!(tree_hashes(&back), expected);

    // A changed file on the server (same size) is found by check --download.
    let mut c = gate.login();
    let changed = payload(2000, 9999);
    let (_, fin) = c.store("STOR /dest ü/ü日本.txt", &changed);
    assert_eq!(fin.code, 226);
    let (code, _, err) = rc.run(&["check", src_s, &dest, "--download"]);
    assert_eq!(code, Some(1), "check must report the difference:\n{err}");
    assert!(err.contains("1 differences found"), "{err}");

    // moveto renames on the server (RNFR/RNTO).
    rc.ok(&[
        "moveto",
        &rc.path("dest ü/hash#1.txt"),
        &rc.path("dest ü/a/moved #1 ü.txt"),
    ]);
    assert_eq!(c.cmd("SIZE /dest ü/hash#1.txt").code, 550);
    let r = c.cmd("SIZE /dest ü/a/moved #1 ü.txt");
    assert_eq!((r.code, r.text.trim_end()), (213, "213 300"));
    if local {
        assert_eq!(
            sha_file(&gate.root().join("dest ü/a/moved #1 ü.txt")),
            expected["hash#1.txt"]
        );
    }

    // purge removes the whole tree.
    rc.ok(&["purge", &dest]);
    assert_eq!(c.cmd("CWD /dest ü").code, 550);
    if local {
        assert!(!gate.root().join("dest ü").exists());
    }
}

fn walk_len(root: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                n += e.metadata().unwrap().len();
            }
        }
    }
    n
}

#[test]
fn rclone_round_trip_local() {
    if !common::require("rclone") {
        return;
    }
    let gate = Gate::start();
    round_trip(&gate, true);
}

#[test]
fn rclone_round_trip_memory() {
    if !common::require("rclone") {
        return;
    }
    let gate = Gate::start_with(Opts {
        storage: "memory",
        ..Default::default()
    });
    round_trip(&gate, false);
}

#[test]
fn rclone_preserves_modification_times() {
    if !common::require("rclone") {
        return;
    }
    let gate = Gate::start();
    let rc = Rclone::new(&gate);
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("old.txt");
    std::fs::write(&f, b"old content").unwrap();
    // 2001-09-09T01:46:40Z
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(when)
        .unwrap();
    rc.ok(&["copy", work.path().to_str().unwrap(), &rc.path("mt")]);
    let mut c = gate.login();
    let r = c.cmd("MDTM /mt/old.txt");
    assert_eq!(
        r.text.trim_end(),
        "213 20010909014640",
        "rclone sets the time with MFMT"
    );
    let out = rc.ok(&["lsl", &rc.path("mt")]);
    assert!(out.contains("2001-09-09"), "{out}");
}
