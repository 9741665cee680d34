//! Local confinement under a race (issue 11, point 2): another process that can write
//! into the root swaps a real directory with a symbolic link to a directory outside it
//! (`renameat2(RENAME_EXCHANGE)` in a tight loop) while a client runs RETR, STOR,
//! SITE CHMOD and DELE through the swapped name. Nothing outside the root may be read,
//! created, changed or deleted. A file swapped with a FIFO must never hang a session.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::swap::Swapper;
use common::{sha, Gate};

const INSIDE: &[u8] = b"inside content";
const SECRET: &[u8] = b"SECRET outside the root";
const VICTIM: &[u8] = b"outside victim, must not be deleted";

/// Every entry of `dir` (not recursive; nothing is created below it) with its
/// content hash and permission bits.
fn state(dir: &Path) -> BTreeMap<String, (String, u32)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let hash = if m.is_file() {
                sha(&std::fs::read(e.path()).unwrap())
            } else {
                format!("{:?}", m.file_type())
            };
            (
                e.file_name().to_string_lossy().into_owned(),
                (hash, m.permissions().mode() & 0o7777),
            )
        })
        .collect()
}

/// Puts the outside directory back as it was (after an escape was counted).
fn restore(outside: &Path) {
    for e in std::fs::read_dir(outside).unwrap() {
        let p = e.unwrap().path();
        let _ = std::fs::remove_file(&p);
    }
    for (name, content) in [("f", SECRET), ("x", VICTIM)] {
        std::fs::write(outside.join(name), content).unwrap();
        std::fs::set_permissions(outside.join(name), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
}

/// 1 (and the outside directory restored) when it differs from `clean`, else 0.
fn changed(outside: &Path, clean: &BTreeMap<String, (String, u32)>) -> u32 {
    if state(outside) == *clean {
        return 0;
    }
    restore(outside);
    1
}

/// Escapes seen, by operation.
#[derive(Debug, Default)]
struct Escapes {
    retr_read_outside: u32,
    stor_created_or_changed_outside: u32,
    chmod_changed_outside: u32,
    dele_deleted_outside: u32,
}

impl Escapes {
    fn total(&self) -> u32 {
        self.retr_read_outside
            + self.stor_created_or_changed_outside
            + self.chmod_changed_outside
            + self.dele_deleted_outside
    }
}

/// 3,000 operations (750 rounds of RETR, STOR, SITE CHMOD, DELE on `/d/...`) while
/// `/d` is swapped with `/l -> <outside>`: every reply is a success on the real
/// directory or a refusal, and the outside directory never changes.
#[test]
fn swapping_a_directory_with_an_outside_symlink_never_escapes() {
    const ROUNDS: usize = 750;
    let g = Gate::start();
    let root: PathBuf = g.root();
    let outside = g.dir.path().join("outside");
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::write(root.join("d/f"), INSIDE).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    restore(&outside);
    std::os::unix::fs::symlink(&outside, root.join("l")).unwrap();
    let clean = state(&outside);

    let mut c = g.login();
    let swapper = Swapper::start(&root, "d", "l");
    let started = Instant::now();
    let mut esc = Escapes::default();
    let mut ok = [0u32; 4];
    for i in 0..ROUNDS {
        let (r, data) = c.retr("/d/f");
        if data == SECRET {
            esc.retr_read_outside += 1;
        } else if r.code == 226 {
            assert_eq!(data, INSIDE, "RETR /d/f returned unexpected content");
            ok[0] += 1;
        } else {
            assert!(r.code >= 400, "RETR /d/f: {r:?}");
        }

        let (first, fin) = c.store("STOR /d/x", format!("stored {i}").as_bytes());
        if fin.code == 226 {
            ok[1] += 1;
        } else {
            assert!(
                first.code >= 400 || fin.code >= 400,
                "STOR: {first:?} {fin:?}"
            );
        }
        esc.stor_created_or_changed_outside += changed(&outside, &clean);

        let r = c.cmd("SITE CHMOD 600 /d/f");
        if r.code == 200 {
            ok[2] += 1;
        }
        esc.chmod_changed_outside += changed(&outside, &clean);

        let r = c.cmd("DELE /d/x");
        if r.code == 250 {
            ok[3] += 1;
        }
        esc.dele_deleted_outside += changed(&outside, &clean);
    }
    let swaps = swapper.finish();
    assert_eq!(c.cmd("NOOP").code, 200);
    println!(
        "{} operations in {:.1} s against {swaps} swaps; succeeded inside \
         (RETR, STOR, CHMOD, DELE): {ok:?}; escapes: {esc:?}",
        ROUNDS * 4,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(esc.total(), 0, "operations escaped the root: {esc:?}");
    assert_eq!(state(&outside), clean, "the outside directory changed");
    // The race was real: operations succeeded on the directory and were refused on
    // the link (else the test proves nothing).
    assert!(swaps > 1000, "the swapper barely ran: {swaps} swaps");
    assert!(ok[0] > 0 && ok[1] > 0, "nothing succeeded inside: {ok:?}");
    // The root holds only the two swapped names and what was stored into them.
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["d", "l"]);
}

/// A file swapped with a FIFO while a client downloads it: every RETR gets its reply
/// (the file's content or a refusal) in bounded time, and the session still answers
/// NOOP afterwards. Before the fix, `open()` on the FIFO blocked a storage thread
/// forever and the session never answered again.
#[test]
fn swapping_a_file_with_a_fifo_never_hangs_a_session() {
    const RETRS: usize = 1500;
    let g = Gate::start();
    let root = g.root();
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("p"), INSIDE).unwrap();
    let fifo = CString::new(root.join("q").as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

    let swapper = Swapper::start(&root, "p", "q");
    let (tx, rx) = mpsc::channel();
    let addr = g.addr;
    // The client runs on its own thread so that a hung session is reported here,
    // with how far it got, instead of blocking the test.
    std::thread::spawn(move || {
        let mut c = common::Ctl::connect(addr);
        c.login(common::USER, common::PASS);
        for i in 0..RETRS {
            let (r, data) = c.retr("/p");
            let _ = tx.send(Some((i, r.code, data == INSIDE)));
        }
        let _ = tx.send(None);
        let r = c.cmd("NOOP");
        let _ = tx.send(Some((RETRS, r.code, true)));
    });
    let mut served = 0;
    let mut refused = 0;
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some((i, code, content_ok))) if i < RETRS => {
                if code == 226 {
                    assert!(content_ok, "RETR {i} of /p returned wrong content");
                    served += 1;
                } else {
                    assert!((400..600).contains(&code), "RETR {i}: code {code}");
                    refused += 1;
                }
            }
            Ok(Some((_, code, _))) => {
                assert_eq!(code, 200, "NOOP after the RETRs");
                break;
            }
            Ok(None) => {}
            Err(_) => panic!(
                "the session hung after {} RETRs ({served} served, {refused} refused): \
                 a FIFO open blocked",
                served + refused
            ),
        }
    }
    let swaps = swapper.finish();
    println!("{RETRS} RETRs: {served} served, {refused} refused, {swaps} swaps");
    assert!(served > 0, "no RETR found the file");
    // A fresh session is served too.
    let mut c = g.login();
    assert_eq!(c.cmd("NOOP").code, 200);
}
