//! The server: builds the shared state ([`crate::state::Shared::build`]), binds
//! the listeners around it, enforces the session limits (global and per client
//! IP, 421 beyond them — RFC 959 §4.2 "421 Service not available, closing control
//! connection") and shuts down gracefully: on the shutdown signal `/readyz` turns
//! 503 at once, the listeners keep accepting for `server.shutdown_delay_secs` (so
//! the load balancer moves new sessions away first), then close; quiet sessions
//! get 421 and running transfers may finish within `server.shutdown_grace_secs`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ftpgate_storage::{StorageBackend, VPath};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use crate::auth;
use crate::config::{Config, UserConfig};
use crate::protocol::{code, Reply};
use crate::proxy::ProxyHeader;
use crate::session::Session;
use crate::state::{ensure_dir, Advertise, Shared};

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
        out.push((shared.backends.default_backend().clone(), w));
    }
    for (name, b) in shared.backends.named() {
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
        let shared = Arc::new(Shared::build(config).await?);
        let config = &shared.config;
        let listen = config.server.listen;
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
        let implicit = match &config.tls.implicit_listen {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .with_context(|| format!("cannot listen on tls.implicit_listen = {a}"))?,
            ),
            None => None,
        };
        let data = match &config.passive.proxy_listen {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .with_context(|| format!("cannot listen on passive.proxy_listen = {a}"))?,
            ),
            None => None,
        };
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
        move || shared.sessions.open() as u64
    }

    /// The bound control address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts sessions until `shutdown` resolves, then drains them: readiness
    /// turns false at once while the listeners keep accepting for
    /// `server.shutdown_delay_secs` (the load balancer's checks notice and move new
    /// sessions elsewhere), then the listeners close, sessions quiet for
    /// [`crate::state::DRAIN_QUIET`] get 421, running transfers may finish within
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
            let backends = &self.shared.backends;
            let all = std::iter::once(Some(backends.default_backend().clone()))
                .chain(named.map(|n| backends.lookup(Some(n)).cloned()));
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
        self.shared.lifecycle.set_listening();
        self.shared.is_ready().await;
        tracing::info!(%addr, storage = self.shared.backends.default_backend().kind(), "listening");
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
                    self.shared.lifecycle.draining.cancel();
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
            // `admit`'s future itself, not wrapped in a block that would hold its
            // arguments a second time for the session's life.
            tracker.spawn(admit(stream, peer, shared, is_implicit));
        }
        tracing::info!(
            "shutting down: listeners closed, quiet sessions closed, transfers may finish"
        );
        drop(self.listener);
        drop(implicit);
        self.shared.lifecycle.shutdown.cancel();
        self.shared.metrics.ready.set(0);
        tracker.close();
        let grace = Duration::from_secs(self.shared.config.server.shutdown_grace_secs);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("grace period over, cutting the remaining transfers");
            self.shared.lifecycle.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        }
        self.shared.events.drain(crate::webhooks::DRAIN_LIMIT).await;
        Ok(())
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
            if let Some(tls) = &shared.data_plane.tls {
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
    let Some(tls) = shared.data_plane.tls.clone() else {
        return;
    };
    if every == 0 {
        return;
    }
    loop {
        tokio::select! {
            _ = shared.lifecycle.shutdown.cancelled() => return,
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
        let backend = shared.backends.for_name(u.backend.as_deref());
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
        .any(|a| matches!(a, crate::config::Host::Name(_)));
    if !names || cfg.advertise_refresh_secs == 0 {
        return;
    }
    let every = Duration::from_secs(cfg.advertise_refresh_secs);
    loop {
        tokio::select! {
            _ = shared.lifecycle.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match Advertise::resolve(cfg).await {
            Ok(fresh) => {
                let shown = format!("{fresh:?}");
                if shared.data_plane.set_advertise(fresh) {
                    tracing::info!(fresh = %shown, "passive advertise address changed");
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
            _ = shared.lifecycle.hard_stop.cancelled() => return,
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
                crate::proxy::read_trusted(&mut stream, from, &shared.data_plane.proxy_trusted)
                    .await
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
            let Some(ports) = &shared.data_plane.shared_ports else {
                return;
            };
            let check = shared.config.passive.check_peer_ip;
            if let Err(why) = ports.deliver(destination.port(), source.ip(), check, stream) {
                tracing::warn!(client = %source, port = destination.port(), ?why, "refused data connection on the shared port");
            }
        });
    }
}

/// Admits a connection ([`admission`]) and serves it (`implicit`: the
/// implicit-FTPS listener). The session's task holds this future for the
/// session's life, so what only admission needs lives in [`admission`]'s, boxed
/// while it runs.
async fn admit(stream: TcpStream, socket_peer: SocketAddr, shared: Arc<Shared>, implicit: bool) {
    let Some((stream, session, _slot)) =
        Box::pin(admission(stream, socket_peer, &shared, implicit)).await
    else {
        return;
    };
    shared.metrics.sessions.inc();
    // Boxed: the session's future on its own, instead of laid out beside everything
    // `admit` awaited before it in every task. `ftpgate_sessions_active` is counted
    // by the slot, released when it drops (also on cancellation or a panic).
    Box::pin(crate::connection::serve(
        stream,
        shared.clone(),
        session,
        implicit,
    ))
    .await;
}

/// Reads the PROXY header when `server.proxy_protocol` is on, refuses banned
/// clients and applies the session limits to the real client: the connection,
/// its fresh session and its counted place, or `None` when refused.
async fn admission(
    mut stream: TcpStream,
    socket_peer: SocketAddr,
    shared: &Arc<Shared>,
    implicit: bool,
) -> Option<(TcpStream, Session, SessionSlot)> {
    let socket_local = stream.local_addr().ok()?;
    let (peer, local) = if shared.config.server.proxy_protocol {
        let header =
            crate::proxy::read_trusted(&mut stream, socket_peer, &shared.data_plane.proxy_trusted)
                .await?;
        match header {
            Ok(ProxyHeader::Proxied {
                source,
                destination,
            }) => (source, destination),
            Ok(ProxyHeader::Local) => (socket_peer, socket_local),
            Err(e) => {
                // Health checks may connect and close without a header: debug.
                tracing::debug!(peer = %socket_peer, error = %e, "no valid PROXY header");
                return None;
            }
        }
    } else {
        (socket_peer, socket_local)
    };
    let ip = crate::datachan::canonical(peer.ip());
    if let Some(left) = shared.limits.bans.banned(ip) {
        tracing::info!(%peer, ban_left_secs = left.as_secs(), "refused a banned client");
        if !implicit {
            let reply = Reply::new(
                code::SERVICE_NOT_AVAILABLE,
                "Too many failed logins from your address, try again later",
            );
            let _ = stream.write_all(reply.to_wire().as_bytes()).await;
        }
        return None;
    }
    // Caps count an IPv6 network (`server.ipv6_prefix_len`) as one client.
    let key = crate::bans::client_key(ip, shared.config.server.ipv6_prefix_len);
    let Some(slot) = SessionSlot::take(shared, key) else {
        tracing::info!(%peer, "session limit reached");
        let reply = Reply::new(
            code::SERVICE_NOT_AVAILABLE,
            "Too many connections, try again later",
        );
        let _ = stream.write_all(reply.to_wire().as_bytes()).await;
        return None;
    };
    let id = shared.sessions.next_id();
    let mut session = Session::new(id, peer, local);
    session.socket_local = socket_local;
    session.tls_mode = if implicit {
        crate::config::TlsMode::Required
    } else {
        shared.config.server.tls
    };
    Some((stream, session, slot))
}

/// A counted session (in the per-address caps and `ftpgate_sessions_active`);
/// releases both when dropped, also when the session's task is cancelled or panics.
struct SessionSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl SessionSlot {
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<Self> {
        let cfg = &shared.config.server;
        shared
            .sessions
            .take(ip, cfg.max_sessions, cfg.max_sessions_per_ip)
            .then(|| {
                shared.metrics.sessions_active.inc();
                Self {
                    shared: shared.clone(),
                    ip,
                }
            })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.shared.metrics.sessions_active.dec();
        self.shared.sessions.release(self.ip);
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
    /// Issue 13 §6: a session's task holds `admit`'s future for the session's life
    /// (the session itself is boxed inside): 136 bytes when written, 328 before.
    #[tokio::test]
    async fn admits_future_stays_small() {
        let shared = super::Shared::for_tests().await;
        let (s, _client) = crate::testing::tcp_pair().await;
        let peer = s.peer_addr().unwrap();
        let f = super::admit(s, peer, shared, false);
        let size = std::mem::size_of_val(&f);
        assert!(size <= 192, "admit's future is {size} bytes");
    }
}
