//! A thread that exchanges two names in one directory with
//! `renameat2(RENAME_EXCHANGE)` as fast as it can: another process racing ftpgate's
//! path resolution (shared by the end-to-end tests and the local backend's tests,
//! which include this file by path).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A thread exchanging two names in one directory with `renameat2(RENAME_EXCHANGE)`
/// as fast as it can, until dropped.
pub struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Swapper {
    pub fn start(dir: &Path, a: &str, b: &str) -> Swapper {
        let dir = CString::new(dir.as_os_str().as_bytes()).unwrap();
        let (a, b) = (CString::new(a).unwrap(), CString::new(b).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let (stop2, swaps2) = (Arc::clone(&stop), Arc::clone(&swaps));
        let handle = std::thread::spawn(move || {
            // SAFETY: plain syscalls on NUL-terminated strings that outlive them; the
            // descriptor is closed below.
            let fd = unsafe { libc::open(dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
            assert!(
                fd >= 0,
                "open the root: {}",
                std::io::Error::last_os_error()
            );
            while !stop2.load(Ordering::Relaxed) {
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_renameat2,
                        fd,
                        a.as_ptr(),
                        fd,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(rc, 0, "renameat2: {}", std::io::Error::last_os_error());
                swaps2.fetch_add(1, Ordering::Relaxed);
                // Give the server's threads a chance on a 2-core machine.
                if swaps2.load(Ordering::Relaxed) % 8 == 0 {
                    std::thread::yield_now();
                }
            }
            unsafe { libc::close(fd) };
        });
        Swapper {
            stop,
            swaps,
            handle: Some(handle),
        }
    }

    /// Stops the thread; how many exchanges it made.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("swapper thread");
        }
        self.swaps.load(Ordering::Relaxed)
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
