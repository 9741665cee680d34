//! The server: builds the backend, binds the control listener, enforces the
//! session limits (global and per client IP, 421 beyond them — RFC 959 §4.2 "421
//! Service not available, closing control connection") and shuts down gracefully:
//! on the shutdown signal `/readyz` turns 503 at once, the listeners keep accepting
//! for `server.shutdown_delay_secs` (so the load balancer moves new sessions away
//! first), then close; quiet sessions get 421 and running transfers may finish
//! within `server.shutdown_grace_secs`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use ftpgate_storage::{ErrorKind, StorageBackend, VPath};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{self, Authenticator};
use crate::config::{Config, PortRange, StorageConfig, StorageKind, UserConfig};
use crate::datachan::{DataPolicy, SharedPorts};
use crate::metrics::{InstrumentedBackend, Metrics};
use crate::protocol::{code, Reply};
use crate::proxy::ProxyHeader;
use crate::session::Session;

/// What every session shares.
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// Users and password checks.
    pub auth: Authenticator,
    /// The default backend (`[storage]`).
    pub storage: Arc<dyn StorageBackend>,
    /// Named backends (`[backends.NAME]`).
    pub backends: HashMap<String, Arc<dyn StorageBackend>>,
    /// Parsed `passive.ports`.
    pub passive_ports: Option<PortRange>,
    /// Resolved `passive.advertise` and `passive.advertise_for`, refreshed.
    advertise: std::sync::RwLock<Advertise>,
    /// PROXY mode's shared data port (`passive.proxy_listen`).
    pub shared_ports: Option<Arc<SharedPorts>>,
    /// Parsed `server.proxy_trusted`.
    pub proxy_trusted: Vec<ipnet::IpNet>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// FTPS, when a listener uses it.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Per-IP bans after failed logins.
    pub bans: crate::bans::Bans,
    /// `passive.max_pending` places for pending passive listeners.
    pub passive_slots: Arc<tokio::sync::Semaphore>,
    /// Cancelled on SIGTERM/SIGINT: `/readyz` answers 503 while the listeners
    /// still accept for `server.shutdown_delay_secs`.
    pub draining: CancellationToken,
    /// Cancelled when the listeners close (after the delay): no new sessions,
    /// sessions quiet for [`DRAIN_QUIET`] get 421.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown grace period ends: running transfers are cut.
    pub hard_stop: CancellationToken,
    listening: std::sync::atomic::AtomicBool,
    /// Background backend checks (`crate::health`).
    pub health: crate::health::Health,
    /// Webhook notifications (`[[webhooks]]`).
    pub events: crate::webhooks::Events,
    /// Per-user session counts and bandwidth buckets (`users.max_sessions`,
    /// `users.*_bytes_per_sec`).
    pub user_limits: Arc<crate::limits::UserLimits>,
    /// Counted storage areas for `users.quota_bytes` / `users.quota_files`.
    pub quotas: Arc<crate::quota::Quotas>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    total: Mutex<usize>,
    next_id: AtomicU64,
}

/// The PASV address table: per-client-network rules, then the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Advertise {
    /// `passive.advertise`, resolved.
    pub default: Option<IpAddr>,
    /// `passive.advertise_for`, resolved, in order.
    pub rules: Vec<(ipnet::IpNet, IpAddr)>,
}

impl Advertise {
    /// Resolves every address and host name of `[passive]`.
    pub async fn resolve(cfg: &crate::config::PassiveConfig) -> Result<Self, String> {
        let default = match &cfg.advertise {
            Some(a) => Some(crate::config::resolve_advertise(a).await?),
            None => None,
        };
        let mut rules = Vec::new();
        for r in &cfg.advertise_for {
            let net = crate::config::parse_net(&r.cidr)?;
            rules.push((net, crate::config::resolve_advertise(&r.address).await?));
        }
        Ok(Self { default, rules })
    }

    /// The address to announce to a client at `peer`.
    pub fn for_peer(&self, peer: IpAddr) -> Option<IpAddr> {
        let peer = crate::datachan::canonical(peer);
        self.rules
            .iter()
            .find(|(net, _)| net.contains(&peer))
            .map(|(_, ip)| *ip)
            .or(self.default)
    }
}

impl Shared {
    /// The PASV address for a client at `peer` (`passive.advertise_for`, then
    /// `passive.advertise`); `None`: the address the client connected to.
    pub fn advertised_ip(&self, peer: IpAddr) -> Option<IpAddr> {
        self.advertise
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .for_peer(peer)
    }

    /// Who may open this session's data connection, and how long to wait.
    pub fn data_policy(&self, session: &Session) -> DataPolicy {
        DataPolicy {
            control_peer: session.peer.ip(),
            local_ip: session.socket_local.ip(),
            check_peer: self.config.passive.check_peer_ip,
            proxy: self
                .config
                .server
                .proxy_protocol
                .then(|| self.proxy_trusted.clone()),
            timeout: Duration::from_secs(self.config.server.data_timeout_secs),
        }
    }

    /// `/readyz`: listening, no shutdown begun (SIGTERM turns it false at once),
    /// and no backend failing its background checks for
    /// `server.backend_unready_after_secs`. Reads memory only: answers at once,
    /// never waits on storage. Also sets `ftpgate_ready`.
    pub async fn is_ready(&self) -> bool {
        let after = Duration::from_secs(self.config.server.backend_unready_after_secs);
        let ok = self.listening.load(Ordering::SeqCst)
            && !self.draining.is_cancelled()
            && !self.shutdown.is_cancelled()
            && self.health.ready(after);
        self.metrics.ready.set(i64::from(ok));
        ok
    }

    /// The metrics label of a user's backend: `storage` or the `[backends.NAME]`.
    pub fn backend_label<'a>(&self, user: Option<&'a crate::auth::User>) -> &'a str {
        user.and_then(|u| u.backend.as_deref()).unwrap_or("storage")
    }

    /// The backend a user works on: `users.backend`, else `[storage]`.
    pub fn backend_for(&self, user: Option<&crate::auth::User>) -> &Arc<dyn StorageBackend> {
        user.and_then(|u| u.backend.as_ref())
            .and_then(|name| self.backends.get(name))
            .unwrap_or(&self.storage)
    }
}

/// A bound, ready server.
pub struct Server {
    shared: Arc<Shared>,
    listener: TcpListener,
    http: Option<TcpListener>,
    data: Option<TcpListener>,
    implicit: Option<TcpListener>,
}

/// Every backend with resuming on (`resume_window_secs` > 0) and its window.
fn resumable_backends(shared: &Shared) -> Vec<(Arc<dyn StorageBackend>, std::time::Duration)> {
    let mut out = Vec::new();
    if let Some(w) = shared.config.storage.resume_window() {
        out.push((shared.storage.clone(), w));
    }
    for (name, b) in &shared.backends {
        if let Some(w) = shared
            .config
            .backends
            .get(name)
            .and_then(|c| c.resume_window())
        {
            out.push((b.clone(), w));
        }
    }
    out
}

/// Builds one backend from its `[storage]` or `[backends.NAME]` section; `key`
/// names the section in error messages.
pub async fn build_storage(
    storage: &StorageConfig,
    key: &str,
) -> anyhow::Result<Arc<dyn StorageBackend>> {
    Ok(match storage.kind {
        StorageKind::Local => Arc::new(
            ftpgate_backend_local::LocalBackend::new(storage.root.clone())
                .with_context(|| format!("{key}.root {}", storage.root.display()))?,
        ),
        StorageKind::Memory => Arc::new(ftpgate_backend_memory::MemoryBackend::new()),
        StorageKind::S3 => {
            let cfg = storage.s3_config(key).map_err(anyhow::Error::msg)?;
            let backend = ftpgate_backend_s3::S3Backend::new(cfg)
                .await
                .with_context(|| format!("{key}: S3 backend"))?;
            // Say clearly at start when the bucket cannot be reached.
            backend.check().await.with_context(|| key.to_owned())?;
            Arc::new(backend)
        }
        StorageKind::Gcs => {
            let cfg = storage.gcs_config(key).map_err(anyhow::Error::msg)?;
            let backend = ftpgate_backend_cloud::CloudBackend::gcs(cfg)
                .with_context(|| format!("{key}: GCS backend"))?;
            backend.check().await.with_context(|| key.to_owned())?;
            Arc::new(backend)
        }
        StorageKind::Azure => {
            let cfg = storage.azure_config(key).map_err(anyhow::Error::msg)?;
            let backend = ftpgate_backend_cloud::CloudBackend::azure(cfg)
                .with_context(|| format!("{key}: Azure backend"))?;
            backend.check().await.with_context(|| key.to_owned())?;
            Arc::new(backend)
        }
    })
}

/// Creates every level of `dir` that does not exist yet.
pub(crate) async fn ensure_dir(storage: &dyn StorageBackend, dir: &VPath) -> anyhow::Result<()> {
    let mut p = VPath::root();
    for seg in dir.segments() {
        p = p.child(seg)?;
        match storage.mkdir(&p).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating home {dir}")),
        }
    }
    Ok(())
}

impl Server {
    /// Builds everything and binds `server.listen`. With no `[[users]]` (only
    /// allowed on loopback) a user `ftpgate` with a random password is created and
    /// its login printed once in the log.
    pub async fn bind(mut config: Config) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        if config.users.is_empty() && config.users_file.is_none() && config.auth_hook.is_none() {
            let password = random_password();
            let hash =
                auth::hash_password(&password).map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
            config.users.push(UserConfig::new("ftpgate", hash));
            tracing::warn!(
                user = "ftpgate",
                password = %password,
                "no [[users]] configured: generated a login for this run (loopback only)"
            );
        }
        let metrics = Arc::new(Metrics::new());
        let quotas = Arc::new(crate::quota::Quotas::default());
        let instrument = |b: Arc<dyn StorageBackend>, name: &str| -> Arc<dyn StorageBackend> {
            let b: Arc<dyn StorageBackend> =
                Arc::new(InstrumentedBackend::new(b, name, metrics.clone()));
            Arc::new(crate::quota::AccountedBackend::new(b, name, quotas.clone()))
        };
        let storage = instrument(build_storage(&config.storage, "storage").await?, "storage");
        let mut backends = HashMap::new();
        for (name, section) in &config.backends {
            let b = build_storage(section, &format!("backends.{name}")).await?;
            backends.insert(name.clone(), instrument(b, name));
        }
        let users = config.all_users().map_err(anyhow::Error::msg)?;
        let auth = Authenticator::new(&users)
            .map_err(anyhow::Error::msg)?
            .with_login_cache(Duration::from_secs(config.server.login_cache_secs));
        let auth = match &config.auth_hook {
            Some(h) => auth.with_hook(
                crate::auth_hook::AuthHook::new(
                    &config,
                    h,
                    storage.clone(),
                    backends.clone(),
                    metrics.clone(),
                )
                .map_err(anyhow::Error::msg)?,
            ),
            None => auth,
        };
        for u in auth.users() {
            let backend = u
                .backend
                .as_ref()
                .and_then(|n| backends.get(n))
                .unwrap_or(&storage);
            ensure_dir(backend.as_ref(), &u.home).await?;
        }
        let advertise = Advertise::resolve(&config.passive)
            .await
            .map_err(anyhow::Error::msg)?;
        let listen = config.listen_addr().map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on server.listen = {listen}"))?;
        let http = match &config.http.listen {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .with_context(|| format!("cannot listen on http.listen = {a}"))?,
            ),
            None => None,
        };
        let tls = crate::tls::Tls::from_config(&config.tls, config.server.tls)
            .map_err(anyhow::Error::msg)?
            .map(Arc::new);
        let implicit = match &config.tls.implicit_listen {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .with_context(|| format!("cannot listen on tls.implicit_listen = {a}"))?,
            ),
            None => None,
        };
        let bans = crate::bans::Bans::new(
            config.server.ban_after_failures,
            Duration::from_secs(config.server.ban_window_secs),
            Duration::from_secs(config.server.ban_secs),
            Duration::from_secs(config.server.ban_max_secs),
        )
        .with_ipv6_prefix(config.server.ipv6_prefix_len);
        let passive_slots = Arc::new(tokio::sync::Semaphore::new(config.passive.max_pending));
        let data = match &config.passive.proxy_listen {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .with_context(|| format!("cannot listen on passive.proxy_listen = {a}"))?,
            ),
            None => None,
        };
        let passive_ports = config.passive_ports();
        let shared_ports = match (&data, passive_ports) {
            (Some(_), Some(range)) => Some(SharedPorts::new(range)),
            _ => None,
        };
        let proxy_trusted = config
            .server
            .proxy_trusted
            .iter()
            .map(|c| crate::config::parse_net(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?;
        // Every backend passed its check above: all up. Order: storage, then the
        // named backends sorted (the order `run` starts their probes in).
        let health = crate::health::Health::new(
            std::iter::once("storage").chain(config.backends.keys().map(String::as_str)),
            &metrics,
        );
        let events =
            crate::webhooks::Events::start(&config, metrics.clone()).map_err(anyhow::Error::msg)?;
        let shared = Arc::new(Shared {
            events,
            passive_ports,
            config,
            auth,
            storage,
            backends,
            advertise: std::sync::RwLock::new(advertise),
            shared_ports,
            proxy_trusted,
            metrics,
            tls,
            bans,
            passive_slots,
            draining: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            listening: std::sync::atomic::AtomicBool::new(false),
            health,
            user_limits: Arc::default(),
            quotas,
            per_ip: Mutex::new(HashMap::new()),
            total: Mutex::new(0),
            next_id: AtomicU64::new(1),
        });
        Ok(Self {
            shared,
            listener,
            http,
            data,
            implicit,
        })
    }

    /// The bound `http.listen` address, if any.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// What every session shares (metrics, readiness), for embedding.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Reads the number of open sessions (for [`crate::resources::trim_when_idle`]).
    pub fn session_counter(&self) -> impl Fn() -> u64 + Send + 'static {
        let shared = self.shared.clone();
        move || *shared.total.lock().unwrap_or_else(|p| p.into_inner()) as u64
    }

    /// The bound control address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts sessions until `shutdown` resolves, then drains them: readiness
    /// turns false at once while the listeners keep accepting for
    /// `server.shutdown_delay_secs` (the load balancer's checks notice and move new
    /// sessions elsewhere), then the listeners close, sessions quiet for
    /// [`DRAIN_QUIET`] get 421, running transfers may finish within
    /// `server.shutdown_grace_secs`, after which they are cut (426) and their
    /// sessions closed with 421.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        let addr = self.local_addr()?;
        if let Some(l) = self.http.take() {
            tracing::info!(addr = %l.local_addr()?, "http endpoint bound");
            tokio::spawn(crate::http::serve(l, self.shared.clone()));
        }
        if let Some(l) = self.data.take() {
            tracing::info!(addr = %l.local_addr()?, "shared data port bound");
            tokio::spawn(serve_shared_data(l, self.shared.clone()));
        }
        tokio::spawn(refresh_advertise(self.shared.clone()));
        tokio::spawn(reload_on_sighup(self.shared.clone()));
        tokio::spawn(watch_certificate(self.shared.clone()));
        let every = Duration::from_secs(self.shared.config.server.backend_check_interval_secs);
        if !every.is_zero() {
            // The order of `Health::new` in `bind`: storage, then the named backends.
            let named = self.shared.config.backends.keys();
            let all = std::iter::once(Some(self.shared.storage.clone()))
                .chain(named.map(|n| self.shared.backends.get(n).cloned()));
            for (i, b) in all.enumerate() {
                if let Some(b) = b {
                    tokio::spawn(crate::health::probe(i, b, self.shared.clone(), every));
                }
            }
        }
        tokio::spawn(crate::resume::sweep(
            resumable_backends(&self.shared),
            self.shared.metrics.clone(),
        ));
        if let Some(l) = &self.implicit {
            tracing::info!(addr = %l.local_addr()?, "implicit FTPS bound");
        }
        self.shared.listening.store(true, Ordering::SeqCst);
        self.shared.is_ready().await;
        tracing::info!(%addr, storage = self.shared.storage.kind(), "listening");
        tokio::pin!(shutdown);
        let implicit = self.implicit.take();
        let delay = Duration::from_secs(self.shared.config.server.shutdown_delay_secs);
        // Set when the shutdown signal arrives: the listeners close then.
        let mut close_at: Option<tokio::time::Instant> = None;
        loop {
            let accept_until = async {
                match close_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let (accepted, is_implicit) = tokio::select! {
                _ = &mut shutdown, if close_at.is_none() => {
                    self.shared.draining.cancel();
                    self.shared.is_ready().await;
                    tracing::info!(
                        delay_secs = delay.as_secs(),
                        "shutdown requested: /readyz answers 503, still accepting until the delay ends"
                    );
                    close_at = Some(tokio::time::Instant::now() + delay);
                    continue;
                }
                _ = accept_until => break,
                a = self.listener.accept() => (a, false),
                a = accept_opt(implicit.as_ref()) => (a, true),
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let shared = self.shared.clone();
            tracker.spawn(async move { admit(stream, peer, shared, is_implicit).await });
        }
        tracing::info!(
            "shutting down: listeners closed, quiet sessions closed, transfers may finish"
        );
        drop(self.listener);
        drop(implicit);
        self.shared.shutdown.cancel();
        self.shared.metrics.ready.set(0);
        tracker.close();
        let grace = Duration::from_secs(self.shared.config.server.shutdown_grace_secs);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("grace period over, cutting the remaining transfers");
            self.shared.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        }
        self.shared.events.drain(crate::webhooks::DRAIN_LIMIT).await;
        Ok(())
    }
}

/// How long a session must stay silent after the listeners closed before it is
/// closed with 421: a client in the middle of a command sequence (PASV, then STOR)
/// is not cut between two commands; one that stays busy is closed when the grace
/// period ends.
pub const DRAIN_QUIET: Duration = Duration::from_secs(2);

/// Resolves when a session waiting for its next command must be closed (RFC 959
/// §4.2 "421 Service not available, closing control connection"): the listeners
/// have closed and the session has been silent for [`DRAIN_QUIET`] (the control
/// loop re-creates this future after every command), or the grace period is over.
pub async fn drained(shared: &Shared) {
    shared.shutdown.cancelled().await;
    tokio::select! {
        _ = tokio::time::sleep(DRAIN_QUIET) => {}
        _ = shared.hard_stop.cancelled() => {}
    }
}

/// Accepts on an optional listener; pending forever without one.
async fn accept_opt(l: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// On SIGHUP: re-reads the users (`users_file`) and the TLS certificate; what
/// fails to load is logged and the old one stays.
async fn reload_on_sighup(shared: Arc<Shared>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match reload_users(&shared).await {
                Ok(n) => tracing::info!(users = n, "users reloaded"),
                Err(e) => tracing::error!(error = %e, "users not reloaded, keeping the old ones"),
            }
            if let Some(tls) = &shared.tls {
                match tls.reload(true) {
                    Ok(_) => tracing::info!("TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate not reloaded, keeping the old one")
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = shared;
}

/// Reloads the TLS certificate when its files change (`tls.reload_interval_secs`),
/// e.g. a cert-manager renewal of a mounted Secret.
async fn watch_certificate(shared: Arc<Shared>) {
    let every = shared.config.tls.reload_interval_secs;
    let Some(tls) = shared.tls.clone() else {
        return;
    };
    if every == 0 {
        return;
    }
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(every)) => {}
        }
        match tls.reload(false) {
            Ok(true) => tracing::info!("TLS certificate changed on disk, reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate changed but does not load, keeping the old one")
            }
        }
    }
}

/// Reads inline `[[users]]` plus `users_file` again and swaps them in.
pub async fn reload_users(shared: &Shared) -> anyhow::Result<usize> {
    let users = shared.config.all_users().map_err(anyhow::Error::msg)?;
    shared
        .config
        .check_users(&users)
        .map_err(anyhow::Error::msg)?;
    for u in &users {
        let home = VPath::parse(&u.home).map_err(|e| anyhow::anyhow!("{}: {e}", u.name))?;
        let backend = u
            .backend
            .as_ref()
            .and_then(|n| shared.backends.get(n))
            .unwrap_or(&shared.storage);
        ensure_dir(backend.as_ref(), &home).await?;
    }
    shared.auth.replace(&users).map_err(anyhow::Error::msg)?;
    Ok(users.len())
}

/// Re-resolves host names of `passive.advertise`/`advertise_for` every
/// `passive.advertise_refresh_secs` (a load balancer's address can move).
async fn refresh_advertise(shared: Arc<Shared>) {
    let cfg = &shared.config.passive;
    let names = cfg
        .advertise
        .iter()
        .chain(cfg.advertise_for.iter().map(|r| &r.address))
        .any(|a| a.parse::<IpAddr>().is_err());
    if !names || cfg.advertise_refresh_secs == 0 {
        return;
    }
    let every = Duration::from_secs(cfg.advertise_refresh_secs);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match Advertise::resolve(cfg).await {
            Ok(fresh) => {
                let mut cur = shared.advertise.write().unwrap_or_else(|p| p.into_inner());
                if *cur != fresh {
                    tracing::info!(?fresh, "passive advertise address changed");
                    *cur = fresh;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "passive advertise not re-resolved, keeping the old address")
            }
        }
    }
}

/// PROXY mode's shared data port: reads each connection's PROXY header and hands
/// it to the session that reserved the original destination port.
async fn serve_shared_data(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (mut stream, from) = tokio::select! {
            _ = shared.hard_stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let Some(header) =
                crate::proxy::read_trusted(&mut stream, from, &shared.proxy_trusted).await
            else {
                return;
            };
            let (source, destination) = match header {
                Ok(ProxyHeader::Proxied {
                    source,
                    destination,
                }) => (source, destination),
                Ok(ProxyHeader::Local) => {
                    tracing::debug!(%from, "PROXY LOCAL on the shared data port (health check)");
                    return;
                }
                Err(e) => {
                    tracing::debug!(%from, error = %e, "shared data port: no valid PROXY header");
                    return;
                }
            };
            let Some(ports) = &shared.shared_ports else {
                return;
            };
            let check = shared.config.passive.check_peer_ip;
            if let Err(why) = ports.deliver(destination.port(), source.ip(), check, stream) {
                tracing::warn!(client = %source, port = destination.port(), ?why, "refused data connection on the shared port");
            }
        });
    }
}

/// Reads the PROXY header when `server.proxy_protocol` is on, refuses banned
/// clients, applies the session limits to the real client, then serves the
/// connection (`implicit`: the implicit-FTPS listener).
async fn admit(
    mut stream: TcpStream,
    socket_peer: SocketAddr,
    shared: Arc<Shared>,
    implicit: bool,
) {
    let Ok(socket_local) = stream.local_addr() else {
        return;
    };
    let (peer, local) = if shared.config.server.proxy_protocol {
        let Some(header) = Box::pin(crate::proxy::read_trusted(
            &mut stream,
            socket_peer,
            &shared.proxy_trusted,
        ))
        .await
        else {
            return;
        };
        match header {
            Ok(ProxyHeader::Proxied {
                source,
                destination,
            }) => (source, destination),
            Ok(ProxyHeader::Local) => (socket_peer, socket_local),
            Err(e) => {
                // Health checks may connect and close without a header: debug.
                tracing::debug!(peer = %socket_peer, error = %e, "no valid PROXY header");
                return;
            }
        }
    } else {
        (socket_peer, socket_local)
    };
    let ip = crate::datachan::canonical(peer.ip());
    if let Some(left) = shared.bans.banned(ip) {
        tracing::info!(%peer, ban_left_secs = left.as_secs(), "refused a banned client");
        if !implicit {
            let reply = Reply::new(
                code::SERVICE_NOT_AVAILABLE,
                "Too many failed logins from your address, try again later",
            );
            let _ = stream.write_all(reply.to_wire().as_bytes()).await;
        }
        return;
    }
    // Caps count an IPv6 network (`server.ipv6_prefix_len`) as one client.
    let key = crate::bans::client_key(ip, shared.config.server.ipv6_prefix_len);
    let Some(_slot) = SessionSlot::take(&shared, key) else {
        tracing::info!(%peer, "session limit reached");
        let reply = Reply::new(
            code::SERVICE_NOT_AVAILABLE,
            "Too many connections, try again later",
        );
        let _ = stream.write_all(reply.to_wire().as_bytes()).await;
        return;
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let mut session = Session::new(id, peer, local);
    session.socket_local = socket_local;
    session.tls_mode = if implicit {
        crate::config::TlsMode::Required
    } else {
        shared.config.server.tls
    };
    shared.metrics.sessions.inc();
    shared.metrics.sessions_active.inc();
    // Boxed: the session's future on its own, instead of laid out beside everything
    // `admit` awaited before it (the PROXY header, the refusals) in every task.
    Box::pin(crate::connection::serve(
        stream,
        shared.clone(),
        session,
        implicit,
    ))
    .await;
    shared.metrics.sessions_active.dec();
}

/// A counted session; releases its slot when dropped.
struct SessionSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl SessionSlot {
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<Self> {
        let cfg = &shared.config.server;
        let mut total = shared.total.lock().unwrap_or_else(|p| p.into_inner());
        let mut per_ip = shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let mine = per_ip.entry(ip).or_insert(0);
        if *total >= cfg.max_sessions || *mine >= cfg.max_sessions_per_ip {
            if *mine == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *total += 1;
        *mine += 1;
        Some(Self {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut total = self.shared.total.lock().unwrap_or_else(|p| p.into_inner());
        *total = total.saturating_sub(1);
        let mut per_ip = self.shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

fn random_password() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdvertiseRule, PassiveConfig};

    #[tokio::test]
    async fn advertise_rules_first_match_then_default() {
        let cfg = PassiveConfig {
            advertise: Some("203.0.113.7".into()),
            advertise_for: vec![
                AdvertiseRule {
                    cidr: "10.1.0.0/16".into(),
                    address: "10.1.2.3".into(),
                },
                AdvertiseRule {
                    cidr: "10.0.0.0/8".into(),
                    address: "localhost".into(),
                },
            ],
            ..Default::default()
        };
        let a = Advertise::resolve(&cfg).await.unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(a.for_peer(ip("10.1.9.9")), Some(ip("10.1.2.3")));
        assert_eq!(a.for_peer(ip("10.200.0.1")), Some(ip("127.0.0.1")));
        assert_eq!(a.for_peer(ip("::ffff:10.1.0.1")), Some(ip("10.1.2.3")));
        assert_eq!(a.for_peer(ip("192.0.2.1")), Some(ip("203.0.113.7")));
        let none = Advertise::resolve(&PassiveConfig::default()).await.unwrap();
        assert_eq!(none.for_peer(ip("192.0.2.1")), None);
        let bad = PassiveConfig {
            advertise: Some("no-such-host.invalid".into()),
            ..Default::default()
        };
        assert!(Advertise::resolve(&bad).await.is_err());
    }
}
