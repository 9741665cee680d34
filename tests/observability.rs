//! Observability checked with the ecosystem's own tools, against the real binary:
//! `/metrics` in the Prometheus text format passes `promtool check metrics`; the
//! OpenMetrics form (what Prometheus asks for) is scraped by a real Prometheus
//! server; build, process, TLS-certificate, passive-listener and ban metrics match
//! what the test can see independently; every transfer — also one cut by ABOR, by
//! an early data close or an aborted upload — is one INFO `transfer` event, and a
//! session ends with one `session ended` event carrying its totals; a user's home
//! outside the backend root is refused at start and on reload.

mod common;

#[path = "../backends/s3/tests/common/mod.rs"]
mod moto;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{http_get, http_get_with, metric, payload, sha, Ctl, Gate, Opts, PASS, USER};

/// What Prometheus 2.x sends when scraping (scrape/scrape.go `scrapeAcceptHeader`).
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A gate with TLS, bans after two failures and the HTTP endpoint, after some
/// activity: a transfer each way, a banned client (127.0.0.2) and one passive
/// listener left pending by the returned session.
fn busy_gate(dir: &std::path::Path) -> (Gate, SocketAddr, Ctl) {
    let cert = common::make_cert(dir, "srv", "localhost");
    let g = Gate::start_with(Opts {
        server: "tls = \"optional\"\nban_after_failures = 2\nban_secs = 600\n".into(),
        extra: format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n{}",
            common::tls_section(&cert, "")
        ),
        ..Default::default()
    });
    let http = g.logged_addr("http endpoint bound");
    let mut c = g.login();
    let data = payload(3000, 3);
    assert_eq!(c.store("STOR m.bin", &data).1.code, 226);
    let (r, got) = c.retr("m.bin");
    assert_eq!((r.code, sha(&got)), (226, sha(&data)));
    let mut bad = Ctl::connect_from("127.0.0.2", g.addr, b"");
    assert_eq!(bad.cmd(&format!("USER {USER}")).code, 331);
    assert_eq!(bad.cmd("PASS wrong").code, 530);
    assert_eq!(bad.cmd(&format!("USER {USER}")).code, 331);
    // The second failure starts the ban: 421 and the connection closes.
    assert_eq!(bad.cmd("PASS wrong").code, 421);
    let mut pending = g.login();
    pending.epsv_port();
    (g, http, pending)
}

/// Runs `promtool check metrics` on `body`: (exit ok, everything it printed).
fn promtool(body: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The text format (no `Accept`, or `text/plain`) passes promtool's parser and
/// linter without a single complaint, and the new metrics agree with what the
/// test measures itself (/proc of the server, openssl's certificate, the bans
/// and passive listeners it caused).
#[test]
fn text_format_passes_promtool_and_new_metrics_are_right() {
    if !common::require("promtool") || !common::require("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (g, http, _pending) = busy_gate(dir.path());
    let (status, ctype, body) = http_get_with(http, "/metrics", Some("text/plain"));
    assert_eq!(status, 200);
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    let (ok, said) = promtool(&body);
    assert!(ok && said.trim().is_empty(), "promtool: {said}\n{body}");
    // Without an Accept header: the same format.
    let plain = http_get(http, "/metrics").1;
    let (ok, said) = promtool(&plain);
    assert!(ok && said.trim().is_empty(), "promtool: {said}\n{plain}");
    assert!(!body.contains("# EOF"), "{body}");
    assert!(
        body.contains("# TYPE ftpgate_sessions_total counter\n"),
        "{body}"
    );
    assert_eq!(metric(&body, "ftpgate_sessions_total"), 3.0, "{body}");

    let build = format!(
        "ftpgate_build_info{{version=\"{}\",os=\"linux\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        body.lines()
            .any(|l| l.starts_with(&build) && l.ends_with(" 1")),
        "{build} missing in {body}"
    );
    let pid = g.pid();
    let rss = metric(&body, "process_resident_memory_bytes");
    let rss_now = common::rss_kib(pid) as f64 * 1024.0;
    assert!(
        rss > rss_now / 2.0 && rss < rss_now * 2.0,
        "rss {rss} vs /proc {rss_now}"
    );
    let fds = metric(&body, "process_open_fds");
    let fds_now = common::fd_count(pid) as f64;
    assert!((fds - fds_now).abs() <= 8.0, "fds {fds} vs /proc {fds_now}");
    assert!(metric(&body, "process_max_fds") >= fds);
    assert!(metric(&body, "process_cpu_seconds_total") > 0.0, "{body}");
    let started = metric(&body, "process_start_time_seconds");
    assert!(
        (unix_now() - started).abs() < 600.0,
        "start time {started} vs now {}",
        unix_now()
    );
    // make_cert's certificate is valid for two days from now.
    let series = format!(
        "ftpgate_tls_certificate_not_after_timestamp_seconds{{file=\"{}\"}}",
        dir.path().join("srv.crt.pem").display()
    );
    let left = metric(&body, &series) - unix_now();
    let two_days = 2.0 * 86400.0;
    assert!(
        (left - two_days).abs() < 3600.0,
        "{series}: {left} s left\n{body}"
    );
    assert_eq!(metric(&body, "ftpgate_bans_active"), 1.0, "{body}");
    assert_eq!(
        metric(&body, "ftpgate_passive_listeners_pending"),
        1.0,
        "{body}"
    );
}

/// A free loopback port (bound and released: Prometheus cannot report port 0).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Prometheus's own `Accept` gets OpenMetrics (ending in `# EOF`), and a real
/// Prometheus server scrapes it with no error and stores the samples.
#[test]
fn openmetrics_is_negotiated_and_scraped_by_prometheus() {
    if !common::require("prometheus") || !common::require("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_g, http, _pending) = busy_gate(dir.path());
    let (status, ctype, body) = http_get_with(http, "/metrics", Some(PROMETHEUS_ACCEPT));
    assert_eq!(status, 200);
    assert_eq!(
        ctype,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("# TYPE ftpgate_sessions counter\n"), "{body}");
    assert!(body.contains("# TYPE ftpgate_build info\n"), "{body}");

    let port = free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: ftpgate\n    static_configs:\n      - targets: ['{http}']\n"
        ),
    )
    .unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn prometheus");
    let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let get_json = |path: &str| -> Option<serde_json::Value> {
        let s = std::net::TcpStream::connect(api).ok()?;
        drop(s);
        let (code, body) = http_get(api, path);
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let target = loop {
        let t = get_json("/api/v1/targets").and_then(|v| {
            let t = v["data"]["activeTargets"][0].clone();
            (t["health"] != "unknown" && !t.is_null()).then_some(t)
        });
        if let Some(t) = t {
            break t;
        }
        if Instant::now() > deadline {
            let _ = prom.kill();
            let mut err = String::new();
            let _ = prom.stderr.take().unwrap().read_to_string(&mut err);
            panic!("prometheus never scraped:\n{}", common::tail(&err, 30));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let query = get_json("/api/v1/query?query=ftpgate_sessions_total");
    let build = get_json("/api/v1/query?query=ftpgate_build_info");
    let _ = prom.kill();
    let _ = prom.wait();
    assert_eq!(target["health"], "up", "{target}");
    assert_eq!(target["lastError"], "", "{target}");
    let query = query.expect("query answered");
    assert_eq!(
        query["data"]["result"][0]["value"][1], "3",
        "ftpgate_sessions_total: {query}"
    );
    let build = build.expect("query answered");
    assert_eq!(
        build["data"]["result"][0]["metric"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{build}"
    );
}

/// The `fields` of every JSON log event whose message is `message`.
fn events(logs: &str, message: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message)
        .map(|v| {
            let mut f = v["fields"].clone();
            f["level"] = v["level"].clone();
            f
        })
        .collect()
}

/// An ABORted RETR, a RETR whose data connection the client closed early and an
/// ABORted STOR each give one INFO `transfer` event with the bytes really moved
/// (the STOR: every byte sent before ABOR); QUIT gives one `session ended` event
/// whose totals add up the transfers (a health check's connection: debug only).
#[test]
fn every_transfer_and_the_session_end_are_info_events() {
    let g = Gate::start_with(Opts {
        extra: "[log]\nformat = \"json\"\n".into(),
        ..Default::default()
    });
    let big = payload(8 << 20, 5);
    std::fs::write(g.root().join("big"), &big).unwrap();
    let mut c = g.login();
    let small = payload(3000, 9);
    assert_eq!(c.store("STOR small", &small).1.code, 226);
    let (r, got) = c.retr("small");
    assert_eq!((r.code, sha(&got)), (226, sha(&small)));

    // RETR cut by ABOR after 64 KiB were read.
    let mut d = c.epsv();
    assert_eq!(c.cmd("RETR big").code, 150);
    let mut buf = vec![0u8; 64 << 10];
    d.read_exact(&mut buf).unwrap();
    assert_eq!(buf, big[..64 << 10]);
    assert_eq!(c.cmd("ABOR").code, 426);
    assert_eq!(c.read().code, 226);
    drop(d);

    // RETR whose data connection the client closes after 64 KiB.
    let mut d = c.epsv();
    assert_eq!(c.cmd("RETR big").code, 150);
    d.read_exact(&mut buf).unwrap();
    drop(d);
    assert_eq!(c.read().code, 426);

    // STOR of 100 KiB, then ABOR with the data connection still open.
    let part = payload(100 << 10, 6);
    let mut d = c.epsv();
    assert_eq!(c.cmd("STOR part").code, 150);
    d.write_all(&part).unwrap();
    d.flush().unwrap();
    assert_eq!(c.cmd("ABOR").code, 426);
    assert_eq!(c.read().code, 226);
    drop(d);
    assert!(!g.root().join("part").exists(), "aborted upload committed");
    assert_eq!(c.cmd("QUIT").code, 221);
    // A health check (connect, read the greeting, close): a debug event only.
    let mut probe = std::net::TcpStream::connect(g.addr).unwrap();
    let mut greeting = [0u8; 3];
    probe.read_exact(&mut greeting).unwrap();
    drop(probe);

    let logs = g.wait_logs("two session ended events", |l| {
        l.matches("\"message\":\"session ended\"").count() == 2
    });
    let probe_end: Vec<_> = events(&logs, "session ended")
        .into_iter()
        .filter(|e| e["level"] == "DEBUG")
        .collect();
    assert_eq!(probe_end.len(), 1, "{logs}");
    assert_eq!(probe_end[0]["commands"], 0);
    let transfers = events(&logs, "transfer");
    assert_eq!(transfers.len(), 5, "{logs}");
    for t in &transfers {
        assert_eq!(t["level"], "INFO", "{t}");
    }
    let code = |t: &serde_json::Value| t["code"].as_u64().unwrap();
    let bytes = |t: &serde_json::Value| t["bytes"].as_u64().unwrap();
    let (aborted_retr, closed_retr, aborted_stor) = (&transfers[2], &transfers[3], &transfers[4]);
    assert_eq!(
        (&aborted_retr["verb"], code(aborted_retr)),
        (&"RETR".into(), 426)
    );
    assert!(bytes(aborted_retr) >= 64 << 10, "{aborted_retr}");
    assert_eq!(
        (&closed_retr["verb"], code(closed_retr)),
        (&"RETR".into(), 426)
    );
    assert!(bytes(closed_retr) >= 64 << 10, "{closed_retr}");
    assert_eq!(
        (&aborted_stor["verb"], code(aborted_stor)),
        (&"STOR".into(), 426)
    );
    assert_eq!(bytes(aborted_stor), 100 << 10, "{aborted_stor}");

    let ended: Vec<_> = events(&logs, "session ended")
        .into_iter()
        .filter(|e| e["level"] == "INFO")
        .collect();
    assert_eq!(ended.len(), 1, "{logs}");
    let e = &ended[0];
    let field = |k: &str| e[k].as_u64().unwrap_or_else(|| panic!("{k} in {e}"));
    assert_eq!(field("bytes_in"), 3000 + (100 << 10), "{e}");
    assert_eq!(
        field("bytes_out"),
        3000 + bytes(aborted_retr) + bytes(closed_retr),
        "{e}"
    );
    assert_eq!((field("files_in"), field("files_out")), (1, 1), "{e}");
    // USER PASS, EPSV STOR, EPSV RETR, EPSV RETR ABOR, EPSV RETR, EPSV STOR ABOR, QUIT.
    assert_eq!(field("commands"), 15, "{e}");
    assert!(e["duration_ms"].is_u64(), "{e}");
    let line = logs
        .lines()
        // The INFO one: the harness's own connection without a command ends at debug.
        .find(|l| l.contains("\"message\":\"session ended\"") && l.contains("\"level\":\"INFO\""))
        .unwrap();
    assert!(line.contains(&format!("\"user\":\"{USER}\"")), "{line}");
    let _ = PASS;
}

/// `home = "../../etc"` is refused at start with the key named, for inline users
/// and for users_file users; on SIGHUP such a users file is logged and the old
/// users stay.
#[test]
fn home_outside_the_backend_root_is_refused() {
    let user = |name: &str, home: &str| {
        format!(
            "[[users]]\nname = \"{name}\"\npassword_hash = \"{}\"\nhome = \"{home}\"\n",
            common::hash("pw")
        )
    };
    let toml = format!(
        "[storage]\nkind = \"memory\"\n{}{}",
        user("a", "/a"),
        user("b", "../../etc")
    );
    let err = common::refused_start(Some(&toml), &[]);
    assert!(
        err.contains("users[1].home") && err.contains("../../etc"),
        "{err}"
    );
    let err = common::refused_start(
        Some(&format!(
            "[storage]\nkind = \"memory\"\n{}",
            user("c", "/x/../../y")
        )),
        &[],
    );
    assert!(err.contains("users[0].home"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(&users, user("alice", "/alice")).unwrap();
    let err = common::refused_start(
        Some(&format!(
            "users_file = \"{}\"\n[storage]\nkind = \"memory\"\n{}",
            users.display(),
            user("inline", "../etc")
        )),
        &[],
    );
    assert!(err.contains("users[0].home"), "{err}");

    let g = Gate::start_users_file(&users);
    let mut c = g.ctl();
    c.login("alice", "pw");
    std::fs::write(
        &users,
        format!(
            "{}{}",
            user("alice", "/alice"),
            user("mallory", "../../etc")
        ),
    )
    .unwrap();
    g.signal("HUP");
    let logs = g.wait_logs("a refused reload", |l| l.contains("users not reloaded"));
    let line = logs
        .lines()
        .find(|l| l.contains("users not reloaded"))
        .unwrap();
    assert!(
        line.contains("users_file") && line.contains("users[1].home"),
        "{line}"
    );
    let mut m = g.ctl();
    assert_eq!(m.cmd("USER mallory").code, 331);
    assert_eq!(m.cmd("PASS pw").code, 530);
    let mut a = g.ctl();
    a.login("alice", "pw");
    assert_eq!(a.cmd("PWD").code, 257);
}

/// While S3 is unreachable, object_store's retry lines stay out of the log at
/// the harness's level (`ftpgate=debug,info`), and the command whose retries ran
/// out gives one WARN naming the operation, then 451.
#[test]
fn s3_retries_are_quiet_and_an_exhausted_budget_is_one_warn() {
    let Some(m) = moto::moto() else { return };
    let proxy = common::Proxy::new(m.port);
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let g = Gate::start_s3(
        &endpoint,
        &m.bucket(),
        "max_retries = 2\nretry_timeout_secs = 2\n",
    );
    let mut c = g.login();
    assert_eq!(c.store("STOR a.txt", b"ok").1.code, 226);
    proxy.cut();
    let r = c.cmd("SIZE other.txt");
    assert_eq!(r.code, 451, "{r:?}");
    let logs = g.wait_logs("an exhausted-retries warning", |l| {
        l.contains("storage retries exhausted")
    });
    let warns: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("storage retries exhausted"))
        .collect();
    assert_eq!(warns.len(), 1, "{logs}");
    assert!(
        warns[0].contains("WARN")
            && warns[0].contains("operation=\"stat /other.txt\"")
            && warns[0].contains("retries=2")
            && warns[0].contains("code=451"),
        "{}",
        warns[0]
    );
    // That WARN is the command's only one.
    let after_size = &logs[logs.find("command verb=\"SIZE\"").unwrap()..];
    assert_eq!(after_size.matches(" WARN ").count(), 1, "{after_size}");
    assert!(
        !logs.contains("backing off"),
        "object_store retry lines at the default level:\n{logs}"
    );
    proxy.restore();
    assert_eq!(c.retr("a.txt").1, b"ok");
}
