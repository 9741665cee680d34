//! Test harness: one S3 server per test binary, a fresh bucket per test, and boto3
//! (through python3) as an independent witness of what is in a bucket.
//!
//! Two independent S3 implementations are supported, so that the backend is not tuned
//! to one server's quirks:
//! - moto, found as `moto_server` on `PATH` (install: `pip install 'moto[server]'
//!   boto3`); keeps objects in memory. [`moto()`].
//! - s3s-fs, found as `s3s-fs` on `PATH` (install: `cargo install s3s-fs@0.14.1 --locked
//!   --features binary`); stores each object as a file under a root directory, which is
//!   created in the system temporary directory and removed when the server stops.
//!   Buckets are directories under that root (what its CreateBucket does). [`s3s_fs()`].
//!
//! Each server listens on 127.0.0.1 on a free port and is started through a small
//! python3 guard that holds a pipe from this process: when the test binary exits,
//! however it exits, the pipe closes and the guard terminates the server (and removes
//! its root directory), so no server outlives `cargo test`. Without the server the
//! tests print `SKIPPED: <program> not installed` and pass, unless `CI` is set: then
//! they fail.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ftpgate_backend_s3::{S3Backend, S3Config};

/// Which S3 implementation a [`Server`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Moto,
    S3sFs,
}

impl Kind {
    /// The program looked up on `PATH`.
    pub fn program(self) -> &'static str {
        match self {
            Kind::Moto => "moto_server",
            Kind::S3sFs => "s3s-fs",
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Kind::Moto => "pip install 'moto[server]' boto3",
            Kind::S3sFs => "cargo install s3s-fs@0.14.1 --locked --features binary",
        }
    }
}

/// A running S3 server.
pub struct Server {
    pub kind: Kind,
    pub port: u16,
    /// s3s-fs only: the directory that holds the buckets.
    root: Option<PathBuf>,
    /// moto only: its request log (one werkzeug line per HTTP request).
    log: Option<PathBuf>,
    /// The python guard; its stdin is the pipe whose closing stops the server.
    _guard: Mutex<Child>,
}

/// The moto server (the name the S3-specific tests use).
pub type Moto = Server;

/// The credentials both servers are started with (moto accepts any).
pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";

/// argv[1]: a directory to remove afterwards ("" for none); argv[2]: "1" to silence the
/// server's stderr, "log:PATH" to append it to PATH; argv[3:]: the server command. The guard exits when the server does
/// (so a server that fails to start is noticed), and stops the server when its stdin
/// (a pipe from the test binary) closes.
pub const GUARD: &str = r#"
import os, shutil, subprocess, sys, threading
cleanup, quiet, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
err = None
if quiet == "1":
    err = subprocess.DEVNULL
elif quiet.startswith("log:"):
    err = open(quiet[4:], "ab", buffering=0)
p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
def watch():
    try:
        sys.stdin.read()
    finally:
        p.terminate()
threading.Thread(target=watch, daemon=True).start()
try:
    try:
        rc = p.wait()
    except BaseException:
        p.terminate()
        rc = 1
    try:
        p.wait(timeout=5)
    except Exception:
        p.kill()
finally:
    if cleanup:
        shutil.rmtree(cleanup, ignore_errors=True)
    if quiet.startswith("log:"):
        try:
            os.remove(quiet[4:])
        except OSError:
            pass
sys.exit(rc)
"#;

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends one raw HTTP/1.1 request to a server; returns the status code and body.
pub fn http(port: u16, method: &str, target: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn start(kind: Kind) -> Option<Server> {
    let Some(program) = find_on_path(kind.program()) else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{} not installed ({}) and CI is set",
                kind.program(),
                kind.install_hint()
            );
        }
        return None;
    };
    let port = free_port();
    let mut guard = Command::new("python3");
    guard.arg("-c").arg(GUARD);
    let mut log = None;
    let root = match kind {
        Kind::Moto => {
            // moto logs every request on stderr: kept in a file, so tests can count
            // the requests a command cost (`Server::requests`).
            let path = std::env::temp_dir()
                .join(format!("ftpgate-moto-{}-{port}.log", std::process::id()));
            guard
                .arg("")
                .arg(format!("log:{}", path.display()))
                .arg(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            log = Some(path);
            None
        }
        Kind::S3sFs => {
            let root =
                std::env::temp_dir().join(format!("ftpgate-s3s-fs-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&root).expect("create the s3s-fs root directory");
            guard
                .arg(&root)
                .arg("0")
                .arg(&program)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(&root);
            Some(root)
        }
    };
    let mut child = guard
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start python3 guard for {}: {e}", kind.program()));
    wait_answering(&mut child, port, kind.program());
    Some(Server {
        kind,
        port,
        root,
        log,
        _guard: Mutex::new(child),
    })
}

/// Waits up to 60 s until the server `child` (its guard) answers HTTP on `port`; panics
/// when it exits first.
pub fn wait_answering(child: &mut Child, port: u16, program: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Any HTTP answer will do (s3s-fs refuses the anonymous request with 403).
        if let Ok((status, _)) = http(port, "GET", "/") {
            if status != 0 {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{program} exited at start-up ({status})");
        }
        assert!(
            Instant::now() < deadline,
            "{program} did not answer on 127.0.0.1:{port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn shared(cell: &'static OnceLock<Option<Server>>, kind: Kind) -> Option<&'static Server> {
    let server = cell.get_or_init(|| start(kind)).as_ref();
    if server.is_none() {
        println!("SKIPPED: {} not installed", kind.program());
    }
    server
}

/// A moto server of the caller's own (for tests that freeze it with SIGSTOP, which
/// would stall every other test on the shared one), or `None` when not installed.
pub fn private_moto() -> Option<Server> {
    let server = start(Kind::Moto);
    if server.is_none() {
        println!("SKIPPED: moto_server not installed");
    }
    server
}

/// The shared moto server, or `None` (after printing SKIPPED) when it is not installed.
pub fn moto() -> Option<&'static Server> {
    static MOTO: OnceLock<Option<Server>> = OnceLock::new();
    shared(&MOTO, Kind::Moto)
}

/// The shared s3s-fs server, or `None` (after printing SKIPPED) when it is not
/// installed.
pub fn s3s_fs() -> Option<&'static Server> {
    static S3S_FS: OnceLock<Option<Server>> = OnceLock::new();
    shared(&S3S_FS, Kind::S3sFs)
}

impl Server {
    /// The process id of the S3 server itself (the child of its python guard).
    pub fn server_pid(&self) -> u32 {
        let guard = self._guard.lock().unwrap_or_else(|p| p.into_inner()).id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let children = std::fs::read_to_string(format!("/proc/{guard}/task/{guard}/children"))
                .unwrap_or_default();
            if let Some(pid) = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
            {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "no server process under guard {guard}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A python3 process with a boto3 client on this server and `bucket`, reading
    /// commands from stdin, so a test can write an object within milliseconds
    /// (starting python with boto3 takes about a second).
    pub fn boto_shell(&self, bucket: &str) -> BotoShell {
        let script = "import boto3, sys\n\
            s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                aws_access_key_id=sys.argv[3], aws_secret_access_key=sys.argv[4])\n\
            bucket = sys.argv[2]\n\
            print('ready', flush=True)\n\
            for line in sys.stdin:\n\
            \x20   key, body = line.rstrip('\\n').split('\\t', 1)\n\
            \x20   s3.put_object(Bucket=bucket, Key=key, Body=body.encode())\n\
            \x20   print('ok', flush=True)\n";
        let mut child = self
            .python(script, bucket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3 with boto3");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut shell = BotoShell {
            child,
            stdin,
            stdout,
        };
        assert_eq!(shell.line(), "ready");
        shell
    }

    /// moto only: the requests sent so far for `bucket`, as `METHOD /bucket/key?query`
    /// (percent-encoded as sent), in order. Empty for s3s-fs.
    pub fn requests(&self, bucket: &str) -> Vec<String> {
        let Some(path) = &self.log else {
            return Vec::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let needle_path = format!("/{bucket}/");
        let needle_query = format!("/{bucket}?");
        text.lines()
            .filter_map(|l| {
                // 127.0.0.1 - - [date] "GET /bucket/key HTTP/1.1" 200 -
                let req = l.split('"').nth(1)?;
                let mut words = req.split(' ');
                let method = words.next()?;
                let target = words.next()?;
                (target.starts_with(&needle_path)
                    || target.starts_with(&needle_query)
                    || target == format!("/{bucket}"))
                .then(|| format!("{method} {target}"))
            })
            .collect()
    }

    /// The requests for `bucket` made while `f` ran (moto only; werkzeug writes its
    /// line after the response, so this waits a moment for stragglers).
    pub fn requests_during<T>(&self, bucket: &str, f: impl FnOnce() -> T) -> (T, Vec<String>) {
        let before = self.requests(bucket).len();
        let out = f();
        std::thread::sleep(Duration::from_millis(300));
        let all = self.requests(bucket);
        (out, all[before.min(all.len())..].to_vec())
    }

    /// The server's processes (every descendant of its guard), e.g. to pause the
    /// server with SIGSTOP in a stall test.
    pub fn pids(&self) -> Vec<u32> {
        fn children(pid: u32, out: &mut Vec<u32>) {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten();
            for t in tasks.flatten() {
                let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                for c in list.split_whitespace().filter_map(|c| c.parse().ok()) {
                    out.push(c);
                    children(c, out);
                }
            }
        }
        let guard = self._guard.lock().map(|g| g.id()).unwrap_or(0);
        let mut out = Vec::new();
        if guard != 0 {
            children(guard, &mut out);
        }
        out
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a fresh bucket and returns its name: a plain path-style `PUT /bucket`
    /// on moto, a directory under the root on s3s-fs (all its CreateBucket does; this
    /// needs no signed request).
    pub fn bucket(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        match &self.root {
            None => {
                let (status, body) = http(self.port, "PUT", &format!("/{name}")).unwrap();
                assert_eq!(status, 200, "create bucket {name}: {body}");
            }
            Some(root) => std::fs::create_dir(root.join(&name)).unwrap(),
        }
        name
    }

    /// A config for `bucket` on this server, with 5 MiB parts (S3's minimum).
    pub fn config(&self, bucket: &str) -> S3Config {
        let mut cfg = S3Config::new(bucket);
        cfg.endpoint = Some(self.endpoint());
        cfg.force_path_style = true;
        cfg.allow_http = true;
        cfg.region = "us-east-1".into();
        cfg.access_key_id = Some(ACCESS_KEY.into());
        cfg.secret_access_key = Some(SECRET_KEY.into());
        cfg.part_size_mib = 5;
        cfg
    }

    /// A backend on a fresh bucket; returns the bucket name too.
    pub async fn backend(&self) -> (S3Backend, String) {
        let bucket = self.bucket();
        let backend = S3Backend::new(self.config(&bucket)).await.unwrap();
        (backend, bucket)
    }

    /// Runs a python3 snippet with `s3` (a boto3 client on this server) and `bucket`
    /// defined; returns what it prints, parsed as JSON.
    pub fn boto(&self, bucket: &str, snippet: &str) -> serde_json::Value {
        let script = format!(
            "import boto3, json, sys\n\
             s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                 aws_access_key_id=sys.argv[3], aws_secret_access_key=sys.argv[4])\n\
             bucket = sys.argv[2]\n{snippet}\n"
        );
        let out = self
            .python(&script, bucket)
            .output()
            .expect("run python3 with boto3");
        assert!(
            out.status.success(),
            "boto3 snippet failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "boto3 output is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// python3 running `script` with argv endpoint, bucket, access key, secret key.
    fn python(&self, script: &str, bucket: &str) -> Command {
        let mut cmd = Command::new("python3");
        cmd.arg("-c")
            .arg(script)
            .arg(self.endpoint())
            .arg(bucket)
            .args([ACCESS_KEY, SECRET_KEY])
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("AWS_PROFILE");
        cmd
    }

    /// Every key in the bucket (boto3's paginator), sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let v = self.boto(
            bucket,
            "keys = []\n\
             for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket):\n\
             \x20   keys += [o['Key'] for o in page.get('Contents', [])]\n\
             print(json.dumps(sorted(keys)))",
        );
        serde_json::from_value(v).unwrap()
    }

    /// Keys of the multipart uploads still pending in the bucket (moto only: s3s-fs has
    /// no ListMultipartUploads).
    pub fn pending_uploads(&self, bucket: &str) -> Vec<String> {
        let v = self.boto(
            bucket,
            "r = s3.list_multipart_uploads(Bucket=bucket)\n\
             print(json.dumps([u['Key'] for u in r.get('Uploads', [])]))",
        );
        serde_json::from_value(v).unwrap()
    }
}

/// A running boto3 writer; see [`Server::boto_shell`].
pub struct BotoShell {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl BotoShell {
    fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("boto3 shell output");
        line.trim_end().to_owned()
    }

    /// Writes `key` with `body` (one line of text) and waits until S3 answered.
    pub fn put(&mut self, key: &str, body: &str) {
        writeln!(self.stdin, "{key}\t{body}").expect("boto3 shell input");
        self.stdin.flush().expect("boto3 shell input");
        assert_eq!(self.line(), "ok", "boto3 put of {key}");
    }
}

impl Drop for BotoShell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
