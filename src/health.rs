//! Backend health, checked in the background so that `/readyz` answers from state
//! the process already has, within milliseconds, and never waits on storage.
//!
//! Every `server.backend_check_interval_secs` each backend's `check` runs (bounded
//! by the same interval). The result sets `ftpgate_backend_up{backend}`; the first
//! failure logs one WARN line (sessions on that backend get 451 meanwhile), the first
//! success after failures one INFO line with the outage's length. Readiness follows
//! a backend only after it has failed for `server.backend_unready_after_secs`: one
//! bucket shared by every replica fails on all of them at once, and a short stall
//! must not leave the load balancer without any server (that turns a slow backend
//! into a total outage; sessions that do not touch storage keep working).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ftpgate_storage::StorageBackend;

use crate::metrics::Metrics;

/// The health of every backend, updated by [`probe`].
#[derive(Debug)]
pub struct Health {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    /// `storage` or the `[backends.NAME]` name (the metric label).
    name: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// First failed check of the current outage; `None` while up.
    failing_since: Option<Instant>,
    /// The outage has lasted `backend_unready_after_secs` (logged once).
    unready_logged: bool,
}

impl Health {
    /// All backends up (each one passed its check at start).
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>, metrics: &Metrics) -> Self {
        let entries = names
            .into_iter()
            .map(|name| {
                metrics.backend_up_set(name, true);
                Entry {
                    name: name.to_owned(),
                    state: Mutex::new(State::default()),
                }
            })
            .collect();
        Self { entries }
    }

    /// False once some backend has failed every check for at least `after`
    /// (`after` zero: always true). Reads memory only.
    pub fn ready(&self, after: Duration) -> bool {
        after.is_zero()
            || self.entries.iter().all(|e| {
                lock(&e.state)
                    .failing_since
                    .is_none_or(|t| t.elapsed() < after)
            })
    }

    /// Records one check result of backend number `index`, logging transitions.
    pub fn record(
        &self,
        index: usize,
        result: Result<(), String>,
        unready_after: Duration,
        metrics: &Metrics,
    ) {
        let Some(e) = self.entries.get(index) else {
            return;
        };
        let mut st = lock(&e.state);
        match result {
            Ok(()) => {
                if let Some(since) = st.failing_since.take() {
                    tracing::info!(
                        backend = %e.name,
                        down_secs = since.elapsed().as_secs(),
                        "backend recovered"
                    );
                }
                st.unready_logged = false;
                metrics.backend_up_set(&e.name, true);
            }
            Err(error) => {
                metrics.backend_up_set(&e.name, false);
                let since = *st.failing_since.get_or_insert_with(|| {
                    tracing::warn!(
                        backend = %e.name,
                        %error,
                        "backend degraded: check failed (its sessions get 451 until it recovers)"
                    );
                    Instant::now()
                });
                tracing::debug!(backend = %e.name, %error, "backend check failed again");
                if !unready_after.is_zero()
                    && since.elapsed() >= unready_after
                    && !st.unready_logged
                {
                    st.unready_logged = true;
                    tracing::warn!(
                        backend = %e.name,
                        down_secs = since.elapsed().as_secs(),
                        "backend failing for server.backend_unready_after_secs: /readyz answers 503"
                    );
                }
            }
        }
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks backend number `index` every `every` until `stop` is cancelled; each check
/// is cut after `every` (a stalled backend counts as failed).
pub async fn probe(
    index: usize,
    backend: Arc<dyn StorageBackend>,
    shared: Arc<crate::state::Shared>,
    every: Duration,
) {
    let unready_after = Duration::from_secs(shared.config.server.backend_unready_after_secs);
    loop {
        tokio::select! {
            _ = shared.lifecycle.hard_stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let result = match tokio::time::timeout(every, backend.check()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} s", every.as_secs())),
        };
        shared
            .lifecycle
            .health
            .record(index, result, unready_after, &shared.metrics);
        // Keeps `ftpgate_ready` current without a scrape of /readyz.
        shared.is_ready().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_a_backend_only_after_the_sustained_period() {
        let m = Metrics::new();
        let h = Health::new(["storage", "archive"], &m);
        let long = Duration::from_secs(60);
        assert!(h.ready(long));
        h.record(1, Err("timeout".into()), long, &m);
        assert!(h.ready(long), "one failure must not turn readiness off");
        assert!(!h.ready(Duration::from_nanos(1)));
        assert!(
            h.ready(Duration::ZERO),
            "0: readiness never follows backends"
        );
        assert!(m
            .encode()
            .contains("ftpgate_backend_up{backend=\"archive\"} 0"));
        assert!(m
            .encode()
            .contains("ftpgate_backend_up{backend=\"storage\"} 1"));
        h.record(1, Ok(()), long, &m);
        assert!(h.ready(Duration::from_nanos(1)));
        assert!(m
            .encode()
            .contains("ftpgate_backend_up{backend=\"archive\"} 1"));
        // Out-of-range indexes are ignored.
        h.record(7, Err("x".into()), long, &m);
        assert!(h.ready(Duration::from_nanos(1)));
    }
}
