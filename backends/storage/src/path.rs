//! The virtual path: the only way an FTP handler names something in storage.
//!
//! A [`VPath`] is absolute, normalised (no `.`, `..`, empty segments) and made of
//! validated segments. Resolving a client argument against the current directory
//! clamps `..` at the root, the way a chroot does, so no sequence of segments can
//! name anything above the root a session was given (RFC 2577 §"Restricting access").

use std::fmt;

/// Longest accepted segment, in bytes (the common `NAME_MAX`).
pub const MAX_SEGMENT_LEN: usize = 255;
/// Longest accepted path, in bytes (the common `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;

/// Why a client-supplied path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// NUL bytes never belong in a name (RFC 959 §3.2 reserves them for encoding LF).
    #[error("path contains a NUL byte")]
    Nul,
    /// CR or LF inside a name would let a client forge replies or listing lines.
    #[error("path contains a line break")]
    LineBreak,
    /// Backslashes are refused so Windows-style `\..\` can never be reinterpreted.
    #[error("path contains a backslash")]
    Backslash,
    /// A segment longer than [`MAX_SEGMENT_LEN`] bytes.
    #[error("path segment is longer than {MAX_SEGMENT_LEN} bytes")]
    SegmentTooLong,
    /// A path longer than [`MAX_PATH_LEN`] bytes.
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// The argument was empty where a name is required.
    #[error("empty path")]
    Empty,
    /// The path names the root where a file name is required.
    #[error("path has no file name")]
    NoFileName,
}

/// An absolute, normalised path inside a backend or inside a user's home.
///
/// Displayed as `/a/b`; the root displays as `/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct VPath {
    segments: Vec<String>,
}

/// Checks one segment: no NUL, CR, LF, `/`, `\`, not empty, not `.`/`..`, not too long.
pub fn validate_segment(seg: &str) -> Result<(), PathError> {
    if seg.is_empty() || seg == "." || seg == ".." || seg.contains('/') {
        return Err(PathError::Empty);
    }
    check_chars(seg)?;
    if seg.len() > MAX_SEGMENT_LEN {
        return Err(PathError::SegmentTooLong);
    }
    Ok(())
}

fn check_chars(s: &str) -> Result<(), PathError> {
    for c in s.chars() {
        match c {
            '\0' => return Err(PathError::Nul),
            '\r' | '\n' => return Err(PathError::LineBreak),
            '\\' => return Err(PathError::Backslash),
            _ => {}
        }
    }
    Ok(())
}

impl VPath {
    /// The root `/`.
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses an absolute path from configuration (`home = "/scans"`); a relative
    /// one is taken from the root.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        Self::root().resolve(s)
    }

    /// Resolves a client argument against `self` (the current directory), RFC 959
    /// §4.1.1: a path starting with `/` is absolute, anything else is relative.
    /// `.` and empty segments are dropped; `..` removes one segment and stops at
    /// the root, so the result can never leave the root.
    pub fn resolve(&self, input: &str) -> Result<Self, PathError> {
        if input.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        check_chars(input)?;
        let mut segments = if input.starts_with('/') {
            Vec::new()
        } else {
            self.segments.clone()
        };
        for seg in input.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => {
                    if s.len() > MAX_SEGMENT_LEN {
                        return Err(PathError::SegmentTooLong);
                    }
                    segments.push(s.to_owned());
                }
            }
        }
        let out = Self { segments };
        if out.byte_len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        Ok(out)
    }

    /// Appends one validated segment.
    pub fn child(&self, name: &str) -> Result<Self, PathError> {
        validate_segment(name)?;
        let mut segments = self.segments.clone();
        segments.push(name.to_owned());
        Ok(Self { segments })
    }

    /// `self` followed by every segment of `rest` (a home joined with a session path).
    pub fn join(&self, rest: &VPath) -> Self {
        let mut segments = self.segments.clone();
        segments.extend(rest.segments.iter().cloned());
        Self { segments }
    }

    /// The path without `prefix`, or `None` when `prefix` is not an ancestor-or-self.
    pub fn strip_prefix(&self, prefix: &VPath) -> Option<Self> {
        self.segments
            .strip_prefix(prefix.segments.as_slice())
            .map(|rest| Self {
                segments: rest.to_vec(),
            })
    }

    /// True when `prefix` is this path or one of its ancestors.
    pub fn starts_with(&self, prefix: &VPath) -> bool {
        self.segments.starts_with(&prefix.segments)
    }

    /// The parent directory; `None` for the root.
    pub fn parent(&self) -> Option<Self> {
        if self.segments.is_empty() {
            return None;
        }
        Some(Self {
            segments: self.segments[..self.segments.len() - 1].to_vec(),
        })
    }

    /// The last segment; `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        self.segments.last().map(String::as_str)
    }

    /// The last segment, or [`PathError::NoFileName`] for the root.
    pub fn require_file_name(&self) -> Result<&str, PathError> {
        self.file_name().ok_or(PathError::NoFileName)
    }

    /// True for `/`.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The segments, root first.
    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.segments.iter().map(String::as_str)
    }

    /// Number of segments (0 for the root).
    pub fn depth(&self) -> usize {
        self.segments.len()
    }

    /// The path relative to the root, without a leading slash (`a/b`; empty for `/`).
    pub fn as_relative(&self) -> String {
        self.segments.join("/")
    }

    fn byte_len(&self) -> usize {
        self.segments.iter().map(|s| s.len() + 1).sum()
    }
}

impl fmt::Display for VPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segments {
            write!(f, "/{s}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for VPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VPath({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cwd: &str, input: &str) -> Result<String, PathError> {
        VPath::parse(cwd)
            .unwrap()
            .resolve(input)
            .map(|p| p.to_string())
    }

    #[test]
    fn absolute_and_relative() {
        assert_eq!(r("/a", "b").unwrap(), "/a/b");
        assert_eq!(r("/a", "/b").unwrap(), "/b");
        assert_eq!(r("/a", "").unwrap(), "/a");
        assert_eq!(r("/", "x//y/./z/").unwrap(), "/x/y/z");
    }

    #[test]
    fn dotdot_clamps_at_root() {
        assert_eq!(r("/a/b", "..").unwrap(), "/a");
        assert_eq!(r("/a", "../../..").unwrap(), "/");
        assert_eq!(r("/", "../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(r("/a", "/../../b").unwrap(), "/b");
        assert_eq!(r("/a/b/c", "../../../../x/../y").unwrap(), "/y");
    }

    #[test]
    fn hostile_characters_refused() {
        assert_eq!(r("/", "a\0b"), Err(PathError::Nul));
        assert_eq!(r("/", "a\rb"), Err(PathError::LineBreak));
        assert_eq!(r("/", "a\nb"), Err(PathError::LineBreak));
        assert_eq!(r("/", "..\\..\\etc"), Err(PathError::Backslash));
        assert_eq!(r("/", &"x".repeat(256)), Err(PathError::SegmentTooLong));
        assert_eq!(r("/", &"x/".repeat(3000)), Err(PathError::TooLong));
    }

    #[test]
    fn percent_forms_stay_literal() {
        // No percent-decoding happens: `%2e%2e` is an ordinary name inside the root.
        assert_eq!(r("/a", "%2e%2e/x").unwrap(), "/a/%2e%2e/x");
    }

    #[test]
    fn join_strip_parent() {
        let home = VPath::parse("/home/u").unwrap();
        let p = VPath::parse("/x/y").unwrap();
        let full = home.join(&p);
        assert_eq!(full.to_string(), "/home/u/x/y");
        assert_eq!(full.strip_prefix(&home).unwrap(), p);
        assert!(full.starts_with(&home));
        assert_eq!(p.parent().unwrap().to_string(), "/x");
        assert_eq!(VPath::root().parent(), None);
        assert_eq!(p.file_name(), Some("y"));
        assert_eq!(p.as_relative(), "x/y");
    }

    #[test]
    fn child_validates() {
        let root = VPath::root();
        assert!(root.child("..").is_err());
        assert!(root.child("a/b").is_err());
        assert!(root.child("").is_err());
        assert_eq!(root.child("ok name #%").unwrap().to_string(), "/ok name #%");
    }
}
