//! User metadata that ftpgate keeps with an object, and the small caches that save
//! requests.
//!
//! - `mtime`: the modification time set by MFMT / `SITE UTIME`, as seconds since the
//!   Unix epoch with nine decimals (`1600000000.000000000`), the format and key rclone's
//!   own S3 backend uses (`x-amz-meta-mtime`), so both tools see the same times.
//! - `sha256`: the hex SHA-256 of the content, computed by the FTP layer while the
//!   upload streamed and written with the object (single PUT, and rewrites).
//!
//! ListObjectsV2 returns no user metadata, so listings learn an object's `mtime` from a
//! HEAD. [`MetaCache`] remembers what a HEAD (or GET) returned per key together with
//! the object's ETag and LastModified; an entry is used only while a listing reports
//! the same ETag and LastModified, so it can never be stale (any write to an object,
//! including a metadata rewrite, changes its LastModified).
//! [`DirCache`] remembers for a few seconds which directories were seen to exist, so an
//! upload does not list its parent before every PUT.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::{Attribute, AttributeValue, Attributes, ObjectMeta};

/// The user-metadata key of the modification time (`x-amz-meta-mtime`).
pub(crate) const MTIME: &str = "mtime";
/// The user-metadata key of the content's SHA-256 (`x-amz-meta-sha256`).
pub(crate) const SHA256: &str = "sha256";

/// Most keys [`MetaCache`] holds before it starts over (~100 bytes each).
const META_CACHE_MAX: usize = 100_000;
/// How long [`DirCache`] trusts that a directory exists.
pub(crate) const DIR_TTL: Duration = Duration::from_secs(10);
/// Most directories [`DirCache`] holds before it starts over.
const DIR_CACHE_MAX: usize = 10_000;

/// Bounds a cache map before an insert: at `max` entries the ones `keep` rejects
/// (expired) are dropped, and if it is still full, all of them.
pub(crate) fn make_room<K, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    keep: impl FnMut(&K, &mut V) -> bool,
) {
    if map.len() >= max {
        map.retain(keep);
        if map.len() >= max {
            map.clear();
        }
    }
}

/// The attribute key for user metadata `name`.
pub(crate) fn key(name: &'static str) -> Attribute {
    Attribute::Metadata(name.into())
}

/// `mtime` in rclone's format: seconds, a dot, nine digits of nanoseconds.
pub(crate) fn format_mtime(t: SystemTime) -> AttributeValue {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos()).into()
}

/// Sets (or replaces) the `mtime` of `attrs` to `t`.
pub(crate) fn set_mtime(attrs: &mut Attributes, t: SystemTime) {
    attrs.insert(key(MTIME), format_mtime(t));
}

/// The latest `mtime` accepted: 9999-12-31T23:59:59Z, the last time an FTP time-val
/// (RFC 3659 §2.3, four-digit year) can show. Anything later is ignored.
pub(crate) const MAX_MTIME_SECS: u64 = 253_402_300_799;

/// Parses an `mtime` value (`secs[.fraction]`); `None` for anything else, including
/// times after [`MAX_MTIME_SECS`] (other S3 clients can store any text, e.g.
/// `99999999999999`): the object's LastModified is used instead.
pub(crate) fn parse_mtime(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs.parse().ok()?;
    if secs > MAX_MTIME_SECS {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        digits.parse::<u32>().ok()?
    };
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// The stored `mtime`, if any.
pub(crate) fn mtime_of(attrs: &Attributes) -> Option<SystemTime> {
    attrs.get(&key(MTIME)).and_then(|v| parse_mtime(v))
}

/// The stored SHA-256, if any and well-formed.
pub(crate) fn sha256_of(attrs: &Attributes) -> Option<[u8; 32]> {
    let v = attrs.get(&key(SHA256))?;
    parse_hex32(v)
}

/// Lower-case hex of a digest.
pub(crate) fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim().as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// What a HEAD told about one object version.
#[derive(Clone)]
struct Seen {
    e_tag: Option<String>,
    last_modified: i64,
    mtime: Option<SystemTime>,
}

/// Stored `mtime`s per key, valid only for the object version (ETag + LastModified)
/// they were read from.
#[derive(Default)]
pub(crate) struct MetaCache {
    map: Mutex<HashMap<String, Seen>>,
}

fn version(meta: &ObjectMeta) -> (Option<String>, i64) {
    (
        meta.e_tag.clone(),
        meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
    )
}

impl MetaCache {
    /// Records what a HEAD or GET returned.
    pub(crate) fn remember(&self, meta: &ObjectMeta, attrs: &Attributes) {
        let (e_tag, last_modified) = version(meta);
        let seen = Seen {
            e_tag,
            last_modified,
            mtime: mtime_of(attrs),
        };
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= META_CACHE_MAX {
                map.clear();
            }
            map.insert(meta.location.to_string(), seen);
        }
    }

    /// Drops what is known about `location` (its metadata was just replaced; a
    /// server-side copy can keep both ETag and LastModified second).
    pub(crate) fn forget(&self, location: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(location);
        }
    }

    /// `Some(mtime)` (itself optional) when this exact version was seen before.
    pub(crate) fn lookup(&self, meta: &ObjectMeta) -> Option<Option<SystemTime>> {
        let (e_tag, last_modified) = version(meta);
        let map = self.map.lock().ok()?;
        let seen = map.get(meta.location.as_ref())?;
        (seen.e_tag == e_tag && seen.last_modified == last_modified).then_some(seen.mtime)
    }
}

/// Directory prefixes recently seen to exist.
#[derive(Default)]
pub(crate) struct DirCache {
    map: Mutex<HashMap<String, Instant>>,
}

impl DirCache {
    /// True when `prefix` was seen to exist less than [`DIR_TTL`] ago.
    pub(crate) fn known(&self, prefix: &str) -> bool {
        self.map
            .lock()
            .ok()
            .and_then(|m| m.get(prefix).map(|t| t.elapsed() < DIR_TTL))
            .unwrap_or(false)
    }

    /// Notes that `prefix` exists now.
    pub(crate) fn remember(&self, prefix: &str) {
        if let Ok(mut map) = self.map.lock() {
            make_room(&mut map, DIR_CACHE_MAX, |_, t| t.elapsed() < DIR_TTL);
            map.insert(prefix.to_owned(), Instant::now());
        }
    }

    /// Forgets `prefix` and every directory below it (after RMD).
    pub(crate) fn forget_under(&self, prefix: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.retain(|k, _| !k.starts_with(prefix));
        }
    }
}

/// Keys with a multipart upload of this process in progress, counted (two sessions
/// may upload the same name).
#[derive(Default)]
pub(crate) struct ActiveUploads {
    map: Mutex<HashMap<String, usize>>,
}

impl ActiveUploads {
    /// Notes an upload of `key`; it counts until the guard is dropped.
    pub(crate) fn start(self: &std::sync::Arc<Self>, key: &str) -> ActiveGuard {
        if let Ok(mut map) = self.map.lock() {
            *map.entry(key.to_owned()).or_default() += 1;
        }
        ActiveGuard {
            uploads: std::sync::Arc::clone(self),
            key: key.to_owned(),
        }
    }

    /// Whether an upload of `key` is in progress.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.map.lock().is_ok_and(|m| m.contains_key(key))
    }
}

/// Ends one upload's entry in [`ActiveUploads`] when dropped.
pub(crate) struct ActiveGuard {
    uploads: std::sync::Arc<ActiveUploads>,
    key: String,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.uploads.map.lock() {
            if let Some(n) = map.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.key);
                }
            }
        }
    }
}

/// How long [`WrittenCache`] keeps what the gateway itself just wrote.
pub(crate) const WRITTEN_TTL: Duration = Duration::from_secs(60);

/// What the gateway itself wrote to a key: the ETag S3 answered and the metadata
/// sent. MFMT right after an upload (rclone sends it after every file) then needs
/// no HEAD: its CopyObject is conditional on this ETag, so a stale entry only costs
/// a 412 and a retry with a HEAD.
#[derive(Default)]
pub(crate) struct WrittenCache {
    map: Mutex<HashMap<String, (Instant, String, Attributes)>>,
}

impl WrittenCache {
    /// Notes a completed write of `location`.
    pub(crate) fn remember(&self, location: &str, e_tag: Option<&str>, attributes: &Attributes) {
        let Some(tag) = e_tag else {
            return;
        };
        if let Ok(mut map) = self.map.lock() {
            make_room(&mut map, DIR_CACHE_MAX, |_, (t, _, _)| {
                t.elapsed() < WRITTEN_TTL
            });
            map.insert(
                location.to_owned(),
                (Instant::now(), tag.to_owned(), attributes.clone()),
            );
        }
    }

    /// The ETag and metadata of a recent own write of `location`.
    pub(crate) fn get(&self, location: &str) -> Option<(String, Attributes)> {
        let map = self.map.lock().ok()?;
        let (at, tag, attributes) = map.get(location)?;
        (at.elapsed() < WRITTEN_TTL).then(|| (tag.clone(), attributes.clone()))
    }

    /// Forgets `location` (deleted or renamed).
    pub(crate) fn forget(&self, location: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(location);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtime_round_trips_in_rclone_format() {
        let t = UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
        let v = format_mtime(t);
        assert_eq!(&*v, "1600000000.123456789");
        assert_eq!(parse_mtime(&v), Some(t));
        assert_eq!(
            parse_mtime("1600000000.5"),
            Some(UNIX_EPOCH + Duration::new(1_600_000_000, 500_000_000))
        );
        assert_eq!(
            parse_mtime("1600000000"),
            Some(UNIX_EPOCH + Duration::from_secs(1_600_000_000))
        );
        assert_eq!(parse_mtime("x"), None);
        assert_eq!(parse_mtime("1.2e3"), None);
        assert_eq!(parse_mtime("-5"), None);
        assert_eq!(parse_mtime("99999999999999"), None);
        assert_eq!(parse_mtime("18446744073709551615.5"), None);
        assert!(parse_mtime("253402300799.999999999").is_some());
        assert_eq!(parse_mtime("253402300800"), None);
    }

    #[test]
    fn sha256_hex_round_trips() {
        let d = [0xabu8; 32];
        assert_eq!(parse_hex32(&hex(&d)), Some(d));
        assert_eq!(parse_hex32("zz"), None);
        assert_eq!(parse_hex32(&"g".repeat(64)), None);
    }
}
