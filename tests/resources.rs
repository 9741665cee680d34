//! Process resources against the real binary: started with a low soft open-files
//! limit, ftpgate raises it to the hard limit, logs old and new, and serves more
//! sessions at once than the old soft limit allowed descriptors.

mod common;

use std::process::{Child, Command};

use common::{spawn_listening, Ctl};

/// Kills the server when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn open_files_soft_limit_is_raised_and_used() {
    const LOW: u64 = 128;
    const SESSIONS: usize = 200;
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) },
        0
    );
    assert!(
        hard.rlim_max >= 2 * SESSIONS as u64 + 100,
        "hard open-files limit {} too low for this test",
        hard.rlim_max
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_sessions = 1000\nmax_sessions_per_ip = 1000\n\
             [storage]\nkind = \"memory\"\n[[users]]\nname = \"u\"\npassword_hash = \"{}\"\n",
            common::hash("pw")
        ),
    )
    .unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -Sn {LOW} && exec \"$0\" --config \"$1\""))
        .arg(env!("CARGO_BIN_EXE_ftpgate"))
        .arg(&cfg);
    let (child, addr, log) = spawn_listening(cmd);
    let child = Killed(child);
    let pid = child.0.id();
    assert_eq!(soft_nofile(pid), hard.rlim_max);
    let logs = log.lock().unwrap().clone();
    let line = logs
        .lines()
        .find(|l| l.contains("open files limit raised"))
        .unwrap_or_else(|| panic!("no limit line in:\n{logs}"));
    assert!(
        line.contains(&format!("old={LOW}")) && line.contains(&format!("new={}", hard.rlim_max)),
        "{line}"
    );
    // More control connections than the old soft limit had descriptors, all
    // greeted and answering.
    let mut held: Vec<Ctl> = (0..SESSIONS).map(|_| Ctl::connect(addr)).collect();
    for c in held.iter_mut() {
        assert_eq!(c.cmd("NOOP").code, 200);
    }
}
