//! The one place where storage and path errors become FTP replies (RFC 959 §4.2.2
//! reply codes). 4xx means "try again later", 5xx means "this will not work".
//! Reply texts are generic: backend messages (which may contain host paths) go to
//! the log only.

use ftpgate_storage::{ErrorKind, PathError, StorageError};

use crate::protocol::Reply;

/// Maps a storage error to its reply and logs it at the matching level.
pub fn storage_reply(err: &StorageError) -> Reply {
    let (code, text) = match err.kind() {
        ErrorKind::NotFound => (550, "No such file or directory"),
        ErrorKind::AlreadyExists => (550, "File exists"),
        ErrorKind::NotADirectory => (550, "Not a directory"),
        ErrorKind::IsADirectory => (550, "Is a directory"),
        ErrorKind::DirectoryNotEmpty => (550, "Directory not empty"),
        ErrorKind::PermissionDenied => (550, "Permission denied"),
        ErrorKind::InsufficientStorage => (452, "Insufficient storage space"),
        ErrorKind::InvalidName => (553, "File name not allowed"),
        ErrorKind::InvalidInput => (554, "Requested action not taken: invalid argument"),
        ErrorKind::Unsupported => (502, "Not supported by this storage"),
        ErrorKind::Transient => (451, "Storage temporarily unavailable, try again"),
        _ => (451, "Local error in processing"),
    };
    match err.kind() {
        // The storage itself is in trouble: operators need to see it.
        ErrorKind::Transient | ErrorKind::Other | ErrorKind::InsufficientStorage => {
            tracing::warn!(error = %err, code, "storage error")
        }
        // An ordinary refusal caused by what the client asked for.
        _ => tracing::info!(error = %err, code, "storage refused"),
    }
    Reply::new(code, text)
}

/// Maps a refused client path to 553 (RFC 959: "File name not allowed").
pub fn path_reply(err: &PathError) -> Reply {
    tracing::info!(error = %err, "path refused");
    Reply::new(553, format!("File name not allowed: {err}"))
}

/// 550 for an operation the user's permissions do not allow.
pub fn permission_denied() -> Reply {
    Reply::new(550, "Permission denied")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let r = |k| storage_reply(&StorageError::new(k, "/host/secret/path: boom")).code;
        assert_eq!(r(ErrorKind::NotFound), 550);
        assert_eq!(r(ErrorKind::DirectoryNotEmpty), 550);
        assert_eq!(r(ErrorKind::InsufficientStorage), 452);
        assert_eq!(r(ErrorKind::InvalidName), 553);
        assert_eq!(r(ErrorKind::Unsupported), 502);
        assert_eq!(r(ErrorKind::Transient), 451);
        assert_eq!(r(ErrorKind::Other), 451);
        assert_eq!(r(ErrorKind::InvalidInput), 554);
    }

    #[test]
    fn host_paths_never_reach_the_client() {
        let e = StorageError::new(ErrorKind::Other, "/host/secret/path: boom");
        assert!(!storage_reply(&e).to_wire().contains("secret"));
    }

    #[test]
    fn path_errors_are_553() {
        assert_eq!(path_reply(&PathError::Nul).code, 553);
    }
}
