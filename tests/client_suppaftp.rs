//! End-to-end: the `suppaftp` crate (sync API) against the real binary, in
//! passive (PASV) and extended passive (EPSV) mode, on both backends. Active mode
//! is not used: suppaftp binds its listener on 0.0.0.0.

mod common;

use std::io::{Cursor, Read};
use std::time::Duration;

use common::{payload, sha, sha_file, tail, Gate, Opts, PASS, USER};
use suppaftp::types::FileType;
use suppaftp::{FtpError, FtpStream, Mode, Status};

fn connect(gate: &Gate, mode: Mode) -> FtpStream {
    let mut ftp = FtpStream::connect_timeout(gate.addr, Duration::from_secs(10)).expect("connect");
    ftp.get_ref()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert!(ftp
        .get_welcome_msg()
        .unwrap_or_default()
        .contains("ftpgate"));
    ftp.set_mode(mode);
    ftp.login(USER, PASS).expect("login");
    ftp
}

fn unexpected(e: FtpError) -> Option<u32> {
    match e {
        FtpError::UnexpectedResponse(r) => Some(r.status.code()),
        _ => None,
    }
}

fn session(gate: &Gate, mode: Mode, local: bool) {
    // A wrong password is refused with 530.
    let mut bad = FtpStream::connect(gate.addr).unwrap();
    let e = bad.login(USER, "wrong").unwrap_err();
    assert_eq!(unexpected(e), Some(530));

    let mut ftp = connect(gate, mode);
    let feat = ftp.feat().expect("FEAT");
    for f in ["MLST", "SIZE", "MDTM", "EPSV", "UTF8", "REST"] {
        assert!(feat.contains_key(f), "FEAT lacks {f}: {feat:?}");
    }
    ftp.transfer_type(FileType::Binary).unwrap();
    assert_eq!(ftp.pwd().unwrap(), "/");

    let dir = "/supp dir ü#%";
    ftp.mkdir(dir).expect("MKD");
    assert_eq!(unexpected(ftp.mkdir(dir).unwrap_err()), Some(550));
    ftp.cwd(dir).expect("CWD");
    assert_eq!(ftp.pwd().unwrap(), dir);

    let data = payload(4 * 1024 * 1024 + 99, 21);
    let n = ftp
        .put_file("big file.bin", &mut Cursor::new(&data))
        .expect("STOR");
    assert_eq!(n as usize, data.len());
    let small = b"hello from suppaftp\n".to_vec();
    ftp.put_file("日本 #1.txt", &mut Cursor::new(&small))
        .expect("STOR");
    if local {
        assert_eq!(
            sha_file(&gate.root().join("supp dir ü#%/big file.bin")),
            sha(&data)
        );
    }

    let got = ftp
        .retr_as_buffer("big file.bin")
        .expect("RETR")
        .into_inner();
    assert_eq!(sha(&got), sha(&data));
    // Streamed read through the retr closure.
    let got = ftp
        .retr("日本 #1.txt", |r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v).map_err(FtpError::ConnectionError)?;
            Ok(v)
        })
        .unwrap();
    assert_eq!(got, small);
    // REST + RETR.
    ftp.resume_transfer(1_000_000).unwrap();
    let got = ftp.retr_as_buffer("big file.bin").unwrap().into_inner();
    assert_eq!(sha(&got), sha(&data[1_000_000..]));
    // APPE.
    ftp.append_file("日本 #1.txt", &mut Cursor::new(b"more".to_vec()))
        .unwrap();
    let got = ftp.retr_as_buffer("日本 #1.txt").unwrap().into_inner();
    assert_eq!(got, [small.as_slice(), b"more"].concat());

    assert_eq!(ftp.size("big file.bin").unwrap(), data.len());
    assert_eq!(ftp.size("日本 #1.txt").unwrap(), small.len() + 4);
    let mtime = ftp.mdtm("big file.bin").unwrap();
    let age = chrono_age(mtime);
    assert!(age < 300, "MDTM {mtime} is not recent (age {age} s)");
    assert_eq!(unexpected(ftp.size("missing").unwrap_err()), Some(550));

    let list = ftp.list(None).unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(
        list.iter()
            .any(|l| l.ends_with(" big file.bin") && l.contains(&data.len().to_string())),
        "{list:?}"
    );
    let parsed: Vec<suppaftp::list::File> = list
        .iter()
        .map(|l| l.parse().expect("parse LIST line"))
        .collect();
    assert!(parsed
        .iter()
        .any(|f| f.name() == "日本 #1.txt" && f.is_file() && f.size() == small.len() + 4));
    let mut names = ftp.nlst(None).unwrap();
    names.sort();
    assert_eq!(names, ["big file.bin", "日本 #1.txt"]);
    let mlsd = ftp.mlsd(None).unwrap();
    let line = mlsd
        .iter()
        .find(|l| l.ends_with(" big file.bin"))
        .unwrap_or_else(|| panic!("{mlsd:?}"));
    assert!(line.to_ascii_lowercase().contains("type=file;"), "{line}");
    assert!(line.contains(&format!("size={};", data.len())), "{line}");
    let f = suppaftp::list::File::from_mlsx_line(line).expect("parse MLSD line");
    assert_eq!(f.size(), data.len());
    let mlst = ftp.mlst(Some("big file.bin")).unwrap();
    assert!(mlst.contains(&format!("size={};", data.len())), "{mlst}");

    ftp.rename("big file.bin", "renamed ü.bin")
        .expect("RNFR/RNTO");
    assert_eq!(unexpected(ftp.size("big file.bin").unwrap_err()), Some(550));
    assert_eq!(ftp.size("renamed ü.bin").unwrap(), data.len());
    if local {
        assert!(gate.root().join("supp dir ü#%/renamed ü.bin").is_file());
    }

    ftp.mkdir("sub").unwrap();
    ftp.cwd("sub").unwrap();
    ftp.cdup().unwrap();
    assert_eq!(ftp.pwd().unwrap(), dir);
    // A directory that is not empty cannot be removed.
    ftp.cwd("/").unwrap();
    assert_eq!(unexpected(ftp.rmdir(dir).unwrap_err()), Some(550));
    ftp.rm(format!("{dir}/renamed ü.bin")).unwrap();
    ftp.rm(format!("{dir}/日本 #1.txt")).unwrap();
    assert_eq!(
        unexpected(ftp.rm(format!("{dir}/日本 #1.txt")).unwrap_err()),
        Some(550)
    );
    ftp.rmdir(format!("{dir}/sub")).unwrap();
    ftp.rmdir(dir).unwrap();
    assert!(ftp.nlst(None).unwrap().is_empty());
    if local {
        assert!(!gate.root().join("supp dir ü#%").exists());
    }
    let r = ftp.custom_command("SYST", &[Status::Name]).unwrap();
    assert_eq!(r.as_string().unwrap().trim_end(), "215 UNIX Type: L8");
    ftp.noop().unwrap();
    ftp.quit().unwrap();
}

/// Seconds between a naive UTC time and now.
fn chrono_age(t: chrono::NaiveDateTime) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (now - t.and_utc().timestamp()).abs()
}

#[test]
fn suppaftp_passive_local() {
    let gate = Gate::start();
    session(&gate, Mode::Passive, true);
}

#[test]
fn suppaftp_extended_passive_local() {
    let gate = Gate::start();
    session(&gate, Mode::ExtendedPassive, true);
}

#[test]
fn suppaftp_memory() {
    let gate = Gate::start_with(Opts {
        storage: "memory",
        ..Default::default()
    });
    session(&gate, Mode::ExtendedPassive, false);
    session(&gate, Mode::Passive, false);
}

#[test]
fn suppaftp_abort_large_download() {
    let gate = Gate::start();
    let data = payload(24 * 1024 * 1024, 5);
    std::fs::write(gate.root().join("huge.bin"), &data).unwrap();
    let mut ftp = connect(&gate, Mode::ExtendedPassive);
    ftp.transfer_type(FileType::Binary).unwrap();
    let mut stream = ftp.retr_as_stream("huge.bin").unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(buf[..], data[..buf.len()]);
    // suppaftp's abort sends a plain ABOR line and expects 426/226 then 226.
    if let Err(e) = ftp.abort(stream) {
        panic!(
            "ABOR failed: {e:?}\n--- server log (tail) ---\n{}",
            tail(&gate.logs(), 30)
        );
    }
    ftp.noop().unwrap();
    assert_eq!(ftp.size("huge.bin").unwrap(), data.len());
    ftp.quit().unwrap();
}
