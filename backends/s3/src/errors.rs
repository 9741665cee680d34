//! The one place where object_store errors become [`ErrorKind`]s.
//!
//! object_store classifies 404, 409, 412, 403 and 401 itself; everything else arrives
//! as `Error::Generic` wrapping a private retry error, so the status code is read from
//! the message (`"status code: 503"`), and connection-level failures from the
//! `HttpError` in the source chain.

use std::error::Error as StdError;
use std::fmt;

use ftpgate_storage::{ErrorKind, StorageError};
use object_store::client::{HttpError, HttpErrorKind};

/// Converts an object_store error, prefixing the message with `context` (the
/// operation and the virtual path, e.g. `"stat /a/b"`).
pub(crate) fn map_error(context: impl fmt::Display, err: object_store::Error) -> StorageError {
    let kind = classify(&err);
    StorageError::new(kind, format!("{context}: {err}")).with_source(err)
}

/// The [`ErrorKind`] of an object_store error.
pub(crate) fn classify(err: &object_store::Error) -> ErrorKind {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => ErrorKind::AlreadyExists,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => ErrorKind::PermissionDenied,
        E::NotSupported { .. } | E::NotImplemented { .. } => ErrorKind::Unsupported,
        E::InvalidPath { .. } => ErrorKind::InvalidName,
        _ => classify_generic(err),
    }
}

fn classify_generic(err: &(dyn StdError + 'static)) -> ErrorKind {
    let mut text = String::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            match http.kind() {
                HttpErrorKind::Connect
                | HttpErrorKind::Request
                | HttpErrorKind::Timeout
                | HttpErrorKind::Interrupted => return ErrorKind::Transient,
                _ => {}
            }
        }
        text.push_str(&e.to_string());
        text.push('\n');
        cur = e.source();
    }
    if let Some(status) = status_code(&text) {
        return match status {
            404 => ErrorKind::NotFound,
            401 | 403 => ErrorKind::PermissionDenied,
            409 | 412 => ErrorKind::AlreadyExists,
            416 => ErrorKind::InvalidInput,
            408 | 429 | 500..=599 => ErrorKind::Transient,
            _ => ErrorKind::Other,
        };
    }
    const TRANSIENT_CODES: [&str; 6] = [
        "SlowDown",
        "Throttl",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "timed out",
    ];
    if TRANSIENT_CODES.iter().any(|c| text.contains(c)) {
        return ErrorKind::Transient;
    }
    ErrorKind::Other
}

/// Finds the HTTP status in object_store's `"non-2xx status code: 503 …"` message.
fn status_code(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    let digits: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(msg: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: msg.to_owned().into(),
        }
    }

    #[test]
    fn kinds() {
        let nf = object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        assert_eq!(classify(&nf), ErrorKind::NotFound);
        let pre = object_store::Error::Precondition {
            path: "x".into(),
            source: "etag".into(),
        };
        assert_eq!(classify(&pre), ErrorKind::AlreadyExists);
        let denied = object_store::Error::PermissionDenied {
            path: "x".into(),
            source: "403".into(),
        };
        assert_eq!(classify(&denied), ErrorKind::PermissionDenied);
        assert_eq!(
            classify(&generic(
                "Server returned non-2xx status code: 503 Service Unavailable: "
            )),
            ErrorKind::Transient
        );
        assert_eq!(
            classify(&generic(
                "Server returned non-2xx status code: 416 Range Not Satisfiable: "
            )),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            classify(&generic(
                "Server returned error response: <Code>SlowDown</Code>"
            )),
            ErrorKind::Transient
        );
        assert_eq!(classify(&generic("something odd")), ErrorKind::Other);
        let mapped = map_error("stat /a", nf);
        assert!(mapped.message().starts_with("stat /a: "), "{mapped}");
    }
}
