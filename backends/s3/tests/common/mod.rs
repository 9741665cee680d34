//! Test harness: one moto S3 server per test binary, a fresh bucket per test, and
//! boto3 (through python3) as an independent witness of what is in a bucket.
//!
//! moto is found as `moto_server` on `PATH` (install: `pip install 'moto[server]'
//! boto3`). It is started through a small python3 guard that holds a pipe from this
//! process: when the test binary exits, however it exits, the pipe closes and the guard
//! terminates moto, so no server outlives `cargo test`. Without moto the tests print
//! `SKIPPED: moto_server not installed` and pass, unless `CI` is set: then they fail.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ftpgate_backend_s3::{S3Backend, S3Config};

/// A running moto server.
pub struct Moto {
    pub port: u16,
    /// The python guard; its stdin is the pipe whose closing stops moto.
    _guard: Mutex<Child>,
}

const GUARD: &str = r#"
import subprocess, sys
p = subprocess.Popen([sys.argv[1], "-H", "127.0.0.1", "-p", sys.argv[2]],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    sys.stdin.read()
finally:
    p.terminate()
    try:
        p.wait(timeout=5)
    except Exception:
        p.kill()
"#;

fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends one raw HTTP/1.1 request to moto; returns the status code and body.
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

fn start() -> Option<Moto> {
    let Some(moto) = find_on_path("moto_server") else {
        if std::env::var_os("CI").is_some() {
            panic!("moto_server not installed (pip install 'moto[server]' boto3) and CI is set");
        }
        return None;
    };
    let port = free_port();
    let child = Command::new("python3")
        .arg("-c")
        .arg(GUARD)
        .arg(&moto)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python3 guard for moto_server");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = http(port, "GET", "/") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not answer on 127.0.0.1:{port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Moto {
        port,
        _guard: Mutex::new(child),
    })
}

/// The shared server, or `None` (after printing SKIPPED) when moto is not installed.
pub fn moto() -> Option<&'static Moto> {
    static MOTO: OnceLock<Option<Moto>> = OnceLock::new();
    let moto = MOTO.get_or_init(start).as_ref();
    if moto.is_none() {
        println!("SKIPPED: moto_server not installed");
    }
    moto
}

impl Moto {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a fresh bucket (a plain path-style `PUT /bucket`) and returns its name.
    pub fn bucket(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let (status, body) = http(self.port, "PUT", &format!("/{name}")).unwrap();
        assert_eq!(status, 200, "create bucket {name}: {body}");
        name
    }

    /// A config for `bucket` on this server, with 5 MiB parts (S3's minimum).
    pub fn config(&self, bucket: &str) -> S3Config {
        let mut cfg = S3Config::new(bucket);
        cfg.endpoint = Some(self.endpoint());
        cfg.force_path_style = true;
        cfg.allow_http = true;
        cfg.region = "us-east-1".into();
        cfg.access_key_id = Some("testing".into());
        cfg.secret_access_key = Some("testing".into());
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
                 aws_access_key_id='testing', aws_secret_access_key='testing')\n\
             bucket = sys.argv[2]\n{snippet}\n"
        );
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(self.endpoint())
            .arg(bucket)
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("AWS_PROFILE")
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

    /// Keys of the multipart uploads still pending in the bucket.
    pub fn pending_uploads(&self, bucket: &str) -> Vec<String> {
        let v = self.boto(
            bucket,
            "r = s3.list_multipart_uploads(Bucket=bucket)\n\
             print(json.dumps([u['Key'] for u in r.get('Uploads', [])]))",
        );
        serde_json::from_value(v).unwrap()
    }
}
