//! End-to-end: upload events (`[[webhooks]]`) POSTed to a real HTTP/1.1 receiver
//! run by the test (a `std::net` listener thread), with uploads from curl, lftp
//! and a raw FTP client. Signatures are checked with Python's `hmac` module, an
//! implementation independent of the server's.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::receiver::{python_hmac, Receiver, Req};
use common::*;

const SECRET: &str = "webhook secret 42";

/// A gate on local storage whose user `tester` has home `/team`, with the
/// metrics endpoint and one `[[webhooks]]` entry (`webhook` holds its extra keys).
fn gate_with_hook(url: &str, webhook: &str) -> Gate {
    let (url, webhook) = (url.to_owned(), webhook.to_owned());
    Gate::start_toml(move |d| {
        let secret = d.join("hook.secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nlogin_failure_delay_ms = 10\nshutdown_delay_secs = 0\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [storage]\nkind = \"local\"\nroot = \"{}\"\n\
             [[users]]\nname = \"{USER}\"\npassword_hash = \"{}\"\nhome = \"/team\"\n\
             [[webhooks]]\nurl = \"{url}\"\nsecret_file = \"{}\"\ntimeout_secs = 5\n{webhook}\n",
            d.join("data").display(),
            hash(PASS),
            secret.display()
        )
    })
}

fn webhook_metric(gate: &Gate, url: &str, result: &str) -> f64 {
    let http = gate.logged_addr("http endpoint bound");
    let text = http_get(http, "/metrics").1;
    metric(
        &text,
        &format!("ftpgate_webhook_events_total{{endpoint=\"{url}\",result=\"{result}\"}}"),
    )
}

/// Waits (up to 30 s) until `ftpgate_webhook_events_total{url,result}` reaches `n`.
fn wait_metric(gate: &Gate, url: &str, result: &str, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while webhook_metric(gate, url, result) < n {
        assert!(Instant::now() < deadline, "{result} stays below {n}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn uploads_to<'a>(reqs: &'a [Req], path: &str) -> Vec<&'a Req> {
    reqs.iter()
        .filter(|r| r.json()["type"] == "upload" && r.json()["path"] == path)
        .collect()
}

#[test]
fn curl_lftp_and_file_commands_send_signed_events_once() {
    let rx = Receiver::start("127.0.0.1:0", 200);
    let url = format!("http://{}/hook", rx.addr);
    let gate = gate_with_hook(
        &url,
        "events = [\"upload\", \"delete\", \"rename\", \"mkdir\", \"login_failed\"]",
    );
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (payload(300_000, 1), payload(70_001, 2));
    let (fa, fb) = (work.path().join("a.bin"), work.path().join("b.bin"));
    std::fs::write(&fa, &a).unwrap();
    std::fs::write(&fb, &b).unwrap();

    // curl: creates /in (MKD) and uploads into it.
    let mut curl = Command::new("curl");
    curl.args(["-q", "-sS", "--noproxy", "*", "--max-time", "30"])
        .args(["--ftp-create-dirs", "-T"])
        .arg(&fa)
        .arg(format!("{}/in/a.bin", gate.url()));
    let (code, _, err) = run_for(&mut curl, Duration::from_secs(45));
    assert_eq!(code, Some(0), "curl: {err}\n{}", tail(&gate.logs(), 40));
    // lftp: a plain put.
    let mut lftp = Command::new("lftp");
    lftp.arg("-u")
        .arg(format!("{USER},{PASS}"))
        .arg("-p")
        .arg(gate.port().to_string())
        .arg("-e")
        .arg(format!(
            "set ftp:ssl-allow no; set net:max-retries 1; set net:timeout 10; \
             set cmd:fail-exit yes; put {} -o /b.bin; quit",
            fb.display()
        ))
        .arg("127.0.0.1")
        .env("HOME", work.path());
    let (code, _, err) = run_for(&mut lftp, Duration::from_secs(45));
    assert_eq!(code, Some(0), "lftp: {err}\n{}", tail(&gate.logs(), 40));
    // Raw client: rename, delete, a failed login.
    let mut c = gate.login();
    assert_eq!(c.cmd("RNFR /b.bin").code, 350);
    assert_eq!(c.cmd("RNTO /c.bin").code, 250);
    assert_eq!(c.cmd("DELE /in/a.bin").code, 250);
    let mut bad = gate.ctl();
    assert_eq!(bad.cmd("USER nobody").code, 331);
    assert_eq!(bad.cmd("PASS wrong").code, 530);

    let want = [
        "upload",
        "upload",
        "mkdir",
        "rename",
        "delete",
        "login_failed",
    ];
    let reqs = rx.wait(Duration::from_secs(30), "six events", |r| {
        r.len() >= want.len()
    });
    // Every request was answered before delivered is counted: now all are in.
    wait_metric(&gate, &url, "delivered", want.len() as f64);
    let reqs = if reqs.len() == want.len() {
        reqs
    } else {
        rx.requests()
    };
    let mut kinds: Vec<String> = reqs
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    let mut w: Vec<&str> = want.to_vec();
    w.sort();
    assert_eq!(kinds, w, "each event exactly once: {reqs:#?}");
    assert_eq!(webhook_metric(&gate, &url, "failed"), 0.0);

    let secret_file = gate.dir.path().join("hook.secret");
    let mut ids = std::collections::HashSet::new();
    for r in &reqs {
        assert_eq!(r.path, "/hook");
        let sig = python_hmac(work.path(), &secret_file, &r.body);
        assert_eq!(r.headers["x-ftpgate-signature"], format!("sha256={sig}"));
        assert_eq!(r.headers["content-type"], "application/json");
        let j = r.json();
        assert_eq!(r.headers["x-ftpgate-delivery"], j["id"].as_str().unwrap());
        assert_eq!(r.headers["x-ftpgate-event"], j["type"].as_str().unwrap());
        assert!(
            ids.insert(j["id"].as_str().unwrap().to_owned()),
            "ids unique"
        );
        assert_eq!(j["client_ip"], "127.0.0.1");
        assert!(j["session_id"].as_u64().unwrap() > 0);
        assert!(j["time"].as_str().unwrap().ends_with('Z'));
    }
    // A single-bit change in the body breaks the signature.
    let mut forged = reqs[0].body.clone();
    forged[0] ^= 1;
    assert_ne!(
        format!("sha256={}", python_hmac(work.path(), &secret_file, &forged)),
        reqs[0].headers["x-ftpgate-signature"]
    );

    for (path, data, verb_ok) in [("/in/a.bin", &a, "STOR"), ("/b.bin", &b, "STOR")] {
        let u = uploads_to(&reqs, path);
        assert_eq!(u.len(), 1, "one event for {path}");
        let j = u[0].json();
        assert_eq!(j["user"], USER);
        assert_eq!(j["size"], data.len() as u64);
        assert_eq!(j["sha256"], sha(data));
        assert_eq!(j["verb"], verb_ok);
        assert_eq!(j["backend"], "storage");
        assert_eq!(j["backend_kind"], "local");
        let key = format!("team{path}");
        assert_eq!(j["storage_key"], key);
        assert_eq!(j["location"], format!("{}/{key}", gate.root().display()));
        assert!(j["duration_ms"].is_u64());
        assert!(j["started_at"].as_str().unwrap() <= j["time"].as_str().unwrap());
    }
    // What the location names holds the uploaded bytes (before the DELE: c.bin).
    assert_eq!(sha_file(&gate.root().join("team/c.bin")), sha(&b));
    let by = |t: &str| reqs.iter().find(|r| r.json()["type"] == t).unwrap().json();
    assert_eq!(by("mkdir")["path"], "/in");
    assert_eq!(by("rename")["from_path"], "/b.bin");
    assert_eq!(by("rename")["path"], "/c.bin");
    assert_eq!(by("delete")["path"], "/in/a.bin");
    assert_eq!(by("login_failed")["user"], "nobody");
    assert!(by("login_failed").get("path").is_none());
}

#[test]
fn events_wait_for_a_receiver_that_is_down() {
    // A port with nothing listening: connections are refused.
    let (port, url) = unused_hook_url();
    let gate = gate_with_hook(&url, "max_retries = 1000\nretry_max_secs = 1");
    let data = payload(123_457, 3);
    let mut c = gate.login();
    let (pre, done) = c.store("STOR /late.bin", &data);
    assert_eq!(
        (pre.code, done.code),
        (150, 226),
        "226 not held up by the hook"
    );
    // Down for ~10 s: nothing delivered, nothing given up.
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(webhook_metric(&gate, &url, "delivered"), 0.0);
    assert_eq!(webhook_metric(&gate, &url, "failed"), 0.0);
    let rx = Receiver::start(&format!("127.0.0.1:{port}"), 200);
    let reqs = rx.wait(Duration::from_secs(30), "the late event", |r| !r.is_empty());
    wait_metric(&gate, &url, "delivered", 1.0);
    let reqs = if reqs.len() == 1 { reqs } else { rx.requests() };
    assert_eq!(reqs.len(), 1, "delivered once: {reqs:#?}");
    let j = reqs[0].json();
    assert_eq!(
        (j["path"].as_str(), j["size"].as_u64()),
        (Some("/late.bin"), Some(123_457))
    );
    assert_eq!(j["sha256"], sha(&data));
}

#[test]
fn a_permanent_refusal_is_not_retried() {
    let rx = Receiver::start("127.0.0.1:0", 400);
    let url = format!("http://{}/hook", rx.addr);
    let gate = gate_with_hook(&url, "retry_max_secs = 1");
    let mut c = gate.login();
    let (_, done) = c.store("STOR /x.bin", b"abc");
    assert_eq!(done.code, 226);
    wait_metric(&gate, &url, "failed", 1.0);
    gate.wait_log("webhook refused the event");
    assert_eq!(rx.requests().len(), 1, "a 400 is final");
    assert_eq!(webhook_metric(&gate, &url, "delivered"), 0.0);
}

#[test]
fn a_full_queue_drops_new_events_and_counts_them() {
    let (port, url) = unused_hook_url();
    // One event in the queue and at most one being retried: of three, at least
    // one is dropped.
    let gate = gate_with_hook(
        &url,
        "queue_size = 1\nmax_retries = 1000\nretry_max_secs = 1",
    );
    let mut c = gate.login();
    for i in 0..3 {
        let (_, done) = c.store(&format!("STOR /q{i}.bin"), b"x");
        assert_eq!(done.code, 226, "uploads succeed whatever the queue holds");
    }
    // Every event was queued or dropped before its 226 was sent.
    wait_metric(&gate, &url, "dropped", 1.0);
    gate.wait_log("webhook queue full");
    let dropped = webhook_metric(&gate, &url, "dropped");
    assert!((1.0..=2.0).contains(&dropped), "dropped {dropped}");
    // The receiver comes up: what was kept is delivered, the dropped never are.
    let rx = Receiver::start(&format!("127.0.0.1:{port}"), 200);
    let kept = 3.0 - dropped;
    wait_metric(&gate, &url, "delivered", kept);
    assert_eq!(rx.requests().len() as f64, kept);
}

#[test]
fn a_bad_webhook_config_refuses_to_start_naming_the_key() {
    let base = "[storage]\nkind = \"memory\"\n[[webhooks]]\n";
    let err = refused_start(Some(&format!("{base}url = \"ftp://x/\"\n")), &[]);
    assert!(err.contains("webhooks[0].url"), "{err}");
    let err = refused_start(
        Some(&format!(
            "{base}url = \"http://127.0.0.1:9/\"\nsecret_file = \"/nonexistent/s\"\n"
        )),
        &[],
    );
    assert!(err.contains("webhooks[0].secret_file"), "{err}");
    let err = refused_start(
        Some(&format!(
            "{base}url = \"http://127.0.0.1:9/\"\nevents = [\"uplaod\"]\n"
        )),
        &[],
    );
    assert!(
        err.contains("webhooks[0].events") && err.contains("uplaod"),
        "{err}"
    );
}

#[test]
fn server_errors_are_retried_with_the_same_event_id() {
    let rx = Receiver::start_with("127.0.0.1:0", &[503, 500, 429], 204);
    let url = format!("http://{}/hook", rx.addr);
    let gate = gate_with_hook(&url, "retry_max_secs = 1");
    let mut c = gate.login();
    let (_, done) = c.store("STOR /r.bin", b"retry me");
    assert_eq!(done.code, 226);
    wait_metric(&gate, &url, "delivered", 1.0);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 4, "three refusals, then delivered: {reqs:#?}");
    let id = &reqs[0].headers["x-ftpgate-delivery"];
    assert!(reqs.iter().all(|r| &r.headers["x-ftpgate-delivery"] == id));
    assert!(
        reqs.iter().all(|r| r.body == reqs[0].body),
        "same body each time"
    );
    assert_eq!(webhook_metric(&gate, &url, "failed"), 0.0);
}

#[test]
fn shutdown_waits_briefly_for_queued_events_then_says_what_is_lost() {
    let (port, url) = unused_hook_url();
    let mut gate = gate_with_hook(&url, "max_retries = 1000\nretry_max_secs = 1");
    let mut c = gate.login();
    assert_eq!(c.store("STOR /s.bin", b"late").1.code, 226);
    drop(c);
    // The first attempt was refused; the receiver comes up and SIGTERM follows
    // at once: the exit waits for the retry.
    std::thread::sleep(Duration::from_millis(300));
    let rx = Receiver::start(&format!("127.0.0.1:{port}"), 200);
    assert_eq!(gate.terminate(), Some(0));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1, "delivered before exit: {reqs:#?}");
    assert_eq!(reqs[0].json()["path"], "/s.bin");
    assert!(!gate.logs().contains("not delivered before exit"));
    drop(rx);

    // Nobody listening: the exit waits at most a few seconds and logs the loss.
    let (_, url) = unused_hook_url();
    let mut gate = gate_with_hook(&url, "max_retries = 1000\nretry_max_secs = 1");
    let mut c = gate.login();
    assert_eq!(c.store("STOR /t.bin", b"lost").1.code, 226);
    drop(c);
    assert_eq!(gate.terminate(), Some(0));
    gate.wait_logs("the loss", |l| {
        l.lines()
            .any(|l| l.contains("not delivered before exit") && l.contains("events=1"))
    });
}

/// A port nothing listens on (bound, then released) and its webhook URL.
fn unused_hook_url() -> (u16, String) {
    let port = common::receiver::unused_port();
    (port, format!("http://127.0.0.1:{port}/hook"))
}
