//! Users, passwords and permissions (RFC 959 §4.1.1 USER/PASS).
//!
//! Passwords are stored only as hashes: argon2 PHC strings, or bcrypt
//! (`$2a$`/`$2b$`/`$2y$`, from `htpasswd -B` and friends). Verification runs on the
//! blocking pool. An unknown user is verified against a dummy hash, so the time
//! and the reply (331 then 530) are the same whatever part of the login was wrong.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

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
}

impl User {
    /// True if the user holds `p`.
    pub fn may(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
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

/// Checks logins against the configured users.
pub struct Authenticator {
    /// Replaced whole by [`Authenticator::replace`] (users file re-read on SIGHUP).
    accounts: std::sync::RwLock<HashMap<String, Account>>,
    dummy_hash: String,
    /// Password checks running at once. argon2id with the default parameters takes
    /// 19 MiB and a few ms of CPU per check: unbounded, 20 simultaneous logins cost
    /// 400 MiB, and a login flood could starve the machine. Bounded by the CPU count.
    verifying: tokio::sync::Semaphore,
    /// Recent successful logins ([`crate::login_cache`]); off until
    /// [`Authenticator::with_login_cache`].
    login_cache: crate::login_cache::LoginCache,
}

impl Authenticator {
    /// Builds the user table. Hashes were validated by `Config::validate`.
    pub fn new(users: &[UserConfig]) -> Result<Self, String> {
        let accounts = Self::accounts(users)?;
        let dummy_hash = hash_password("ftpgate-dummy-password").map_err(|e| e.to_string())?;
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            accounts: std::sync::RwLock::new(accounts),
            dummy_hash,
            verifying: tokio::sync::Semaphore::new(parallel),
            login_cache: crate::login_cache::LoginCache::off(),
        })
    }

    /// Remembers successful logins for `ttl` (`server.login_cache_secs`; zero: off).
    pub fn with_login_cache(mut self, ttl: std::time::Duration) -> Self {
        self.login_cache =
            crate::login_cache::LoginCache::new(ttl, crate::login_cache::MAX_ENTRIES);
        self
    }

    /// Swaps in a new user table; sessions already logged in keep their user.
    pub fn replace(&self, users: &[UserConfig]) -> Result<(), String> {
        let accounts = Self::accounts(users)?;
        *self.accounts.write().unwrap_or_else(|p| p.into_inner()) = accounts;
        self.login_cache.clear();
        Ok(())
    }

    fn accounts(users: &[UserConfig]) -> Result<HashMap<String, Account>, String> {
        let mut accounts = HashMap::new();
        for u in users {
            let home = VPath::parse(&u.home).map_err(|e| format!("user {}: home: {e}", u.name))?;
            accounts.insert(
                u.name.clone(),
                Account {
                    user: Arc::new(User {
                        name: u.name.clone(),
                        home,
                        permissions: u.permissions.iter().copied().collect(),
                        backend: u.backend.clone(),
                        max_upload_bytes: u.max_upload_bytes,
                    }),
                    hash: u.password_hash.clone(),
                },
            );
        }
        Ok(accounts)
    }

    /// The configured users (for creating homes).
    pub fn users(&self) -> Vec<Arc<User>> {
        let accounts = self.accounts.read().unwrap_or_else(|p| p.into_inner());
        accounts.values().map(|a| a.user.clone()).collect()
    }

    /// Verifies a login; `None` for a wrong user or password alike.
    pub async fn verify(&self, name: &str, password: &str) -> Option<Arc<User>> {
        let (hash, user) = {
            let accounts = self.accounts.read().unwrap_or_else(|p| p.into_inner());
            match accounts.get(name) {
                Some(a) => (a.hash.clone(), Some(a.user.clone())),
                None => (self.dummy_hash.clone(), None),
            }
        };
        let now = std::time::Instant::now();
        if user.is_some() && self.login_cache.hit(name, password, &hash, now) {
            tracing::debug!(user = name, "password check skipped: recently verified");
            return user;
        }
        let password = password.to_owned();
        // The semaphore is never closed, so acquiring only waits.
        let Ok(_permit) = self.verifying.acquire().await else {
            return None;
        };
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
            name: "bob".into(),
            password_hash: h,
            home: "/bob".into(),
            permissions: vec![Permission::Write],
            backend: None,
            max_upload_bytes: None,
        }])
        .unwrap();
        let u = auth.verify("bob", "s3cret").await.unwrap();
        assert_eq!(u.home.to_string(), "/bob");
        assert!(u.may(Permission::Write) && !u.may(Permission::Read));
        assert!(auth.verify("bob", "nope").await.is_none());
        assert!(auth.verify("alice", "s3cret").await.is_none());
    }

    #[test]
    fn phc_check() {
        assert!(check_phc("plaintext").is_err());
        // A PHC string of an algorithm we do not verify.
        let scrypt = "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E";
        assert!(check_phc(scrypt).unwrap_err().contains("not supported"));
    }
}
