//! Brute-force defence across connections: failed logins are counted per client
//! IP within a window; too many ban the IP, each further ban twice as long up to a
//! maximum (RFC 2577 §"Protecting passwords" asks servers to limit attempts; a
//! per-connection limit alone lets an attacker simply reconnect).
//!
//! A client is an IPv4 address or an IPv6 network ([`client_key`]): one IPv6 host
//! usually owns a whole /64 and could otherwise take a fresh address per guess.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The address a client is counted under for bans and per-IP session caps: IPv4
/// (and IPv4-mapped IPv6, `::ffff:a.b.c.d`) as the address itself, IPv6 as its
/// network of `v6_prefix` bits (`server.ipv6_prefix_len`, /64 by default, the
/// smallest network RFC 4291 §2.5.4 gives one link).
pub fn client_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match crate::datachan::canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        v4 => v4,
    }
}

/// Entries kept at most; beyond it expired ones are dropped first.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
struct Entry {
    failures: u32,
    window_start: Instant,
    banned_until: Option<Instant>,
    /// Bans so far (the next one lasts `ban × 2^bans`).
    bans: u32,
    last_seen: Instant,
}

/// The ban table (in memory; a restart forgets it).
#[derive(Debug)]
pub struct Bans {
    after: u32,
    window: Duration,
    first: Duration,
    max: Duration,
    /// `server.ipv6_prefix_len`: IPv6 clients are keyed by this network.
    v6_prefix: u8,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

impl Bans {
    /// `after` failures within `window` ban for `first`, doubling up to `max`;
    /// `after == 0` disables bans.
    pub fn new(after: u32, window: Duration, first: Duration, max: Duration) -> Self {
        Self {
            after,
            window,
            first,
            max,
            v6_prefix: 128,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Counts IPv6 clients per network of `len` bits ([`client_key`]); default 128
    /// (per address) until set.
    pub fn with_ipv6_prefix(mut self, len: u8) -> Self {
        self.v6_prefix = len;
        self
    }

    /// The remaining ban of `ip`, if it is banned now.
    pub fn banned(&self, ip: IpAddr) -> Option<Duration> {
        let ip = client_key(ip, self.v6_prefix);
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let until = table.get(&ip)?.banned_until?;
        until.checked_duration_since(Instant::now())
    }

    /// How many client IPs are banned now.
    pub fn active(&self) -> usize {
        let now = Instant::now();
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .values()
            .filter(|e| e.banned_until.is_some_and(|u| u > now))
            .count()
    }

    /// Counts a failed login; `Some(length)` when this failure starts a ban.
    pub fn failure(&self, ip: IpAddr) -> Option<Duration> {
        if self.after == 0 {
            return None;
        }
        let ip = client_key(ip, self.v6_prefix);
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= MAX_ENTRIES && !table.contains_key(&ip) {
            let keep = self.window.max(self.max);
            table.retain(|_, e| {
                e.banned_until.is_some_and(|u| u > now) || now.duration_since(e.last_seen) < keep
            });
        }
        let e = table.entry(ip).or_insert(Entry {
            failures: 0,
            window_start: now,
            banned_until: None,
            bans: 0,
            last_seen: now,
        });
        e.last_seen = now;
        if now.duration_since(e.window_start) > self.window {
            e.failures = 0;
            e.window_start = now;
        }
        e.failures += 1;
        if e.failures < self.after {
            return None;
        }
        let factor = 1u32.checked_shl(e.bans.min(20)).unwrap_or(u32::MAX);
        let length = self.first.saturating_mul(factor).min(self.max);
        e.bans += 1;
        e.failures = 0;
        e.window_start = now;
        e.banned_until = Some(now + length);
        Some(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_grow_and_expire_per_ip() {
        let b = Bans::new(
            3,
            Duration::from_secs(60),
            Duration::from_millis(100),
            Duration::from_millis(250),
        );
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(b.failure(a), None);
        assert_eq!(b.failure(a), None);
        assert_eq!(b.failure(a), Some(Duration::from_millis(100)));
        assert!(b.banned(a).is_some());
        assert!(b.banned(other).is_none());
        assert_eq!(b.active(), 1);
        std::thread::sleep(Duration::from_millis(120));
        assert!(b.banned(a).is_none());
        assert_eq!(b.active(), 0);
        for _ in 0..2 {
            assert_eq!(b.failure(a), None);
        }
        assert_eq!(b.failure(a), Some(Duration::from_millis(200)));
        for _ in 0..2 {
            b.failure(a);
        }
        // Capped at the maximum.
        assert_eq!(b.failure(a), Some(Duration::from_millis(250)));
        let off = Bans::new(
            0,
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        for _ in 0..100 {
            assert_eq!(off.failure(a), None);
        }
    }

    #[test]
    fn client_keys() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_key(ip("192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(client_key(ip("2001:db8:1:2::9"), 48), ip("2001:db8:1::"));
        assert_eq!(client_key(ip("2001:db8::9"), 128), ip("2001:db8::9"));
        assert_eq!(client_key(ip("2001:db8::9"), 1), ip("::"));
        assert_eq!(client_key(ip("::1"), 64), ip("::"));
    }

    #[test]
    fn one_ipv6_network_is_one_client() {
        let b = Bans::new(
            2,
            Duration::from_secs(60),
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
        .with_ipv6_prefix(64);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(b.failure(ip("2001:db8:0:1::1")), None);
        assert!(b.failure(ip("2001:db8:0:1::2")).is_some());
        assert!(b.banned(ip("2001:db8:0:1:ffff::3")).is_some());
        assert!(b.banned(ip("2001:db8:0:2::1")).is_none());
        let v4 = Bans::new(
            1,
            Duration::from_secs(60),
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
        .with_ipv6_prefix(64);
        v4.failure(ip("::ffff:192.0.2.1"));
        assert!(v4.banned(ip("192.0.2.1")).is_some());
        assert!(v4.banned(ip("192.0.2.2")).is_none());
    }
}
