//! The one place where storage and path errors become FTP replies (RFC 959 §4.2.2
//! reply codes). 4xx means "try again later", 5xx means "this will not work".
//! Reply texts are generic: backend messages (which may contain host paths) go to
//! the log only.

use ftpgate_storage::{ErrorKind, PathError, StorageError};

use crate::protocol::code;
use crate::protocol::Reply;

/// The code of a transfer that failed on storage (RFC 959 §4.2.2): 452 when
/// space ran out, the storage reply's own code when it is permanent (5xx), else
/// 451 (local error: the client may try again).
pub fn transfer_failure_code(err: &StorageError, reply: &Reply) -> u16 {
    match err.kind() {
        ErrorKind::InsufficientStorage => code::INSUFFICIENT_STORAGE,
        _ if reply.code >= 500 => reply.code,
        _ => code::LOCAL_ERROR,
    }
}

/// Maps a storage error to its reply and logs it at the matching level.
pub fn storage_reply(err: &StorageError) -> Reply {
    let (code, text) = match err.kind() {
        ErrorKind::NotFound => (code::FILE_UNAVAILABLE, "No such file or directory"),
        ErrorKind::AlreadyExists => (code::FILE_UNAVAILABLE, "File exists"),
        ErrorKind::NotADirectory => (code::FILE_UNAVAILABLE, "Not a directory"),
        ErrorKind::IsADirectory => (code::FILE_UNAVAILABLE, "Is a directory"),
        ErrorKind::DirectoryNotEmpty => (code::FILE_UNAVAILABLE, "Directory not empty"),
        ErrorKind::PermissionDenied => (code::FILE_UNAVAILABLE, "Permission denied"),
        ErrorKind::InsufficientStorage => {
            (code::INSUFFICIENT_STORAGE, "Insufficient storage space")
        }
        ErrorKind::InvalidName => (code::NAME_NOT_ALLOWED, "File name not allowed"),
        ErrorKind::InvalidInput => (
            code::INVALID_PARAMETER,
            "Requested action not taken: invalid argument",
        ),
        ErrorKind::Unsupported => (code::NOT_IMPLEMENTED, "Not supported by this storage"),
        ErrorKind::Transient => (
            code::LOCAL_ERROR,
            "Storage temporarily unavailable, try again",
        ),
        _ => (code::LOCAL_ERROR, "Local error in processing"),
    };
    match err.kind() {
        // The storage itself is in trouble: operators need to see it.
        // A transient failure the backend already retried until its budget
        // (`max_retries`, `retry_timeout_secs`) ran out: one WARN naming the
        // operation (the retries themselves are debug-level chatter).
        ErrorKind::Transient if retries_spent(&err.to_string()).is_some() => {
            let text = err.to_string();
            tracing::warn!(
                operation = text.split(": ").next().unwrap_or(""),
                retries = retries_spent(&text).unwrap_or(0),
                error = %err,
                code,
                "storage retries exhausted"
            )
        }
        ErrorKind::Transient | ErrorKind::Other | ErrorKind::InsufficientStorage => {
            tracing::warn!(error = %err, code, "storage error")
        }
        // An ordinary refusal caused by what the client asked for.
        _ => tracing::info!(error = %err, code, "storage refused"),
    }
    Reply::new(code, text)
}

/// The retries a failed request went through, from object_store's message
/// (`"…, after 3 retries, max_retries: 3, …"`; the S3 backend prefixes it with the
/// operation, `"stat /a: …"`). `None` when it was not retried.
fn retries_spent(text: &str) -> Option<u64> {
    let at = text.find(", after ")? + ", after ".len();
    let n = text[at..].split_once(" retries")?.0.parse().ok()?;
    (n > 0).then_some(n)
}

/// Maps a refused client path to 553 (RFC 959: "File name not allowed").
pub fn path_reply(err: &PathError) -> Reply {
    tracing::info!(error = %err, "path refused");
    Reply::new(
        code::NAME_NOT_ALLOWED,
        format!("File name not allowed: {err}"),
    )
}

/// 550 for an operation the user's permissions do not allow.
pub fn permission_denied() -> Reply {
    Reply::new(code::FILE_UNAVAILABLE, "Permission denied")
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
    fn retries_in_the_message() {
        assert_eq!(
            retries_spent(
                "list /: Error performing GET http://x/b in 2.1s, after 2 retries, \
                 max_retries: 2, retry_timeout: 2s  - HTTP error"
            ),
            Some(2)
        );
        assert_eq!(
            retries_spent("Error performing GET http://x in 1ms - status code: 404"),
            None
        );
        assert_eq!(retries_spent("x, after 0 retries, max_retries: 0"), None);
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
