//! Confinement by directory handle: every virtual path is resolved beneath a descriptor
//! of the root directory, never by re-walking a host path name, so nothing that
//! renames, swaps or replaces entries inside the root while an operation runs can
//! make it act outside the root. Also: metadata conversion and the start-up sweep of
//! leftover temporary files.
//!
//! # Resolution
//! - Fast path (Linux ≥ 5.6): one `openat2(root_fd, "a/b/c", RESOLVE_BENEATH |
//!   RESOLVE_NO_MAGICLINKS)`. The kernel refuses, atomically with the lookup, any step
//!   above the root (a `..` or a symbolic link leading out) and `/proc` magic links.
//! - Slow path: a per-component walk from the root descriptor, each directory opened
//!   with `O_PATH | O_DIRECTORY | O_NOFOLLOW` relative to the previous one. Used where
//!   `openat2` is missing (`ENOSYS`, seccomp filters: probed once at start-up), when the
//!   kernel asks for a retry (`EAGAIN`), and when `openat2` says `EXDEV`: that is how an
//!   absolute symbolic link pointing inside the root is followed (see below), and how
//!   an escape is confirmed.
//! - Operations on a name (create, unlink, mkdir, rmdir, rename, link) resolve the
//!   parent directory to a descriptor and act on the last segment relative to it
//!   (`openat`, `unlinkat`, `mkdirat`, `renameat`, `linkat`), so the entry acted on is
//!   always in a directory that is beneath the root.
//!
//! # Symbolic links (what the backend promises)
//! A symbolic link inside the root is followed when every step of its resolution stays
//! beneath the root: relative targets (`..` allowed down to the root, never above), and
//! absolute targets that start with the root's canonical path, which are resolved
//! relative to the root descriptor (so `/srv/ftp/a` under root `/srv/ftp` means `/a`).
//! Any other link (absolute elsewhere, `..` above the root, `/proc/self/...`) is
//! refused with `PermissionDenied`, including when it only appears mid-operation.
//! At most [`MAX_LINKS`] links are followed per path (`ELOOP` after that).
//!
//! # Special files
//! FIFOs, sockets and devices are never served: files are opened with `O_NONBLOCK`
//! (so a FIFO cannot block the opening thread) and their type is checked on the
//! descriptor after opening, never on the name.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use ftpgate_storage::{EntryKind, ErrorKind, Metadata, Result, StorageError, VPath};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// Name prefix of upload temporary files: hidden from listings, refused as a client
/// name, removed at start-up.
pub const TEMP_PREFIX: &str = ".ftpgate-tmp-";

/// Most symbolic links followed while resolving one path (Linux's own limit).
pub(crate) const MAX_LINKS: usize = 40;

/// The root directory: its canonical path (for messages and for absolute links) and a
/// descriptor that every resolution starts from.
#[derive(Debug)]
pub(crate) struct Root {
    path: PathBuf,
    fd: OwnedFd,
    /// `openat2` works here (probed once); otherwise every lookup walks.
    openat2: bool,
}

impl Root {
    /// Opens the canonical directory `path` and probes for `openat2`.
    pub(crate) fn open(path: PathBuf) -> io::Result<Self> {
        let fd = rfs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let openat2 = probe_openat2(fd.as_fd());
        if !openat2 {
            tracing::info!(root = %path.display(), "openat2 unavailable: confining by per-component walk");
        }
        Ok(Self { path, fd, openat2 })
    }

    /// The descriptor of the root (`O_PATH`), for `*at` calls on its own entries.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The canonical path of the root.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The same root resolving with the per-component walk only (tests of the
    /// fallback).
    pub(crate) fn walk_only(&self) -> io::Result<Self> {
        Ok(Self {
            path: self.path.clone(),
            fd: self.fd.try_clone()?,
            openat2: false,
        })
    }

    /// Opens what `path` names with `flags` (`O_CLOEXEC`, and `O_NOCTTY` unless
    /// `O_PATH`, added), following symbolic links that stay beneath the root.
    ///
    /// Blocking: call from a blocking thread.
    pub(crate) fn open_path(&self, path: &VPath, flags: OFlags) -> Result<OwnedFd> {
        let rel = relative(path)?;
        self.open_rel(&rel, flags).map_err(|e| error(path, e))
    }

    /// The directory that holds `path`'s last segment (an `O_PATH` descriptor, for the
    /// `*at` calls) and that segment. The root itself has no parent: `IsADirectory`.
    pub(crate) fn parent<'a>(&self, path: &'a VPath) -> Result<(OwnedFd, &'a str)> {
        let rel = relative(path)?;
        let Some(name) = path.file_name() else {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                "/: is a directory",
            ));
        };
        let dir = match rel.rsplit_once('/') {
            Some((dir, _)) => dir,
            None => ".",
        };
        let fd = self
            .open_rel(dir, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| error(path, e))?;
        Ok((fd, name))
    }

    /// The entry `name` in `dir` (not followed), `None` when missing. A symbolic link
    /// must resolve beneath the root (`PermissionDenied` otherwise; a dangling link is
    /// `NotFound`), as every operation on an existing name checks.
    pub(crate) fn entry(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &VPath,
    ) -> Result<Option<Stat>> {
        match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                    self.open_path(path, OFlags::PATH)?;
                }
                Ok(Some(st))
            }
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(error(path, e)),
        }
    }

    /// Opens the object `path` names for a metadata change (mode, times): a readable
    /// descriptor when possible (`true`), else an `O_PATH` one (`false`: changing
    /// metadata needs ownership, not read access). Only regular files and directories
    /// are accepted, checked on the descriptor.
    pub(crate) fn open_for_change(&self, path: &VPath) -> Result<(OwnedFd, bool)> {
        let (fd, readable) = match self.open_path(path, OFlags::RDONLY | OFlags::NONBLOCK) {
            Ok(fd) => (fd, true),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                (self.open_path(path, OFlags::PATH)?, false)
            }
            Err(e) => return Err(e),
        };
        let st = rfs::fstat(&fd).map_err(|e| error(path, e))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile | FileType::Directory => Ok((fd, readable)),
            _ => Err(special(path)),
        }
    }

    fn open_rel(&self, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
        // openat2 refuses (EINVAL) any flag beside O_CLOEXEC, O_DIRECTORY and
        // O_NOFOLLOW with O_PATH.
        let flags = if flags.contains(OFlags::PATH) {
            flags | OFlags::CLOEXEC
        } else {
            flags | OFlags::CLOEXEC | OFlags::NOCTTY
        };
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if self.openat2 {
            use rustix::fs::ResolveFlags;
            match rfs::openat2(
                &self.fd,
                rel,
                flags,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            ) {
                // An escape, or an absolute link (possibly into the root); a
                // concurrent rename (the kernel asks for a retry); no openat2.
                Err(Errno::XDEV | Errno::AGAIN | Errno::NOSYS) => {}
                other => return other.map_err(io::Error::from),
            }
        }
        self.walk(rel, flags).map_err(io::Error::from)
    }

    /// The per-component resolution: a stack of directory descriptors below the root
    /// (empty: at the root), segments still to visit, and links counted.
    fn walk(&self, rel: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let mut todo: Vec<Vec<u8>> = Vec::new();
        push_segments(&mut todo, rel.as_bytes());
        let mut dirs: Vec<OwnedFd> = Vec::new();
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if name == b".." {
                // Never above the root: that is an escape.
                if dirs.pop().is_none() {
                    return Err(Errno::XDEV);
                }
                continue;
            }
            let cur = dirs.last().map_or(self.fd.as_fd(), |d| d.as_fd());
            let last = todo.is_empty();
            let step_flags = if last {
                flags | OFlags::NOFOLLOW
            } else {
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
            };
            let target = match rfs::openat(cur, name.as_slice(), step_flags, Mode::empty()) {
                Ok(fd) if last && flags.contains(OFlags::PATH) => {
                    // O_PATH | O_NOFOLLOW opens a link itself: look at what it is.
                    if FileType::from_raw_mode(rfs::fstat(&fd)?.st_mode) != FileType::Symlink {
                        return Ok(fd);
                    }
                    rfs::readlinkat(&fd, "", Vec::new())?
                }
                Ok(fd) if last => return Ok(fd),
                Ok(fd) => {
                    dirs.push(fd);
                    continue;
                }
                // O_NOFOLLOW met a link (ELOOP), or a link where a directory was
                // wanted (ENOTDIR, with O_PATH): read it; anything else is the answer.
                Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                    match rfs::readlinkat(cur, name.as_slice(), Vec::new()) {
                        Ok(target) => target,
                        Err(_) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            links += 1;
            if links > MAX_LINKS {
                return Err(Errno::LOOP);
            }
            let target = target.into_bytes();
            if target.starts_with(b"/") {
                // Absolute: only a path under the root's canonical path, taken
                // relative to the root descriptor.
                let Some(rest) = under_root(self.path.as_os_str().as_bytes(), &target) else {
                    return Err(Errno::XDEV);
                };
                dirs.clear();
                push_segments(&mut todo, rest);
            } else {
                push_segments(&mut todo, &target);
            }
        }
        // The path ended on the root, a `..` or a link to a directory already open.
        let cur = dirs.last().map_or(self.fd.as_fd(), |d| d.as_fd());
        rfs::openat(cur, ".", flags, Mode::empty())
    }
}

/// The part of the absolute link target `target` below the canonical `root` (empty for
/// the root itself), `None` when the target is not under the root.
fn under_root<'a>(root: &[u8], target: &'a [u8]) -> Option<&'a [u8]> {
    // A root of `/` contains every absolute path.
    let root = if root == b"/" { &b""[..] } else { root };
    target
        .strip_prefix(root)
        .filter(|rest| rest.is_empty() || rest.starts_with(b"/"))
}

/// Pushes the segments of `path` so that the first one is popped first, skipping
/// empty and `.` segments.
fn push_segments(todo: &mut Vec<Vec<u8>>, path: &[u8]) {
    todo.extend(
        path.split(|b| *b == b'/')
            .filter(|s| !s.is_empty() && *s != b".")
            .rev()
            .map(<[u8]>::to_vec),
    );
}

/// Whether `openat2` with `RESOLVE_BENEATH` works here.
fn probe_openat2(root: BorrowedFd<'_>) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::fs::ResolveFlags;
        rfs::openat2(
            root,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .is_ok()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = root;
        false
    }
}

/// `path` relative to the root (`.` for the root). A segment with the temporary-file
/// prefix is `InvalidName`.
fn relative(path: &VPath) -> Result<String> {
    if path.segments().any(|s| s.starts_with(TEMP_PREFIX)) {
        return Err(StorageError::new(
            ErrorKind::InvalidName,
            format!("{path}: names starting with {TEMP_PREFIX} are reserved"),
        ));
    }
    Ok(if path.is_root() {
        ".".to_owned()
    } else {
        path.as_relative()
    })
}

/// A resolution error for `path`: `EXDEV` (the resolution would leave the root) is
/// `PermissionDenied`; the rest as the system says.
pub(crate) fn error(path: impl fmt::Display, e: impl Into<io::Error>) -> StorageError {
    let e: io::Error = e.into();
    if e.raw_os_error() == Some(Errno::XDEV.raw_os_error()) {
        return StorageError::new(
            ErrorKind::PermissionDenied,
            format!("{path}: a symbolic link leads outside the root"),
        );
    }
    StorageError::from_io(path, e)
}

/// Converts a `stat`; `None` for anything but files and directories (sockets, FIFOs,
/// devices and links are not served).
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // field types vary by target
pub(crate) fn to_meta(st: &Stat) -> Option<Metadata> {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => EntryKind::Dir,
        FileType::RegularFile => EntryKind::File,
        _ => return None,
    };
    let secs = st.st_mtime as i64;
    let nanos = u32::try_from(st.st_mtime_nsec as u64).unwrap_or(0);
    let modified = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(nanos.into())))
    };
    Some(Metadata {
        kind,
        size: if kind == EntryKind::Dir {
            0
        } else {
            u64::try_from(st.st_size as i64).unwrap_or(0)
        },
        modified,
        unique: Some(format!("{:x}g{:x}", st.st_dev as u64, st.st_ino as u64)),
    })
}

/// [`to_meta`] for `stat`: special files are refused.
pub(crate) fn served_meta(st: &Stat, path: &VPath) -> Result<Metadata> {
    to_meta(st).ok_or_else(|| special(path))
}

/// The error for sockets, FIFOs and devices.
pub(crate) fn special(path: &VPath) -> StorageError {
    StorageError::new(
        ErrorKind::PermissionDenied,
        format!("{path}: not a regular file or directory"),
    )
}

/// Removes every `.ftpgate-tmp-*` regular file below `root`, without following
/// symbolic links (each directory opened with `O_NOFOLLOW` relative to its parent's
/// descriptor; one descriptor per level of depth is held); returns how many were
/// removed. Failures are logged and skipped.
pub(crate) fn remove_temp_files(root: &Root) -> usize {
    let mut removed = 0;
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let top = rfs::openat(&root.fd, ".", dir_flags, Mode::empty());
    // Each level: the open directory, its host path (for logs), subdirectories left.
    let mut stack: Vec<(rfs::Dir, PathBuf, Vec<Vec<u8>>)> = Vec::new();
    let mut next = Some((top, root.path.clone()));
    loop {
        if let Some((fd, shown)) = next.take() {
            match fd.and_then(rfs::Dir::new) {
                Ok(mut dir) => {
                    let subdirs = sweep_dir(&mut dir, &shown, &mut removed);
                    stack.push((dir, shown, subdirs));
                }
                Err(e) => {
                    tracing::warn!(dir = %shown.display(), error = %e, "cannot scan for leftover temporary files");
                }
            }
        }
        let Some((dir, shown, subdirs)) = stack.last_mut() else {
            break;
        };
        match (subdirs.pop(), dir.fd()) {
            (Some(name), Ok(dfd)) => {
                let fd = rfs::openat(dfd, name.as_slice(), dir_flags, Mode::empty());
                next = Some((fd, shown.join(OsStr::from_bytes(&name))));
            }
            _ => {
                stack.pop();
            }
        }
    }
    removed
}

/// Reads `dir`, removes its temporary files and returns its subdirectories' names.
fn sweep_dir(dir: &mut rfs::Dir, shown: &Path, removed: &mut usize) -> Vec<Vec<u8>> {
    let mut subdirs = Vec::new();
    let mut temps = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(dir = %shown.display(), error = %e, "cannot scan for leftover temporary files");
                break;
            }
        };
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let mut kind = entry.file_type();
        if kind == FileType::Unknown {
            // Some file systems do not fill d_type.
            if let Ok(dfd) = dir.fd() {
                if let Ok(st) = rfs::statat(dfd, name, AtFlags::SYMLINK_NOFOLLOW) {
                    kind = FileType::from_raw_mode(st.st_mode);
                }
            }
        }
        match kind {
            FileType::Directory => subdirs.push(name.to_vec()),
            FileType::RegularFile if name.starts_with(TEMP_PREFIX.as_bytes()) => {
                temps.push(name.to_vec())
            }
            _ => {}
        }
    }
    let Ok(dfd) = dir.fd() else {
        return subdirs;
    };
    for name in temps {
        match rfs::unlinkat(dfd, name.as_slice(), AtFlags::empty()) {
            Ok(()) => *removed += 1,
            Err(e) => {
                let file = shown.join(OsStr::from_bytes(&name));
                tracing::warn!(file = %file.display(), error = %e, "cannot remove leftover temporary file");
            }
        }
    }
    subdirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_link_targets_under_the_root() {
        let r = b"/srv/ftp";
        assert_eq!(under_root(r, b"/srv/ftp"), Some(&b""[..]));
        assert_eq!(under_root(r, b"/srv/ftp/"), Some(&b"/"[..]));
        assert_eq!(under_root(r, b"/srv/ftp/a/b"), Some(&b"/a/b"[..]));
        assert_eq!(
            under_root(r, b"/srv/ftpx/a"),
            None,
            "a sibling sharing the prefix"
        );
        assert_eq!(under_root(r, b"/srv"), None);
        assert_eq!(under_root(r, b"/etc/passwd"), None);
        assert_eq!(under_root(b"/", b"/etc/passwd"), Some(&b"/etc/passwd"[..]));
    }

    #[test]
    fn segments_are_popped_in_order_without_dots() {
        let mut todo = vec![b"last".to_vec()];
        push_segments(&mut todo, b"a//./b/../c/");
        let popped: Vec<_> = std::iter::from_fn(|| todo.pop()).collect();
        let want: Vec<&[u8]> = vec![b"a", b"b", b"..", b"c", b"last"];
        assert_eq!(popped, want);
    }
}
