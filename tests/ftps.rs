//! FTPS (RFC 4217) end to end: explicit (`AUTH TLS`) and implicit listeners,
//! PBSZ/PROT/CCC, TLS-required mode, TLS version floor and ALPN (ALPACA),
//! TLS session reuse on data connections, uploads cut without close_notify,
//! certificate reload, and real clients (curl, lftp, Python ftplib.FTP_TLS) with
//! hash checks. Certificates are made per test with the openssl command line
//! (`subjectAltName = IP:127.0.0.1, DNS:localhost`) and trusted by the clients
//! via their CA options — no client runs with verification off except where
//! the test only reads the fingerprint.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    cert_fingerprint, make_cert, normalize_fingerprint, payload, require, run, run_for, sha,
    sha_file, tail, tls_section, Cert, Gate, Opts, PASS, USER,
};

/// A gate with `server.tls = mode` and `[tls]` from a fresh certificate; the
/// certificate directory lives as long as the gate's (inside it).
struct Tls {
    gate: Gate,
    cert: Cert,
    _certs: tempfile::TempDir,
}

fn tls_gate(mode: &str, server: &str, tls_extra: &str) -> Tls {
    let certs = tempfile::tempdir().unwrap();
    let cert = make_cert(certs.path(), "server", "ftpgate-test-1");
    let gate = Gate::start_with(Opts {
        server: format!("tls = \"{mode}\"\n{server}"),
        extra: tls_section(&cert, tls_extra),
        ..Default::default()
    });
    Tls {
        gate,
        cert,
        _certs: certs,
    }
}

fn suite(t: &Tls, tests: &[&str], env: &[(&str, String)]) {
    if !require("python3") {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ftps_suite.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args(tests)
        .env("FTP_HOST", "127.0.0.1")
        .env("FTP_PORT", t.gate.port().to_string())
        .env("FTP_USER", USER)
        .env("FTP_PASS", PASS)
        .env("FTP_ROOT", t.gate.root())
        .env("FTPS_CA", &t.cert.cert)
        .env("GATE_PID", t.gate.pid().to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONIOENCODING", "utf-8");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (code, out, err) = run_for(&mut cmd, Duration::from_secs(120));
    println!("{out}");
    eprintln!("{err}");
    assert!(
        code == Some(0) && out.contains("all ftps tests passed"),
        "ftps suite {tests:?} failed (exit {code:?}):\n{out}\n{err}\n--- server log (tail) ---\n{}",
        tail(&t.gate.logs(), 60)
    );
}

/// `openssl s_client -starttls ftp` with `args`; (handshake ok, transcript).
fn s_client(addr: std::net::SocketAddr, starttls: bool, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(["-servername", "localhost"]);
    if starttls {
        cmd.args(["-starttls", "ftp"]);
    }
    cmd.args(args);
    // stdin is /dev/null: s_client ends right after the handshake.
    let (code, out, err) = run_for(&mut cmd, Duration::from_secs(20));
    let text = format!("{out}\n{err}");
    // s_client prints a "New, TLSv1.3, Cipher is …" line even when the server
    // aborts with an alert right after; a completed handshake shows the peer
    // certificate and no alert.
    let negotiated = text.contains("BEGIN CERTIFICATE") && !text.contains(" alert ");
    let _ = code;
    (negotiated, text)
}

fn protocol_of(transcript: &str) -> String {
    transcript
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix("Protocol  :")
                .or_else(|| l.strip_prefix("Protocol :"))
                .map(|v| v.trim().to_owned())
                .or_else(|| {
                    l.strip_prefix("New, ")
                        .and_then(|r| r.split(',').next())
                        .map(|v| v.trim().to_owned())
                })
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------

/// Optional mode: AUTH TLS/PBSZ/PROT P/PROT C/CCC replies, PROT P transfers
/// with hash checks, and a plain (non-TLS) session still works.
#[test]
fn explicit_ftps_optional_mode() {
    let t = tls_gate("optional", "", "");
    suite(
        &t,
        &["test_explicit_commands", "test_prot_p_transfer"],
        &[("FTPS_MODE", "optional".into())],
    );
    let mut c = t.gate.login();
    let (_, fin) = c.store("STOR plain.txt", b"plain is allowed in optional mode");
    assert_eq!(fin.code, 226);
    let feat = c.cmd("FEAT").text;
    for f in [" AUTH TLS", " PBSZ", " PROT"] {
        assert!(feat.contains(f), "FEAT lacks {f}: {feat}");
    }
}

/// Required mode: USER/PASS before AUTH TLS get 530 without any password check
/// (no `login failed` line, nothing counted), PROT C gets 534; plain ftplib and
/// plain curl are refused; after AUTH TLS the same account works.
#[test]
fn required_mode_refuses_plaintext() {
    let t = tls_gate("required", "", "");
    let g = &t.gate;
    let mut c = g.ctl();
    let r = c.cmd(&format!("USER {USER}"));
    assert_eq!(r.code, 530, "USER before AUTH TLS: {r:?}");
    let r = c.cmd(&format!("PASS {PASS}"));
    assert_eq!(r.code, 530, "PASS before AUTH TLS: {r:?}");
    assert_eq!(c.cmd("PWD").code, 530);
    assert_eq!(c.cmd("PASV").code, 530);
    assert_eq!(c.cmd("RETR x").code, 530);
    g.log_barrier();
    assert!(
        !g.logs().contains("login failed"),
        "a plaintext password was checked:\n{}",
        tail(&g.logs(), 20)
    );
    assert!(!g.logs().contains(PASS), "the password reached the log");
    suite(
        &t,
        &[
            "test_plaintext_refused",
            "test_explicit_commands",
            "test_prot_p_transfer",
        ],
        &[("FTPS_MODE", "required".into()), ("FTPS_REUSE", "1".into())],
    );
    if require("curl") {
        // Without any TLS option curl logs in in the clear: refused.
        let (code, _, err) = curl(&["--list-only", &format!("{}/", g.url())]);
        println!("curl plain exit {code:?}");
        assert_ne!(code, Some(0), "plaintext curl succeeded:\n{err}");
        assert!(err.contains("530"), "plain curl: {err}");
    }
}

/// AUTH TLS on a server without TLS: 502/504 (not 234), PBSZ/PROT refused, the
/// session continues in the clear.
#[test]
fn auth_tls_refused_when_tls_is_off() {
    let g = Gate::start();
    let mut c = g.ctl();
    for cmd in ["AUTH TLS", "AUTH SSL", "AUTH TLS-C"] {
        let r = c.cmd(cmd);
        assert!(
            r.code == 502 || r.code == 504 || r.code == 534,
            "{cmd}: {r:?}"
        );
    }
    c.login(USER, PASS);
    for cmd in ["PBSZ 0", "PROT P"] {
        let r = c.cmd(cmd);
        assert!((500..600).contains(&r.code), "{cmd}: {r:?}");
    }
    assert_eq!(c.cmd("NOOP").code, 200);
}

/// TLS 1.2 is the floor (a TLS 1.1 client fails, 1.2 works), 1.3 is chosen
/// when offered; ALPN offered without `ftp` is refused (ALPACA), `ftp` or no
/// ALPN works. Checked with `openssl s_client -starttls ftp`.
#[test]
fn tls_version_floor_and_alpn() {
    if !require("openssl") {
        return;
    }
    let t = tls_gate("optional", "", "");
    let a = t.gate.addr;
    // SECLEVEL=0 so the client itself is willing to speak TLS 1.1.
    let (ok, text) = s_client(a, true, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(!ok, "TLS 1.1 handshake succeeded:\n{text}");
    // Refused by the server (an alert from rustls: handshake_failure or
    // protocol_version), not given up by the client.
    assert!(
        text.contains("alert handshake failure") || text.contains("alert protocol version"),
        "TLS 1.1:\n{text}"
    );
    let (ok, text) = s_client(a, true, &["-tls1_2"]);
    assert!(ok, "TLS 1.2 handshake failed:\n{text}");
    assert_eq!(protocol_of(&text), "TLSv1.2", "{text}");
    let (ok, text) = s_client(a, true, &[]);
    assert!(ok, "default handshake failed:\n{text}");
    assert_eq!(protocol_of(&text), "TLSv1.3", "1.3 not preferred:\n{text}");
    let fp = text
        .lines()
        .any(|l| l.contains("CN = ftpgate-test-1") || l.contains("CN=ftpgate-test-1"));
    assert!(fp, "unexpected certificate:\n{text}");
    // ALPACA: ALPN without `ftp` is refused; with `ftp` or none it works.
    for alpn in ["http/1.1", "h2", "http/1.1,h2", "imap"] {
        let (ok, text) = s_client(a, true, &["-alpn", alpn]);
        assert!(!ok, "ALPN {alpn} accepted:\n{text}");
        assert!(
            text.contains("no application protocol"),
            "ALPN {alpn}:\n{text}"
        );
    }
    let (ok, text) = s_client(a, true, &["-alpn", "ftp"]);
    assert!(ok, "ALPN ftp refused:\n{text}");
    let (ok, text) = s_client(a, true, &["-alpn", "http/1.1,ftp"]);
    assert!(ok, "ALPN list containing ftp refused:\n{text}");
    // The server is fine afterwards.
    let mut c = t.gate.login();
    assert_eq!(c.cmd("NOOP").code, 200);
}

/// Under PROT P an upload cut without close_notify (TCP FIN or RST under the
/// TLS layer) is a failed upload: 426/451, no file, no temp leftovers; the same
/// upload with close_notify commits.
#[test]
fn prot_p_upload_without_close_notify_is_not_committed() {
    let t = tls_gate("optional", "", "require_session_reuse = false\n");
    suite(
        &t,
        &["test_no_close_notify_upload"],
        &[("FTPS_MODE", "optional".into())],
    );
    // Also with session reuse required (the data handshake resumes).
    let t = tls_gate("required", "", "");
    suite(
        &t,
        &["test_no_close_notify_upload"],
        &[("FTPS_MODE", "required".into()), ("FTPS_REUSE", "1".into())],
    );
}

/// require_session_reuse (default in required mode): a data connection with a
/// fresh TLS session is refused; a resuming one works; the control session is
/// unharmed.
#[test]
fn data_connections_must_resume_the_tls_session() {
    let t = tls_gate("required", "", "");
    suite(
        &t,
        &["test_session_reuse_required"],
        &[("FTPS_MODE", "required".into()), ("FTPS_REUSE", "1".into())],
    );
    // The refusal is logged.
    t.gate.wait_logs("a logged reuse refusal", |l| {
        let l = l.to_lowercase();
        l.contains("resum") || l.contains("reuse")
    });
}

/// Session theft across control connections (issue 11 §1): an attacker that did
/// its own AUTH TLS (explicit) or implicit handshake, never logged in, connects to
/// a victim's passive port from the same IP and resumes *its own* session. Before
/// the fix any session of the server was accepted and the attacker received the
/// victim's RETR or injected its STOR (victim: 226). Now: 425 "TLS session of the
/// control connection not resumed", nothing sent or stored; TLS 1.2 (session ids)
/// and 1.3 (tickets), explicit and implicit; the victim's own resumption works.
#[test]
fn data_connections_resume_only_their_control_session() {
    for version in ["1.2", "1.3"] {
        for implicit in [false, true] {
            let mut env = vec![
                ("FTPS_MODE", "required".into()),
                ("FTPS_REUSE", "1".into()),
                ("FTPS_TLS", version.into()),
            ];
            let t = if implicit {
                let (t, addr) = implicit_gate("required");
                env.push(("FTPS_IMPLICIT_PORT", addr.port().to_string()));
                t
            } else {
                tls_gate("required", "", "")
            };
            suite(&t, &["test_foreign_session"], &env);
            assert!(!t.gate.root().join("upload.bin").exists());
            if version == "1.2" && !implicit {
                // Real clients over TLS 1.2 (session ids) resume their own session.
                tls12_clients(&t);
            }
        }
    }
}

/// curl (`--tls-max 1.2`, OpenSSL) and lftp (GnuTLS without TLS 1.3) upload and
/// download through a required-mode gate: their data connections resume the
/// control connection's TLS 1.2 session.
fn tls12_clients(t: &Tls) {
    if require("curl") {
        let g = &t.gate;
        let tmp = tempfile::tempdir().unwrap();
        let data = payload(1024 * 1024 + 5, 23);
        let src = tmp.path().join("src.bin");
        std::fs::write(&src, &data).unwrap();
        let (ca, user) = (t.cert.cert.to_str().unwrap(), format!("{USER}:{PASS}"));
        let url = format!("ftp://{}/curl12.bin", g.addr);
        let tls = [
            "--ssl-reqd",
            "--tls-max",
            "1.2",
            "--cacert",
            ca,
            "--user",
            &user,
        ];
        let mut up = tls.to_vec();
        up.extend(["-T", src.to_str().unwrap(), &url]);
        curl_ok(g, &up);
        assert_eq!(sha_file(&g.root().join("curl12.bin")), sha(&data));
        let mut down = tls.to_vec();
        down.push(&url);
        assert_eq!(sha(&curl_ok(g, &down)), sha(&data));
    }
    if require("lftp") {
        lftp_put_get(t, "set ssl:priority NORMAL:-VERS-TLS1.3;");
    }
}

/// Reuse switched off for devices that cannot resume: plain FTP_TLS works.
#[test]
fn session_reuse_can_be_switched_off() {
    let t = tls_gate("required", "", "require_session_reuse = false\n");
    suite(
        &t,
        &["test_prot_p_transfer"],
        &[("FTPS_MODE", "required".into()), ("FTPS_REUSE", "0".into())],
    );
}

fn implicit_gate(mode: &str) -> (Tls, std::net::SocketAddr) {
    let t = tls_gate(mode, "", "implicit_listen = \"127.0.0.1:0\"\n");
    let addr = t.gate.logged_addr("implicit FTPS bound");
    (t, addr)
}

/// Implicit FTPS on its own listener: ftplib (TLS first, PROT P round trip) and
/// a plaintext client that gets no cleartext greeting.
#[test]
fn implicit_ftps_listener() {
    let (t, addr) = implicit_gate("optional");
    suite(
        &t,
        &["test_implicit"],
        &[("FTPS_IMPLICIT_PORT", addr.port().to_string())],
    );
    assert!(t.gate.root().join("implicit.bin").exists());
}

// ---------------------------------------------------------------------------
// Real clients
// ---------------------------------------------------------------------------

/// Runs curl; (exit code, stdout, stderr).
fn curl(args: &[&str]) -> (Option<i32>, Vec<u8>, String) {
    let mut cmd = Command::new("curl");
    cmd.arg("-q")
        .args(["-sS", "-v", "--noproxy", "*", "--max-time", "40"])
        .args(args);
    common::no_proxy(&mut cmd);
    let out = cmd.output().expect("spawn curl");
    (
        out.status.code(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn curl_ok(g: &Gate, args: &[&str]) -> Vec<u8> {
    let (code, out, err) = curl(args);
    assert_eq!(
        code,
        Some(0),
        "curl {args:?} failed:\n{err}\n--- server log (tail) ---\n{}",
        tail(&g.logs(), 60)
    );
    out
}

/// curl `--ssl-reqd` (explicit, required mode with session reuse enforced —
/// curl resumes by default) and `ftps://` (implicit) with `--cacert`: upload,
/// download, listing, hash checks; plain curl refused.
#[test]
fn curl_explicit_and_implicit_ftps() {
    if !require("curl") {
        return;
    }
    let (t, implicit) = implicit_gate("required");
    let g = &t.gate;
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(5 * 1024 * 1024 + 7, 11);
    let src = tmp.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let ca = t.cert.cert.to_str().unwrap();
    let user = format!("{USER}:{PASS}");
    // Explicit, passive (EPSV).
    let base = format!("ftp://{}", g.addr);
    curl_ok(
        g,
        &[
            "--ssl-reqd",
            "--cacert",
            ca,
            "--user",
            &user,
            "-T",
            src.to_str().unwrap(),
            &format!("{base}/curl%20explicit.bin"),
        ],
    );
    assert_eq!(sha_file(&g.root().join("curl explicit.bin")), sha(&data));
    let got = curl_ok(
        g,
        &[
            "--ssl-reqd",
            "--cacert",
            ca,
            "--user",
            &user,
            &format!("{base}/curl%20explicit.bin"),
        ],
    );
    assert_eq!(sha(&got), sha(&data));
    let list = curl_ok(
        g,
        &[
            "--ssl-reqd",
            "--cacert",
            ca,
            "--user",
            &user,
            "--list-only",
            &format!("{base}/"),
        ],
    );
    assert!(String::from_utf8_lossy(&list).contains("curl explicit.bin"));
    // Explicit, PASV instead of EPSV.
    let got = curl_ok(
        g,
        &[
            "--ssl-reqd",
            "--cacert",
            ca,
            "--user",
            &user,
            "--disable-epsv",
            &format!("{base}/curl%20explicit.bin"),
        ],
    );
    assert_eq!(sha(&got), sha(&data));
    // Certificate checks are real: the wrong CA fails.
    let other = make_cert(tmp.path(), "other", "someone-else");
    let (code, _, _) = curl(&[
        "--ssl-reqd",
        "--cacert",
        other.cert.to_str().unwrap(),
        "--user",
        &user,
        &format!("{base}/"),
    ]);
    assert_ne!(code, Some(0), "curl trusted a certificate it should not");
    // Implicit FTPS.
    let ibase = format!("ftps://localhost:{}", implicit.port());
    curl_ok(
        g,
        &[
            "--cacert",
            ca,
            "--user",
            &user,
            "-T",
            src.to_str().unwrap(),
            &format!("{ibase}/curl%20implicit.bin"),
        ],
    );
    assert_eq!(sha_file(&g.root().join("curl implicit.bin")), sha(&data));
    let got = curl_ok(
        g,
        &[
            "--cacert",
            ca,
            "--user",
            &user,
            &format!("{ibase}/curl%20implicit.bin"),
        ],
    );
    assert_eq!(sha(&got), sha(&data));
    // Plain curl against the required-mode listener: refused at login.
    let (code, _, err) = curl(&["--user", &user, "--list-only", &format!("{base}/")]);
    println!("plain curl against required mode: exit {code:?}");
    assert_ne!(
        code,
        Some(0),
        "plain curl listed a required-TLS server:\n{err}"
    );
    assert!(err.contains("530"), "{err}");
}

/// lftp with ftp:ssl-force, ftp:ssl-protect-data and the test CA: put, get,
/// mirror-style listing, hash checks (required mode with reuse enforced).
#[test]
fn lftp_ftps() {
    if !require("lftp") {
        return;
    }
    let t = tls_gate("required", "", "");
    lftp_put_get(&t, "");
}

/// lftp put, get and cls against a required-mode gate, with `settings` (lftp
/// `set` commands) first; hash checks.
fn lftp_put_get(t: &Tls, settings: &str) {
    let g = &t.gate;
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(3 * 1024 * 1024 + 1, 12);
    let src = tmp.path().join("up.bin");
    std::fs::write(&src, &data).unwrap();
    let down = tmp.path().join("down.bin");
    let script = format!(
        "{settings} set ftp:ssl-force true; set ftp:ssl-protect-data true; set ftp:ssl-protect-list true; \
         set ssl:ca-file {ca}; set ssl:verify-certificate yes; set ftp:ssl-auth TLS; \
         set net:max-retries 1; set net:timeout 15; set cmd:fail-exit yes; set xfer:clobber on; \
         put {src} -o 'lftp up.bin'; get 'lftp up.bin' -o {down}; cls -1; quit",
        ca = t.cert.cert.display(),
        src = src.display(),
        down = down.display()
    );
    let mut cmd = Command::new("lftp");
    cmd.arg("-u")
        .arg(format!("{USER},{PASS}"))
        .arg("-p")
        .arg(g.port().to_string())
        .arg("-e")
        .arg(&script)
        .arg("localhost")
        .env("HOME", tmp.path())
        .env("LC_ALL", "C.UTF-8");
    common::no_proxy(&mut cmd);
    let (code, out, err) = run_for(&mut cmd, Duration::from_secs(90));
    assert_eq!(
        code,
        Some(0),
        "lftp failed:\n{out}\n{err}\n--- server log (tail) ---\n{}",
        tail(&g.logs(), 60)
    );
    assert!(out.contains("lftp up.bin"), "{out}");
    assert_eq!(sha_file(&g.root().join("lftp up.bin")), sha(&data));
    assert_eq!(sha_file(&down), sha(&data));
    // The data really was encrypted: the server logged TLS data connections or
    // PROT P; at least the control session was TLS (required mode).
    assert!(
        !g.logs().contains("login failed"),
        "{}",
        tail(&g.logs(), 30)
    );
}

/// Python ftplib.FTP_TLS with prot_p(): upload/download/listing with hash
/// checks, using the session-reusing subclass (required mode).
#[test]
fn ftplib_ftps() {
    let t = tls_gate("required", "", "");
    suite(
        &t,
        &["test_prot_p_transfer", "test_explicit_commands"],
        &[("FTPS_MODE", "required".into()), ("FTPS_REUSE", "1".into())],
    );
}

// ---------------------------------------------------------------------------
// Certificate reload
// ---------------------------------------------------------------------------

fn reload_case(how: &str, tls_extra: &str) {
    let certs = tempfile::tempdir().unwrap();
    let live = make_cert(certs.path(), "live", "ftpgate-old");
    let next = make_cert(certs.path(), "next", "ftpgate-new");
    assert_ne!(cert_fingerprint(&live.cert), cert_fingerprint(&next.cert));
    let gate = Gate::start_with(Opts {
        server: "tls = \"required\"\n".into(),
        extra: tls_section(&live, tls_extra),
        ..Default::default()
    });
    let t = Tls {
        gate,
        cert: live.clone(),
        _certs: certs,
    };
    // The CA list must be copies: the live files are replaced during the test.
    let dir = t._certs.path();
    let old_copy: PathBuf = dir.join("old-ca.pem");
    std::fs::copy(&live.cert, &old_copy).unwrap();
    suite(
        &t,
        &["test_cert_reload"],
        &[
            ("FTPS_MODE", "required".into()),
            ("FTPS_REUSE", "1".into()),
            ("FTPS_CA", format!("{}", old_copy.display())),
            ("FTPS_CERT_FILE", live.cert.display().to_string()),
            ("FTPS_KEY_FILE", live.key.display().to_string()),
            ("FTPS_NEW_CERT", next.cert.display().to_string()),
            ("FTPS_NEW_KEY", next.key.display().to_string()),
            ("FTPS_RELOAD", how.into()),
        ],
    );
    // Independent check with openssl: the served certificate is the new one.
    if require("openssl") {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "openssl s_client -connect {} -starttls ftp -servername localhost </dev/null 2>/dev/null \
             | openssl x509 -noout -fingerprint -sha256",
            t.gate.addr
        ));
        let (ok, out, err) = run(&mut cmd);
        assert!(ok, "{out}{err}");
        assert_eq!(normalize_fingerprint(&out), cert_fingerprint(&next.cert));
    }
}

/// New cert/key files + SIGHUP: new connections get the new certificate, the
/// session opened before keeps working (NOOP and PROT P transfers).
#[test]
fn certificate_reload_on_sighup() {
    reload_case("sighup", "reload_interval_secs = 0\n");
}

/// New cert/key files without a signal: picked up by the file poll.
#[test]
fn certificate_reload_on_file_change() {
    reload_case("poll", "reload_interval_secs = 1\n");
}
