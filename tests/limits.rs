//! Limits an attacker cannot sidestep (issue 11 §3), each played as the attack
//! against the real binary: passive listeners held by EPSV + NOOP, sessions that
//! never log in, many IPv6 addresses of one /64, a PROXY header from anyone, a
//! download the client stops reading, and HASH of a huge file left behind.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{payload, proxy_v2, refused_start, rss_kib, sha, Ctl, Gate, Opts, PASS, USER};

/// A gate whose `[server]` gets `server` lines.
fn gate(server: &str) -> Gate {
    Gate::start_with(Opts {
        server: server.into(),
        ..Opts::default()
    })
}

/// Polls `cond` every 100 ms for up to `limit`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The attack: 3 sessions send EPSV then only NOOP, holding a 3-port passive range.
/// Their listeners expire after `data_timeout_secs`, so another user gets a port.
#[test]
fn pending_passive_listeners_expire_without_a_transfer() {
    let base = common::free_ports_on("127.0.0.1", 3);
    let g = gate(&format!(
        "data_timeout_secs = 2\n[passive]\nports = \"{base}-{}\"\n",
        base + 2
    ));
    let mut holders: Vec<Ctl> = (0..3).map(|_| g.login()).collect();
    for h in holders.iter_mut() {
        h.epsv_port();
    }
    let mut victim = g.login();
    assert_eq!(victim.cmd("EPSV").code, 425, "the range should be full");
    // The holders keep talking, never transferring; the victim retries.
    let got = eventually(Duration::from_secs(30), || {
        for h in holders.iter_mut() {
            assert_eq!(h.cmd("NOOP").code, 200);
        }
        victim.cmd("EPSV").code == 229
    });
    assert!(
        got,
        "pending listeners never expired:\n{}",
        common::tail(&g.logs(), 30)
    );
    g.wait_log("pending data connection unused");
    // An expired endpoint is gone: the holder must set up a new one.
    std::fs::write(g.root().join("f"), b"x").unwrap();
    let r = holders[0].cmd("RETR f");
    assert_eq!(r.code, 425, "{r:?}");
    // The victim's listener works.
    let (r, data) = victim.retr("f");
    assert_eq!((r.code, data.as_slice()), (226, &b"x"[..]), "{r:?}");
}

/// The attack: connections that never log in but send NOOP fill `max_sessions`.
/// They are closed with 421 after `login_timeout_secs`; logged-in sessions stay.
#[test]
fn sessions_that_never_log_in_are_closed() {
    let g = gate("login_timeout_secs = 2\nmax_sessions = 4\n");
    let mut user = g.login();
    let mut squatters: Vec<Ctl> = (0..3).map(|_| g.ctl()).collect();
    // Full: a fourth anonymous connection is turned away.
    let s = TcpStream::connect(g.addr).unwrap();
    assert_eq!(common::first_reply(&s).map(|r| r.0), Some(421));
    let started = Instant::now();
    for sq in squatters.iter_mut() {
        assert_eq!(sq.cmd("USER nobody").code, 331);
    }
    let mut closed = 0;
    while closed < squatters.len() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "squatters not closed"
        );
        closed = 0;
        for sq in squatters.iter_mut() {
            let _ = sq.w.write_all(b"NOOP\r\n");
            match std::io::BufRead::fill_buf(&mut sq.r) {
                Ok(b) if b.starts_with(b"421") => closed += 1,
                Ok([]) => closed += 1,
                _ => {
                    let _ = sq.read();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
    g.wait_log("no login within server.login_timeout_secs");
    // The logged-in session outlived the login timeout, and there is room again.
    assert_eq!(user.cmd("NOOP").code, 200);
    let mut c = g.ctl();
    c.login(USER, PASS);
    assert_eq!(c.cmd("PWD").code, 257);
}

/// Behind a PROXY balancer, the client claims addresses of one IPv6 /64: the
/// per-IP cap counts them as one client (`ipv6_prefix_len = 64`), another /64 is
/// another client, and IPv4-mapped addresses count as their IPv4 address.
#[test]
fn ipv6_addresses_of_one_network_are_one_client() {
    let g = gate(
        "proxy_protocol = true\nproxy_trusted = [\"127.0.0.1/32\"]\n\
         max_sessions_per_ip = 1\n",
    );
    let dst = "[2001:db8::ff]:21";
    let greet = |src: &str| -> u16 {
        let mut s = TcpStream::connect(g.addr).unwrap();
        s.write_all(&proxy_v2(src, dst)).unwrap();
        let code = common::first_reply(&s).map(|r| r.0).unwrap_or(0);
        std::mem::forget(s); // held open
        code
    };
    assert_eq!(greet("[2001:db8:1:2::1]:4000"), 220);
    assert_eq!(greet("[2001:db8:1:2:ffff:1:2:3]:4001"), 421, "same /64");
    assert_eq!(greet("[2001:db8:1:3::1]:4002"), 220, "another /64");
    let v4 = |src: &str| -> u16 {
        let mut s = TcpStream::connect(g.addr).unwrap();
        s.write_all(&proxy_v2(src, "192.0.2.1:21")).unwrap();
        let code = common::first_reply(&s).map(|r| r.0).unwrap_or(0);
        std::mem::forget(s);
        code
    };
    assert_eq!(v4("198.51.100.7:5000"), 220);
    assert_eq!(greet("[::ffff:198.51.100.7]:5001"), 421, "IPv4-mapped");
    assert_eq!(v4("198.51.100.8:5000"), 220, "IPv4 counts per address");
}

/// Failed logins from one /64 ban the whole /64.
#[test]
fn a_ban_covers_the_ipv6_network() {
    let g = gate(
        "proxy_protocol = true\nproxy_trusted = [\"127.0.0.1/32\"]\n\
         ban_after_failures = 2\nmax_login_failures = 5\n",
    );
    let dst = "[2001:db8::ff]:21";
    let connect = |src: &str| -> TcpStream {
        let mut s = TcpStream::connect(g.addr).unwrap();
        s.write_all(&proxy_v2(src, dst)).unwrap();
        s
    };
    let mut c = Ctl::over(connect("[2001:db8:7:7::1]:4000"));
    assert_eq!(c.cmd(&format!("USER {USER}")).code, 331);
    assert_eq!(c.cmd("PASS wrong").code, 530);
    assert_eq!(c.cmd(&format!("USER {USER}")).code, 331);
    // The failure that starts the ban may close the connection at once.
    let r = c.cmd("PASS wrong");
    assert!(r.code == 530 || r.code == 421, "{r:?}");
    let other_host = connect("[2001:db8:7:7:dead:beef:0:1]:4001");
    assert_eq!(common::first_reply(&other_host).map(|r| r.0), Some(421));
    let other_net = connect("[2001:db8:7:8::1]:4002");
    assert_eq!(common::first_reply(&other_net).map(|r| r.0), Some(220));
}

/// Over ::1 the per-client cap still holds (the key function on a real IPv6 peer).
#[test]
fn per_ip_cap_over_ipv6_loopback() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback");
        return;
    }
    let g = Gate::start_toml(|dir| {
        format!(
            "[server]\nlisten = \"[::1]:0\"\nmax_sessions_per_ip = 2\n\
             [storage]\nkind = \"memory\"\nroot = \"{}\"\n\
             [[users]]\nname = \"{USER}\"\npassword_hash = \"{}\"\n",
            dir.join("data").display(),
            common::hash(PASS)
        )
    });
    assert!(g.addr.is_ipv6());
    let mut a = g.login();
    let _b = g.ctl();
    let third = TcpStream::connect(g.addr).unwrap();
    assert_eq!(common::first_reply(&third).map(|r| r.0), Some(421));
    assert_eq!(a.cmd("PWD").code, 257);
}

/// `proxy_protocol = true` without `proxy_trusted` would let anyone claim any
/// client address (and take another client's passive data connection): refused.
#[test]
fn proxy_protocol_without_trusted_networks_refuses_to_start() {
    let err = refused_start(
        Some("[server]\nlisten = \"127.0.0.1:0\"\nproxy_protocol = true\n"),
        &[],
    );
    assert!(err.contains("server.proxy_trusted"), "{err}");
    assert!(err.contains("0.0.0.0/0"), "{err}");
}

/// The attack: many downloads whose client never reads. Each holds at most a
/// small, fixed amount of server memory (README: 512 KiB of read buffers).
#[test]
fn stalled_downloads_hold_little_memory() {
    const N: usize = 40;
    let g = gate("max_sessions_per_ip = 100\n");
    let big = payload(32 << 20, 7);
    std::fs::write(g.root().join("big.bin"), &big).unwrap();
    let mut held = Vec::new();
    // Warm up allocator arenas and threads with one complete download.
    let (r, data) = g.login().retr("big.bin");
    assert_eq!((r.code, sha(&data)), (226, sha(&big)));
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(g.pid());
    for _ in 0..N {
        let mut c = g.login();
        let port = c.epsv_port();
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
            .unwrap();
        let r = c.cmd("RETR big.bin");
        assert_eq!(r.code, 150, "{r:?}");
        held.push((c, TcpStream::from(sock)));
    }
    // Wait until memory stops growing (every reader has filled its buffers).
    let mut last = 0;
    let mut stable = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stable < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        let now = rss_kib(g.pid());
        if now.abs_diff(last) < 256 {
            stable += 1;
        } else {
            stable = 0;
        }
        last = now;
    }
    let per = last.saturating_sub(before) / N as u64;
    println!(
        "{N} stalled downloads: RSS {before} → {last} KiB, {per} KiB per download \
         (peak {} KiB)",
        g.peak_rss_kib()
    );
    assert!(per < 1024, "{per} KiB per stalled download");
    // The stalled clients can still read everything.
    let (mut c, mut d) = held.pop().unwrap();
    let mut got = Vec::new();
    d.read_to_end(&mut got).unwrap();
    assert_eq!(sha(&got), sha(&big));
    assert_eq!(c.read().code, 226);
}

/// A large sparse file: reading it costs no disk, hashing it costs CPU.
fn sparse(g: &Gate, name: &str, len: u64) {
    let f = std::fs::File::create(g.root().join(name)).unwrap();
    f.set_len(len).unwrap();
}

/// User + system CPU seconds of a process so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the comm.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// The attack: HASH a huge file and disconnect. The digest stops (logged), the
/// server's CPU goes quiet.
#[test]
fn hash_stops_when_the_client_disconnects() {
    let g = gate("max_hash_bytes = 0\n");
    sparse(&g, "huge.bin", 64 << 30);
    let mut c = g.login();
    c.send_raw(b"XMD5 huge.bin\r\n");
    g.wait_logs("XMD5 running", |l| l.contains("verb=\"XMD5\""));
    drop(c);
    g.wait_log("hash cancelled");
    // Nothing hashes on: the process uses (almost) no CPU over the next 2 s.
    std::thread::sleep(Duration::from_millis(300));
    let t0 = cpu_secs(g.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_secs(g.pid()) - t0;
    assert!(
        used < 1.0,
        "{used:.2} s of CPU in 2 s after the client left"
    );
}

/// ABOR during HASH: 426 for the digest, then 226 for ABOR (RFC 959 §4.1.3); a
/// command sent meanwhile waits for the digest's slot and is answered after.
#[test]
fn abor_stops_hash_and_hash_holds_the_transfer_slot() {
    let g = gate("max_hash_bytes = 0\n");
    sparse(&g, "huge.bin", 64 << 30);
    let mut c = g.login();
    c.send_raw(b"HASH huge.bin\r\nNOOP\r\n");
    g.wait_logs("HASH running", |l| l.contains("verb=\"HASH\""));
    c.send_raw(b"ABOR\r\n");
    let r = c.read();
    assert_eq!(r.code, 426, "{r:?}");
    assert_eq!(c.read().code, 226);
    assert_eq!(c.read().code, 200, "NOOP answered after the digest ended");
    g.wait_log("hash cancelled");
    // The session still works and small files still hash.
    let data = payload(100_000, 3);
    std::fs::write(g.root().join("small"), &data).unwrap();
    let r = c.cmd("HASH small");
    assert_eq!(r.code, 213, "{r:?}");
    assert!(r.text.contains(&sha(&data)), "{r:?}");
}

/// Above `server.max_hash_bytes`: 504 naming the setting, nothing read; at the
/// limit the digest is computed.
#[test]
fn hash_above_the_size_limit_is_refused() {
    let g = gate("max_hash_bytes = 1048576\n");
    let at = payload(1 << 20, 1);
    std::fs::write(g.root().join("at"), &at).unwrap();
    std::fs::write(g.root().join("over"), payload((1 << 20) + 1, 2)).unwrap();
    let mut c = g.login();
    let r = c.cmd("HASH over");
    assert_eq!(r.code, 504, "{r:?}");
    assert!(r.text.contains("server.max_hash_bytes"), "{r:?}");
    assert_eq!(c.cmd("XCRC over").code, 504);
    let r = c.cmd("XSHA256 at");
    assert_eq!(r.code, 250, "{r:?}");
    assert!(r.text.contains(&sha(&at)), "{r:?}");
}
