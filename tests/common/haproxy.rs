//! ftpgate replicas behind Debian's HAProxy, all on loopback: the replicas share
//! one S3 bucket (moto), HAProxy runs the shipped `deploy/haproxy/haproxy.cfg`
//! with only addresses filled in (and, on request, faster checks), connecting
//! from [`LB`] so the replicas can trust exactly that address for PROXY headers.

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Gate, PASS, USER};

/// The balancer's address (clients connect here; HAProxy connects from here).
pub const LB: &str = "127.0.0.10";

/// One replica's addresses; port 0: any free port (then it cannot restart on the
/// same ports).
#[derive(Clone, Debug)]
pub struct Spec {
    /// `A`, `B`, … (in the greeting: `ftpgate replica A`).
    pub name: char,
    /// Its loopback address, e.g. 127.0.0.11.
    pub ip: String,
    /// Control, shared data (passive.proxy_listen) and HTTP ports.
    pub ports: (u16, u16, u16),
}

impl Spec {
    /// A replica on `ip` with three fixed free ports (it can restart on them).
    pub fn fixed(name: char, ip: &str) -> Spec {
        let p = || {
            std::net::TcpListener::bind((ip, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        Spec {
            name,
            ip: ip.to_owned(),
            ports: (p(), p(), p()),
        }
    }
}

/// A running replica.
pub struct Replica {
    pub name: char,
    pub gate: Gate,
    pub ctl: SocketAddr,
    pub data: SocketAddr,
    pub http: SocketAddr,
    /// Its whole config, to start it again.
    pub toml: String,
}

/// The config of a replica behind [`LB`] on the bucket `bucket` at `endpoint`,
/// passive ports `range` (forwarded by HAProxy); `server` adds `[server]` lines.
pub fn replica_toml(
    spec: &Spec,
    endpoint: &str,
    bucket: &str,
    range: (u16, u16),
    server: &str,
) -> String {
    let (ip, name) = (&spec.ip, spec.name);
    let (ctl, data, http) = spec.ports;
    format!(
        "[server]\nlisten = \"{ip}:{ctl}\"\ngreeting = \"ftpgate replica {name}\"\n\
         login_failure_delay_ms = 10\nshutdown_grace_secs = 20\n\
         proxy_protocol = true\nproxy_trusted = [\"{LB}/32\"]\n{server}\n\
         [passive]\nports = \"{}-{}\"\nproxy_listen = \"{ip}:{data}\"\n\
         [active]\nenabled = false\n\
         [http]\nlisten = \"{ip}:{http}\"\n\
         [storage]\nkind = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\n\
         force_path_style = true\nallow_http = true\naccess_key_id = \"testing\"\n\
         secret_access_key = \"testing\"\npart_size_mib = 5\n\
         [[users]]\nname = \"{USER}\"\npassword_hash = \"{}\"\n",
        range.0,
        range.1,
        super::hash(PASS)
    )
}

/// Starts a replica from its config.
pub fn start_replica(name: char, toml: String) -> Replica {
    let t = toml.clone();
    let gate = Gate::start_toml(move |_| t);
    let ctl = gate.addr;
    let data = gate.logged_addr("shared data port bound");
    let http = gate.logged_addr("http endpoint bound");
    Replica {
        name,
        gate,
        ctl,
        data,
        http,
        toml,
    }
}

impl Replica {
    /// SIGTERM, wait for exit 0 within `limit`, start again on the same ports.
    pub fn restart(&mut self, limit: Duration) {
        self.gate.signal("TERM");
        let code = self.gate.wait_exit(limit);
        assert_eq!(
            code,
            Some(0),
            "replica {} did not exit cleanly:\n{}",
            self.name,
            super::tail(&self.gate.logs(), 40)
        );
        *self = start_replica(self.name, self.toml.clone());
    }
}

/// `count` consecutive ports free on the balancer address.
pub fn free_ports(count: u16) -> u16 {
    super::free_ports_on(LB, count)
}

/// The shipped `deploy/haproxy/haproxy.cfg` for `replicas` (server `rN` is
/// replica N; server lines beyond them are dropped), control on `LB:ctl`, passive
/// ports `pasv..pasv+count`, a stats socket at `stats`. `fast_checks`: 200 ms
/// checks, one to change state (quick tests); otherwise the shipped settings.
/// Every substitution must hit, so the test breaks when the file changes shape.
pub fn shipped_cfg(
    replicas: &[&Replica],
    ctl: u16,
    pasv: u16,
    count: u16,
    stats: &Path,
    fast_checks: bool,
) -> String {
    // HAPROXY_CFG: try a variant of the shipped file (to see what a rule prevents).
    let path = std::env::var("HAPROXY_CFG").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy/haproxy.cfg").to_owned()
    });
    let mut cfg = std::fs::read_to_string(path).unwrap();
    let mut sub = |from: &str, to: String| {
        assert!(
            cfg.contains(from),
            "deploy/haproxy/haproxy.cfg lost `{from}`"
        );
        cfg = cfg.replace(from, &to);
    };
    sub("bind :21\n", format!("bind {LB}:{ctl}\n"));
    sub(
        "bind :30000-30009\n",
        format!("bind {LB}:{pasv}-{}\n", pasv + count - 1),
    );
    sub("    mode tcp\n", format!("    mode tcp\n    source {LB}\n"));
    sub(
        "    maxconn 4000\n",
        format!(
            "    maxconn 4000\n    stats socket {} level admin\n",
            stats.display()
        ),
    );
    if fast_checks {
        sub(
            "inter 2s fastinter 500ms fall 2 rise 2",
            "inter 200ms fastinter 100ms fall 1 rise 1".to_owned(),
        );
    }
    let mut out = String::new();
    for line in cfg.lines() {
        let t = line.trim_start();
        let server = t
            .strip_prefix("server r")
            .and_then(|r| r.split_once(' '))
            .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)));
        match server {
            Some((n, rest)) => {
                let Some(r) = replicas.get(n - 1) else {
                    continue;
                };
                let ip = format!("10.0.0.1{n}");
                let rest = rest
                    .replace(&format!("{ip}:2121 "), &format!("{} ", r.ctl))
                    .replace(&format!("{ip}:2120 "), &format!("{} ", r.data))
                    .replace("check port 9100", &format!("check port {}", r.http.port()));
                assert!(!rest.contains("10.0.0."), "unfilled server line: {line}");
                out.push_str(&format!("    server r{n} {rest}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// A running HAProxy (killed on drop) and what it logged.
pub struct Haproxy {
    child: Child,
    pub log: Arc<Mutex<String>>,
    /// Its stats socket.
    pub stats: PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Checks `cfg` with `haproxy -c` and starts it in the foreground (`-db`).
pub fn start(cfg: &str, dir: &Path, stats: &Path) -> Haproxy {
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    Haproxy {
        child,
        log,
        stats: stats.to_owned(),
    }
}

/// One server row of `show stat`.
#[derive(Debug, Clone)]
pub struct ServerStat {
    /// `ftp_control` or `ftp_data`.
    pub backend: String,
    /// `r1`, `r2`, …
    pub server: String,
    /// `UP`, `DOWN`, `UP 1/2`, `NOLB`, …
    pub status: String,
    /// UP→DOWN transitions so far.
    pub chkdown: u64,
}

impl Haproxy {
    /// One command on the stats socket; its answer.
    pub fn command(&self, cmd: &str) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(&self.stats)
            .unwrap_or_else(|e| panic!("stats socket {}: {e}", self.stats.display()));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// The server rows of `show stat` (control and data backends).
    pub fn servers(&self) -> Vec<ServerStat> {
        let text = self.command("show stat");
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let (px, sv, st, cd) = (col("pxname"), col("svname"), col("status"), col("chkdown"));
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > cd && f[sv] != "FRONTEND" && f[sv] != "BACKEND")
            .map(|f| ServerStat {
                backend: f[px].to_owned(),
                server: f[sv].to_owned(),
                status: f[st].to_owned(),
                chkdown: f[cd].parse().unwrap_or(0),
            })
            .collect()
    }

    /// The status of control server `server` (`r1` …).
    pub fn status(&self, server: &str) -> String {
        self.servers()
            .into_iter()
            .find(|s| s.backend == "ftp_control" && s.server == server)
            .map(|s| s.status)
            .unwrap_or_default()
    }

    /// Waits up to `limit` until control server `server` has status `want`.
    pub fn wait_status(&self, server: &str, want: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let st = self.status(server);
            if st == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{server} is {st:?}, not {want} after {limit:?}:\n{}",
                super::tail(&self.log.lock().unwrap(), 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
