//! The one place where object_store errors become [`ErrorKind`]s, by type only.
//!
//! object_store classifies 404, 409, 412, 403 and 401 itself. Every other failed
//! request arrives as `Error::Generic` whose source chain holds an [`HttpError`]
//! (a public type with a kind); for error statuses the transport (`http`) made that
//! `HttpError`'s source an [`S3Status`] with the status and S3's error code. No
//! message text is read.

use std::error::Error as StdError;
use std::fmt;

use ftpgate_storage::{ErrorKind, StorageError};
use object_store::client::{HttpError, HttpErrorKind};

use crate::http::{S3Status, Stalled};

/// Converts an object_store error, prefixing the message with `context` (the
/// operation and the virtual path, e.g. `"stat /a/b"`).
pub fn map_error(context: impl fmt::Display, err: object_store::Error) -> StorageError {
    let kind = classify(&err);
    StorageError::new(kind, format!("{context}: {err}")).with_source(err)
}

/// The [`ErrorKind`] of an object_store error.
pub fn classify(err: &object_store::Error) -> ErrorKind {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => ErrorKind::AlreadyExists,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => ErrorKind::PermissionDenied,
        E::NotSupported { .. } | E::NotImplemented { .. } => ErrorKind::Unsupported,
        E::InvalidPath { .. } => ErrorKind::InvalidName,
        _ => chain_kind(err).unwrap_or(ErrorKind::Other),
    }
}

/// The S3 status in an error's source chain, if any.
pub(crate) fn s3_status<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a S3Status> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(s) = e.downcast_ref::<S3Status>() {
            return Some(s);
        }
        cur = e.source();
    }
    None
}

/// The kind told by an [`S3Status`] (preferred) or an [`HttpError`] in the chain.
fn chain_kind(err: &(dyn StdError + 'static)) -> Option<ErrorKind> {
    if let Some(s) = s3_status(err) {
        return Some(status_kind(s));
    }
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return Some(transport_kind(http.kind()));
        }
        if e.downcast_ref::<Stalled>().is_some() {
            return Some(ErrorKind::Transient);
        }
        cur = e.source();
    }
    None
}

/// The kind of an S3 error status.
pub(crate) fn status_kind(s: &S3Status) -> ErrorKind {
    if s.retryable() {
        return ErrorKind::Transient;
    }
    match s.status {
        404 => ErrorKind::NotFound,
        401 | 403 => ErrorKind::PermissionDenied,
        409 | 412 => ErrorKind::AlreadyExists,
        416 => ErrorKind::InvalidInput,
        501 => ErrorKind::Unsupported,
        _ => ErrorKind::Other,
    }
}

fn transport_kind(kind: HttpErrorKind) -> ErrorKind {
    match kind {
        HttpErrorKind::Connect
        | HttpErrorKind::Request
        | HttpErrorKind::Timeout
        | HttpErrorKind::Interrupted => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

/// The [`ErrorKind`] of a failed typed request (`requests`).
pub(crate) fn http_error_kind(err: &HttpError) -> ErrorKind {
    chain_kind(err).unwrap_or_else(|| transport_kind(err.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(source: impl StdError + Send + Sync + 'static) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(source),
        }
    }

    fn status(code: u16, s3: &str) -> object_store::Error {
        generic(HttpError::new(
            HttpErrorKind::Unknown,
            S3Status {
                status: code,
                code: s3.into(),
                message: String::new(),
            },
        ))
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
        assert_eq!(classify(&status(503, "")), ErrorKind::Transient);
        assert_eq!(
            classify(&status(416, "InvalidRange")),
            ErrorKind::InvalidInput
        );
        assert_eq!(classify(&status(400, "SlowDown")), ErrorKind::Transient);
        assert_eq!(classify(&status(404, "NoSuchBucket")), ErrorKind::NotFound);
        assert_eq!(
            classify(&generic(HttpError::new(
                HttpErrorKind::Timeout,
                Stalled::Download(std::time::Duration::from_secs(1))
            ))),
            ErrorKind::Transient
        );
        // Text is never read: a message that merely mentions a status is Other.
        let text = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code: 503".into(),
        };
        assert_eq!(classify(&text), ErrorKind::Other);
        let mapped = map_error("stat /a", nf);
        assert!(mapped.message().starts_with("stat /a: "), "{mapped}");
    }
}
