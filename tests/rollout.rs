//! The cluster's daily events behind the shipped HAProxy settings
//! (`deploy/haproxy/haproxy.cfg` loaded as shipped, only addresses filled in, its
//! check interval and fall/rise untouched), three ftpgate replicas on one moto
//! bucket, 30 clients from their own loopback addresses working all the time
//! (login, PASV or EPSV, STOR, RETR with a hash check, QUIT):
//!
//! - a rolling restart (SIGTERM, exit, start again, back UP, one replica after
//!   the other) loses no session and no upload: every upload answered 226 is
//!   intact in the bucket, and nothing else is there;
//! - S3 stalled for 9 s (moto stopped with SIGSTOP) takes no replica out of the
//!   balancer: sessions that do not touch S3 all succeed, the others end with a
//!   reply (never a hang) and succeed on retry, and every session started 15 s
//!   after the stall ends succeeds.
//!
//! The two tests run one after the other (a lock): each one alone loads the 2-core
//! CI machine.

mod common;

#[path = "../backends/s3/tests/common/mod.rs"]
mod moto;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::haproxy::{self, Replica, Spec, LB};
use common::{payload, sha, PASS, USER};

const CLIENTS: u8 = 30;
const PASSIVE_PORTS: u16 = 20;
/// No reply may take longer than this (a hang fails the test).
const REPLY_BOUND: Duration = Duration::from_secs(60);

static SERIAL: Mutex<()> = Mutex::new(());

/// Sets the flag when dropped: the clients stop also when the test panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A minimal control connection that reports instead of panicking.
struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
    ip: String,
    lb: SocketAddr,
}

/// Where a session failed.
#[derive(Debug, Clone)]
struct Failure {
    step: &'static str,
    /// The reply code, when the server answered (None: connection error or hang).
    code: Option<u16>,
    text: String,
    started: Instant,
    took: Duration,
}

/// What one session did.
#[derive(Debug, Clone)]
struct Done {
    replica: char,
    started: Instant,
    took: Duration,
}

type Step<T> = Result<T, (&'static str, Option<u16>, String)>;

impl Client {
    fn connect(ip: &str, lb: SocketAddr) -> Step<(Client, char)> {
        let s = common::try_connect_from(ip, lb).map_err(|e| ("connect", None, e.to_string()))?;
        s.set_read_timeout(Some(REPLY_BOUND)).unwrap();
        let mut c = Client {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            ip: ip.to_owned(),
            lb,
        };
        let (code, text) = c.reply("greeting")?;
        if code != 220 {
            return Err(("greeting", Some(code), text));
        }
        let who = text
            .split("replica ")
            .nth(1)
            .and_then(|r| r.chars().next())
            .unwrap_or('?');
        Ok((c, who))
    }

    fn reply(&mut self, step: &'static str) -> Step<(u16, String)> {
        let mut text = String::new();
        loop {
            let mut l = String::new();
            match self.r.read_line(&mut l) {
                Ok(0) => return Err((step, None, format!("closed after {text:?}"))),
                Ok(_) => {}
                Err(e) => return Err((step, None, format!("read: {e}"))),
            }
            text.push_str(&l);
            let code = l.get(..3).and_then(|c| c.parse::<u16>().ok());
            // RFC 959 multi-line replies end with `code ` on a line.
            if l.as_bytes().get(3) == Some(&b' ') && code.is_some() {
                return Ok((code.unwrap_or(0), text));
            }
        }
    }

    fn cmd(&mut self, step: &'static str, line: &str, want: u16) -> Step<String> {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| (step, None, format!("write: {e}")))?;
        let (code, text) = self.reply(step)?;
        if code != want {
            return Err((step, Some(code), text));
        }
        Ok(text)
    }

    /// PASV or EPSV, then the data connection through the balancer.
    fn data(&mut self, epsv: bool) -> Step<TcpStream> {
        let port = if epsv {
            let t = self.cmd("EPSV", "EPSV", 229)?;
            t.split("|||")
                .nth(1)
                .and_then(|r| r.split('|').next())
                .and_then(|p| p.parse().ok())
                .ok_or(("EPSV", Some(229), t.clone()))?
        } else {
            let t = self.cmd("PASV", "PASV", 227)?;
            let a = common::pasv_addr(&t);
            if a.ip().to_string() != LB {
                return Err(("PASV", Some(227), format!("not the balancer: {t}")));
            }
            a.port()
        };
        let d = common::try_connect_from(&self.ip, SocketAddr::new(self.lb.ip(), port))
            .map_err(|e| ("data connect", None, e.to_string()))?;
        d.set_read_timeout(Some(REPLY_BOUND)).unwrap();
        d.set_write_timeout(Some(REPLY_BOUND)).unwrap();
        Ok(d)
    }
}

/// One whole session: login, then (with `upload`) STOR it and RETR it back with a
/// hash check, or (without) only commands that never touch storage. `stored` is
/// set once the upload was answered 226.
fn session(
    ip: &str,
    lb: SocketAddr,
    upload: Option<(&str, &[u8])>,
    epsv: bool,
    stored: &mut bool,
) -> Result<Done, Failure> {
    let started = Instant::now();
    let mut run = || -> Step<char> {
        let (mut c, who) = Client::connect(ip, lb)?;
        c.cmd("USER", &format!("USER {USER}"), 331)?;
        c.cmd("PASS", &format!("PASS {PASS}"), 230)?;
        match upload {
            None => {
                c.cmd("PWD", "PWD", 257)?;
                c.cmd("TYPE", "TYPE I", 200)?;
                c.cmd("NOOP", "NOOP", 200)?;
            }
            Some((name, data)) => {
                let mut d = c.data(epsv)?;
                c.cmd("STOR", &format!("STOR {name}"), 150)?;
                d.write_all(data)
                    .map_err(|e| ("STOR data", None, e.to_string()))?;
                drop(d);
                let (code, text) = c.reply("STOR end")?;
                if code != 226 {
                    return Err(("STOR end", Some(code), text));
                }
                *stored = true;
                let mut d = c.data(!epsv)?;
                c.cmd("RETR", &format!("RETR {name}"), 150)?;
                let mut got = Vec::new();
                d.read_to_end(&mut got)
                    .map_err(|e| ("RETR data", None, e.to_string()))?;
                let (code, text) = c.reply("RETR end")?;
                if code != 226 {
                    return Err(("RETR end", Some(code), text));
                }
                if sha(&got) != sha(data) {
                    return Err(("RETR hash", None, format!("{} bytes differ", got.len())));
                }
            }
        }
        c.cmd("QUIT", "QUIT", 221)?;
        Ok(who)
    };
    match run() {
        Ok(replica) => Ok(Done {
            replica,
            started,
            took: started.elapsed(),
        }),
        Err((step, code, text)) => Err(Failure {
            step,
            code,
            text,
            started,
            took: started.elapsed(),
        }),
    }
}

/// What every client thread recorded.
#[derive(Default)]
struct Record {
    done: Vec<Done>,
    failures: Vec<(String, Failure)>,
    /// Uploads answered 226: name → SHA-256.
    uploads: BTreeMap<String, String>,
    /// Per client: its failures were each followed by a successful session.
    unrecovered: Vec<String>,
}

/// Runs `CLIENTS` clients until `stop`; `storage(i)` says whether client `i`
/// transfers files or only runs commands that never touch storage.
fn clients(lb: SocketAddr, stop: &AtomicBool, storage: impl Fn(u8) -> bool + Sync) -> Record {
    let record = Mutex::new(Record::default());
    std::thread::scope(|s| {
        for i in 1..=CLIENTS {
            let (record, storage) = (&record, &storage);
            s.spawn(move || {
                let ip = format!("127.0.1.{i}");
                let mut n = 0u64;
                let mut pending_failure = false;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let name = format!("c{i}-{n}.bin");
                    let data = payload(
                        20_000 + (n as usize * 7919 + usize::from(i) * 104_729) % 180_000,
                        n * 100 + u64::from(i),
                    );
                    let upload = storage(i).then_some((name.as_str(), data.as_slice()));
                    let mut stored = false;
                    let r = session(
                        &ip,
                        lb,
                        upload,
                        (n + u64::from(i)).is_multiple_of(2),
                        &mut stored,
                    );
                    let mut rec = record.lock().unwrap();
                    if stored {
                        rec.uploads.insert(name.clone(), sha(&data));
                    }
                    match r {
                        Ok(d) => {
                            rec.done.push(d);
                            pending_failure = false;
                        }
                        Err(f) => {
                            rec.failures.push((ip.clone(), f));
                            pending_failure = true;
                        }
                    }
                    drop(rec);
                    if pending_failure {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                if pending_failure {
                    record.lock().unwrap().unrecovered.push(ip);
                }
            });
        }
    });
    record.into_inner().unwrap()
}

/// Every upload answered 226 is in the bucket with its hash; with `exact`, nothing
/// else is (no upload that failed left an object).
fn bucket_holds(m: &moto::Server, bucket: &str, uploads: &BTreeMap<String, String>, exact: bool) {
    let got = m.boto(
        bucket,
        "import hashlib\n\
         out = {}\n\
         for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket):\n\
         \x20   for o in page.get('Contents', []):\n\
         \x20       body = s3.get_object(Bucket=bucket, Key=o['Key'])['Body'].read()\n\
         \x20       out[o['Key']] = hashlib.sha256(body).hexdigest()\n\
         print(json.dumps(out))",
    );
    let got: BTreeMap<String, String> = serde_json::from_value(got).unwrap();
    // Directory markers (keys ending in /) are not uploads.
    let files: BTreeMap<_, _> = got.into_iter().filter(|(k, _)| !k.ends_with('/')).collect();
    let missing: Vec<_> = uploads.keys().filter(|k| !files.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "uploads answered 226 but not in S3: {missing:?}"
    );
    let wrong: Vec<_> = uploads
        .iter()
        .filter(|(k, v)| files.get(*k) != Some(v))
        .collect();
    assert!(wrong.is_empty(), "uploads changed in S3: {wrong:?}");
    let extra: Vec<_> = files.keys().filter(|k| !uploads.contains_key(*k)).collect();
    assert!(
        !exact || extra.is_empty(),
        "objects no upload was answered 226 for: {extra:?}"
    );
}

/// Three replicas at 127.0.0.11-13 on fixed ports, HAProxy on the shipped
/// settings (`fast_checks` false) in front.
struct Cluster {
    replicas: Vec<Replica>,
    hap: haproxy::Haproxy,
    lb: SocketAddr,
    _dir: tempfile::TempDir,
}

fn cluster(m: &moto::Server, bucket: &str, server: &str) -> Cluster {
    let lb_ctl = haproxy::free_ports(1);
    let pasv = haproxy::free_ports(PASSIVE_PORTS);
    let range = (pasv, pasv + PASSIVE_PORTS - 1);
    let replicas: Vec<Replica> = ['A', 'B', 'C']
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let spec = Spec::fixed(*name, &format!("127.0.0.1{}", i + 1));
            let toml = haproxy::replica_toml(&spec, &m.endpoint(), bucket, range, server);
            haproxy::start_replica(*name, toml)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.sock");
    let refs: Vec<&Replica> = replicas.iter().collect();
    let cfg = haproxy::shipped_cfg(&refs, lb_ctl, pasv, PASSIVE_PORTS, &stats, false);
    let hap = haproxy::start(&cfg, dir.path(), &stats);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::path::Path::new(&stats).exists() {
        assert!(Instant::now() < deadline, "no HAProxy stats socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in ["r1", "r2", "r3"] {
        hap.wait_status(r, "UP", Duration::from_secs(30));
    }
    Cluster {
        replicas,
        hap,
        lb: format!("{LB}:{lb_ctl}").parse().unwrap(),
        _dir: dir,
    }
}

fn report(failures: &[(String, Failure)]) -> String {
    failures
        .iter()
        .map(|(ip, f)| {
            format!(
                "{ip}: {} -> {:?} {} after {:?}",
                f.step,
                f.code,
                f.text.trim(),
                f.took
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lock that runs these tests one at a time, the moto server and a fresh
/// bucket; `None` (skipped) without haproxy or moto outside CI.
fn prepare() -> Option<(
    std::sync::MutexGuard<'static, ()>,
    &'static moto::Server,
    String,
)> {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !common::require("haproxy") {
        return None;
    }
    let m = moto::moto()?;
    let bucket = m.bucket();
    Some((serial, m, bucket))
}

#[test]
fn rolling_restart_behind_haproxy_loses_no_session() {
    let Some((_serial, m, bucket)) = prepare() else {
        return;
    };
    let mut c = cluster(m, &bucket, "");
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let mut restarted_at = Vec::new();
    let record = std::thread::scope(|s| {
        let lb = c.lb;
        let stop = &stop;
        let h = s.spawn(move || clients(lb, stop, |_| true));
        let _stop = StopOnDrop(stop);
        std::thread::sleep(Duration::from_secs(3));
        for (i, server) in ["r1", "r2", "r3"].iter().enumerate() {
            let r = &mut c.replicas[i];
            // SIGTERM: exit within delay (5) + quiet drain + margin; then start again.
            r.restart(Duration::from_secs(25));
            c.hap.wait_status(server, "UP", Duration::from_secs(30));
            restarted_at.push((r.name, Instant::now()));
            std::thread::sleep(Duration::from_secs(3));
        }
        stop.store(true, Ordering::SeqCst);
        h.join().unwrap()
    });
    let took = t0.elapsed();
    let transfers = record.uploads.len() * 2;
    println!(
        "rollout: {} sessions, {} transfers ({} uploads), 3 restarts, {:.0} s, {} failed",
        record.done.len() + record.failures.len(),
        transfers,
        record.uploads.len(),
        took.as_secs_f64(),
        record.failures.len()
    );
    assert!(
        record.failures.is_empty(),
        "failed sessions during the rollout:\n{}\nHAProxy:\n{}",
        report(&record.failures),
        common::tail(&c.hap.log.lock().unwrap(), 40)
    );
    assert!(
        record.done.len() >= 100,
        "too little traffic: {}",
        record.done.len()
    );
    // Each replica took new sessions again after its restart (the hash, not the
    // table, places clients without an open session).
    for (name, at) in &restarted_at {
        assert!(
            record
                .done
                .iter()
                .any(|d| d.replica == *name && d.started > *at),
            "replica {name} got no session after its restart"
        );
    }
    // Every replica was marked DOWN once (the rollout really moved clients).
    for s in c
        .hap
        .servers()
        .iter()
        .filter(|s| s.backend == "ftp_control")
    {
        assert_eq!(s.chkdown, 1, "{s:?}");
    }
    bucket_holds(m, &bucket, &record.uploads, true);
}

/// Pauses a process tree with SIGSTOP; SIGCONT on drop (also when the test fails).
struct Paused(Vec<u32>);

impl Paused {
    fn new(pids: Vec<u32>) -> Paused {
        assert!(!pids.is_empty(), "no S3 server process to stop");
        for p in &pids {
            let _ = std::process::Command::new("kill")
                .arg("-STOP")
                .arg(p.to_string())
                .status();
        }
        Paused(pids)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("kill")
                .arg("-CONT")
                .arg(p.to_string())
                .status();
        }
    }
}

#[test]
fn s3_stall_takes_no_replica_out() {
    let Some((_serial, m, bucket)) = prepare() else {
        return;
    };
    // Backend checks every second, so the stall surely shows in metric and log.
    let c = cluster(m, &bucket, "backend_check_interval_secs = 1\n");
    let stop = AtomicBool::new(false);
    let (record, stall_end) = std::thread::scope(|s| {
        let lb = c.lb;
        let stop = &stop;
        // Odd clients transfer files, even ones never touch storage.
        let h = s.spawn(move || clients(lb, stop, |i| i % 2 == 1));
        let _stop = StopOnDrop(stop);
        std::thread::sleep(Duration::from_secs(3));
        let paused = Paused::new(m.pids());
        let stalled = Instant::now();
        // The stall shows: backend down in the metric, readiness unchanged and fast.
        let http = c.replicas[0].http;
        let deadline = stalled + Duration::from_secs(8);
        loop {
            let t = Instant::now();
            let (ready, _) = common::http_get(http, "/readyz");
            assert_eq!(ready, 200, "/readyz followed the stalled S3");
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "/readyz waited {:?}",
                t.elapsed()
            );
            let metrics = common::http_get(http, "/metrics").1;
            if common::metric(&metrics, r#"ftpgate_backend_up{backend="storage"}"#) == 0.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ftpgate_backend_up stayed 1 during the stall"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let left = Duration::from_secs(9).saturating_sub(stalled.elapsed());
        std::thread::sleep(left);
        drop(paused);
        let stall_end = Instant::now();
        std::thread::sleep(Duration::from_secs(25));
        stop.store(true, Ordering::SeqCst);
        (h.join().unwrap(), stall_end)
    });
    // No replica was marked down at any time.
    let servers = c.hap.servers();
    assert!(
        servers.iter().all(|s| s.chkdown == 0 && s.status == "UP"),
        "{servers:?}\n{}",
        common::tail(&c.hap.log.lock().unwrap(), 30)
    );
    let storage_clients: HashSet<String> = (1..=CLIENTS)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("127.0.1.{i}"))
        .collect();
    for (ip, f) in &record.failures {
        // Sessions without storage never fail.
        assert!(
            storage_clients.contains(ip),
            "{ip} (no storage) failed: {f:?}"
        );
        // Storage sessions end with a reply, never a hang or a refused connection.
        assert!(f.code.is_some(), "{ip}: no reply: {f:?}");
        assert!(f.took < REPLY_BOUND, "{ip}: {f:?}");
        // Sessions started 15 s after the stall all succeed.
        assert!(
            f.started < stall_end + Duration::from_secs(15),
            "{ip} failed 15 s after the stall: {f:?}"
        );
    }
    assert!(
        record.unrecovered.is_empty(),
        "no successful retry: {:?}",
        record.unrecovered
    );
    let late = record
        .done
        .iter()
        .filter(|d| d.started > stall_end + Duration::from_secs(15))
        .count();
    assert!(
        late >= CLIENTS as usize,
        "too few sessions after the stall: {late}"
    );
    let slowest = record.done.iter().map(|d| d.took).max().unwrap_or_default();
    println!(
        "S3 stall 9 s: {} sessions ok (slowest {:.1} s), {} failed with a reply, {} after +15 s",
        record.done.len(),
        slowest.as_secs_f64(),
        record.failures.len(),
        late
    );
    // The outage and the recovery were logged.
    for r in &c.replicas {
        r.gate.wait_log("backend degraded");
        r.gate.wait_log("backend recovered");
    }
    bucket_holds(m, &bucket, &record.uploads, false);
}
