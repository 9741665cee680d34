//! FTPS (RFC 4217) with rustls: the server's TLS configuration, a certificate
//! that can be replaced while sessions run (SIGHUP or a changed file), and the
//! data-connection handshake with the optional session-resumption rule.
//!
//! TLS 1.3 and 1.2 only (rustls has nothing older). ALPN: the server offers `ftp`
//! only, so rustls refuses a client that offers ALPN without `ftp` (the ALPACA
//! cross-protocol defence); clients offering no ALPN are accepted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
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
    acceptor: TlsAcceptor,
    /// The same configuration without TLS 1.3 session tickets, for data
    /// connections: a client that only writes (STOR) never reads tickets sent
    /// after the handshake, and closing a socket with unread data sends a reset
    /// that can cut the upload's last bytes (seen with lftp). Data connections
    /// resume the control connection's session; they need no tickets of their own.
    data_acceptor: TlsAcceptor,
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
        // Data connections resume the control connection's session. TLS 1.2:
        // session IDs in a server-side cache. TLS 1.3: stateless tickets (a
        // stateful TLS 1.3 ticket is single-use in rustls, but FTP clients such as
        // Python's ftplib resume every data connection from the control
        // connection's one ticket).
        config.session_storage = ServerSessionMemoryCache::new(4096);
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| format!("tls: session tickets: {e}"))?;
        Ok(Some(Self {
            data_acceptor: TlsAcceptor::from(Arc::new({
                let mut data = config.clone();
                data.send_tls13_tickets = 0;
                data
            })),
            acceptor: TlsAcceptor::from(Arc::new(config)),
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

    /// TLS handshake on a control connection (AUTH TLS, implicit FTPS), within
    /// [`HANDSHAKE_TIMEOUT`].
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        Self::handshake(&self.acceptor, tcp).await
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

    /// The data-connection handshake: refuses a connection that did not resume a
    /// session when `require_session_reuse` is set.
    pub async fn accept_data(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let tls = Self::handshake(&self.data_acceptor, tcp).await?;
        if self.require_session_reuse
            && tls.get_ref().1.handshake_kind() != Some(HandshakeKind::Resumed)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "data connection did not resume the TLS session (tls.require_session_reuse)",
            ));
        }
        Ok(tls)
    }
}
