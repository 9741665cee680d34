//! End-to-end: lftp against the real binary. `mirror -R` a tree with nested
//! directories, empty and multi-MiB files and awkward names up, `mirror` it back
//! down, compare with `diff -r` and SHA-256; `pget -n 4` segmented download.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{payload, run_for, sha, sha_file, tail, tree_hashes, Gate, Opts, PASS, USER};

const SETTINGS: &str = "set ftp:ssl-allow no; set net:max-retries 1; set net:timeout 10; \
     set net:reconnect-interval-base 1; set cmd:fail-exit yes; set xfer:clobber on; ";

/// Runs an lftp script against the gate with a private HOME (no user rc files).
fn lftp(gate: &Gate, home: &Path, script: &str) -> (String, String) {
    let mut cmd = Command::new("lftp");
    cmd.arg("-u")
        .arg(format!("{USER},{PASS}"))
        .arg("-p")
        .arg(gate.port().to_string())
        .arg("-e")
        .arg(format!("{SETTINGS}{script}; quit"))
        .arg("127.0.0.1")
        .env("HOME", home)
        .env("LC_ALL", "C.UTF-8");
    common::no_proxy(&mut cmd);
    let (code, out, err) = run_for(&mut cmd, Duration::from_secs(45));
    assert!(
        code == Some(0),
        "lftp script {} (exit {code:?}): {script}\nstdout:\n{out}\nstderr:\n{err}\n--- server log (tail) ---\n{}",
        if code.is_none() { "timed out after 45 s" } else { "failed" },
        tail(&gate.logs(), 80)
    );
    (out, err)
}

/// Builds ~30 files in nested directories; returns relative path → SHA-256.
fn make_tree(root: &Path) -> BTreeMap<String, String> {
    let mib = 1024 * 1024;
    let files: Vec<(&str, usize)> = vec![
        ("empty.txt", 0),
        ("one.txt", 1),
        ("small.txt", 100),
        ("block.bin", 4096),
        ("odd.bin", 65_537),
        ("one mib.bin", mib),
        ("three mib.bin", 3 * mib + 5),
        ("with space.txt", 1234),
        ("ü日本.txt", 2345),
        ("hash#1.txt", 345),
        ("pct%41.txt", 456),
        ("mixed ü #%20 日.bin", 100_003),
        ("a/empty", 0),
        ("a/file.txt", 10_000),
        ("a/ü.txt", 20_000),
        ("a/b/deep.bin", 200_000),
        ("a/b/c/deeper.bin", 2 * mib),
        ("a/b/c/d/deepest.txt", 77),
        ("dir with space/x y.txt", 5000),
        ("dir with space/z.txt", 0),
        ("日本 dir/テスト.txt", 3333),
        ("日本 dir/#% mix/f#1.txt", 4444),
        ("日本 dir/#% mix/f%2.txt", 5555),
        ("many/f01", 11),
        ("many/f02", 22),
        ("many/f03", 33),
        ("many/f04", 44),
        ("many/f05", 55),
        ("many/f06", 66_000),
        ("many/f07", 0),
        ("many/big", 5 * mib / 2),
    ];
    let mut map = BTreeMap::new();
    for (i, (rel, len)) in files.iter().enumerate() {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let data = payload(*len, 1000 + i as u64);
        std::fs::write(&p, &data).unwrap();
        map.insert(rel.to_string(), sha(&data));
    }
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    map
}

fn diff_r(a: &Path, b: &Path) {
    let (ok, out, err) = common::run(Command::new("diff").arg("-r").arg(a).arg(b));
    assert!(
        ok,
        "diff -r {} {} differs:\n{out}{err}",
        a.display(),
        b.display()
    );
}

fn mirror_round_trip(gate: &Gate, local: bool) {
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("src");
    let back = home.path().join("back");
    let expected = make_tree(&src);
    assert!(expected.len() >= 30);

    lftp(
        gate,
        home.path(),
        &format!("mirror -R --no-perms \"{}\" \"/up tree ü\"", src.display()),
    );
    if local {
        let on_disk = tree_hashes(&gate.root().join("up tree ü"));
        assert_eq!(
            on_disk, expected,
            "server disk differs from the source tree"
        );
        assert!(gate.root().join("up tree ü/empty dir").is_dir());
        assert!(!format!("{on_disk:?}").contains(".ftpgate-tmp-"));
    }
    let (out, _) = lftp(gate, home.path(), "cls -1 \"/up tree ü/日本 dir/#% mix\"");
    let mut names: Vec<&str> = out.lines().map(|l| l.rsplit('/').next().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["f#1.txt", "f%2.txt"], "{out}");

    lftp(
        gate,
        home.path(),
        &format!("mirror --no-perms \"/up tree ü\" \"{}\"", back.display()),
    );
    diff_r(&src, &back);
    assert_eq!(tree_hashes(&back), expected);
    assert!(
        back.join("empty dir").is_dir(),
        "empty directories are mirrored too"
    );

    // A second mirror -R finds nothing to do and changes nothing.
    lftp(
        gate,
        home.path(),
        &format!("mirror -R --no-perms \"{}\" \"/up tree ü\"", src.display()),
    );
    let again = home.path().join("again");
    lftp(
        gate,
        home.path(),
        &format!("mirror --no-perms \"/up tree ü\" \"{}\"", again.display()),
    );
    diff_r(&src, &again);
}

#[test]
fn lftp_mirror_round_trip_local() {
    if !common::require("lftp") {
        return;
    }
    let gate = Gate::start();
    mirror_round_trip(&gate, true);
}

#[test]
fn lftp_mirror_round_trip_memory() {
    if !common::require("lftp") {
        return;
    }
    let gate = Gate::start_with(Opts {
        storage: "memory",
        ..Default::default()
    });
    mirror_round_trip(&gate, false);
    pget(&gate);
}

fn pget(gate: &Gate) {
    let home = tempfile::tempdir().unwrap();
    let data = payload(12 * 1024 * 1024 + 321, 7);
    let src = home.path().join("big src.bin");
    std::fs::write(&src, &data).unwrap();
    lftp(
        gate,
        home.path(),
        &format!("put \"{}\" -o \"/pget ü#.bin\"", src.display()),
    );
    let dst = home.path().join("pget out.bin");
    let started = Instant::now();
    lftp(
        gate,
        home.path(),
        // The rate limit keeps the first connection from fetching everything
        // before the other three have logged in, so the segments really run.
        &format!(
            "set pget:min-chunk-size 1M; set net:limit-rate 4M; pget -n 4 \"/pget ü#.bin\" -o \"{}\"",
            dst.display()
        ),
    );
    let took = started.elapsed();
    assert_eq!(sha_file(&dst), sha(&data));
    // Each segment ends with lftp sending ABOR (Telnet IP + Synch as TCP urgent
    // data); if a reply never comes lftp waits net:timeout (10 s) and reconnects.
    // A normal run takes about a second.
    let logs = gate.logs();
    assert!(
        took < Duration::from_secs(8),
        "pget -n 4 took {took:?}: lftp stalled, most likely waiting for a reply to ABOR\n{}",
        logs.lines()
            .filter(|l| l.contains("ABOR")
                || l.contains("verb=\"R")
                || l.contains("code=2")
                || l.contains("code=4"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Four segments mean ranged reads: RETR after REST at non-zero offsets.
    let rests = logs.lines().filter(|l| l.contains("verb=\"REST\"")).count();
    // lftp opens up to three extra connections and drops those it no longer needs.
    assert!(
        rests >= 2,
        "pget -n 4 should fetch segments with REST + RETR; saw {rests} REST"
    );
}

#[test]
fn lftp_pget_segmented_local() {
    if !common::require("lftp") {
        return;
    }
    let gate = Gate::start();
    pget(&gate);
}
