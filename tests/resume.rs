//! Resumable uploads (issue 12 point 2) on local disk, end to end with real clients:
//! a 64 MiB upload is cut after ~40 % (data connection reset, RST), then continued by
//! `curl -C - -T`, `lftp put -c` and `wput`. The final file must hash as the source,
//! nothing partial may be visible to another session during or after the cut, no
//! pending upload may remain after completion, a plain STOR after a cut starts over,
//! and expired pending uploads are removed (while running and at start-up).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{payload, run_for, sha, sha_file, Ctl, Gate, Resp, PASS, USER};

const SIZE: usize = 64 * 1024 * 1024;
const CUT: usize = SIZE * 2 / 5;

/// The pending directory of the local backend (hidden, under the root).
fn pending_files(gate: &Gate) -> Vec<String> {
    match std::fs::read_dir(gate.root().join(".ftpgate-tmp-pending")) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Resets a data connection (SO_LINGER 0: RST, not FIN, so the server knows the
/// upload did not finish).
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

/// STOR `path`, sends `data[..cut]`, checks that a second session sees nothing of it
/// while the transfer is open, then resets the data connection. Returns the reply.
fn cut_upload(
    gate: &Gate,
    c: &mut Ctl,
    path: &str,
    data: &[u8],
    cut: usize,
    old: Option<&[u8]>,
) -> Resp {
    let mut s = c.epsv();
    let r = c.cmd(&format!("STOR {path}"));
    assert_eq!(r.code, 150, "{r:?}");
    s.write_all(&data[..cut]).unwrap();
    s.flush().unwrap();
    assert_invisible(gate, path, old);
    reset(s);
    let r = c.read();
    assert!(r.code == 426 || r.code == 451, "{r:?}\n{}", gate.logs());
    r
}

/// Another session (another user too) sees nothing of the upload at `path`: no file,
/// or the previous complete `old` content.
fn assert_invisible(gate: &Gate, path: &str, old: Option<&[u8]>) {
    let (dir, name) = path.rsplit_once('/').unwrap();
    let mut o = gate.login();
    assert_eq!(o.cmd("TYPE I").code, 200);
    let (r, names) = o.list(&format!("NLST {dir}"));
    assert_eq!(r.code, 226, "{r:?}");
    assert_eq!(
        names.lines().any(|l| l.ends_with(name)),
        old.is_some(),
        "listing during the cut: {names}"
    );
    let (r, mlsd) = o.list(&format!("MLSD {dir}"));
    assert_eq!(r.code, 226, "{r:?}");
    assert!(!mlsd.contains("ftpgate-tmp"), "{mlsd}");
    let mut other = gate.ctl();
    other.login("other", "other pass");
    let r = other.cmd(&format!("SIZE {path}"));
    let on_disk = std::fs::read(gate.root().join(&path[1..])).ok();
    match old {
        None => {
            assert_eq!(r.code, 550, "another user must not see the pending upload");
            assert!(on_disk.is_none());
        }
        Some(old) => {
            assert_eq!(r.code, 213, "{r:?}");
            assert!(r.text.trim().ends_with(&format!(" {}", old.len())), "{r:?}");
            assert_eq!(on_disk.as_deref(), Some(old));
        }
    }
}

/// A new session of the test user (TYPE I) that STORs `path`, sends `data` and
/// resets the data connection; returned after the 426/451.
fn login_and_cut(gate: &Gate, path: &str, data: &[u8]) -> Ctl {
    let mut c = gate.login();
    assert_eq!(c.cmd("TYPE I").code, 200);
    let mut s = c.epsv();
    assert_eq!(c.cmd(&format!("STOR {path}")).code, 150);
    s.write_all(data).unwrap();
    reset(s);
    let r = c.read();
    assert!(r.code == 426 || r.code == 451, "{r:?}");
    c
}

/// The SIZE the uploading user sees (the pending byte count after a cut).
fn pending_size(c: &mut Ctl, path: &str) -> u64 {
    let r = c.cmd(&format!("SIZE {path}"));
    assert_eq!(r.code, 213, "{r:?}");
    let n = r.text.trim().rsplit(' ').next().unwrap_or_default();
    n.parse()
        .unwrap_or_else(|e| panic!("SIZE reply {r:?}: {e}"))
}

/// A gate on local disk with `storage` keys added to `[storage]`, the test user and
/// a second user `other` who sees the same tree.
fn gate_with(storage: &str) -> Gate {
    let storage = storage.to_owned();
    Gate::start_toml(move |d| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nlogin_failure_delay_ms = 10\n\
             [storage]\nroot = \"{}\"\n{storage}\n\
             [[users]]\nname = \"{USER}\"\npassword_hash = \"{}\"\n\
             [[users]]\nname = \"other\"\npassword_hash = \"{}\"\n",
            d.join("data").display(),
            common::hash(PASS),
            common::hash("other pass"),
        )
    })
}

/// Writes the 64 MiB source file and returns its path and content.
fn source(dir: &Path, seed: u64) -> (PathBuf, Vec<u8>) {
    let data = payload(SIZE, seed);
    let p = dir.join(format!("src-{seed}.bin"));
    std::fs::write(&p, &data).unwrap();
    (p, data)
}

/// After a resume: the file is the source, byte for byte (by SHA-256 of disk and
/// RETR, and HASH), and no pending upload is left.
fn assert_complete(gate: &Gate, c: &mut Ctl, path: &str, data: &[u8]) {
    assert_eq!(
        sha_file(&gate.root().join(&path[1..])),
        sha(data),
        "{}",
        gate.logs()
    );
    let (r, got) = c.retr(path);
    assert_eq!(r.code, 226, "{r:?}");
    assert_eq!(sha(&got), sha(data));
    let r = c.cmd(&format!("HASH {path}"));
    assert_eq!(r.code, 213, "{r:?}");
    assert!(r.text.contains(&sha(data)), "{r:?}");
    assert_eq!(pending_files(gate), Vec::<String>::new());
}

/// The `transfer` event of the completing upload carried the whole file's SHA-256
/// (the kept bytes were hashed at resume).
fn assert_event_digest(gate: &Gate, data: &[u8]) {
    let want = sha(data);
    gate.wait_logs("transfer event with the full digest", |l| l.contains(&want));
}

fn resume_with(client: &str) {
    if !common::require(client) {
        return;
    }
    let gate = gate_with("");
    let work = tempfile::tempdir().unwrap();
    let (src, data) = source(work.path(), 7);
    let path = format!("/up/{client} big.bin");
    let mut c = gate.login();
    assert_eq!(c.cmd("TYPE I").code, 200);
    assert_eq!(c.cmd("MKD /up").code, 257);
    // An older complete file is there: it stays visible until the resume completes.
    let (_, fin) = c.store(&format!("STOR {path}"), b"old content");
    assert_eq!(fin.code, 226);
    cut_upload(&gate, &mut c, &path, &data, CUT, Some(b"old content"));
    assert_invisible(&gate, &path, Some(b"old content"));
    let kept = pending_size(&mut c, &path);
    assert!(kept > 0 && kept <= CUT as u64, "kept {kept}");
    assert_eq!(pending_files(&gate).len(), 1);
    let (r, got) = c.retr(&path);
    assert_eq!((r.code, &got[..]), (226, &b"old content"[..]));
    gate.wait_log("kept as a pending resumable upload");

    let port = gate.port().to_string();
    let mut cmd = match client {
        "curl" => {
            let mut cmd = Command::new("curl");
            cmd.args([
                "-q",
                "-sS",
                "--noproxy",
                "*",
                "--max-time",
                "120",
                "-C",
                "-",
                "-T",
            ])
            .arg(&src)
            .arg("-u")
            .arg(format!("{USER}:{PASS}"))
            .arg(format!("ftp://127.0.0.1:{port}/up/curl%20big.bin"));
            cmd
        }
        "lftp" => {
            let mut cmd = Command::new("lftp");
            cmd.arg("-u")
                .arg(format!("{USER},{PASS}"))
                .arg("-p")
                .arg(&port)
                .arg("-e")
                .arg(format!(
                    "set ftp:ssl-allow no; set net:max-retries 1; set net:timeout 20; \
                     set cmd:fail-exit yes; put -c '{}' -o '{path}'; quit",
                    src.display()
                ))
                .arg("127.0.0.1")
                .env("HOME", work.path());
            cmd
        }
        _ => {
            let mut cmd = Command::new("wput");
            cmd.args(["--tries=1", "--timeout=20", "--binary"])
                .arg(&src)
                .arg(format!(
                    "ftp://{USER}:{}@127.0.0.1:{port}/up/wput%20big.bin",
                    PASS.replace(' ', "%20")
                ))
                .env("HOME", work.path());
            cmd
        }
    };
    let (code, out, err) = run_for(common::no_proxy(&mut cmd), Duration::from_secs(150));
    assert_eq!(code, Some(0), "{client}: {out}\n{err}\n{}", gate.logs());
    assert_complete(&gate, &mut c, &path, &data);
    assert_event_digest(&gate, &data);
    let logs = gate.logs();
    assert!(
        logs.contains("resuming a pending upload"),
        "{client} started over:\n{logs}"
    );
    // Only the missing part crossed the wire (wput resends the last 512 bytes).
    let rest = SIZE as u64 - kept;
    let sent: Vec<u64> = logs
        .lines()
        .filter(|l| l.contains("transfer verb=") && l.contains("code=226"))
        .filter_map(|l| l.split(" bytes=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert!(
        sent.iter().any(|&b| b >= rest && b <= rest + 4096),
        "no transfer of about the rest ({rest} bytes): {sent:?}\n{logs}"
    );
}

#[test]
fn curl_resumes_a_cut_upload() {
    resume_with("curl");
}

#[test]
fn lftp_resumes_a_cut_upload() {
    resume_with("lftp");
}

#[test]
fn wput_resumes_a_cut_upload() {
    resume_with("wput");
}

/// REST n with the pending count continues it; a plain STOR, or REST with another
/// offset, discards it and starts over; bounds refuse more pending uploads.
#[test]
fn raw_rest_stor_fresh_stor_and_bounds() {
    let gate = gate_with("resume_max_per_user = 1\n[http]\nlisten = \"127.0.0.1:0\"\n");
    let data = payload(8 * 1024 * 1024 + 3, 3);
    let mut c = gate.login();
    assert_eq!(c.cmd("TYPE I").code, 200);
    assert_eq!(c.cmd("MKD /d").code, 257);

    // Cut, then REST n + STOR of the rest.
    cut_upload(&gate, &mut c, "/d/a.bin", &data, 3 * 1024 * 1024, None);
    let n = pending_size(&mut c, "/d/a.bin");
    assert_eq!(c.cmd(&format!("REST {n}")).code, 350);
    let (pre, fin) = c.store("STOR /d/a.bin", &data[n as usize..]);
    assert_eq!((pre.code, fin.code), (150, 226), "{pre:?} {fin:?}");
    assert_complete(&gate, &mut c, "/d/a.bin", &data);

    // Cut, then REST a little before the kept count (as wput does): the tail of the
    // kept bytes is replaced by what the client sends.
    cut_upload(&gate, &mut c, "/d/w.bin", &data, 3 * 1024 * 1024, None);
    let n = pending_size(&mut c, "/d/w.bin") - 512;
    assert_eq!(c.cmd(&format!("REST {n}")).code, 350);
    let (pre, fin) = c.store("STOR /d/w.bin", &data[n as usize..]);
    assert_eq!((pre.code, fin.code), (150, 226), "{pre:?} {fin:?}");
    assert_complete(&gate, &mut c, "/d/w.bin", &data);

    // Cut, then a plain STOR: starts over, the pending upload is gone.
    cut_upload(&gate, &mut c, "/d/b.bin", &data, 2 * 1024 * 1024, None);
    assert_eq!(pending_files(&gate).len(), 1);
    let fresh = payload(1000, 4);
    let (_, fin) = c.store("STOR /d/b.bin", &fresh);
    assert_eq!(fin.code, 226);
    assert_complete(&gate, &mut c, "/d/b.bin", &fresh);
    assert_eq!(pending_size(&mut c, "/d/b.bin"), 1000);

    // Cut, then REST beyond the kept bytes: the pending upload is discarded.
    cut_upload(&gate, &mut c, "/d/c.bin", &data, 2 * 1024 * 1024, None);
    let n = pending_size(&mut c, "/d/c.bin");
    assert_eq!(c.cmd(&format!("REST {}", n + 1)).code, 350);
    let (pre, fin) = c.store("STOR /d/c.bin", b"x");
    assert!(pre.code >= 500 || fin.code >= 400, "{pre:?} {fin:?}");
    assert_eq!(pending_files(&gate), Vec::<String>::new());
    assert_eq!(c.cmd("SIZE /d/c.bin").code, 550);

    // Bounds: one pending upload per user here; a second cut is discarded.
    cut_upload(&gate, &mut c, "/d/d.bin", &data, 1024 * 1024, None);
    cut_upload(&gate, &mut c, "/d/e.bin", &data, 1024 * 1024, None);
    gate.wait_log("over resume_max_per_user");
    assert_eq!(pending_files(&gate).len(), 1);
    assert_eq!(c.cmd("SIZE /d/e.bin").code, 550);
    assert!(pending_size(&mut c, "/d/d.bin") > 0);

    // Operators see it: events and the gauges (set by the periodic sweep).
    let http = gate.logged_addr("http endpoint bound");
    let event = |e: &str| format!("ftpgate_pending_upload_events_total{{event=\"{e}\"}}");
    let started = Instant::now();
    let text = loop {
        let text = common::http_get(http, "/metrics").1;
        if common::metric(&text, "ftpgate_pending_uploads") == 1.0
            || started.elapsed() > Duration::from_secs(90)
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        common::metric(&text, "ftpgate_pending_uploads"),
        1.0,
        "{text}"
    );
    assert!(common::metric(&text, "ftpgate_pending_upload_bytes") > 0.0);
    assert_eq!(common::metric(&text, &event("resumed")), 2.0, "{text}");
    assert_eq!(common::metric(&text, &event("refused")), 1.0, "{text}");
    assert_eq!(common::metric(&text, &event("kept")), 5.0, "{text}");
}

/// With `resume_window_secs = 0` an interrupted upload leaves nothing (as before).
#[test]
fn resume_off_keeps_nothing() {
    let gate = Gate::start_toml(|d| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nlogin_failure_delay_ms = 10\n\
             [storage]\nroot = \"{}\"\nresume_window_secs = 0\n\
             [[users]]\nname = \"{USER}\"\npassword_hash = \"{}\"\n",
            d.join("data").display(),
            common::hash(PASS)
        )
    });
    let data = payload(4 * 1024 * 1024, 5);
    let mut c = login_and_cut(&gate, "/off.bin", &data[..2 * 1024 * 1024]);
    assert_eq!(c.cmd("SIZE /off.bin").code, 550);
    assert_eq!(pending_files(&gate), Vec::<String>::new());
}

/// Expired pending uploads are removed while running and at start-up.
#[test]
fn expiry_removes_pending_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let config = |window: u64| {
        let p = dir.path().join(format!("ftpgate-{window}.toml"));
        std::fs::write(
            &p,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nlogin_failure_delay_ms = 10\n\
                 [storage]\nroot = \"{}\"\nresume_window_secs = {window}\n\
                 [[users]]\nname = \"{USER}\"\npassword_hash = \"{}\"\n",
                root.display(),
                common::hash(PASS)
            ),
        )
        .unwrap();
        p
    };
    let data = payload(4 * 1024 * 1024, 6);
    let pending_dir = root.join(".ftpgate-tmp-pending");
    let count = || std::fs::read_dir(&pending_dir).map_or(0, |d| d.count());

    // While running: a 2 s window.
    let cfg = config(2);
    let gate = Gate::start_toml(|_| std::fs::read_to_string(&cfg).unwrap());
    let mut c = login_and_cut(&gate, "/gone.bin", &data[..1024 * 1024]);
    gate.wait_logs("expiry while running", |l| {
        l.contains("expired pending uploads removed")
    });
    assert_eq!(count(), 0);
    assert_eq!(c.cmd("SIZE /gone.bin").code, 550);
    drop(c);
    drop(gate);

    // At start-up: a pending upload from a day ago, with the default window.
    let cfg = config(3600);
    let gate = Gate::start_toml(|_| std::fs::read_to_string(&cfg).unwrap());
    let c = login_and_cut(&gate, "/old.bin", &data[..1024 * 1024]);
    let started = Instant::now();
    while count() == 0 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count(), 1);
    drop(c);
    drop(gate);
    for e in std::fs::read_dir(&pending_dir).unwrap() {
        let p = e.unwrap().path();
        let (ok, _, err) = common::run(Command::new("touch").args(["-d", "2 days ago"]).arg(&p));
        assert!(ok, "{err}");
    }
    let gate = Gate::start_toml(|_| std::fs::read_to_string(&cfg).unwrap());
    gate.wait_logs("expiry at start-up", |l| {
        l.contains("expired pending uploads removed")
    });
    assert_eq!(count(), 0);
}

/// A window beyond 30 days is refused at start, naming the key.
#[test]
fn resume_window_is_validated() {
    let err = common::refused_start(
        Some("[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nresume_window_secs = 99999999\n"),
        &[],
    );
    assert!(err.contains("storage.resume_window_secs"), "{err}");
}
