//! External authentication hook (`[auth_hook]`): users who are not in the users
//! file are checked by an HTTP endpoint, as SFTPGo's HTTP external auth and
//! unFTP's REST authenticator do. On PASS (RFC 959 §4.1.1) the server POSTs
//!
//! ```json
//! {"user": "alice", "password": "…", "ip": "192.0.2.7", "protocol": "ftp",
//!  "tls": true, "session_id": 12}
//! ```
//!
//! to `url`, signed like the webhooks (`X-Ftpgate-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of the exact body under the key of `secret_file`, RFC 2104). The
//! answer decides:
//! - **200** with a JSON object: allowed. The object is a `[[users]]` entry
//!   without `password_hash` (`name` optional; when present it must be the login
//!   name), so `home`, `backend`, `permissions`, `max_upload_bytes` and every
//!   other per-user key mean what they mean in the users file, and the entry is
//!   validated exactly as a file user is (home not above the root, backend
//!   configured, unknown keys refused). The home is created at login.
//! - **401** or **403**: denied.
//! - Anything else (no connection, no answer within `timeout_ms`, another
//!   status, a redirect, a body that is not such an object, an invalid home or
//!   backend, a home that cannot be created): **fail closed**: the login is
//!   refused and the reason logged (never the password).
//!
//! Denials and hook failures are failed logins like a wrong password: 530 after
//! `server.login_failure_delay_ms`, counted towards `max_login_failures` and the
//! per-address bans, under the same per-address turn (RFC 2577 §"Protecting
//! passwords").
//!
//! Allowed logins are remembered for `cache_secs` ([`HookCache`]); denials and
//! failures never are, and the cache is emptied on SIGHUP.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::auth::{Authenticator, User};
use crate::config::{Config, UserConfig};

/// Largest answer body read from the hook, in bytes; a longer one is a failure.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Bound on creating a hook user's home in its backend at login.
pub const HOME_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest `timeout_ms`: an FTP client waits for the PASS reply meanwhile.
pub const MAX_TIMEOUT_MS: u64 = 30_000;

/// Longest `cache_secs`.
pub const MAX_CACHE_SECS: u64 = 3600;

/// Which source decides a login (`auth_hook.order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HookOrder {
    /// A name in the users file is checked against its hash only (the hook is
    /// never asked about it); every other name goes to the hook.
    #[default]
    UsersFirst,
    /// Every login goes to the hook; the users file is not used for logins.
    HookOnly,
}

/// `[auth_hook]` keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthHookConfig {
    /// `http://` or `https://` URL the login checks are POSTed to. Required.
    pub url: String,
    /// Bound on each request (connect, send, whole answer), in milliseconds;
    /// 1–30000. Default 3000.
    pub timeout_ms: u64,
    /// Seconds an allowed login is remembered (same user, password, client
    /// address and TLS state); 0: every login asks the hook. At most 3600.
    /// Default 60.
    pub cache_secs: u64,
    /// File holding the HMAC secret that signs each request (surrounding
    /// whitespace ignored). Unset: no signature header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// `users_first` (default) or `hook_only`.
    pub order: HookOrder,
}

impl Default for AuthHookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            timeout_ms: 3000,
            cache_secs: 60,
            secret_file: None,
            order: HookOrder::UsersFirst,
        }
    }
}

impl AuthHookConfig {
    /// Checks the section; errors name the key as `auth_hook.key`.
    pub fn validate(&self) -> Result<(), String> {
        crate::webhooks::check_url("auth_hook", &self.url)?;
        if !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(format!(
                "auth_hook.timeout_ms = {} must be between 1 and {MAX_TIMEOUT_MS}",
                self.timeout_ms
            ));
        }
        if self.cache_secs > MAX_CACHE_SECS {
            return Err(format!(
                "auth_hook.cache_secs = {} must be at most {MAX_CACHE_SECS}",
                self.cache_secs
            ));
        }
        if let Some(f) = &self.secret_file {
            crate::webhooks::read_secret(f).map_err(|e| format!("auth_hook.secret_file: {e}"))?;
        }
        Ok(())
    }
}

/// What the server knows about a login besides name and password.
#[derive(Debug, Clone, Copy)]
pub struct LoginInfo {
    /// The client's address (canonical: IPv4-mapped IPv6 as IPv4).
    pub ip: IpAddr,
    /// The control channel is under TLS (RFC 4217).
    pub tls: bool,
    /// The control connection's id (as in the log).
    pub session_id: u64,
}

/// The JSON body POSTed to the hook.
#[derive(Debug, Serialize)]
pub struct HookRequest<'a> {
    /// The name from USER.
    pub user: &'a str,
    /// The password from PASS.
    pub password: &'a str,
    /// The client's address.
    pub ip: String,
    /// Always `ftp`.
    pub protocol: &'static str,
    /// The control channel is under TLS.
    pub tls: bool,
    /// The control connection's id.
    pub session_id: u64,
}

/// How the hook answered one login.
#[derive(Debug)]
pub enum Verdict {
    /// 200 with a valid user entry.
    Allow(Arc<User>),
    /// 401 or 403.
    Deny(u16),
    /// Anything else: refused (fail closed), with the reason.
    Fail(String),
}

/// Allowed hook logins of the last `ttl`, keyed by HMAC-SHA256 under a random
/// per-process key over user, password, client address and TLS state (the hook
/// is told the address and TLS state and may decide on them, so an answer is
/// reused only for the same ones). Holds no password; bounded in size, the
/// oldest entry going first.
pub struct HookCache {
    key: [u8; 32],
    entries: crate::login_cache::Timed<Arc<User>>,
}

impl HookCache {
    /// A cache keeping allowed logins for `ttl` (zero: off), at most `max`.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            key: rand::random(),
            entries: crate::login_cache::Timed::new(ttl, max),
        }
    }

    fn entry_key(&self, user: &str, password: &str, info: &LoginInfo) -> [u8; 32] {
        let ip = info.ip.to_string();
        crate::login_cache::hmac(
            &self.key,
            &[
                b"auth-hook",
                user.as_bytes(),
                password.as_bytes(),
                ip.as_bytes(),
                &[u8::from(info.tls)],
            ],
        )
    }

    /// The user allowed for this login less than `ttl` before `now`.
    pub fn get(
        &self,
        user: &str,
        password: &str,
        info: &LoginInfo,
        now: Instant,
    ) -> Option<Arc<User>> {
        let k = self.entry_key(user, password, info);
        self.entries.get(&k, now, |_| true)
    }

    /// Remembers an allowed login at `now`.
    pub fn put(&self, user: &str, password: &str, info: &LoginInfo, u: Arc<User>, now: Instant) {
        let k = self.entry_key(user, password, info);
        self.entries.insert(k, u, now);
    }

    /// Forgets everything (SIGHUP).
    pub fn clear(&self) {
        self.entries.clear();
    }
}

/// The hook client: asks the endpoint, validates and caches its answers and
/// creates the homes of the users it allows.
pub struct AuthHook {
    url: String,
    order: HookOrder,
    timeout: Duration,
    secret: Option<Vec<u8>>,
    client: reqwest::Client,
    cache: HookCache,
    /// The configuration without users: validates answers as `[[users]]` entries.
    checker: Config,
    /// A valid hash put into answers for validation only (never verified against).
    placeholder_hash: String,
    backends: crate::state::Backends,
    metrics: Arc<crate::metrics::Metrics>,
}

impl AuthHook {
    /// Reads the secret and builds the HTTP client (no proxy, no redirects, every
    /// request bounded by `timeout_ms`, as the webhooks).
    pub fn new(
        config: &Config,
        c: &AuthHookConfig,
        backends: crate::state::Backends,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Self, String> {
        c.validate()?;
        let secret = match &c.secret_file {
            Some(f) => Some(
                crate::webhooks::read_secret(f)
                    .map_err(|e| format!("auth_hook.secret_file: {e}"))?,
            ),
            None => None,
        };
        let timeout = Duration::from_millis(c.timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("ftpgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("auth_hook: HTTP client: {e}"))?;
        let mut checker = config.clone();
        checker.users.clear();
        checker.users_file = None;
        let placeholder_hash =
            bcrypt::hash(rand::random::<u64>().to_string(), 4).map_err(|e| e.to_string())?;
        Ok(Self {
            url: c.url.clone(),
            order: c.order,
            timeout,
            secret,
            client,
            cache: HookCache::new(
                Duration::from_secs(c.cache_secs),
                crate::login_cache::MAX_ENTRIES,
            ),
            checker,
            placeholder_hash,
            backends,
            metrics,
        })
    }

    /// Whether the users file is consulted first.
    pub fn order(&self) -> HookOrder {
        self.order
    }

    /// Forgets the cached logins (SIGHUP).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .auth_hook
            .get_or_create(&crate::metrics::ResultLabel { result })
            .inc();
    }

    /// Checks a login with the hook (or the cache); `None` when denied or when
    /// the hook failed (logged with the reason, never the password).
    pub async fn login(&self, name: &str, password: &str, info: &LoginInfo) -> Option<Arc<User>> {
        let now = Instant::now();
        if let Some(u) = self.cache.get(name, password, info, now) {
            tracing::debug!(user = name, "auth hook not asked: login recently allowed");
            self.count("cached");
            return Some(u);
        }
        match self.ask(name, password, info).await {
            Verdict::Allow(u) => {
                tracing::debug!(user = name, home = %u.home, "auth hook allowed the login");
                self.count("allowed");
                self.cache.put(name, password, info, u.clone(), now);
                Some(u)
            }
            Verdict::Deny(status) => {
                tracing::info!(user = name, status, "auth hook denied the login");
                self.count("denied");
                None
            }
            Verdict::Fail(why) => {
                tracing::warn!(user = name, error = %why, "auth hook failed: login refused (fail closed)");
                self.count("failed");
                None
            }
        }
    }

    /// One request to the hook, its answer validated; the hook user's home
    /// created. Never longer than `timeout_ms` plus [`HOME_TIMEOUT`].
    pub async fn ask(&self, name: &str, password: &str, info: &LoginInfo) -> Verdict {
        let body = match serde_json::to_vec(&HookRequest {
            user: name,
            password,
            ip: info.ip.to_string(),
            protocol: "ftp",
            tls: info.tls,
            session_id: info.session_id,
        }) {
            Ok(b) => b,
            Err(e) => return Verdict::Fail(format!("request not serialised: {e}")),
        };
        let answer = tokio::time::timeout(self.timeout, self.post(body)).await;
        let (status, body) = match answer {
            Err(_) => return Verdict::Fail(format!("no answer within {:?}", self.timeout)),
            Ok(Err(e)) => return Verdict::Fail(e),
            Ok(Ok(a)) => a,
        };
        match status {
            200 => {}
            401 | 403 => return Verdict::Deny(status),
            s => return Verdict::Fail(format!("HTTP {s} (only 200, 401 and 403 are answers)")),
        }
        let entry = match self.entry(name, &body) {
            Ok(e) => e,
            Err(e) => return Verdict::Fail(format!("invalid answer: {e}")),
        };
        let user = match Authenticator::user_of(&entry) {
            Ok(u) => u,
            Err(e) => return Verdict::Fail(format!("invalid answer: {e}")),
        };
        let Some(backend) = self.backends.lookup(user.backend.as_deref()) else {
            let b = user.backend.as_deref().unwrap_or_default();
            return Verdict::Fail(format!("no [backends.{b}]"));
        };
        match tokio::time::timeout(
            HOME_TIMEOUT,
            crate::state::ensure_dir(backend.as_ref(), &user.home),
        )
        .await
        {
            Ok(Ok(())) => Verdict::Allow(user),
            Ok(Err(e)) => Verdict::Fail(format!("home {}: {e:#}", user.home)),
            Err(_) => Verdict::Fail(format!("home {}: not created in time", user.home)),
        }
    }

    /// POSTs `body`; the status and at most [`MAX_ANSWER_BYTES`] of the answer.
    async fn post(&self, body: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
        let mut req = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header(crate::webhooks::EVENT_HEADER, "auth");
        if let Some(k) = &self.secret {
            req = req.header(
                crate::webhooks::SIGNATURE_HEADER,
                format!("sha256={}", crate::webhooks::sign(k, &body)),
            );
        }
        let mut resp = req.body(body).send().await.map_err(|e| self.why(&e))?;
        let status = resp.status().as_u16();
        let mut got = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.why(&e))? {
            if got.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!("answer longer than {MAX_ANSWER_BYTES} bytes"));
            }
            got.extend_from_slice(&chunk);
        }
        Ok((status, got))
    }

    /// A request error with its causes (`connection refused`), or the timeout.
    fn why(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return format!("no answer within {:?}", self.timeout);
        }
        let mut out = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            out.push_str(&format!(": {s}"));
            src = s.source();
        }
        out
    }

    /// The `[[users]]` entry of a 200 answer for login `name`, validated as a
    /// users-file entry.
    pub fn entry(&self, name: &str, body: &[u8]) -> Result<UserConfig, String> {
        let mut v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v
            .as_object_mut()
            .ok_or("not a JSON object (a [[users]] entry)")?;
        if obj.contains_key("password_hash") {
            return Err("`password_hash` is not allowed: the hook checks the password".into());
        }
        match obj.get("name") {
            None => {
                obj.insert("name".into(), name.into());
            }
            Some(serde_json::Value::String(n)) if n == name => {}
            Some(other) => return Err(format!("`name` {other} is not the login name")),
        }
        obj.insert("password_hash".into(), self.placeholder_hash.clone().into());
        let entry: UserConfig = serde_json::from_value(v).map_err(|e| e.to_string())?;
        self.checker
            .check_users(std::slice::from_ref(&entry))
            .map_err(|e| e.to_string().replace("users[0]", "user"))?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Permission;

    fn hook(cfg: &Config) -> AuthHook {
        let c = AuthHookConfig {
            url: "http://127.0.0.1:9/auth".into(),
            ..Default::default()
        };
        let mem: Arc<dyn ftpgate_storage::StorageBackend> =
            Arc::new(ftpgate_backend_memory::MemoryBackend::new());
        let backends = crate::state::Backends::new(mem, std::collections::HashMap::new());
        AuthHook::new(cfg, &c, backends, Arc::default()).unwrap()
    }

    #[test]
    fn answers_are_users_entries_validated_like_the_file() {
        let mut cfg = Config::default();
        cfg.backends
            .insert("archive".into(), crate::config::StorageConfig::default());
        let h = hook(&cfg);
        let e = h
            .entry(
                "bob",
                br#"{"home": "/bob", "permissions": ["read", "list"], "backend": "archive", "max_upload_bytes": 5}"#,
            )
            .unwrap();
        assert_eq!(e.name, "bob");
        assert_eq!(e.home, "/bob");
        assert_eq!(e.permissions, [Permission::Read, Permission::List]);
        assert_eq!(e.backend.as_deref(), Some("archive"));
        assert_eq!(e.max_upload_bytes, Some(5));
        // Defaults as in the file: home `/`, every permission.
        let e = h.entry("bob", br#"{"name": "bob"}"#).unwrap();
        assert_eq!((e.home.as_str(), e.permissions.len()), ("/", 6));
        for (bad, why) in [
            (&br#"{"home": "../../etc"}"#[..], "outside the backend root"),
            (br#"{"home": "/a/../../b"}"#, "outside the backend root"),
            (br#"{"backend": "nope"}"#, "no [backends.nope]"),
            (br#"{"name": "root"}"#, "not the login name"),
            (br#"{"password_hash": "x"}"#, "password_hash"),
            (br#"{"permissions": ["sudo"]}"#, "unknown variant"),
            (br#"{"homedir": "/x"}"#, "unknown field"),
            (br#"["bob"]"#, "not a JSON object"),
            (b"allow", "not JSON"),
        ] {
            let e = h.entry("bob", bad).unwrap_err();
            assert!(e.contains(why), "{}: {e}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = AuthHookConfig {
            url: "ftp://x".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("auth_hook.url"));
        c.url = "http://127.0.0.1:9/auth".into();
        assert!(c.validate().is_ok());
        c.timeout_ms = 0;
        assert!(c.validate().unwrap_err().contains("auth_hook.timeout_ms"));
        c.timeout_ms = MAX_TIMEOUT_MS + 1;
        assert!(c.validate().unwrap_err().contains("auth_hook.timeout_ms"));
        c.timeout_ms = 3000;
        c.cache_secs = MAX_CACHE_SECS + 1;
        assert!(c.validate().unwrap_err().contains("auth_hook.cache_secs"));
        c.cache_secs = 0;
        c.secret_file = Some("/nonexistent/secret".into());
        assert!(c.validate().unwrap_err().contains("auth_hook.secret_file"));
    }

    fn user(name: &str) -> Arc<User> {
        let e: UserConfig =
            serde_json::from_value(serde_json::json!({"name": name, "password_hash": "x"}))
                .unwrap();
        Authenticator::user_of(&e).unwrap()
    }

    #[test]
    fn cache_is_per_password_address_and_tls_and_bounded() {
        let c = HookCache::new(Duration::from_secs(60), 2);
        let t = Instant::now();
        let a = LoginInfo {
            ip: "192.0.2.1".parse().unwrap(),
            tls: false,
            session_id: 1,
        };
        c.put("bob", "pw", &a, user("bob"), t);
        let again = LoginInfo { session_id: 2, ..a };
        assert!(c.get("bob", "pw", &again, t).is_some(), "any session");
        assert!(c.get("bob", "pw2", &a, t).is_none());
        assert!(c.get("bo", "bpw", &a, t).is_none());
        let other_ip = LoginInfo {
            ip: "192.0.2.2".parse().unwrap(),
            ..a
        };
        assert!(c.get("bob", "pw", &other_ip, t).is_none());
        assert!(c
            .get("bob", "pw", &LoginInfo { tls: true, ..a }, t)
            .is_none());
        assert!(c
            .get("bob", "pw", &a, t + Duration::from_secs(60))
            .is_none());
        assert_eq!(c.entries.len(), 0, "expired entry dropped");
        for (i, n) in ["u1", "u2", "u3"].iter().enumerate() {
            c.put(n, "pw", &a, user(n), t + Duration::from_secs(i as u64));
            assert!(c.entries.len() <= 2);
        }
        assert!(c.get("u1", "pw", &a, t).is_none(), "oldest evicted");
        assert!(c.get("u3", "pw", &a, t).is_some());
        c.clear();
        assert_eq!(c.entries.len(), 0);
        let off = HookCache::new(Duration::ZERO, 10);
        off.put("bob", "pw", &a, user("bob"), t);
        assert!(off.get("bob", "pw", &a, t).is_none());
    }
}
