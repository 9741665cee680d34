//! Mapping virtual paths onto the disk under the root, refusing symbolic links that
//! lead outside it, and the start-up sweep of leftover temporary files.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ftpgate_storage::{EntryKind, ErrorKind, Metadata, Result, StorageError, VPath};

/// Name prefix of upload temporary files: hidden from listings, refused as a client
/// name, removed at start-up.
pub const TEMP_PREFIX: &str = ".ftpgate-tmp-";

/// Maps `path` under `root` (canonical), checking every existing prefix: a symbolic
/// link must resolve inside the root, else `PermissionDenied`. A name with the
/// temporary-file prefix is `InvalidName`. Missing trailing segments are joined
/// unchecked (they cannot be links yet).
///
/// Blocking: call from a blocking thread.
pub(crate) fn confine(root: &Path, path: &VPath) -> Result<PathBuf> {
    let mut full = root.to_path_buf();
    let mut exists = true;
    for seg in path.segments() {
        if seg.starts_with(TEMP_PREFIX) {
            return Err(StorageError::new(
                ErrorKind::InvalidName,
                format!("{path}: names starting with {TEMP_PREFIX} are reserved"),
            ));
        }
        full.push(seg);
        if !exists {
            continue;
        }
        match fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => check_link(root, &full, path)?,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                exists = false;
            }
            Err(e) => return Err(StorageError::from_io(path, e)),
        }
    }
    Ok(full)
}

/// Checks that the symbolic link at `full` resolves inside `root`. A dangling link is
/// `NotFound`.
fn check_link(root: &Path, full: &Path, path: &VPath) -> Result<()> {
    match fs::canonicalize(full) {
        Ok(real) if real.starts_with(root) => Ok(()),
        Ok(_) => Err(outside(path)),
        Err(e) => Err(StorageError::from_io(path, e)),
    }
}

fn outside(path: &VPath) -> StorageError {
    StorageError::new(
        ErrorKind::PermissionDenied,
        format!("{path}: a symbolic link leads outside the root"),
    )
}

/// The target of a listed symbolic link, `None` when it dangles or leads outside.
pub(crate) fn link_target_inside(root: &Path, link: &Path) -> Option<PathBuf> {
    fs::canonicalize(link)
        .ok()
        .filter(|real| real.starts_with(root))
}

/// Converts file-system metadata; `None` for anything but files and directories
/// (sockets, FIFOs, devices are not served).
pub(crate) fn to_meta(m: &fs::Metadata) -> Option<Metadata> {
    let kind = if m.is_dir() {
        EntryKind::Dir
    } else if m.is_file() {
        EntryKind::File
    } else {
        return None;
    };
    Some(Metadata {
        kind,
        size: if kind == EntryKind::Dir { 0 } else { m.len() },
        modified: m.modified().ok(),
        unique: Some(format!("{:x}g{:x}", m.dev(), m.ino())),
    })
}

/// [`to_meta`] for `stat`: special files are refused.
pub(crate) fn served_meta(m: &fs::Metadata, path: &VPath) -> Result<Metadata> {
    to_meta(m).ok_or_else(|| special(path))
}

/// The error for sockets, FIFOs and devices.
pub(crate) fn special(path: &VPath) -> StorageError {
    StorageError::new(
        ErrorKind::PermissionDenied,
        format!("{path}: not a regular file or directory"),
    )
}

/// Removes every `.ftpgate-tmp-*` regular file below `root`, without following
/// symbolic links; returns how many were removed. Failures are logged and skipped.
pub(crate) fn remove_temp_files(root: &Path) -> usize {
    let mut removed = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot scan for leftover temporary files");
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot scan for leftover temporary files");
                    break;
                }
            };
            // `DirEntry::file_type` does not follow symbolic links.
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if file_type.is_dir() {
                pending.push(path);
            } else if file_type.is_file()
                && entry
                    .file_name()
                    .as_encoded_bytes()
                    .starts_with(TEMP_PREFIX.as_bytes())
            {
                match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "cannot remove leftover temporary file");
                    }
                }
            }
        }
    }
    removed
}
