//! Users, passwords and permissions (RFC 959 §4.1.1 USER/PASS).
//!
//! Passwords are stored only as hashes: argon2 PHC strings, or bcrypt
//! (`$2a$`/`$2b$`/`$2y$`, from `htpasswd -B` and friends). Verification runs on the
//! blocking pool. An unknown user is verified against a dummy hash of the same
//! scheme and cost as the configured users' (one per distinct scheme and cost; a
//! name always maps to the same one), so the time and the reply (331 then 530) are
//! the same whatever part of the login was wrong.
//!
//! Checks are queued fairly per client address: at most one runs or waits for the
//! hashing pool per address ([`Authenticator::turn`]), so a flood of wrong
//! passwords from a few addresses waits behind its own earlier attempts instead
//! of in front of everyone else's login (RFC 2577 §"Protecting passwords").

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use ftpgate_storage::VPath;
use serde::{Deserialize, Serialize};

use crate::config::UserConfig;

/// One thing a user may do. A write-only drop box (`["write"]`) is the scanner case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// LIST, NLST, MLSD, MLST, STAT path.
    List,
    /// RETR, SIZE, MDTM.
    Read,
    /// STOR, STOU, APPE, MFMT.
    Write,
    /// DELE, RMD.
    Delete,
    /// MKD.
    Mkdir,
    /// RNFR/RNTO.
    Rename,
}

impl Permission {
    /// Every permission (the default for a user entry).
    pub fn all_vec() -> Vec<Permission> {
        use Permission::*;
        vec![List, Read, Write, Delete, Mkdir, Rename]
    }
}

/// A logged-in user.
#[derive(Clone)]
pub struct User {
    /// Login name.
    pub name: String,
    /// The user's root inside the backend; every session path is joined to it.
    pub home: VPath,
    /// What the user may do.
    pub permissions: HashSet<Permission>,
    /// Name of the user's backend (`[backends.NAME]`); `None` for `[storage]`.
    pub backend: Option<String>,
    /// Largest single upload in bytes (`users.max_upload_bytes`).
    pub max_upload_bytes: Option<u64>,
    /// Most bytes the home may hold (`users.quota_bytes`).
    pub quota_bytes: Option<u64>,
    /// Most files the home may hold (`users.quota_files`).
    pub quota_files: Option<u64>,
    /// Upload bandwidth shared by the user's sessions (`users.upload_bytes_per_sec`).
    pub upload_bytes_per_sec: Option<u64>,
    /// Download bandwidth shared by the user's sessions (`users.download_bytes_per_sec`).
    pub download_bytes_per_sec: Option<u64>,
    /// Most concurrent logged-in sessions (`users.max_sessions`).
    pub max_sessions: Option<usize>,
    /// Client networks the user may log in from (`users.allowed_networks`);
    /// empty: any.
    pub allowed_networks: Vec<ipnet::IpNet>,
}

impl User {
    /// True if the user holds `p`.
    pub fn may(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }

    /// The user of a `[[users]]` entry (or of any answer deserialised into one, as
    /// an external auth hook's): every key, limits included, in one place.
    pub fn from_config(u: &UserConfig) -> Result<Self, String> {
        let home = VPath::parse(&u.home).map_err(|e| format!("user {}: home: {e}", u.name))?;
        Ok(User {
            name: u.name.clone(),
            home,
            permissions: u.permissions.iter().copied().collect(),
            backend: u.backend.clone(),
            max_upload_bytes: u.max_upload_bytes,
            quota_bytes: u.quota_bytes,
            quota_files: u.quota_files,
            upload_bytes_per_sec: u.upload_bytes_per_sec,
            download_bytes_per_sec: u.download_bytes_per_sec,
            max_sessions: u.max_sessions,
            allowed_networks: u
                .allowed_networks
                .iter()
                .map(|n| crate::config::parse_net(n))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("user {}: allowed_networks: {e}", u.name))?,
        })
    }

    /// True if the user may log in from `ip` (`users.allowed_networks`); an
    /// IPv4-mapped IPv6 address counts as IPv4.
    pub fn allowed_from(&self, ip: IpAddr) -> bool {
        let ip = crate::datachan::canonical(ip);
        self.allowed_networks.is_empty() || self.allowed_networks.iter().any(|n| n.contains(&ip))
    }

    /// The user's storage quota (`users.quota_bytes`, `users.quota_files`), if any.
    pub fn quota(&self) -> Option<crate::quota::QuotaLimits> {
        let q = crate::quota::QuotaLimits {
            bytes: self.quota_bytes,
            files: self.quota_files,
        };
        (q != crate::quota::QuotaLimits::default()).then_some(q)
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("home", &self.home)
            .finish()
    }
}

struct Account {
    user: Arc<User>,
    hash: String,
}

/// The user table and the dummy hashes for unknown names.
struct Table {
    accounts: HashMap<String, Account>,
    /// (scheme and cost, dummy hash of that scheme and cost), one per distinct
    /// scheme and cost among the users; never empty.
    dummies: Vec<(String, String)>,
}

/// Client addresses with a password check running or queued.
const MAX_TURN_ENTRIES: usize = 4096;

/// How long an address that failed a login waits behind addresses that did not.
const SUSPECT_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// Addresses remembered with their last failed login.
const MAX_SUSPECTS: usize = 100_000;

/// The hashing pool: `free` permits (one per CPU), handed out in FIFO order, first
/// to waiters from addresses without a recent failure, then to the others. With one
/// waiter per address ([`Authenticator::turn`]) the second queue is round-robin
/// over guessing addresses, and a clean login waits for at most the checks
/// already running.
#[derive(Default)]
struct Pool {
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    free: usize,
    clean: std::collections::VecDeque<tokio::sync::oneshot::Sender<Permit>>,
    suspect: std::collections::VecDeque<tokio::sync::oneshot::Sender<Permit>>,
}

/// One running password check; dropping it (also unreceived, inside a channel
/// whose waiter went away) passes the slot on.
struct Permit(Option<Arc<Pool>>);

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            Pool::release(&pool);
        }
    }
}

impl Pool {
    fn with(permits: usize) -> Arc<Self> {
        let pool = Self::default();
        pool.state.lock().unwrap_or_else(|p| p.into_inner()).free = permits;
        Arc::new(pool)
    }

    async fn acquire(self: &Arc<Self>, suspect: bool) -> Option<Permit> {
        let rx = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if s.free > 0 {
                s.free -= 1;
                return Some(Permit(Some(self.clone())));
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            if suspect {
                s.suspect.push_back(tx);
            } else {
                s.clean.push_back(tx);
            }
            rx
        };
        rx.await.ok()
    }

    fn release(pool: &Arc<Self>) {
        loop {
            let next = {
                let mut s = pool.state.lock().unwrap_or_else(|p| p.into_inner());
                match s.clean.pop_front().or_else(|| s.suspect.pop_front()) {
                    Some(tx) => tx,
                    None => {
                        s.free += 1;
                        return;
                    }
                }
            };
            match next.send(Permit(Some(pool.clone()))) {
                Ok(()) => return,
                // That waiter is gone: the slot goes to the next one, without
                // the permit's own drop handing it on a second time.
                Err(mut unsent) => {
                    unsent.0 = None;
                }
            }
        }
    }
}

/// Checks logins against the configured users.
pub struct Authenticator {
    /// Replaced whole by [`Authenticator::replace`] (users file re-read on SIGHUP).
    table: std::sync::RwLock<Table>,
    /// Picks an unknown name's dummy (keyed per process, stable per name).
    pick: std::collections::hash_map::RandomState,
    /// Password checks running at once. argon2id with the default parameters takes
    /// 19 MiB and a few ms of CPU per check: unbounded, 20 simultaneous logins cost
    /// 400 MiB, and a login flood could starve the machine. Bounded by the CPU count.
    /// Each address has at most one waiter in it ([`Self::turn`]); addresses with
    /// a recent failure wait behind the others.
    verifying: Arc<Pool>,
    /// One lock per client address with a check running or queued.
    turns: Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>,
    /// Last failed login per address (within [`SUSPECT_FOR`]).
    suspects: Mutex<HashMap<IpAddr, std::time::Instant>>,
    /// Recent successful logins ([`crate::login_cache`]); off until
    /// [`Authenticator::with_login_cache`].
    login_cache: crate::login_cache::LoginCache,
    /// The external authentication hook (`[auth_hook]`), if configured.
    hook: Option<crate::auth_hook::AuthHook>,
}

/// One client address's turn to have a password checked: while it is held, no
/// other login from that address is verified. Dropping it lets the next one go.
pub struct LoginTurn<'a> {
    auth: &'a Authenticator,
    ip: IpAddr,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl LoginTurn<'_> {
    /// Verifies a login from this turn's address ([`Authenticator::verify`]); an
    /// address whose last failure is recent queues behind clean ones, and a
    /// failure here makes it so.
    pub async fn verify(&self, name: &str, password: &str) -> Option<Arc<User>> {
        let user = self.auth.verify_as(name, password, self.is_suspect()).await;
        if user.is_none() {
            self.suspect();
        }
        user
    }

    /// True when this turn's address failed a login recently: its checks queue
    /// behind clean addresses' ones.
    fn is_suspect(&self) -> bool {
        let s = self.auth.suspects.lock().unwrap_or_else(|p| p.into_inner());
        s.get(&self.ip).is_some_and(|t| t.elapsed() < SUSPECT_FOR)
    }

    /// Marks this turn's address as having failed a login just now.
    fn suspect(&self) {
        let now = std::time::Instant::now();
        let mut s = self.auth.suspects.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() >= MAX_SUSPECTS {
            s.retain(|_, t| now.duration_since(*t) < SUSPECT_FOR);
        }
        s.insert(self.ip, now);
    }

    /// Checks a PASS (RFC 959 §4.1.1) from this turn's address: against the
    /// users file ([`Self::verify_from`]) or, with `[auth_hook]`, for names not in
    /// the file (or every name with `order = "hook_only"`), with the hook
    /// ([`crate::auth_hook`]). A denial or a hook failure is a failed login; a hook
    /// user's `allowed_networks` are checked on its answer.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        info: &crate::auth_hook::LoginInfo,
    ) -> Checked {
        let Some(hook) = &self.auth.hook else {
            return self.verify_from(name, password, info.ip).await;
        };
        if hook.order() == crate::auth_hook::HookOrder::UsersFirst && self.auth.has_user(name) {
            return self.verify_from(name, password, info.ip).await;
        }
        let checked = match hook.login(name, password, info).await {
            Some(u) if u.allowed_from(info.ip) => Checked::Ok(u),
            Some(_) => Checked::NetworkRefused,
            None => Checked::Failed,
        };
        if !matches!(checked, Checked::Ok(_)) {
            self.suspect();
        }
        checked
    }
}

/// The outcome of [`LoginTurn::verify_from`].
#[derive(Debug)]
pub enum Checked {
    /// Name and password match, and the client's network is allowed.
    Ok(Arc<User>),
    /// Unknown name or wrong password.
    Failed,
    /// A known user outside `users.allowed_networks`: the password was not
    /// checked, but a dummy hash of the same cost was, so the reply comes as late
    /// as for a wrong password and tells nothing about the name or the password.
    NetworkRefused,
}

impl LoginTurn<'_> {
    /// [`LoginTurn::verify`] for a client at `client`: a user with
    /// `allowed_networks` that do not contain it is refused without checking the
    /// password (no password oracle from outside those networks), at the cost of a
    /// wrong password.
    pub async fn verify_from(&self, name: &str, password: &str, client: IpAddr) -> Checked {
        let auth = self.auth;
        let refused = {
            let table = auth.table.read().unwrap_or_else(|p| p.into_inner());
            table
                .accounts
                .get(name)
                .filter(|a| !a.user.allowed_from(client))
                .map(|a| {
                    let class = cost_class(&a.hash);
                    table
                        .dummies
                        .iter()
                        .find(|(c, _)| *c == class)
                        .map_or_else(|| table.dummies[0].1.clone(), |(_, d)| d.clone())
                })
        };
        let Some(dummy) = refused else {
            return match self.verify(name, password).await {
                Some(u) => Checked::Ok(u),
                None => Checked::Failed,
            };
        };
        if let Some(_permit) = auth.verifying.acquire(self.is_suspect()).await {
            let password = password.to_owned();
            let _ = tokio::task::spawn_blocking(move || verify_password(&password, &dummy)).await;
        }
        self.suspect();
        Checked::NetworkRefused
    }
}

impl Drop for LoginTurn<'_> {
    fn drop(&mut self) {
        let mut turns = self.auth.turns.lock().unwrap_or_else(|p| p.into_inner());
        self.guard = None;
        // Waiters clone the lock under `turns`, so with only the table's reference
        // left nobody waits for this address.
        if turns
            .get(&self.ip)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            turns.remove(&self.ip);
        }
    }
}

impl Authenticator {
    /// Builds the user table. Hashes were validated by `Config::validate`.
    pub fn new(users: &[UserConfig]) -> Result<Self, String> {
        let table = Self::table(users, &[])?;
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            table: std::sync::RwLock::new(table),
            pick: std::collections::hash_map::RandomState::new(),
            verifying: Pool::with(parallel),
            turns: Mutex::new(HashMap::new()),
            suspects: Mutex::new(HashMap::new()),
            login_cache: crate::login_cache::LoginCache::off(),
            hook: None,
        })
    }

    /// Sends logins the users file does not decide to `hook` (`[auth_hook]`).
    pub fn with_hook(mut self, hook: crate::auth_hook::AuthHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// True when `name` is a user of the users file (or inline `[[users]]`).
    pub fn has_user(&self, name: &str) -> bool {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table.accounts.contains_key(name)
    }

    /// The logged-in user of one `[[users]]` entry (its hash is not used), as
    /// the users file's entries become users; for the auth hook's answers.
    pub fn user_of(u: &UserConfig) -> Result<Arc<User>, String> {
        Self::accounts(std::slice::from_ref(u))?
            .remove(&u.name)
            .map(|a| a.user)
            .ok_or_else(|| format!("user {}: not built", u.name))
    }

    /// Remembers successful logins for `ttl` (`server.login_cache_secs`; zero: off).
    pub fn with_login_cache(mut self, ttl: std::time::Duration) -> Self {
        self.login_cache =
            crate::login_cache::LoginCache::new(ttl, crate::login_cache::MAX_ENTRIES);
        self
    }

    /// Swaps in a new user table; sessions already logged in keep their user.
    /// Dummy hashes of a scheme and cost already in use are kept.
    pub fn replace(&self, users: &[UserConfig]) -> Result<(), String> {
        let old = self
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .dummies
            .clone();
        let table = Self::table(users, &old)?;
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
        self.login_cache.clear();
        if let Some(h) = &self.hook {
            h.clear_cache();
        }
        Ok(())
    }

    fn table(users: &[UserConfig], old: &[(String, String)]) -> Result<Table, String> {
        let accounts = Self::accounts(users)?;
        let mut dummies: Vec<(String, String)> = Vec::new();
        let mut hashes: Vec<&str> = users.iter().map(|u| u.password_hash.as_str()).collect();
        hashes.sort_unstable();
        for h in hashes {
            let class = cost_class(h);
            if dummies.iter().any(|(c, _)| *c == class) {
                continue;
            }
            let dummy = match old.iter().find(|(c, _)| *c == class) {
                Some((_, d)) => d.clone(),
                None => dummy_like(h)?,
            };
            dummies.push((class, dummy));
        }
        if dummies.is_empty() {
            let d = hash_password("ftpgate-dummy-password").map_err(|e| e.to_string())?;
            dummies.push((cost_class(&d), d));
        }
        Ok(Table { accounts, dummies })
    }

    fn accounts(users: &[UserConfig]) -> Result<HashMap<String, Account>, String> {
        let mut accounts = HashMap::new();
        for u in users {
            accounts.insert(
                u.name.clone(),
                Account {
                    user: Arc::new(User::from_config(u)?),
                    hash: u.password_hash.clone(),
                },
            );
        }
        Ok(accounts)
    }

    /// The configured users (for creating homes).
    pub fn users(&self) -> Vec<Arc<User>> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table.accounts.values().map(|a| a.user.clone()).collect()
    }

    /// Waits until no other password check from `ip` runs or waits: each client
    /// address gets one check at a time, so the FIFO hashing pool holds at most
    /// one waiter per address and serves addresses round-robin.
    pub async fn turn(&self, ip: IpAddr) -> LoginTurn<'_> {
        let lock = {
            let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
            if turns.len() >= MAX_TURN_ENTRIES {
                // Entries of abandoned waits (a connection closed while queued).
                turns.retain(|_, l| Arc::strong_count(l) > 1);
            }
            turns.entry(ip).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        LoginTurn {
            auth: self,
            ip,
            guard: Some(guard),
        }
    }

    /// Verifies a login; `None` for a wrong user or password alike. Logins from
    /// the network go through [`LoginTurn::verify`].
    pub async fn verify(&self, name: &str, password: &str) -> Option<Arc<User>> {
        self.verify_as(name, password, false).await
    }

    async fn verify_as(&self, name: &str, password: &str, suspect: bool) -> Option<Arc<User>> {
        let (hash, user) = {
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            match table.accounts.get(name) {
                Some(a) => (a.hash.clone(), Some(a.user.clone())),
                None => {
                    let i = self.pick.hash_one(name) as usize % table.dummies.len();
                    (table.dummies[i].1.clone(), None)
                }
            }
        };
        let now = std::time::Instant::now();
        if user.is_some() && self.login_cache.hit(name, password, &hash, now) {
            tracing::debug!(user = name, "password check skipped: recently verified");
            return user;
        }
        let password = password.to_owned();
        // A permit is only ever dropped into a channel whose waiter is gone, so
        // a waiting check always gets one.
        let _permit = self.verifying.acquire(suspect).await?;
        // Logins that queued behind the first check of the same password.
        if user.is_some() && self.login_cache.hit(name, &password, &hash, now) {
            return user;
        }
        let checked = password.clone();
        let stored = hash.clone();
        let ok = tokio::task::spawn_blocking(move || verify_password(&checked, &stored))
            .await
            .unwrap_or(false);
        if ok && user.is_some() {
            self.login_cache.remember(name, &password, &hash, now);
        }
        if ok {
            user
        } else {
            None
        }
    }
}

/// What decides a hash's verification time: the scheme and its cost parameters
/// (`bcrypt$12`, `argon2id$v=19$m=19456,t=2,p=1$32`).
fn cost_class(h: &str) -> String {
    if is_bcrypt(h) {
        return match h.parse::<bcrypt::HashParts>() {
            Ok(p) => format!("bcrypt${}", p.get_cost()),
            Err(_) => "bcrypt$?".into(),
        };
    }
    match PasswordHash::new(h) {
        Ok(p) => format!(
            "{}$v={}${}${}",
            p.algorithm,
            p.version.unwrap_or(0),
            p.params,
            p.hash.map_or(0, |o| o.len())
        ),
        Err(_) => "?".into(),
    }
}

/// A hash of a random password with the scheme and cost of `h`, for unknown users.
fn dummy_like(h: &str) -> Result<String, String> {
    let password = format!("ftpgate-dummy-{}", rand::random::<u64>());
    if is_bcrypt(h) {
        let cost = h
            .parse::<bcrypt::HashParts>()
            .map_err(|e| format!("not a bcrypt hash ({e})"))?
            .get_cost();
        return bcrypt::hash(password, cost).map_err(|e| format!("dummy bcrypt hash: {e}"));
    }
    let parsed = PasswordHash::new(h).map_err(|e| format!("not a PHC string ({e})"))?;
    let algorithm = argon2::Algorithm::try_from(parsed.algorithm).map_err(|e| e.to_string())?;
    let version = match parsed.version {
        Some(v) => argon2::Version::try_from(v).map_err(|e| e.to_string())?,
        None => argon2::Version::default(),
    };
    let params = argon2::Params::try_from(&parsed).map_err(|e| e.to_string())?;
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(algorithm, version, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("dummy argon2 hash: {e}"))
}

/// True for a bcrypt hash (`$2a$`, `$2b$`, `$2x$`, `$2y$`).
fn is_bcrypt(s: &str) -> bool {
    ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|p| s.starts_with(p))
}

/// Checks `password` against an argon2 PHC string or a bcrypt hash.
pub fn verify_password(password: &str, phc: &str) -> bool {
    if is_bcrypt(phc) {
        return bcrypt::verify(password, phc).unwrap_or(false);
    }
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// Hashes a password as an argon2id PHC string with a random salt.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks that a string is an argon2 PHC or bcrypt hash we can verify.
pub fn check_phc(s: &str) -> Result<(), String> {
    if is_bcrypt(s) {
        return s
            .parse::<bcrypt::HashParts>()
            .map(|_| ())
            .map_err(|e| format!("not a bcrypt hash ({e})"));
    }
    let h = PasswordHash::new(s)
        .map_err(|e| format!("not a PHC string ({e}); use `ftpgate hash-password`"))?;
    if !h.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "algorithm `{}` is not supported; use argon2",
            h.algorithm
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_hashes_verify() {
        let h = bcrypt::hash("legacy pw", 4).unwrap();
        assert!(h.starts_with("$2b$04$"));
        assert!(check_phc(&h).is_ok());
        assert!(verify_password("legacy pw", &h));
        assert!(!verify_password("wrong", &h));
        assert!(check_phc("$2b$04$short").is_err());
        assert!(!verify_password("x", "$2b$04$short"));
    }

    #[tokio::test]
    async fn hash_verify_round_trip() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(check_phc(&h).is_ok());
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("wrong", &h));
        let auth = Authenticator::new(&[UserConfig {
            home: "/bob".into(),
            permissions: vec![Permission::Write],
            ..UserConfig::new("bob", h)
        }])
        .unwrap();
        let u = auth.verify("bob", "s3cret").await.unwrap();
        assert_eq!(u.home.to_string(), "/bob");
        assert!(u.may(Permission::Write) && !u.may(Permission::Read));
        assert!(auth.verify("bob", "nope").await.is_none());
        assert!(auth.verify("alice", "s3cret").await.is_none());
    }

    fn user_with(name: &str, hash: String) -> UserConfig {
        UserConfig {
            permissions: vec![Permission::Write],
            ..UserConfig::new(name, hash)
        }
    }

    #[test]
    fn dummies_match_scheme_and_cost() {
        let b5 = bcrypt::hash("a", 5).unwrap();
        let b6 = bcrypt::hash("b", 6).unwrap();
        let argon_cheap = Argon2::new(
            argon2::Algorithm::Argon2i,
            argon2::Version::V0x13,
            argon2::Params::new(1024, 1, 1, Some(24)).unwrap(),
        )
        .hash_password(b"c", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        let users = [
            user_with("x", b5.clone()),
            user_with("y", b6),
            user_with("z", argon_cheap.clone()),
            user_with("w", bcrypt::hash("d", 5).unwrap()),
        ];
        let t = Authenticator::table(&users, &[]).unwrap();
        let mut classes: Vec<&str> = t.dummies.iter().map(|(c, _)| c.as_str()).collect();
        classes.sort_unstable();
        assert_eq!(
            classes,
            ["argon2i$v=19$m=1024,t=1,p=1$24", "bcrypt$5", "bcrypt$6"]
        );
        for (class, dummy) in &t.dummies {
            assert_eq!(&cost_class(dummy), class);
            assert!(check_phc(dummy).is_ok() || is_bcrypt(dummy));
        }
        // Only bcrypt users: no argon2 dummy a timing probe could tell apart.
        let t = Authenticator::table(&[user_with("x", b5)], &[]).unwrap();
        assert_eq!(t.dummies.len(), 1);
        assert!(t.dummies[0].1.starts_with("$2b$05$"));
        // Kept across a reload.
        let again =
            Authenticator::table(&[user_with("q", bcrypt::hash("e", 5).unwrap())], &t.dummies)
                .unwrap();
        assert_eq!(again.dummies, t.dummies);
        // No users at all: the argon2id default.
        let t = Authenticator::table(&[], &[]).unwrap();
        assert!(t.dummies[0].1.starts_with("$argon2id$"));
    }

    #[tokio::test]
    async fn networks_are_checked_before_the_password() {
        let mut u = user_with("n", bcrypt::hash("pw", 4).unwrap());
        u.allowed_networks = vec!["10.0.0.0/8".into(), "::1".into()];
        let auth = Authenticator::new(&[u]).unwrap();
        let inside: IpAddr = "10.1.2.3".parse().unwrap();
        let outside: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.9.9.9".parse().unwrap();
        let t = auth.turn(outside).await;
        assert!(matches!(
            t.verify_from("n", "pw", outside).await,
            Checked::NetworkRefused
        ));
        // A refusal marks the address like a failure.
        assert!(auth.suspects.lock().unwrap().contains_key(&outside));
        drop(t);
        let t = auth.turn(inside).await;
        assert!(matches!(
            t.verify_from("n", "pw", inside).await,
            Checked::Ok(_)
        ));
        assert!(matches!(
            t.verify_from("n", "no", inside).await,
            Checked::Failed
        ));
        assert!(matches!(
            t.verify_from("n", "pw", mapped).await,
            Checked::Ok(_)
        ));
        assert!(matches!(
            t.verify_from("n", "pw", "::1".parse().unwrap()).await,
            Checked::Ok(_)
        ));
        // Unknown names fail the same way from anywhere.
        assert!(matches!(
            t.verify_from("x", "pw", outside).await,
            Checked::Failed
        ));
    }

    #[tokio::test]
    async fn turns_are_per_address() {
        let auth = Authenticator::new(&[]).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t1 = auth.turn(a).await;
        // Another address is not held up.
        let t2 = auth.turn(b).await;
        drop(t2);
        // The same address waits.
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), auth.turn(a)).await;
        assert!(waiting.is_err());
        drop(t1);
        let t3 = auth.turn(a).await;
        drop(t3);
        assert!(auth.turns.lock().unwrap().is_empty(), "entries left behind");
    }

    #[tokio::test]
    async fn clean_addresses_go_first() {
        let pool = Pool::with(1);
        let running = pool.acquire(false).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (i, suspect) in [(0, true), (1, true), (2, false)] {
            let (pool, order) = (pool.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let p = pool.acquire(suspect).await.unwrap();
                order.lock().unwrap().push(i);
                drop(p);
            }));
            tokio::task::yield_now().await;
        }
        // A waiter that gives up does not swallow the slot.
        let gone =
            tokio::time::timeout(std::time::Duration::from_millis(10), pool.acquire(false)).await;
        assert!(gone.is_err());
        drop(running);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [2, 0, 1]);
        assert_eq!(pool.state.lock().unwrap().free, 1);
    }

    #[test]
    fn phc_check() {
        assert!(check_phc("plaintext").is_err());
        // A PHC string of an algorithm we do not verify.
        let scrypt = "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E";
        assert!(check_phc(scrypt).unwrap_err().contains("not supported"));
    }
}
