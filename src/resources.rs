//! Process resources: the open-file limit and giving freed heap memory back.
//!
//! Every session holds one descriptor for its control connection and up to two
//! more for a transfer, so the common default soft limit of 1024 open files caps
//! a server at a few hundred sessions (accept fails with EMFILE). At start the
//! soft limit is raised to the hard limit, as nginx's `worker_rlimit_nofile`
//! and most servers do; the hard limit is the administrator's word.
//!
//! glibc's allocator keeps freed memory inside its heaps: after a burst of
//! sessions or transfers ends, free chunks scattered between live ones stay
//! resident (measured: 121 MB 60 s after a 500-session soak that began at
//! 10 MB). [`trim_when_idle`] hands whole free pages back with `malloc_trim(0)`
//! once the heap holds a lot of free memory and the number of sessions has
//! fallen, so memory comes back after load without trimming during it.

use std::time::Duration;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns (old soft, new
/// soft), or an error text; unchanged limits return equal values.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
pub fn raise_nofile_limit() -> Result<(u64, u64), String> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
        }
        let old = lim.rlim_cur;
        if lim.rlim_cur >= lim.rlim_max {
            return Ok((old as u64, old as u64));
        }
        let new = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `new` is a valid rlimit; only the soft limit changes.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
            return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
        }
        Ok((old as u64, new.rlim_cur as u64))
    }
    #[cfg(not(unix))]
    {
        Err("not supported on this platform".into())
    }
}

/// Raises the open-file limit and logs the outcome (one info line: old, new).
pub fn raise_nofile_limit_logged() {
    match raise_nofile_limit() {
        Ok((old, new)) if old != new => {
            tracing::info!(old, new, "open files limit raised to the hard limit")
        }
        Ok((old, _)) => {
            tracing::info!(old, new = old, "open files limit already at the hard limit")
        }
        Err(e) => tracing::warn!(error = %e, "open files limit not raised"),
    }
}

/// Bytes (free, in use) inside the allocator's heaps (glibc only).
pub fn heap_free_bytes() -> Option<(u64, u64)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads allocator statistics.
        let mi = unsafe { libc::mallinfo2() };
        Some((mi.fordblks as u64, mi.uordblks as u64))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Gives free heap pages back to the system (glibc `malloc_trim(0)`); false where
/// there is no such call.
pub fn trim_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim is thread-safe and only releases free memory.
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Free heap memory worth giving back.
const TRIM_ABOVE: u64 = 8 * 1024 * 1024;

/// Whether to trim now: the heap holds more than [`TRIM_ABOVE`] free bytes, and
/// either the session count is at most half its peak since the last trim (load
/// has ended or dropped) or the free bytes exceed a quarter of those in use
/// (bursts of logins leave holes between the sessions that stay).
pub fn should_trim(free: u64, used: u64, sessions: u64, peak_since_trim: u64) -> bool {
    free > TRIM_ABOVE && (sessions * 2 <= peak_since_trim || free > used / 4)
}

/// Every `every`, trims the heap when [`should_trim`] says so; `sessions` reads
/// the number of open sessions. Runs until the runtime stops.
pub async fn trim_when_idle(every: Duration, sessions: impl Fn() -> u64) {
    let mut peak = 0u64;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = sessions();
        peak = peak.max(now);
        let Some((free, used)) = heap_free_bytes() else {
            return;
        };
        if should_trim(free, used, now, peak) {
            // Walks the heaps; a few ms at most, so off the async workers.
            let _ = tokio::task::spawn_blocking(trim_heap).await;
            let after = heap_free_bytes().map_or(0, |(f, _)| f);
            tracing::debug!(free, after, sessions = now, "heap trimmed");
            peak = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_when_load_has_dropped_and_much_is_free() {
        let mib = 1024 * 1024;
        let used = 400 * mib;
        assert!(!should_trim(4 * mib, used, 0, 500), "little free memory");
        assert!(should_trim(64 * mib, used, 0, 500));
        assert!(should_trim(64 * mib, used, 0, 0));
        assert!(should_trim(64 * mib, used, 200, 500), "load halved");
        assert!(!should_trim(64 * mib, used, 400, 500), "load still high");
        assert!(should_trim(64 * mib, 200 * mib, 400, 500), "many holes");
    }

    #[test]
    fn nofile_limit_reaches_the_hard_limit() {
        let (old, new) = raise_nofile_limit().unwrap();
        assert!(new >= old);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid out-pointer.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
        assert_eq!(lim.rlim_cur, new);
    }
}
