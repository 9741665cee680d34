//! Operating ftpgate behind a load balancer, against the real binary: the HTTP
//! endpoint (`/healthz`, `/readyz`, `/metrics` with counters checked by exact
//! amounts), PROXY protocol v1/v2 on control and data connections (real client
//! IP in logs, limits and the data-peer check; health checks quiet), the shared
//! data port routed by the original destination port, per-CIDR PASV addresses,
//! SIGTERM with a grace period, users file reload on SIGHUP, `service-ports`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    connect_from, http_get, metric, pasv_addr, payload, proxy_v2, sha, Ctl, Gate, Opts, PASS, USER,
};

fn with_http(server: &str) -> Gate {
    Gate::start_with(Opts {
        server: server.into(),
        extra: "[http]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    })
}

fn quiet(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

#[test]
fn health_ready_and_metrics_move_by_the_right_amounts() {
    let g = with_http("");
    let http = g.logged_addr("http endpoint bound");
    assert_eq!(http_get(http, "/healthz"), (200, "ok\n".into()));
    assert_eq!(http_get(http, "/readyz").0, 200);
    assert_eq!(http_get(http, "/nope").0, 404);
    let before = http_get(http, "/metrics").1;
    assert_eq!(metric(&before, "ftpgate_ready"), 1.0, "{before}");

    // One failed and one good login, a 3000-byte upload and its download.
    let mut bad = g.ctl();
    assert_eq!(bad.cmd(&format!("USER {USER}")).code, 331);
    assert_eq!(bad.cmd("PASS wrong").code, 530);
    drop(bad);
    let mut c = g.login();
    let data = payload(3000, 7);
    let (_, fin) = c.store("STOR m.bin", &data);
    assert_eq!(fin.code, 226);
    let (r, got) = c.retr("m.bin");
    assert_eq!((r.code, sha(&got)), (226, sha(&data)));
    assert_eq!(c.cmd("SIZE missing").code, 550);
    let active = http_get(http, "/metrics").1;
    assert_eq!(metric(&active, "ftpgate_sessions_active"), 1.0, "{active}");
    assert_eq!(c.cmd("QUIT").code, 221);

    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let m = http_get(http, "/metrics").1;
        if metric(&m, "ftpgate_sessions_active") == 0.0 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let delta = |s: &str| metric(&after, s) - metric(&before, s);
    assert_eq!(delta("ftpgate_sessions_total"), 2.0, "{after}");
    assert_eq!(metric(&after, "ftpgate_sessions_active"), 0.0);
    assert_eq!(delta(r#"ftpgate_logins_total{result="ok"}"#), 1.0);
    assert_eq!(delta(r#"ftpgate_logins_total{result="failed"}"#), 1.0);
    assert_eq!(
        delta(r#"ftpgate_commands_total{verb="PASS",reply="5xx"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"ftpgate_commands_total{verb="STOR",reply="2xx"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"ftpgate_commands_total{verb="RETR",reply="2xx"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"ftpgate_commands_total{verb="SIZE",reply="5xx"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"ftpgate_transfer_bytes_total{direction="in",backend="storage"}"#),
        3000.0
    );
    assert_eq!(
        delta(r#"ftpgate_transfer_bytes_total{direction="out",backend="storage"}"#),
        3000.0
    );
    assert_eq!(
        delta(r#"ftpgate_transfers_total{direction="in",result="ok"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"ftpgate_transfer_duration_seconds_count{direction="out"}"#),
        1.0
    );
    assert_eq!(
        delta(
            r#"ftpgate_backend_operation_duration_seconds_count{backend="storage",op="complete"}"#
        ),
        1.0
    );
    assert!(delta(r#"ftpgate_backend_errors_total{backend="storage",op="stat"}"#) >= 1.0);
}

#[test]
fn sigterm_lets_a_running_upload_finish_and_turns_unready() {
    let mut g = with_http("shutdown_grace_secs = 30\nshutdown_delay_secs = 3\n");
    let http = g.logged_addr("http endpoint bound");
    let mut c = g.login();
    let mut idle = g.login();
    let data = payload(4 << 20, 3);
    let mut d = c.epsv();
    assert_eq!(c.cmd("STOR graceful.bin").code, 150);
    d.write_all(&data[..1 << 20]).unwrap();
    let t = Instant::now();
    g.signal("TERM");
    // Not ready at once, but new sessions are still served during
    // server.shutdown_delay_secs (the balancer has not noticed yet).
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get(http, "/readyz").0 != 503 {
        assert!(Instant::now() < deadline, "still ready after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut late = g.login();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "too slow to test the delay"
    );
    let (_, fin) = late.store("STOR late.bin", b"accepted during the delay");
    assert_eq!(fin.code, 226);
    // Then the listener closes; quiet sessions are told 421.
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(g.addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting long after the delay"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        t.elapsed() >= Duration::from_secs(3),
        "closed before the delay"
    );
    assert_eq!(idle.read().code, 421);
    assert_eq!(late.read().code, 421);
    // The upload goes on and completes.
    std::thread::sleep(Duration::from_millis(300));
    d.write_all(&data[1 << 20..]).unwrap();
    drop(d);
    assert_eq!(c.read().code, 226);
    assert_eq!(c.read().code, 421);
    assert_eq!(g.wait_exit(Duration::from_secs(10)), Some(0));
    let stored = std::fs::read(g.root().join("graceful.bin")).unwrap();
    assert_eq!(sha(&stored), sha(&data));
}

#[test]
fn grace_expiry_cuts_an_upload_without_committing_it() {
    let mut g = Gate::start_with(Opts {
        server: "shutdown_grace_secs = 1\nshutdown_delay_secs = 0\n".into(),
        ..Default::default()
    });
    let mut c = g.login();
    let mut d = c.epsv();
    assert_eq!(c.cmd("STOR never.bin").code, 150);
    d.write_all(&payload(100_000, 1)).unwrap();
    let t = Instant::now();
    g.signal("TERM");
    let cut = c.read();
    assert!(cut.code == 426 || cut.code == 451, "{cut:?}");
    assert_eq!(c.read().code, 421);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert_eq!(g.wait_exit(Duration::from_secs(10)), Some(0));
    // Never committed; kept only in the hidden pending directory, for resuming
    // (storage.resume_window_secs, tests/resume.rs).
    let names: Vec<_> = std::fs::read_dir(g.root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".ftpgate-tmp-pending")
        .collect();
    assert!(names.is_empty(), "half upload left behind: {names:?}");
}

fn proxy_gate(extra_server: &str, extra: &str) -> Gate {
    Gate::start_with(Opts {
        server: format!(
            "proxy_protocol = true\nproxy_trusted = [\"127.0.0.1/32\"]\nmax_sessions_per_ip = 2\n{extra_server}"
        ),
        extra: extra.into(),
        ..Default::default()
    })
}

#[test]
fn proxy_protocol_on_control_and_data_uses_the_real_client() {
    let g = proxy_gate("", "");
    let dst = format!("127.0.0.1:{}", g.port());
    // v1 from 203.0.113.7 and v2 from 198.51.100.4.
    let v1 = format!("PROXY TCP4 203.0.113.7 127.0.0.1 40000 {}\r\n", g.port());
    let mut a = Ctl::connect_from("127.0.0.1", g.addr, v1.as_bytes());
    a.login(USER, PASS);
    let mut b = Ctl::connect_from("127.0.0.1", g.addr, &proxy_v2("198.51.100.4:40001", &dst));
    b.login(USER, PASS);
    g.wait_log("peer=203.0.113.7:40000");
    g.wait_log("peer=198.51.100.4:40001");

    // Data: the passive port wants a PROXY header naming the session's client.
    std::fs::write(g.root().join("f.txt"), b"proxied data").unwrap();
    let port = a.epsv_port();
    let data_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut thief = connect_from("127.0.0.1", data_addr);
    thief
        .write_all(&proxy_v2("198.51.100.4:5000", &format!("127.0.0.1:{port}")))
        .unwrap();
    let mut d = connect_from("127.0.0.1", data_addr);
    d.write_all(&proxy_v2("203.0.113.7:5001", &format!("127.0.0.1:{port}")))
        .unwrap();
    assert_eq!(a.cmd("RETR f.txt").code, 150);
    let mut got = Vec::new();
    d.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"proxied data");
    assert_eq!(a.read().code, 226);
    let mut stolen = Vec::new();
    thief
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = thief.read_to_end(&mut stolen);
    assert!(stolen.is_empty(), "thief got data");
    g.wait_log("refused data connection from a foreign address");

    // Limits count the real client: a third session from 203.0.113.7 is refused,
    // one from another client is not.
    let _a2 = Ctl::connect_from("127.0.0.1", g.addr, v1.as_bytes());
    let mut a3 = connect_from("127.0.0.1", g.addr);
    a3.write_all(v1.as_bytes()).unwrap();
    let mut reply = String::new();
    a3.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = a3.read_to_string(&mut reply);
    assert!(reply.starts_with("421"), "{reply:?}");
    let other = format!("PROXY TCP4 203.0.113.8 127.0.0.1 40000 {}\r\n", g.port());
    let _c = Ctl::connect_from("127.0.0.1", g.addr, other.as_bytes());
}

#[test]
fn proxy_health_checks_and_bad_peers_are_quiet_and_refused() {
    let g = proxy_gate("", "");
    let dst = format!("127.0.0.1:{}", g.port());
    for _ in 0..5 {
        // HAProxy-style check: PROXY header, then close.
        let mut s = connect_from("127.0.0.1", g.addr);
        s.write_all(&proxy_v2("127.0.0.1:1000", &dst)).unwrap();
        let mut greeting = [0u8; 3];
        s.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, b"220");
        drop(s);
        // Plain TCP check: connect and close.
        drop(TcpStream::connect(g.addr).unwrap());
    }
    // No header: no greeting, closed.
    let mut s = TcpStream::connect(g.addr).unwrap();
    s.write_all(b"USER tester\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
    let peer = format!("peer={}", s.local_addr().unwrap());
    let logs = g.wait_logs("the refused connection", |l| {
        l.lines()
            .any(|x| x.contains("no valid PROXY header") && x.contains(&peer))
    });
    assert!(
        quiet(&logs).is_empty(),
        "health checks logged warnings:\n{logs}"
    );
    // A peer outside server.proxy_trusted is refused even with a valid header.
    let mut s = connect_from("127.0.0.2", g.addr);
    s.write_all(&proxy_v2("192.0.2.1:1", &dst)).unwrap();
    let mut out = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_end(&mut out);
    assert!(out.is_empty());
    g.wait_log("not in server.proxy_trusted");
}

#[test]
fn shared_data_port_routes_by_original_destination_port() {
    let g = proxy_gate(
        "",
        "[passive]\nports = \"31000-31003\"\nproxy_listen = \"127.0.0.1:0\"\n",
    );
    let shared = g.logged_addr("shared data port bound");
    // The client reached the balancer at 127.0.0.9: PASV announces that address and
    // a port of the range, which nothing binds here.
    let hdr = proxy_v2("203.0.113.7:40000", &format!("127.0.0.9:{}", g.port()));
    let mut c = Ctl::connect_from("127.0.0.1", g.addr, &hdr);
    c.login(USER, PASS);
    let data = payload(200_000, 9);
    let r = c.cmd("PASV");
    assert_eq!(r.code, 227, "{r:?}");
    let lb = pasv_addr(&r.text);
    assert_eq!(lb.ip().to_string(), "127.0.0.9");
    assert!((31000..=31003).contains(&lb.port()));
    // A thief's connection for that port, and one for a port nobody waits on.
    let mut thief = connect_from("127.0.0.1", shared);
    thief
        .write_all(&proxy_v2(
            "198.51.100.1:1",
            &format!("127.0.0.9:{}", lb.port()),
        ))
        .unwrap();
    let mut stray = connect_from("127.0.0.1", shared);
    let unused = if lb.port() == 31000 { 31001 } else { 31000 };
    stray
        .write_all(&proxy_v2("203.0.113.7:2", &format!("127.0.0.9:{unused}")))
        .unwrap();
    let mut d = connect_from("127.0.0.1", shared);
    let mut first = proxy_v2("203.0.113.7:3", &format!("127.0.0.9:{}", lb.port()));
    first.extend_from_slice(&data); // header and data in one segment
    assert_eq!(c.cmd("STOR routed.bin").code, 150);
    d.write_all(&first).unwrap();
    drop(d);
    assert_eq!(c.read().code, 226);
    assert_eq!(
        sha(&std::fs::read(g.root().join("routed.bin")).unwrap()),
        sha(&data)
    );
    g.wait_log("ForeignPeer");
    g.wait_log("NotPending");
    // EPSV in the same mode.
    let port = c.epsv_port();
    assert!((31000..=31003).contains(&port));
    let mut d = connect_from("127.0.0.1", shared);
    d.write_all(&proxy_v2("203.0.113.7:4", &format!("127.0.0.9:{port}")))
        .unwrap();
    assert_eq!(c.cmd("RETR routed.bin").code, 150);
    let mut got = Vec::new();
    d.read_to_end(&mut got).unwrap();
    assert_eq!(c.read().code, 226);
    assert_eq!(sha(&got), sha(&data));
}

#[test]
fn pasv_address_per_client_network() {
    let g = Gate::start_with(Opts {
        extra: "[passive]\nadvertise = \"127.0.0.5\"\n\
                [[passive.advertise_for]]\ncidr = \"127.0.0.2/32\"\naddress = \"127.0.0.6\"\n\
                [[passive.advertise_for]]\ncidr = \"127.0.0.0/8\"\naddress = \"localhost\"\n"
            .into(),
        ..Default::default()
    });
    let mut inner = Ctl::connect_from("127.0.0.2", g.addr, b"");
    inner.login(USER, PASS);
    let r = inner.cmd("PASV");
    assert_eq!(pasv_addr(&r.text).ip().to_string(), "127.0.0.6", "{r:?}");
    // 127.0.0.1 matches the second rule, a host name resolved at start.
    let mut c = g.login();
    let r = c.cmd("PASV");
    assert_eq!(pasv_addr(&r.text).ip().to_string(), "127.0.0.1", "{r:?}");
    // The data connection works on the announced (resolved) address.
    let (r, list) = c.list("LIST");
    assert_eq!(r.code, 226);
    assert!(list.is_empty());
}

#[test]
fn users_file_is_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let entry = |name: &str, pw: &str| {
        format!(
            "[[users]]\nname = \"{name}\"\npassword_hash = \"{}\"\nhome = \"/{name}\"\n",
            common::hash(pw)
        )
    };
    std::fs::write(&users, entry("alice", "alice pw")).unwrap();
    let g = Gate::start_users_file(&users);
    let mut c = g.ctl();
    c.login("alice", "alice pw");
    assert!(g.root().join("alice").is_dir(), "home created");
    let try_login = |name: &str, pw: &str| {
        let mut c = g.ctl();
        c.cmd(&format!("USER {name}"));
        c.cmd(&format!("PASS {pw}")).code
    };
    std::fs::write(&users, entry("bob", "bob pw")).unwrap();
    g.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_login("bob", "bob pw") != 230 {
        assert!(
            Instant::now() < deadline,
            "bob never appeared:\n{}",
            g.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(try_login("alice", "alice pw"), 530);
    assert!(g.root().join("bob").is_dir());
    // The logged-in session keeps working.
    assert_eq!(c.cmd("PWD").code, 257);
    // A broken file is refused and the current users stay.
    std::fs::write(
        &users,
        "[[users]]\nname = \"eve\"\npassword_hash = \"plain\"\n",
    )
    .unwrap();
    g.signal("HUP");
    g.wait_log("users not reloaded");
    assert_eq!(try_login("bob", "bob pw"), 230);
}

#[test]
fn service_ports_lists_every_port_for_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = \"127.0.0.1:2121\"\n[passive]\nports = \"30000-30003\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ftpgate"))
        .args(["service-ports", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert_eq!(yaml.matches("- name: ").count(), 5, "{yaml}");
    assert!(yaml.starts_with("- name: ftp\n  port: 21\n  targetPort: 2121\n  protocol: TCP\n"));
    assert!(yaml.contains("- name: pasv-30003\n  port: 30003\n  targetPort: 30003\n"));
    // With the shared PROXY data port every passive port targets it.
    std::fs::write(
        &cfg,
        "[server]\nlisten = \"127.0.0.1:2121\"\nproxy_protocol = true\n\
         proxy_trusted = [\"10.0.0.0/8\"]\n\
         [passive]\nports = \"30000-30001\"\nproxy_listen = \"127.0.0.1:2120\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ftpgate"))
        .args(["service-ports", "--control-port", "2100", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains("port: 2100\n  targetPort: 2121"), "{yaml}");
    assert_eq!(yaml.matches("targetPort: 2120").count(), 2, "{yaml}");
    // Without a passive range there is nothing a Service could route.
    std::fs::write(&cfg, "[server]\nlisten = \"127.0.0.1:2121\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ftpgate"))
        .args(["service-ports", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("passive.ports"));
}
