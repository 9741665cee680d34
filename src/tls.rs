//! FTPS (RFC 4217) with rustls: the server's TLS configuration, a certificate
//! that can be replaced while sessions run (SIGHUP or a changed file), and the
//! data-connection handshake with the optional session-resumption rule.
//!
//! TLS 1.3 and 1.2 only (rustls has nothing older). ALPN: the server offers `ftp`
//! only, so rustls refuses a client that offers ALPN without `ftp` (the ALPACA
//! cross-protocol defence); clients offering no ALPN are accepted.
//!
//! Every control connection gets its own session store ([`ConnTls`]): the TLS
//! sessions negotiated on it (TLS 1.2 session ids, TLS 1.3 stateful tickets) are
//! kept there and nowhere else, and its data connections may resume only those —
//! vsftpd's `require_ssl_reuse` rule for the PROT P data connections of RFC 4217
//! §9, which leaves their binding to the server. A session of another control
//! connection (an attacker behind the same NAT racing for the passive port)
//! simply is not found, the handshake is a full one and the data connection is
//! refused with 425.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::{HandshakeKind, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{TlsConfig, TlsMode};

/// How long a client may take for a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Text of the 425 for a PROT P data connection that did not resume a TLS
/// session of its own control connection (RFC 4217 §9 PROT P; shown to clients such as
/// Apache Commons Net's FTPSClient, whose users otherwise only see the server log).
pub const NOT_RESUMED: &str = "TLS session of the control connection not resumed";

/// Sessions one control connection keeps: its handshake stores one TLS 1.2
/// session id or `send_tls13_tickets` (2) TLS 1.3 tickets.
const SESSIONS_PER_CONNECTION: usize = 8;

/// The TLS sessions negotiated on one control connection.
#[derive(Debug, Default)]
struct ConnSessions {
    entries: Mutex<VecDeque<(Vec<u8>, Vec<u8>)>>,
}

/// rustls' view of a [`ConnSessions`]: the control handshake (`control`) may
/// store; data handshakes only look up, so a full handshake on a data connection
/// (an attacker's, refused) leaves nothing behind that could be resumed later.
#[derive(Debug)]
struct SessionView {
    store: Arc<ConnSessions>,
    control: bool,
}

impl StoresServerSessions for SessionView {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        if !self.control {
            return false;
        }
        let mut e = self.store.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.retain(|(k, _)| *k != key);
        if e.len() >= SESSIONS_PER_CONNECTION {
            e.pop_front();
        }
        e.push_back((key, value));
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let e = self.store.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    /// TLS 1.3 stateful tickets are looked up with `take`; FTP clients (Python's
    /// ftplib, curl) resume every data connection from the control connection's
    /// ticket, so it stays usable. There is no 0-RTT (no early data), so reuse
    /// replays nothing.
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get(key)
    }

    fn can_cache(&self) -> bool {
        self.control
    }
}

/// The certificate, reloadable; rustls asks it on every handshake.
#[derive(Debug)]
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of (cert, key) when last loaded.
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls.cert_file {}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("tls.key_file {}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("tls.cert_file/key_file do not form a usable pair: {e}"))
}

/// The `notAfter` of a DER certificate in Unix seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The server's TLS side.
pub struct Tls {
    /// The shared configuration; each control connection gets a copy with its
    /// own session store ([`Tls::accept`]).
    base: ServerConfig,
    cert: Arc<ReloadingCert>,
    /// Data connections under `PROT P` must resume a TLS session.
    pub require_session_reuse: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert.cert_file)
            .field("require_session_reuse", &self.require_session_reuse)
            .finish()
    }
}

impl Tls {
    /// Loads the certificate and builds the configuration; `None` when no
    /// listener uses TLS.
    pub fn from_config(cfg: &TlsConfig, mode: TlsMode) -> Result<Option<Self>, String> {
        let (Some(cert_file), Some(key_file)) = (&cfg.cert_file, &cfg.key_file) else {
            return Ok(None);
        };
        if mode == TlsMode::Off && cfg.implicit_listen.is_none() {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = load(cert_file, key_file, &provider)?;
        let cert = Arc::new(ReloadingCert {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            provider: provider.clone(),
            current: RwLock::new(Arc::new(key)),
            loaded: Mutex::new((mtime(cert_file), mtime(key_file))),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("tls: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"ftp".to_vec()];
        // Sessions live per control connection (`for_connection`): TLS 1.2
        // session ids and TLS 1.3 stateful tickets in its own store. No ticketer:
        // a stateless ticket would be valid on every connection sharing its key.
        Ok(Some(Self {
            base: config,
            cert,
            require_session_reuse: cfg
                .require_session_reuse
                .unwrap_or(mode == TlsMode::Required),
        }))
    }

    /// Re-reads the certificate and key when `force` or when either file changed.
    /// Sessions keep the certificate they negotiated. `Ok(true)`: replaced.
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        let c = &self.cert;
        let now = (mtime(&c.cert_file), mtime(&c.key_file));
        {
            let loaded = c.loaded.lock().unwrap_or_else(|p| p.into_inner());
            if !force && *loaded == now {
                return Ok(false);
            }
        }
        let key = load(&c.cert_file, &c.key_file, &c.provider)?;
        *c.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        *c.loaded.lock().unwrap_or_else(|p| p.into_inner()) = now;
        Ok(true)
    }

    /// When the certificate served now stops being valid (its X.509 `notAfter`,
    /// RFC 5280 §4.1.2.5), in Unix seconds; `None` if it cannot be parsed.
    pub fn not_after(&self) -> Option<i64> {
        let current = self
            .cert
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        not_after(current.end_entity_cert().ok()?)
    }

    /// The TLS context of one new control connection: a copy of the server's
    /// configuration with a fresh, empty session store that its control handshake
    /// fills and its data handshakes read. Costs two small allocations and a
    /// configuration copy (BENCHMARKS.md, "FTPS per-connection sessions").
    pub fn for_connection(&self) -> (TlsAcceptor, ConnTls) {
        let store = Arc::new(ConnSessions::default());
        let mut control = self.base.clone();
        control.session_storage = Arc::new(SessionView {
            store: store.clone(),
            control: true,
        });
        // Data connections get no TLS 1.3 tickets: a client that only writes
        // (STOR) never reads tickets sent after the handshake, and closing a
        // socket with unread data sends a reset that can cut the upload's last
        // bytes (seen with lftp). They resume the control connection's session.
        let mut data = self.base.clone();
        data.send_tls13_tickets = 0;
        data.session_storage = Arc::new(SessionView {
            store,
            control: false,
        });
        (
            TlsAcceptor::from(Arc::new(control)),
            ConnTls {
                data: TlsAcceptor::from(Arc::new(data)),
                require_session_reuse: self.require_session_reuse,
            },
        )
    }

    /// TLS handshake on a control connection (AUTH TLS, implicit FTPS), within
    /// [`HANDSHAKE_TIMEOUT`]; returns the stream and the connection's TLS context
    /// for its data connections.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<(TlsStream<TcpStream>, ConnTls)> {
        let (acceptor, conn) = self.for_connection();
        Ok((handshake(&acceptor, tcp).await?, conn))
    }
}

/// One control connection's TLS context: accepts its PROT P data connections.
#[derive(Clone)]
pub struct ConnTls {
    data: TlsAcceptor,
    require_session_reuse: bool,
}

impl std::fmt::Debug for ConnTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTls")
            .field("require_session_reuse", &self.require_session_reuse)
            .finish()
    }
}

impl ConnTls {
    /// The data-connection handshake. With `require_session_reuse` it must resume
    /// a session of this control connection, else `PermissionDenied` (the caller
    /// answers 425 [`NOT_RESUMED`]) and nothing is sent or stored.
    pub async fn accept_data(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let tls = handshake(&self.data, tcp).await?;
        if self.require_session_reuse
            && tls.get_ref().1.handshake_kind() != Some(HandshakeKind::Resumed)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "data connection did not resume the control connection's TLS session (tls.require_session_reuse)",
            ));
        }
        Ok(tls)
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_handshakes_read_but_never_store_sessions() {
        let store = Arc::new(ConnSessions::default());
        let control = SessionView {
            store: store.clone(),
            control: true,
        };
        let data = SessionView {
            store,
            control: false,
        };
        assert!(control.can_cache() && !data.can_cache());
        assert!(control.put(b"id".to_vec(), b"secret".to_vec()));
        // Every data connection may resume the control connection's session.
        for _ in 0..3 {
            assert_eq!(data.take(b"id").as_deref(), Some(&b"secret"[..]));
        }
        // A full handshake on a data connection leaves nothing to resume later.
        assert!(!data.put(b"attacker".to_vec(), b"x".to_vec()));
        assert_eq!(data.get(b"attacker"), None);
        // Bounded: the oldest sessions go first.
        for i in 0..SESSIONS_PER_CONNECTION {
            control.put(vec![i as u8], vec![]);
        }
        assert_eq!(data.get(b"id"), None);
        assert!(data.get(&[SESSIONS_PER_CONNECTION as u8 - 1]).is_some());
        // Another connection's store is empty.
        let other = SessionView {
            store: Arc::new(ConnSessions::default()),
            control: false,
        };
        assert_eq!(other.get(&[0]), None);
    }
}
