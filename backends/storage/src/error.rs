//! The one error type every backend returns: a small set of kinds that the FTP
//! layer maps to reply codes in exactly one place (`ftpgate::errors`).

use std::fmt;

/// Boxed source error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, in terms the FTP layer can answer honestly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The path does not exist (FTP 550).
    NotFound,
    /// The target exists already (MKD of an existing directory, STOU collision; 550/553).
    AlreadyExists,
    /// A path segment that must be a directory is a file (550).
    NotADirectory,
    /// A file operation was aimed at a directory (550).
    IsADirectory,
    /// RMD of a directory that still has entries (550).
    DirectoryNotEmpty,
    /// The backend refused access (550).
    PermissionDenied,
    /// No space left, quota exceeded (452 / 552).
    InsufficientStorage,
    /// The name cannot be stored by this backend (553).
    InvalidName,
    /// An argument is out of range, e.g. a read offset beyond the end (554).
    InvalidInput,
    /// The backend cannot do this at all (502 / 504).
    Unsupported,
    /// A failure that may pass: network, throttling, timeouts (451).
    Transient,
    /// Anything else (451).
    Other,
}

/// A storage failure: a kind, a message for logs and replies, an optional source.
pub struct StorageError {
    kind: ErrorKind,
    message: String,
    source: Option<BoxError>,
}

/// Result alias for backend calls.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    /// A new error of `kind` with a human-readable message (lowercase, no period).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind, for mapping to a reply code.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the source chain.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, format!("{what}: not found"))
    }

    /// Shorthand for [`ErrorKind::Unsupported`].
    pub fn unsupported(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, what)
    }

    /// `PermissionDenied` for an operation that can never apply to the root
    /// (`rmdir /`, `rename /`).
    pub fn root_refused(what: &str) -> Self {
        Self::new(
            ErrorKind::PermissionDenied,
            format!("/: cannot {what} the root"),
        )
    }

    /// Converts an I/O error, classifying it by its `io::ErrorKind` and errno.
    pub fn from_io(context: impl fmt::Display, err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::AlreadyExists,
            K::PermissionDenied => ErrorKind::PermissionDenied,
            K::NotADirectory => ErrorKind::NotADirectory,
            K::IsADirectory => ErrorKind::IsADirectory,
            K::DirectoryNotEmpty => ErrorKind::DirectoryNotEmpty,
            K::StorageFull | K::QuotaExceeded | K::FileTooLarge => ErrorKind::InsufficientStorage,
            K::InvalidFilename => ErrorKind::InvalidName,
            K::InvalidInput => ErrorKind::InvalidInput,
            K::Unsupported => ErrorKind::Unsupported,
            K::TimedOut | K::Interrupted | K::WouldBlock => ErrorKind::Transient,
            _ => ErrorKind::Other,
        };
        Self::new(kind, format!("{context}: {err}")).with_source(err)
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("StorageError");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl From<crate::PathError> for StorageError {
    fn from(e: crate::PathError) -> Self {
        Self::new(ErrorKind::InvalidName, e.to_string()).with_source(e)
    }
}
