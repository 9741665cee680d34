//! The mapping from [`VPath`]s to S3 keys and object_store [`Path`]s.
//!
//! A file `/a/b` is the key `{prefix}a/b`; the directory `/a` is the key prefix
//! `{prefix}a/` and its marker is the zero-byte object `{prefix}a/`. Segments are
//! copied verbatim (no percent-encoding): keys go through [`Path::parse`], never
//! `Path::from`, which would store `100%` as `100%25`.

use ftpgate_storage::{ErrorKind, StorageError, VPath};
use object_store::path::{Path, PathPart};

/// Maps virtual paths below the configured prefix to keys.
#[derive(Debug, Clone)]
pub struct Keys {
    /// `""` or the configured prefix with exactly one trailing `/` (`"ftp/site1/"`).
    prefix: String,
}

impl Keys {
    /// Normalises the configured prefix (surrounding slashes dropped) and checks it.
    pub fn new(prefix: Option<&str>) -> Result<Self, StorageError> {
        let trimmed = prefix.unwrap_or("").trim_matches('/');
        if trimmed.is_empty() {
            return Ok(Self {
                prefix: String::new(),
            });
        }
        Path::parse(trimmed).map_err(|e| {
            StorageError::new(
                ErrorKind::InvalidInput,
                format!("s3.prefix: {trimmed:?} is not a valid key prefix: {e}"),
            )
            .with_source(e)
        })?;
        Ok(Self {
            prefix: format!("{trimmed}/"),
        })
    }

    /// The key prefix of the root directory (`""` or `"ftp/site1/"`).
    pub fn root_prefix(&self) -> &str {
        &self.prefix
    }

    /// The object path of a file (or of a directory without its trailing slash).
    /// Segments that S3 keys via object_store cannot hold (control characters) are
    /// `InvalidName`. The root has no object path (`InvalidName` too).
    pub fn object(&self, path: &VPath) -> Result<Path, StorageError> {
        if path.is_root() {
            return Err(StorageError::new(
                ErrorKind::InvalidName,
                "/: the root is not an object",
            ));
        }
        if path.segments().next() == Some(crate::pending::PENDING_DIR) {
            return Err(StorageError::new(
                ErrorKind::InvalidName,
                format!(
                    "{path}: the name {} is reserved",
                    crate::pending::PENDING_DIR
                ),
            ));
        }
        let key = format!("{}{}", self.prefix, path.as_relative());
        Path::parse(&key).map_err(|e| {
            StorageError::new(
                ErrorKind::InvalidName,
                format!("{path}: name cannot be stored as an object key: {e}"),
            )
            .with_source(e)
        })
    }

    /// The listing prefix of a directory: its key with a trailing `/` (the root's is
    /// [`root_prefix`](Self::root_prefix)).
    pub fn dir_prefix(&self, path: &VPath) -> Result<String, StorageError> {
        if path.is_root() {
            return Ok(self.prefix.clone());
        }
        let mut key = String::from(self.object(path)?);
        key.push('/');
        Ok(key)
    }

    /// The path of a directory's zero-byte marker object `dir/`.
    ///
    /// `Path::parse` strips a trailing `/`, but joining an empty [`PathPart`] appends
    /// one, and the S3 client percent-encodes the raw string as it is, so the request
    /// goes to `…/dir/`.
    pub fn marker(&self, path: &VPath) -> Result<Path, StorageError> {
        Ok(self.object(path)?.join(PathPart::default()))
    }

    /// The entry name of a listed key (object location or common prefix) inside the
    /// directory listed with `dir_prefix`, or `None` for the directory's own marker and
    /// for anything that is not a valid single segment.
    pub fn entry_name<'a>(dir_prefix: &str, location: &'a str) -> Option<&'a str> {
        let name = location.strip_prefix(dir_prefix)?;
        let name = name.strip_suffix('/').unwrap_or(name);
        ftpgate_storage::validate_segment(name).ok()?;
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> VPath {
        VPath::parse(s).unwrap()
    }

    #[test]
    fn keys_are_verbatim() {
        let keys = Keys::new(Some("/ftp/site1/")).unwrap();
        let path = keys.object(&p("/dir #%+ ü/a b #1 %+ü.txt")).unwrap();
        assert_eq!(path.as_ref(), "ftp/site1/dir #%+ ü/a b #1 %+ü.txt");
        assert_eq!(
            keys.dir_prefix(&p("/d 1")).unwrap(),
            "ftp/site1/d 1/".to_owned()
        );
        assert_eq!(keys.dir_prefix(&VPath::root()).unwrap(), "ftp/site1/");
        assert_eq!(keys.marker(&p("/x/y")).unwrap().as_ref(), "ftp/site1/x/y/");
    }

    #[test]
    fn no_prefix() {
        let keys = Keys::new(None).unwrap();
        assert_eq!(keys.object(&p("/a/%41")).unwrap().as_ref(), "a/%41");
        assert_eq!(keys.dir_prefix(&VPath::root()).unwrap(), "");
        assert_eq!(keys.marker(&p("/a")).unwrap().as_ref(), "a/");
        assert_eq!(Keys::new(Some("//")).unwrap().root_prefix(), "");
    }

    #[test]
    fn control_characters_are_invalid_names() {
        let keys = Keys::new(None).unwrap();
        let err = keys.object(&p("/tab\there")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidName);
        assert!(Keys::new(Some("a/../b")).is_err());
        assert!(Keys::new(Some("a//b")).is_err());
    }

    #[test]
    fn entry_names() {
        assert_eq!(Keys::entry_name("d/", "d/f"), Some("f"));
        assert_eq!(Keys::entry_name("d/", "d/sub/"), Some("sub"));
        assert_eq!(Keys::entry_name("d/", "d"), None, "the marker");
        assert_eq!(Keys::entry_name("d/", "d/"), None, "the marker");
        assert_eq!(Keys::entry_name("", "x"), Some("x"));
        assert_eq!(Keys::entry_name("", "a\\b"), None);
    }
}
