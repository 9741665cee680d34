//! End-to-end: curl against the real binary. Listing, upload/download with
//! SHA-256 checks, resumed downloads and uploads, --ftp-create-dirs, active mode
//! (EPRT and PORT), EPSV and PASV, quote commands, special names, exit codes.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{payload, sha, sha_file, tail, Gate, Opts};

/// Percent-encodes a path for an FTP URL, keeping `/` and RFC 3986 unreserved bytes.
fn enc(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn url(gate: &Gate, path: &str) -> String {
    format!("{}{}", gate.url(), enc(path))
}

/// Runs curl with a clean environment (no ~/.curlrc, no proxies) and verbose
/// output on stderr so tests can see which commands were sent.
fn curl(args: &[&str]) -> Output {
    let mut cmd = Command::new("curl");
    cmd.arg("-q")
        .args([
            "-sS",
            "-v",
            "--noproxy",
            "*",
            "--max-time",
            "30",
            "--connect-timeout",
            "5",
        ])
        .args(args);
    common::no_proxy(&mut cmd);
    cmd.output().expect("spawn curl")
}

/// curl must succeed; returns (stdout, stderr).
fn curl_ok(gate: &Gate, args: &[&str]) -> (Vec<u8>, String) {
    let out = curl(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "curl {args:?} failed with {:?}\n{err}\n--- server log (tail) ---\n{}",
        out.status.code(),
        tail(&gate.logs(), 60)
    );
    (out.stdout, err)
}

/// Commands curl sent, from its -v output (`> CMD args`).
fn sent(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("> "))
        .map(str::to_owned)
        .collect()
}

fn sent_verb(stderr: &str, verb: &str) -> bool {
    sent(stderr)
        .iter()
        .any(|c| c == verb || c.starts_with(&format!("{verb} ")))
}

fn write(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p.to_str().unwrap().to_owned()
}

/// Reads a file through a raw control connection (works for every backend).
fn server_sha(gate: &Gate, path: &str) -> String {
    let mut c = gate.login();
    let (r, data) = c.retr(path);
    assert_eq!(r.code, 226, "RETR {path}: {r:?}");
    sha(&data)
}

fn server_missing(gate: &Gate, path: &str) -> bool {
    gate.login().cmd(&format!("SIZE {path}")).code == 550
}

/// Upload, download, listings, quote commands and the exit code for a missing
/// file; run on both backends.
fn basic(gate: &Gate, local: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(3 * 1024 * 1024 + 17, 1);
    let src = write(tmp.path(), "src.bin", &data);

    // Upload into the home directory and download back.
    curl_ok(gate, &["-T", &src, &url(gate, "/file.bin")]);
    if local {
        assert_eq!(sha_file(&gate.root().join("file.bin")), sha(&data));
    }
    let dst = tmp.path().join("dst.bin");
    let (_, err) = curl_ok(
        gate,
        &["-o", dst.to_str().unwrap(), &url(gate, "/file.bin")],
    );
    assert_eq!(sha_file(&dst), sha(&data));
    assert!(sent_verb(&err, "EPSV"), "curl uses EPSV by default:\n{err}");
    assert!(sent_verb(&err, "TYPE I"), "{err}");
    // Zero-byte file.
    let empty = write(tmp.path(), "empty", b"");
    curl_ok(gate, &["-T", &empty, &url(gate, "/empty")]);
    let (out, _) = curl_ok(gate, &[&url(gate, "/empty")]);
    assert!(out.is_empty());

    // Directory listing (LIST) and name-only listing (NLST).
    let (out, err) = curl_ok(gate, &[&url(gate, "/")]);
    let listing = String::from_utf8(out).unwrap();
    assert!(sent_verb(&err, "LIST"), "{err}");
    let line = listing
        .lines()
        .find(|l| l.ends_with(" file.bin"))
        .unwrap_or_else(|| panic!("no file.bin in\n{listing}"));
    assert!(
        line.starts_with('-') && line.contains(&data.len().to_string()),
        "{line}"
    );
    let (out, err) = curl_ok(gate, &["--list-only", &url(gate, "/")]);
    assert!(sent_verb(&err, "NLST"), "{err}");
    let mut names: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    assert_eq!(names, ["empty", "file.bin"]);

    // Quote commands: before the transfer (DELE) and after it (-DELE).
    curl_ok(
        gate,
        &["-T", &src, &url(gate, "/sub/a.bin"), "--ftp-create-dirs"],
    );
    curl_ok(gate, &["-T", &src, &url(gate, "/sub/b c.bin")]);
    let (out, err) = curl_ok(
        gate,
        &[
            "-Q",
            "DELE /sub/a.bin",
            "-Q",
            "-DELE /sub/b c.bin",
            &url(gate, "/sub/"),
        ],
    );
    let listing = String::from_utf8(out).unwrap();
    assert!(sent(&err).contains(&"DELE /sub/a.bin".to_owned()), "{err}");
    assert!(
        !listing.contains("a.bin"),
        "DELE before the listing:\n{listing}"
    );
    assert!(
        listing.contains("b c.bin"),
        "-DELE runs after the listing:\n{listing}"
    );
    assert!(server_missing(gate, "/sub/a.bin"));
    assert!(server_missing(gate, "/sub/b c.bin"));
    if local {
        assert!(!gate.root().join("sub/a.bin").exists());
        assert!(!gate.root().join("sub/b c.bin").exists());
    }
    // A failing quote command fails curl (exit 21, CURLE_QUOTE_ERROR).
    let out = curl(&["-Q", "DELE /sub/nothing-here", &url(gate, "/sub/")]);
    assert_eq!(
        out.status.code(),
        Some(21),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A missing file: RETR 550 is curl exit code 78 (CURLE_REMOTE_FILE_NOT_FOUND).
    let out = curl(&[
        "-o",
        tmp.path().join("none").to_str().unwrap(),
        &url(gate, "/no such file.bin"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("< 550"), "{err}");
    // The same in a missing directory (CWD 550 → 9, CURLE_REMOTE_ACCESS_DENIED).
    let out = curl(&[&url(gate, "/missing-dir/x.bin")]);
    assert_eq!(
        out.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn curl_basic_local() {
    if !common::require("curl") {
        return;
    }
    let gate = Gate::start();
    basic(&gate, true);
}

#[test]
fn curl_basic_memory() {
    if !common::require("curl") {
        return;
    }
    let gate = Gate::start_with(Opts {
        storage: "memory",
        ..Default::default()
    });
    basic(&gate, false);
    special_names(&gate, false);
    resume(&gate, false);
}

/// Names with spaces, unicode, `#` and `%` in new nested directories.
fn special_names(gate: &Gate, local: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let names = [
        "with space.txt",
        "ü日本.txt",
        "hash#1.txt",
        "pct%41.txt",
        "all of ü #%20.bin",
    ];
    for (i, name) in names.iter().enumerate() {
        let data = payload(10_000 + i * 777, 10 + i as u64);
        let src = write(tmp.path(), "upload", &data);
        let remote = format!("/new dir ü/#2 %x/{name}");
        let (_, err) = curl_ok(
            gate,
            &["--ftp-create-dirs", "-T", &src, &url(gate, &remote)],
        );
        if i == 0 {
            assert!(
                sent_verb(&err, "MKD"),
                "--ftp-create-dirs creates the directories:\n{err}"
            );
        }
        if local {
            assert_eq!(
                sha_file(&gate.root().join(remote.trim_start_matches('/'))),
                sha(&data),
                "{remote}"
            );
        }
        let dst = tmp.path().join("download");
        curl_ok(gate, &["-o", dst.to_str().unwrap(), &url(gate, &remote)]);
        assert_eq!(sha_file(&dst), sha(&data), "{remote}");
        assert_eq!(server_sha(gate, &remote), sha(&data));
    }
    let (out, _) = curl_ok(gate, &["--list-only", &url(gate, "/new dir ü/#2 %x/")]);
    let mut got: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
    if local {
        let mut disk: Vec<String> = std::fs::read_dir(gate.root().join("new dir ü/#2 %x"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        disk.sort();
        assert_eq!(disk, want);
    }
}

#[test]
fn curl_special_names_and_create_dirs() {
    if !common::require("curl") {
        return;
    }
    let gate = Gate::start();
    special_names(&gate, true);
}

/// `-C -` for downloads (REST + RETR) and uploads (SIZE + APPE or REST + STOR).
fn resume(gate: &Gate, local: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(4 * 1024 * 1024 + 3, 2);
    let src = write(tmp.path(), "full.bin", &data);
    curl_ok(gate, &["-T", &src, &url(gate, "/resume dl.bin")]);

    // Download resume: a partial local file is completed.
    let cut = 1_234_567;
    let part = write(tmp.path(), "partial.bin", &data[..cut]);
    let (_, err) = curl_ok(
        gate,
        &["-C", "-", "-o", &part, &url(gate, "/resume dl.bin")],
    );
    assert!(
        sent(&err).contains(&format!("REST {cut}")),
        "curl must restart at {cut}:\n{err}"
    );
    assert_eq!(sha_file(Path::new(&part)), sha(&data));

    // Upload resume: the server has the first part; curl sends the rest.
    let mut c = gate.login();
    let (pre, fin) = c.store("STOR /resume ul.bin", &data[..cut]);
    assert_eq!((pre.code, fin.code), (150, 226));
    let (_, err) = curl_ok(gate, &["-C", "-", "-T", &src, &url(gate, "/resume ul.bin")]);
    let cmds = sent(&err);
    assert!(
        cmds.iter().any(|c| c.starts_with("APPE ")) || cmds.contains(&format!("REST {cut}")),
        "curl resumed with neither APPE nor REST:\n{err}"
    );
    assert_eq!(server_sha(gate, "/resume ul.bin"), sha(&data));
    if local {
        assert_eq!(sha_file(&gate.root().join("resume ul.bin")), sha(&data));
    }
    // Resuming a complete download transfers nothing and keeps the file intact.
    let full = write(tmp.path(), "complete.bin", &data);
    let out = curl(&["-C", "-", "-o", &full, &url(gate, "/resume dl.bin")]);
    assert!(
        out.status.success() || out.status.code() == Some(36),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha_file(Path::new(&full)), sha(&data));
}

#[test]
fn curl_resume_local() {
    if !common::require("curl") {
        return;
    }
    let gate = Gate::start();
    resume(&gate, true);
}

#[test]
fn curl_active_mode() {
    if !common::require("curl") {
        return;
    }
    let gate = Gate::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(2 * 1024 * 1024 + 1, 3);
    let src = write(tmp.path(), "src.bin", &data);
    // EPRT first (curl's default for -P), then plain PORT with --disable-eprt.
    for (extra, verb, name) in [
        (None, "EPRT", "/active eprt.bin"),
        (Some("--disable-eprt"), "PORT", "/active port.bin"),
    ] {
        let mut args = vec!["-P", "127.0.0.1"];
        args.extend(extra);
        let mut up = args.clone();
        let u = url(&gate, name);
        up.extend(["-T", src.as_str(), u.as_str()]);
        let (_, err) = curl_ok(&gate, &up);
        assert!(sent_verb(&err, verb), "upload did not use {verb}:\n{err}");
        assert!(
            !sent_verb(&err, "EPSV") && !sent_verb(&err, "PASV"),
            "{err}"
        );
        assert_eq!(sha_file(&gate.root().join(&name[1..])), sha(&data));

        let dst = tmp.path().join("dst.bin");
        let mut down = args.clone();
        let d = dst.to_str().unwrap().to_owned();
        down.extend(["-o", d.as_str(), u.as_str()]);
        let (_, err) = curl_ok(&gate, &down);
        assert!(sent_verb(&err, verb), "download did not use {verb}:\n{err}");
        assert_eq!(sha_file(&dst), sha(&data));

        let mut list = args.clone();
        let root = url(&gate, "/");
        list.push(root.as_str());
        let (out, _) = curl_ok(&gate, &list);
        assert!(String::from_utf8(out).unwrap().contains(&name[1..]));
    }
}

#[test]
fn curl_passive_variants() {
    if !common::require("curl") {
        return;
    }
    let gate = Gate::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(1024 * 1024 + 9, 4);
    let src = write(tmp.path(), "src.bin", &data);
    for (flags, verb, not_verb) in [
        (&["--ftp-pasv"][..], "EPSV", "PASV"),
        (&["--ftp-pasv", "--disable-epsv"][..], "PASV", "EPSV"),
    ] {
        let name = format!("/{verb}.bin");
        let u = url(&gate, &name);
        let mut up: Vec<&str> = flags.to_vec();
        up.extend(["-T", src.as_str(), u.as_str()]);
        let (_, err) = curl_ok(&gate, &up);
        assert!(
            sent_verb(&err, verb) && !sent_verb(&err, not_verb),
            "expected {verb}:\n{err}"
        );
        assert_eq!(sha_file(&gate.root().join(&name[1..])), sha(&data));
        let dst = tmp.path().join("dst.bin");
        let d = dst.to_str().unwrap().to_owned();
        let mut down: Vec<&str> = flags.to_vec();
        down.extend(["-o", d.as_str(), u.as_str()]);
        let (_, err) = curl_ok(&gate, &down);
        assert!(
            sent_verb(&err, verb) && !sent_verb(&err, not_verb),
            "expected {verb}:\n{err}"
        );
        assert_eq!(sha_file(&dst), sha(&data));
    }
    // --ftp-skip-pasv-ip: curl connects to the control host whatever PASV says.
    let dst = tmp.path().join("skip.bin");
    curl_ok(
        &gate,
        &[
            "--disable-epsv",
            "--ftp-skip-pasv-ip",
            "-o",
            dst.to_str().unwrap(),
            &url(&gate, "/PASV.bin"),
        ],
    );
    assert_eq!(sha_file(&dst), sha(&data));
}

#[test]
fn curl_bad_password_is_exit_67() {
    if !common::require("curl") {
        return;
    }
    let gate = Gate::start();
    let out = curl(&[&format!("ftp://tester:wrong@{}/", gate.addr)]);
    // CURLE_LOGIN_DENIED
    assert_eq!(
        out.status.code(),
        Some(67),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
