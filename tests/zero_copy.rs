//! Zero-copy RETR (issue 13 §1): a binary download of a local file over a plain data
//! connection goes out with `sendfile(2)`, and everything around it stays exact: bytes
//! from each `REST` offset, the byte counts in the metrics and the transfer event,
//! `ABOR`, and a file truncated mid-transfer never ending in 226. TYPE A conversion
//! keeps the streamed path. (`tests/protocol.rs` `abor_during_retr_gives_426_then_226`
//! and `stalled_data_connection_is_cut` run through the sendfile path too.)

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{metric, payload, sha, Ctl, Gate, Opts};

/// A gate on local storage with the HTTP endpoint (and `extra` config); its address.
fn gate(extra: &str) -> (Gate, SocketAddr) {
    let g = Gate::start_with(Opts {
        extra: format!("[http]\nlisten = \"127.0.0.1:0\"\n{extra}"),
        ..Default::default()
    });
    let http = g.logged_addr("http endpoint bound");
    (g, http)
}

const SENDFILE: &str = "ftpgate_transfer_sendfile_bytes_total";
const OUT: &str = "ftpgate_transfer_bytes_total{direction=\"out\",backend=\"storage\"}";

/// (sendfile bytes, outgoing transfer bytes) from `/metrics`.
fn counters(http: SocketAddr) -> (f64, f64) {
    let body = common::http_get(http, "/metrics").1;
    (metric(&body, SENDFILE), metric(&body, OUT))
}

/// Waits (up to 10 s) for the transfer counters to reach `want`; they are recorded
/// just after the final reply goes out.
fn wait_counters(http: SocketAddr, want: (f64, f64)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = counters(http);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "counters {got:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sendfile_retr_from_rest_offsets_counts_every_byte() {
    let (g, http) = gate("[transfer]\nascii_conversion = true\n");
    let data = payload((3 << 20) + 777, 13);
    std::fs::write(g.root().join("f.bin"), &data).unwrap();
    let mut c = g.login();
    assert_eq!(c.cmd("TYPE I").code, 200);
    let len = data.len();
    let mut total = 0u64;
    for offset in [0, 1, (1 << 20) - 1, 1 << 20, len - 1, len] {
        assert_eq!(c.cmd(&format!("REST {offset}")).code, 350);
        let (r, got) = c.retr("f.bin");
        assert_eq!(r.code, 226, "REST {offset}: {r:?}");
        assert_eq!(got.len(), len - offset, "REST {offset}");
        assert_eq!(sha(&got), sha(&data[offset..]), "REST {offset}");
        total += got.len() as u64;
    }
    // Every byte went through sendfile, and the usual counters saw the same bytes.
    wait_counters(http, (total as f64, total as f64));
    g.wait_logs("a transfer event of the whole file", |l| {
        l.lines()
            .any(|l| l.contains("transfer") && l.contains(&format!("bytes={len} ")))
    });
    // Past the end: refused before any data connection is used.
    assert_eq!(c.cmd(&format!("REST {}", len + 1)).code, 350);
    let _d = c.epsv();
    assert_eq!(c.cmd("RETR f.bin").code, 554);
    // TYPE A with conversion: the streamed path (LF → CRLF), not sendfile.
    std::fs::write(g.root().join("t.txt"), b"a\nb\n").unwrap();
    assert_eq!(c.cmd("TYPE A").code, 200);
    let (r, got) = c.retr("t.txt");
    assert_eq!((r.code, got.as_slice()), (226, &b"a\r\nb\r\n"[..]));
    wait_counters(http, (total as f64, (total + 6) as f64));
}

#[test]
fn abor_during_a_sendfile_retr_then_the_session_goes_on() {
    let (g, http) = gate("");
    let data = payload(64 << 20, 17);
    std::fs::write(g.root().join("big"), &data).unwrap();
    let mut c = g.login();
    let mut d = c.epsv();
    assert_eq!(c.cmd("RETR big").code, 150);
    let mut buf = vec![0u8; 1 << 20];
    d.read_exact(&mut buf).unwrap();
    let r1 = c.cmd("ABOR");
    let r2 = c.read();
    assert_eq!((r1.code, r2.code), (426, 226), "{r1:?} {r2:?}");
    drop(d);
    // The aborted transfer counted what it sent, no more than the file.
    let logs = g.wait_logs("the aborted transfer's event", |l| {
        l.lines()
            .any(|l| l.contains("transfer") && l.contains("code=426"))
    });
    let line = logs
        .lines()
        .find(|l| l.contains("transfer") && l.contains("code=426"))
        .unwrap();
    let bytes: u64 = line
        .split("bytes=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no bytes= in {line}"));
    assert!((1 << 20..=64 << 20).contains(&bytes), "{line}");
    wait_counters(http, (bytes as f64, bytes as f64));
    assert_eq!(c.cmd("NOOP").code, 200);
    let (fin, got) = c.retr("big");
    assert_eq!(fin.code, 226);
    assert_eq!(sha(&got), sha(&data));
    let all = bytes as f64 + data.len() as f64;
    wait_counters(http, (all, all));
}

/// Starts `RETR name` with a client that reads slowly (small receive buffer), reads
/// 64 KiB, truncates the file on disk to 1 MiB, then reads to the end. Returns the
/// final reply and the bytes received.
fn retr_while_truncating(g: &Gate, c: &mut Ctl, name: &str) -> (common::Resp, u64) {
    let port = c.epsv_port();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut d = TcpStream::from(sock);
    d.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let r = c.cmd(&format!("RETR {name}"));
    assert_eq!(r.code, 150, "{r:?}");
    let mut buf = vec![0u8; 64 * 1024];
    d.read_exact(&mut buf).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(g.root().join(name))
        .unwrap();
    f.set_len(1 << 20).unwrap();
    drop(f);
    let mut rest = Vec::new();
    d.read_to_end(&mut rest).unwrap();
    (c.read(), (buf.len() + rest.len()) as u64)
}

#[test]
fn a_file_truncated_during_retr_never_ends_with_226() {
    let (g, _http) = gate("[transfer]\nascii_conversion = true\n");
    let size = 64u64 << 20;
    let mut c = g.login();
    // Binary (sendfile), then TYPE A with conversion (the streamed path).
    for ty in ["TYPE I", "TYPE A"] {
        std::fs::write(g.root().join("shrinks"), payload(size as usize, 19)).unwrap();
        assert_eq!(c.cmd(ty).code, 200);
        let (r, got) = retr_while_truncating(&g, &mut c, "shrinks");
        assert!(got < size, "{ty}: {got} bytes");
        assert_eq!(
            r.code,
            451,
            "{ty}: a short download must not look complete: {r:?}\n{}",
            common::tail(&g.logs(), 10)
        );
        assert_eq!(c.cmd("NOOP").code, 200);
    }
}
