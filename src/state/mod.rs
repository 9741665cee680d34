//! What every session shares, built from the configuration without binding any
//! socket ([`Shared::build`]), so handlers can be run in-process over the memory
//! backend. Small parts, each with one concern:
//! - [`Backends`]: `[storage]` and `[backends.NAME]`, and the one user → backend
//!   mapping ([`Backends::resolve`], used once per login: [`Shared::login`]);
//! - [`DataPlane`]: passive ports, PASV addresses, FTPS, PROXY senders;
//! - [`Limits`]: bans, per-user session caps and bandwidth, quotas;
//! - [`Lifecycle`]: readiness and the three shutdown stages;
//! - [`Sessions`]: open-session counts for the listeners' caps.
//!
//! `server` (listeners, admission, shutdown) depends on this module, never the
//! reverse.

mod backends;
mod data;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, User};
use crate::config::{Config, StorageConfig};
use crate::datachan::DataPolicy;
use crate::metrics::Metrics;

pub(crate) use backends::ensure_dir;
pub use backends::{Backends, UserBackend, DEFAULT_LABEL};
pub use data::{Advertise, DataPlane};

/// What every session shares.
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// Users and password checks.
    pub auth: Authenticator,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Webhook notifications (`[[webhooks]]`).
    pub events: crate::webhooks::Events,
    /// The storage backends.
    pub backends: Backends,
    /// Passive ports, PASV addresses, FTPS, PROXY senders.
    pub data_plane: DataPlane,
    /// Bans, per-user limits, quotas.
    pub limits: Limits,
    /// Readiness and shutdown.
    pub lifecycle: Lifecycle,
    /// Open-session counts.
    pub sessions: Sessions,
}

/// Who may do how much: per-IP bans and per-user caps and quotas.
pub struct Limits {
    /// Per-IP bans after failed logins.
    pub bans: crate::bans::Bans,
    /// Per-user session counts and bandwidth buckets (`users.max_sessions`,
    /// `users.*_bytes_per_sec`).
    pub user_limits: Arc<crate::limits::UserLimits>,
    /// Counted storage areas for `users.quota_bytes` / `users.quota_files`.
    pub quotas: Arc<crate::quota::Quotas>,
}

/// Readiness and the stages of a graceful shutdown.
pub struct Lifecycle {
    /// Cancelled on SIGTERM/SIGINT: `/readyz` answers 503 while the listeners
    /// still accept for `server.shutdown_delay_secs`.
    pub draining: CancellationToken,
    /// Cancelled when the listeners close (after the delay): no new sessions,
    /// sessions quiet for [`DRAIN_QUIET`] get 421.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown grace period ends: running transfers are cut.
    pub hard_stop: CancellationToken,
    listening: AtomicBool,
    /// Background backend checks (`crate::health`).
    pub health: crate::health::Health,
}

/// How long a session must stay silent after the listeners closed before it is
/// closed with 421: a client in the middle of a command sequence (PASV, then STOR)
/// is not cut between two commands; one that stays busy is closed when the grace
/// period ends.
pub const DRAIN_QUIET: Duration = Duration::from_secs(2);

impl Lifecycle {
    /// Marks the listeners as accepting (one condition of `/readyz`).
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::SeqCst);
    }

    /// Resolves when a session waiting for its next command must be closed (RFC
    /// 959 §4.2 "421 Service not available, closing control connection"): the
    /// listeners have closed and the session has been silent for [`DRAIN_QUIET`]
    /// (the control loop re-creates this future after every command), or the
    /// grace period is over.
    pub async fn drained(&self) {
        self.shutdown.cancelled().await;
        // Boxed: every idle session waits in this future, and this part runs
        // only once the shutdown has begun.
        Box::pin(async {
            tokio::select! {
                _ = tokio::time::sleep(DRAIN_QUIET) => {}
                _ = self.hard_stop.cancelled() => {}
            }
        })
        .await
    }
}

/// Open sessions, globally and per client (`server.max_sessions`,
/// `server.max_sessions_per_ip`), and the session id counter.
#[derive(Default)]
pub struct Sessions {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    total: Mutex<usize>,
    next_id: AtomicU64,
}

impl Sessions {
    /// Counts one more session of client `ip` unless that would pass `max_total`
    /// or `max_per_ip`; false: refused, nothing counted.
    pub fn take(&self, ip: IpAddr, max_total: usize, max_per_ip: usize) -> bool {
        let mut total = self.total.lock().unwrap_or_else(|p| p.into_inner());
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let mine = per_ip.entry(ip).or_insert(0);
        if *total >= max_total || *mine >= max_per_ip {
            if *mine == 0 {
                per_ip.remove(&ip);
            }
            return false;
        }
        *total += 1;
        *mine += 1;
        true
    }

    /// Releases a session counted by [`Sessions::take`].
    pub fn release(&self, ip: IpAddr) {
        let mut total = self.total.lock().unwrap_or_else(|p| p.into_inner());
        *total = total.saturating_sub(1);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    /// Sessions open now.
    pub fn open(&self) -> usize {
        *self.total.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A server-unique session id (from 1).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A logged-in user with what its session works on, resolved once at login
/// ([`Shared::login`]) and read by every later command; a SIGHUP reload of the
/// users applies to the next login, never to a session already logged in.
#[derive(Debug, Clone)]
pub struct UserContext {
    /// The user as it was when the login succeeded.
    pub user: Arc<User>,
    /// Its backend (`users.backend`, else `[storage]`).
    pub backend: UserBackend,
    /// Its counted area (`users.quota_bytes` / `users.quota_files`), not yet
    /// loaded; `None` without a quota.
    pub quota: Option<Arc<crate::quota::Area>>,
}

#[cfg(test)]
impl Shared {
    /// For tests: a server on the memory backend with one user `a` (password `x`).
    pub(crate) async fn for_tests() -> Arc<Shared> {
        let h = bcrypt::hash("x", 4).expect("bcrypt");
        let toml = format!(
            "[storage]\nkind = \"memory\"\n[[users]]\nname = \"a\"\npassword_hash = \"{h}\"\n"
        );
        let config = toml::from_str(&toml).expect("test config");
        Arc::new(Shared::build(config).await.expect("shared state"))
    }
}

impl Shared {
    /// Builds every shared part from a validated configuration (with its users):
    /// backends (an S3 bucket or a cloud container is checked once), users and
    /// the auth hook, the users' homes, PASV addresses, FTPS, limits, health,
    /// webhooks. Binds no socket.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let quotas = Arc::new(crate::quota::Quotas::default());
        let backends = Backends::build(&config, &metrics, &quotas).await?;
        let users = config.all_users().map_err(anyhow::Error::msg)?;
        let auth = Authenticator::new(&users)
            .map_err(anyhow::Error::msg)?
            .with_login_cache(Duration::from_secs(config.server.login_cache_secs));
        let auth = match &config.auth_hook {
            Some(h) => auth.with_hook(
                crate::auth_hook::AuthHook::new(&config, h, backends.clone(), metrics.clone())
                    .map_err(anyhow::Error::msg)?,
            ),
            None => auth,
        };
        for u in auth.users() {
            ensure_dir(backends.resolve(&u).storage.as_ref(), &u.home).await?;
        }
        let data_plane = DataPlane::build(&config).await?;
        let bans = crate::bans::Bans::new(
            config.server.ban_after_failures,
            Duration::from_secs(config.server.ban_window_secs),
            Duration::from_secs(config.server.ban_secs),
            Duration::from_secs(config.server.ban_max_secs),
        )
        .with_ipv6_prefix(config.server.ipv6_prefix_len);
        // Every backend passed its check above: all up. Order: storage, then the
        // named backends sorted (the order `server` starts their probes in).
        let health = crate::health::Health::new(
            std::iter::once(DEFAULT_LABEL).chain(config.backends.keys().map(String::as_str)),
            &metrics,
        );
        let events =
            crate::webhooks::Events::start(&config, metrics.clone()).map_err(anyhow::Error::msg)?;
        Ok(Self {
            events,
            config,
            auth,
            backends,
            data_plane,
            metrics,
            limits: Limits {
                bans,
                user_limits: Arc::default(),
                quotas,
            },
            lifecycle: Lifecycle {
                draining: CancellationToken::new(),
                shutdown: CancellationToken::new(),
                hard_stop: CancellationToken::new(),
                listening: AtomicBool::new(false),
                health,
            },
            sessions: Sessions::default(),
        })
    }

    /// Resolves what a session of `user` works on, once, when its PASS succeeds.
    pub fn login(&self, user: Arc<User>) -> UserContext {
        let backend = self.backends.resolve(&user);
        let quota = user
            .quota()
            .map(|_| self.limits.quotas.area(backend.label(), &user.home));
        UserContext {
            user,
            backend,
            quota,
        }
    }

    /// The configuration section of a backend (`[backends.NAME]` or `[storage]`).
    pub fn backend_config(&self, backend: &UserBackend) -> &StorageConfig {
        backend
            .name
            .as_ref()
            .and_then(|name| self.config.backends.get(name))
            .unwrap_or(&self.config.storage)
    }

    /// Who may open the data connection of a session with control peer `peer`
    /// on our `local_ip`, and how long to wait.
    pub fn data_policy(&self, peer: IpAddr, local_ip: IpAddr) -> DataPolicy {
        DataPolicy {
            control_peer: peer,
            local_ip,
            check_peer: self.config.passive.check_peer_ip,
            proxy: self
                .config
                .server
                .proxy_protocol
                .then(|| self.data_plane.proxy_trusted.clone()),
            timeout: Duration::from_secs(self.config.server.data_timeout_secs),
        }
    }

    /// `/readyz`: listening, no shutdown begun (SIGTERM turns it false at once),
    /// and no backend failing its background checks for
    /// `server.backend_unready_after_secs`. Reads memory only: answers at once,
    /// never waits on storage. Also sets `ftpgate_ready`.
    pub async fn is_ready(&self) -> bool {
        let after = Duration::from_secs(self.config.server.backend_unready_after_secs);
        let life = &self.lifecycle;
        let ok = life.listening.load(Ordering::SeqCst)
            && !life.draining.is_cancelled()
            && !life.shutdown.is_cancelled()
            && life.health.ready(after);
        self.metrics.ready.set(i64::from(ok));
        ok
    }
}
