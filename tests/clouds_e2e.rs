//! End to end on Google Cloud Storage and Azure Blob: the real binary started from the
//! config a user would write (`kind = "azure"` / `kind = "gcs"` with an emulator
//! endpoint), driven by curl, against the emulators the tests start themselves
//! (Azurite; fake-gcs-server), with content compared by SHA-256 and the stored objects
//! checked through the backend crate on the same container/bucket and prefix.

mod common;

#[path = "../backends/cloud/tests/common/mod.rs"]
mod emulators;

use std::path::Path;
use std::process::Command;

use common::{no_proxy, payload, require, run, sha, Gate, PASS, USER};
use ftpgate_storage::testkit::p;
use ftpgate_storage::StorageBackend;

/// A gate whose `[storage]` is `section` (plus the default user).
fn gate(section: String) -> Gate {
    Gate::start_toml(move |_| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nlogin_failure_delay_ms = 10\n\
             backend_check_interval_secs = 0\n\n{section}\n\
             [[users]]\nname = \"{USER}\"\npassword_hash = \"{}\"\n",
            common::hash(PASS)
        )
    })
}

/// curl against the gate with the default user (spaces in `path` encoded); returns
/// (ok, stdout, stderr).
fn curl(g: &Gate, args: &[&str], path: &str) -> (bool, String, String) {
    let mut cmd = Command::new("curl");
    no_proxy(&mut cmd)
        .args(["-sS", "--max-time", "120"])
        .args(args)
        .arg(format!("{}/{}", g.url(), path.replace(' ', "%20")));
    run(&mut cmd)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// With curl and Azurite: a gate on a fresh prefix of the test container (5 MiB blocks,
/// `extra` added to `[storage]`), the emulator and the prefix; `None` to skip.
fn azure_gate(extra: &str) -> Option<(&'static emulators::Emulator, String, Gate)> {
    if !require("curl") {
        return None;
    }
    let az = emulators::azure()?;
    let prefix = emulators::fresh_prefix();
    let g = gate(format!(
        "[storage]\nkind = \"azure\"\ncontainer = \"{}\"\nprefix = \"{prefix}\"\n\
         use_emulator = true\nendpoint = \"{}\"\npart_size_mib = 5\n{extra}",
        emulators::BUCKET,
        az.endpoint()
    ));
    Some((az, prefix, g))
}

/// Upload (multipart: above the 5 MiB part size) and download with curl, LIST, a
/// REST ranged read, rename and delete, on Azurite; the blobs are where the config says.
#[test]
fn curl_round_trip_on_azure() {
    let Some((az, prefix, g)) = azure_gate("") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = payload(12 << 20, 41);
    let src = dir.path().join("scan.pdf");
    std::fs::write(&src, &data).expect("write");
    let src_s = src.display().to_string();

    let (ok, _, err) = curl(
        &g,
        &["--ftp-create-dirs", "-T", &src_s],
        "in box/scan 1.pdf",
    );
    assert!(ok, "upload: {err}\n{}", g.logs());
    let (ok, out, err) = curl(&g, &[], "in box/");
    assert!(ok, "{err}");
    assert!(out.contains(" scan 1.pdf"), "LIST: {out}");
    assert!(out.contains(&data.len().to_string()), "LIST size: {out}");

    let got = dir.path().join("got");
    let got_s = got.display().to_string();
    let (ok, _, err) = curl(&g, &["-o", &got_s], "in box/scan 1.pdf");
    assert!(ok, "{err}");
    assert_eq!(sha(&std::fs::read(&got).expect("read")), sha(&data));
    // curl -r N- sends REST N before RETR.
    let (ok, _, err) = curl(&g, &["-r", "7000000-", "-o", &got_s], "in box/scan 1.pdf");
    assert!(ok, "{err}");
    assert_eq!(
        sha(&std::fs::read(&got).expect("read")),
        sha(&data[7_000_000..])
    );

    // The blob is where the config says, and the directory is a folder blob.
    let backend =
        ftpgate_backend_cloud::CloudBackend::azure(az.azure_config(&prefix)).expect("backend");
    let rt = runtime();
    let meta = rt
        .block_on(backend.stat(&p("/in box/scan 1.pdf")))
        .expect("stat");
    assert_eq!(meta.size, data.len() as u64);
    assert!(rt
        .block_on(backend.stat(&p("/in box")))
        .expect("dir")
        .is_dir());

    let (ok, _, err) = curl(
        &g,
        &["-Q", "RNFR in box/scan 1.pdf", "-Q", "RNTO in box/done.pdf"],
        "",
    );
    assert!(ok, "rename: {err}");
    let (ok, out, _) = curl(&g, &["-l"], "in box/");
    assert!(ok);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["done.pdf"], "{out}");
    let (ok, _, err) = curl(&g, &["-o", &got_s], "in box/done.pdf");
    assert!(ok, "{err}");
    assert_eq!(sha(&std::fs::read(&got).expect("read")), sha(&data));

    let (ok, _, err) = curl(&g, &["-Q", "DELE in box/done.pdf"], "");
    assert!(ok, "delete: {err}");
    assert!(rt
        .block_on(backend.stat(&p("/in box/done.pdf")))
        .is_err_and(|e| e.kind() == ftpgate_storage::ErrorKind::NotFound));
    // APPE is refused honestly (502), not emulated.
    let (ok, _, err) = curl(&g, &["--append", "-T", &src_s], "in box/done.pdf");
    assert!(!ok && err.contains("502"), "{err}");
}

/// Puts an object into fake-gcs-server through its JSON upload API (the one write
/// path it has; see `backends/cloud/tests/conformance_gcs.rs`).
fn gcs_seed(port: u16, key: &str, file: &Path) {
    let script = r#"
import sys, urllib.parse, urllib.request
port, bucket, key, path = sys.argv[1:5]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
url = (f"http://127.0.0.1:{port}/upload/storage/v1/b/{bucket}/o?uploadType=media&name="
       + urllib.parse.quote(key, safe=""))
req = urllib.request.Request(url, data=open(path, "rb").read(), method="POST",
    headers={"Content-Type": "application/octet-stream"})
opener.open(req, timeout=60).read()
"#;
    let status = Command::new("python3")
        .args(["-c", script, &port.to_string(), emulators::BUCKET, key])
        .arg(file)
        .status()
        .expect("python3");
    assert!(status.success(), "seeding {key} failed");
}

/// On fake-gcs-server: the gateway starts from a `kind = "gcs"` config; an object
/// another client put is listed, downloaded (whole and from a REST offset) and deleted
/// through FTP with curl. Uploads, and so rename, cannot be tested here: the emulator
/// refuses XML-API uploads — the gateway must then fail the STOR (never 226).
#[test]
fn curl_on_gcs_emulator() {
    if !require("curl") {
        return;
    }
    let Some(gcs) = emulators::gcs() else {
        return;
    };
    let prefix = emulators::fresh_prefix();
    let g = gate(format!(
        "[storage]\nkind = \"gcs\"\nbucket = \"{}\"\nprefix = \"{prefix}\"\n\
         endpoint = \"{}\"\nallow_http = true\nanonymous = true\n",
        emulators::BUCKET,
        gcs.endpoint()
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let data = payload(3 << 20, 42);
    let src = dir.path().join("report.pdf");
    std::fs::write(&src, &data).expect("write");
    gcs_seed(gcs.port, &format!("{prefix}/in/report 1.pdf"), &src);

    let (ok, out, err) = curl(&g, &[], "in/");
    assert!(ok, "{err}\n{}", g.logs());
    assert!(out.contains(" report 1.pdf"), "LIST: {out}");
    let got = dir.path().join("got");
    let got_s = got.display().to_string();
    let (ok, _, err) = curl(&g, &["-o", &got_s], "in/report 1.pdf");
    assert!(ok, "{err}");
    assert_eq!(sha(&std::fs::read(&got).expect("read")), sha(&data));
    let (ok, _, err) = curl(&g, &["-r", "1000000-", "-o", &got_s], "in/report 1.pdf");
    assert!(ok, "{err}");
    assert_eq!(
        sha(&std::fs::read(&got).expect("read")),
        sha(&data[1_000_000..])
    );

    // The emulator refuses the upload: a failed transfer, not a 226.
    let mut c = g.login();
    let (_, fin) = c.store("STOR in/new.bin", b"abc");
    assert_ne!(fin.code, 226, "{fin:?}");
    assert!(fin.code >= 400, "{fin:?}");

    let (ok, _, err) = curl(&g, &["-Q", "DELE in/report 1.pdf"], "");
    assert!(ok, "delete: {err}\n{}", g.logs());
    let (ok, out, _) = curl(&g, &["-l"], "");
    assert!(ok);
    assert!(!out.contains("report"), "{out}");
}

/// Uploads stream with bounded memory: a 96 MiB curl upload to Azurite with 5 MiB
/// blocks and 2 in flight raises the gateway's peak RSS far less than the file size
/// (the bound is (2 + 1) × 5 MiB of blocks plus buffers), and the blob is complete.
#[test]
fn azure_upload_memory_is_bounded() {
    let Some((_, _, g)) = azure_gate("max_parts_in_flight = 2\n") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = payload(96 << 20, 43);
    let src = dir.path().join("big.bin");
    std::fs::write(&src, &data).expect("write");
    // Warm up with a small file: the first transfer allocates the pools.
    let small = dir.path().join("small.bin");
    std::fs::write(&small, payload(1 << 20, 44)).expect("write");
    let (ok, _, err) = curl(&g, &["-T", &small.display().to_string()], "warm.bin");
    assert!(ok, "{err}");
    let before = g.peak_rss_kib();
    let (ok, _, err) = curl(&g, &["-T", &src.display().to_string()], "big.bin");
    assert!(ok, "upload: {err}\n{}", g.logs());
    let grown_mib = g.peak_rss_kib().saturating_sub(before) / 1024;
    println!(
        "96 MiB upload to Azure: peak RSS {} -> {} MiB",
        before / 1024,
        g.peak_rss_kib() / 1024
    );
    assert!(
        grown_mib < 48,
        "peak RSS grew {grown_mib} MiB for a 96 MiB upload"
    );
    let got = dir.path().join("got");
    let (ok, _, err) = curl(&g, &["-o", &got.display().to_string()], "big.bin");
    assert!(ok, "{err}");
    assert_eq!(sha(&std::fs::read(&got).expect("read")), sha(&data));
}

/// A container that does not exist, or a key of another kind, stops the start with
/// one message naming the container and endpoint, or the key.
#[test]
fn bad_azure_config_refuses_start() {
    let Some(az) = emulators::azure() else {
        return;
    };
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nkind = \"azure\"\n\
         use_emulator = true\nendpoint = \"{}\"\n",
        az.endpoint()
    );
    let err = common::refused_start(
        Some(&format!("{base}container = \"no-such-container\"\n")),
        &[],
    );
    assert!(
        err.contains("azure container \"no-such-container\" at")
            && err.contains(&az.endpoint())
            && err.contains("does not exist"),
        "{err}"
    );
    let err = common::refused_start(
        Some(&format!("{base}container = \"c\"\nregion = \"eu\"\n")),
        &[],
    );
    assert!(
        err.contains("storage.region does not apply to kind = \"azure\""),
        "{err}"
    );
}
