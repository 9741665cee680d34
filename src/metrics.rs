//! Prometheus metrics (served as text on `/metrics` by [`crate::http`]): sessions,
//! logins, commands by verb and reply class (RFC 959 §4.2 first digit), bytes and
//! durations of transfers, and the latency and errors of every backend operation,
//! measured by wrapping each backend in an [`InstrumentedBackend`].

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use ftpgate_storage::{
    ByteStream, Capabilities, EntryStream, Metadata, Result, StorageBackend, Upload, VPath,
    WriteMode,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
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
    /// 1 while a backend passes its background check (`crate::health`).
    pub backend_up: Family<BackendLabel, Gauge>,
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
            commands: Family::default(),
            transfer_bytes: Family::default(),
            transfers: Family::default(),
            transfer_duration: Family::new_with_constructor(transfer_histogram as fn() -> _),
            backend_duration: Family::new_with_constructor(op_histogram as fn() -> _),
            backend_errors: Family::default(),
            ready: Gauge::default(),
            backend_up: Family::default(),
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
            "ftpgate_backend_up",
            "1 while the backend passes its background reachability check",
            m.backend_up.clone(),
        );
        Self { registry, ..m }
    }

    /// Sets `ftpgate_backend_up{backend}`.
    pub fn backend_up_set(&self, backend: &str, up: bool) {
        self.backend_up
            .get_or_create(&BackendLabel {
                backend: backend.to_owned(),
            })
            .set(i64::from(up));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
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

    async fn stored_sha256(&self, path: &VPath) -> Result<Option<([u8; 32], u64)>> {
        self.timed("stored_sha256", self.inner.stored_sha256(path))
            .await
    }

    async fn set_permissions(&self, path: &VPath, mode: u32) -> Result<()> {
        self.timed("set_permissions", self.inner.set_permissions(path, mode))
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
}

#[cfg(test)]
mod tests {
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
