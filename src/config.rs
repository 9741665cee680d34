//! Configuration: built-in defaults < TOML file (`--config`) < `FTPGATE_*`
//! environment variables (nested keys split on `__`) < command-line flags, merged by
//! figment, then checked by [`Config::validate`] with messages that name the key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::auth::Permission;

/// What is wrong with a configuration: every message names the key (`server.listen`,
/// `storage.part_size_mib`, `users[2].home`), so an operator can find the line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Values figment could not read (wrong type, unknown key), one line each.
    #[error("invalid configuration{0}")]
    Parse(String),
    /// A value that reads but is not allowed; the message names the key.
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for ConfigError {
    fn from(message: String) -> Self {
        Self::Invalid(message)
    }
}

impl From<&str> for ConfigError {
    fn from(message: &str) -> Self {
        Self::Invalid(message.to_owned())
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: listener and limits.
    pub server: ServerConfig,
    /// `[passive]`: PASV/EPSV data connections.
    pub passive: PassiveConfig,
    /// `[active]`: PORT/EPRT data connections.
    pub active: ActiveConfig,
    /// `[transfer]`: data representation.
    pub transfer: TransferConfig,
    /// `[storage]`: the default backend.
    #[serde(skip_serializing, deserialize_with = "storage_section")]
    pub storage: StorageConfig,
    /// `[backends.NAME]`: further backends, chosen per user with `users.backend`.
    #[serde(skip_serializing, deserialize_with = "backend_sections")]
    pub backends: std::collections::BTreeMap<String, StorageConfig>,
    /// `[[users]]`: accounts.
    pub users: Vec<UserConfig>,
    /// A TOML or JSON file of further `[[users]]` (same keys), re-read on SIGHUP,
    /// so credentials can live in a mounted Kubernetes Secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_file: Option<PathBuf>,
    /// `[http]`: health, readiness and metrics endpoint.
    pub http: HttpConfig,
    /// `[tls]`: certificate for FTPS (RFC 4217) and the implicit-FTPS listener.
    pub tls: TlsConfig,
    /// `[log]`: tracing output.
    pub log: LogConfig,
    /// `[[webhooks]]`: endpoints notified of uploads and other events.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
    /// `[auth_hook]`: an HTTP endpoint that checks logins the users file does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_hook: Option<crate::auth_hook::AuthHookConfig>,
}

/// FTPS on a listener (RFC 4217).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// No `AUTH TLS`.
    #[default]
    Off,
    /// `AUTH TLS` offered; plain sessions allowed.
    Optional,
    /// USER/PASS only after `AUTH TLS`, data only under `PROT P`.
    Required,
}

/// `[tls]` keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first). Required when any TLS is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Implicit-FTPS listener (TLS from the first byte, port 990 style). Unset: none.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "typed::opt_socket_addr"
    )]
    pub implicit_listen: Option<SocketAddr>,
    /// Data connections under `PROT P` must resume a TLS session of this server
    /// (the vsftpd rule against data-connection theft). Default: true when
    /// `server.tls = "required"`, else false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_session_reuse: Option<bool>,
    /// Seconds between checks of the certificate and key files for changes (also
    /// reloaded on SIGHUP). 0: SIGHUP only. Default 10.
    pub reload_interval_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            implicit_listen: None,
            require_session_reuse: None,
            reload_interval_secs: 10,
        }
    }
}

/// `[http]` keys.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the plain-HTTP endpoint serving `/healthz`, `/readyz` and
    /// `/metrics` (Prometheus text format). Unset: no endpoint.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "typed::opt_socket_addr"
    )]
    pub listen: Option<SocketAddr>,
}

/// `[server]` keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Control-channel listen address. Default `127.0.0.1:2121`.
    #[serde(deserialize_with = "typed::socket_addr")]
    pub listen: SocketAddr,
    /// Text of the 220 greeting. Default `ftpgate ready`.
    pub greeting: String,
    /// Maximum concurrent sessions; more get 421. Default 1000.
    pub max_sessions: usize,
    /// Maximum concurrent sessions from one client IP; more get 421. Default 50.
    pub max_sessions_per_ip: usize,
    /// Seconds a logged-in or logging-in session may stay silent (no command, no
    /// transfer) before 421. Default 300 (rclone idles 60 s, lftp sends NOOP).
    pub idle_timeout_secs: u64,
    /// Longest accepted command line in bytes; longer lines get 500. Default 4096.
    pub max_line: usize,
    /// Failed logins allowed per connection before 421 and disconnect. Default 3.
    pub max_login_failures: u32,
    /// Delay before answering a failed login, in milliseconds. Default 1000.
    pub login_failure_delay_ms: u64,
    /// Seconds to wait for a data connection (accept or connect); a PASV/EPSV
    /// listener or PORT target no transfer used is dropped after as long. Default 60.
    pub data_timeout_secs: u64,
    /// Seconds running transfers may take to finish after SIGTERM/SIGINT. Default 30.
    pub shutdown_grace_secs: u64,
    /// Seconds the listeners keep accepting after SIGTERM/SIGINT while `/readyz`
    /// already answers 503, so load balancers and Kubernetes endpoints move new
    /// sessions elsewhere before the port closes. At least twice the balancer's check
    /// interval. Default 5; 0: close at once.
    pub shutdown_delay_secs: u64,
    /// Seconds between background reachability checks of every backend (each check
    /// times out after this long): `ftpgate_backend_up`, a WARN line when a backend
    /// degrades and an INFO line when it recovers. 0: no checks. Default 5.
    pub backend_check_interval_secs: u64,
    /// `/readyz` answers 503 once a backend has failed every check for this many
    /// seconds. A backend all replicas share (one bucket) fails on all of them at
    /// once: keep this long, so a slow backend does not take every replica out of
    /// the balancer. 0: readiness never follows the backend. Default 60.
    pub backend_unready_after_secs: u64,
    /// Every connection (control, and passive data) starts with a PROXY protocol
    /// v1 or v2 header from a load balancer; the client address in it is used for
    /// logs, limits and the data-peer check. Default false.
    pub proxy_protocol: bool,
    /// Networks (CIDR) allowed to send PROXY headers; other peers are refused.
    /// Required with `proxy_protocol` (an empty list refuses to start: write
    /// `["0.0.0.0/0", "::/0"]` to trust every peer explicitly).
    #[serde(deserialize_with = "typed::nets")]
    pub proxy_trusted: Vec<ipnet::IpNet>,
    /// FTPS on `listen`: `off`, `optional` or `required` (RFC 4217 `AUTH TLS`).
    pub tls: TlsMode,
    /// Failed logins from one client IP within `ban_window_secs` that ban it.
    /// 0: no bans. Default 10.
    pub ban_after_failures: u32,
    /// Window for counting failed logins per IP. Default 600.
    pub ban_window_secs: u64,
    /// First ban length; each further ban of the same IP doubles it. Default 60.
    pub ban_secs: u64,
    /// Longest ban. Default 3600.
    pub ban_max_secs: u64,
    /// Seconds an unfinished command line may take to complete (slowloris);
    /// then 421 and close. Default 30.
    pub command_line_timeout_secs: u64,
    /// Commands per second per session; bursts of twice this pass, beyond that
    /// commands are delayed (not refused). 0: unlimited. Default 2000: rclone
    /// copying small files sends ~250 a second per connection on loopback (~900
    /// against vsftpd's speed); 200 throttled it to a quarter of vsftpd's speed.
    pub max_commands_per_sec: u32,
    /// Seconds a connection may stay without logging in, whatever it sends
    /// (NOOP does not extend it); then 421 and close. 0: no limit. Default 30.
    pub login_timeout_secs: u64,
    /// IPv6 clients are counted per network of this prefix length for
    /// `max_sessions_per_ip` and bans (one host usually owns a whole /64).
    /// IPv4 counts per address; IPv4-mapped IPv6 as IPv4. 1–128. Default 64.
    pub ipv6_prefix_len: u8,
    /// Largest file HASH/XSHA256/XSHA1/XMD5/XCRC read to compute a digest, in
    /// bytes; larger files get 504 (a digest stored at upload is still answered).
    /// 0: no limit. Default 4 GiB.
    pub max_hash_bytes: u64,
    /// Microseconds after an upload's data connection ends cleanly during which
    /// the server watches whether the control connection closes too (a killed
    /// client: the upload is then discarded, not committed). A live client's
    /// upload waits this long before its commit; a killed client whose control
    /// connection closes later (a loaded client host) is not caught. Rounded up to
    /// whole milliseconds by the timer. Default 1000.
    pub upload_close_wait_us: u64,
    /// Seconds a successful login is remembered (keyed by an HMAC of user and
    /// password, never the password), so logging in again skips the password
    /// hash. Dropped on reload (SIGHUP) or when the user's hash changes; failed
    /// logins are never remembered. 0: off. Default 300.
    pub login_cache_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 2121)),
            greeting: "ftpgate ready".into(),
            max_sessions: 1000,
            max_sessions_per_ip: 50,
            idle_timeout_secs: 300,
            max_line: 4096,
            max_login_failures: 3,
            login_failure_delay_ms: 1000,
            data_timeout_secs: 60,
            shutdown_grace_secs: 30,
            shutdown_delay_secs: 5,
            backend_check_interval_secs: 5,
            backend_unready_after_secs: 60,
            proxy_protocol: false,
            proxy_trusted: Vec::new(),
            tls: TlsMode::Off,
            ban_after_failures: 10,
            ban_window_secs: 600,
            ban_secs: 60,
            ban_max_secs: 3600,
            command_line_timeout_secs: 30,
            max_commands_per_sec: 2000,
            login_timeout_secs: 30,
            ipv6_prefix_len: 64,
            max_hash_bytes: 4 * 1024 * 1024 * 1024,
            upload_close_wait_us: 1000,
            login_cache_secs: 300,
        }
    }
}

/// `[passive]` keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveConfig {
    /// Port range `"50000-50100"` (inclusive) for passive listeners, chosen at
    /// random. Unset: an ephemeral port from the OS.
    pub ports: Option<PortRange>,
    /// Address announced in the PASV reply: an IPv4 address or a host name
    /// (resolved at start and every `advertise_refresh_secs`). Unset: the address
    /// the client connected to.
    pub advertise: Option<Host>,
    /// Per-client-network overrides of `advertise`, first match wins:
    /// `[[passive.advertise_for]]` with `cidr` and `address`.
    pub advertise_for: Vec<AdvertiseRule>,
    /// Seconds between re-resolutions of host names in `advertise` and
    /// `advertise_for` (a load balancer's DNS name can change). Default 60.
    pub advertise_refresh_secs: u64,
    /// Refuse data connections from an IP other than the control connection's
    /// (RFC 2577 data-port theft). Default true.
    pub check_peer_ip: bool,
    /// With `server.proxy_protocol`: one address where every passive data
    /// connection arrives (the load balancer forwards each passive port here),
    /// matched to its session by the original destination port in the PROXY
    /// header. PASV then hands out ports of `ports` without binding them.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "typed::opt_socket_addr"
    )]
    pub proxy_listen: Option<SocketAddr>,
    /// Passive listeners (or shared-port reservations) pending at once across
    /// all sessions; beyond it PASV/EPSV get 425. Default 500.
    pub max_pending: usize,
}

/// One `[[passive.advertise_for]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvertiseRule {
    /// Client network, e.g. `10.0.0.0/8`.
    #[serde(deserialize_with = "typed::net")]
    pub cidr: ipnet::IpNet,
    /// IPv4 address or host name announced to clients in `cidr`.
    pub address: Host,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        Self {
            ports: None,
            advertise: None,
            advertise_for: Vec::new(),
            advertise_refresh_secs: 60,
            check_peer_ip: true,
            proxy_listen: None,
            max_pending: 500,
        }
    }
}

/// `[active]` keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActiveConfig {
    /// Allow PORT/EPRT. Default true (scanners often use active mode).
    pub enabled: bool,
    /// Refuse PORT/EPRT to an IP other than the client's (RFC 2577 bounce attack).
    /// Default true; NAT'd devices that send a private address need false.
    pub check_peer_ip: bool,
}

impl Default for ActiveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            check_peer_ip: true,
        }
    }
}

/// `[transfer]` keys.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TransferConfig {
    /// Convert line ends under `TYPE A` (LF ↔ CRLF). Default false: every
    /// transfer is byte for byte whatever TYPE says, so devices that never send
    /// `TYPE I` cannot corrupt binary files.
    pub ascii_conversion: bool,
}

/// Backend kind of `[storage]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Local disk under `root`.
    #[default]
    Local,
    /// In memory, lost at exit.
    Memory,
    /// An S3 bucket (AWS or any S3-compatible endpoint).
    S3,
    /// A Google Cloud Storage bucket.
    Gcs,
    /// An Azure Blob Storage container.
    Azure,
}

impl StorageKind {
    /// The name written in `kind = "…"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Memory => "memory",
            Self::S3 => "s3",
            Self::Gcs => "gcs",
            Self::Azure => "azure",
        }
    }
}

/// `[storage]` or `[backends.NAME]`: one backend of a `kind`, with that backend
/// crate's own config type, plus the keys every kind shares.
///
/// Read by [`StorageConfig::from_value`]: `kind` first, then the matching type from
/// the rest of the section, so errors name the exact key (`storage.part_size_mib`);
/// a key of another kind is refused with its name.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The backend and its own keys, chosen by `kind`. Default: local disk.
    pub backend: BackendConfig,
    /// Compute the SHA-256 of every upload while it streams (logged with the transfer
    /// event; on S3 stored as `x-amz-meta-sha256` so `HASH` needs no download). Any
    /// backend. Default true.
    pub upload_sha256: Option<bool>,
    /// Seconds an interrupted upload is kept as a pending upload its user can resume
    /// with `REST n` + `STOR` or `APPE` (local disk and S3); 0 = off (discarded). Default
    /// 86400 (24 h), at most 30 days.
    pub resume_window_secs: Option<u64>,
    /// Most pending uploads one user keeps (further interrupted uploads are
    /// discarded). Default 16.
    pub resume_max_per_user: Option<u64>,
    /// Most bytes one user's pending uploads hold. Default 100 GiB.
    pub resume_max_bytes_per_user: Option<u64>,
}

/// The backend of a storage section, by `kind`.
#[derive(Debug, Clone)]
pub enum BackendConfig {
    /// `kind = "local"`.
    Local(LocalConfig),
    /// `kind = "memory"`: no keys of its own.
    Memory,
    /// `kind = "s3"`: the S3 backend's own keys ([`ftpgate_backend_s3::S3Config`]).
    S3(Box<ftpgate_backend_s3::S3Config>),
    /// `kind = "gcs"` ([`ftpgate_backend_cloud::GcsConfig`]).
    Gcs(Box<ftpgate_backend_cloud::GcsConfig>),
    /// `kind = "azure"` ([`ftpgate_backend_cloud::AzureConfig`]).
    Azure(Box<ftpgate_backend_cloud::AzureConfig>),
}

/// The keys of `kind = "local"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Root directory of the local backend; created if missing. Default `./data`.
    /// (Other kinds ignore `root`, so `--root` never breaks a bucket's config.)
    #[serde(default = "default_root")]
    pub root: PathBuf,
}

fn default_root() -> PathBuf {
    PathBuf::from("./data")
}

/// Longest `resume_window_secs`: 30 days.
pub const MAX_RESUME_WINDOW_SECS: u64 = 30 * 24 * 3600;

impl Default for StorageConfig {
    fn default() -> Self {
        Self::of(BackendConfig::Local(LocalConfig {
            root: default_root(),
        }))
    }
}

/// The keys every kind shares; `root` is read by `local` and ignored by the others.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonKeys {
    #[serde(default)]
    kind: StorageKind,
    #[serde(default = "default_root")]
    root: PathBuf,
    upload_sha256: Option<bool>,
    resume_window_secs: Option<u64>,
    resume_max_per_user: Option<u64>,
    resume_max_bytes_per_user: Option<u64>,
}

/// Keys read from a file instead (a mounted Secret): (`kind`, file key, key).
const SECRET_FILES: [(StorageKind, &str, &str); 2] = [
    (
        StorageKind::S3,
        "secret_access_key_file",
        "secret_access_key",
    ),
    (StorageKind::Azure, "access_key_file", "access_key"),
];

impl StorageConfig {
    /// A section for `backend` with the shared keys at their defaults.
    pub fn of(backend: BackendConfig) -> Self {
        Self {
            backend,
            upload_sha256: None,
            resume_window_secs: None,
            resume_max_per_user: None,
            resume_max_bytes_per_user: None,
        }
    }

    /// The `kind` of this section.
    pub fn kind(&self) -> StorageKind {
        match self.backend {
            BackendConfig::Local(_) => StorageKind::Local,
            BackendConfig::Memory => StorageKind::Memory,
            BackendConfig::S3(_) => StorageKind::S3,
            BackendConfig::Gcs(_) => StorageKind::Gcs,
            BackendConfig::Azure(_) => StorageKind::Azure,
        }
    }

    /// How long interrupted uploads stay resumable (`resume_window_secs`); `None`
    /// when resuming is off.
    pub fn resume_window(&self) -> Option<std::time::Duration> {
        match self.resume_window_secs.unwrap_or(86_400) {
            0 => None,
            n => Some(std::time::Duration::from_secs(n)),
        }
    }

    /// `resume_max_per_user` and `resume_max_bytes_per_user` with their defaults.
    pub fn resume_bounds(&self) -> (u64, u64) {
        (
            self.resume_max_per_user.unwrap_or(16),
            self.resume_max_bytes_per_user.unwrap_or(100 << 30),
        )
    }

    /// Reads a section (`key`: `storage`, `backends.NAME`) from its figment value:
    /// `kind` and the shared keys, then the kind's own config type from the other
    /// keys. `*_file` secrets are read here.
    pub fn from_value(value: &figment::value::Value, key: &str) -> Result<Self, ConfigError> {
        use figment::value::Value;
        let Some(dict) = value.as_dict() else {
            return Err(ConfigError::Invalid(format!("{key} must be a table")));
        };
        let (common, mut own): (figment::value::Dict, figment::value::Dict) = dict
            .clone()
            .into_iter()
            .partition(|(k, _)| fields_of::<CommonKeys>().contains(&k.as_str()));
        let common: CommonKeys = read(&Value::from(common), key)?;
        let kind = common.kind;
        for (k_kind, file_key, secret_key) in SECRET_FILES {
            if k_kind != kind {
                continue;
            }
            let Some(f) = own.remove(file_key) else {
                continue;
            };
            if own.contains_key(secret_key) {
                return Err(ConfigError::Invalid(format!(
                    "{key}.{secret_key} and {key}.{file_key} are exclusive"
                )));
            }
            let f: PathBuf = read(&f, &format!("{key}.{file_key}"))?;
            let secret = std::fs::read_to_string(&f)
                .map_err(|e| format!("{key}.{file_key} {}: {e}", f.display()))?;
            let secret = secret.trim_end_matches(['\r', '\n']).to_owned();
            own.insert(secret_key.to_owned(), Value::from(secret));
        }
        if let Some(k) = own.keys().find(|k| !kind_keys(kind).contains(&k.as_str())) {
            return Err(foreign_key(key, k, kind));
        }
        let own = Value::from(own);
        let backend = match kind {
            StorageKind::Local => BackendConfig::Local(LocalConfig { root: common.root }),
            StorageKind::Memory => BackendConfig::Memory,
            StorageKind::S3 => {
                let mut c: ftpgate_backend_s3::S3Config = read_kind(&own, key, kind)?;
                c.resume_window_secs = match common.resume_window_secs {
                    Some(n) => n,
                    None => c.resume_window_secs,
                };
                BackendConfig::S3(Box::new(c))
            }
            StorageKind::Gcs => BackendConfig::Gcs(Box::new(read_kind(&own, key, kind)?)),
            StorageKind::Azure => BackendConfig::Azure(Box::new(read_kind(&own, key, kind)?)),
        };
        Ok(Self {
            backend,
            upload_sha256: common.upload_sha256,
            resume_window_secs: common.resume_window_secs,
            resume_max_per_user: common.resume_max_per_user,
            resume_max_bytes_per_user: common.resume_max_bytes_per_user,
        })
    }

    /// Checks the values of the section `key`; the backend's own checks name
    /// `key.FIELD` instead of the backend's `s3.`/`gcs.`/`azure.` prefix.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.resume_window_secs.unwrap_or(0) > MAX_RESUME_WINDOW_SECS {
            return Err(ConfigError::Invalid(format!(
                "{key}.resume_window_secs must be at most {MAX_RESUME_WINDOW_SECS} (30 days)"
            )));
        }
        let (prefix, checked) = match &self.backend {
            BackendConfig::Local(_) | BackendConfig::Memory => return Ok(()),
            BackendConfig::S3(c) => ("s3.", c.validate()),
            BackendConfig::Gcs(c) => ("gcs.", c.validate()),
            BackendConfig::Azure(c) => ("azure.", c.validate()),
        };
        checked.map_err(|e| ConfigError::Invalid(e.message().replace(prefix, &format!("{key}."))))
    }
}

/// Deserialises one value of a section; errors name `key.PATH`.
fn read<T: serde::de::DeserializeOwned>(
    v: &figment::value::Value,
    key: &str,
) -> Result<T, ConfigError> {
    T::deserialize(v).map_err(|e| figment_error(e, key))
}

/// [`read`] for a kind's own type: a missing required key says so.
fn read_kind<T: serde::de::DeserializeOwned>(
    v: &figment::value::Value,
    key: &str,
    kind: StorageKind,
) -> Result<T, ConfigError> {
    T::deserialize(v).map_err(|e| match &e.kind {
        figment::error::Kind::MissingField(f) => ConfigError::Invalid(format!(
            "{key}.{f} is required for kind = \"{}\"",
            kind.name()
        )),
        _ => figment_error(e, key),
    })
}

/// One line per error of `e`, each naming `key.PATH`.
fn figment_error(e: figment::Error, key: &str) -> ConfigError {
    let lines: Vec<String> = e
        .into_iter()
        .map(|err| {
            let path = std::iter::once(key.to_owned())
                .chain(err.path.iter().cloned())
                .collect::<Vec<_>>()
                .join(".");
            format!("{path}: {}", err.kind)
        })
        .collect();
    ConfigError::Invalid(lines.join("\n"))
}

/// The keys a section of `kind` may hold besides the shared ones.
fn kind_keys(kind: StorageKind) -> Vec<&'static str> {
    let mut keys = match kind {
        StorageKind::Local | StorageKind::Memory => Vec::new(),
        StorageKind::S3 => fields_of::<ftpgate_backend_s3::S3Config>().to_vec(),
        StorageKind::Gcs => fields_of::<ftpgate_backend_cloud::GcsConfig>().to_vec(),
        StorageKind::Azure => fields_of::<ftpgate_backend_cloud::AzureConfig>().to_vec(),
    };
    keys.extend(SECRET_FILES.iter().filter(|s| s.0 == kind).map(|s| s.1));
    keys
}

/// The error for key `k` that kind `kind` does not take: "only applies to kind =
/// "s3"" for an S3 key in a local/memory section, "does not apply to kind = …" for
/// a key of another kind, else an unknown key.
fn foreign_key(key: &str, k: &str, kind: StorageKind) -> ConfigError {
    let others = [StorageKind::S3, StorageKind::Gcs, StorageKind::Azure];
    let local = matches!(kind, StorageKind::Local | StorageKind::Memory);
    if local && kind_keys(StorageKind::S3).contains(&k) {
        return ConfigError::Invalid(format!("{key}.{k} only applies to kind = \"s3\""));
    }
    if others.iter().any(|o| kind_keys(*o).contains(&k)) {
        return ConfigError::Invalid(format!(
            "{key}.{k} does not apply to kind = \"{}\"",
            kind.name()
        ));
    }
    let mut known = fields_of::<CommonKeys>().to_vec();
    known.extend(kind_keys(kind));
    let mut seen = std::collections::HashSet::new();
    known.retain(|k| seen.insert(*k));
    ConfigError::Invalid(format!(
        "{key}.{k}: unknown key for kind = \"{}\" (known: {})",
        kind.name(),
        known.join(", ")
    ))
}

/// The field names a struct's derived `Deserialize` accepts (serde hands them to
/// `deserialize_struct`), so the kind checks use each backend type's own list.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("probe"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// `Config.storage`: read with [`StorageConfig::from_value`] as `storage`.
fn storage_section<'de, D: serde::Deserializer<'de>>(d: D) -> Result<StorageConfig, D::Error> {
    let v = <figment::value::Value as Deserialize>::deserialize(d)?;
    StorageConfig::from_value(&v, "storage").map_err(serde::de::Error::custom)
}

/// `Config.backends`: each read with [`StorageConfig::from_value`] as `backends.NAME`.
fn backend_sections<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, StorageConfig>, D::Error> {
    let raw = std::collections::BTreeMap::<String, figment::value::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(name, v)| {
            StorageConfig::from_value(&v, &format!("backends.{name}"))
                .map(|c| (name, c))
                .map_err(serde::de::Error::custom)
        })
        .collect()
}

/// One `[[users]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Login name.
    pub name: String,
    /// PHC string from `ftpgate hash-password` (argon2).
    pub password_hash: String,
    /// Virtual root inside the backend; created at start. Default `/`.
    #[serde(default = "default_home")]
    pub home: String,
    /// What the user may do. Default: everything.
    #[serde(default = "Permission::all_vec")]
    pub permissions: Vec<Permission>,
    /// A `[backends.NAME]` to use instead of `[storage]`.
    #[serde(default)]
    pub backend: Option<String>,
    /// Largest single upload (STOR/APPE/STOU) in bytes; beyond it 552 and nothing
    /// is stored. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_upload_bytes: Option<u64>,
    /// Most bytes the user's home may hold (all files under it, counted through
    /// this process); an upload that would pass it gets 552 and stores nothing.
    /// Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
    /// Most files the user's home may hold; a new file beyond it gets 552.
    /// Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_files: Option<u64>,
    /// Upload bandwidth in bytes per second, shared by all of the user's
    /// sessions. Unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_bytes_per_sec: Option<u64>,
    /// Download (RETR) bandwidth in bytes per second, shared by all of the
    /// user's sessions. Unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_bytes_per_sec: Option<u64>,
    /// Most sessions logged in as this user at once; PASS beyond it gets 421
    /// and the connection closes. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<usize>,
    /// Client networks (CIDR, or single addresses) this user may log in from;
    /// from elsewhere PASS fails like a wrong password (530). Empty: anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_networks: Vec<String>,
}

impl UserConfig {
    /// An entry for `name` with `password_hash`: home `/`, every permission, the
    /// default backend and no limits (what the keys' defaults give).
    pub fn new(name: impl Into<String>, password_hash: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            password_hash: password_hash.into(),
            home: default_home(),
            permissions: Permission::all_vec(),
            backend: None,
            max_upload_bytes: None,
            quota_bytes: None,
            quota_files: None,
            upload_bytes_per_sec: None,
            download_bytes_per_sec: None,
            max_sessions: None,
            allowed_networks: Vec::new(),
        }
    }
}

fn default_home() -> String {
    "/".into()
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// `[log]` keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`. Default `text`.
    pub format: LogFormat,
    /// A tracing filter (`info`, `ftpgate=debug`); `RUST_LOG` wins. Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Crates whose INFO lines are chatter for an operator: object_store logs each S3
/// retry (`Encountered server error … backing off`) at INFO; ftpgate reports a
/// retry budget that ran out as one WARN instead.
pub const QUIET_TARGETS: [&str; 4] = ["object_store", "reqwest", "hyper", "hyper_util"];

/// The tracing filter for `level` (`RUST_LOG`, else `log.level`): when it names
/// none of [`QUIET_TARGETS`] and its default level is `info` or coarser,
/// `TARGET=warn` is added for each, so their INFO lines count as debug output.
/// `debug`/`trace`, or a directive for one of them, shows everything as written.
pub fn log_filter(level: &str) -> String {
    let level = level.trim();
    let names_one = level.split(',').any(|d| {
        let target = d.split('=').next().unwrap_or("").trim();
        QUIET_TARGETS
            .iter()
            .any(|t| target == *t || target.starts_with(&format!("{t}::")))
    });
    let global = level
        .split(',')
        .map(str::trim)
        .rfind(|d| !d.contains('='))
        .unwrap_or("");
    let verbose = matches!(global.to_ascii_lowercase().as_str(), "debug" | "trace");
    if names_one || verbose {
        return level.to_owned();
    }
    let mut out = level.to_owned();
    for t in QUIET_TARGETS {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&format!("{t}=warn"));
    }
    out
}

/// Command-line overrides, merged last.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CliOverrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--root`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// `--log-format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// An inclusive passive port range, written `"50000-50100"` (or one port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive).
    pub end: u16,
}

impl PortRange {
    /// Parses `"50000-50100"` or a single `"50000"`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let (a, b) = match s.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s.trim(), s.trim()),
        };
        let start: u16 = a
            .parse()
            .map_err(|_| format!("`{s}` is not a port range like 50000-50100"))?;
        let end: u16 = b
            .parse()
            .map_err(|_| format!("`{s}` is not a port range like 50000-50100"))?;
        if start == 0 || start > end {
            return Err(ConfigError::Invalid(format!(
                "`{s}`: need 1 <= start <= end"
            )));
        }
        Ok(Self { start, end })
    }
}

impl TryFrom<String> for PortRange {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, ConfigError> {
        Self::parse(&s)
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> Self {
        format!("{}-{}", r.start, r.end)
    }
}

/// Serde readers of values written as strings (addresses, networks), each parsed
/// once at load; an error quotes the value and figment adds the key.
mod typed {
    use std::net::SocketAddr;
    use std::str::FromStr;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    fn parse<'de, D: Deserializer<'de>, T: FromStr>(s: &str, what: &str) -> Result<T, D::Error> {
        s.parse()
            .map_err(|_| D::Error::custom(format!("`{s}` is not {what}")))
    }

    const ADDR: &str = "an address like 0.0.0.0:2121";

    /// A socket address (`127.0.0.1:2121`, `[::1]:21`).
    pub(super) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        parse::<D, _>(&String::deserialize(d)?, ADDR)
    }

    /// An optional socket address.
    pub(super) fn opt_socket_addr<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| parse::<D, _>(&s, ADDR))
            .transpose()
    }

    /// A network (CIDR); a bare address is a single-host network.
    pub(super) fn net<'de, D: Deserializer<'de>>(d: D) -> Result<ipnet::IpNet, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_net(&s).map_err(D::Error::custom)
    }

    /// A list of networks, as [`net`].
    pub(super) fn nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| super::parse_net(s).map_err(D::Error::custom))
            .collect()
    }
}

impl Config {
    /// Merges defaults, the optional TOML file, `FTPGATE_*` env and CLI flags.
    pub fn load(file: Option<&Path>, cli: &CliOverrides) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    f.display()
                )));
            }
            fig = fig.merge(Toml::file(f));
        }
        // Kubernetes service links (`FTPGATE_SERVICE_HOST`, `FTPGATE_PORT=tcp://…` for a
        // Service named `ftpgate`) share the prefix: they are not configuration.
        let links = service_link_vars();
        let ignored: Vec<&str> = links
            .iter()
            .filter_map(|k| k.get(ENV_PREFIX.len()..))
            .collect();
        fig = fig.merge(Env::prefixed(ENV_PREFIX).ignore(&ignored).split("__"));
        let mut overrides = Figment::new();
        if let Some(l) = &cli.listen {
            overrides = overrides.merge(Serialized::default("server.listen", l));
        }
        if let Some(r) = &cli.root {
            overrides = overrides.merge(Serialized::default("storage.root", r));
        }
        if let Some(f) = &cli.log_format {
            overrides = overrides.merge(Serialized::default("log.format", f));
        }
        fig = fig.merge(overrides);
        let cfg: Config = fig.extract().map_err(|e| {
            let mut msg = String::new();
            for err in e {
                let path = err.path.join(".");
                match &err.kind {
                    // A storage section's own message already names the key.
                    figment::error::Kind::Message(m)
                        if !path.is_empty() && m.starts_with(&path) =>
                    {
                        msg.push_str(&format!("\n  - {}", m.replace('\n', "\n  - ")));
                    }
                    _ => {
                        msg.push_str(&format!("\n  - {err}"));
                        if !path.is_empty() {
                            msg.push_str(&format!(" (key `{path}`)"));
                        }
                    }
                }
            }
            ConfigError::Parse(msg)
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values figment cannot: addresses, ranges, hashes, homes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let listen = self.server.listen;
        if self.users.is_empty()
            && self.users_file.is_none()
            && self.auth_hook.is_none()
            && !listen.ip().is_loopback()
        {
            return Err(ConfigError::Invalid(format!(
                "server.listen = {listen} is not a loopback address and no [[users]] are configured: \
                 add a user (password_hash from `ftpgate hash-password`) before listening on the network"
            )));
        }
        self.storage.validate("storage")?;
        for (name, b) in &self.backends {
            b.validate(&format!("backends.{name}"))?;
        }
        if self.server.proxy_protocol && self.server.proxy_trusted.is_empty() {
            // Any peer could otherwise claim any client address: on the control
            // port to dodge bans and caps, on a passive port to take another
            // client's data connection.
            return Err(
                "server.proxy_protocol = true needs server.proxy_trusted: list the \
                        load balancer's networks (e.g. [\"10.0.0.0/16\"]), or write \
                        [\"0.0.0.0/0\", \"::/0\"] to trust every peer explicitly"
                    .into(),
            );
        }
        if self.server.upload_close_wait_us > 5_000_000 {
            return Err(ConfigError::Invalid(format!(
                "server.upload_close_wait_us = {} is above 5000000 (5 s): every upload waits this long",
                self.server.upload_close_wait_us
            )));
        }
        if !(1..=128).contains(&self.server.ipv6_prefix_len) {
            return Err(ConfigError::Invalid(format!(
                "server.ipv6_prefix_len = {} must be between 1 and 128",
                self.server.ipv6_prefix_len
            )));
        }
        if self.passive.proxy_listen.is_some() {
            if !self.server.proxy_protocol {
                return Err("passive.proxy_listen needs server.proxy_protocol = true".into());
            }
            if self.passive.ports.is_none() {
                return Err("passive.proxy_listen needs passive.ports (the ports the load balancer forwards)".into());
            }
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            w.validate(i)?;
        }
        if let Some(h) = &self.auth_hook {
            h.validate()?;
        }
        let tls_on = self.server.tls != TlsMode::Off || self.tls.implicit_listen.is_some();
        if tls_on && (self.tls.cert_file.is_none() || self.tls.key_file.is_none()) {
            return Err(
                "server.tls / tls.implicit_listen need tls.cert_file and tls.key_file".into(),
            );
        }
        if self.server.login_cache_secs > 86_400 {
            return Err("server.login_cache_secs must be at most 86400 (one day)".into());
        }
        if self.server.max_line < 64 {
            return Err("server.max_line must be at least 64".into());
        }
        let s = &self.server;
        if s.shutdown_delay_secs > 600 {
            return Err("server.shutdown_delay_secs must be at most 600".into());
        }
        if s.backend_check_interval_secs > 3600 {
            return Err("server.backend_check_interval_secs must be at most 3600".into());
        }
        if s.backend_unready_after_secs != 0
            && s.backend_unready_after_secs < s.backend_check_interval_secs
        {
            return Err("server.backend_unready_after_secs must be 0 or at least \
                 server.backend_check_interval_secs"
                .into());
        }
        self.check_users(&self.all_users()?)
    }

    /// Inline `[[users]]` followed by those of `users_file` (read now).
    pub fn all_users(&self) -> Result<Vec<UserConfig>, ConfigError> {
        let mut all = self.users.clone();
        if let Some(f) = &self.users_file {
            all.extend(load_users_file(f)?);
        }
        Ok(all)
    }

    /// Checks a user list: unique names, PHC hashes, homes, backends.
    pub fn check_users(&self, users: &[UserConfig]) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, u) in users.iter().enumerate() {
            if u.name.is_empty() || u.name.contains(char::is_whitespace) {
                return Err(ConfigError::Invalid(format!(
                    "users[{i}].name must be non-empty without spaces"
                )));
            }
            if !seen.insert(u.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "users[{i}].name `{}` appears twice",
                    u.name
                )));
            }
            crate::auth::check_phc(&u.password_hash)
                .map_err(|e| format!("users[{i}].password_hash ({}): {e}", u.name))?;
            ftpgate_storage::VPath::parse(&u.home).map_err(|e| format!("users[{i}].home: {e}"))?;
            if home_leaves_root(&u.home) {
                return Err(ConfigError::Invalid(format!(
                    "{}.home `{}` is outside the backend root (`..` above `/`); \
                     homes are paths inside the storage root or prefix",
                    self.user_key(i),
                    u.home
                )));
            }
            check_user_limits(u).map_err(|e| format!("{}.{e}", self.user_key(i)))?;
            if let Some(b) = &u.backend {
                if !self.backends.contains_key(b) {
                    return Err(ConfigError::Invalid(format!(
                        "users[{i}].backend = \"{b}\" but there is no [backends.{b}]"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The key of the `i`th user of [`Config::all_users`]: `users[i]` for inline
    /// users, `users_file PATH: users[j]` for those of the users file.
    pub fn user_key(&self, i: usize) -> String {
        match (&self.users_file, i.checked_sub(self.users.len())) {
            (Some(f), Some(j)) => format!("users_file {}: users[{j}]", f.display()),
            _ => format!("users[{i}]"),
        }
    }
}

/// The Kubernetes Service `ports:` items for `config` (`ftpgate service-ports`):
/// `ftp` (`control_port` → the `server.listen` port), then `pasv-N` for each port
/// of `passive.ports`, targeting that port, or `passive.proxy_listen`'s port when
/// data connections share one port behind a PROXY-protocol balancer.
pub fn service_ports_yaml(config: &Config, control_port: u16) -> Result<String, ConfigError> {
    let listen = config.server.listen;
    let range = config.passive.ports.ok_or(
        "passive.ports is not set: a Kubernetes Service cannot route ephemeral passive ports",
    )?;
    let shared_target = config.passive.proxy_listen.map(|a| a.port());
    let item = |name: String, port: u16, target: u16| {
        format!("- name: {name}\n  port: {port}\n  targetPort: {target}\n  protocol: TCP\n")
    };
    let mut out = item("ftp".into(), control_port, listen.port());
    for p in range.start..=range.end {
        out.push_str(&item(format!("pasv-{p}"), p, shared_target.unwrap_or(p)));
    }
    Ok(out)
}

/// True when `home` climbs above the root with `..` (`../../etc`, `/a/../../b`):
/// such a home would otherwise be silently clamped into the root.
pub fn home_leaves_root(home: &str) -> bool {
    let mut depth = 0usize;
    for seg in home.split('/') {
        match seg {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

/// The prefix of configuration environment variables (`FTPGATE_SECTION__KEY`).
pub const ENV_PREFIX: &str = "FTPGATE_";

/// Whether `name=value` is a variable Kubernetes injects for a Service (service
/// links, on unless the pod sets `enableServiceLinks: false`): for a Service `NAME`
/// with ports, `NAME_SERVICE_HOST=ip`, `NAME_SERVICE_PORT[_PORTNAME]=n`,
/// `NAME_PORT=tcp://ip:n`, `NAME_PORT_n_TCP=tcp://ip:n` and
/// `NAME_PORT_n_TCP_{PROTO,PORT,ADDR}` (TCP, UDP or SCTP). Both the name and the
/// shape of the value must match, so a mistyped setting is still refused.
pub fn is_service_link(name: &str, value: &str) -> bool {
    fn ident(s: &str) -> bool {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    }
    fn port(v: &str) -> bool {
        v.parse::<u16>().is_ok_and(|p| p > 0)
    }
    fn ip(v: &str) -> bool {
        v.parse::<IpAddr>().is_ok()
    }
    const PROTOS: [&str; 3] = ["TCP", "UDP", "SCTP"];
    /// `tcp://10.0.0.1:21` or `tcp://[fd00::1]:21`.
    fn url(v: &str) -> bool {
        let Some((scheme, rest)) = v.split_once("://") else {
            return false;
        };
        let Some((host, p)) = rest.rsplit_once(':') else {
            return false;
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        PROTOS.iter().any(|x| x.eq_ignore_ascii_case(scheme)) && ip(host) && port(p)
    }
    if !ident(name) {
        return false;
    }
    if let Some(svc) = name.strip_suffix("_SERVICE_HOST") {
        return ident(svc) && ip(value);
    }
    if let Some((svc, rest)) = name.split_once("_SERVICE_PORT") {
        // `_SERVICE_PORT` or `_SERVICE_PORT_<port name>`.
        return ident(svc) && (rest.is_empty() || rest.starts_with('_')) && port(value);
    }
    if let Some(svc) = name.strip_suffix("_PORT") {
        if ident(svc) && url(value) {
            return true;
        }
    }
    // NAME_PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR]: find `_PORT_<digits>_<PROTO>`.
    let mut from = 0;
    while let Some(i) = name[from..].find("_PORT_").map(|i| i + from) {
        from = i + 1;
        let svc = &name[..i];
        let rest = &name[i + "_PORT_".len()..];
        let Some((n, rest)) = rest.split_once('_') else {
            continue;
        };
        if !ident(svc) || !port(n) {
            continue;
        }
        let (proto, suffix) = match rest.split_once('_') {
            Some((p, s)) => (p, Some(s)),
            None => (rest, None),
        };
        if !PROTOS.contains(&proto) {
            continue;
        }
        return match suffix {
            None => url(value),
            Some("PROTO") => PROTOS.iter().any(|x| x.eq_ignore_ascii_case(value)),
            Some("PORT") => port(value),
            Some("ADDR") => ip(value),
            Some(_) => false,
        };
    }
    false
}

/// The `FTPGATE_*` variables of this process that are Kubernetes service links
/// ([`is_service_link`]); [`Config::load`] ignores them. Sorted.
pub fn service_link_vars() -> Vec<String> {
    let mut v: Vec<String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, v)| k.starts_with(ENV_PREFIX) && is_service_link(k, v))
        .map(|(k, _)| k)
        .collect();
    v.sort();
    v
}

/// The `[[users]]` of a users file: TOML, or JSON when the name ends in `.json`
/// (`{"users": [...]}`).
pub fn load_users_file(path: &Path) -> Result<Vec<UserConfig>, ConfigError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct UsersFile {
        #[serde(default)]
        users: Vec<UserConfig>,
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("users_file {}: {e}", path.display()))?;
    let parsed: UsersFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| format!("users_file {}: {e}", path.display()))?
    } else {
        toml::from_str(&text).map_err(|e| format!("users_file {}: {e}", path.display()))?
    };
    Ok(parsed.users)
}

/// Checks a user's limits; the error starts with the key (`quota_bytes: …`).
fn check_user_limits(u: &UserConfig) -> Result<(), ConfigError> {
    for (key, v) in [
        ("upload_bytes_per_sec", u.upload_bytes_per_sec),
        ("download_bytes_per_sec", u.download_bytes_per_sec),
        ("max_sessions", u.max_sessions.map(|n| n as u64)),
    ] {
        if v == Some(0) {
            return Err(ConfigError::Invalid(format!(
                "{key} = 0 refuses everything; leave it unset for no limit"
            )));
        }
    }
    for (j, n) in u.allowed_networks.iter().enumerate() {
        parse_net(n).map_err(|e| format!("allowed_networks[{j}]: {e}"))?;
    }
    Ok(())
}

/// Parses a CIDR network; a bare address is a single-host network.
pub fn parse_net(s: &str) -> Result<ipnet::IpNet, ConfigError> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| ConfigError::Invalid(format!("`{s}` is not a network like 10.0.0.0/8")))
}

/// An address literal or a host name to resolve (`passive.advertise`), told apart
/// once when the config is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Host {
    /// An IP address literal, used as is.
    Ip(IpAddr),
    /// A DNS name, resolved at start and every `advertise_refresh_secs`.
    Name(String),
}

impl From<String> for Host {
    fn from(s: String) -> Self {
        match s.parse() {
            Ok(ip) => Self::Ip(ip),
            Err(_) => Self::Name(s),
        }
    }
}

impl From<&str> for Host {
    fn from(s: &str) -> Self {
        Self::from(s.to_owned())
    }
}

impl From<Host> for String {
    fn from(h: Host) -> Self {
        match h {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(n) => n,
        }
    }
}

/// Resolves `passive.advertise` (an IPv4 literal or a host name) once.
pub async fn resolve_advertise(host: &Host) -> Result<IpAddr, ConfigError> {
    let s = match host {
        Host::Ip(ip) => return Ok(*ip),
        Host::Name(s) => s.as_str(),
    };
    let addrs = tokio::net::lookup_host((s, 0))
        .await
        .map_err(|e| format!("passive.advertise `{s}`: {e}"))?;
    addrs
        .map(|a| a.ip())
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| ConfigError::Invalid(format!("passive.advertise `{s}` has no IPv4 address")))
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return figment::Error
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_are_loopback_and_local() {
        let c = Config::default();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:2121");
        assert_eq!(c.storage.kind(), StorageKind::Local);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn layering_file_env_cli() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "f.toml",
                r#"
                [server]
                listen = "127.0.0.1:3000"
                max_sessions = 7
                [storage]
                kind = "memory"
                "#,
            )?;
            jail.set_env("FTPGATE_SERVER__MAX_SESSIONS", "9");
            let c = Config::load(Some(Path::new("f.toml")), &CliOverrides::default()).unwrap();
            assert_eq!(c.server.listen.to_string(), "127.0.0.1:3000");
            assert_eq!(c.server.max_sessions, 9);
            assert_eq!(c.storage.kind(), StorageKind::Memory);
            let cli = CliOverrides {
                listen: Some("127.0.0.1:4000".into()),
                ..Default::default()
            };
            let c = Config::load(Some(Path::new("f.toml")), &cli).unwrap();
            assert_eq!(c.server.listen.to_string(), "127.0.0.1:4000");
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key() {
        Jail::expect_with(|jail| {
            jail.create_file("f.toml", "[server]\nmax_sessions = \"lots\"\n")?;
            let e = Config::load(Some(Path::new("f.toml")), &CliOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("server.max_sessions"), "{e}");
            jail.create_file("g.toml", "[server]\nlisten = \"0.0.0.0:21\"\n")?;
            let e = Config::load(Some(Path::new("g.toml")), &CliOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a loopback"), "{e}");
            jail.create_file("h.toml", "[passive]\nports = \"9-1\"\n")?;
            let e = Config::load(Some(Path::new("h.toml")), &CliOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("passive.ports"), "{e}");
            jail.create_file("i.toml", "[storage]\nkind = \"floppy\"\n")?;
            let e = Config::load(Some(Path::new("i.toml")), &CliOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("storage.kind"), "{e}");
            jail.create_file(
                "j.toml",
                "[[users]]\nname = \"a\"\npassword_hash = \"plain\"\n",
            )?;
            let e = Config::load(Some(Path::new("j.toml")), &CliOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("users[0].password_hash"), "{e}");
            jail.create_file("k.toml", "[server]\nlsten = \"x\"\n")?;
            let e = Config::load(Some(Path::new("k.toml")), &CliOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("lsten"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn shipped_examples_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "toml") {
                let fig =
                    Figment::from(Serialized::defaults(Config::default())).merge(Toml::file(&p));
                let c: Config = fig
                    .extract()
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                c.validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                for u in &c.users {
                    assert!(crate::auth::verify_password("change me", &u.password_hash));
                }
                n += 1;
            }
        }
        assert!(n >= 3);
    }

    #[test]
    fn quiet_targets_are_added_unless_asked_for() {
        let f = log_filter;
        assert_eq!(
            f("info"),
            "info,object_store=warn,reqwest=warn,hyper=warn,hyper_util=warn"
        );
        assert_eq!(
            f("ftpgate=debug,warn"),
            "ftpgate=debug,warn,object_store=warn,reqwest=warn,hyper=warn,hyper_util=warn"
        );
        assert_eq!(f("debug"), "debug");
        assert_eq!(f("ftpgate=info,trace"), "ftpgate=info,trace");
        assert_eq!(f("info,object_store=info"), "info,object_store=info");
        assert_eq!(
            f("object_store::client::retry=debug"),
            "object_store::client::retry=debug"
        );
    }

    #[test]
    fn homes_above_the_root() {
        for bad in ["..", "../../etc", "/a/../../b", "a/./../..", "/../x"] {
            assert!(home_leaves_root(bad), "{bad}");
        }
        for good in ["/", "", "/a", "a/b/..", "/a/../b", "./x", "/a/b/../../"] {
            assert!(!home_leaves_root(good), "{good}");
        }
    }

    #[test]
    fn users_file_toml_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let h = crate::auth::hash_password("pw").unwrap();
        let t = dir.path().join("u.toml");
        std::fs::write(
            &t,
            format!("[[users]]\nname = \"a\"\npassword_hash = \"{h}\"\nhome = \"/a\"\n"),
        )
        .unwrap();
        let j = dir.path().join("u.json");
        std::fs::write(
            &j,
            format!(
                r#"{{"users": [{{"name": "b", "password_hash": "{h}", "permissions": ["read"]}}]}}"#
            ),
        )
        .unwrap();
        assert_eq!(load_users_file(&t).unwrap()[0].home, "/a");
        let b = &load_users_file(&j).unwrap()[0];
        assert_eq!((b.name.as_str(), b.permissions.len()), ("b", 1));
        let cfg = Config {
            users_file: Some(t.clone()),
            ..Default::default()
        };
        assert_eq!(cfg.all_users().unwrap().len(), 1);
        std::fs::write(&t, "[[users]]\nname = \"x\"\nbogus = 1\n").unwrap();
        let e = load_users_file(&t).unwrap_err().to_string();
        assert!(e.contains("users_file"), "{e}");
        assert!(load_users_file(&dir.path().join("missing.toml")).is_err());
    }

    #[test]
    fn service_link_patterns() {
        // What Kubernetes injects for the shipped Services `ftpgate` (ftp 21, pasv-…)
        // and `ftpgate-metrics` (http-metrics 9100).
        for (k, v) in [
            ("FTPGATE_SERVICE_HOST", "10.96.0.10"),
            ("FTPGATE_SERVICE_PORT", "21"),
            ("FTPGATE_SERVICE_PORT_FTP", "21"),
            ("FTPGATE_SERVICE_PORT_PASV_30000", "30000"),
            ("FTPGATE_PORT", "tcp://10.96.0.10:21"),
            ("FTPGATE_PORT_21_TCP", "tcp://10.96.0.10:21"),
            ("FTPGATE_PORT_21_TCP_PROTO", "tcp"),
            ("FTPGATE_PORT_21_TCP_PORT", "21"),
            ("FTPGATE_PORT_21_TCP_ADDR", "10.96.0.10"),
            ("FTPGATE_PORT_30009_TCP_ADDR", "10.96.0.10"),
            ("FTPGATE_METRICS_SERVICE_HOST", "10.96.0.11"),
            ("FTPGATE_METRICS_SERVICE_PORT_HTTP_METRICS", "9100"),
            ("FTPGATE_METRICS_PORT", "tcp://10.96.0.11:9100"),
            ("FTPGATE_METRICS_PORT_9100_TCP_ADDR", "10.96.0.11"),
            ("FTPGATE_V6_PORT", "tcp://[fd00::1]:21"),
            ("FTPGATE_DNS_PORT_53_UDP_PROTO", "udp"),
        ] {
            assert!(is_service_link(k, v), "{k}={v} is a service link");
        }
        for (k, v) in [
            ("FTPGATE_SERVER__LISTEN", "0.0.0.0:2121"),
            ("FTPGATE_USERS_FILE", "/etc/u.toml"),
            ("FTPGATE_GRACE", "30"),
            ("FTPGATE_PORT", "2121"),
            ("FTPGATE_SERVICE_HOST", "ftp.example.com"),
            ("FTPGATE_SERVICE_PORT", "0"),
            ("FTPGATE_PORT_21_TCP", "21"),
            ("FTPGATE_PORT_21_TCP_ADDR", "somewhere"),
            ("FTPGATE_PORT_21_XTP_ADDR", "10.0.0.1"),
            ("FTPGATE_PORT_21_TCP_HOST", "10.0.0.1"),
            ("FTPGATE_PORT", "http://10.0.0.1:21"),
            ("ftpgate_service_host", "10.0.0.1"),
        ] {
            assert!(!is_service_link(k, v), "{k}={v} is not a service link");
        }
    }

    #[test]
    fn service_links_are_ignored_and_settings_still_apply() {
        Jail::expect_with(|jail| {
            for (k, v) in [
                ("FTPGATE_SERVICE_HOST", "10.96.0.10"),
                ("FTPGATE_SERVICE_PORT", "21"),
                ("FTPGATE_SERVICE_PORT_FTP", "21"),
                ("FTPGATE_PORT", "tcp://10.96.0.10:21"),
                ("FTPGATE_PORT_21_TCP", "tcp://10.96.0.10:21"),
                ("FTPGATE_PORT_21_TCP_PROTO", "tcp"),
                ("FTPGATE_PORT_21_TCP_PORT", "21"),
                ("FTPGATE_PORT_21_TCP_ADDR", "10.96.0.10"),
                ("FTPGATE_METRICS_SERVICE_HOST", "10.96.0.11"),
                ("FTPGATE_METRICS_PORT_9100_TCP_ADDR", "10.96.0.11"),
            ] {
                jail.set_env(k, v);
            }
            jail.create_file("f.toml", "[server]\nmax_sessions = 7\n")?;
            jail.set_env("FTPGATE_SERVER__SHUTDOWN_DELAY_SECS", "9");
            let c = Config::load(Some(Path::new("f.toml")), &CliOverrides::default()).unwrap();
            assert_eq!(c.server.max_sessions, 7);
            assert_eq!(c.server.shutdown_delay_secs, 9);
            let links = service_link_vars();
            assert!(links.contains(&"FTPGATE_PORT".to_owned()), "{links:?}");
            assert!(links.contains(&"FTPGATE_METRICS_PORT_9100_TCP_ADDR".to_owned()));
            assert!(!links.contains(&"FTPGATE_SERVER__SHUTDOWN_DELAY_SECS".to_owned()));
            // Anything else under the prefix is still an error that names it.
            jail.set_env("FTPGATE_GRACE", "30");
            let e = Config::load(Some(Path::new("f.toml")), &CliOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("grace"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("FTPGATE_PORT", "2121");
            let e = Config::load(None, &CliOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("port"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn readiness_and_drain_keys_are_checked() {
        let mut c = Config::default();
        assert_eq!(c.server.shutdown_delay_secs, 5);
        c.server.backend_unready_after_secs = 2;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("server.backend_unready_after_secs"), "{e}");
        c.server.backend_unready_after_secs = 0;
        assert!(c.validate().is_ok());
        c.server.shutdown_delay_secs = 601;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("server.shutdown_delay_secs"));
    }

    #[test]
    fn port_range() {
        assert_eq!(
            PortRange::parse("50000-50100").ok(),
            Some(PortRange {
                start: 50000,
                end: 50100
            })
        );
        assert_eq!(
            PortRange::parse("2000").ok(),
            Some(PortRange {
                start: 2000,
                end: 2000
            })
        );
        assert!(PortRange::parse("0-5").is_err());
        assert!(PortRange::parse("a-b").is_err());
    }
}

#[cfg(test)]
mod cloud_kind_tests {
    use super::*;

    /// Reads and validates one section written in TOML as `key`.
    fn section(key: &str, text: &str) -> Result<StorageConfig, String> {
        let v: figment::value::Value = toml::from_str(text).unwrap();
        let s = StorageConfig::from_value(&v, key).map_err(|e| e.to_string())?;
        s.validate(key).map_err(|e| e.to_string())?;
        Ok(s)
    }

    #[test]
    fn gcs_section_is_mapped_and_checked() {
        let gcs = "kind = \"gcs\"\n";
        let e = section("storage", gcs).unwrap_err();
        assert!(e.contains("storage.bucket is required"), "{e}");
        let gcs = format!(
            "{gcs}bucket = \"b\"\nprefix = \"ftp\"\nendpoint = \"http://127.0.0.1:4443\"\n"
        );
        let e = section("backends.g", &gcs).unwrap_err();
        assert!(
            e.contains("backends.g.endpoint") && e.contains("allow_http"),
            "{e}"
        );
        let gcs = format!("{gcs}allow_http = true\nanonymous = true\npart_size_mib = 16\n");
        let BackendConfig::Gcs(c) = section("storage", &gcs).unwrap().backend else {
            panic!("not gcs")
        };
        assert_eq!((c.bucket.as_str(), c.anonymous), ("b", true));
        assert_eq!(c.tuning.part_size_mib, 16);
        let e = section("storage", &format!("{gcs}container = \"c\"\n")).unwrap_err();
        assert!(e.contains("storage.container does not apply"), "{e}");
        let e = section("storage", &format!("{gcs}region = \"eu\"\n")).unwrap_err();
        assert!(
            e.contains("storage.region does not apply to kind = \"gcs\""),
            "{e}"
        );
    }

    #[test]
    fn azure_section_is_mapped_and_checked() {
        let az = "kind = \"azure\"\n";
        let e = section("storage", az).unwrap_err();
        assert!(e.contains("storage.container is required"), "{e}");
        let az = format!("{az}container = \"c\"\n");
        let e = section("storage", &az).unwrap_err();
        assert!(e.contains("storage.account"), "{e}");
        let az = format!("{az}use_emulator = true\n");
        let BackendConfig::Azure(c) = section("storage", &az).unwrap().backend else {
            panic!("not azure")
        };
        assert_eq!(c.account_name(), Some("devstoreaccount1"));
        let e = section(
            "storage",
            &format!("{az}access_key = \"k\"\naccess_key_file = \"/nonexistent\"\n"),
        )
        .unwrap_err();
        assert!(e.contains("exclusive"), "{e}");
        let e = section("storage", &format!("{az}bucket = \"b\"\n")).unwrap_err();
        assert!(e.contains("storage.bucket does not apply"), "{e}");
        // Keys of the cloud kinds are refused elsewhere.
        let e = section(
            "storage",
            "kind = \"s3\"\nbucket = \"b\"\nuse_emulator = true\n",
        )
        .unwrap_err();
        assert!(
            e.contains("storage.use_emulator does not apply to kind = \"s3\""),
            "{e}"
        );
    }

    #[test]
    fn kinds_parse_from_toml() {
        let c = section(
            "storage",
            "kind = \"azure\"\ncontainer = \"c\"\nuse_emulator = true\n",
        )
        .unwrap();
        assert_eq!(c.kind(), StorageKind::Azure);
        let c = section("storage", "kind = \"gcs\"\nbucket = \"b\"\n").unwrap();
        assert_eq!(c.kind(), StorageKind::Gcs);
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return figment::Error
mod typed_section_tests {
    use super::*;
    use figment::Jail;

    fn load(jail: &mut Jail, text: &str) -> Result<Config, String> {
        jail.create_file("t.toml", text).unwrap();
        Config::load(Some(Path::new("t.toml")), &CliOverrides::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_backend_of_each_kind_parses() {
        Jail::expect_with(|jail| {
            let c = load(
                jail,
                "[backends.disk]\nroot = \"/srv\"\nresume_window_secs = 60\n\
                 [backends.ram]\nkind = \"memory\"\nupload_sha256 = false\n\
                 [backends.bucket]\nkind = \"s3\"\nbucket = \"b\"\nregion = \"eu-west-1\"\n\
                 part_size_mib = 16\nresume_window_secs = 0\n\
                 [backends.gcs]\nkind = \"gcs\"\nbucket = \"g\"\nmax_retries = 5\n\
                 [backends.az]\nkind = \"azure\"\ncontainer = \"c\"\nuse_emulator = true\n",
            )
            .unwrap();
            let b = &c.backends;
            let BackendConfig::Local(l) = &b["disk"].backend else {
                panic!("disk: {:?}", b["disk"])
            };
            assert_eq!(l.root, Path::new("/srv"));
            assert_eq!(
                b["disk"].resume_window(),
                Some(std::time::Duration::from_secs(60))
            );
            assert_eq!(b["ram"].kind(), StorageKind::Memory);
            assert_eq!(b["ram"].upload_sha256, Some(false));
            let BackendConfig::S3(s3) = &b["bucket"].backend else {
                panic!("bucket: {:?}", b["bucket"])
            };
            assert_eq!((s3.bucket.as_str(), s3.region.as_str()), ("b", "eu-west-1"));
            assert_eq!((s3.part_size_mib, s3.max_parts_in_flight), (16, 4));
            assert_eq!(
                s3.resume_window_secs, 0,
                "the shared key reaches the S3 config"
            );
            let BackendConfig::Gcs(g) = &b["gcs"].backend else {
                panic!("gcs: {:?}", b["gcs"])
            };
            assert_eq!((g.tuning.max_retries, g.tuning.max_parts_in_flight), (5, 2));
            assert_eq!(b["az"].kind(), StorageKind::Azure);
            assert_eq!(c.storage.kind(), StorageKind::Local);
            Ok(())
        });
    }

    #[test]
    fn wrong_kind_and_unknown_keys_are_named() {
        Jail::expect_with(|jail| {
            for (text, want) in [
                (
                    "[storage]\nkind = \"memory\"\npart_size_mib = 8\n",
                    "storage.part_size_mib only applies to kind = \"s3\"",
                ),
                (
                    "[backends.archive]\nkind = \"gcs\"\nbucket = \"b\"\naccess_key_id = \"k\"\n",
                    "backends.archive.access_key_id does not apply to kind = \"gcs\"",
                ),
                (
                    "[backends.archive]\nkind = \"s3\"\n",
                    "backends.archive.bucket is required for kind = \"s3\"",
                ),
                (
                    "[storage]\nkind = \"s3\"\nbucket = \"b\"\nregoin = \"x\"\n",
                    "storage.regoin: unknown key",
                ),
                (
                    "[storage]\nkind = \"s3\"\nbucket = \"b\"\npart_size_mib = \"big\"\n",
                    "storage.part_size_mib: invalid type",
                ),
                (
                    "[storage]\nkind = \"s3\"\nbucket = \"b\"\npart_size_mib = 1\n",
                    "storage.part_size_mib: 1 is outside",
                ),
                ("[storage]\nkind = \"tape\"\n", "storage.kind"),
                (
                    "[storage]\nkind = \"s3\"\nbucket = \"b\"\naccess_key_file = \"/k\"\n",
                    "storage.access_key_file does not apply to kind = \"s3\"",
                ),
                (
                    "[backends.x]\nkind = \"s3\"\nbucket = \"b\"\nsecret_access_key_file = \"/nonexistent\"\n",
                    "backends.x.secret_access_key_file /nonexistent",
                ),
            ] {
                let e = load(jail, text).unwrap_err();
                assert!(e.contains(want), "{text}: {e}");
            }
            Ok(())
        });
    }

    #[test]
    fn env_overrides_a_nested_s3_key() {
        Jail::expect_with(|jail| {
            jail.create_file("secret", "s3cr3t\n")?;
            jail.set_env("FTPGATE_BACKENDS__ARCHIVE__PART_SIZE_MIB", "32");
            jail.set_env("FTPGATE_BACKENDS__ARCHIVE__ACCESS_KEY_ID", "AKIA");
            jail.set_env(
                "FTPGATE_BACKENDS__ARCHIVE__SECRET_ACCESS_KEY_FILE",
                "secret",
            );
            jail.set_env("FTPGATE_STORAGE__KIND", "s3");
            jail.set_env("FTPGATE_STORAGE__BUCKET", "main");
            let toml = "[backends.archive]\nkind = \"s3\"\nbucket = \"b\"\npart_size_mib = 8\n";
            let c = load(jail, toml).unwrap();
            let BackendConfig::S3(s3) = &c.backends["archive"].backend else {
                panic!("{:?}", c.backends)
            };
            assert_eq!(s3.part_size_mib, 32);
            let secret = s3.secret_access_key.as_ref().map(|s| s.expose());
            assert_eq!(secret, Some("s3cr3t"));
            assert!(!format!("{s3:?}").contains("s3cr3t"));
            let BackendConfig::S3(main) = &c.storage.backend else {
                panic!("{:?}", c.storage)
            };
            assert_eq!(main.bucket, "main");
            jail.set_env("FTPGATE_BACKENDS__ARCHIVE__PART_SIZE_MIB", "2");
            let e = load(jail, toml).unwrap_err();
            assert!(e.contains("backends.archive.part_size_mib"), "{e}");
            Ok(())
        });
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return figment::Error
mod typed_value_tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn addresses_networks_and_ranges_are_read_once_and_named() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "ok.toml",
                "[server]\nlisten = \"[::1]:2121\"\nproxy_protocol = true\n\
                 proxy_trusted = [\"10.0.0.0/8\", \"192.0.2.1\"]\n\
                 [http]\nlisten = \"127.0.0.1:9100\"\n\
                 [passive]\nports = \"30000-30009\"\nproxy_listen = \"127.0.0.1:2120\"\n\
                 [[passive.advertise_for]]\ncidr = \"10.1.0.0/16\"\naddress = \"lb.example\"\n",
            )?;
            let c = Config::load(Some(Path::new("ok.toml")), &CliOverrides::default()).unwrap();
            assert_eq!(c.server.listen, "[::1]:2121".parse::<SocketAddr>().unwrap());
            assert_eq!(c.server.proxy_trusted[1].to_string(), "192.0.2.1/32");
            assert_eq!(c.http.listen.map(|a| a.port()), Some(9100));
            assert_eq!(
                c.passive.ports,
                Some(PortRange {
                    start: 30000,
                    end: 30009
                })
            );
            assert_eq!(c.passive.advertise_for[0].cidr.prefix_len(), 16);
            assert_eq!(
                c.passive.advertise_for[0].address,
                Host::Name("lb.example".into())
            );
            assert_eq!(
                Host::from("10.0.0.1"),
                Host::Ip("10.0.0.1".parse().unwrap())
            );
            for (text, key, value) in [
                (
                    "[server]\nlisten = \"localhost\"\n",
                    "server.listen",
                    "`localhost`",
                ),
                ("[http]\nlisten = \"9100\"\n", "http.listen", "`9100`"),
                (
                    "[tls]\nimplicit_listen = \"x:990\"\n",
                    "tls.implicit_listen",
                    "`x:990`",
                ),
                (
                    "[passive]\nproxy_listen = \"a\"\n",
                    "passive.proxy_listen",
                    "`a`",
                ),
                ("[passive]\nports = \"9-1\"\n", "passive.ports", "`9-1`"),
                ("[passive]\nports = \"a-b\"\n", "passive.ports", "`a-b`"),
                (
                    "[server]\nproxy_trusted = [\"10.0.0.0/33\"]\n",
                    "server.proxy_trusted",
                    "`10.0.0.0/33`",
                ),
                (
                    "[[passive.advertise_for]]\ncidr = \"ten\"\naddress = \"1.2.3.4\"\n",
                    "passive.advertise_for.0.cidr",
                    "`ten` is not a network",
                ),
            ] {
                jail.create_file("bad.toml", text)?;
                let e = Config::load(Some(Path::new("bad.toml")), &CliOverrides::default())
                    .unwrap_err()
                    .to_string();
                assert!(e.contains(key) && e.contains(value), "{text}: {e}");
            }
            Ok(())
        });
    }
}
