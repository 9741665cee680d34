//! A directory of 100,000 objects on S3 listed through MLSD and NLST (LIST too
//! when `HUGE_DIR_ENTRIES` is small): complete, no duplicates, the first entries
//! arriving while later pages are still fetched, and ftpgate's peak RSS reported
//! and bounded; then as operators reach it, with `rclone lsf` and `ls` on an
//! `rclone mount`.
//!
//! The S3 server is a moto server of this test's own (moto's `ThreadedMotoServer`
//! in a Python process). Its objects are created with moto's backend API in that
//! process: 100,000 S3 PUTs run at ~370/s on moto here (270 s), the backend API
//! fills them in ~6 s. Everything ftpgate does goes through the S3 API
//! (ListObjectsV2 pages of 1,000). s3s-fs was tried first: its ListObjectsV2
//! reads the whole directory for every page and outlasts the retry timeout at
//! 100,000 entries.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::mount::Mount;
use common::{Gate, PASS, USER};

const SERVER: &str = r#"
import sys, time, http.client
from moto.server import ThreadedMotoServer
from moto.s3.models import s3_backends
from moto.core import DEFAULT_ACCOUNT_ID
port, bucket, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
srv = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
srv.start()
c = http.client.HTTPConnection("127.0.0.1", port)
c.request("PUT", "/" + bucket)
assert c.getresponse().status == 200
b = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
t = time.time()
for i in range(n):
    b.put_object(bucket, "ftp/huge/f%06d.txt" % i, b"x")
print("READY created %d objects in %.1f s" % (n, time.time() - t), flush=True)
sys.stdin.read()
srv.stop()
"#;

/// The names a tool printed one per line, without `ls -f`'s `.` and `..`.
fn file_names(out: &str) -> Vec<&str> {
    out.lines().filter(|l| !l.starts_with('.')).collect()
}

/// The moto process; killed when dropped.
struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto_with(bucket: &str, n: usize) -> (Moto, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(SERVER)
        .arg(port.to_string())
        .arg(bucket)
        .arg(n.to_string())
        .env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let moto = Moto(child);
    assert!(line.starts_with("READY"), "moto did not start: {line:?}");
    println!("{}", line.trim());
    (moto, port)
}

#[test]
fn huge_directory_lists_completely_with_flat_memory() {
    if !common::require("python3") || !common::require("moto_server") {
        return;
    }
    let n: usize = std::env::var("HUGE_DIR_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let bucket = "huge-dir".to_owned();
    let (_moto, port) = moto_with(&bucket, n);
    let endpoint = format!("http://127.0.0.1:{port}");
    let b = bucket.clone();
    let g = Gate::start_toml(move |_| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [storage]\nkind = \"s3\"\nbucket = \"{b}\"\nprefix = \"ftp\"\nendpoint = \"{endpoint}\"\n\
             force_path_style = true\nallow_http = true\naccess_key_id = \"testing\"\n\
             secret_access_key = \"testing\"\n\
             [[users]]\nname = \"{USER}\"\npassword_hash = \"{}\"\n",
            common::hash(PASS)
        )
    });
    let mut c = g.login();
    let rss_before = g.peak_rss_kib();
    // Exactly the n names, no duplicates.
    let complete = |what: &str, names: Vec<&str>| {
        let unique: HashSet<&str> = names.iter().copied().collect();
        assert_eq!(names.len(), n, "{what}: entries");
        assert_eq!(unique.len(), n, "{what}: duplicates");
        assert!(
            unique.contains("f000000.txt")
                && unique.contains(format!("f{:06}.txt", n - 1).as_str()),
            "{what}"
        );
    };
    let verbs: &[&str] = if n <= 20_000 {
        &["MLSD huge", "NLST huge", "LIST huge"]
    } else {
        &["MLSD huge", "NLST huge"]
    };
    for verb in verbs {
        let mut d = c.epsv();
        let started = Instant::now();
        let r = c.cmd(verb);
        assert_eq!(r.code, 150, "{r:?}");
        let mut first = None;
        let mut text = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let k = d.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            first.get_or_insert_with(|| started.elapsed());
            text.extend_from_slice(&buf[..k]);
        }
        let total = started.elapsed();
        assert_eq!(c.read().code, 226);
        let text = String::from_utf8(text).unwrap();
        let names: Vec<&str> = text
            .lines()
            .map(|l| match verb {
                v if v.starts_with("MLSD") => l.split_once("; ").unwrap().1,
                v if v.starts_with("NLST") => l.trim_start_matches("huge/"),
                _ => l.rsplit(' ').next().unwrap(),
            })
            .collect();
        complete(verb, names);
        let first = first.unwrap_or(total);
        println!(
            "{verb}: {n} entries, first bytes after {:?}, total {:?}, peak RSS {} KiB",
            first,
            total,
            g.peak_rss_kib()
        );
        if n >= 10_000 {
            // Streamed: the first page is out long before the last one is fetched.
            assert!(
                first * 4 < total * 3,
                "{verb}: first entry at {first:?} of {total:?}"
            );
        }
    }
    let growth = g.peak_rss_kib().saturating_sub(rss_before);
    println!(
        "ftpgate peak RSS {} KiB, growth while listing {growth} KiB",
        g.peak_rss_kib()
    );
    assert!(growth < 32 * 1024, "RSS grew by {growth} KiB");

    // As operators reach it: `rclone lsf`, and `ls` on an rclone mount.
    if !common::require("rclone") || !common::require("fusermount3") {
        return;
    }
    let (ok, pass, err) = common::run(Command::new("rclone").args(["obscure", PASS]));
    assert!(ok, "rclone obscure: {err}");
    let remote = format!(
        ":ftp,host=127.0.0.1,port={},user={USER},pass={}:huge",
        g.port(),
        pass.trim()
    );
    let started = Instant::now();
    let (ok, out, err) = common::run(Command::new("rclone").args(["lsf", &remote]));
    assert!(ok, "rclone lsf: {err}");
    complete("rclone lsf", file_names(&out));
    println!("rclone lsf: {n} entries in {:?}", started.elapsed());
    let mnt = tempfile::tempdir().unwrap();
    let m = Mount::start(&g, &mnt.path().join("m"), "off");
    let started = Instant::now();
    let (ok, out, err) = common::run(Command::new("ls").arg("-f").arg(m.path("huge")));
    assert!(
        ok,
        "ls on the mount: {err}\n{}",
        common::tail(&m.rclone_log(), 20)
    );
    complete("ls on rclone mount", file_names(&out));
    println!("ls on rclone mount: {n} entries in {:?}", started.elapsed());
    let growth = g.peak_rss_kib().saturating_sub(rss_before);
    assert!(growth < 32 * 1024, "RSS grew by {growth} KiB");
}
