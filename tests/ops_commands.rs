//! Issue 7's control-channel features end to end, on local disk and on S3 (moto):
//! HASH / OPTS HASH / XSHA256 / XSHA1 / XMD5 / XCRC against `sha256sum`, `sha1sum`,
//! `md5sum` and zlib's CRC-32 of the same bytes; MFMT and SITE UTIME reported by MDTM,
//! MLSD and LIST; SITE CHMOD; FEAT per backend; and the S3 requests each FTP command
//! costs, read from moto's own request log.

mod common;

#[path = "../backends/s3/tests/common/mod.rs"]
mod moto;

use std::process::Command;

use common::{payload, run, Gate, PASS, USER};

/// A gate on a fresh moto bucket (prefix `ftp`, 5 MiB parts); `storage` adds keys to
/// the `[storage]` section.
fn s3_gate(m: &moto::Moto, storage: &str) -> (Gate, String) {
    let bucket = m.bucket();
    (Gate::start_s3(&m.endpoint(), &bucket, storage), bucket)
}

/// The digests of `data` as the system tools compute them: (sha256, sha1, md5, crc32).
fn reference_digests(data: &[u8]) -> (String, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, data).unwrap();
    let tool = |t: &str| {
        let (ok, out, err) = run(Command::new(t).arg(&f));
        assert!(ok, "{t}: {err}");
        out.split_whitespace().next().unwrap().to_owned()
    };
    let (ok, crc, err) = run(Command::new("python3")
        .arg("-c")
        .arg("import sys, zlib; print('%08x' % zlib.crc32(open(sys.argv[1], 'rb').read()))")
        .arg(&f));
    assert!(ok, "{err}");
    (
        tool("sha256sum"),
        tool("sha1sum"),
        tool("md5sum"),
        crc.trim().to_owned(),
    )
}

/// Every digest command on `name` (holding `data`) against the reference tools.
fn check_digests(c: &mut common::Ctl, name: &str, data: &[u8]) {
    let (sha256, sha1, md5, crc) = reference_digests(data);
    // The range's end point is inclusive (draft-bryan-ftpext-hash-02 §3.4).
    let size = data.len().saturating_sub(1);
    let r = c.cmd(&format!("HASH {name}"));
    assert_eq!(
        r.text.trim_end(),
        format!("213 SHA-256 0-{size} {sha256} {name}")
    );
    for (alg, want) in [
        ("SHA-1", &sha1),
        ("MD5", &md5),
        ("CRC32", &crc),
        ("SHA-256", &sha256),
    ] {
        assert_eq!(
            c.cmd(&format!("OPTS HASH {alg}")).text.trim_end(),
            format!("200 {alg}")
        );
        let r = c.cmd(&format!("HASH {name}"));
        assert_eq!(
            r.text.trim_end(),
            format!("213 {alg} 0-{size} {want} {name}")
        );
    }
    for (verb, want) in [
        ("XSHA256", &sha256),
        ("XSHA1", &sha1),
        ("XMD5", &md5),
        ("XCRC", &crc),
    ] {
        let r = c.cmd(&format!("{verb} {name}"));
        assert_eq!(r.text.trim_end(), format!("250 {want}"), "{verb}");
    }
    // Quoted name with a range after it (clients that send one).
    let r = c.cmd(&format!("XMD5 \"{name}\" 0 {size}"));
    assert_eq!(r.text.trim_end(), format!("250 {md5}"));
}

/// FEAT lists HASH (selected algorithm starred) and the X-commands; bad input gets
/// clear replies.
fn check_hash_replies(c: &mut common::Ctl) {
    let feat = c.cmd("FEAT").text;
    assert!(
        feat.contains(" HASH SHA-256*;SHA-1;MD5;CRC32\r\n"),
        "{feat}"
    );
    for verb in ["XCRC", "XMD5", "XSHA1", "XSHA256"] {
        assert!(feat.contains(&format!(" {verb} ")), "{feat}");
    }
    assert_eq!(c.cmd("OPTS HASH").text.trim_end(), "200 SHA-256");
    assert_eq!(c.cmd("OPTS HASH SHA-512").code, 504);
    assert_eq!(c.cmd("OPTS HASH").text.trim_end(), "200 SHA-256");
    assert_eq!(c.cmd("HASH missing.bin").code, 550);
    assert_eq!(c.cmd("XSHA1 missing.bin").code, 550);
    assert_eq!(c.cmd("HASH").code, 501);
    assert_eq!(c.cmd("MKD somedir").code, 257);
    assert_eq!(c.cmd("HASH somedir").code, 550);
}

#[test]
fn digests_match_the_system_tools_on_local_disk() {
    if !common::require("python3") || !common::require("sha256sum") {
        return;
    }
    let g = Gate::start();
    let mut c = g.login();
    check_hash_replies(&mut c);
    let data = payload(3 * 1024 * 1024 + 11, 71);
    let (_, fin) = c.store("STOR data one.bin", &data);
    assert_eq!(fin.code, 226);
    check_digests(&mut c, "data one.bin", &data);
    // A file put on disk behind the gateway's back: read and hashed the same way.
    std::fs::write(g.root().join("disk.txt"), b"written on disk\n").unwrap();
    check_digests(&mut c, "disk.txt", b"written on disk\n");
    let empty: &[u8] = b"";
    c.store("STOR empty", empty);
    check_digests(&mut c, "empty", empty);
    // The transfer event carries the SHA-256 computed while the upload streamed.
    let (sha256, ..) = reference_digests(&data);
    g.wait_logs(&format!("transfer event with sha256={sha256}"), |logs| {
        logs.lines().any(|l| {
            l.contains("transfer") && l.contains(&format!("sha256=\"{sha256}\""))
                || l.contains(&format!("sha256={sha256}"))
        })
    });
}

#[test]
fn upload_hashing_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let g = Gate::start_toml(|_| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nkind = \"local\"\nroot = \"{}\"\n\
             upload_sha256 = false\n[[users]]\nname = \"{USER}\"\npassword_hash = \"{}\"\n",
            root.display(),
            common::hash(PASS)
        )
    });
    let mut c = g.login();
    let (_, fin) = c.store("STOR f", b"abc");
    assert_eq!(fin.code, 226);
    let logs = g.log_barrier();
    assert!(logs.contains("transfer verb="), "{logs}");
    assert!(!logs.contains("sha256="), "{logs}");
    // HASH still works: it reads the file.
    let r = c.cmd("HASH f");
    assert!(
        r.text
            .contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        "{r:?}"
    );
}

#[test]
fn digests_on_s3_come_from_metadata_without_a_get() {
    let Some(m) = moto::moto() else { return };
    if !common::require("python3") || !common::require("sha256sum") {
        return;
    }
    let (g, bucket) = s3_gate(m, "");
    let mut c = g.login();
    check_hash_replies(&mut c);
    let data = payload(200_000, 72);
    let (_, fin) = c.store("STOR small.bin", &data);
    assert_eq!(fin.code, 226);
    let (sha256, ..) = reference_digests(&data);
    // Stored with the object, visible to another S3 client.
    let meta = m.boto(
        &bucket,
        "print(json.dumps(s3.head_object(Bucket=bucket, Key='ftp/small.bin')['Metadata']))",
    );
    assert_eq!(meta["sha256"], serde_json::json!(sha256), "{meta}");
    // HASH (SHA-256) answers from the metadata: no GET of the object.
    let (r, reqs) = m.requests_during(&bucket, || c.cmd("HASH small.bin"));
    assert_eq!(
        r.text.trim_end(),
        format!("213 SHA-256 0-{} {sha256} small.bin", data.len() - 1)
    );
    assert!(!reqs.is_empty(), "moto logged no request");
    assert!(
        reqs.iter().all(|r| !r.starts_with("GET ")),
        "HASH downloaded the object: {reqs:?}"
    );
    assert_eq!(reqs.len(), 1, "HASH from metadata is one HEAD: {reqs:?}");
    check_digests(&mut c, "small.bin", &data);
    // A multipart upload (> 5 MiB part) has no stored digest: HASH streams it.
    let big = payload(6 * 1024 * 1024 + 3, 73);
    let (_, fin) = c.store("STOR big.bin", &big);
    assert_eq!(fin.code, 226);
    check_digests(&mut c, "big.bin", &big);
}

/// MFMT and both SITE UTIME forms set the time; MDTM, MLSD, MLST and LIST show it.
fn check_times(c: &mut common::Ctl) {
    let (_, fin) = c.store("STOR t.txt", b"times");
    assert_eq!(fin.code, 226);
    let feat = c.cmd("FEAT").text;
    assert!(feat.contains(" MFMT\r\n"), "{feat}");
    let r = c.cmd("MFMT 20200102030405 t.txt");
    assert_eq!(r.text.trim_end(), "213 Modify=20200102030405; t.txt");
    assert_eq!(c.cmd("MDTM t.txt").text.trim_end(), "213 20200102030405");
    let (_, mlsd) = c.list("MLSD");
    assert!(mlsd.contains("modify=20200102030405;"), "{mlsd}");
    let (_, list) = c.list("LIST");
    assert!(list.contains(" Jan 02  2020 t.txt"), "{list}");
    assert!(c.cmd("MLST t.txt").text.contains("modify=20200102030405;"));
    // lftp: SITE UTIME <time> <path> and SITE UTIME <path> <atime> <mtime> <ctime> UTC.
    assert_eq!(c.cmd("SITE UTIME 20210304050607 t.txt").code, 200);
    assert_eq!(c.cmd("MDTM t.txt").text.trim_end(), "213 20210304050607");
    assert_eq!(
        c.cmd("SITE UTIME t.txt 20220101000000 20220203040506 20220101000000 UTC")
            .code,
        200
    );
    assert_eq!(c.cmd("MDTM t.txt").text.trim_end(), "213 20220203040506");
    assert_eq!(c.cmd("SITE UTIME nonsense").code, 501);
    assert_eq!(c.cmd("MFMT 20200102030405 missing.txt").code, 550);
    // The content is untouched by all of this.
    let (_, got) = c.retr("t.txt");
    assert_eq!(got, b"times");
}

#[test]
fn times_on_local_disk() {
    let g = Gate::start();
    let mut c = g.login();
    check_times(&mut c);
    let mtime = std::fs::metadata(g.root().join("t.txt"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        mtime
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        1_643_861_106
    );
}

#[test]
fn times_on_s3_are_object_metadata() {
    let Some(m) = moto::moto() else { return };
    let (g, bucket) = s3_gate(m, "");
    let mut c = g.login();
    check_times(&mut c);
    let meta = m.boto(
        &bucket,
        "print(json.dumps(s3.head_object(Bucket=bucket, Key='ftp/t.txt')['Metadata']))",
    );
    assert_eq!(
        meta["mtime"],
        serde_json::json!("1643861106.000000000"),
        "{meta}"
    );
    // A fresh connection (new session, no cache of this one) sees the time too.
    let mut c2 = g.login();
    let (_, mlsd) = c2.list("MLSD");
    assert!(mlsd.contains("modify=20220203040506;"), "{mlsd}");
}

#[test]
fn site_chmod_help_and_unknown() {
    let g = Gate::start();
    let mut c = g.login();
    let help = c.cmd("SITE HELP");
    assert_eq!(help.code, 214);
    for sub in ["CHMOD", "UTIME", "HELP"] {
        assert!(help.text.contains(sub), "{help:?}");
    }
    assert_eq!(c.cmd("SITE FROB x").code, 504);
    assert_eq!(c.cmd("SITE EXEC rm -rf /").code, 504);
    c.store("STOR p.txt", b"perm");
    assert_eq!(c.cmd("SITE CHMOD 640 p.txt").code, 200);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(g.root().join("p.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640);
    // setuid is never set from FTP.
    assert_eq!(c.cmd("SITE CHMOD 4755 p.txt").code, 200);
    let mode = std::fs::metadata(g.root().join("p.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
    assert_eq!(c.cmd("SITE CHMOD 999 p.txt").code, 501);
    assert_eq!(c.cmd("SITE CHMOD 644").code, 501);
    assert_eq!(c.cmd("SITE CHMOD 644 missing").code, 550);
    assert_eq!(c.cmd("SITE CHMOD 644 ../../etc/passwd").code, 550);
}

#[test]
fn site_chmod_is_a_no_op_on_s3() {
    let Some(m) = moto::moto() else { return };
    let (g, _bucket) = s3_gate(m, "");
    let mut c = g.login();
    c.store("STOR p.txt", b"perm");
    let r = c.cmd("SITE CHMOD 600 p.txt");
    assert_eq!(r.code, 200, "{r:?}");
    assert!(r.text.contains("keeps no permissions"), "{r:?}");
    assert_eq!(c.cmd("SITE CHMOD 600 missing").code, 550);
}

/// The S3 requests (from moto's log) of each FTP command a small-file client sends;
/// printed as the table BENCHMARKS.md quotes, and bounded so waste cannot creep back.
#[test]
fn s3_requests_per_command() {
    let Some(m) = moto::moto() else { return };
    let (g, bucket) = s3_gate(m, "");
    let mut c = g.login();
    assert_eq!(c.cmd("MKD d").code, 257);
    let data = payload(10_000, 74);
    let mut table = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut(&mut common::Ctl) -> u16, max: usize| {
        let (code, reqs) = m.requests_during(&bucket, || f(&mut c));
        println!("{name:<28} -> {code}: {} requests {reqs:?}", reqs.len());
        assert!(
            reqs.len() <= max,
            "{name}: {} requests, at most {max} expected: {reqs:?}",
            reqs.len()
        );
        table.push((name.to_owned(), reqs));
    };
    step(
        "STOR d/a (first)",
        &mut |c| c.store("STOR d/a", &data).1.code,
        3,
    );
    step(
        "STOR d/b (parent known)",
        &mut |c| c.store("STOR d/b", &data).1.code,
        2,
    );
    // Right after its own upload the gateway knows the ETag: one CopyObject.
    step(
        "MFMT d/b",
        &mut |c| c.cmd("MFMT 20200101000000 d/b").code,
        1,
    );
    step("RETR d/a", &mut |c| c.retr("d/a").0.code, 1);
    // SIZE also reads the user's pending-upload marker (one GET, resuming is on by
    // default): how a resuming client finds a pending upload, on any replica.
    step("SIZE d/a", &mut |c| c.cmd("SIZE d/a").code, 3);
    // The copy's result told the new version's time: no HEAD for d/b's mtime.
    step("MLSD d (first)", &mut |c| c.list("MLSD d").0.code, 1);
    step("MLSD d (again)", &mut |c| c.list("MLSD d").0.code, 1);
    step("HASH d/a", &mut |c| c.cmd("HASH d/a").code, 1);
    step("DELE d/a", &mut |c| c.cmd("DELE d/a").code, 2);
    let retr = &table.iter().find(|(n, _)| n == "RETR d/a").unwrap().1;
    assert!(retr[0].starts_with("GET "), "{retr:?}");
    // MFMT copies inside S3 (HEAD + CopyObject): the object's bytes never pass
    // through the gateway.
    let mfmt = &table.iter().find(|(n, _)| n == "MFMT d/b").unwrap().1;
    assert!(
        mfmt.iter().all(|r| !r.starts_with("GET ")),
        "MFMT downloaded the object: {mfmt:?}"
    );
    let stor = &table
        .iter()
        .find(|(n, _)| n == "STOR d/b (parent known)")
        .unwrap()
        .1;
    assert!(
        stor.iter().all(|r| !r.starts_with("HEAD ")),
        "no HEAD before a PUT: {stor:?}"
    );
}

/// MLSD output as name → (type, size, modify) facts.
fn mlsd_facts(c: &mut common::Ctl, dir: &str) -> std::collections::BTreeMap<String, [String; 3]> {
    let (r, out) = c.list(&format!("MLSD {dir}"));
    assert_eq!(r.code, 226, "{r:?}");
    out.lines()
        .filter_map(|l| {
            let (facts, name) = l.split_once(' ')?;
            let fact = |k: &str| {
                facts
                    .split(';')
                    .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
                    .unwrap_or("")
                    .to_ascii_lowercase()
            };
            Some((
                name.to_owned(),
                [fact("type"), fact("size"), fact("modify")],
            ))
        })
        .collect()
}

/// `storage.list_cache_secs`: rclone's pattern (MLSD, STOR, MFMT, MLSD per file)
/// costs the upload's PUT and the MFMT's copy and no LIST; every change made through
/// the gateway shows at once; a write by another S3 client shows after the TTL, and at
/// once with the cache off.
#[test]
fn listing_cache_saves_lists_and_stays_current() {
    let Some(m) = moto::moto() else { return };
    // A long TTL so a slow machine cannot expire the listing between two commands.
    let (g, bucket) = s3_gate(m, "list_cache_secs = 60");
    let mut c = g.login();
    // Requests other than the parent-exists probe (remembered 10 s, so a slow run
    // may see it again).
    let during = |c: &mut common::Ctl, f: &mut dyn FnMut(&mut common::Ctl) -> u16| {
        let (code, reqs) = m.requests_during(&bucket, || f(c));
        let reqs: Vec<String> = reqs
            .into_iter()
            .filter(|r| !r.contains("prefix=ftp/d/&max-keys=1"))
            .collect();
        (code, reqs)
    };
    assert_eq!(c.cmd("MKD d").code, 257);
    assert_eq!(c.cmd("MKD d/sub").code, 257);
    let (_, reqs) = m.requests_during(&bucket, || mlsd_facts(&mut c, "d"));
    assert!(
        reqs.iter().filter(|r| r.contains("list-type=2")).count() <= 1,
        "{reqs:?}"
    );
    for i in 0..4 {
        let data = payload(1000 + i, i as u64);
        let name = format!("d/f{i}");
        let mut facts = Default::default();
        let (_, reqs) = during(&mut c, &mut |c| {
            assert_eq!(c.store(&format!("STOR {name}"), &data).1.code, 226);
            assert_eq!(c.cmd(&format!("MFMT 2021010203040{i} {name}")).code, 213);
            facts = mlsd_facts(c, "d");
            0
        });
        let lists: Vec<_> = reqs.iter().filter(|r| r.contains("list-type=2")).collect();
        assert!(lists.is_empty(), "STOR+MFMT+MLSD listed: {reqs:?}");
        assert_eq!(reqs.len(), 2, "one PUT and one copy: {reqs:?}");
        let f = &facts[&format!("f{i}")];
        assert_eq!(f[0], "file");
        assert_eq!(f[1], (1000 + i).to_string());
        assert_eq!(f[2], format!("2021010203040{i}"), "{f:?}");
    }
    // STOR onto a directory's name: refused, told by the kept listing.
    let (code, reqs) = during(&mut c, &mut |c| c.store("STOR d/sub", b"x").1.code);
    assert_eq!(code / 100, 5, "{code}");
    assert!(reqs.is_empty(), "{reqs:?}");
    // Delete, rename, overwrite: shown at once.
    assert_eq!(c.cmd("DELE d/f0").code, 250);
    assert_eq!(c.cmd("RNFR d/f1").code, 350);
    assert_eq!(c.cmd("RNTO d/g1").code, 250);
    c.store("STOR d/f2", &payload(77, 1));
    let facts = mlsd_facts(&mut c, "d");
    assert!(
        !facts.contains_key("f0") && !facts.contains_key("f1"),
        "{facts:?}"
    );
    assert_eq!(facts["g1"][1], "1001");
    assert_eq!(facts["f2"][1], "77");
    assert_eq!(c.cmd("SIZE d/f2").text.trim_end(), "213 77");
    // Another S3 client writes: seen once the kept listing is older than the TTL.
    let (g1, bucket1) = s3_gate(m, "list_cache_secs = 1");
    let mut c1 = g1.login();
    assert_eq!(c1.cmd("MKD d").code, 257);
    c1.store("STOR d/mine", b"1");
    assert!(mlsd_facts(&mut c1, "d").contains_key("mine"));
    let before = std::time::Instant::now();
    m.boto(
        &bucket1,
        "s3.put_object(Bucket=bucket, Key='ftp/d/foreign', Body=b'abc')\nprint('1')",
    );
    let deadline = before + std::time::Duration::from_secs(20);
    while !mlsd_facts(&mut c1, "d").contains_key("foreign") {
        assert!(std::time::Instant::now() < deadline, "never listed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let waited = before.elapsed();
    println!("a foreign write was listed after {waited:?} (list_cache_secs = 1)");
    assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");

    // Off: a foreign write shows in the very next listing.
    let (g0, bucket0) = s3_gate(m, "list_cache_secs = 0");
    let mut c0 = g0.login();
    assert_eq!(c0.cmd("MKD d").code, 257);
    c0.store("STOR d/mine", b"1");
    mlsd_facts(&mut c0, "d");
    m.boto(
        &bucket0,
        "s3.put_object(Bucket=bucket, Key='ftp/d/theirs', Body=b'abc')\nprint('1')",
    );
    assert!(mlsd_facts(&mut c0, "d").contains_key("theirs"));
}

/// Eight sessions upload into one directory at once and each lists it after every
/// upload, as rclone does: every session always sees all of its own files with their
/// sizes, although listings race with the other sessions' uploads.
#[test]
fn listing_cache_under_parallel_uploads_into_one_directory() {
    let Some(m) = moto::moto() else { return };
    // A 1 s TTL and S3 listings answered 300 ms late: listings are fetched again
    // and again while other sessions' uploads land.
    let port: u16 = m.endpoint().rsplit(':').next().unwrap().parse().unwrap();
    let slow = common::Proxy::slowing(
        port,
        b"<ListBucketResult",
        std::time::Duration::from_millis(300),
    );
    let bucket = m.bucket();
    let g = Gate::start_s3(
        &format!("http://127.0.0.1:{}", slow.port),
        &bucket,
        "list_cache_secs = 1",
    );
    g.login().cmd("MKD shared");
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let mut c = g.login();
            std::thread::spawn(move || {
                for i in 0..30u8 {
                    let size = 100 + usize::from(t) * 37 + usize::from(i);
                    let (_, fin) = c.store(
                        &format!("STOR shared/t{t}-{i}"),
                        &payload(size, u64::from(i)),
                    );
                    assert_eq!(fin.code, 226);
                    let facts = mlsd_facts(&mut c, "shared");
                    for j in 0..=i {
                        let want = 100 + usize::from(t) * 37 + usize::from(j);
                        let got = facts.get(&format!("t{t}-{j}")).map(|f| f[1].clone());
                        assert_eq!(got, Some(want.to_string()), "session {t} after upload {i}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let keys = m.keys(&bucket);
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("ftp/shared/t"))
            .count(),
        240
    );
}
