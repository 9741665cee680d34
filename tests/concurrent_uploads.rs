//! Many uploads at once (issue 13 §5): the chunks of every upload are hashed and
//! written by two small shared pools of threads (one hashing thread per core, two
//! writing threads per core) instead of two threads per upload. Each upload still
//! stores exactly its bytes, its streamed SHA-256 (the transfer event) and `HASH`
//! (draft-bryan-ftpext-hash-02) match the data, `REST`+`STOR` and `APPE` continue a
//! file exactly, and uploads cut short leave no finished file and no temporary file.

mod common;

use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{payload, reset_data, sha, Ctl, Gate, Opts, PASS, USER};

/// Parallel uploads in these tests.
const UPLOADS: usize = 50;

/// A local gate that admits [`UPLOADS`] sessions from 127.0.0.1 and more.
fn gate() -> Gate {
    Gate::start_with(Opts {
        server: "max_sessions = 400\nmax_sessions_per_ip = 400\nmax_commands_per_sec = 0".into(),
        ..Default::default()
    })
}

/// Threads of the server whose name starts with `prefix` (`/proc/PID/task/*/comm`).
fn threads_named(pid: u32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|t| t.ok())
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim_end().starts_with(prefix))
                })
                .count()
        })
        .unwrap_or(0)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The `HASH` reply for `name` holding `data`.
fn hash_reply(name: &str, data: &[u8]) -> String {
    format!(
        "213 SHA-256 0-{} {} {name}",
        data.len().saturating_sub(1),
        sha(data)
    )
}

/// 50 STORs in flight at once, each several chunks long (past the 1 MiB hashed
/// inline): while they all wait half-sent, the server runs no more hashing threads
/// than cores (before: one per upload), and then every file holds exactly its
/// bytes, with the right streamed SHA-256 and `HASH`.
#[test]
fn fifty_parallel_stors_keep_exact_bytes_and_hashes() {
    let g = gate();
    let halfway = Arc::new(Barrier::new(UPLOADS + 1));
    let go_on = Arc::new(Barrier::new(UPLOADS + 1));
    let mut clients = Vec::new();
    for i in 0..UPLOADS {
        let (addr, halfway, go_on) = (g.addr, halfway.clone(), go_on.clone());
        clients.push(std::thread::spawn(move || {
            let data = payload(3 * 1024 * 1024 + 1 + i * 4099, i as u64);
            let name = format!("up-{i}.bin");
            let mut c = Ctl::connect(addr);
            c.login(USER, PASS);
            assert_eq!(c.cmd("TYPE I").code, 200);
            let mut d = c.epsv();
            let r = c.cmd(&format!("STOR {name}"));
            assert_eq!(r.code, 150, "{r:?}");
            let (first, rest) = data.split_at(2 * 1024 * 1024 + 512 * 1024);
            d.write_all(first).unwrap();
            halfway.wait();
            go_on.wait();
            d.write_all(rest).unwrap();
            drop(d);
            let fin = c.read();
            assert_eq!(fin.code, 226, "{name}: {fin:?}");
            assert_eq!(
                c.cmd(&format!("HASH {name}")).text.trim_end(),
                hash_reply(&name, &data)
            );
            (name, data)
        }));
    }
    halfway.wait();
    // Every upload is past its first chunk now, or about to be: watch a moment.
    let mut most = 0;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        most = most.max(threads_named(g.pid(), "ftpgate-sha256"));
        std::thread::sleep(Duration::from_millis(50));
    }
    go_on.wait();
    let stored: Vec<(String, Vec<u8>)> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        most <= cores(),
        "{most} hashing threads for {UPLOADS} uploads on {} cores",
        cores()
    );
    for (name, data) in &stored {
        let on_disk = std::fs::read(g.root().join(name)).unwrap();
        assert_eq!(sha(&on_disk), sha(data), "{name} on disk");
        let want = format!("sha256={}", sha(data));
        g.wait_logs(&format!("transfer event of {name}"), |l| {
            l.lines().any(|x| {
                x.contains(name.as_str())
                    && x.contains("transfer")
                    && x.replace('"', "").contains(&want)
            })
        });
    }
    assert!(
        threads_named(g.pid(), "ftpgate-write") <= 2 * cores(),
        "more writing threads than two per core"
    );
}

/// Continuing files while others upload: `REST n` + `STOR` and `APPE` (whose kept
/// prefix is copied before the new chunks are written) give exactly the whole file.
#[test]
fn parallel_rest_and_appe_continue_files_exactly() {
    let g = gate();
    let mut clients = Vec::new();
    for i in 0..20usize {
        let addr = g.addr;
        clients.push(std::thread::spawn(move || {
            let data = payload(2 * 1024 * 1024 + 7 + i * 1021, 100 + i as u64);
            let name = format!("cont-{i}.bin");
            let cut = 1024 * 1024 + 3 + i * 5000;
            let mut c = Ctl::connect(addr);
            c.login(USER, PASS);
            assert_eq!(c.cmd("TYPE I").code, 200);
            let (_, fin) = c.store(&format!("STOR {name}"), &data[..cut]);
            assert_eq!(fin.code, 226, "{fin:?}");
            let fin = if i % 2 == 0 {
                assert_eq!(c.cmd(&format!("REST {cut}")).code, 350);
                c.store(&format!("STOR {name}"), &data[cut..]).1
            } else {
                c.store(&format!("APPE {name}"), &data[cut..]).1
            };
            assert_eq!(fin.code, 226, "{name}: {fin:?}");
            assert_eq!(
                c.cmd(&format!("HASH {name}")).text.trim_end(),
                hash_reply(&name, &data)
            );
            (name, data)
        }));
    }
    for t in clients {
        let (name, data) = t.join().unwrap();
        assert_eq!(
            sha(&std::fs::read(g.root().join(&name)).unwrap()),
            sha(&data)
        );
    }
}

/// `.ftpgate-tmp-*` files in `dir` (not the pending directory, which keeps cut
/// uploads for resuming).
fn temp_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ftpgate-tmp-") && n != ".ftpgate-tmp-pending")
        .collect()
}

/// 12 uploads cut by a reset at once (fewer than the 16 a user may keep), mid-chunk
/// and past the inline hashing: no finished file under any name, no temporary file
/// left; each cut upload is kept (resumable) and resuming it from its kept size gives
/// exactly the whole file.
#[test]
fn parallel_cut_uploads_leave_no_file_and_resume_exactly() {
    let g = gate();
    let mut clients = Vec::new();
    for i in 0..12usize {
        let addr = g.addr;
        clients.push(std::thread::spawn(move || {
            let name = format!("cut-{i}.bin");
            let mut c = Ctl::connect(addr);
            c.login(USER, PASS);
            assert_eq!(c.cmd("TYPE I").code, 200);
            let port = c.epsv_port();
            let r = c.cmd(&format!("STOR {name}"));
            assert_eq!(r.code, 150, "{r:?}");
            // reset_data sends (0..=255) repeated: the kept bytes are a prefix of it.
            reset_data(port, 2 * 1024 * 1024 + 100 + i * 3001, 0);
            let fin = c.read();
            assert!(fin.code == 426 || fin.code == 451, "{name}: {fin:?}");
            name
        }));
    }
    let names: Vec<String> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    let mut c = g.login();
    for n in &names {
        assert_eq!(c.cmd(&format!("MDTM {n}")).code, 550, "{n} was committed");
        assert!(!g.root().join(n).exists(), "{n} on disk");
    }
    let until = Instant::now() + Duration::from_secs(60);
    while !temp_files(&g.root()).is_empty() {
        assert!(
            Instant::now() < until,
            "temporary files left: {:?}",
            temp_files(&g.root())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Resume three of them from what was kept.
    let whole: Vec<u8> = (0..=255u8).cycle().take(4 * 1024 * 1024).collect();
    for n in names.iter().take(3) {
        let size = c.cmd(&format!("SIZE {n}"));
        assert_eq!(size.code, 213, "{n}: {size:?}");
        let kept: usize = size.text.trim_end()[4..].parse().unwrap();
        assert!(kept <= whole.len());
        assert_eq!(c.cmd("TYPE I").code, 200);
        assert_eq!(c.cmd(&format!("REST {kept}")).code, 350);
        let (_, fin) = c.store(&format!("STOR {n}"), &whole[kept..]);
        assert_eq!(fin.code, 226, "{n}: {fin:?}");
        assert_eq!(
            c.cmd(&format!("HASH {n}")).text.trim_end(),
            hash_reply(n, &whole)
        );
    }
}
