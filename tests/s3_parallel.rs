//! End to end on S3 (moto): RETR of a large object through parallel ranged GETs
//! (`read_parallelism`, `read_chunk_mib`): whole and from REST offsets (RFC 3659 §5)
//! inside and between chunks, ABOR in the middle (RFC 959 §4.1.3), and an object
//! replaced during a slow RETR (never mixed bytes with 226).

mod common;

#[path = "../backends/s3/tests/common/mod.rs"]
mod moto;

use std::io::Read;

use common::{payload, sha, Gate};

const MIB: usize = 1 << 20;
/// Five chunks of 8 MiB (the default `read_chunk_mib`).
const SIZE: usize = 40 * MIB;

/// A gate on a fresh bucket of moto with a 40 MiB object `big` stored through FTP.
fn gate_with_big(m: &moto::Server, storage: &str) -> (Gate, String, Vec<u8>) {
    let bucket = m.bucket();
    let g = Gate::start_s3(&m.endpoint(), &bucket, storage);
    let big = payload(SIZE, 131);
    let mut c = g.login();
    let (_, fin) = c.store("STOR big", &big);
    assert_eq!(fin.code, 226, "{fin:?}\n{}", g.logs());
    (g, bucket, big)
}

/// GETs of the object `big` among `reqs`.
fn gets_of_big(reqs: &[String]) -> usize {
    reqs.iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/ftp/big"))
        .count()
}

#[test]
fn large_retr_uses_ranged_gets_and_rest_offsets_work() {
    let Some(m) = moto::moto() else { return };
    let (g, bucket, big) = gate_with_big(m, "read_parallelism = 4\nread_chunk_mib = 8");
    let mut c = g.login();
    let ((fin, got), reqs) = m.requests_during(&bucket, || c.retr("big"));
    assert_eq!(fin.code, 226, "{fin:?}\n{}", g.logs());
    assert_eq!(sha(&got), sha(&big));
    // The opening GET serves the first 8 MiB, four ranged GETs the rest.
    assert_eq!(gets_of_big(&reqs), 5, "{reqs:?}");
    for offset in [
        1,
        3 * MIB + 17,
        8 * MIB - 1,
        8 * MIB,
        8 * MIB + 1,
        32 * MIB + 5,
        SIZE - 1,
        SIZE,
    ] {
        assert_eq!(c.cmd(&format!("REST {offset}")).code, 350);
        let (fin, got) = c.retr("big");
        assert_eq!(fin.code, 226, "REST {offset}: {fin:?}\n{}", g.logs());
        assert_eq!(sha(&got), sha(&big[offset..]), "REST {offset}");
    }
    // read_parallelism = 1: one streaming GET, as before.
    let bucket1 = m.bucket();
    let g1 = Gate::start_s3(&m.endpoint(), &bucket1, "read_parallelism = 1");
    let mut c1 = g1.login();
    assert_eq!(c1.store("STOR big", &big).1.code, 226);
    let ((fin, got), reqs) = m.requests_during(&bucket1, || c1.retr("big"));
    assert_eq!((fin.code, sha(&got)), (226, sha(&big)));
    assert_eq!(gets_of_big(&reqs), 1, "{reqs:?}");
}

#[test]
fn abor_during_a_parallel_retr_then_the_session_works() {
    let Some(m) = moto::moto() else { return };
    let (g, _, big) = gate_with_big(m, "");
    let mut c = g.login();
    let mut d = c.epsv();
    assert_eq!(c.cmd("RETR big").code, 150);
    let mut buf = vec![0u8; MIB];
    d.read_exact(&mut buf).unwrap();
    assert_eq!(buf, big[..MIB]);
    assert_eq!(c.cmd("ABOR").code, 426);
    assert_eq!(c.read().code, 226);
    drop(d);
    // The same session downloads the whole object again, and from a REST offset.
    let (fin, got) = c.retr("big");
    assert_eq!((fin.code, sha(&got)), (226, sha(&big)), "{}", g.logs());
    assert_eq!(c.cmd("REST 20000000").code, 350);
    let (fin, got) = c.retr("big");
    assert_eq!((fin.code, sha(&got)), (226, sha(&big[20_000_000..])));
    assert_eq!(c.cmd("NOOP").code, 200);
}

#[test]
fn object_replaced_during_a_slow_retr_is_never_mixed() {
    let Some(m) = moto::moto() else { return };
    // 1 MiB chunks, 2 in memory: most of the object is fetched after the overwrite.
    let (g, bucket, big) = gate_with_big(m, "read_parallelism = 2\nread_chunk_mib = 1");
    let mut c = g.login();
    let mut d = c.epsv();
    assert_eq!(c.cmd("RETR big").code, 150);
    let mut got = vec![0u8; 512 << 10];
    d.read_exact(&mut got).unwrap();
    // Replaced by another S3 client with other bytes of the same size.
    m.boto(
        &bucket,
        &format!(
            "s3.put_object(Bucket=bucket, Key='ftp/big', Body=b'\\x01' * {SIZE})\n\
             print(json.dumps(True))"
        ),
    );
    let mut rest = Vec::new();
    // The gateway ends the data connection either way (whole or cut).
    let _ = d.read_to_end(&mut rest);
    got.extend_from_slice(&rest);
    let fin = c.read();
    println!("replaced during RETR: {fin:?} after {} bytes", got.len());
    if fin.code == 226 {
        assert_eq!(sha(&got), sha(&big), "226 with mixed or short content");
    } else {
        assert!(
            (400..600).contains(&fin.code),
            "neither 226 nor an error: {fin:?}"
        );
        assert!(got.len() < SIZE, "all bytes sent, yet {fin:?}");
        assert_eq!(got, big[..got.len()], "bytes of the new version were sent");
    }
    // The session goes on with the new content.
    let (fin, now) = c.retr("big");
    assert_eq!(fin.code, 226);
    assert_eq!(sha(&now), sha(&vec![1u8; SIZE]));
}

#[test]
fn a_small_window_keeps_every_byte_in_order() {
    let Some(m) = moto::moto() else { return };
    // 1 MiB chunks, 3 GETs at once: 13 chunks (the last one short), each GET's window
    // slot taken over several times; TYPE A sends converted copies of the pieces.
    let size = 12 * MIB + 12_345;
    let bucket = m.bucket();
    let g = Gate::start_s3(
        &m.endpoint(),
        &bucket,
        "read_parallelism = 3\nread_chunk_mib = 1\n[transfer]\nascii_conversion = true",
    );
    let data = payload(size, 977);
    let mut c = g.login();
    assert_eq!(c.store("STOR big", &data).1.code, 226, "{}", g.logs());
    let before = m.requests(&bucket).len();
    let (fin, got) = c.retr("big");
    assert_eq!((fin.code, sha(&got)), (226, sha(&data)), "{}", g.logs());
    // The opening GET and one ranged GET per further chunk, none twice (moto logs a
    // request after its response: wait for the lines, generously).
    let since = |all: Vec<String>| all[before.min(all.len())..].to_vec();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while gets_of_big(&since(m.requests(&bucket))) < 13 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Then a moment for any request too many to show up.
    let _ = m.requests_during(&bucket, || ());
    let reqs = since(m.requests(&bucket));
    assert_eq!(gets_of_big(&reqs), 13, "{reqs:?}");
    for offset in [MIB - 1, 5 * MIB + 3, 12 * MIB + 1] {
        assert_eq!(c.cmd(&format!("REST {offset}")).code, 350);
        let (fin, got) = c.retr("big");
        assert_eq!(fin.code, 226, "REST {offset}: {fin:?}\n{}", g.logs());
        assert_eq!(sha(&got), sha(&data[offset..]), "REST {offset}");
    }
    assert_eq!(c.cmd("TYPE A").code, 200);
    let (fin, got) = c.retr("big");
    assert_eq!(fin.code, 226, "{}", g.logs());
    let mut want = Vec::with_capacity(size + size / 64);
    let mut prev = 0u8;
    for &b in &data {
        if b == b'\n' && prev != b'\r' {
            want.push(b'\r');
        }
        want.push(b);
        prev = b;
    }
    assert_eq!(sha(&got), sha(&want), "TYPE A content");
}
