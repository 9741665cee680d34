//! `rclone mount` of a gate (FUSE): shared by the mount and huge-directory tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{run, Gate, PASS, USER};

/// A running `rclone mount`; unmounted (lazily, `-uz`) and killed on drop.
pub struct Mount {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl Mount {
    /// Mounts the gate's root at `dir` with `--vfs-cache-mode cache_mode` and waits
    /// until the mount is listed in /proc/mounts.
    pub fn start(g: &Gate, dir: &Path, cache_mode: &str) -> Mount {
        Self::start_with(g, dir, cache_mode, &[])
    }

    /// [`Mount::start`] with `extra` rclone flags after the defaults (a later flag
    /// wins, e.g. `--ftp-concurrency`).
    pub fn start_with(g: &Gate, dir: &Path, cache_mode: &str, extra: &[&str]) -> Mount {
        let (ok, out, err) = run(Command::new("rclone").args(["obscure", PASS]));
        assert!(ok, "rclone obscure: {err}");
        let remote = format!(
            ":ftp,host=127.0.0.1,port={},user={USER},pass={}:/",
            g.port(),
            out.trim()
        );
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.with_extension("log");
        let child = Command::new("rclone")
            .arg("mount")
            .arg(&remote)
            .arg(dir)
            .args(["--vfs-cache-mode", cache_mode])
            .args(["--vfs-write-back", "1s", "--dir-cache-time", "1s"])
            .args(["--ftp-concurrency", "4", "--log-level", "INFO"])
            .args(extra)
            .arg("--log-file")
            .arg(&log)
            .arg("--cache-dir")
            .arg(dir.with_extension("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rclone mount");
        let m = Mount {
            child,
            dir: dir.to_owned(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !m.mounted() {
            assert!(
                Instant::now() < deadline,
                "rclone mount did not come up:\n{}",
                m.rclone_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    /// True while the mount is in /proc/mounts.
    pub fn mounted(&self) -> bool {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let d = self.dir.display().to_string();
        mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(d.as_str()))
    }

    /// rclone's own log so far.
    pub fn rclone_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `rel` inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.dir)
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
