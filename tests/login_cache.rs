//! The login cache (`server.login_cache_secs`) against the real binary: a repeated
//! login with the same password skips the password hash; a password changed in
//! the users file and reloaded with SIGHUP makes the cached old password fail at
//! once; a wrong password is never served from the cache and keeps its delay and
//! its count towards `max_login_failures`.

mod common;

use std::time::{Duration, Instant};

use common::Gate;

const SKIPPED: &str = "password check skipped: recently verified";

fn users_entry(pw: &str) -> String {
    format!(
        "[[users]]\nname = \"alice\"\npassword_hash = \"{}\"\nhome = \"/\"\n",
        common::hash(pw)
    )
}

fn start(users: &std::path::Path, server: &str) -> Gate {
    Gate::start_toml(|d| {
        format!(
            "users_file = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\
             [storage]\nroot = \"{}\"\n[log]\nlevel = \"debug\"\n",
            users.display(),
            d.join("data").display()
        )
    })
}

fn pass(g: &Gate, pw: &str) -> u16 {
    let mut c = g.ctl();
    assert_eq!(c.cmd("USER alice").code, 331);
    c.cmd(&format!("PASS {pw}")).code
}

fn skipped(g: &Gate) -> usize {
    g.logs().matches(SKIPPED).count()
}

#[test]
fn reload_drops_cached_password_and_failures_are_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(&users, users_entry("old pw")).unwrap();
    let g = start(
        &users,
        "login_failure_delay_ms = 400\nmax_login_failures = 2\nlogin_cache_secs = 600",
    );
    assert_eq!(pass(&g, "old pw"), 230);
    assert_eq!(skipped(&g), 0, "the first login checks the hash");
    assert_eq!(pass(&g, "old pw"), 230);
    g.wait_log(SKIPPED);

    // A wrong password for the cached user: full check, delay, counted.
    let mut c = g.ctl();
    assert_eq!(c.cmd("USER alice").code, 331);
    let t = Instant::now();
    assert_eq!(c.cmd("PASS not the pw").code, 530);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "failure delay kept"
    );
    assert_eq!(c.cmd("USER alice").code, 331);
    assert_eq!(c.cmd("PASS old pwX").code, 421, "second failure closes");
    assert_eq!(skipped(&g), 1, "failures never come from the cache");

    // The password changes: after SIGHUP the cached old one fails at once.
    std::fs::write(&users, users_entry("new pw")).unwrap();
    g.signal("HUP");
    g.wait_log("users reloaded");
    let t = Instant::now();
    assert_eq!(pass(&g, "old pw"), 530, "old password still accepted");
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "failure delay kept"
    );
    assert_eq!(pass(&g, "new pw"), 230);
    assert_eq!(pass(&g, "new pw"), 230);
    g.wait_logs("a cached login with the new password", |l| {
        l.matches(SKIPPED).count() == 2
    });
}

#[test]
fn zero_turns_the_cache_off() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(&users, users_entry("pw")).unwrap();
    let g = start(&users, "login_cache_secs = 0");
    for _ in 0..3 {
        assert_eq!(pass(&g, "pw"), 230);
    }
    g.wait_logs("three logins", |l| l.matches("login ok").count() == 3);
    assert_eq!(skipped(&g), 0);
}
