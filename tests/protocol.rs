//! Protocol-level end-to-end tests: the real binary driven with raw FTP lines.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{payload, sha, Gate, Opts, PASS, USER};

#[test]
fn greeting_syst_and_login_gate() {
    let g = Gate::start();
    let mut c = g.ctl();
    assert_eq!(c.cmd("SYST").text.trim_end(), "215 UNIX Type: L8");
    assert_eq!(c.cmd("PWD").code, 530);
    assert_eq!(c.cmd("RETR x").code, 530);
    assert_eq!(c.cmd("PASV").code, 530);
    assert_eq!(c.cmd("FEAT").code, 211);
    // No user enumeration: 331 for anyone, 530 for any wrong part.
    assert_eq!(c.cmd("USER nobody").code, 331);
    assert_eq!(c.cmd("PASS whatever").code, 530);
    assert_eq!(c.cmd("USER tester").code, 331);
    assert_eq!(c.cmd("PASS wrong").code, 530);
    assert_eq!(c.cmd(&format!("USER {USER}")).code, 331);
    assert_eq!(c.cmd(&format!("PASS {PASS}")).code, 230);
    assert_eq!(
        c.cmd("PWD").text.trim_end(),
        "257 \"/\" is the current directory"
    );
    g.wait_log("login failed");
}

#[test]
fn too_many_login_failures_disconnect() {
    let g = Gate::start();
    let mut c = g.ctl();
    for _ in 0..2 {
        c.cmd("USER tester");
        assert_eq!(c.cmd("PASS bad").code, 530);
    }
    c.cmd("USER tester");
    assert_eq!(c.cmd("PASS bad").code, 421);
    let mut rest = String::new();
    let _ = c.r.read_to_string(&mut rest);
    assert_eq!(rest, "", "connection must be closed");
}

#[test]
fn long_lines_and_garbage_are_refused_without_closing() {
    let g = Gate::start();
    let mut c = g.login();
    let long = "X".repeat(10_000);
    assert_eq!(c.cmd(&long).code, 500);
    // 1 MB of garbage without CRLF, then a normal command.
    let garbage: Vec<u8> = payload(1 << 20, 7)
        .into_iter()
        .map(|b| if b == b'\n' { b'x' } else { b })
        .collect();
    c.send_raw(&garbage);
    c.send_raw(b"\r\n");
    assert_eq!(c.read().code, 500);
    assert_eq!(c.cmd("NOOP").code, 200);
    assert_eq!(c.cmd("FOO bar").code, 502);
    assert_eq!(c.cmd("").code, 500);
    assert_eq!(c.cmd("REST abc").code, 501);
    assert_eq!(c.cmd("TYPE X").code, 501);
    assert_eq!(c.cmd("MODE B").code, 504);
    assert_eq!(c.cmd("STRU R").code, 504);
    assert_eq!(c.cmd("AUTH TLS").code, 502);
}

#[test]
fn telnet_ip_synch_before_abor_is_understood() {
    let g = Gate::start();
    let mut c = g.login();
    c.send_raw(&[255, 244, 255, 242]);
    c.send_raw(b"ABOR\r\n");
    let r = c.read();
    assert_eq!(r.code, 226, "{r:?}");
    assert_eq!(c.cmd("NOOP").code, 200);
}

#[test]
fn type_forms_from_legacy_devices() {
    let g = Gate::start();
    let mut c = g.login();
    for t in [
        "TYPE I", "type i", "TYPE L 8", "TYPE A", "TYPE A N", "type a n",
    ] {
        assert_eq!(c.cmd(t).code, 200, "{t}");
    }
    // TYPE A without conversion configured: bytes stay exactly as sent.
    let data = b"line1\r\nline2\nbin\x00\xff\r".to_vec();
    let (_, fin) = c.store("STOR t.txt", &data);
    assert_eq!(fin.code, 226);
    assert_eq!(std::fs::read(g.root().join("t.txt")).unwrap(), data);
    let (fin, got) = c.retr("t.txt");
    assert_eq!(fin.code, 226);
    assert_eq!(got, data);
}

#[test]
fn ascii_conversion_when_configured() {
    let g = Gate::start_with(Opts {
        extra: "[transfer]\nascii_conversion = true\n".into(),
        ..Default::default()
    });
    let mut c = g.login();
    c.cmd("TYPE A");
    let (_, fin) = c.store("STOR a.txt", b"one\r\ntwo\r\n");
    assert_eq!(fin.code, 226);
    assert_eq!(
        std::fs::read(g.root().join("a.txt")).unwrap(),
        b"one\ntwo\n"
    );
    let (_, got) = c.retr("a.txt");
    assert_eq!(got, b"one\r\ntwo\r\n");
    c.cmd("TYPE I");
    let (_, got) = c.retr("a.txt");
    assert_eq!(got, b"one\ntwo\n");
}

#[test]
fn store_retrieve_rest_appe_stou() {
    let g = Gate::start();
    let mut c = g.login();
    let data = payload(3 << 20, 1);
    let (pre, fin) = c.store("STOR big file #1 %.bin", &data);
    assert_eq!(pre.code, 150);
    assert_eq!(fin.code, 226, "{fin:?}");
    assert_eq!(
        common::sha_file(&g.root().join("big file #1 %.bin")),
        sha(&data)
    );
    assert_eq!(
        c.cmd("SIZE big file #1 %.bin").text.trim_end(),
        format!("213 {}", data.len())
    );
    let (fin, got) = c.retr("big file #1 %.bin");
    assert_eq!(fin.code, 226);
    assert_eq!(sha(&got), sha(&data));
    // REST + RETR
    assert_eq!(c.cmd("REST 1000").code, 350);
    let (_, got) = c.retr("big file #1 %.bin");
    assert_eq!(got, data[1000..]);
    // REST == size: empty transfer; REST > size: refused before 150.
    c.cmd(&format!("REST {}", data.len()));
    let (fin, got) = c.retr("big file #1 %.bin");
    assert_eq!((fin.code, got.len()), (226, 0));
    c.cmd(&format!("REST {}", data.len() + 1));
    let _d = c.epsv();
    assert_eq!(c.cmd("RETR big file #1 %.bin").code, 554);
    // APPE
    c.store("STOR ap.txt", b"hello ");
    let (_, fin) = c.store("APPE ap.txt", b"world");
    assert_eq!(fin.code, 226);
    assert_eq!(
        std::fs::read(g.root().join("ap.txt")).unwrap(),
        b"hello world"
    );
    // REST + STOR resumes
    c.cmd("REST 6");
    let (_, fin) = c.store("STOR ap.txt", b"there");
    assert_eq!(fin.code, 226);
    assert_eq!(
        std::fs::read(g.root().join("ap.txt")).unwrap(),
        b"hello there"
    );
    // STOU: RFC 1123 "FILE:" in the 150 reply, never overwrites.
    let (pre, fin) = c.store("STOU ap.txt", b"unique");
    assert_eq!(pre.code, 150);
    assert!(pre.text.contains("FILE: ap.txt.1"), "{pre:?}");
    assert_eq!(fin.code, 226);
    assert_eq!(
        std::fs::read(g.root().join("ap.txt")).unwrap(),
        b"hello there"
    );
    assert_eq!(std::fs::read(g.root().join("ap.txt.1")).unwrap(), b"unique");
    let (pre, _) = c.store("STOU", b"x");
    assert!(pre.text.contains("FILE: ftpgate-"), "{pre:?}");
    // RETR of a directory or a missing file: 550 before any 150.
    c.cmd("MKD d");
    let _d = c.epsv();
    assert_eq!(c.cmd("RETR d").code, 550);
    assert_eq!(c.cmd("RETR missing").code, 550);
    // No data endpoint: 425.
    let mut c2 = g.login();
    assert_eq!(c2.cmd("RETR ap.txt").code, 425);
}

#[test]
fn listings_and_facts() {
    let g = Gate::start();
    std::fs::create_dir_all(g.root().join("dir one")).unwrap();
    std::fs::write(g.root().join("dir one/ü日本 #%.txt"), b"12345").unwrap();
    std::fs::write(g.root().join("a.pdf"), b"x").unwrap();
    std::fs::write(g.root().join("b.pdf"), b"y").unwrap();
    let mut c = g.login();
    let (fin, text) = c.list("LIST -la");
    assert_eq!(fin.code, 226);
    assert!(
        text.lines()
            .any(|l| l.starts_with("drwxr-xr-x") && l.ends_with(" dir one")),
        "{text}"
    );
    assert!(text.ends_with("\r\n"));
    let (_, text) = c.list("LIST dir one");
    assert!(
        text.contains("-rw-r--r-- 1 ftp ftp            5 "),
        "{text}"
    );
    assert!(text.trim_end().ends_with("ü日本 #%.txt"));
    let (_, text) = c.list("NLST");
    let mut names: Vec<&str> = text.lines().collect();
    names.sort();
    assert_eq!(names, ["a.pdf", "b.pdf", "dir one"]);
    let (_, text) = c.list("NLST *.pdf");
    let mut names: Vec<&str> = text.lines().collect();
    names.sort();
    assert_eq!(names, ["a.pdf", "b.pdf"]);
    let (_, text) = c.list("NLST dir one");
    assert_eq!(text.trim_end(), "dir one/ü日本 #%.txt");
    let (_, text) = c.list("MLSD dir one");
    assert!(text.starts_with("type=file;size=5;modify="), "{text}");
    assert!(text.contains(";perm=adfrw;"), "{text}");
    assert!(text.trim_end().ends_with("; ü日本 #%.txt"));
    let r = c.cmd("MLST dir one");
    assert_eq!(r.code, 250);
    assert!(r.text.contains("\r\n type=dir;"), "{r:?}");
    assert!(r.text.contains("; /dir one\r\n250 "), "{r:?}");
    assert_eq!(
        c.cmd("OPTS MLST type;size;").text.trim_end(),
        "200 MLST OPTS type;size;"
    );
    let (_, text) = c.list("MLSD");
    assert!(text.lines().all(|l| !l.contains("modify=")), "{text}");
    let _d = c.epsv();
    assert_eq!(c.cmd("MLSD a.pdf").code, 501);
    let r = c.cmd("STAT dir one");
    assert_eq!(r.code, 213);
    assert!(r.text.contains("ü日本 #%.txt"));
    assert_eq!(c.cmd("STAT").code, 211);
    let r = c.cmd("HELP");
    assert_eq!(r.code, 214);
    assert!(r.text.contains("MLSD"));
}

#[test]
fn directories_rename_delete_times() {
    let g = Gate::start();
    let mut c = g.login();
    let r = c.cmd("MKD a \"q\"");
    assert_eq!(r.text.trim_end(), "257 \"/a \"\"q\"\"\" created");
    assert_eq!(c.cmd("XMKD sub").code, 257);
    assert_eq!(c.cmd("MKD sub").code, 550);
    assert_eq!(c.cmd("MKD no/such/parent").code, 550);
    assert_eq!(c.cmd("CWD sub").code, 250);
    assert_eq!(
        c.cmd("XPWD").text.trim_end(),
        "257 \"/sub\" is the current directory"
    );
    c.store("STOR f", b"1");
    assert_eq!(c.cmd("CDUP").code, 250);
    assert_eq!(c.cmd("CWD missing").code, 550);
    assert_eq!(c.cmd("CWD sub/f").code, 550);
    assert_eq!(c.cmd("RMD sub").code, 550);
    assert_eq!(c.cmd("RNFR sub/f").code, 350);
    assert_eq!(c.cmd("RNTO g").code, 250);
    assert!(g.root().join("g").exists());
    assert_eq!(c.cmd("RNTO x").code, 503);
    // Rename over an existing file (rclone's partial-then-rename).
    c.store("STOR h.partial", b"new");
    assert_eq!(c.cmd("RNFR h.partial").code, 350);
    assert_eq!(c.cmd("RNTO g").code, 250);
    assert_eq!(std::fs::read(g.root().join("g")).unwrap(), b"new");
    assert_eq!(c.cmd("RNFR missing").code, 550);
    assert_eq!(c.cmd("RMD sub").code, 250);
    assert_eq!(c.cmd("DELE g").code, 250);
    assert_eq!(c.cmd("DELE g").code, 550);
    c.store("STOR t", b"1");
    assert_eq!(
        c.cmd("MFMT 20200102030405 t").text.trim_end(),
        "213 Modify=20200102030405; t"
    );
    assert_eq!(c.cmd("MDTM t").text.trim_end(), "213 20200102030405");
    assert_eq!(c.cmd("MDTM missing").code, 550);
    assert_eq!(c.cmd("SIZE a \"q\"").code, 550);
    let feat = c.cmd("FEAT").text;
    for f in [
        " MFMT",
        " MDTM",
        " SIZE",
        " EPSV",
        " EPRT",
        " UTF8",
        " REST STREAM",
        " MLST type*",
    ] {
        assert!(feat.contains(f), "FEAT lacks {f}: {feat}");
    }
}

#[test]
fn abor_during_retr_gives_426_then_226() {
    let g = Gate::start();
    std::fs::write(g.root().join("big"), payload(64 << 20, 3)).unwrap();
    let mut c = g.login();
    let mut d = c.epsv();
    assert_eq!(c.cmd("RETR big").code, 150);
    let mut buf = [0u8; 65536];
    d.read_exact(&mut buf).unwrap();
    let r1 = c.cmd("ABOR");
    let r2 = c.read();
    assert_eq!((r1.code, r2.code), (426, 226), "{r1:?} {r2:?}");
    drop(d);
    assert_eq!(c.cmd("NOOP").code, 200);
    // The session still transfers.
    let (fin, got) = c.retr("big");
    assert_eq!(fin.code, 226);
    assert_eq!(got.len(), 64 << 20);
}

#[test]
fn abor_during_stor_leaves_nothing() {
    let g = Gate::start();
    let mut c = g.login();
    let mut d = c.epsv();
    assert_eq!(c.cmd("STOR partial.bin").code, 150);
    d.write_all(&payload(1 << 20, 4)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let r1 = c.cmd("ABOR");
    let r2 = c.read();
    assert_eq!((r1.code, r2.code), (426, 226));
    assert!(!g.root().join("partial.bin").exists());
    // Not committed; kept only in the hidden pending directory, for resuming
    // (storage.resume_window_secs, tests/resume.rs).
    let leftovers: Vec<_> = std::fs::read_dir(g.root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".ftpgate-tmp-pending")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn commands_during_a_transfer_wait_for_its_reply() {
    let g = Gate::start();
    std::fs::write(g.root().join("f"), payload(8 << 20, 5)).unwrap();
    let mut c = g.login();
    let mut d = c.epsv();
    c.send_raw(b"RETR f\r\nNOOP\r\nPWD\r\n");
    assert_eq!(c.read().code, 150);
    let mut got = Vec::new();
    d.read_to_end(&mut got).unwrap();
    assert_eq!(c.read().code, 226);
    assert_eq!(c.read().code, 200);
    assert_eq!(c.read().code, 257);
    assert_eq!(got.len(), 8 << 20);
}

#[test]
fn pasv_and_active_modes() {
    let g = Gate::start();
    std::fs::write(g.root().join("f"), b"active data").unwrap();
    let mut c = g.login();
    // PASV
    let mut d = c.pasv();
    assert_eq!(c.cmd("RETR f").code, 150);
    let mut s = String::new();
    d.read_to_string(&mut s).unwrap();
    assert_eq!(s, "active data");
    assert_eq!(c.read().code, 226);
    // PORT
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    assert_eq!(
        c.cmd(&format!("PORT 127,0,0,1,{},{}", p >> 8, p & 255))
            .code,
        200
    );
    assert_eq!(c.cmd("RETR f").code, 150);
    let (mut ds, _) = l.accept().unwrap();
    let mut s = String::new();
    ds.read_to_string(&mut s).unwrap();
    assert_eq!(s, "active data");
    assert_eq!(c.read().code, 226);
    // EPRT
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    assert_eq!(c.cmd(&format!("EPRT |1|127.0.0.1|{p}|")).code, 200);
    c.send_raw(b"STOR up\r\n");
    let (mut ds, _) = l.accept().unwrap();
    assert_eq!(c.read().code, 150);
    ds.write_all(b"via eprt").unwrap();
    drop(ds);
    assert_eq!(c.read().code, 226);
    assert_eq!(std::fs::read(g.root().join("up")).unwrap(), b"via eprt");
    // EPSV ALL locks out PASV/PORT.
    assert_eq!(c.cmd("EPSV ALL").code, 200);
    assert_eq!(c.cmd("PASV").code, 503);
    assert_eq!(c.cmd("EPSV").code, 229);
}

#[test]
fn bounce_attacks_are_refused_without_connecting() {
    let g = Gate::start();
    let mut c = g.login();
    // A listener on 127.0.0.2 that must never be contacted.
    let l = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let p = l.local_addr().unwrap().port();
    assert_eq!(
        c.cmd(&format!("PORT 127,0,0,2,{},{}", p >> 8, p & 255))
            .code,
        504
    );
    assert_eq!(c.cmd(&format!("EPRT |1|127.0.0.2|{p}|")).code, 504);
    assert_eq!(c.cmd("PORT 127,0,0,1,0,21").code, 504);
    assert_eq!(c.cmd("EPRT |1|127.0.0.1|25|").code, 504);
    // The 425 is the positive signal: a connection would have been tried first.
    assert_eq!(c.cmd("RETR x").code, 425);
    assert!(l.accept().is_err(), "server connected to a foreign address");
}

#[test]
fn data_port_theft_is_refused() {
    let g = Gate::start();
    std::fs::write(g.root().join("secret"), b"for the real client").unwrap();
    let mut c = g.login();
    let port = c.epsv_port();
    // The thief connects first, from another loopback address.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let thief = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        s.connect(
            ("127.0.0.1:".to_owned() + &port.to_string())
                .parse()
                .unwrap(),
        )
        .await
        .unwrap()
    });
    let mut thief = thief.into_std().unwrap();
    thief.set_nonblocking(false).unwrap();
    thief
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut real = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(c.cmd("RETR secret").code, 150);
    let mut got = String::new();
    real.read_to_string(&mut got).unwrap();
    assert_eq!(got, "for the real client");
    assert_eq!(c.read().code, 226);
    let mut stolen = Vec::new();
    let _ = thief.read_to_end(&mut stolen);
    assert!(stolen.is_empty());
    g.wait_log("refused data connection from a foreign address");
}

#[test]
fn traversal_and_hostile_names_stay_inside() {
    let g = Gate::start();
    std::fs::write(g.dir.path().join("outside.txt"), b"SECRET").unwrap();
    std::fs::create_dir_all(g.root().join("in")).unwrap();
    std::fs::write(g.root().join("in/ok.txt"), b"fine").unwrap();
    std::os::unix::fs::symlink(g.dir.path(), g.root().join("escape")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", g.root().join("passwd")).unwrap();
    let mut c = g.login();
    let hostile = [
        "../outside.txt",
        "../../outside.txt",
        "/../outside.txt",
        "in/../../outside.txt",
        "./../outside.txt",
        "..//outside.txt",
        "/../../../../etc/passwd",
        "../../etc/passwd",
        "%2e%2e/outside.txt",
        "%2e%2e%2foutside.txt",
        "..%2foutside.txt",
        "..\\outside.txt",
        "\\..\\outside.txt",
        "in\\..\\..\\outside.txt",
        "escape/outside.txt",
        "escape/data/in/ok.txt",
        "passwd",
        "escape",
        "/etc/passwd",
        "....//outside.txt",
        "in/../../../outside.txt",
        "//outside.txt",
        "~/outside.txt",
        "~root/.bashrc",
        "..",
        "../",
        "in/..\\..",
        "*/../outside.txt",
        "in/%00/../../outside.txt",
        "outside.txt%00.jpg",
        "..%c0%afoutside.txt",
        "..%252foutside.txt",
    ];
    assert!(hostile.len() >= 30);
    // Reads first, while nothing named like the target exists inside the root.
    for p in hostile {
        let (fin, got) = c.retr(p);
        assert_ne!(fin.code, 226, "RETR {p} succeeded");
        assert!(!String::from_utf8_lossy(&got).contains("SECRET"));
        assert!(!String::from_utf8_lossy(&got).contains("root:"));
        let r = c.cmd(&format!("CWD {p}"));
        if r.code == 250 {
            // `..` clamps at the home: the only reachable directories are inside it.
            let pwd = c.cmd("PWD").text;
            assert!(!pwd.contains(".."), "{pwd}");
            c.cmd("CWD /");
        }
    }
    // Writes: refused, or clamped to a name inside the root.
    for p in hostile {
        c.store(&format!("STOR {p}"), b"pwned");
        c.cmd(&format!("DELE {p}"));
        c.cmd(&format!("RMD {p}"));
    }
    // NUL and CR/LF inside names are refused (553), never stored.
    c.send_raw(b"MKD a\0b\r\n");
    assert_eq!(c.read().code, 553);
    // Nothing outside the root was written or changed.
    assert_eq!(
        std::fs::read(g.dir.path().join("outside.txt")).unwrap(),
        b"SECRET"
    );
    let outside: Vec<String> = std::fs::read_dir(g.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for name in &outside {
        assert!(
            ["outside.txt", "data", "ftpgate.toml"].contains(&name.as_str()),
            "unexpected {name} outside root"
        );
    }
    assert!(!std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .contains("pwned"));
    assert_eq!(std::fs::read(g.root().join("in/ok.txt")).unwrap(), b"fine");
}

#[test]
fn write_only_drop_box() {
    let g = Gate::start_with(Opts {
        users: vec![(
            "scanner".into(),
            "scan".into(),
            "/scans".into(),
            "[\"write\"]".into(),
        )],
        ..Default::default()
    });
    let mut c = g.ctl();
    c.login("scanner", "scan");
    // The scanner "connection test": CWD / works without list permission.
    assert_eq!(c.cmd("CWD /").code, 250);
    let (_, fin) = c.store("STOR scan001.pdf", b"%PDF-1.4");
    assert_eq!(fin.code, 226);
    assert_eq!(
        std::fs::read(g.root().join("scans/scan001.pdf")).unwrap(),
        b"%PDF-1.4"
    );
    let _d = c.epsv();
    assert_eq!(c.cmd("LIST").code, 550);
    assert_eq!(c.cmd("RETR scan001.pdf").code, 550);
    assert_eq!(c.cmd("DELE scan001.pdf").code, 550);
    assert_eq!(c.cmd("MKD x").code, 550);
    assert_eq!(c.cmd("RNFR scan001.pdf").code, 550);
    // The home is the root: `..` cannot leave it.
    assert_eq!(c.cmd("CWD ..").code, 250);
    assert_eq!(
        c.cmd("PWD").text.trim_end(),
        "257 \"/\" is the current directory"
    );
    assert_eq!(c.cmd("QUIT").code, 221);
}

#[test]
fn session_limits_and_idle_timeout() {
    let g = Gate::start_with(Opts {
        server: "max_sessions_per_ip = 2\nidle_timeout_secs = 1\n".into(),
        ..Default::default()
    });
    let _a = g.ctl();
    let _b = g.ctl();
    let mut s = TcpStream::connect(g.addr).unwrap();
    let mut line = String::new();
    s.read_to_string(&mut line).unwrap();
    assert!(line.starts_with("421"), "{line}");
    // Idle sessions are closed with 421 after the timeout.
    let mut a = _a;
    assert_eq!(a.read().code, 421);
}

#[test]
fn memory_backend_serves_too() {
    let g = Gate::start_with(Opts {
        storage: "memory",
        ..Default::default()
    });
    let mut c = g.login();
    assert_eq!(c.cmd("MKD m").code, 257);
    let data = payload(2 << 20, 9);
    let (_, fin) = c.store("STOR m/x.bin", &data);
    assert_eq!(fin.code, 226);
    let (_, got) = c.retr("m/x.bin");
    assert_eq!(sha(&got), sha(&data));
    let (_, text) = c.list("MLSD m");
    assert!(text.contains(&format!("size={};", data.len())));
    assert!(!g.root().exists(), "memory backend must not touch disk");
}

#[test]
fn sigterm_closes_idle_sessions_and_exits_zero() {
    let mut g = Gate::start();
    let mut c = g.login();
    assert_eq!(g.terminate(), Some(0));
    assert_eq!(c.read().code, 421);
}

#[test]
fn hash_password_cli_prints_phc_last() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ftpgate"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("$argon2id$"), "{text}");
    assert!(ftpgate::auth::verify_password("correct horse", last));
}

#[test]
fn refuses_network_listen_without_users() {
    let err = common::refused_start(None, &["--listen", "0.0.0.0:0"]);
    assert!(
        err.contains("not a loopback address") && err.contains("users"),
        "{err}"
    );
}

#[test]
fn default_run_generates_a_loopback_login() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftpgate"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .current_dir(dir.path());
    let (mut child, addr, log) = common::spawn_listening(cmd);
    let log = log.lock().unwrap().clone();
    let password = log
        .split_once("password=")
        .map(|(_, rest)| rest.split_whitespace().next().unwrap().to_owned())
        .expect("password logged");
    assert!(dir.path().join("data").is_dir(), "./data created");
    let mut c = common::Ctl::connect(addr);
    c.login("ftpgate", &password);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn passive_range_and_advertised_host_name() {
    let g = Gate::start_with(Opts {
        extra: "[passive]\nports = \"47300-47399\"\nadvertise = \"localhost\"\n".into(),
        ..Default::default()
    });
    let mut c = g.login();
    for _ in 0..5 {
        let r = c.cmd("PASV");
        assert_eq!(r.code, 227);
        let inside = r.text.split('(').nth(1).unwrap().split(')').next().unwrap();
        let n: Vec<u16> = inside
            .split(',')
            .map(|x| x.trim().parse().unwrap())
            .collect();
        assert_eq!(&n[..4], &[127, 0, 0, 1], "{r:?}");
        assert!((47300..=47399).contains(&(n[4] * 256 + n[5])), "{r:?}");
        let port = c.epsv_port();
        assert!((47300..=47399).contains(&port));
    }
}

#[test]
fn ipv6_control_with_epsv_and_eprt() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback on this machine");
        return;
    }
    let g = Gate::start_toml(|dir| {
        format!(
            "[server]\nlisten = \"[::1]:0\"\n[storage]\nroot = \"{}\"\n[[users]]\nname = \"{USER}\"\npassword_hash = \"{}\"\n",
            dir.join("data").display(),
            common::hash(PASS)
        )
    });
    let mut c = g.login();
    assert_eq!(c.cmd("PASV").code, 425);
    assert_eq!(c.cmd("EPSV 1").code, 522);
    let port = c.epsv_port_with("EPSV 2");
    let mut d = TcpStream::connect(("::1", port)).unwrap();
    assert_eq!(c.cmd("STOR v6.txt").code, 150);
    d.write_all(b"over ipv6").unwrap();
    drop(d);
    assert_eq!(c.read().code, 226);
    let l = std::net::TcpListener::bind("[::1]:0").unwrap();
    let p = l.local_addr().unwrap().port();
    assert_eq!(c.cmd(&format!("EPRT |2|::1|{p}|")).code, 200);
    assert_eq!(c.cmd("RETR v6.txt").code, 150);
    let (mut ds, _) = l.accept().unwrap();
    let mut s = String::new();
    ds.read_to_string(&mut s).unwrap();
    assert_eq!(s, "over ipv6");
    assert_eq!(c.read().code, 226);
}

#[test]
fn json_logs_have_session_and_transfer_events() {
    let g = Gate::start_toml(|_| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n[storage]\nkind = \"memory\"\n[[users]]\nname = \"{USER}\"\npassword_hash = \"{}\"\n",
            common::hash(PASS)
        )
    });
    let mut c = g.login();
    let (_, fin) = c.store("STOR j.bin", b"json");
    assert_eq!(fin.code, 226);
    let logs = g.wait_logs("a transfer event", |l| {
        l.contains("\"message\":\"transfer\"")
    });
    assert!(logs.lines().all(|l| l.starts_with('{')), "{logs}");
    let transfer = logs
        .lines()
        .find(|l| l.contains("\"message\":\"transfer\""))
        .expect("transfer event");
    for key in [
        "\"verb\":\"STOR\"",
        "\"bytes\":4",
        "\"duration_ms\"",
        "\"code\":226",
        "\"user\":\"tester\"",
        "\"peer\"",
    ] {
        assert!(transfer.contains(key), "{key} missing in {transfer}");
    }
}

#[test]
fn stalled_data_connection_is_cut() {
    let g = Gate::start_with(Opts {
        server: "idle_timeout_secs = 1\n".into(),
        ..Default::default()
    });
    std::fs::write(g.root().join("big"), payload(64 << 20, 11)).unwrap();
    let mut c = g.login();
    let _d = c.epsv(); // connected, never read
    assert_eq!(c.cmd("RETR big").code, 150);
    let started = std::time::Instant::now();
    assert_eq!(c.read().code, 426);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(c.cmd("NOOP").code, 200);
}

#[test]
fn users_on_named_backends_are_isolated() {
    let g = Gate::start_with(Opts {
        extra: format!(
            "[[users]]\nname = \"memo\"\npassword_hash = \"{}\"\nbackend = \"scratch\"\nhome = \"/m\"\n\n\
             [backends.scratch]\nkind = \"memory\"\n",
            common::hash("pw")
        ),
        ..Default::default()
    });
    let mut m = g.ctl();
    m.login("memo", "pw");
    let (_, fin) = m.store("STOR only-in-memory.txt", b"mem");
    assert_eq!(fin.code, 226);
    let (_, got) = m.retr("only-in-memory.txt");
    assert_eq!(got, b"mem");
    // The default user's local root never sees it.
    assert!(!g.root().join("m").exists());
    assert!(!g.root().join("only-in-memory.txt").exists());
    let mut c = g.login();
    let (_, text) = c.list("NLST");
    assert!(!text.contains("only-in-memory"), "{text}");
}

#[test]
fn unknown_backend_name_refuses_to_start() {
    let toml = format!(
        "[[users]]\nname = \"u\"\npassword_hash = \"{}\"\nbackend = \"nope\"\n",
        common::hash("x")
    );
    let err = common::refused_start(Some(&toml), &[]);
    assert!(
        err.contains("users[0].backend") && err.contains("[backends.nope]"),
        "{err}"
    );
}
