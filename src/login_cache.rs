//! Remembers successful password checks for a short time, so a client that logs
//! in again and again (rclone and lftp open a control connection per transfer,
//! ftpbench logs in 300 times) pays the argon2id/bcrypt cost once, not per login
//! (the same idea as SFTPGo's password caching).
//!
//! What is stored never contains the password: an entry's key is HMAC-SHA256
//! (RFC 2104) under a random key made at process start over the user name and
//! the password, and its value is a digest of the stored password hash it was
//! verified against plus the time it was verified. A hit needs the same name,
//! password and stored hash (a password changed in the users file no longer
//! matches) within `server.login_cache_secs`. Failures are never stored: a wrong
//! password always gets the full hash cost and the failure delay (RFC 2577
//! §"Protecting passwords"). The whole cache is dropped when the users are
//! reloaded (SIGHUP).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Most entries kept; beyond it the oldest is dropped.
pub const MAX_ENTRIES: usize = 10_000;

/// SHA-256 block size in bytes (RFC 2104 `B`).
const BLOCK: usize = 64;

/// HMAC-SHA256 of the length-prefixed `parts` (RFC 2104, RFC 4231). Each part is
/// preceded by its length, so ("ab", "c") and ("a", "bc") differ.
pub(crate) fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut k = [0u8; BLOCK];
    k[..32].copy_from_slice(key);
    hmac_raw(&k, parts, true)
}

/// HMAC-SHA256 with a key already padded to the block size; `prefixed`: each part
/// is preceded by its length as 8 bytes big-endian.
fn hmac_raw(k: &[u8; BLOCK], parts: &[&[u8]], prefixed: bool) -> [u8; 32] {
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    for p in parts {
        if prefixed {
            inner.update((p.len() as u64).to_be_bytes());
        }
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Values keyed by a 32-byte HMAC, each kept for `ttl` after it was added, at
/// most `max` of them (expired ones go first, then the oldest). Zero `ttl` or
/// `max`: holds nothing.
pub(crate) struct Timed<V> {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<[u8; 32], (V, Instant)>>,
}

impl<V: Clone> Timed<V> {
    /// An empty map.
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.max > 0
    }

    /// The value of `key` if it was added less than `ttl` before `now` and
    /// `valid` accepts it; otherwise the entry is dropped.
    pub(crate) fn get(
        &self,
        key: &[u8; 32],
        now: Instant,
        valid: impl Fn(&V) -> bool,
    ) -> Option<V> {
        if !self.enabled() {
            return None;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key) {
            Some((v, at)) if valid(v) && now.saturating_duration_since(*at) < self.ttl => {
                Some(v.clone())
            }
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Adds (or replaces) `key` at `now`, making room if full.
    pub(crate) fn insert(&self, key: [u8; 32], value: V, now: Instant) {
        if !self.enabled() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max && !entries.contains_key(&key) {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
            if entries.len() >= self.max {
                if let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.1).map(|(k, _)| *k) {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(key, (value, now));
    }

    /// Forgets every entry.
    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Number of entries held (expired ones included until they are purged).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Successful logins of the last `ttl`, keyed by HMAC(process key, user, password);
/// the value is a digest of the stored password hash the login was verified against.
pub struct LoginCache {
    key: [u8; 32],
    entries: Timed<[u8; 32]>,
}

impl LoginCache {
    /// A cache keeping successes for `ttl` (zero: off), at most `max` of them, with
    /// a fresh random HMAC key.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            key: rand::random(),
            entries: Timed::new(ttl, max),
        }
    }

    /// A cache that never remembers anything (`server.login_cache_secs = 0`).
    pub fn off() -> Self {
        Self::new(Duration::ZERO, 0)
    }

    fn entry_key(&self, user: &str, password: &str) -> [u8; 32] {
        hmac(&self.key, &[user.as_bytes(), password.as_bytes()])
    }

    fn hash_tag(&self, stored_hash: &str) -> [u8; 32] {
        hmac(&self.key, &[b"stored-hash", stored_hash.as_bytes()])
    }

    /// True if `user` logged in with `password` against `stored_hash` less than
    /// the cache's age ago (at `now`).
    pub fn hit(&self, user: &str, password: &str, stored_hash: &str, now: Instant) -> bool {
        let key = self.entry_key(user, password);
        let tag = self.hash_tag(stored_hash);
        // Dropped when expired, or when the password was changed since.
        self.entries.get(&key, now, |t| *t == tag).is_some()
    }

    /// Records a successful verification of `password` for `user` against
    /// `stored_hash` at `now`. Only call after the hash check passed.
    pub fn remember(&self, user: &str, password: &str, stored_hash: &str, now: Instant) {
        let key = self.entry_key(user, password);
        self.entries.insert(key, self.hash_tag(stored_hash), now);
    }

    /// Forgets every entry (the users were reloaded).
    pub fn clear(&self) {
        self.entries.clear();
    }

    /// Number of entries held (expired ones included until they are purged).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(secs: u64, max: usize) -> LoginCache {
        LoginCache::new(Duration::from_secs(secs), max)
    }

    #[test]
    fn hmac_matches_rfc4231() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut k = [0u8; BLOCK];
        k[..4].copy_from_slice(b"Jefe");
        let mac = hmac_raw(&k, &[b"what do ya want ", b"for nothing?"], false);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn remembers_only_the_same_user_password_and_hash() {
        let c = cache(300, 10);
        let t = Instant::now();
        assert!(!c.hit("bob", "pw", "$h1", t));
        c.remember("bob", "pw", "$h1", t);
        assert!(c.hit("bob", "pw", "$h1", t));
        assert!(!c.hit("bob", "pw2", "$h1", t));
        assert!(!c.hit("bo", "bpw", "$h1", t), "length-prefixed parts");
        assert!(!c.hit("alice", "pw", "$h1", t));
        // The password was changed: the stored hash differs, the entry is gone.
        assert!(!c.hit("bob", "pw", "$h2", t));
        assert!(c.is_empty());
    }

    #[test]
    fn entries_expire() {
        let c = cache(300, 10);
        let t = Instant::now();
        c.remember("bob", "pw", "$h", t);
        assert!(c.hit("bob", "pw", "$h", t + Duration::from_secs(299)));
        assert!(!c.hit("bob", "pw", "$h", t + Duration::from_secs(300)));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn size_is_bounded_oldest_first() {
        let c = cache(300, 3);
        let t = Instant::now();
        for i in 0..5u64 {
            c.remember(&format!("u{i}"), "pw", "$h", t + Duration::from_secs(i));
            assert!(c.len() <= 3);
        }
        let later = t + Duration::from_secs(5);
        assert!(!c.hit("u0", "pw", "$h", later));
        assert!(!c.hit("u1", "pw", "$h", later));
        assert!(c.hit("u2", "pw", "$h", later));
        assert!(c.hit("u4", "pw", "$h", later));
        // Expired entries make room before live ones are evicted.
        c.remember("late", "pw", "$h", t + Duration::from_secs(302 + 1));
        assert!(c.hit("u4", "pw", "$h", t + Duration::from_secs(303)));
        assert!(c.hit("late", "pw", "$h", t + Duration::from_secs(303)));
    }

    #[test]
    fn off_and_clear() {
        let t = Instant::now();
        let off = LoginCache::off();
        off.remember("bob", "pw", "$h", t);
        assert!(!off.hit("bob", "pw", "$h", t));
        let c = cache(300, 10);
        c.remember("bob", "pw", "$h", t);
        c.clear();
        assert!(!c.hit("bob", "pw", "$h", t));
    }

    #[test]
    fn keys_never_hold_the_password() {
        let c = cache(300, 10);
        let t = Instant::now();
        c.remember("bob", "hunter2-secret", "$h", t);
        let entries = c.entries.entries.lock().unwrap();
        let (key, entry) = entries.iter().next().unwrap();
        let needle = b"hunter2";
        for bytes in [&key[..], &entry.0[..]] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
        // A different process key gives a different entry key.
        let other = cache(300, 10);
        assert_ne!(
            *key,
            other.entry_key("bob", "hunter2-secret"),
            "keyed per process"
        );
        assert_eq!(*key, c.entry_key("bob", "hunter2-secret"));
    }
}
