//! A frozen FUSE mount under one backend holds only its own writer threads, end to
//! end (the unit test `a_frozen_file_system_holds_only_its_own_writers` in
//! `backends/local/src/upload.rs` simulates the freeze; this is the real thing).
//!
//! An upstream ftpgate A is mounted with `rclone mount --vfs-cache-mode off` (every
//! write goes to A over FTP). The gate under test, B, has two local backends: user
//! `fz` on `[backends.fuse]`, rooted inside the mount, and the default user on
//! `[storage]`, an ordinary temporary directory. After a baseline upload through the
//! mount, more uploads to the mount than B's writer pool has threads (2 per core, + 1)
//! are opened and A is frozen with SIGSTOP: the FUSE writes hang inside rclone. The
//! test checks that precondition in `/proc` (every `ftpgate-write-*` thread of B in
//! write(2), over four samples 400 ms apart), then that an upload to the other
//! backend still ends with 226 within 15 s (its bytes checked by SHA-256 on disk,
//! RETR and LIST too), and that the mount's writers were still blocked after it. A is
//! thawed (a guard sends SIGCONT, also on failure), and every hung upload ends either
//! with 226 and exactly its bytes stored on A, or with 4xx/5xx and nothing under its
//! name.
//!
//! - The uploads are opened (STOR answered 150, first MiB sent) *before* the freeze
//!   and pushed on after it: with A frozen first, B's STOR stops at its lookup of the
//!   name on the mount (rclone re-reads a directory older than 1 s from A), on
//!   tokio's blocking pool, and the test proves nothing about the writers (tried: no
//!   STOR got its 150 within 30 s, all four writer threads stayed idle).
//! - A stores in memory and is read back over FTP: a local-disk ftpgate refuses B's
//!   temporary names (`.ftpgate-tmp-*`, reserved: 553), so B cannot upload through a
//!   mount of it at all.
//!
//! **A shared pool fails this test.** With one writer pool for every file system, all
//! of its threads are blocked in the mount's writes (checked before the other upload
//! starts), the other upload's lane waits on the run queue behind the fifth hung
//! lane, its chunks are never written and no 226 comes. Checked on 2026-12-04 by
//! making `writers()` ignore `dev`: the STOR on the other backend got no reply within
//! 15 s, the four writer threads all in `request_wait_answer` (FUSE), and the test
//! failed there.
//!
//! Runs in about 6 s. The mount is undone by a guard (`fusermount3 -uz`, rclone
//! killed before B so that B's pending FUSE requests are aborted), also on failure.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::mount::Mount;
use common::{payload, sha, Ctl, Gate, Opts};

/// The user of the backend inside the mount.
const FZ_USER: &str = "fz";
const FZ_PASS: &str = "frozen pw";

/// Bytes of each hung upload sent before the freeze.
const HEAD: usize = 1024 * 1024;
/// Bytes of each hung upload in all: more than loopback socket buffers (here
/// `tcp_rmem` max 32 MiB + `tcp_wmem` max 4 MiB) and rclone absorb after the freeze, so
/// the FUSE writes block (measured: they block after 20-22 MiB).
const HUNG_SIZE: usize = 64 * 1024 * 1024;
/// How long the upload to the other backend may take.
const BOUND: Duration = Duration::from_secs(15);

/// write(2) in /proc/PID/task/TID/syscall.
#[cfg(target_arch = "x86_64")]
const SYS_WRITE: &str = "1";
#[cfg(not(target_arch = "x86_64"))]
const SYS_WRITE: &str = "64";

/// Sends SIGCONT to a frozen process when dropped (also when the test panics).
struct Thaw(u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.0.to_string())
            .status();
    }
}

/// One writer thread of B: its name, whether it is blocked in write(2), its wchan.
struct Writer {
    name: String,
    in_write: bool,
    wchan: String,
}

/// B's `ftpgate-write-*` threads (every writer pool started so far).
fn writers(pid: u32) -> Vec<Writer> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let p = t.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let name = name.trim();
        if !name.starts_with("ftpgate-write") {
            continue;
        }
        let syscall = std::fs::read_to_string(p.join("syscall")).unwrap_or_default();
        out.push(Writer {
            name: name.to_owned(),
            in_write: syscall.split_whitespace().next() == Some(SYS_WRITE),
            wchan: std::fs::read_to_string(p.join("wchan")).unwrap_or_default(),
        });
    }
    out
}

fn describe(ws: &[Writer]) -> String {
    ws.iter()
        .map(|w| format!("{} in_write={} wchan={}", w.name, w.in_write, w.wchan))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How far B has written each of its temporary files under `dir` (MiB, from the
/// file offsets in /proc/PID/fdinfo).
fn written_mib(pid: u32, dir: &Path) -> Vec<u64> {
    let prefix = dir.join(".ftpgate-tmp-").display().to_string();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut out: Vec<u64> = fds
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.display().to_string().starts_with(&prefix))
        })
        .filter_map(|e| {
            let info =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().display()))
                    .ok()?;
            let pos = info.lines().find_map(|l| l.strip_prefix("pos:"))?;
            pos.trim().parse::<u64>().ok().map(|p| p >> 20)
        })
        .collect();
    out.sort_unstable();
    out
}

/// Waits until at least `n` writer threads of B stay blocked in write(2) over four
/// samples 400 ms apart (a write into the frozen mount does not return).
fn wait_writers_blocked(pid: u32, n: usize, limit: Duration) -> Vec<Writer> {
    let deadline = Instant::now() + limit;
    let mut streak = 0;
    loop {
        let ws = writers(pid);
        let blocked = ws.iter().filter(|w| w.in_write).count();
        streak = if blocked >= n { streak + 1 } else { 0 };
        if streak >= 4 {
            return ws;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} writer threads stayed blocked in write(2) on the frozen mount:\n{}",
            describe(&ws)
        );
        std::thread::sleep(Duration::from_millis(400));
    }
}

/// How a hung upload ended.
struct Outcome {
    name: String,
    data: Vec<u8>,
    code: u16,
    text: String,
    send_error: Option<String>,
}

/// One upload to the mount on its own connection: STOR, the first `HEAD` bytes, then
/// `started`; the rest once `go` says so (or its sender is gone), then the reply.
fn hung_upload(
    addr: SocketAddr,
    i: usize,
    started: mpsc::Sender<usize>,
    go: mpsc::Receiver<()>,
) -> Outcome {
    let name = format!("hung-{i}.bin");
    let data = payload(HUNG_SIZE, 100 + i as u64);
    let mut c = Ctl::connect(addr);
    c.w.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    c.login(FZ_USER, FZ_PASS);
    let mut d = c.epsv();
    let r = c.cmd(&format!("STOR {name}"));
    assert!(r.code == 150 || r.code == 125, "STOR {name}: {r:?}");
    d.set_write_timeout(Some(Duration::from_secs(120))).unwrap();
    let head = d.write_all(&data[..HEAD]);
    let _ = started.send(i);
    let _ = go.recv();
    let sent = head.and_then(|()| d.write_all(&data[HEAD..]));
    drop(d);
    let fin = c.read();
    Outcome {
        name,
        data,
        code: fin.code,
        text: fin.text,
        send_error: sent.err().map(|e| e.to_string()),
    }
}

/// What A stores at `rel`, read back over FTP from A (`None`: no such file).
fn on_a(a: &Gate, rel: &str) -> Option<Vec<u8>> {
    let mut c = a.login();
    let (fin, got) = c.retr(rel);
    (fin.code == 226).then_some(got)
}

/// Waits until A stores exactly `data` at `rel` (rclone publishes a rename once the
/// upload to A has ended).
fn wait_on_a(a: &Gate, rel: &str, data: &[u8], m: &Mount, b: &Gate) {
    let want = sha(data);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = on_a(a, rel).map(|d| sha(&d));
        if got.as_deref() == Some(want.as_str()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "A stores {got:?} at {rel}, not {want}\nrclone:\n{}\nB:\n{}",
            common::tail(&m.rclone_log(), 30),
            common::tail(&b.logs(), 30)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// B: the default user on `[storage]` (a temporary directory), user `fz` on
/// `[backends.fuse]` rooted at `fuse_root`.
fn gate_beside(fuse_root: &Path) -> Gate {
    Gate::start_with(Opts {
        extra: format!(
            "[[users]]\nname = \"{FZ_USER}\"\npassword_hash = \"{}\"\nbackend = \"fuse\"\n\n\
             [backends.fuse]\nkind = \"local\"\nroot = \"{}\"\n",
            common::hash(FZ_PASS),
            fuse_root.display()
        ),
        ..Default::default()
    })
}

/// Mounts A at `work/mnt` (`rclone mount --vfs-cache-mode off` plus `flags`) and
/// starts B ([`gate_beside`]) on the directory `b` inside it. Bind the result as
/// `let (b, m)`: the mount is dropped first, and killing rclone aborts the FUSE
/// requests B may still wait on, so B can then be killed.
fn gate_in_mount(a: &Gate, work: &Path, flags: &[&str]) -> (Gate, Mount) {
    let m = Mount::start_with(a, &work.join("mnt"), "off", flags);
    let fuse_root: PathBuf = m.path("b");
    std::fs::create_dir(&fuse_root).expect("mkdir in the mount");
    (gate_beside(&fuse_root), m)
}

fn tools_present() -> bool {
    common::require("rclone") && common::require("fusermount3") && {
        let fuse = Path::new("/dev/fuse").exists();
        if !fuse && std::env::var("CI").is_ok() {
            panic!("/dev/fuse is required under CI");
        }
        fuse
    }
}

#[test]
fn a_frozen_mount_holds_only_its_own_writers() {
    if !tools_present() {
        return;
    }
    let begin = Instant::now();
    // 1. The upstream A, mounted; B's backend root is a directory inside the mount.
    let a = Gate::start_with(Opts {
        storage: "memory",
        ..Default::default()
    });
    let work = tempfile::tempdir().unwrap();
    // Each upload to the mount holds one of rclone's FTP connections until it is
    // closed, which B does after its rename, which needs a lookup, which needs a
    // connection: fewer connections than concurrent uploads (+ 1) would deadlock rclone.
    let threads = 2 * std::thread::available_parallelism().map_or(1, usize::from);
    let n = threads + 1;
    let conns = (n + 4).to_string();
    // 2. B: the default user on an ordinary directory, `fz` inside the mount.
    let (b, m) = gate_in_mount(&a, work.path(), &["--ftp-concurrency", &conns]);
    let fuse_root = m.path("b");

    // 3. Baseline: an upload through B into the mount is stored on A.
    let mut fz = b.ctl();
    fz.login(FZ_USER, FZ_PASS);
    let small = payload(300_000, 1);
    let (_, fin) = fz.store("STOR baseline.bin", &small);
    assert_eq!(
        fin.code,
        226,
        "baseline: {fin:?}\n{}",
        common::tail(&b.logs(), 30)
    );
    wait_on_a(&a, "b/baseline.bin", &small, &m, &b);
    drop(fz);

    // 4. More uploads to the mount than the writer pool has threads, opened while A
    //    runs; then A is frozen and they push on, each on its own thread, not waited on.
    let (started_tx, started) = mpsc::channel();
    let mut go = Vec::new();
    let (ended_tx, ended) = mpsc::channel();
    for i in 0..n {
        let (go_tx, go_rx) = mpsc::channel();
        go.push(go_tx);
        let (addr, tx, ended_tx) = (b.addr, started_tx.clone(), ended_tx.clone());
        std::thread::spawn(move || {
            let _ = ended_tx.send(hung_upload(addr, i, tx, go_rx));
        });
    }
    drop(ended_tx);
    for _ in 0..n {
        started
            .recv_timeout(Duration::from_secs(30))
            .expect("a hung upload did not start");
    }
    // Let the first MiB of each reach the mount.
    std::thread::sleep(Duration::from_millis(500));
    a.signal("STOP");
    let thaw = Thaw(a.pid());
    let frozen_at = Instant::now();
    for g in go.drain(..) {
        let _ = g.send(());
    }
    let ws = wait_writers_blocked(b.pid(), threads, Duration::from_secs(30));
    assert_eq!(
        ws.len(),
        threads,
        "one writer pool of {threads} threads expected so far:\n{}",
        describe(&ws)
    );
    println!(
        "{n} uploads hold all {threads} writer threads in write(2) {:.1} s after the freeze; \
         written (MiB of {}): {:?}",
        frozen_at.elapsed().as_secs_f64(),
        HUNG_SIZE >> 20,
        written_mib(b.pid(), &fuse_root)
    );

    // 5. Meanwhile an upload to the other backend ends with 226 within the bound, and
    //    RETR and LIST on it work.
    let other = payload(3 * 1024 * 1024 + 7, 2);
    let (tx, rx) = mpsc::channel();
    let addr = b.addr;
    let other2 = other.clone();
    let client = std::thread::spawn(move || {
        let mut c = Ctl::connect(addr);
        c.login(common::USER, common::PASS);
        let t = Instant::now();
        let (_, fin) = c.store("STOR other.bin", &other2);
        let _ = tx.send(("STOR", fin.code, t.elapsed(), Vec::new()));
        let t = Instant::now();
        let (fin, got) = c.retr("other.bin");
        let _ = tx.send(("RETR", fin.code, t.elapsed(), got));
        let t = Instant::now();
        let (fin, text) = c.list("LIST");
        let _ = tx.send(("LIST", fin.code, t.elapsed(), text.into_bytes()));
    });
    let mut got = Vec::new();
    for step in ["STOR", "RETR", "LIST"] {
        let r = rx.recv_timeout(BOUND).unwrap_or_else(|_| {
            panic!(
                "{step} on the other backend got no reply within {BOUND:?} while the mount \
                 was frozen: its writes waited on the frozen file system's\n{}\n{}",
                describe(&writers(b.pid())),
                common::tail(&b.logs(), 30)
            )
        });
        assert_eq!(r.0, step);
        assert_eq!(r.1, 226, "{step} on the other backend");
        println!("{step} on the other backend: {:.2} s", r.2.as_secs_f64());
        got.push(r.3);
    }
    client.join().expect("other client");
    assert_eq!(sha(&got[1]), sha(&other), "RETR of other.bin");
    let listing = String::from_utf8_lossy(&got[2]);
    assert!(
        listing.contains("other.bin") && listing.contains(&other.len().to_string()),
        "{listing}"
    );
    assert_eq!(
        common::sha_file(&b.root().join("other.bin")),
        sha(&other),
        "other.bin on disk"
    );
    // The mount's writers were blocked all along: the freeze held.
    let still = writers(b.pid());
    assert!(
        still.iter().filter(|w| w.in_write).count() >= threads,
        "the mount's writers were released before the other upload ended:\n{}",
        describe(&still)
    );
    let frozen_for = frozen_at.elapsed();

    // 6. Thaw A; every hung upload ends with 226 and exactly its bytes on A, or with
    //    an error and nothing under its name.
    drop(thaw);
    let mut summary = Vec::new();
    let thawed = Instant::now();
    for _ in 0..n {
        let o = ended
            .recv_timeout(Duration::from_secs(45).saturating_sub(thawed.elapsed()))
            .unwrap_or_else(|_| {
                panic!(
                    "the hung uploads did not all end within 45 s of the thaw\nwriters:\n{}\n\
                     rclone:\n{}\nB:\n{}\nA:\n{}",
                    describe(&writers(b.pid())),
                    common::tail(&m.rclone_log(), 40),
                    common::tail(&b.logs(), 40),
                    common::tail(&a.logs(), 40)
                )
            });
        let at = format!("b/{}", o.name);
        match o.code {
            226 => wait_on_a(&a, &at, &o.data, &m, &b),
            400..=599 => {
                std::thread::sleep(Duration::from_millis(500));
                let got = on_a(&a, &at);
                assert!(
                    got.is_none(),
                    "{} failed ({}) but A stores {} bytes under its name",
                    o.name,
                    o.text.trim(),
                    got.map_or(0, |d| d.len())
                );
            }
            c => panic!("{}: unexpected reply {c}: {}", o.name, o.text),
        }
        summary.push(format!(
            "{} {}{}",
            o.name,
            o.code,
            o.send_error
                .map(|e| format!(" (send: {e})"))
                .unwrap_or_default()
        ));
    }
    println!(
        "frozen {:.1} s; hung uploads: {}; wall {:.1} s",
        frozen_for.as_secs_f64(),
        summary.join(", "),
        begin.elapsed().as_secs_f64()
    );
    drop(b);
    drop(m);
}

/// An upload whose write error only `close()` reports fails instead of getting 226
/// (a bug found while writing the test above). With `--vfs-cache-mode off`, rclone's
/// fsync is a no-op and its upload's result comes back at the FUSE flush, i.e. at
/// `close()` (NFS also reports write-back errors there). Here A is a local-disk ftpgate,
/// which refuses B's `.ftpgate-tmp-*` name (553): B used to answer 226 and log
/// `result="ok"` with nothing stored. The local backend now closes the temporary file
/// before publishing it and fails the upload on `close()`'s error.
#[test]
fn a_write_error_reported_at_close_fails_the_upload() {
    if !tools_present() {
        return;
    }
    let a = Gate::start();
    let work = tempfile::tempdir().unwrap();
    let (b, m) = gate_in_mount(&a, work.path(), &[]);
    let mut fz = b.ctl();
    fz.login(FZ_USER, FZ_PASS);
    let data = payload(300_000, 3);
    let (_, fin) = fz.store("STOR lost.bin", &data);
    // A can never store it (it refuses the temporary name): the upload must fail.
    assert!(
        (400..600).contains(&fin.code),
        "an upload that never landed got {fin:?}\n{}",
        b.logs()
    );
    assert!(on_a(&a, "b/lost.bin").is_none(), "{fin:?}");
    // The session goes on, and the backend's other uploads are unaffected.
    assert_eq!(fz.cmd("NOOP").code, 200);
    drop(m);
}
