//! The server: builds the backend, binds the control listener, enforces the
//! session limits (global and per client IP, 421 beyond them — RFC 959 §4.2 "421
//! Service not available, closing control connection") and shuts down gracefully:
//! on the shutdown signal it stops accepting, closes idle sessions with 421, and lets
//! running transfers finish within `server.shutdown_grace_secs`.

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
use tracing::Instrument;

use crate::auth::{self, Authenticator};
use crate::config::{Config, PortRange, StorageConfig, StorageKind, UserConfig};
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
    /// Resolved `passive.advertise`.
    pub advertise: Option<IpAddr>,
    /// Cancelled when shutdown begins.
    pub shutdown: CancellationToken,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    total: Mutex<usize>,
    next_id: AtomicU64,
}

impl Shared {
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
    })
}

/// Creates every level of `dir` that does not exist yet.
async fn ensure_dir(storage: &dyn StorageBackend, dir: &VPath) -> anyhow::Result<()> {
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
        if config.users.is_empty() {
            let password = random_password();
            let hash =
                auth::hash_password(&password).map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
            config.users.push(UserConfig {
                name: "ftpgate".into(),
                password_hash: hash,
                home: "/".into(),
                permissions: auth::Permission::all_vec(),
                backend: None,
            });
            tracing::warn!(
                user = "ftpgate",
                password = %password,
                "no [[users]] configured: generated a login for this run (loopback only)"
            );
        }
        let storage = build_storage(&config.storage, "storage").await?;
        let mut backends = HashMap::new();
        for (name, section) in &config.backends {
            let b = build_storage(section, &format!("backends.{name}")).await?;
            backends.insert(name.clone(), b);
        }
        let auth = Authenticator::new(&config.users).map_err(anyhow::Error::msg)?;
        for u in auth.users() {
            let backend = u
                .backend
                .as_ref()
                .and_then(|n| backends.get(n))
                .unwrap_or(&storage);
            ensure_dir(backend.as_ref(), &u.home).await?;
        }
        let advertise = match &config.passive.advertise {
            Some(a) => Some(
                crate::config::resolve_advertise(a)
                    .await
                    .map_err(anyhow::Error::msg)?,
            ),
            None => None,
        };
        let listen = config.listen_addr().map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on server.listen = {listen}"))?;
        let shared = Arc::new(Shared {
            passive_ports: config.passive_ports(),
            config,
            auth,
            storage,
            backends,
            advertise,
            shutdown: CancellationToken::new(),
            per_ip: Mutex::new(HashMap::new()),
            total: Mutex::new(0),
            next_id: AtomicU64::new(1),
        });
        Ok(Self { shared, listener })
    }

    /// The bound control address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts sessions until `shutdown` resolves, then drains them.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        let addr = self.local_addr()?;
        tracing::info!(%addr, storage = self.shared.storage.kind(), "listening");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => {
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
                    tracker.spawn(async move { admit(stream, peer, shared).await });
                }
            }
        }
        tracing::info!(
            "shutting down: no new sessions, idle sessions closed, transfers may finish"
        );
        drop(self.listener);
        self.shared.shutdown.cancel();
        tracker.close();
        let grace = Duration::from_secs(self.shared.config.server.shutdown_grace_secs);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("grace period over, closing remaining sessions");
        }
        Ok(())
    }
}

/// Applies the session limits, then serves the connection.
async fn admit(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let ip = crate::datachan::canonical(peer.ip());
    let Some(_slot) = SessionSlot::take(&shared, ip) else {
        tracing::info!(%peer, "session limit reached");
        let _ = stream
            .write_all(b"421 Too many connections, try again later\r\n")
            .await;
        return;
    };
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("session", id, peer = %peer, user = tracing::field::Empty);
    let session = Session::new(id, peer, local);
    crate::connection::serve(stream, shared.clone(), session)
        .instrument(span)
        .await;
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
