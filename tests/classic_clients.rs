//! The classic scripted clients of decades-old cron jobs: inetutils `ftp` and `tnftp`
//! driven by here-documents (user, binary, put, get, mput/mget without prompting,
//! mdelete, ls, dir; passive and active), and `ncftpput`/`ncftpget` (`-R`, `-S .tmp`).
//! These scripts look at exit codes only, so every effect is read back (disk, or the
//! local copy) and compared by SHA-256, and exit codes are asserted.
//!
//! Both inetutils-ftp and tnftp provide `ftp` through Debian's alternatives; they are
//! called by their real binary names.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{payload, sha, sha_file, tree_hashes, Gate, Opts};

/// A user whose password needs no quoting in an `ftp` script.
const CUSER: &str = "cron";
const CPASS: &str = "cronpw42";

fn gate() -> Gate {
    Gate::start_with(Opts {
        users: vec![(
            CUSER.into(),
            CPASS.into(),
            "/".into(),
            "[\"list\", \"read\", \"write\", \"delete\", \"mkdir\", \"rename\"]".into(),
        )],
        ..Opts::default()
    })
}

/// Runs `prog args` in `cwd` with `script` on stdin; returns (exit code, stdout+stderr).
fn script(prog: &str, args: &[String], cwd: &Path, script: &str) -> (i32, String) {
    let mut child = Command::new(prog)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {prog}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// One here-document session per mode: put/get/mput/mget/mdelete/ls/dir, each checked.
fn here_document_client(prog: &str, base_args: &[&str], passive_cmd: &str, g: &Gate, tag: &str) {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let one = payload(300_000, 1);
    let a = payload(1234, 2);
    let b = payload(70_000, 3);
    std::fs::write(w.join("one.bin"), &one).unwrap();
    std::fs::write(w.join("a.dat"), &a).unwrap();
    std::fs::write(w.join("b.dat"), &b).unwrap();
    let remote = format!("in-{tag}");
    std::fs::create_dir_all(g.root().join(&remote)).unwrap();
    std::fs::create_dir_all(w.join("back")).unwrap();
    let mut args: Vec<String> = base_args.iter().map(|s| s.to_string()).collect();
    args.push("127.0.0.1".into());
    args.push(g.port().to_string());
    let text = format!(
        "user {CUSER} {CPASS}\n\
         binary\n\
         {passive_cmd}\n\
         cd {remote}\n\
         put one.bin\n\
         put one.bin copy.bin\n\
         mput a.dat b.dat\n\
         ls\n\
         dir\n\
         lcd back\n\
         get one.bin\n\
         mget *.dat\n\
         mdelete *.dat\n\
         delete copy.bin\n\
         ls\n\
         bye\n"
    );
    let (code, out) = script(prog, &args, w, &text);
    assert_eq!(
        code,
        0,
        "{prog} ({tag}) exit code:\n{out}\n{}",
        common::tail(&g.logs(), 40)
    );
    // put: on disk byte for byte; mput/mdelete/delete: the .dat files and copy came
    // and went.
    let dir = g.root().join(&remote);
    assert_eq!(sha_file(&dir.join("one.bin")), sha(&one), "{out}");
    assert!(
        !dir.join("a.dat").exists() && !dir.join("b.dat").exists(),
        "{out}"
    );
    assert!(!dir.join("copy.bin").exists(), "{out}");
    // get/mget: the local copies.
    let back = w.join("back");
    assert_eq!(sha_file(&back.join("one.bin")), sha(&one), "{out}");
    assert_eq!(sha_file(&back.join("a.dat")), sha(&a), "{out}");
    assert_eq!(sha_file(&back.join("b.dat")), sha(&b), "{out}");
    // ls / dir printed the names (dir in `ls -l` form).
    assert!(out.contains("a.dat") && out.contains("copy.bin"), "{out}");
    assert!(
        out.contains("-rw-r--r--"),
        "dir output lacks ls -l lines:\n{out}"
    );
    // The server saw the transfers in the requested mode.
    let verbs: &[&str] = if passive_cmd.contains("off") || base_args.contains(&"-A") {
        &["PORT", "EPRT"]
    } else {
        &["PASV", "EPSV"]
    };
    g.wait_logs(&format!("{tag}: any of {verbs:?}"), |logs| {
        verbs
            .iter()
            .any(|v| logs.contains(&format!("verb=\"{v}\"")) || logs.contains(&format!("verb={v}")))
    });
}

#[test]
fn inetutils_ftp_passive_and_active() {
    if !common::require("inetutils-ftp") {
        return;
    }
    let g = gate();
    here_document_client("inetutils-ftp", &["-n", "-i", "-p"], "", &g, "inet-pasv");
    let g = gate();
    here_document_client("inetutils-ftp", &["-n", "-i", "-A"], "", &g, "inet-port");
}

#[test]
fn tnftp_passive_and_active() {
    if !common::require("tnftp") {
        return;
    }
    let g = gate();
    here_document_client("tnftp", &["-n", "-i"], "passive on", &g, "tn-pasv");
    let g = gate();
    here_document_client("tnftp", &["-n", "-i"], "passive off", &g, "tn-port");
}

#[test]
fn ncftpput_and_ncftpget_recursive_with_temp_names() {
    if !common::require("ncftpput") || !common::require("ncftpget") {
        return;
    }
    let g = gate();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("tree");
    for (rel, seed, len) in [
        ("x.bin", 1, 10_000),
        ("sub/y.bin", 2, 200_000),
        ("sub/deeper/z z.txt", 3, 17),
    ] {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, payload(len, seed)).unwrap();
    }
    std::fs::create_dir_all(g.root().join("up")).unwrap();
    let common_args = |c: &mut Command| {
        c.args(["-u", CUSER, "-p", CPASS, "-P"])
            .arg(g.port().to_string());
    };
    for (flag, dest) in [("-F", "up-pasv"), ("-E", "up-port")] {
        std::fs::create_dir_all(g.root().join(dest)).unwrap();
        let mut c = Command::new("ncftpput");
        common_args(&mut c);
        c.args([flag, "-R", "-S", ".tmp", "127.0.0.1", dest])
            .arg(&src);
        let (ok, out, err) = common::run(&mut c);
        assert!(
            ok,
            "ncftpput {flag}: {out}{err}\n{}",
            common::tail(&g.logs(), 30)
        );
        assert_eq!(
            tree_hashes(&g.root().join(dest).join("tree")),
            tree_hashes(&src),
            "ncftpput {flag}"
        );
        // -S .tmp: uploaded under a temporary name, then renamed.
        g.wait_log(".tmp"); // uploaded under a temporary name
        let back = work.path().join(format!("back{flag}"));
        std::fs::create_dir_all(&back).unwrap();
        let mut c = Command::new("ncftpget");
        common_args(&mut c);
        c.args([flag, "-R", "127.0.0.1"])
            .arg(&back)
            .arg(format!("/{dest}/tree"));
        let (ok, out, err) = common::run(&mut c);
        assert!(ok, "ncftpget {flag}: {out}{err}");
        assert_eq!(
            tree_hashes(&back.join("tree")),
            tree_hashes(&src),
            "ncftpget {flag}"
        );
    }
    // Exit codes: a missing file is a non-zero exit (ncftp: 3, transfer failed).
    let mut c = Command::new("ncftpget");
    common_args(&mut c);
    c.args(["127.0.0.1"]).arg(work.path()).arg("/missing.bin");
    let out = c.output().unwrap();
    assert_ne!(
        out.status.code(),
        Some(0),
        "ncftpget of a missing file exited 0"
    );
    // A wrong password as well.
    let out = Command::new("ncftpput")
        .args(["-u", CUSER, "-p", "wrong", "-P"])
        .arg(g.port().to_string())
        .args(["127.0.0.1", "up"])
        .arg(src.join("x.bin"))
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(0),
        "ncftpput with a wrong password exited 0"
    );
}
