//! Upload events: after a completed upload (the 226 of STOR/APPE/STOU, RFC 959
//! §4.1.3) and, when configured, after DELE, RNTO, MKD, RMD and a failed PASS,
//! a JSON event is POSTed to every `[[webhooks]]` endpoint that asked for it.
//!
//! Asynchronous notifications only: the event is queued in memory and delivered
//! by a background task per endpoint, so the FTP reply is never delayed (the
//! upload is already durable when its 226 is sent). Each request carries
//! `X-Ftpgate-Signature: sha256=<hex>`, the HMAC-SHA256 (RFC 2104) of the exact
//! body with the secret read from `secret_file`, and `X-Ftpgate-Delivery: <id>`,
//! the event id, the same on every retry, for receivers to de-duplicate.
//!
//! Delivery: 2xx is delivered; a connect error, a timeout, 408, 429 or 5xx is
//! retried with exponential backoff (1 s doubling up to `retry_max_secs`, at most
//! `max_retries` retries); any other status is permanent and the event is
//! dropped with a WARN. Loss policy: each endpoint's queue holds `queue_size`
//! events; when it is full the NEW event is dropped (counted). Events are kept
//! in memory only: at shutdown the process waits up to [`DRAIN_LIMIT`] for them,
//! then those still queued or being retried are lost (logged with their number).
//! Counted in `ftpgate_webhook_events_total{endpoint,result}` with result
//! `delivered`, `failed` (gave up) or `dropped` (queue full).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ftpgate_storage::VPath;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::{BackendConfig, Config, StorageConfig};
use crate::metrics::Metrics;
use crate::protocol::code;
use crate::session::Session;

/// Event types an endpoint may subscribe to (`webhooks.events`).
pub const EVENT_TYPES: &[&str] = &[
    "upload",
    "delete",
    "rename",
    "mkdir",
    "rmdir",
    "login_failed",
];

/// How long shutdown waits for queued events to be delivered.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Header with the HMAC-SHA256 of the body: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Ftpgate-Signature";
/// Header with the event id (stable across retries).
pub const DELIVERY_HEADER: &str = "X-Ftpgate-Delivery";
/// Header with the event type.
pub const EVENT_HEADER: &str = "X-Ftpgate-Event";

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the events are POSTed to. Required.
    pub url: String,
    /// Event types sent to this endpoint ([`EVENT_TYPES`]). Default `["upload"]`.
    pub events: Vec<String>,
    /// File holding the HMAC secret (surrounding whitespace ignored). Unset: no
    /// signature header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Bound on each request (connect, send, answer). Default 10.
    pub timeout_secs: u64,
    /// Retries after the first attempt before an event is given up. Default 10.
    pub max_retries: u32,
    /// Longest wait between retries (the wait starts at 1 s and doubles). Default 60.
    pub retry_max_secs: u64,
    /// Events waiting for this endpoint; when full, new events are dropped.
    /// Default 10000.
    pub queue_size: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            events: vec!["upload".into()],
            secret_file: None,
            timeout_secs: 10,
            max_retries: 10,
            retry_max_secs: 60,
            queue_size: 10_000,
        }
    }
}

impl WebhookConfig {
    /// Checks the entry; errors name the key as `webhooks[i].key`.
    pub fn validate(&self, i: usize) -> Result<(), String> {
        let key = format!("webhooks[{i}]");
        check_url(&key, &self.url)?;
        for e in &self.events {
            if !EVENT_TYPES.contains(&e.as_str()) {
                return Err(format!(
                    "{key}.events: unknown event `{e}` (one of {})",
                    EVENT_TYPES.join(", ")
                ));
            }
        }
        if let Some(f) = &self.secret_file {
            read_secret(f).map_err(|e| format!("{key}.secret_file: {e}"))?;
        }
        if self.timeout_secs == 0 {
            return Err(format!("{key}.timeout_secs must be at least 1"));
        }
        if self.retry_max_secs == 0 {
            return Err(format!("{key}.retry_max_secs must be at least 1"));
        }
        if self.queue_size == 0 {
            return Err(format!("{key}.queue_size must be at least 1"));
        }
        Ok(())
    }

    /// The `endpoint` metrics label: the URL without query or credentials.
    fn label(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(mut u) => {
                u.set_query(None);
                let _ = u.set_password(None);
                let _ = u.set_username("");
                u.to_string()
            }
            Err(_) => self.url.clone(),
        }
    }
}

/// Checks that `url` (the key `{key}.url`) is an `http://` or `https://` URL
/// with a host.
pub(crate) fn check_url(key: &str, url: &str) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("{key}.url `{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "{key}.url `{url}` must be an http:// or https:// URL with a host"
        ));
    }
    Ok(())
}

/// Reads a secret file; surrounding whitespace (a trailing newline) is ignored.
pub(crate) fn read_secret(f: &std::path::Path) -> Result<Vec<u8>, String> {
    let s = std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
    let t = String::from_utf8_lossy(&s).trim().as_bytes().to_vec();
    if t.is_empty() {
        return Err(format!("{} is empty", f.display()));
    }
    Ok(t)
}

/// HMAC-SHA256 (RFC 2104, block size 64) of `body` under `key`, lower-case hex.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(body);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    hex(&outer.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The JSON body of one event. Absent values are left out.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Event {
    /// Unique id (32 hex digits), also in [`DELIVERY_HEADER`].
    pub id: String,
    /// One of [`EVENT_TYPES`].
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the event happened (RFC 3339, UTC).
    pub time: String,
    /// The control connection's id (as in the log).
    pub session_id: u64,
    /// The logged-in user (for `login_failed`: the name tried).
    pub user: String,
    /// The client's address.
    pub client_ip: String,
    /// The path as the client sees it (inside its home).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `rename`: the old path as the client sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_path: Option<String>,
    /// `storage` or the `[backends.NAME]` name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// `local`, `memory` or `s3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_kind: Option<&'static str>,
    /// The path inside the backend (home joined), without a leading `/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_key: Option<String>,
    /// Where it is stored: a file path (local), `s3://bucket/key`, `memory:/key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// `upload`: STOR, APPE or STOU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    /// `upload`: bytes received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `upload`: SHA-256 of the bytes received (with `upload_sha256` on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `upload`: when the transfer began (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// `upload`: transfer duration in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// Who did it: a snapshot of a session, taken when a transfer starts.
#[derive(Debug, Clone)]
pub struct Origin {
    session_id: u64,
    user: String,
    client_ip: IpAddr,
    backend: String,
    home: VPath,
}

impl Origin {
    /// The session's id, user, client address, backend and home.
    pub fn of(s: &Session) -> Self {
        let u = s.user();
        Self {
            session_id: s.id,
            user: u.map(|u| u.name.clone()).unwrap_or_default(),
            client_ip: crate::datachan::canonical(s.peer.ip()),
            backend: s.backend_label().to_owned(),
            home: u.map(|u| u.home.clone()).unwrap_or_else(VPath::root),
        }
    }
}

/// Where a backend keeps its objects, for `location`.
#[derive(Debug, Clone)]
struct Place {
    kind: &'static str,
    base: String,
}

impl Place {
    fn of(s: &StorageConfig) -> Self {
        let bucket = |kind, scheme, bucket: &str, prefix: &Option<String>| {
            let prefix = prefix.as_deref().unwrap_or("").trim_matches('/');
            Self {
                kind,
                base: if prefix.is_empty() {
                    format!("{scheme}://{bucket}")
                } else {
                    format!("{scheme}://{bucket}/{prefix}")
                },
            }
        };
        match &s.backend {
            BackendConfig::Local(l) => Self {
                kind: "local",
                base: l
                    .root
                    .display()
                    .to_string()
                    .trim_end_matches('/')
                    .to_owned(),
            },
            BackendConfig::Memory => Self {
                kind: "memory",
                base: "memory:".into(),
            },
            BackendConfig::S3(c) => bucket("s3", "s3", &c.bucket, &c.prefix),
            BackendConfig::Gcs(c) => bucket("gcs", "gs", &c.bucket, &c.prefix),
            BackendConfig::Azure(c) => bucket("azure", "az", &c.container, &c.prefix),
        }
    }
}

struct Pending {
    id: String,
    kind: &'static str,
    body: Bytes,
}

struct Endpoint {
    events: Vec<String>,
    /// Events queued or being delivered.
    pending: Arc<AtomicUsize>,
    tx: mpsc::Sender<Arc<Pending>>,
    label: String,
}

/// The handle in the shared state: queues events for the endpoints that want
/// them. With no `[[webhooks]]` every call returns at once.
#[derive(Default)]
pub struct Events {
    endpoints: Vec<Endpoint>,
    places: std::collections::HashMap<String, Place>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Events({} endpoints)", self.endpoints.len())
    }
}

impl Events {
    /// Reads the secrets and starts one delivery task per `[[webhooks]]` entry
    /// (needs a Tokio runtime).
    pub fn start(config: &Config, metrics: Arc<Metrics>) -> Result<Self, String> {
        let mut places = std::collections::HashMap::new();
        places.insert("storage".to_owned(), Place::of(&config.storage));
        for (name, s) in &config.backends {
            places.insert(name.clone(), Place::of(s));
        }
        let mut endpoints = Vec::new();
        for (i, w) in config.webhooks.iter().enumerate() {
            w.validate(i)?;
            let secret = match &w.secret_file {
                Some(f) => {
                    Some(read_secret(f).map_err(|e| format!("webhooks[{i}].secret_file: {e}"))?)
                }
                None => None,
            };
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(w.timeout_secs))
                .connect_timeout(Duration::from_secs(w.timeout_secs))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .user_agent(concat!("ftpgate/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("webhooks[{i}]: HTTP client: {e}"))?;
            let (tx, rx) = mpsc::channel(w.queue_size);
            let label = w.label();
            let pending = Arc::new(AtomicUsize::new(0));
            let worker = Worker {
                pending: pending.clone(),
                url: w.url.clone(),
                label: label.clone(),
                secret,
                client,
                max_retries: w.max_retries,
                retry_max: Duration::from_secs(w.retry_max_secs),
                metrics: metrics.clone(),
            };
            tokio::spawn(worker.run(rx));
            endpoints.push(Endpoint {
                events: w.events.clone(),
                pending,
                tx,
                label,
            });
        }
        Ok(Self {
            endpoints,
            places,
            metrics: Some(metrics),
        })
    }

    /// At shutdown: waits up to `limit` for the queued events to be delivered
    /// (or given up); WARNs with the number still undelivered, which are lost.
    pub async fn drain(&self, limit: Duration) {
        let left = || {
            self.endpoints
                .iter()
                .map(|e| e.pending.load(Ordering::SeqCst))
                .sum::<usize>()
        };
        let deadline = tokio::time::Instant::now() + limit;
        while left() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = left();
        if n > 0 {
            tracing::warn!(events = n, "webhook events not delivered before exit: lost");
        }
    }

    fn wanted(&self, kind: &str) -> bool {
        self.endpoints
            .iter()
            .any(|e| e.events.iter().any(|k| k == kind))
    }

    /// A finished transfer: queues an `upload` event when it is a STOR, APPE or
    /// STOU that ended with 226. `storage` is the backend path.
    #[allow(clippy::too_many_arguments)]
    pub fn transfer(
        &self,
        o: &Origin,
        verb: &str,
        storage: &str,
        code: u16,
        bytes: u64,
        sha256: Option<&str>,
        elapsed: Duration,
    ) {
        if code != code::CLOSING_DATA
            || !matches!(verb, "STOR" | "APPE" | "STOU")
            || !self.wanted("upload")
        {
            return;
        }
        let Ok(p) = VPath::parse(storage) else {
            return;
        };
        let now = SystemTime::now();
        let mut ev = self.base("upload", o, Some(&p));
        ev.verb = Some(verb.to_owned());
        ev.size = Some(bytes);
        ev.sha256 = sha256.map(str::to_owned);
        ev.started_at = Some(rfc3339(now.checked_sub(elapsed).unwrap_or(now)));
        ev.duration_ms = Some(elapsed.as_millis() as u64);
        self.emit(ev);
    }

    /// A successful DELE (`delete`), MKD (`mkdir`), RMD (`rmdir`) or RNTO
    /// (`rename`, with `from`) on backend path `path`.
    pub fn file_op(&self, kind: &'static str, s: &Session, path: &VPath, from: Option<&VPath>) {
        if !self.wanted(kind) {
            return;
        }
        let o = Origin::of(s);
        let mut ev = self.base(kind, &o, Some(path));
        ev.from_path = from.map(|f| shown(&o.home, f));
        self.emit(ev);
    }

    /// A failed PASS for user name `name`.
    pub fn login_failed(&self, s: &Session, name: &str) {
        if !self.wanted("login_failed") {
            return;
        }
        let mut o = Origin::of(s);
        o.user = name.to_owned();
        self.emit(self.base("login_failed", &o, None));
    }

    fn base(&self, kind: &'static str, o: &Origin, path: Option<&VPath>) -> Event {
        let place = self.places.get(&o.backend);
        let key = path.map(|p| p.as_relative());
        Event {
            id: format!("{:032x}", rand::random::<u128>()),
            kind,
            time: rfc3339(SystemTime::now()),
            session_id: o.session_id,
            user: o.user.clone(),
            client_ip: o.client_ip.to_string(),
            path: path.map(|p| shown(&o.home, p)),
            from_path: None,
            backend: path.map(|_| o.backend.clone()),
            backend_kind: path.and(place.map(|p| p.kind)),
            location: match (place, &key) {
                (Some(pl), Some(k)) => Some(format!("{}/{k}", pl.base)),
                _ => None,
            },
            storage_key: key,
            ..Event::default()
        }
    }

    fn emit(&self, ev: Event) {
        let body = match serde_json::to_vec(&ev) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::warn!(error = %e, "webhook event not serialised");
                return;
            }
        };
        let p = Arc::new(Pending {
            id: ev.id,
            kind: ev.kind,
            body,
        });
        for e in self
            .endpoints
            .iter()
            .filter(|e| e.events.iter().any(|k| k == ev.kind))
        {
            e.pending.fetch_add(1, Ordering::SeqCst);
            if e.tx.try_send(p.clone()).is_err() {
                e.pending.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(endpoint = %e.label, event = p.kind, id = %p.id, "webhook queue full: event dropped");
                if let Some(m) = &self.metrics {
                    m.webhook(&e.label, "dropped");
                }
            }
        }
    }
}

/// The client's view of backend path `p`: `p` without the user's home.
fn shown(home: &VPath, p: &VPath) -> String {
    p.strip_prefix(home)
        .map(|s| s.to_string())
        .unwrap_or_else(|| p.to_string())
}

/// What an attempt came to.
#[derive(Debug, PartialEq)]
enum Attempt {
    Delivered,
    Retry(String),
    Permanent(String),
}

/// Sorts an HTTP status: 2xx delivered; 408, 429 and 5xx retried; others final.
fn classify(status: u16) -> Attempt {
    match status {
        200..=299 => Attempt::Delivered,
        408 | 429 | 500..=599 => Attempt::Retry(format!("HTTP {status}")),
        _ => Attempt::Permanent(format!("HTTP {status}")),
    }
}

/// The wait before retry number `n` (0-based): 1 s doubling, capped.
fn backoff(n: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << n.min(20)).min(max)
}

struct Worker {
    url: String,
    label: String,
    secret: Option<Vec<u8>>,
    client: reqwest::Client,
    max_retries: u32,
    retry_max: Duration,
    metrics: Arc<Metrics>,
    pending: Arc<AtomicUsize>,
}

impl Worker {
    /// Delivers queued events one at a time, in order.
    async fn run(self, mut rx: mpsc::Receiver<Arc<Pending>>) {
        while let Some(p) = rx.recv().await {
            let mut n = 0;
            let result = loop {
                match self.attempt(&p).await {
                    Attempt::Delivered => break "delivered",
                    Attempt::Permanent(why) => {
                        tracing::warn!(endpoint = %self.label, id = %p.id, event = p.kind, error = %why, "webhook refused the event: dropped");
                        break "failed";
                    }
                    Attempt::Retry(why) if n >= self.max_retries => {
                        tracing::warn!(endpoint = %self.label, id = %p.id, event = p.kind, error = %why, attempts = n + 1, "webhook delivery given up");
                        break "failed";
                    }
                    Attempt::Retry(why) => {
                        let wait = backoff(n, self.retry_max);
                        tracing::debug!(endpoint = %self.label, id = %p.id, error = %why, wait_ms = wait.as_millis() as u64, "webhook delivery will be retried");
                        tokio::time::sleep(wait).await;
                        n += 1;
                    }
                }
            };
            self.metrics.webhook(&self.label, result);
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    async fn attempt(&self, p: &Pending) -> Attempt {
        let mut req = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header(EVENT_HEADER, p.kind)
            .header(DELIVERY_HEADER, &p.id)
            .body(p.body.clone());
        if let Some(k) = &self.secret {
            req = req.header(SIGNATURE_HEADER, format!("sha256={}", sign(k, &p.body)));
        }
        match req.send().await {
            Ok(r) => classify(r.status().as_u16()),
            Err(e) => Attempt::Retry(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231() {
        // RFC 4231 §4.3 (test case 2) and §4.7 (case 6, key longer than a block).
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            sign(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn statuses_and_backoff() {
        assert_eq!(classify(204), Attempt::Delivered);
        for s in [408, 429, 500, 503] {
            assert!(matches!(classify(s), Attempt::Retry(_)), "{s}");
        }
        for s in [400, 401, 404, 301] {
            assert!(matches!(classify(s), Attempt::Permanent(_)), "{s}");
        }
        let max = Duration::from_secs(60);
        let waits: Vec<u64> = (0..8).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX, max), max);
    }

    #[test]
    fn validation_names_the_key() {
        let mut w = WebhookConfig {
            url: "ftp://x".into(),
            ..Default::default()
        };
        assert!(w.validate(2).unwrap_err().contains("webhooks[2].url"));
        w.url = "http://127.0.0.1:9/hook?token=x".into();
        assert!(w.validate(0).is_ok());
        assert_eq!(w.label(), "http://127.0.0.1:9/hook");
        w.events = vec!["upload".into(), "bogus".into()];
        assert!(w.validate(0).unwrap_err().contains("webhooks[0].events"));
        w.events = vec!["delete".into()];
        w.secret_file = Some("/nonexistent/secret".into());
        assert!(w
            .validate(0)
            .unwrap_err()
            .contains("webhooks[0].secret_file"));
    }

    #[test]
    fn payload_of_an_upload() {
        let mut cfg = Config::default();
        cfg.storage.backend = BackendConfig::Local(crate::config::LocalConfig {
            root: "/srv/ftp/".into(),
        });
        let ev = Events {
            places: [("storage".to_owned(), Place::of(&cfg.storage))].into(),
            ..Default::default()
        };
        let o = Origin {
            session_id: 7,
            user: "alice".into(),
            client_ip: "127.0.0.1".parse().unwrap(),
            backend: "storage".into(),
            home: VPath::parse("/alice").unwrap(),
        };
        let p = VPath::parse("/alice/docs/a.pdf").unwrap();
        let e = ev.base("upload", &o, Some(&p));
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "upload");
        assert_eq!(v["path"], "/docs/a.pdf");
        assert_eq!(v["storage_key"], "alice/docs/a.pdf");
        assert_eq!(v["location"], "/srv/ftp/alice/docs/a.pdf");
        assert_eq!(v["backend_kind"], "local");
        assert_eq!(v["user"], "alice");
        assert_eq!(v["session_id"], 7);
        assert_eq!(e.id.len(), 32);
        assert!(v.get("sha256").is_none());
        assert!(chrono::DateTime::parse_from_rfc3339(&e.time).is_ok());
        let mut c = ftpgate_backend_s3::S3Config::new("b");
        c.prefix = Some("/ftp/".into());
        let mut s3 = StorageConfig::of(BackendConfig::S3(Box::new(c.clone())));
        let pl = Place::of(&s3);
        assert_eq!((pl.kind, pl.base.as_str()), ("s3", "s3://b/ftp"));
        c.prefix = None;
        s3.backend = BackendConfig::S3(Box::new(c));
        assert_eq!(Place::of(&s3).base, "s3://b");
        s3.backend = BackendConfig::Memory;
        assert_eq!(Place::of(&s3).base, "memory:");
        let f = ev.base("login_failed", &o, None);
        assert!(serde_json::to_value(&f).unwrap().get("path").is_none());
    }
}

#[cfg(test)]
mod cloud_place_tests {
    use super::*;

    #[test]
    fn gcs_and_azure_places() {
        let mut g = ftpgate_backend_cloud::GcsConfig::new("b");
        g.prefix = Some("/ftp/".into());
        let mut s = StorageConfig::of(BackendConfig::Gcs(Box::new(g)));
        let pl = Place::of(&s);
        assert_eq!((pl.kind, pl.base.as_str()), ("gcs", "gs://b/ftp"));
        s.backend = BackendConfig::Azure(Box::new(ftpgate_backend_cloud::AzureConfig::new("c")));
        let pl = Place::of(&s);
        assert_eq!((pl.kind, pl.base.as_str()), ("azure", "az://c"));
    }
}
