//! Resumable uploads (issue 12 point 2) on local disk and on S3 (moto), end to end
//! with real clients: a 64 MiB upload is cut after ~40 % (data connection reset,
//! RST), then continued by `curl -C - -T`, `lftp put -c` and `wput` (on S3 through a
//! second replica on the same bucket for lftp and wput). The final file must hash as
//! the source, nothing partial may be visible to another session during or after the
//! cut, no pending upload may remain after completion (S3: no multipart upload, no
//! marker), a plain STOR after a cut starts over, and expired pending uploads are
//! removed (while running and at start-up).

mod common;

#[path = "../backends/s3/tests/common/mod.rs"]
mod moto;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{payload, run_for, sha, Ctl, Gate, Resp, PASS, USER};

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

/// Where the gate stores: local disk (its root) or a bucket on moto (prefix `ftp`).
#[derive(Clone, Copy)]
enum Back<'a> {
    Local,
    S3(&'a moto::Server, &'a str),
}

impl Back<'_> {
    /// A gate on this storage with `storage` keys added, the test user and a second
    /// user `other` who sees the same tree.
    fn gate(&self, storage: &str) -> Gate {
        match self {
            Back::Local => gate_with(storage),
            Back::S3(m, bucket) => Gate::start_s3(
                &m.endpoint(),
                bucket,
                &format!(
                    "{storage}\n[[users]]\nname = \"other\"\npassword_hash = \"{}\"\n",
                    common::hash("other pass")
                ),
            ),
        }
    }

    /// The SHA-256 of the file stored under `path` (read from disk, or by boto3).
    fn stored_sha(&self, gate: &Gate, path: &str) -> Option<String> {
        match self {
            Back::Local => std::fs::read(gate.root().join(&path[1..]))
                .ok()
                .map(|b| sha(&b)),
            Back::S3(m, bucket) => m
                .boto(
                    bucket,
                    &format!(
                        "import hashlib\ntry:\n    b = s3.get_object(Bucket=bucket, Key={:?})['Body'].read()\n\
                         \x20   print(json.dumps(hashlib.sha256(b).hexdigest()))\n\
                         except s3.exceptions.NoSuchKey:\n    print('null')",
                        format!("ftp{path}")
                    ),
                )
                .as_str()
                .map(str::to_owned),
        }
    }

    /// What storage holds of pending uploads: the local pending files; on S3 the
    /// multipart uploads (boto3 ListMultipartUploads) and the marker objects.
    fn pending(&self, gate: &Gate) -> Vec<String> {
        match self {
            Back::Local => pending_files(gate),
            Back::S3(m, bucket) => {
                let mut out = m.pending_uploads(bucket);
                out.extend(
                    m.keys(bucket)
                        .into_iter()
                        .filter(|k| k.contains(".ftpgate-tmp-pending")),
                );
                out
            }
        }
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
    back: Back<'_>,
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
    assert_invisible(back, gate, path, old);
    reset(s);
    let r = c.read();
    assert!(r.code == 426 || r.code == 451, "{r:?}\n{}", gate.logs());
    r
}

/// Another session (another user too) sees nothing of the upload at `path`: no file,
/// or the previous complete `old` content.
fn assert_invisible(back: Back<'_>, gate: &Gate, path: &str, old: Option<&[u8]>) {
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
    let stored = back.stored_sha(gate, path);
    match old {
        None => {
            assert_eq!(r.code, 550, "another user must not see the pending upload");
            assert!(stored.is_none());
        }
        Some(old) => {
            assert_eq!(r.code, 213, "{r:?}");
            assert!(r.text.trim().ends_with(&format!(" {}", old.len())), "{r:?}");
            assert_eq!(stored, Some(sha(old)));
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
fn assert_complete(back: Back<'_>, gate: &Gate, c: &mut Ctl, path: &str, data: &[u8]) {
    assert_eq!(
        back.stored_sha(gate, path),
        Some(sha(data)),
        "{}",
        gate.logs()
    );
    let (r, got) = c.retr(path);
    assert_eq!(r.code, 226, "{r:?}");
    assert_eq!(sha(&got), sha(data));
    let r = c.cmd(&format!("HASH {path}"));
    assert_eq!(r.code, 213, "{r:?}");
    assert!(r.text.contains(&sha(data)), "{r:?}");
    assert_eq!(back.pending(gate), Vec::<String>::new());
}

/// The `transfer` event of the completing upload carried the whole file's SHA-256
/// (the kept bytes were hashed at resume).
fn assert_event_digest(gate: &Gate, data: &[u8]) {
    let want = sha(data);
    gate.wait_logs("transfer event with the full digest", |l| l.contains(&want));
}

fn resume_with(client: &str, on_s3: bool) {
    if !common::require(client) {
        return;
    }
    let m = if on_s3 {
        match moto::moto() {
            Some(m) => Some(m),
            None => return,
        }
    } else {
        None
    };
    let bucket = m.map(|m| m.bucket()).unwrap_or_default();
    let back = match m {
        Some(m) => Back::S3(m, &bucket),
        None => Back::Local,
    };
    let gate = back.gate("");
    // On S3, lftp and wput resume through a second replica on the same bucket.
    let replica = (on_s3 && client != "curl").then(|| back.gate(""));
    let resumer = replica.as_ref().unwrap_or(&gate);
    let work = tempfile::tempdir().unwrap();
    let (src, data) = source(work.path(), 7);
    let path = format!("/up/{client} big.bin");
    let mut c = gate.login();
    assert_eq!(c.cmd("TYPE I").code, 200);
    assert_eq!(c.cmd("MKD /up").code, 257);
    // An older complete file is there: it stays visible until the resume completes.
    let (_, fin) = c.store(&format!("STOR {path}"), b"old content");
    assert_eq!(fin.code, 226);
    cut_upload(back, &gate, &mut c, &path, &data, CUT, Some(b"old content"));
    assert_invisible(back, resumer, &path, Some(b"old content"));
    let kept = pending_size(&mut c, &path);
    assert!(kept > 0 && kept <= CUT as u64, "kept {kept}");
    match back {
        Back::Local => assert_eq!(pending_files(&gate).len(), 1),
        // Only whole parts (5 MiB here) are durable: one multipart upload, one marker.
        Back::S3(..) => {
            assert_eq!(kept % (5 << 20), 0, "kept {kept}");
            assert_eq!(back.pending(&gate).len(), 2, "{:?}", back.pending(&gate));
        }
    }
    let (r, got) = c.retr(&path);
    assert_eq!((r.code, &got[..]), (226, &b"old content"[..]));
    gate.wait_log("kept as a pending resumable upload");

    let port = resumer.port().to_string();
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
    assert_eq!(code, Some(0), "{client}: {out}\n{err}\n{}", resumer.logs());
    assert_complete(back, &gate, &mut c, &path, &data);
    assert_event_digest(resumer, &data);
    let logs = resumer.logs();
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
    resume_with("curl", false);
}

#[test]
fn lftp_resumes_a_cut_upload() {
    resume_with("lftp", false);
}

#[test]
fn wput_resumes_a_cut_upload() {
    resume_with("wput", false);
}

#[test]
fn curl_resumes_a_cut_upload_on_s3() {
    resume_with("curl", true);
}

#[test]
fn lftp_resumes_a_cut_upload_on_s3_through_another_replica() {
    resume_with("lftp", true);
}

#[test]
fn wput_resumes_a_cut_upload_on_s3_through_another_replica() {
    resume_with("wput", true);
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
    cut_upload(
        Back::Local,
        &gate,
        &mut c,
        "/d/a.bin",
        &data,
        3 * 1024 * 1024,
        None,
    );
    let n = pending_size(&mut c, "/d/a.bin");
    assert_eq!(c.cmd(&format!("REST {n}")).code, 350);
    let (pre, fin) = c.store("STOR /d/a.bin", &data[n as usize..]);
    assert_eq!((pre.code, fin.code), (150, 226), "{pre:?} {fin:?}");
    assert_complete(Back::Local, &gate, &mut c, "/d/a.bin", &data);

    // Cut, then REST a little before the kept count (as wput does): the tail of the
    // kept bytes is replaced by what the client sends.
    cut_upload(
        Back::Local,
        &gate,
        &mut c,
        "/d/w.bin",
        &data,
        3 * 1024 * 1024,
        None,
    );
    let n = pending_size(&mut c, "/d/w.bin") - 512;
    assert_eq!(c.cmd(&format!("REST {n}")).code, 350);
    let (pre, fin) = c.store("STOR /d/w.bin", &data[n as usize..]);
    assert_eq!((pre.code, fin.code), (150, 226), "{pre:?} {fin:?}");
    assert_complete(Back::Local, &gate, &mut c, "/d/w.bin", &data);

    // Cut, then a plain STOR: starts over, the pending upload is gone.
    cut_upload(
        Back::Local,
        &gate,
        &mut c,
        "/d/b.bin",
        &data,
        2 * 1024 * 1024,
        None,
    );
    assert_eq!(pending_files(&gate).len(), 1);
    let fresh = payload(1000, 4);
    let (_, fin) = c.store("STOR /d/b.bin", &fresh);
    assert_eq!(fin.code, 226);
    assert_complete(Back::Local, &gate, &mut c, "/d/b.bin", &fresh);
    assert_eq!(pending_size(&mut c, "/d/b.bin"), 1000);

    // Cut, then REST beyond the kept bytes: the pending upload is discarded.
    cut_upload(
        Back::Local,
        &gate,
        &mut c,
        "/d/c.bin",
        &data,
        2 * 1024 * 1024,
        None,
    );
    let n = pending_size(&mut c, "/d/c.bin");
    assert_eq!(c.cmd(&format!("REST {}", n + 1)).code, 350);
    let (pre, fin) = c.store("STOR /d/c.bin", b"x");
    assert!(pre.code >= 500 || fin.code >= 400, "{pre:?} {fin:?}");
    assert_eq!(pending_files(&gate), Vec::<String>::new());
    assert_eq!(c.cmd("SIZE /d/c.bin").code, 550);

    // Bounds: one pending upload per user here; a second cut is discarded.
    cut_upload(
        Back::Local,
        &gate,
        &mut c,
        "/d/d.bin",
        &data,
        1024 * 1024,
        None,
    );
    cut_upload(
        Back::Local,
        &gate,
        &mut c,
        "/d/e.bin",
        &data,
        1024 * 1024,
        None,
    );
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

/// Polls `cond` (a storage check) for up to 60 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < Duration::from_secs(60), "never: {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// On S3: REST n + STOR, REST a little below n (wput), APPE continue the pending
/// upload (only whole 5 MiB parts are durable: SIZE says 5 MiB after 8 MiB sent); a
/// plain STOR or another offset aborts its multipart upload and removes its marker;
/// two sessions cannot both continue one; the bounds apply; the marker directory is
/// neither listed nor reachable.
#[test]
fn s3_rest_appe_fresh_stor_and_bounds() {
    let Some(m) = moto::moto() else { return };
    let bucket = m.bucket();
    let back = Back::S3(m, &bucket);
    let gate = back.gate("resume_max_per_user = 1");
    let data = payload(12 * 1024 * 1024 + 3, 13);
    let cut = 8 * 1024 * 1024;
    let mut c = gate.login();
    assert_eq!(c.cmd("TYPE I").code, 200);
    assert_eq!(c.cmd("MKD /d").code, 257);

    for (name, verb) in [("a", "REST"), ("w", "REST-512"), ("p", "APPE")] {
        let path = format!("/d/{name}.bin");
        cut_upload(back, &gate, &mut c, &path, &data, cut, None);
        let n = pending_size(&mut c, &path);
        assert_eq!(n, 5 * 1024 * 1024, "durable = whole parts");
        let (pre, fin) = match verb {
            "APPE" => c.store(&format!("APPE {path}"), &data[n as usize..]),
            _ => {
                let from = if verb == "REST" { n } else { n - 512 };
                assert_eq!(c.cmd(&format!("REST {from}")).code, 350);
                c.store(&format!("STOR {path}"), &data[from as usize..])
            }
        };
        assert_eq!((pre.code, fin.code), (150, 226), "{verb}: {pre:?} {fin:?}");
        assert_complete(back, &gate, &mut c, &path, &data);
        assert_event_digest(&gate, &data);
    }

    // A plain STOR after a cut starts over: the multipart upload is aborted.
    cut_upload(back, &gate, &mut c, "/d/b.bin", &data, cut, None);
    assert_eq!(back.pending(&gate).len(), 2);
    let fresh = payload(1000, 4);
    let (_, fin) = c.store("STOR /d/b.bin", &fresh);
    assert_eq!(fin.code, 226);
    assert_complete(back, &gate, &mut c, "/d/b.bin", &fresh);
    assert_eq!(pending_size(&mut c, "/d/b.bin"), 1000);

    // REST beyond the kept bytes: discarded, and S3 cannot write at an offset.
    cut_upload(back, &gate, &mut c, "/d/c.bin", &data, cut, None);
    let n = pending_size(&mut c, "/d/c.bin");
    assert_eq!(c.cmd(&format!("REST {}", n + 1)).code, 350);
    let (pre, fin) = c.store("STOR /d/c.bin", b"x");
    assert!(pre.code >= 500 || fin.code >= 400, "{pre:?} {fin:?}");
    assert_eq!(back.pending(&gate), Vec::<String>::new());
    assert_eq!(c.cmd("SIZE /d/c.bin").code, 550);

    // Less than one part sent: nothing durable, nothing kept.
    cut_upload(
        back,
        &gate,
        &mut c,
        "/d/small.bin",
        &data,
        1024 * 1024,
        None,
    );
    assert_eq!(c.cmd("SIZE /d/small.bin").code, 550);
    assert_eq!(back.pending(&gate), Vec::<String>::new());

    // Two sessions resume the same pending upload: the first takes it (its marker is
    // rewritten conditionally), the second is refused cleanly, never a mix.
    cut_upload(back, &gate, &mut c, "/d/t.bin", &data, cut, None);
    let n = pending_size(&mut c, "/d/t.bin");
    let mut s1 = c.epsv();
    assert_eq!(c.cmd(&format!("REST {n}")).code, 350);
    assert_eq!(c.cmd("STOR /d/t.bin").code, 150);
    let mut c2 = gate.login();
    assert_eq!(c2.cmd("TYPE I").code, 200);
    assert_eq!(c2.cmd("SIZE /d/t.bin").code, 550, "taken: not pending");
    assert_eq!(c2.cmd(&format!("REST {n}")).code, 350);
    let (pre, fin) = c2.store("STOR /d/t.bin", &data[n as usize..]);
    assert!(pre.code >= 500 || fin.code >= 400, "{pre:?} {fin:?}");
    s1.write_all(&data[n as usize..]).unwrap();
    drop(s1);
    assert_eq!(c.read().code, 226);
    assert_complete(back, &gate, &mut c, "/d/t.bin", &data);

    // Bounds: one pending upload per user here; a second cut is aborted.
    cut_upload(back, &gate, &mut c, "/d/d.bin", &data, cut, None);
    cut_upload(back, &gate, &mut c, "/d/e.bin", &data, cut, None);
    gate.wait_log("over resume_max_per_user");
    assert_eq!(c.cmd("SIZE /d/e.bin").code, 550);
    assert_eq!(pending_size(&mut c, "/d/d.bin"), 5 * 1024 * 1024);
    assert_eq!(back.pending(&gate).len(), 2, "{:?}", back.pending(&gate));

    // The markers are the gateway's own: not listed, not reachable.
    let (r, names) = c.list("NLST /");
    assert_eq!(r.code, 226);
    assert!(!names.contains("ftpgate-tmp"), "{names}");
    assert!(c.cmd("CWD /.ftpgate-tmp-pending").code >= 500);
    let (r, _) = c.list("NLST /.ftpgate-tmp-pending");
    assert!(r.code >= 500, "{r:?}");
}

/// On S3: expired pending uploads are aborted (multipart upload and marker) while
/// running and by a process started after the one that kept them; the clean-up of
/// orphaned multipart uploads (`abort_incomplete_uploads_after_secs`) leaves pending
/// uploads within the window alone.
#[test]
fn s3_expiry_and_orphan_cleanup() {
    let Some(m) = moto::moto() else { return };
    let data = payload(8 * 1024 * 1024, 17);
    let cut = 6 * 1024 * 1024;

    // While running: a 2 s window.
    let bucket = m.bucket();
    let back = Back::S3(m, &bucket);
    let gate = back.gate("resume_window_secs = 2");
    let mut c = gate.login();
    cut_upload(back, &gate, &mut c, "/gone.bin", &data, cut, None);
    gate.wait_logs("expiry while running", |l| {
        l.contains("expired pending uploads removed")
    });
    eventually("expired upload aborted", || back.pending(&gate).is_empty());
    drop(c);
    drop(gate);

    // Kept by a process that is gone; a new one expires it at start.
    let bucket = m.bucket();
    let back = Back::S3(m, &bucket);
    let gate = back.gate("resume_window_secs = 3600");
    cut_upload(back, &gate, &mut gate.login(), "/old.bin", &data, cut, None);
    assert_eq!(back.pending(&gate).len(), 2);
    drop(gate);
    std::thread::sleep(Duration::from_secs(3));
    let gate = back.gate("resume_window_secs = 2");
    gate.wait_logs("expiry at start-up", |l| {
        l.contains("expired pending uploads removed")
    });
    eventually("expired upload aborted at start", || {
        back.pending(&gate).is_empty()
    });
    drop(gate);

    // The orphan clean-up (every second here) aborts an orphan, not a pending upload.
    let bucket = m.bucket();
    let back = Back::S3(m, &bucket);
    let gate = back.gate("abort_incomplete_uploads_after_secs = 1");
    let mut c = gate.login();
    cut_upload(back, &gate, &mut c, "/kept.bin", &data, cut, None);
    m.boto(
        &bucket,
        "s3.create_multipart_upload(Bucket=bucket, Key='ftp/orphan.bin')\nprint('null')",
    );
    eventually("orphan aborted", || {
        !m.pending_uploads(&bucket)
            .contains(&"ftp/orphan.bin".to_owned())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(m.pending_uploads(&bucket), ["ftp/kept.bin"]);
    let n = pending_size(&mut c, "/kept.bin");
    assert_eq!(c.cmd(&format!("REST {n}")).code, 350);
    let (_, fin) = c.store("STOR /kept.bin", &data[n as usize..]);
    assert_eq!(fin.code, 226, "{fin:?}");
    assert_complete(back, &gate, &mut c, "/kept.bin", &data);
}

/// A user with a quota resumes on S3: the quota's wrapper around the backend and its
/// uploads passes the backend's own hash state through (S3 cannot read kept parts
/// back), so the resumed file's digest is right and the usage counts it once.
#[test]
fn s3_resume_under_a_quota_keeps_the_digest() {
    let Some(m) = moto::moto() else { return };
    let bucket = m.bucket();
    let back = Back::S3(m, &bucket);
    let gate = back.gate(&format!(
        "[[users]]\nname = \"quoted\"\npassword_hash = \"{}\"\nquota_bytes = 40000000\n",
        common::hash("quoted pass")
    ));
    let data = payload(12 * 1024 * 1024 + 5, 21);
    let mut c = gate.ctl();
    c.login("quoted", "quoted pass");
    assert_eq!(c.cmd("TYPE I").code, 200);
    cut_upload(back, &gate, &mut c, "/q.bin", &data, 8 << 20, None);
    let n = pending_size(&mut c, "/q.bin");
    assert_eq!(n, 5 << 20, "durable = whole parts");
    let (pre, fin) = c.store("APPE /q.bin", &data[n as usize..]);
    assert_eq!((pre.code, fin.code), (150, 226), "{pre:?} {fin:?}");
    assert_complete(back, &gate, &mut c, "/q.bin", &data);
    assert_event_digest(&gate, &data);
    // 12 MiB stored of a 40 MB quota: another 30 MB does not fit.
    let (pre, fin) = c.store("STOR /r.bin", &payload(30_000_000, 2));
    assert!(pre.code == 552 || fin.code == 552, "{pre:?} {fin:?}");
}
