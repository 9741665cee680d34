//! Per-connection protocol state (RFC 959 §5.4 sequencing), free of sockets so
//! USER→PASS, RNFR→RNTO and REST→RETR sequences are unit-testable.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ftpgate_storage::{PathError, VPath};

use crate::auth::User;
use crate::config::TlsMode;
use crate::listing::Facts;
use crate::protocol::{Command, TransferType};
use crate::state::UserContext;

/// Where the login stands.
#[derive(Debug, Clone, Default)]
pub enum LoginState {
    /// Waiting for USER.
    #[default]
    AwaitUser,
    /// USER was given; waiting for PASS.
    AwaitPass {
        /// The name from USER.
        name: String,
    },
    /// Logged in, with the user's backend and quota resolved once.
    LoggedIn(UserContext),
}

/// The state of one control connection.
#[derive(Debug)]
pub struct Session {
    /// Server-unique id, in every log line of this session.
    pub id: u64,
    /// The client's address (control connection).
    pub peer: SocketAddr,
    /// Our address as the client reached it (behind a PROXY-protocol balancer:
    /// the balancer's address from the header).
    pub local: SocketAddr,
    /// Our socket's own local address: passive listeners bind here, active
    /// connections start here.
    pub socket_local: SocketAddr,
    /// Login progress.
    pub login: LoginState,
    /// Failed PASS attempts on this connection.
    pub login_failures: u32,
    /// Current directory, relative to the user's home.
    pub cwd: VPath,
    /// TYPE (RFC 959 §3.1.1). Default image: transfers are byte for byte unless the
    /// client asks for ASCII and the server converts.
    pub transfer_type: TransferType,
    /// Restart offset from REST, consumed by the next transfer command.
    pub rest: Option<u64>,
    /// Source of a rename, from RNFR; cleared by any command but RNTO.
    pub rename_from: Option<VPath>,
    /// `EPSV ALL` was sent: PORT, EPRT and PASV are refused (RFC 2428 §4).
    pub epsv_all: bool,
    /// Facts selected by `OPTS MLST`.
    pub facts: Facts,
    /// FTPS policy of the listener this session came in on.
    pub tls_mode: TlsMode,
    /// The control channel runs over TLS (after `AUTH TLS`, or implicit FTPS).
    pub tls_control: bool,
    /// This control connection's TLS context (its own TLS sessions, which its
    /// PROT P data connections must resume); set with `tls_control`.
    pub tls: Option<crate::tls::ConnTls>,
    /// `PBSZ` was given (RFC 4217 §9: required before `PROT`).
    pub pbsz: bool,
    /// `PROT P`: data connections use TLS (RFC 4217 §9).
    pub prot_private: bool,
    /// Algorithm of `HASH`, selected by `OPTS HASH` (draft-bryan-ftpext-hash-02 §4).
    pub hash_algorithm: crate::checksum::Algorithm,
    /// What this connection's transfers moved, for the `session ended` event
    /// (counted by the connection as each transfer ends; kept across REIN).
    pub totals: Totals,
    /// Backend paths this login uploaded (committed), newest last: a user
    /// without `list` (a drop box) may change the times and modes of these only.
    /// Made by the login's first upload ([`Session::own_uploads`]).
    pub own_uploads: Option<OwnUploads>,
    /// This login's place in its user's `max_sessions` (released on logout, REIN
    /// or when the session ends, however it ends).
    pub user_slot: Option<crate::limits::UserSlot>,
    /// The user's shared bandwidth buckets (`users.*_bytes_per_sec`).
    pub throttles: crate::limits::Throttles,
}

/// Data moved by one session's transfers: bytes in both directions (every
/// transfer, also failed ones and listings) and files stored or retrieved with 226.
#[derive(Debug, Default)]
pub struct Totals {
    /// Bytes received on data connections (uploads).
    pub bytes_in: AtomicU64,
    /// Bytes sent on data connections (downloads and listings).
    pub bytes_out: AtomicU64,
    /// Uploads committed (STOR/APPE/STOU answered 226).
    pub files_in: AtomicU64,
    /// Downloads completed (RETR answered 226).
    pub files_out: AtomicU64,
}

impl Totals {
    /// Adds one ended transfer: `upload` for STOR/APPE/STOU, `file` for a file
    /// transfer (not a listing), `ok` when it ended with 226.
    pub fn record(&self, upload: bool, file: bool, ok: bool, bytes: u64) {
        let (b, f) = if upload {
            (&self.bytes_in, &self.files_in)
        } else {
            (&self.bytes_out, &self.files_out)
        };
        b.fetch_add(bytes, Ordering::Relaxed);
        if file && ok {
            f.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (bytes in, bytes out, files in, files out).
    pub fn get(&self) -> (u64, u64, u64, u64) {
        (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
            self.files_in.load(Ordering::Relaxed),
            self.files_out.load(Ordering::Relaxed),
        )
    }
}

/// The committed uploads of one login, shared with its running uploads.
pub type OwnUploads = Arc<std::sync::Mutex<std::collections::VecDeque<VPath>>>;

/// Uploads remembered per session for [`Session::uploaded`].
const OWN_UPLOADS: usize = 1024;

/// Remembers a committed upload of a session (see [`Session::own_uploads`]).
pub fn remember_upload(own: &std::sync::Mutex<std::collections::VecDeque<VPath>>, path: VPath) {
    let mut own = own.lock().unwrap_or_else(|p| p.into_inner());
    own.retain(|p| *p != path);
    if own.len() >= OWN_UPLOADS {
        own.pop_front();
    }
    own.push_back(path);
}

impl Session {
    /// A fresh session for a new connection.
    pub fn new(id: u64, peer: SocketAddr, local: SocketAddr) -> Self {
        Self {
            id,
            peer,
            local,
            socket_local: local,
            tls_mode: TlsMode::Off,
            tls_control: false,
            tls: None,
            pbsz: false,
            prot_private: false,
            login: LoginState::AwaitUser,
            login_failures: 0,
            cwd: VPath::root(),
            transfer_type: TransferType::Image,
            rest: None,
            rename_from: None,
            epsv_all: false,
            facts: Facts::default(),
            hash_algorithm: crate::checksum::Algorithm::default(),
            totals: Totals::default(),
            own_uploads: None,
            user_slot: None,
            throttles: crate::limits::Throttles::default(),
        }
    }

    /// True if this login uploaded the backend path `p` (and it was committed).
    pub fn uploaded(&self, p: &VPath) -> bool {
        self.own_uploads.as_ref().is_some_and(|own| {
            let own = own.lock().unwrap_or_else(|e| e.into_inner());
            own.iter().any(|o| o == p)
        })
    }

    /// The list an upload of this login adds itself to once committed, made on
    /// the first upload: a session that uploads nothing holds none.
    pub fn own_uploads(&mut self) -> OwnUploads {
        self.own_uploads
            .get_or_insert_with(OwnUploads::default)
            .clone()
    }

    /// REIN: back to the state right after the greeting (RFC 959 §4.1.1).
    /// Keeps the connection facts (addresses, TLS on the control channel, login
    /// failures); PBSZ/PROT return to their defaults.
    pub fn reinitialize(&mut self) {
        let (id, peer, local, failures) = (self.id, self.peer, self.local, self.login_failures);
        let conn_tls = self.tls.take();
        let (socket_local, tls_mode, tls_control) =
            (self.socket_local, self.tls_mode, self.tls_control);
        let totals = std::mem::take(&mut self.totals);
        *self = Self::new(id, peer, local);
        self.login_failures = failures;
        self.socket_local = socket_local;
        self.tls_mode = tls_mode;
        self.tls_control = tls_control;
        self.totals = totals;
        self.tls = conn_tls;
    }

    /// USER/PASS and transfers need TLS first (`server.tls = "required"`).
    pub fn tls_required(&self) -> bool {
        self.tls_mode == TlsMode::Required
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&Arc<User>> {
        match &self.login {
            LoginState::LoggedIn(c) => Some(&c.user),
            _ => None,
        }
    }

    /// The logged-in user with its backend and quota, if any.
    pub fn logged_in(&self) -> Option<&UserContext> {
        match &self.login {
            LoginState::LoggedIn(c) => Some(c),
            _ => None,
        }
    }

    /// The metrics and event label of the session's backend: the logged-in user's
    /// (`[backends.NAME]`), else `storage`.
    pub fn backend_label(&self) -> &str {
        self.logged_in()
            .map_or(crate::state::DEFAULT_LABEL, |c| c.backend.label())
    }

    /// Commands allowed before login: the login itself and harmless queries.
    pub fn allowed_before_login(cmd: &Command) -> bool {
        matches!(
            cmd,
            Command::User(_)
                | Command::Pass(_)
                | Command::Acct
                | Command::Quit
                | Command::Noop
                | Command::Feat
                | Command::Syst
                | Command::Help(_)
                | Command::Opts(_)
                | Command::Auth(_)
                | Command::Pbsz(_)
                | Command::Prot(_)
                | Command::Ccc
                | Command::Rein
                | Command::Empty
                | Command::Unknown(_)
                | Command::Invalid { .. }
                | Command::NotImplemented(_)
        )
    }

    /// Resolves a client path against the cwd, inside the home.
    pub fn resolve(&self, arg: &str) -> Result<VPath, PathError> {
        self.cwd.resolve(arg)
    }

    /// Clears one-shot state that only the very next command may use:
    /// RNFR is cleared by anything but RNTO (RFC 959 §4.1.3).
    pub fn before_command(&mut self, cmd: &Command) {
        if !matches!(cmd, Command::Rnto(_)) {
            self.rename_from = None;
        }
        if matches!(cmd, Command::Rnfr(_)) {
            self.rest = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::command::parse;

    fn s() -> Session {
        Session::new(
            1,
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:21".parse().unwrap(),
        )
    }

    #[test]
    fn rnfr_cleared_by_other_commands() {
        let mut s = s();
        s.rename_from = Some(VPath::parse("/a").unwrap());
        s.before_command(&parse("RNTO b"));
        assert!(s.rename_from.is_some());
        s.before_command(&parse("NOOP"));
        assert!(s.rename_from.is_none());
    }

    #[test]
    fn login_gate() {
        assert!(Session::allowed_before_login(&parse("USER x")));
        assert!(Session::allowed_before_login(&parse("FEAT")));
        assert!(!Session::allowed_before_login(&parse("RETR x")));
        assert!(!Session::allowed_before_login(&parse("PASV")));
        assert!(!Session::allowed_before_login(&parse("CWD /")));
    }

    #[test]
    fn rein_keeps_failure_count() {
        let mut s = s();
        s.login_failures = 2;
        s.cwd = VPath::parse("/x").unwrap();
        s.reinitialize();
        assert_eq!(s.login_failures, 2);
        assert!(s.cwd.is_root());
    }

    #[test]
    fn default_type_is_image() {
        assert_eq!(s().transfer_type, TransferType::Image);
    }
}
