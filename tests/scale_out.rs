//! Scale-out behind HAProxy, all on loopback: a moto S3 server, two ftpgate
//! replicas (127.0.0.11, 127.0.0.12) sharing one bucket, and Debian's HAProxy
//! (127.0.0.10) running the shipped `deploy/haproxy/haproxy.cfg` — addresses and
//! ports filled in, check interval shortened — in PROXY-v2 mode with source
//! balancing: control on one port, the whole passive range forwarded to each
//! replica's shared data port. Clients come from their own addresses (127.0.1.x,
//! 127.0.2.x) so the source hash spreads them.
//!
//! Proven here: 20 clients upload through HAProxy (PASV and EPSV) and each file
//! comes back intact through a client on the *other* replica; replicas log the
//! real client IPs, never HAProxy's; HAProxy's health checks log no warnings;
//! the metrics of both replicas add up to exactly what was moved; SIGTERM to a
//! replica while an upload runs through it lets the upload finish with 226 and
//! sends new sessions to the other replica.

mod common;

#[path = "../backends/s3/tests/common/mod.rs"]
mod moto;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::haproxy::{self, Replica, LB};
use common::{connect_from, http_get, metric, payload, sha, Ctl, PASS, USER};

const PASSIVE_PORTS: u16 = 20;

fn replica(name: char, ip: &str, m: &moto::Server, bucket: &str, ports: (u16, u16)) -> Replica {
    let spec = haproxy::Spec {
        name,
        ip: ip.to_owned(),
        ports: (0, 0, 0),
    };
    haproxy::start_replica(
        name,
        haproxy::replica_toml(&spec, &m.endpoint(), bucket, ports, ""),
    )
}

/// Opens a passive data connection through the balancer from `ip` (PASV or EPSV).
fn data_conn(c: &mut Ctl, ip: &str, epsv: bool) -> std::net::TcpStream {
    let port = if epsv {
        c.epsv_port()
    } else {
        let a = c.pasv_addr();
        assert_eq!(a.ip().to_string(), LB, "PASV must announce the balancer");
        a.port()
    };
    let s = connect_from(ip, format!("{LB}:{port}").parse().unwrap());
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn replica_of(greeting: &str) -> char {
    if greeting.contains("replica A") {
        'A'
    } else if greeting.contains("replica B") {
        'B'
    } else {
        panic!("unexpected greeting {greeting:?}")
    }
}

fn upload(lb: SocketAddr, ip: &str, name: &str, data: &[u8], epsv: bool) -> char {
    let mut c = Ctl::connect_from(ip, lb, b"");
    let who = replica_of(&c.greeting);
    c.login(USER, PASS);
    let mut d = data_conn(&mut c, ip, epsv);
    let r = c.cmd(&format!("STOR {name}"));
    assert_eq!(r.code, 150, "{ip} on {who}: {r:?}");
    d.write_all(data).unwrap();
    drop(d);
    let fin = c.read();
    assert_eq!(fin.code, 226, "{ip} on {who}: {fin:?}");
    assert_eq!(c.cmd("QUIT").code, 221);
    who
}

fn download(lb: SocketAddr, ip: &str, name: &str, epsv: bool) -> (char, Vec<u8>) {
    let mut c = Ctl::connect_from(ip, lb, b"");
    let who = replica_of(&c.greeting);
    c.login(USER, PASS);
    let mut d = data_conn(&mut c, ip, epsv);
    assert_eq!(c.cmd(&format!("RETR {name}")).code, 150);
    let mut got = Vec::new();
    d.read_to_end(&mut got).unwrap();
    assert_eq!(c.read().code, 226);
    (who, got)
}

/// Which replica a client address lands on (its greeting tells).
fn probe(lb: SocketAddr, ip: &str) -> Option<char> {
    let mut s = common::try_connect_from(ip, lb).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    if !text.starts_with("220") {
        return None;
    }
    let _ = s.write_all(b"QUIT\r\n");
    Some(replica_of(&text))
}

fn warnings(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

#[test]
fn two_replicas_behind_haproxy_with_proxy_v2() {
    if !common::require("haproxy") {
        return;
    }
    let Some(m) = moto::moto() else { return };
    let bucket = m.bucket();
    let lb_ctl = haproxy::free_ports(1);
    let pasv = haproxy::free_ports(PASSIVE_PORTS);
    let range = (pasv, pasv + PASSIVE_PORTS - 1);
    let mut a = replica('A', "127.0.0.11", m, &bucket, range);
    let b = replica('B', "127.0.0.12", m, &bucket, range);
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.sock");
    let cfg = haproxy::shipped_cfg(&[&a, &b], lb_ctl, pasv, PASSIVE_PORTS, &stats, true);
    let hap = haproxy::start(&cfg, dir.path(), &stats);
    let lb: SocketAddr = format!("{LB}:{lb_ctl}").parse().unwrap();

    // Wait until HAProxy routes (both servers checked up).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = HashMap::new();
    for i in 1..=60u8 {
        let ip = format!("127.0.2.{i}");
        loop {
            if let Some(r) = probe(lb, &ip) {
                seen.insert(ip, r);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy never routed:\n{}",
                hap.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let on = |r: char| -> Vec<String> {
        let mut v: Vec<_> = seen
            .iter()
            .filter(|(_, x)| **x == r)
            .map(|(ip, _)| ip.clone())
            .collect();
        v.sort();
        v
    };
    assert!(
        !on('A').is_empty() && !on('B').is_empty(),
        "source hash used one replica only: {seen:?}"
    );
    let before: Vec<String> = [&a, &b]
        .iter()
        .map(|r| http_get(r.http, "/metrics").1)
        .collect();

    // 20 clients upload in parallel, half PASV, half EPSV.
    let files: Vec<(String, String, Vec<u8>)> = (1..=20u8)
        .map(|i| {
            let data = payload(50_000 + usize::from(i) * 37_000, u64::from(i));
            (format!("127.0.1.{i}"), format!("client {i}.bin"), data)
        })
        .collect();
    let total: usize = files.iter().map(|f| f.2.len()).sum();
    let up: Vec<char> = std::thread::scope(|s| {
        let hs: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(i, (ip, name, data))| s.spawn(move || upload(lb, ip, name, data, i % 2 == 0)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        up.contains(&'A') && up.contains(&'B'),
        "uploads all on one replica: {up:?}"
    );

    // Each file comes back through a client that lands on the other replica.
    std::thread::scope(|s| {
        let hs: Vec<_> = files
            .iter()
            .zip(&up)
            .enumerate()
            .map(|(i, ((_, name, data), via))| {
                let other = if *via == 'A' { 'B' } else { 'A' };
                let pool = on(other);
                let ip = pool[i % pool.len()].clone();
                s.spawn(move || {
                    let (who, got) = download(lb, &ip, name, i % 2 == 1);
                    assert_eq!(who, other);
                    assert_eq!(sha(&got), sha(data), "{name}");
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });

    // Real client IPs in the logs, HAProxy's address never; checks quiet.
    for (r, files_here) in [&a, &b]
        .iter()
        .map(|r| (r, up.iter().filter(|x| **x == r.name).count()))
    {
        for ((ip, _, _), via) in files.iter().zip(&up) {
            if *via == r.name {
                r.gate.wait_log(&format!("peer={ip}:"));
            }
        }
        let logs = r.gate.logs();
        assert!(
            !logs.contains(&format!("peer={LB}:")),
            "balancer address logged as a client"
        );
        assert!(
            warnings(&logs).is_empty(),
            "replica {} warned:\n{}",
            r.name,
            warnings(&logs).join("\n")
        );
        assert!(files_here > 0);
    }

    // Metrics: the two replicas add up to exactly what moved.
    let after: Vec<String> = [&a, &b]
        .iter()
        .map(|r| http_get(r.http, "/metrics").1)
        .collect();
    let sum = |series: &str| -> f64 {
        (0..2)
            .map(|i| metric(&after[i], series) - metric(&before[i], series))
            .sum()
    };
    assert_eq!(
        sum(r#"ftpgate_transfers_total{direction="in",result="ok"}"#),
        20.0
    );
    assert_eq!(
        sum(r#"ftpgate_transfers_total{direction="out",result="ok"}"#),
        20.0
    );
    assert_eq!(
        sum(r#"ftpgate_transfer_bytes_total{direction="in",backend="storage"}"#),
        total as f64
    );
    assert_eq!(
        sum(r#"ftpgate_transfer_bytes_total{direction="out",backend="storage"}"#),
        total as f64
    );
    assert_eq!(sum(r#"ftpgate_logins_total{result="ok"}"#), 40.0);
    let on_a = up.iter().filter(|x| **x == 'A').count() as f64;
    assert_eq!(
        metric(
            &after[0],
            r#"ftpgate_transfers_total{direction="in",result="ok"}"#
        ) - metric(
            &before[0],
            r#"ftpgate_transfers_total{direction="in",result="ok"}"#
        ),
        on_a
    );

    // SIGTERM to A while an upload runs through it.
    let ip = on('A')[0].clone();
    let big = payload(6 << 20, 99);
    let mut c = Ctl::connect_from(&ip, lb, b"");
    assert_eq!(replica_of(&c.greeting), 'A');
    c.login(USER, PASS);
    let mut d = data_conn(&mut c, &ip, true);
    assert_eq!(c.cmd("STOR during shutdown.bin").code, 150);
    d.write_all(&big[..2 << 20]).unwrap();
    let t = Instant::now();
    a.gate.signal("TERM");
    // New sessions from the same client go to B once HAProxy sees /readyz fail.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if probe(lb, &ip) == Some('B') {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new sessions still not on B:\n{}",
            hap.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    d.write_all(&big[2 << 20..]).unwrap();
    drop(d);
    assert_eq!(c.read().code, 226, "upload cut by the shutdown");
    assert_eq!(c.read().code, 421);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "not within the grace period"
    );
    assert_eq!(a.gate.wait_exit(Duration::from_secs(10)), Some(0));
    let (who, got) = download(lb, &ip, "during shutdown.bin", false);
    assert_eq!(who, 'B');
    assert_eq!(sha(&got), sha(&big));
}
