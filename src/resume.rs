//! Resumable uploads: an interrupted upload (data connection reset, ABOR, client gone)
//! is kept as a *pending* upload of its user and path for `storage.resume_window_secs`
//! instead of being discarded; the same user's `SIZE` reports its durable byte count,
//! and `REST n` + `STOR` or `APPE` with exactly that `n` continue it (RFC 959 §4.1.3
//! REST, RFC 3659 §5 SIZE as clients use it to resume). Nothing is visible under the
//! final name until the upload completes, atomically, as any other.
//!
//! The backend keeps the pending data (local disk: the fsynced temporary file, see
//! `ftpgate-backend-local`; S3: the open multipart upload and a marker object in the
//! bucket, see `ftpgate-backend-s3`); backends that cannot keep it (memory) keep
//! nothing: `suspend` aborts and `REST`/`APPE` behave as before. The SHA-256 of a
//! resumed upload is computed at resume by reading the kept bytes once (local disk),
//! or continued from the hash state the backend kept with the pending upload (S3,
//! `Upload::hash_sha256`), then the new bytes as they stream.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ftpgate_storage::{PendingKey, PendingUpload, StorageBackend, Upload, VPath};

use crate::metrics::{Metrics, PendingLabel};

/// Everything needed to keep an interrupted upload as a pending one.
#[derive(Clone)]
pub struct Park {
    /// The user's backend.
    pub storage: Arc<dyn StorageBackend>,
    /// Owner and path.
    pub key: PendingKey,
    /// `resume_max_per_user`, `resume_max_bytes_per_user`.
    pub bounds: (u64, u64),
    /// Where the events are counted.
    pub metrics: Arc<Metrics>,
    /// Bytes the pending upload already held when this upload resumed it.
    pub resumed_from: u64,
}

impl std::fmt::Debug for Park {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Park").field("key", &self.key).finish()
    }
}

/// Counts a pending-upload `event` and wakes the sweep to set the gauges.
pub fn event(metrics: &Metrics, event: &'static str) {
    metrics
        .pending_events
        .get_or_create(&PendingLabel { event })
        .inc();
    metrics.pending_changed.notify_one();
}

/// Ends an interrupted `upload`: kept as the pending upload of `park` when resuming
/// is on for it and the user's bounds allow, else aborted. `received` is the bytes
/// this transfer got. Never fails: problems are logged and the upload discarded.
pub async fn park(upload: Box<dyn Upload>, park: Option<&Park>, received: u64) {
    let Some(p) = park else {
        let _ = upload.abort().await;
        return;
    };
    let total = p.resumed_from.saturating_add(received);
    if total == 0 {
        let _ = upload.abort().await;
        return;
    }
    let (max_count, max_bytes) = p.bounds;
    let usage = p.storage.pending_usage(Some(&p.key.owner)).await;
    let own = p.storage.pending_upload(&p.key).await.ok().flatten();
    let over = match usage {
        Ok(u) => {
            let count = u.count - u64::from(own.is_some()).min(u.count);
            let bytes = u.bytes - own.map_or(0, |o| o.size).min(u.bytes);
            count + 1 > max_count || bytes.saturating_add(total) > max_bytes
        }
        Err(e) => {
            tracing::warn!(path = %p.key.path, error = %e, "cannot count pending uploads");
            true
        }
    };
    if over {
        tracing::info!(user = %p.key.owner, path = %p.key.path, bytes = total,
            "interrupted upload discarded: over resume_max_per_user or resume_max_bytes_per_user");
        event(&p.metrics, "refused");
        let _ = upload.abort().await;
        return;
    }
    match upload.suspend(&p.key).await {
        Ok(Some(kept)) => {
            tracing::info!(user = %p.key.owner, path = %p.key.path, bytes = kept,
                "interrupted upload kept as a pending resumable upload");
            event(&p.metrics, "kept");
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(path = %p.key.path, error = %e, "cannot keep the interrupted upload");
        }
    }
}

/// What [`find`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No pending upload.
    None,
    /// One that a newer complete file supersedes (SIZE reports the file).
    Superseded,
    /// One that a resume may continue.
    Live(PendingUpload),
}

impl Found {
    /// The pending upload a resume may continue.
    pub fn live(self) -> Option<PendingUpload> {
        match self {
            Found::Live(p) => Some(p),
            _ => None,
        }
    }
}

/// The pending upload of `key`: one older than `window` is removed (`None`); one
/// older than a complete file at the path is `Superseded`.
pub async fn find(
    storage: &dyn StorageBackend,
    window: Duration,
    key: &PendingKey,
    metrics: &Metrics,
) -> Found {
    let Some(p) = storage.pending_upload(key).await.ok().flatten() else {
        return Found::None;
    };
    if p.modified + window < SystemTime::now() {
        if storage.discard_pending(key).await.unwrap_or(false) {
            tracing::info!(user = %key.owner, path = %key.path, bytes = p.size, "pending upload expired");
            event(metrics, "expired");
        }
        return Found::None;
    }
    match storage.stat(&key.path).await {
        Ok(m) if m.modified.is_some_and(|t| t > p.modified) => Found::Superseded,
        _ => Found::Live(p),
    }
}

/// Removes the pending upload `key`, if any (a plain STOR, or REST with another
/// offset, starts over).
pub async fn discard(storage: &dyn StorageBackend, key: &PendingKey) {
    match storage.discard_pending(key).await {
        Ok(true) => {
            tracing::info!(user = %key.owner, path = %key.path, "pending upload discarded: the upload starts over");
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(path = %key.path, error = %e, "cannot discard a pending upload"),
    }
}

/// The key of `user`'s pending upload to `path`.
pub fn key(user: &str, path: &VPath) -> PendingKey {
    PendingKey {
        owner: user.to_owned(),
        path: path.clone(),
    }
}

/// Removes expired pending uploads of every backend at start and then every
/// `min(window / 4, 60 s)`, and sets the pending-upload gauges then and after each
/// change (kept, resumed, expired).
pub async fn sweep(backends: Vec<(Arc<dyn StorageBackend>, Duration)>, metrics: Arc<Metrics>) {
    if backends.is_empty() {
        return;
    }
    let every = backends
        .iter()
        .map(|(_, w)| (*w / 4).clamp(Duration::from_secs(1), Duration::from_secs(60)))
        .min()
        .unwrap_or(Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = metrics.pending_changed.notified() => {}
        }
        let (mut count, mut bytes) = (0u64, 0u64);
        for (b, window) in &backends {
            let before = SystemTime::now()
                .checked_sub(*window)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            match b.expire_pending(before).await {
                Ok(gone) if gone.count > 0 => {
                    tracing::info!(
                        removed = gone.count,
                        bytes = gone.bytes,
                        "expired pending uploads removed"
                    );
                    metrics
                        .pending_events
                        .get_or_create(&PendingLabel { event: "expired" })
                        .inc_by(gone.count);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot expire pending uploads"),
            }
            if let Ok(u) = b.pending_usage(None).await {
                count += u.count;
                bytes += u.bytes;
            }
        }
        metrics
            .pending_uploads
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        metrics
            .pending_upload_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}
