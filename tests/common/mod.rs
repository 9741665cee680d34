//! Test harness: starts the real `ftpgate` binary (the one cargo built) on
//! 127.0.0.1:0 with a temporary root and config, and offers a raw FTP control
//! client for protocol-level assertions.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `rclone mount` of a gate.
pub mod mount;
/// A thread racing path resolution with `renameat2(RENAME_EXCHANGE)`.
pub mod swap;

/// A small HTTP server for webhook and auth-hook tests.
pub mod receiver;

/// Replicas behind HAProxy running the shipped `deploy/haproxy/haproxy.cfg`.
pub mod haproxy;

pub const USER: &str = "tester";
pub const PASS: &str = "s3cret pass";

/// Options for a server under test.
pub struct Opts {
    /// `local` or `memory`.
    pub storage: &'static str,
    /// Extra TOML appended to the generated config (may add sections).
    pub extra: String,
    /// Extra `[[users]]` entries as (name, password, home, permissions TOML array).
    pub users: Vec<(String, String, String, String)>,
    /// Server-section TOML lines.
    pub server: String,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            storage: "local",
            extra: String::new(),
            users: Vec::new(),
            server: String::new(),
        }
    }
}

/// A running ftpgate.
pub struct Gate {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
}

pub fn hash(pw: &str) -> String {
    ftpgate::auth::hash_password(pw).expect("hash")
}

impl Gate {
    pub fn start() -> Gate {
        Self::start_with(Opts::default())
    }

    pub fn start_with(opts: Opts) -> Gate {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("data");
        let mut toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nlogin_failure_delay_ms = 10\n{}\n\
             [storage]\nkind = \"{}\"\nroot = \"{}\"\n\n\
             [[users]]\nname = \"{USER}\"\npassword_hash = \"{}\"\n\n",
            opts.server,
            opts.storage,
            root.display(),
            hash(PASS)
        );
        for (name, pw, home, perms) in &opts.users {
            toml.push_str(&format!(
                "[[users]]\nname = \"{name}\"\npassword_hash = \"{}\"\nhome = \"{home}\"\npermissions = {perms}\n\n",
                hash(pw)
            ));
        }
        toml.push_str(&opts.extra);
        let cfg = dir.path().join("ftpgate.toml");
        std::fs::write(&cfg, toml).expect("write config");
        Self::spawn(dir, &cfg)
    }

    /// Starts on an S3 bucket at `endpoint` (key prefix `ftp`, 5 MiB parts, test
    /// credentials, the default user); `storage` adds keys to `[storage]`. No
    /// background backend checks: tests count the S3 requests of each command.
    pub fn start_s3(endpoint: &str, bucket: &str, storage: &str) -> Gate {
        Self::start_s3_server(endpoint, bucket, storage, "")
    }

    /// [`Gate::start_s3`] with `server` lines added to `[server]`.
    pub fn start_s3_server(endpoint: &str, bucket: &str, storage: &str, server: &str) -> Gate {
        let (endpoint, bucket, storage) =
            (endpoint.to_owned(), bucket.to_owned(), storage.to_owned());
        let server = server.to_owned();
        Self::start_toml(move |_| {
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nlogin_failure_delay_ms = 10\n\
                 backend_check_interval_secs = 0\n{server}\n\
                 [storage]\nkind = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"ftp\"\nendpoint = \"{endpoint}\"\n\
                 force_path_style = true\nallow_http = true\naccess_key_id = \"testing\"\n\
                 secret_access_key = \"testing\"\npart_size_mib = 5\n{storage}\n\
                 [[users]]\nname = \"{USER}\"\npassword_hash = \"{}\"\n",
                hash(PASS)
            )
        })
    }

    /// Starts on local storage with the users of `users_file` only.
    pub fn start_users_file(users: &Path) -> Gate {
        Self::start_toml(|d| {
            format!(
                "users_file = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\nlogin_failure_delay_ms = 10\n\
                 [storage]\nroot = \"{}\"\n",
                users.display(),
                d.join("data").display()
            )
        })
    }

    /// Starts with a whole config written by `make(tempdir)`.
    pub fn start_toml(make: impl FnOnce(&Path) -> String) -> Gate {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("ftpgate.toml");
        std::fs::write(&cfg, make(dir.path())).expect("write config");
        Self::spawn(dir, &cfg)
    }

    fn spawn(dir: tempfile::TempDir, cfg: &Path) -> Gate {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftpgate"));
        cmd.arg("--config").arg(cfg);
        let (child, addr, log) = spawn_listening(cmd);
        Gate {
            child,
            addr,
            dir,
            log,
        }
    }

    /// The server's peak resident set size so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// The local backend's root directory on disk.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `ftp://tester:pass@127.0.0.1:port` with the password percent-encoded.
    pub fn url(&self) -> String {
        format!("ftp://{USER}:{}@{}", PASS.replace(' ', "%20"), self.addr)
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `HUP`, …) without waiting.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(st.success(), "kill -{sig} failed");
    }

    /// Waits up to `limit` for the process to exit; its status code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The `addr=` of the first log line containing `marker` (e.g. `http endpoint
    /// bound`), waiting up to 10 s for it.
    pub fn logged_addr(&self, marker: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if let Some(addr) = logs
                .lines()
                .filter(|l| l.contains(marker))
                .find_map(|l| l.split_once("addr=").map(|(_, r)| r.to_owned()))
                .and_then(|r| r.split_whitespace().next().and_then(|a| a.parse().ok()))
            {
                return addr;
            }
            assert!(Instant::now() < deadline, "no `{marker}` line in:\n{logs}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to 10 s for `needle` to appear in the log.
    pub fn wait_log(&self, needle: &str) {
        self.wait_logs(&format!("`{needle}`"), |l| l.contains(needle));
    }

    /// Waits (up to 10 s) until the log captured so far satisfies `pred` and
    /// returns it. The server may write an event after the reply the test saw,
    /// and stderr is read on a thread: never assert on `logs()` directly.
    pub fn wait_logs(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if pred(&logs) {
                return logs;
            }
            assert!(Instant::now() < deadline, "no {what} in:\n{logs}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A positive signal before checking that something did *not* happen: opens
    /// a new control connection and waits until the server's log shows it. The
    /// server writes its log in order, so once that event is read, every event of
    /// the commands answered before this call is in the returned log.
    pub fn log_barrier(&self) -> String {
        let mut s = TcpStream::connect(self.addr).expect("barrier connection");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut greeting = [0u8; 3];
        s.read_exact(&mut greeting).expect("barrier greeting");
        let peer = format!("peer={}", s.local_addr().unwrap());
        self.wait_logs("the barrier connection", |l| l.contains(&peer))
    }

    /// Sends SIGTERM and waits for exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Raw control connection, greeting consumed.
    pub fn ctl(&self) -> Ctl {
        Ctl::connect(self.addr)
    }

    /// Raw control connection, logged in as the default user.
    pub fn login(&self) -> Ctl {
        let mut c = self.ctl();
        c.login(USER, PASS);
        c
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The control address from a `listening` log line (text or JSON format).
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = line
        .split_once("addr=")
        .or_else(|| line.split_once("\"addr\":\""))?
        .1;
    rest.split(|c: char| c.is_whitespace() || c == '"')
        .next()?
        .parse()
        .ok()
}

/// Spawns the binary (stderr captured into a shared log) and waits for its
/// `listening` line.
pub fn spawn_listening(mut cmd: Command) -> (Child, SocketAddr, Arc<Mutex<String>>) {
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "ftpgate=debug,info");
    }
    let mut child = cmd
        .env_remove("FTPGATE_SERVER__LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ftpgate");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = listening_addr(&line) {
                if let Some(t) = tx.take() {
                    let _ = t.send(addr);
                }
            }
            let mut l = log2.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => (child, addr, log),
        Err(_) => {
            let _ = child.kill();
            panic!("ftpgate did not start:\n{}", log.lock().unwrap());
        }
    }
}

/// The address of a `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)` reply.
pub fn pasv_addr(text: &str) -> SocketAddr {
    let inner = text
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(a, _)| a)
        .unwrap_or_else(|| panic!("bad 227: {text}"));
    let n: Vec<u16> = inner
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    format!("{}.{}.{}.{}:{}", n[0], n[1], n[2], n[3], n[4] * 256 + n[5])
        .parse()
        .unwrap()
}

/// A TCP connection to `addr` from the loopback source address `from`.
pub fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    try_connect_from(from, addr).expect("connect")
}

/// [`connect_from`] that reports a refused connection.
pub fn try_connect_from(from: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let src: SocketAddr = format!("{from}:0").parse().expect("source address");
    sock.bind(&src.into())?;
    sock.connect(&addr.into())?;
    Ok(sock.into())
}

/// A PROXY v2 header for a TCP connection from `source` to `destination`.
pub fn proxy_v2(source: &str, destination: &str) -> Vec<u8> {
    let src: SocketAddr = source.parse().unwrap();
    let dst: SocketAddr = destination.parse().unwrap();
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (src, dst),
    )
    .build()
    .unwrap()
}

/// A plain HTTP/1.1 GET (status, body) — for the `/healthz`, `/readyz` and
/// `/metrics` endpoint.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http_get_with(addr, path, None);
    (status, body)
}

/// An HTTP/1.1 GET with an optional `Accept` header: (status, `Content-Type`, body).
pub fn http_get_with(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read http");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP response: {raw}"));
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// The value of one Prometheus sample line `name{labels} value` (0 when absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map(|v| v.trim().parse().expect("metric value"))
        .unwrap_or(0.0)
}

/// A raw FTP control connection.
pub struct Ctl {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
    /// The 220 greeting's text.
    pub greeting: String,
}

/// A reply: code and full text (all lines).
#[derive(Debug, Clone)]
pub struct Resp {
    pub code: u16,
    pub text: String,
}

impl Ctl {
    pub fn connect(addr: SocketAddr) -> Ctl {
        Self::over(TcpStream::connect(addr).expect("connect"))
    }

    /// A control connection from source address `from` (e.g. 127.0.0.2) that
    /// first sends `prefix` (a PROXY header, or nothing); greeting consumed.
    pub fn connect_from(from: &str, addr: SocketAddr, prefix: &[u8]) -> Ctl {
        let mut s = connect_from(from, addr);
        s.write_all(prefix).unwrap();
        Self::over(s)
    }

    /// Wraps a connected stream and consumes the 220 greeting.
    pub fn over(s: TcpStream) -> Ctl {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Ctl {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            greeting: String::new(),
        };
        let g = c.read();
        assert_eq!(g.code, 220, "{g:?}");
        c.greeting = g.text;
        c
    }

    pub fn login(&mut self, user: &str, pass: &str) {
        assert_eq!(self.cmd(&format!("USER {user}")).code, 331);
        let r = self.cmd(&format!("PASS {pass}"));
        assert_eq!(r.code, 230, "{r:?}");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    /// Reads one reply, following the RFC 959 multi-line form.
    pub fn read(&mut self) -> Resp {
        let mut first = String::new();
        self.r.read_line(&mut first).expect("read reply");
        assert!(first.len() >= 4, "short reply line {first:?}");
        let code: u16 = first[..3]
            .parse()
            .unwrap_or_else(|_| panic!("bad reply {first:?}"));
        let mut text = first.clone();
        if first.as_bytes()[3] == b'-' {
            let end = format!("{code} ");
            loop {
                let mut l = String::new();
                if self.r.read_line(&mut l).unwrap() == 0 {
                    break;
                }
                text.push_str(&l);
                if l.starts_with(&end) {
                    break;
                }
            }
        }
        Resp { code, text }
    }

    pub fn cmd(&mut self, line: &str) -> Resp {
        self.w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        self.read()
    }

    /// EPSV; returns the announced port.
    pub fn epsv_port(&mut self) -> u16 {
        self.epsv_port_with("EPSV")
    }

    /// An EPSV form (`EPSV`, `EPSV 2`); returns the port from the 229 reply.
    pub fn epsv_port_with(&mut self, cmd: &str) -> u16 {
        let r = self.cmd(cmd);
        assert_eq!(r.code, 229, "{r:?}");
        r.text
            .split("|||")
            .nth(1)
            .unwrap()
            .split('|')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// EPSV and connect the data socket.
    pub fn epsv(&mut self) -> TcpStream {
        let port = self.epsv_port();
        TcpStream::connect(("127.0.0.1", port)).unwrap()
    }

    /// PASV and connect the data socket.
    pub fn pasv(&mut self) -> TcpStream {
        TcpStream::connect(self.pasv_addr()).unwrap()
    }

    /// PASV; the announced address.
    pub fn pasv_addr(&mut self) -> SocketAddr {
        let r = self.cmd("PASV");
        assert_eq!(r.code, 227, "{r:?}");
        pasv_addr(&r.text)
    }

    /// Downloads `path` over EPSV; returns (final reply, bytes).
    pub fn retr(&mut self, path: &str) -> (Resp, Vec<u8>) {
        let mut d = self.epsv();
        let r = self.cmd(&format!("RETR {path}"));
        if r.code != 150 && r.code != 125 {
            return (r, Vec::new());
        }
        let mut buf = Vec::new();
        d.read_to_end(&mut buf).unwrap();
        (self.read(), buf)
    }

    /// Uploads with `verb` (STOR/APPE/STOU) over EPSV; returns (150 reply, final reply).
    pub fn store(&mut self, verb_path: &str, data: &[u8]) -> (Resp, Resp) {
        let mut d = self.epsv();
        let r = self.cmd(verb_path);
        if r.code != 150 && r.code != 125 {
            return (r.clone(), r);
        }
        d.write_all(data).unwrap();
        drop(d);
        let fin = self.read();
        (r, fin)
    }

    /// A listing command over EPSV; returns (final reply, text).
    pub fn list(&mut self, cmd: &str) -> (Resp, String) {
        let mut d = self.epsv();
        let r = self.cmd(cmd);
        if r.code != 150 && r.code != 125 {
            return (r, String::new());
        }
        let mut s = String::new();
        d.read_to_string(&mut s).unwrap();
        (self.read(), s)
    }
}

/// SHA-256 hex of bytes.
pub fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// SHA-256 hex of a file.
pub fn sha_file(p: &Path) -> String {
    sha(&std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
}

/// Deterministic pseudo-random bytes.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// SHA-256 of every regular file under `root`, keyed by relative path. Files
/// named `.listing` (wget's LIST cache) are left out.
pub fn tree_hashes(root: &Path) -> std::collections::BTreeMap<String, String> {
    let mut map = std::collections::BTreeMap::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && e.file_name() != ".listing" {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                map.insert(rel, sha_file(&e.path()));
            }
        }
    }
    map
}

/// The last `n` lines of `s` (server logs in panic messages).
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a command with a deadline; an exit code of `None` means it was killed.
pub fn run_for(cmd: &mut Command, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = so.read_to_end(&mut s);
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = se.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = String::from_utf8_lossy(&t1.join().unwrap()).into_owned();
    let err = String::from_utf8_lossy(&t2.join().unwrap()).into_owned();
    (code, out, err)
}

/// Connects to the data port, sends `send` bytes (or reads `read` bytes), waits,
/// then closes with SO_LINGER {on, 0 s} so the kernel sends RST instead of FIN: how a
/// killed client or a middlebox ends a transfer.
pub fn reset_data(port: u16, send: usize, read: usize) {
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to data port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = socket2::Socket::from(s);
    let chunk: Vec<u8> = (0..=255u8).cycle().take(65536).collect();
    let mut left = send;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).expect("send before reset");
        left -= n;
    }
    let mut got = 0;
    let mut buf = vec![0u8; 65536];
    while got < read {
        match s.read(&mut buf[..(read - got).min(65536)]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// STOR `path`, send some bytes, reset. Returns the final reply.
pub fn interrupted_stor(c: &mut Ctl, path: &str, send: usize) -> Resp {
    let port = c.epsv_port();
    let r = c.cmd(&format!("STOR {path}"));
    assert!(r.code == 150 || r.code == 125, "{r:?}");
    reset_data(port, send, 0);
    c.read()
}

/// Removes the proxy variables from a client's environment (clients must talk to the
/// gate directly).
pub fn no_proxy(cmd: &mut Command) -> &mut Command {
    for v in [
        "ftp_proxy",
        "FTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    ] {
        cmd.env_remove(v);
    }
    cmd
}

/// Runs the suite (or only `tests`), skipping `skip`.
pub fn ftplib_suite(gate: &Gate, root: Option<&Path>, tests: &[&str], skip: &[&str]) {
    ftplib_suite_env(gate, root, tests, skip, &[]);
}

/// [`ftplib_suite`] with extra environment for the script (e.g. `FTP_NO_FEATURES`).
pub fn ftplib_suite_env(
    gate: &Gate,
    root: Option<&Path>,
    tests: &[&str],
    skip: &[&str],
    env: &[(&str, &str)],
) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ftplib_suite.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args(tests)
        .env("FTP_HOST", "127.0.0.1")
        .env("FTP_PORT", gate.port().to_string())
        .env("FTP_USER", USER)
        .env("FTP_PASS", PASS)
        .env(
            "FTP_ROOT",
            root.map(|p| p.display().to_string()).unwrap_or_default(),
        )
        .env("FTP_SKIP", skip.join(","))
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().copied());
    let (ok, out, err) = run(&mut cmd);
    println!("{out}");
    eprintln!("{err}");
    if !ok {
        panic!(
            "ftplib suite failed:\n{out}\n{err}\n--- server log (tail) ---\n{}",
            tail(&gate.logs(), 80)
        );
    }
    assert!(out.contains("all ftplib tests passed"), "{out}");
}

/// Runs the binary with `config` (TOML, if any) and `args` in a temporary working
/// directory, expects it to refuse to start, and returns what it printed on stderr.
pub fn refused_start(config: Option<&str>, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftpgate"));
    cmd.args(args).current_dir(dir.path());
    if let Some(toml) = config {
        let cfg = dir.path().join("ftpgate.toml");
        std::fs::write(&cfg, toml).unwrap();
        cmd.arg("--config").arg(cfg);
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "started although it should not: {err}"
    );
    err
}

/// Requires an external client; under CI a missing one fails the test, elsewhere
/// the test is skipped loudly.
pub fn require(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").is_ok() {
            panic!("{tool} is required under CI but is not installed");
        }
        eprintln!("SKIPPED: {tool} not installed (install it, CI does)");
    }
    found
}

/// Runs a command and returns (status ok, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------
// Security suite helpers (tests/ftps.rs, tests/attacks.rs)
// ---------------------------------------------------------------------------

/// A PEM certificate and key on disk.
#[derive(Debug, Clone)]
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A self-signed certificate for `IP:127.0.0.1, DNS:localhost` made with the
/// openssl command line (an independent implementation from the server's).
/// `name` is the file stem in `dir`; `cn` the subject common name.
pub fn make_cert(dir: &Path, name: &str, cn: &str) -> Cert {
    let cert = dir.join(format!("{name}.crt.pem"));
    let key = dir.join(format!("{name}.key.pem"));
    let (ok, out, err) = run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={cn}"))
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    assert!(ok, "openssl req failed: {out}\n{err}");
    Cert { cert, key }
}

/// SHA-256 fingerprint of a PEM certificate file, lower-case hex without colons.
pub fn cert_fingerprint(pem: &Path) -> String {
    let (ok, out, err) = run(Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem));
    assert!(ok, "openssl x509 failed: {err}");
    normalize_fingerprint(&out)
}

/// `sha256 Fingerprint=AB:CD:…` (or plain hex) → `abcd…`.
pub fn normalize_fingerprint(s: &str) -> String {
    let v = s.rsplit('=').next().unwrap_or(s);
    v.trim().replace(':', "").to_ascii_lowercase()
}

/// The `[tls]` section for `cert` plus `extra` lines (e.g. `implicit_listen = …`).
pub fn tls_section(cert: &Cert, extra: &str) -> String {
    format!(
        "\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{extra}\n",
        cert.cert.display(),
        cert.key.display()
    )
}

/// Resident set size of a process in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// TCP sockets in LISTEN state owned by the process (IPv4 and IPv6).
pub fn listening_sockets(pid: u32) -> usize {
    let mut listen_inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" {
                listen_inodes.insert(f[9].to_owned());
            }
        }
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .filter(|ino| listen_inodes.contains(ino))
        .count()
}

/// The first reply line on a fresh connection (code, text); `None` if the
/// server closed without a reply or sent garbage.
pub fn first_reply(s: &TcpStream) -> Option<(u16, String)> {
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let code = line.get(..3)?.parse().ok()?;
    Some((code, line))
}

/// A TCP proxy to a loopback port that can be cut (every connection closed, new
/// ones refused) and restored, and counts the bytes it carried from upstream.
pub struct Proxy {
    pub port: u16,
    down: Arc<std::sync::atomic::AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    from_upstream: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    pub fn new(upstream: u16) -> Self {
        Self::slowing(upstream, b"", Duration::ZERO)
    }

    /// A proxy that holds back, for `delay`, every chunk from upstream that contains
    /// `needle` (e.g. `<ListBucketResult`: S3 listings answer late).
    pub fn slowing(upstream: u16, needle: &'static [u8], delay: Duration) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(Vec::new()));
        let from_upstream = Arc::new(AtomicU64::new(0));
        let (d, lv, counter) = (down.clone(), live.clone(), from_upstream.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(client) = conn else { continue };
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut guard = lv.lock().unwrap();
                guard.push(client.try_clone().unwrap());
                guard.push(server.try_clone().unwrap());
                for (mut a, mut b, count) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        None,
                    ),
                    (server, client, Some(counter.clone())),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match a.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if count.is_some()
                                && !needle.is_empty()
                                && buf[..n].windows(needle.len()).any(|w| w == needle)
                            {
                                std::thread::sleep(delay);
                            }
                            if b.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            if let Some(c) = &count {
                                c.fetch_add(n as u64, Ordering::SeqCst);
                            }
                        }
                        let _ = b.shutdown(std::net::Shutdown::Both);
                        let _ = a.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self {
            port,
            down,
            live,
            from_upstream,
        }
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Bytes carried from upstream to clients so far.
    pub fn bytes_from_upstream(&self) -> u64 {
        self.from_upstream.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `count` consecutive ports free on `ip` (checked by binding them all, then released).
pub fn free_ports_on(ip: &str, count: u16) -> u16 {
    for _ in 0..200 {
        let base = 20000 + (rand_u16() % 20000);
        let held: Vec<_> = (base..base + count)
            .map_while(|p| std::net::TcpListener::bind((ip, p)).ok())
            .collect();
        if held.len() == count as usize {
            return base;
        }
    }
    panic!("no {count} consecutive free ports on {ip}");
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (t ^ std::process::id().wrapping_mul(2654435761)) as u16
}
