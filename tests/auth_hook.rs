//! End-to-end: the external authentication hook (`[auth_hook]`) against a real
//! HTTP endpoint run by the test ([`common::receiver`]). Hook users log in with
//! curl and a raw client, land in the home the hook gave them with its
//! permissions; denials, a hook that is down, hangs, errs or answers a home
//! above the root all get 530; allowed logins are cached (the hook is not asked
//! again), wrong passwords never are, nor answers given for another TLS state;
//! requests are signed.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::receiver::{python_hmac, Answer, Receiver, Req};
use common::*;
use serde_json::json;

const SECRET: &str = "auth hook secret 7";

/// The test's hook: user `NAME` has password `NAME pw`; what each user gets.
fn answer(r: &Req) -> Answer {
    let j = r.json();
    let user = j["user"].as_str().unwrap_or_default();
    let pw = j["password"].as_str().unwrap_or_default();
    match user {
        "slow" => Answer {
            delay: Duration::from_secs(30),
            ..Answer::json(200, json!({"home": "/slow"}))
        },
        "broken" => Answer::status(500),
        "garbage" => Answer {
            body: b"allow".to_vec(),
            ..Answer::status(200)
        },
        _ if pw != format!("{user} pw") => Answer::status(401),
        "alice" => Answer::json(200, json!({"home": "/hooked/alice"})),
        "reader" => Answer::json(
            200,
            json!({"name": "reader", "home": "/shared", "permissions": ["list", "read"]}),
        ),
        "evil" => Answer::json(200, json!({"home": "../../etc"})),
        "stranger" => Answer::json(200, json!({"backend": "nope"})),
        "tester" => Answer::json(200, json!({"home": "/from-hook"})),
        "archivist" => Answer::json(200, json!({"home": "/arch", "backend": "archive"})),
        "remote" => Answer::json(
            200,
            json!({"home": "/remote", "allowed_networks": ["10.0.0.0/8"]}),
        ),
        "local" => Answer::json(
            200,
            json!({"home": "/local", "allowed_networks": ["127.0.0.0/8"], "max_sessions": 1}),
        ),
        _ => Answer::status(403),
    }
}

/// A gate on local storage with the file user `tester` (home `/`) and an
/// `[auth_hook]` at `url` (`hook` adds keys to it, `server` to `[server]`).
fn gate(url: &str, hook: &str, server: &str) -> Gate {
    let (url, hook, server) = (url.to_owned(), hook.to_owned(), server.to_owned());
    Gate::start_toml(move |d| {
        let secret = d.join("hook.secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nlogin_failure_delay_ms = 10\n{server}\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [storage]\nkind = \"local\"\nroot = \"{}\"\n\
             [backends.archive]\nkind = \"memory\"\n\
             [[users]]\nname = \"{USER}\"\npassword_hash = \"{}\"\n\
             [auth_hook]\nurl = \"{url}\"\nsecret_file = \"{}\"\ntimeout_ms = 1500\n{hook}\n\
             [log]\nlevel = \"debug\"\n",
            d.join("data").display(),
            hash(PASS),
            secret.display()
        )
    })
}

fn hook_gate(hook: &str, server: &str) -> (Receiver, Gate) {
    let rx = Receiver::serve("127.0.0.1:0", |_, r| answer(r));
    let g = gate(&format!("http://{}/auth", rx.addr), hook, server);
    (rx, g)
}

/// USER/PASS on a new connection; the PASS reply code.
fn pass(g: &Gate, user: &str, pw: &str) -> u16 {
    let mut c = g.ctl();
    assert_eq!(c.cmd(&format!("USER {user}")).code, 331);
    c.cmd(&format!("PASS {pw}")).code
}

/// `ftpgate_auth_hook_logins_total{result}`.
fn hook_metric(g: &Gate, result: &str) -> f64 {
    let text = http_get(g.logged_addr("http endpoint bound"), "/metrics").1;
    metric(
        &text,
        &format!("ftpgate_auth_hook_logins_total{{result=\"{result}\"}}"),
    )
}

/// Requests the hook got for `user`.
fn asked(rx: &Receiver, user: &str) -> usize {
    rx.requests()
        .iter()
        .filter(|r| r.json()["user"] == user)
        .count()
}

fn curl(args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-sS", "--noproxy", "*", "--max-time", "30"])
        .args(args);
    no_proxy(&mut cmd);
    run_for(&mut cmd, Duration::from_secs(45))
}

fn ftp_url(g: &Gate, user: &str, path: &str) -> String {
    format!("ftp://{user}:{user}%20pw@{}{path}", g.addr)
}

/// Downloads `path` as hook user `user` with curl into `to`.
fn curl_get(g: &Gate, user: &str, path: &str, to: &std::path::Path) {
    let (code, _, err) = curl(&["-o", to.to_str().unwrap(), &ftp_url(g, user, path)]);
    assert_eq!(code, Some(0), "curl download {path} as {user}: {err}");
}

#[test]
fn hook_users_land_in_their_home_with_their_permissions() {
    let (rx, g) = hook_gate("", "");
    let work = tempfile::tempdir().unwrap();
    let data = payload(400_001, 11);
    let src = work.path().join("up.bin");
    std::fs::write(&src, &data).unwrap();

    // curl as the hook user alice: upload, then download, into /hooked/alice.
    let (code, _, err) = curl(&[
        "-T",
        src.to_str().unwrap(),
        &ftp_url(&g, "alice", "/up.bin"),
    ]);
    assert_eq!(code, Some(0), "curl upload: {err}\n{}", tail(&g.logs(), 40));
    assert_eq!(sha_file(&g.root().join("hooked/alice/up.bin")), sha(&data));
    let down = work.path().join("down.bin");
    curl_get(&g, "alice", "/up.bin", &down);
    assert_eq!(sha_file(&down), sha(&data));

    // reader: list and read only, in /shared.
    let doc = payload(70_000, 12);
    std::fs::create_dir_all(g.root().join("shared")).unwrap();
    std::fs::write(g.root().join("shared/doc.bin"), &doc).unwrap();
    let got = work.path().join("doc.bin");
    curl_get(&g, "reader", "/doc.bin", &got);
    assert_eq!(sha_file(&got), sha(&doc));
    let mut c = g.ctl();
    c.login("reader", "reader pw");
    assert!(c.cmd("PWD").text.contains("\"/\""));
    let (pre, _) = c.store("STOR /new.bin", b"not allowed");
    assert_eq!(pre.code, 550, "read-only hook user stored: {pre:?}");
    assert_eq!(c.cmd("DELE /doc.bin").code, 550);
    assert!(!g.root().join("shared/new.bin").exists());
    assert!(g.root().join("shared/doc.bin").exists());
    let (r, bytes) = c.retr("/doc.bin");
    assert_eq!(r.code, 226);
    assert_eq!(sha(&bytes), sha(&doc));

    // What the hook was sent, and the signature (checked by Python's hmac).
    let reqs = rx.requests();
    let secret_file = g.dir.path().join("hook.secret");
    assert!(asked(&rx, "alice") >= 1 && asked(&rx, "reader") >= 1);
    for r in &reqs {
        assert_eq!(r.path, "/auth");
        assert_eq!(r.headers["content-type"], "application/json");
        let sig = python_hmac(work.path(), &secret_file, &r.body);
        assert_eq!(r.headers["x-ftpgate-signature"], format!("sha256={sig}"));
        let j = r.json();
        let user = j["user"].as_str().unwrap();
        assert_eq!(j["password"], format!("{user} pw"));
        assert_eq!(j["ip"], "127.0.0.1");
        assert_eq!(j["protocol"], "ftp");
        assert_eq!(j["tls"], false);
        assert!(j["session_id"].as_u64().unwrap() > 0);
    }
    assert!(!g.logs().contains("alice pw"), "password logged");
}

#[test]
fn denials_and_hook_failures_refuse_the_login() {
    let (rx, g) = hook_gate("", "ban_after_failures = 0");
    for (user, pw, why) in [
        ("alice", "wrong", "auth hook denied the login"),
        ("nobody", "nobody pw", "auth hook denied the login"),
        ("broken", "broken pw", "HTTP 500"),
        ("garbage", "garbage pw", "not JSON"),
        ("evil", "evil pw", "outside the backend root"),
        ("stranger", "stranger pw", "no [backends.nope]"),
    ] {
        assert_eq!(pass(&g, user, pw), 530, "{user}");
        g.wait_log(why);
        assert_eq!(asked(&rx, user), 1, "{user}");
    }
    assert_eq!(hook_metric(&g, "denied"), 2.0);
    assert_eq!(hook_metric(&g, "failed"), 4.0);
    assert_eq!(hook_metric(&g, "allowed"), 0.0);
    // The refused home was never created, inside or outside the root.
    assert!(!g.root().join("etc").exists());
    assert!(!g.dir.path().join("etc").exists());
    assert!(!g.logs().contains("evil pw"), "password logged");

    // A hook that hangs past timeout_ms (1.5 s): refused, not waited for.
    let t = Instant::now();
    assert_eq!(pass(&g, "slow", "slow pw"), 530);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    g.wait_log("no answer within");
    // The first user still logs in after all that.
    assert_eq!(pass(&g, "alice", "alice pw"), 230);

    // A hook that is down: nothing listens on its port.
    let port = common::receiver::unused_port();
    let down = gate(&format!("http://127.0.0.1:{port}/auth"), "", "");
    assert_eq!(pass(&down, "alice", "alice pw"), 530);
    down.wait_log("auth hook failed: login refused (fail closed)");
    assert_eq!(pass(&down, USER, PASS), 230, "file users unaffected");
}

#[test]
fn allowed_logins_are_cached_wrong_passwords_are_not() {
    let (rx, g) = hook_gate("cache_secs = 60", "");
    assert_eq!(pass(&g, "alice", "alice pw"), 230);
    assert_eq!(pass(&g, "alice", "alice pw"), 230);
    g.wait_log("auth hook not asked: login recently allowed");
    assert_eq!(asked(&rx, "alice"), 1, "second login asked the hook");
    assert_eq!(hook_metric(&g, "allowed"), 1.0);
    assert_eq!(hook_metric(&g, "cached"), 1.0);
    // A wrong password for the cached user goes to the hook and fails.
    assert_eq!(pass(&g, "alice", "alice pwX"), 530);
    assert_eq!(asked(&rx, "alice"), 2);
    assert_eq!(pass(&g, "alice", "alice pwX"), 530);
    assert_eq!(asked(&rx, "alice"), 3, "a denial was cached");
    // SIGHUP empties the cache.
    g.signal("HUP");
    g.wait_log("users reloaded");
    assert_eq!(pass(&g, "alice", "alice pw"), 230);
    assert_eq!(asked(&rx, "alice"), 4, "cache kept across SIGHUP");

    // cache_secs = 0: every login asks.
    let (rx, g) = hook_gate("cache_secs = 0", "");
    for _ in 0..3 {
        assert_eq!(pass(&g, "alice", "alice pw"), 230);
    }
    assert_eq!(asked(&rx, "alice"), 3);
}

#[test]
fn users_file_first_or_hook_only() {
    // Default users_first: a file user is never sent to the hook.
    let (rx, g) = hook_gate("", "");
    assert_eq!(pass(&g, USER, PASS), 230);
    assert_eq!(pass(&g, USER, "tester pw"), 530, "hook overrode the file");
    assert_eq!(asked(&rx, USER), 0);

    // hook_only: the file is not used for logins.
    let (rx, g) = hook_gate("order = \"hook_only\"", "");
    assert_eq!(pass(&g, USER, PASS), 530);
    assert_eq!(asked(&rx, USER), 1);
    let mut c = g.ctl();
    c.login(USER, "tester pw");
    assert!(c.cmd("PWD").text.contains("\"/\""));
    let data = payload(12_345, 13);
    let (pre, done) = c.store("STOR /x.bin", &data);
    assert_eq!((pre.code, done.code), (150, 226));
    assert_eq!(sha_file(&g.root().join("from-hook/x.bin")), sha(&data));
}

#[test]
fn hook_denials_count_towards_bans() {
    let (rx, g) = hook_gate("", "ban_after_failures = 2\nban_secs = 600");
    assert_eq!(pass(&g, "alice", "wrong"), 530);
    let mut c = g.ctl();
    assert_eq!(c.cmd("USER alice").code, 331);
    assert_eq!(c.cmd("PASS wrong again").code, 421, "second failure bans");
    assert_eq!(asked(&rx, "alice"), 2);
    // Banned: refused at connect, the hook is not asked even for the right password.
    let s = TcpStream::connect(g.addr).unwrap();
    assert_eq!(first_reply(&s).map(|r| r.0), Some(421));
    assert_eq!(asked(&rx, "alice"), 2);
}

#[test]
fn hook_alone_needs_no_users_and_generates_none() {
    let rx = Receiver::serve("127.0.0.1:0", |_, r| answer(r));
    let url = format!("http://{}/auth", rx.addr);
    let g = Gate::start_toml(move |d| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nlogin_failure_delay_ms = 10\n\
             [storage]\nroot = \"{}\"\n[auth_hook]\nurl = \"{url}\"\n",
            d.join("data").display()
        )
    });
    assert_eq!(pass(&g, "alice", "alice pw"), 230);
    assert_eq!(pass(&g, "ftpgate", "anything"), 530);
    assert_eq!(asked(&rx, "ftpgate"), 1, "a generated user answered");
    assert!(!g.logs().contains("generated a login"));
    assert!(
        g.root().join("hooked/alice").is_dir(),
        "home created at login"
    );
}

#[test]
fn tls_state_reaches_the_hook_and_keys_the_cache() {
    let certs = tempfile::tempdir().unwrap();
    let cert = make_cert(certs.path(), "gate", "localhost");
    let (rx, g) = hook_gate(
        &format!("cache_secs = 60\n{}", tls_section(&cert, "")),
        "tls = \"optional\"",
    );
    let ca = cert.cert.to_str().unwrap().to_owned();
    let url = ftp_url(&g, "alice", "/");
    let list = ["--ssl-reqd", "--cacert", &ca, "-l", &url];
    let (code, _, err) = curl(&list);
    assert_eq!(code, Some(0), "curl over TLS: {err}");
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].json()["tls"], true);
    // A plain login is not served by the answer given for a TLS one.
    assert_eq!(pass(&g, "alice", "alice pw"), 230);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2, "plain login served from the TLS cache entry");
    assert_eq!(reqs[1].json()["tls"], false);
    // TLS again: from the cache.
    let (code, _, err) = curl(&list);
    assert_eq!(code, Some(0), "curl over TLS: {err}");
    assert_eq!(rx.requests().len(), 2);
}

#[test]
fn hook_users_get_the_backend_the_hook_names() {
    let (_rx, g) = hook_gate("", "");
    let data = payload(100_003, 14);
    let mut c = g.ctl();
    c.login("archivist", "archivist pw");
    let (pre, done) = c.store("STOR /kept.bin", &data);
    assert_eq!((pre.code, done.code), (150, 226));
    let (r, back) = c.retr("/kept.bin");
    assert_eq!(r.code, 226);
    assert_eq!(sha(&back), sha(&data));
    // In the memory backend, not on the local disk of [storage].
    assert!(!g.root().join("arch").exists());
    let mut other = g.ctl();
    other.login("alice", "alice pw");
    assert_eq!(other.retr("/kept.bin").0.code, 550);
}

/// The hook's answer carries per-user limits like a users-file entry:
/// `allowed_networks` refuses a client outside them (530, counted as a failed
/// login), `max_sessions` caps the user's sessions (421).
#[test]
fn hook_users_get_their_limits() {
    let (rx, g) = hook_gate("", "");
    assert_eq!(pass(&g, "remote", "remote pw"), 530);
    assert_eq!(asked(&rx, "remote"), 1, "the hook was asked");
    g.wait_logs("the network refusal", |l| l.contains("login failed"));
    let mut first = g.ctl();
    first.login("local", "local pw");
    let mut second = g.ctl();
    second.cmd("USER local");
    assert_eq!(second.cmd("PASS local pw").code, 421, "max_sessions = 1");
    assert_eq!(first.cmd("PWD").code, 257);
}
