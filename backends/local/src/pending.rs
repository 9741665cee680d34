//! Pending (interrupted, resumable) uploads on local disk.
//!
//! An interrupted upload's temporary file is fsynced and moved into one directory at
//! the root, `.ftpgate-tmp-pending/` (hidden from listings and unreachable by clients,
//! like every `.ftpgate-tmp-` name), under a name derived from its owner and path:
//! `p-<16 hex of SHA-256(owner)>-<40 hex of SHA-256(owner NUL path)>`. Its size is
//! the durable byte count, its mtime when it was suspended. Resuming moves it back as
//! the upload's temporary file in the target directory (one `renameat`, so two sessions
//! cannot take the same pending upload), and the upload commits as any other. One
//! directory keeps the per-user bounds and the expiry a read of that directory, not a
//! walk of the tree. The start-up sweep of `.ftpgate-tmp-` files leaves these (their
//! names lack that prefix); expired ones go through [`expire`].

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ftpgate_storage::{ErrorKind, PendingKey, PendingUpload, PendingUsage, Result, StorageError};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::confine::{error, Root};

/// The directory (under the root) that holds pending uploads.
pub(crate) const PENDING_DIR: &str = ".ftpgate-tmp-pending";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn owner_prefix(owner: &str) -> String {
    format!("p-{}-", hex(&Sha256::digest(owner.as_bytes())[..8]))
}

/// The file name of the pending upload `key` in [`PENDING_DIR`].
pub(crate) fn file_name(key: &PendingKey) -> String {
    let mut h = Sha256::new();
    h.update(key.owner.as_bytes());
    h.update([0u8]);
    h.update(key.path.to_string().as_bytes());
    format!("{}{}", owner_prefix(&key.owner), hex(&h.finalize()[..20]))
}

/// Opens [`PENDING_DIR`] with `flags` (never through a link), creating it when
/// `create`; `None` when it does not exist.
pub(crate) fn open_dir(root: &Root, create: bool, flags: OFlags) -> Result<Option<OwnedFd>> {
    let flags = flags | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rfs::openat(root.fd(), PENDING_DIR, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) if create => {
            match rfs::mkdirat(root.fd(), PENDING_DIR, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(error(PENDING_DIR, e)),
            }
            rfs::openat(root.fd(), PENDING_DIR, flags, Mode::empty())
                .map(Some)
                .map_err(|e| error(PENDING_DIR, e))
        }
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(error(PENDING_DIR, e)),
    }
}

fn mtime(st: &Stat) -> SystemTime {
    match (u64::try_from(st.st_mtime), u32::try_from(st.st_mtime_nsec)) {
        (Ok(s), Ok(n)) => UNIX_EPOCH + Duration::new(s, n.min(999_999_999)),
        (Ok(s), Err(_)) => UNIX_EPOCH + Duration::from_secs(s),
        _ => UNIX_EPOCH,
    }
}

fn to_pending(st: &Stat) -> Option<PendingUpload> {
    (FileType::from_raw_mode(st.st_mode) == FileType::RegularFile).then(|| PendingUpload {
        size: u64::try_from(st.st_size).unwrap_or(0),
        modified: mtime(st),
    })
}

/// The pending upload `key`, if any.
pub(crate) fn find(root: &Root, key: &PendingKey) -> Result<Option<PendingUpload>> {
    let Some(dir) = open_dir(root, false, OFlags::PATH)? else {
        return Ok(None);
    };
    match rfs::statat(&dir, file_name(key).as_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(to_pending(&st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(error(&key.path, e)),
    }
}

/// Removes the pending upload `key`; false when there was none.
pub(crate) fn discard(root: &Root, key: &PendingKey) -> Result<bool> {
    let Some(dir) = open_dir(root, false, OFlags::PATH)? else {
        return Ok(false);
    };
    match rfs::unlinkat(&dir, file_name(key).as_str(), AtFlags::empty()) {
        Ok(()) => Ok(true),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(error(&key.path, e)),
    }
}

/// Visits every pending upload (of `owner`, or all): `visit(dir, name, info)`.
fn each(
    root: &Root,
    owner: Option<&str>,
    mut visit: impl FnMut(&OwnedFd, &[u8], PendingUpload),
) -> Result<()> {
    let Some(fd) = open_dir(root, false, OFlags::RDONLY)? else {
        return Ok(());
    };
    let prefix = owner.map(owner_prefix);
    let probe = fd.try_clone().map_err(|e| error(PENDING_DIR, e))?;
    let mut dir = rfs::Dir::new(fd).map_err(|e| error(PENDING_DIR, e))?;
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(|e| error(PENDING_DIR, e))?;
        let name = entry.file_name().to_bytes();
        if !name.starts_with(b"p-") {
            continue;
        }
        if prefix
            .as_ref()
            .is_some_and(|p| !name.starts_with(p.as_bytes()))
        {
            continue;
        }
        if let Ok(st) = rfs::statat(&probe, name, AtFlags::SYMLINK_NOFOLLOW) {
            if let Some(info) = to_pending(&st) {
                visit(&probe, name, info);
            }
        }
    }
    Ok(())
}

/// How many pending uploads (of `owner`, or all) hold how many bytes.
pub(crate) fn usage(root: &Root, owner: Option<&str>) -> Result<PendingUsage> {
    let mut u = PendingUsage::default();
    each(root, owner, |_, _, info| {
        u.count += 1;
        u.bytes += info.size;
    })?;
    Ok(u)
}

/// Removes the pending uploads last written before `before`.
pub(crate) fn expire(root: &Root, before: SystemTime) -> Result<PendingUsage> {
    let mut u = PendingUsage::default();
    each(root, None, |dir, name, info| {
        if info.modified < before {
            match rfs::unlinkat(dir.as_fd(), name, AtFlags::empty()) {
                Ok(()) => {
                    u.count += 1;
                    u.bytes += info.size;
                }
                Err(e) => {
                    tracing::warn!(name = %String::from_utf8_lossy(name), error = %e, "cannot remove expired pending upload");
                }
            }
        }
    })?;
    Ok(u)
}

/// `NotFound` for a pending upload that is gone.
pub(crate) fn gone(key: &PendingKey) -> StorageError {
    StorageError::new(
        ErrorKind::NotFound,
        format!("{}: no pending upload to resume", key.path),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftpgate_storage::VPath;

    #[test]
    fn names_separate_owners_and_paths() {
        let key = |o: &str, p: &str| PendingKey {
            owner: o.to_owned(),
            path: VPath::parse(p).expect("valid path"),
        };
        let a = file_name(&key("alice", "/x/big.bin"));
        assert!(a.starts_with(&owner_prefix("alice")));
        assert_eq!(a, file_name(&key("alice", "/x/big.bin")));
        assert_ne!(a, file_name(&key("bob", "/x/big.bin")));
        assert_ne!(a, file_name(&key("alice", "/x/big.bin2")));
        assert!(!a.starts_with(crate::TEMP_PREFIX));
    }
}
