//! Prometheus metrics (served as text on `/metrics` by [`crate::http`]): sessions,
//! logins, commands by verb and reply class (RFC 959 §4.2 first digit), bytes and
//! durations of transfers, and the latency and errors of every backend operation,
//! measured by wrapping each backend in an [`InstrumentedBackend`].
//!
//! Also: `ftpgate_build_info`, the process's own CPU, memory and descriptors (read
//! from `/proc/self` at each scrape by [`ProcessCollector`]), the loaded TLS
//! certificate's expiry, pending passive listeners and active bans.
//!
//! The registry encodes OpenMetrics 1.0; [`Format::negotiate`] picks the format a
//! scraper asks for in its `Accept` header (RFC 9110 §12.5.1) and
//! [`openmetrics_to_text`] turns the OpenMetrics text into the Prometheus text
//! format 0.0.4 for everyone else, whose parsers (and `promtool check metrics`)
//! expect counters' HELP/TYPE under the `_total` sample name and no `# EOF`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use ftpgate_storage::{
    ByteStream, Capabilities, EntryStream, Metadata, PendingKey, PendingUpload, PendingUsage,
    ReadSource, Result, Resumed, StorageBackend, Upload, VPath, WriteMode,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// `result` label: `ok` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// Labels of `ftpgate_commands_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// The command verb; unknown verbs count as `UNKNOWN` (bounded cardinality).
    pub verb: String,
    /// Reply class, e.g. `2xx`.
    pub reply: &'static str,
}

/// Labels of transfer byte counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// `in` (STOR/APPE/STOU) or `out` (RETR and listings).
    pub direction: &'static str,
    /// `storage` or the `[backends.NAME]` name.
    pub backend: String,
}

/// Labels of transfer counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransferLabels {
    /// `in` or `out`.
    pub direction: &'static str,
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// `direction` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `in` or `out`.
    pub direction: &'static str,
}

/// Labels of backend operation metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `storage` or the `[backends.NAME]` name.
    pub backend: String,
    /// The `StorageBackend` method, e.g. `stat`, `read`, `complete`.
    pub op: &'static str,
}

/// `backend` label of `ftpgate_backend_up`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    /// `storage` or the `[backends.NAME]` name.
    pub backend: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn transfer_histogram() -> Histogram {
    // 1 ms … ~9 h.
    Histogram::new(exponential_buckets(0.001, 4.0, 13))
}

fn op_histogram() -> Histogram {
    // 100 µs … ~26 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// Open control connections.
    pub sessions_active: Gauge,
    /// Control connections accepted.
    pub sessions: Counter,
    /// PASS results.
    pub logins: Family<ResultLabel, Counter>,
    /// Logins decided by the auth hook, by result (`crate::auth_hook`).
    pub auth_hook: Family<ResultLabel, Counter>,
    /// Final replies by verb and class.
    pub commands: Family<CommandLabels, Counter>,
    /// Data bytes moved.
    pub transfer_bytes: Family<BytesLabels, Counter>,
    /// Transfers ended.
    pub transfers: Family<TransferLabels, Counter>,
    /// Transfer durations in seconds.
    pub transfer_duration: HistogramFamily<DirectionLabel>,
    /// Backend call latency in seconds.
    pub backend_duration: HistogramFamily<OpLabels>,
    /// Backend calls that failed.
    pub backend_errors: Family<OpLabels, Counter>,
    /// 1 while `/readyz` says ready.
    pub ready: Gauge,
    /// Passive listeners opened by PASV/EPSV and not yet connected (set at scrape).
    pub passive_pending: Gauge,
    /// Client IPs banned now (set at scrape).
    pub bans_active: Gauge,
    /// Unix time after which the loaded TLS certificate is invalid (set at scrape;
    /// no sample without TLS).
    pub tls_not_after: Family<CertLabel, Gauge>,
    /// 1 while a backend passes its background check (`crate::health`).
    pub backend_up: Family<BackendLabel, Gauge>,
    /// Pending (interrupted, resumable) uploads kept now, all backends.
    pub pending_uploads: Gauge,
    /// Bytes those pending uploads hold.
    pub pending_upload_bytes: Gauge,
    /// Interrupted uploads kept as pending, resumed, expired (`event` label).
    pub pending_events: Family<PendingLabel, Counter>,
    /// Wakes the pending-upload sweep to set the gauges after a change.
    pub pending_changed: tokio::sync::Notify,
    /// Webhook events by endpoint and result (`crate::webhooks`).
    pub webhook_events: Family<WebhookLabels, Counter>,
    /// Refusals by a per-user limit (`reason`: quota, sessions, network).
    pub user_limit_refusals: Family<ReasonLabel, Counter>,
    /// Download bytes sent with `sendfile(2)` straight from local files (a part of
    /// `transfer_bytes`).
    pub transfer_sendfile_bytes: Counter,
}

/// Label of `ftpgate_user_limit_refusals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `quota` (552), `sessions` (421 at PASS) or `network` (530 at PASS).
    pub reason: &'static str,
}

/// Label of `ftpgate_pending_upload_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PendingLabel {
    /// `kept`, `resumed`, `refused` (over a bound) or `expired`.
    pub event: &'static str,
}

/// Labels of `ftpgate_webhook_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// The endpoint URL without query or credentials.
    pub endpoint: String,
    /// `delivered`, `failed` (given up) or `dropped` (queue full).
    pub result: &'static str,
}

/// Label of `ftpgate_tls_certificate_not_after_timestamp_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabel {
    /// `tls.cert_file`.
    pub file: String,
}

/// Labels of `ftpgate_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    os: &'static str,
    arch: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            sessions_active: Gauge::default(),
            sessions: Counter::default(),
            logins: Family::default(),
            auth_hook: Family::default(),
            commands: Family::default(),
            transfer_bytes: Family::default(),
            transfers: Family::default(),
            transfer_duration: Family::new_with_constructor(transfer_histogram as fn() -> _),
            backend_duration: Family::new_with_constructor(op_histogram as fn() -> _),
            backend_errors: Family::default(),
            ready: Gauge::default(),
            passive_pending: Gauge::default(),
            bans_active: Gauge::default(),
            tls_not_after: Family::default(),
            backend_up: Family::default(),
            pending_uploads: Gauge::default(),
            pending_upload_bytes: Gauge::default(),
            pending_events: Family::default(),
            pending_changed: tokio::sync::Notify::new(),
            webhook_events: Family::default(),
            user_limit_refusals: Family::default(),
            transfer_sendfile_bytes: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "ftpgate_sessions_active",
            "Open control connections",
            m.sessions_active.clone(),
        );
        registry.register(
            "ftpgate_sessions",
            "Control connections accepted",
            m.sessions.clone(),
        );
        registry.register("ftpgate_logins", "Login attempts", m.logins.clone());
        registry.register(
            "ftpgate_auth_hook_logins",
            "Logins decided by the auth hook: allowed, cached, denied, failed (refused)",
            m.auth_hook.clone(),
        );
        registry.register(
            "ftpgate_commands",
            "Commands by verb and reply class",
            m.commands.clone(),
        );
        registry.register(
            "ftpgate_transfer_bytes",
            "Data-connection bytes by direction and backend",
            m.transfer_bytes.clone(),
        );
        registry.register(
            "ftpgate_transfers",
            "Transfers by direction and result",
            m.transfers.clone(),
        );
        registry.register(
            "ftpgate_transfer_duration_seconds",
            "Transfer durations",
            m.transfer_duration.clone(),
        );
        registry.register(
            "ftpgate_backend_operation_duration_seconds",
            "Storage backend call latency",
            m.backend_duration.clone(),
        );
        registry.register(
            "ftpgate_backend_errors",
            "Storage backend calls that failed",
            m.backend_errors.clone(),
        );
        registry.register(
            "ftpgate_ready",
            "1 when listeners are up, backends reachable and no shutdown has begun",
            m.ready.clone(),
        );
        registry.register(
            "ftpgate_build",
            "The running version (value 1)",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                os: std::env::consts::OS,
                arch: std::env::consts::ARCH,
            }),
        );
        registry.register(
            "ftpgate_passive_listeners_pending",
            "Passive listeners waiting for their data connection (cap: passive.max_pending)",
            m.passive_pending.clone(),
        );
        registry.register(
            "ftpgate_bans_active",
            "Client IPs banned now after failed logins",
            m.bans_active.clone(),
        );
        registry.register(
            "ftpgate_tls_certificate_not_after_timestamp_seconds",
            "Unix time at which the loaded TLS certificate expires",
            m.tls_not_after.clone(),
        );
        registry.register(
            "ftpgate_backend_up",
            "1 while the backend passes its background reachability check",
            m.backend_up.clone(),
        );
        registry.register(
            "ftpgate_pending_uploads",
            "Interrupted uploads kept for resuming (storage.resume_window_secs)",
            m.pending_uploads.clone(),
        );
        registry.register(
            "ftpgate_pending_upload_bytes",
            "Bytes held by pending resumable uploads",
            m.pending_upload_bytes.clone(),
        );
        registry.register(
            "ftpgate_pending_upload_events",
            "Interrupted uploads kept, resumed, refused (over a bound) and expired",
            m.pending_events.clone(),
        );
        registry.register(
            "ftpgate_webhook_events",
            "Webhook events delivered, failed (given up) or dropped (queue full)",
            m.webhook_events.clone(),
        );
        registry.register(
            "ftpgate_user_limit_refusals",
            "Requests refused by a per-user limit: quota (552), sessions (421), network (530)",
            m.user_limit_refusals.clone(),
        );
        registry.register(
            "ftpgate_transfer_sendfile_bytes",
            "Download bytes sent with sendfile(2) from local files (part of transfer bytes)",
            m.transfer_sendfile_bytes.clone(),
        );
        registry.register_collector(Box::new(crate::process::ProcessCollector));
        Self { registry, ..m }
    }

    /// Counts one refusal by a per-user limit (`quota`, `sessions`, `network`).
    pub fn user_limit_refused(&self, reason: &'static str) {
        self.user_limit_refusals
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts one webhook event's end for `endpoint`.
    pub fn webhook(&self, endpoint: &str, result: &'static str) {
        self.webhook_events
            .get_or_create(&WebhookLabels {
                endpoint: endpoint.to_owned(),
                result,
            })
            .inc();
    }

    /// Sets `ftpgate_backend_up{backend}`.
    pub fn backend_up_set(&self, backend: &str, up: bool) {
        self.backend_up
            .get_or_create(&BackendLabel {
                backend: backend.to_owned(),
            })
            .set(i64::from(up));
    }

    /// The OpenMetrics 1.0 text exposition of every metric (ends in `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Every metric in `format`.
    pub fn encode_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.encode(),
            Format::Text => openmetrics_to_text(&self.encode()),
        }
    }

    /// Sets the TLS certificate expiry gauge (Unix seconds) for `file`.
    pub fn tls_certificate(&self, file: &str, not_after: i64) {
        self.tls_not_after
            .get_or_create(&CertLabel {
                file: file.to_owned(),
            })
            .set(not_after);
    }

    /// Counts a command's final reply.
    pub fn command(&self, verb: &str, code: u16) {
        let reply = match code / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        self.commands
            .get_or_create(&CommandLabels {
                verb: verb.to_owned(),
                reply,
            })
            .inc();
    }

    /// Counts one finished transfer.
    pub fn transfer(
        &self,
        direction: &'static str,
        backend: &str,
        ok: bool,
        bytes: u64,
        secs: f64,
    ) {
        let result = if ok { "ok" } else { "failed" };
        self.transfers
            .get_or_create(&TransferLabels { direction, result })
            .inc();
        self.transfer_bytes
            .get_or_create(&BytesLabels {
                direction,
                backend: backend.to_owned(),
            })
            .inc_by(bytes);
        self.transfer_duration
            .get_or_create(&DirectionLabel { direction })
            .observe(secs);
    }

    fn op<T>(&self, backend: &str, op: &'static str, started: Instant, r: &Result<T>) {
        let labels = OpLabels {
            backend: backend.to_owned(),
            op,
        };
        self.backend_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if r.is_err() {
            self.backend_errors.get_or_create(&labels).inc();
        }
    }
}

/// An exposition format of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
    /// Prometheus text format 0.0.4 (`text/plain`), the default.
    Text,
}

impl Format {
    /// The format an `Accept` header asks for (RFC 9110 §12.5.1): OpenMetrics when
    /// an `application/openmetrics-text` range has a quality above zero and at least
    /// that of any `text/plain` range; the text format otherwise (no header, `*/*`).
    pub fn negotiate(accept: Option<&str>) -> Self {
        let (mut om, mut text) = (0.0f32, 0.0f32);
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => om = om.max(q),
                "text/plain" => text = text.max(q),
                _ => {}
            }
        }
        if om > 0.0 && om >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// OpenMetrics text → Prometheus text format 0.0.4: a counter family `x` is
/// described as `x_total` (its sample's name), an info family `x` as the gauge
/// `x_info`, `unknown` as `untyped`; `# UNIT` and `# EOF` lines, `_created`
/// samples and exemplars are dropped (the text format has none of them).
pub fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // HELP comes before TYPE in OpenMetrics; it is written once TYPE names the family.
    let mut help: Option<&str> = None;
    let mut counter: Option<String> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').map(|(_, h)| h).unwrap_or(""));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_owned(), kind),
                _ => (name.to_owned(), "untyped"),
            };
            counter = (kind == "counter").then(|| format!("{}_created", &name[..name.len() - 6]));
            if let Some(h) = help.take() {
                out.push_str(&format!("# HELP {name} {h}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if counter.as_deref().is_some_and(|c| {
            line.strip_prefix(c)
                .is_some_and(|r| r.starts_with(['{', ' ']))
        }) {
            continue;
        }
        out.push_str(without_exemplar(line));
        out.push('\n');
    }
    out
}

/// A sample line up to its exemplar (` # {…} value` after the value), found outside
/// quoted label values.
fn without_exemplar(line: &str) -> &str {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' if !quoted && line[i..].starts_with(" # ") => return &line[..i],
            _ => {}
        }
    }
    line
}

/// A backend wrapped so each call is timed and failures counted under its name.
/// Streams (read, list) are timed to their first response; uploads count
/// `write`s only when they fail and time `complete`/`abort`.
#[derive(Debug)]
pub struct InstrumentedBackend {
    inner: Arc<dyn StorageBackend>,
    name: String,
    metrics: Arc<Metrics>,
}

impl InstrumentedBackend {
    /// Wraps `inner`, labelled `name` (`storage` or a `[backends.NAME]`).
    pub fn new(inner: Arc<dyn StorageBackend>, name: &str, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            name: name.to_owned(),
            metrics,
        }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let r = f.await;
        self.metrics.op(&self.name, op, started, &r);
        r
    }
}

#[async_trait]
impl StorageBackend for InstrumentedBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn check(&self) -> Result<()> {
        self.timed("check", self.inner.check()).await
    }

    async fn stat(&self, path: &VPath) -> Result<Metadata> {
        self.timed("stat", self.inner.stat(path)).await
    }

    async fn list(&self, dir: &VPath) -> Result<EntryStream> {
        self.timed("list", self.inner.list(dir)).await
    }

    async fn read(&self, path: &VPath, offset: u64) -> Result<ByteStream> {
        self.timed("read", self.inner.read(path, offset)).await
    }

    async fn create(&self, path: &VPath, mode: WriteMode) -> Result<Box<dyn Upload>> {
        let inner = self.timed("create", self.inner.create(path, mode)).await?;
        Ok(Box::new(InstrumentedUpload {
            inner,
            name: self.name.clone(),
            metrics: self.metrics.clone(),
        }))
    }

    async fn delete(&self, path: &VPath) -> Result<()> {
        self.timed("delete", self.inner.delete(path)).await
    }

    async fn mkdir(&self, path: &VPath) -> Result<()> {
        self.timed("mkdir", self.inner.mkdir(path)).await
    }

    async fn rmdir(&self, path: &VPath) -> Result<()> {
        self.timed("rmdir", self.inner.rmdir(path)).await
    }

    async fn rename(&self, from: &VPath, to: &VPath) -> Result<()> {
        self.timed("rename", self.inner.rename(from, to)).await
    }

    async fn set_modified(&self, path: &VPath, time: SystemTime) -> Result<()> {
        self.timed("set_modified", self.inner.set_modified(path, time))
            .await
    }

    async fn open(&self, path: &VPath, offset: u64) -> Result<(Metadata, ByteStream)> {
        self.timed("open", self.inner.open(path, offset)).await
    }

    async fn open_source(&self, path: &VPath, offset: u64) -> Result<(Metadata, ReadSource)> {
        self.timed("open", self.inner.open_source(path, offset))
            .await
    }

    async fn stored_sha256(&self, path: &VPath) -> Result<Option<([u8; 32], u64)>> {
        self.timed("stored_sha256", self.inner.stored_sha256(path))
            .await
    }

    async fn set_permissions(&self, path: &VPath, mode: u32) -> Result<()> {
        self.timed("set_permissions", self.inner.set_permissions(path, mode))
            .await
    }

    async fn pending_upload(&self, key: &PendingKey) -> Result<Option<PendingUpload>> {
        self.timed("pending_upload", self.inner.pending_upload(key))
            .await
    }

    async fn resume_upload(&self, key: &PendingKey, offset: u64) -> Result<Resumed> {
        let r = self
            .timed("resume_upload", self.inner.resume_upload(key, offset))
            .await?;
        Ok(Resumed {
            upload: Box::new(InstrumentedUpload {
                inner: r.upload,
                name: self.name.clone(),
                metrics: Arc::clone(&self.metrics),
            }),
            prefix: r.prefix,
        })
    }

    fn may_have_pending(&self, key: &PendingKey) -> bool {
        self.inner.may_have_pending(key)
    }

    async fn discard_pending(&self, key: &PendingKey) -> Result<bool> {
        self.timed("discard_pending", self.inner.discard_pending(key))
            .await
    }

    async fn pending_usage(&self, owner: Option<&str>) -> Result<PendingUsage> {
        self.timed("pending_usage", self.inner.pending_usage(owner))
            .await
    }

    async fn expire_pending(&self, before: SystemTime) -> Result<PendingUsage> {
        self.timed("expire_pending", self.inner.expire_pending(before))
            .await
    }
}

struct InstrumentedUpload {
    inner: Box<dyn Upload>,
    name: String,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl Upload for InstrumentedUpload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let r = self.inner.write(data).await;
        if r.is_err() {
            self.metrics
                .backend_errors
                .get_or_create(&OpLabels {
                    backend: self.name.clone(),
                    op: "write",
                })
                .inc();
        }
        r
    }

    async fn complete(self: Box<Self>) -> Result<Metadata> {
        let started = Instant::now();
        let r = self.inner.complete().await;
        self.metrics.op(&self.name, "complete", started, &r);
        r
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        let started = Instant::now();
        let r = self.inner.abort().await;
        self.metrics.op(&self.name, "abort", started, &r);
        r
    }

    fn set_sha256(&mut self, digest: [u8; 32]) {
        self.inner.set_sha256(digest);
    }

    fn hash_sha256(&mut self) -> bool {
        self.inner.hash_sha256()
    }

    fn sha256(&mut self) -> Option<[u8; 32]> {
        self.inner.sha256()
    }

    async fn suspend(self: Box<Self>, key: &PendingKey) -> Result<Option<u64>> {
        let started = Instant::now();
        let r = self.inner.suspend(key).await;
        self.metrics.op(&self.name, "suspend", started, &r);
        r
    }
}

#[cfg(test)]
mod tests {
    /// Every defaulted storage method reaches the instrumented backend.
    #[tokio::test]
    async fn the_instrumented_backend_forwards_every_method() {
        ftpgate_storage::testkit::wrapper_forwards_every_method(|inner| {
            std::sync::Arc::new(super::InstrumentedBackend::new(
                inner,
                "storage",
                std::sync::Arc::new(super::Metrics::new()),
            ))
        })
        .await;
    }

    use super::*;

    #[test]
    fn exposition_names_and_classes() {
        let m = Metrics::new();
        m.command("RETR", 226);
        m.command("RETR", 550);
        m.command("RETR", 550);
        m.logins.get_or_create(&ResultLabel { result: "ok" }).inc();
        m.transfer("in", "storage", true, 1234, 0.5);
        let text = m.encode();
        assert!(
            text.contains(r#"ftpgate_commands_total{verb="RETR",reply="5xx"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"ftpgate_commands_total{verb="RETR",reply="2xx"} 1"#));
        assert!(text.contains(r#"ftpgate_logins_total{result="ok"} 1"#));
        assert!(
            text.contains(r#"ftpgate_transfer_bytes_total{direction="in",backend="storage"} 1234"#)
        );
        assert!(text.contains("ftpgate_transfer_duration_seconds_count{direction=\"in\"} 1"));
        assert!(text.contains("ftpgate_sessions_active 0"));
    }

    #[test]
    fn accept_header_negotiation() {
        use Format::*;
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/OpenMetrics-Text; version=1.0.0")),
            OpenMetrics
        );
        assert_eq!(Format::negotiate(None), Text);
        assert_eq!(Format::negotiate(Some("*/*")), Text);
        assert_eq!(Format::negotiate(Some("text/plain")), Text);
        assert_eq!(
            Format::negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.5")),
            Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Text
        );
        assert!(OpenMetrics
            .content_type()
            .starts_with("application/openmetrics-text; version=1.0.0"));
        assert!(Text.content_type().starts_with("text/plain; version=0.0.4"));
    }

    #[test]
    fn openmetrics_to_text_names() {
        let om = "# HELP a_things Things seen.\n# TYPE a_things counter\n\
                  a_things_total{k=\"v # {x}\"} 3 # {trace=\"1\"} 1.0\n\
                  a_things_created{k=\"v\"} 1.7e9\n\
                  # HELP b Build.\n# TYPE b info\nb_info{version=\"1\"} 1\n\
                  # HELP c_seconds Lat.\n# TYPE c_seconds histogram\n# UNIT c_seconds seconds\n\
                  c_seconds_bucket{le=\"+Inf\"} 1\nc_seconds_sum 0.5\nc_seconds_count 1\n\
                  # TYPE d unknown\nd 1\n# EOF\n";
        let text = openmetrics_to_text(om);
        assert_eq!(
            text,
            "# HELP a_things_total Things seen.\n# TYPE a_things_total counter\n\
             a_things_total{k=\"v # {x}\"} 3\n\
             # HELP b_info Build.\n# TYPE b_info gauge\nb_info{version=\"1\"} 1\n\
             # HELP c_seconds Lat.\n# TYPE c_seconds histogram\n\
             c_seconds_bucket{le=\"+Inf\"} 1\nc_seconds_sum 0.5\nc_seconds_count 1\n\
             # TYPE d untyped\nd 1\n"
        );
        let m = Metrics::new();
        m.command("RETR", 226);
        let text = m.encode_as(Format::Text);
        assert!(
            text.contains("# TYPE ftpgate_commands_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE ftpgate_build_info gauge\n"), "{text}");
        assert!(!text.contains("# EOF"));
        assert!(m.encode_as(Format::OpenMetrics).ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn backend_calls_are_timed_and_errors_counted() {
        let metrics = Arc::new(Metrics::new());
        let inner: Arc<dyn StorageBackend> = Arc::new(ftpgate_backend_memory::MemoryBackend::new());
        let b = InstrumentedBackend::new(inner, "mem", metrics.clone());
        let missing = VPath::parse("/nope").unwrap();
        assert!(b.stat(&missing).await.is_err());
        assert!(b.stat(&VPath::root()).await.is_ok());
        let mut up = b
            .create(&VPath::parse("/f").unwrap(), WriteMode::Truncate)
            .await
            .unwrap();
        up.write(Bytes::from_static(b"abc")).await.unwrap();
        up.complete().await.unwrap();
        let text = metrics.encode();
        assert!(
            text.contains(r#"ftpgate_backend_errors_total{backend="mem",op="stat"} 1"#),
            "{text}"
        );
        assert!(text.contains(
            r#"ftpgate_backend_operation_duration_seconds_count{backend="mem",op="stat"} 2"#
        ));
        assert!(text.contains(
            r#"ftpgate_backend_operation_duration_seconds_count{backend="mem",op="complete"} 1"#
        ));
    }
}
