//! Per-user limits shared by all sessions of one user: concurrent sessions
//! (`users.max_sessions`, 421 beyond it — RFC 959 §4.2 "421 Service not available,
//! closing control connection") and bandwidth (`users.upload_bytes_per_sec`,
//! `users.download_bytes_per_sec`): one token bucket per user and direction, so two
//! sessions of a user share the budget.
//!
//! The bucket is pure (time passed in) so it is unit-tested without sleeping; the
//! registry keys everything by user name, so a reload (SIGHUP) that changes a
//! user's limits applies from that user's next login on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::auth::User;

/// A token bucket of bytes: refilled at `rate` bytes per second up to `burst`;
/// a take larger than what is there runs into debt, and the taker waits until the
/// debt is paid back, so any chunk size is allowed and the long-run rate holds.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`: `rate` bytes per second, bursts of a tenth of a
    /// second (at least 16 KiB), so a 20 MiB transfer at 2 MiB/s takes ~10 s.
    pub fn new(rate: u64, now: Instant) -> Self {
        let rate = rate.max(1) as f64;
        let burst = (rate / 10.0).max(16.0 * 1024.0);
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// The configured rate in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate as u64
    }

    /// Takes `n` bytes at `now`; returns how long the caller must wait before
    /// sending them (zero while the bucket holds enough).
    pub fn take(&mut self, n: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// A user's shared bucket for one direction.
#[derive(Debug)]
pub struct Throttle {
    bucket: Mutex<TokenBucket>,
}

impl Throttle {
    /// Waits until `n` more bytes may pass; false if `cancel` fired first.
    pub async fn pass(&self, n: u64, cancel: &CancellationToken) -> bool {
        let wait = {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            b.take(n, Instant::now())
        };
        if wait.is_zero() {
            return true;
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }

    fn set_rate(&self, rate: u64) {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        if b.rate() != rate {
            *b = TokenBucket::new(rate, Instant::now());
        }
    }
}

/// Everything one user's sessions share.
#[derive(Debug, Default)]
struct UserState {
    sessions: usize,
    upload: Option<Arc<Throttle>>,
    download: Option<Arc<Throttle>>,
}

/// Per-user session counts and bandwidth buckets, keyed by user name.
#[derive(Debug, Default)]
pub struct UserLimits {
    users: Mutex<HashMap<String, UserState>>,
}

/// A logged-in session counted against its user's `max_sessions`; the count
/// goes down when this is dropped (logout, REIN, QUIT, error, panic alike).
pub struct UserSlot {
    limits: Arc<UserLimits>,
    name: String,
}

impl std::fmt::Debug for UserSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSlot")
            .field("user", &self.name)
            .finish()
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut users = self.limits.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = users.get_mut(&self.name) {
            s.sessions = s.sessions.saturating_sub(1);
            if s.sessions == 0 {
                users.remove(&self.name);
            }
        }
    }
}

/// The bandwidth buckets of a logged-in session (`None`: unlimited).
#[derive(Debug, Clone, Default)]
pub struct Throttles {
    /// STOR/APPE/STOU data (`users.upload_bytes_per_sec`).
    pub upload: Option<Arc<Throttle>>,
    /// RETR data (`users.download_bytes_per_sec`).
    pub download: Option<Arc<Throttle>>,
}

impl UserLimits {
    /// Counts a login of `user`: `None` when the user already has
    /// `users.max_sessions` sessions. The slot also carries the user's shared
    /// bandwidth buckets, set to the limits of this login's user entry.
    pub fn login(self: &Arc<Self>, user: &User) -> Option<(UserSlot, Throttles)> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let s = users.entry(user.name.clone()).or_default();
        if user.max_sessions.is_some_and(|max| s.sessions >= max) {
            if s.sessions == 0 {
                users.remove(&user.name);
            }
            return None;
        }
        s.sessions += 1;
        let throttle = |slot: &mut Option<Arc<Throttle>>, rate: Option<u64>| match rate {
            None => {
                *slot = None;
                None
            }
            Some(r) => {
                let t = slot.get_or_insert_with(|| {
                    Arc::new(Throttle {
                        bucket: Mutex::new(TokenBucket::new(r, Instant::now())),
                    })
                });
                t.set_rate(r);
                Some(t.clone())
            }
        };
        let throttles = Throttles {
            upload: throttle(&mut s.upload, user.upload_bytes_per_sec),
            download: throttle(&mut s.download, user.download_bytes_per_sec),
        };
        Some((
            UserSlot {
                limits: self.clone(),
                name: user.name.clone(),
            },
            throttles,
        ))
    }

    /// Logged-in sessions of `name` now.
    pub fn sessions(&self, name: &str) -> usize {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.get(name).map_or(0, |s| s.sessions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(max: Option<usize>, up: Option<u64>) -> User {
        User {
            permissions: Default::default(),
            upload_bytes_per_sec: up,
            max_sessions: max,
            ..User::from_config(&crate::config::UserConfig::new("u", "")).expect("a valid entry")
        }
    }

    #[test]
    fn bucket_holds_the_rate_over_time() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2 << 20, t0);
        // 20 MiB in 64 KiB chunks, each sent as soon as the bucket allows.
        let mut now = t0;
        for _ in 0..320 {
            now += b.take(64 << 10, now);
        }
        let secs = now.duration_since(t0).as_secs_f64();
        // The first 0.1 s worth comes from the initial burst.
        assert!((9.8..=10.0).contains(&secs), "{secs}");
    }

    #[test]
    fn bucket_refill_is_capped_by_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000 * 1024, t0);
        // An hour idle does not save up an hour of tokens.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.take(100 * 1024, later), Duration::ZERO);
        let wait = b.take(100 * 1024, later);
        assert!((wait.as_secs_f64() - 0.1).abs() < 0.001, "{wait:?}");
        // A big chunk runs into debt that the next take waits for too.
        let wait = b.take(1000 * 1024, later);
        assert!((wait.as_secs_f64() - 1.1).abs() < 0.001, "{wait:?}");
        // An earlier `now` (another taker's clock read) adds no tokens.
        assert!(b.take(0, t0) > Duration::ZERO);
    }

    #[test]
    fn two_takers_share_one_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1 << 20, t0);
        // Two sessions, each sending its next 1 MiB chunk when allowed: 4 MiB
        // in total take ~4 s, not ~2 s.
        let mut clocks = [t0, t0];
        for _ in 0..2 {
            for clock in clocks.iter_mut() {
                *clock += b.take(1 << 20, *clock);
            }
        }
        let end = clocks[0].max(clocks[1]).duration_since(t0).as_secs_f64();
        assert!((3.8..=4.1).contains(&end), "{end}");
    }

    #[test]
    fn session_slots_are_counted_and_released() {
        let limits = Arc::new(UserLimits::default());
        let u = user(Some(2), Some(1000));
        let a = limits.login(&u).unwrap();
        let b = limits.login(&u).unwrap();
        assert!(limits.login(&u).is_none());
        assert_eq!(limits.sessions("u"), 2);
        // Both sessions share one upload bucket.
        assert!(Arc::ptr_eq(
            a.1.upload.as_ref().unwrap(),
            b.1.upload.as_ref().unwrap()
        ));
        drop(a);
        let c = limits.login(&u).unwrap();
        // A panic while holding a slot still releases it.
        let l2 = limits.clone();
        let r = std::thread::spawn(move || {
            let _held = l2.login(&user(None, None));
            panic!("session task panicked");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(limits.sessions("u"), 2);
        drop((b, c));
        assert_eq!(limits.sessions("u"), 0);
        assert!(limits.users.lock().unwrap().is_empty());
        // Unlimited: no count refuses, no bucket.
        let free = user(None, None);
        let held: Vec<_> = (0..100).map(|_| limits.login(&free).unwrap()).collect();
        assert!(held[0].1.upload.is_none());
    }
}
