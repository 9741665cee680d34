//! The cost of one confined open: the old name-based check (an `lstat` per path
//! component, `canonicalize` for links, then `stat` + `open` + `fstat` by name, as
//! before the fd-based confinement) against the current resolution beneath the root
//! descriptor, with `openat2(RESOLVE_BENEATH)` and with the per-component walk used
//! where `openat2` is missing. Same file, same thread, no async runtime.
//!
//! `cargo run --release -p ftpgate-backend-local --example confine_cost -- [DIR] [N]`

use std::fs::{self, File};
use std::hint::black_box;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ftpgate_backend_local::LocalBackend;
use ftpgate_storage::VPath;

/// The former `confine()` plus the former open sequence of a download, by name.
fn old_open(root: &Path, rel: &str) -> io::Result<File> {
    let mut full = root.to_path_buf();
    for seg in rel.split('/') {
        full.push(seg);
        let m = fs::symlink_metadata(&full)?;
        if m.file_type().is_symlink() {
            let real = fs::canonicalize(&full)?;
            if !real.starts_with(root) {
                return Err(io::Error::from(io::ErrorKind::PermissionDenied));
            }
        }
    }
    let before = fs::metadata(&full)?;
    if !before.is_file() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let file = File::open(&full)?;
    black_box(file.metadata()?);
    Ok(file)
}

/// Nanoseconds per call of `f` over `n` calls (after a short warm-up).
fn time(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "target/confine-cost".to_owned()),
    );
    let n: u32 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let store = LocalBackend::new(&dir)?;
    let root = store.root().to_path_buf();
    fs::create_dir_all(root.join("a/b/c"))?;
    fs::write(root.join("f"), b"x")?;
    fs::write(root.join("a/b/c/f"), b"x")?;
    let _ = fs::remove_file(root.join("link"));
    std::os::unix::fs::symlink("a/b", root.join("link"))?;
    let walking = LocalBackend::new(&dir)?.without_openat2()?;

    println!("{n} opens per measurement, {rounds} interleaved rounds; median (min) ns per open");
    for rel in ["f", "a/b/c/f", "link/c/f"] {
        let vpath = VPath::parse(&format!("/{rel}"))?;
        let mut old = Vec::new();
        let mut new = Vec::new();
        let mut walk = Vec::new();
        for _ in 0..rounds {
            old.push(time(n, || {
                black_box(old_open(&root, rel).expect("old open"));
            }));
            new.push(time(n, || {
                black_box(store.open_for_read_blocking(&vpath).expect("openat2 open"));
            }));
            walk.push(time(n, || {
                black_box(walking.open_for_read_blocking(&vpath).expect("walk open"));
            }));
        }
        println!("-- /{rel}");
        for (label, v) in [
            ("old: lstat per component + open by name", &mut old),
            ("new: openat2 RESOLVE_BENEATH + fstat", &mut new),
            ("new, fallback: O_NOFOLLOW walk + fstat", &mut walk),
        ] {
            v.sort_by(f64::total_cmp);
            println!("{label:<44} {:>7.0} ({:.0})", v[v.len() / 2], v[0]);
        }
    }
    Ok(())
}
