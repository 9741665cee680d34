//! Command dispatch: one exhaustive `match` from [`Command`] to a handler per verb
//! family. Handlers await storage directly and return an [`Outcome`]; only data
//! transfers run as separate tasks, so the control channel stays free for ABOR and
//! STAT while they run (RFC 959 §4.1.3).

mod checksum;
mod datacmd;
mod files;
mod info;
mod login;
mod navigate;
mod security;
mod site;
#[cfg(test)]
mod tests;
mod transfer;

use std::sync::Arc;

use ftpgate_storage::{StorageBackend, VPath};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::auth::{Permission, User};
use crate::config::StorageConfig;
use crate::datachan::DataEndpoint;
use crate::errors;
use crate::protocol::code;
use crate::protocol::{Command, Reply};
use crate::session::Session;
use crate::state::Shared;

pub use info::help_reply;

/// What a handler needs: the session state, the server's shared parts and the
/// pending data endpoint.
pub struct Ctx<'a> {
    /// Per-connection state.
    pub session: &'a mut Session,
    /// Configuration, users, storage.
    pub server: &'a Arc<Shared>,
    /// The endpoint set up by PASV/EPSV/PORT/EPRT, taken by the next transfer
    /// (boxed: most of a session's life has none).
    pub data: &'a mut Option<Box<DataEndpoint>>,
    /// The control connection, as an upload checks it before committing.
    pub control: &'a crate::liveness::ControlWatch,
}

impl Ctx<'_> {
    /// The backend of the logged-in user (resolved at login), else the default one.
    pub fn storage(&self) -> Arc<dyn StorageBackend> {
        match self.session.logged_in() {
            Some(c) => c.backend.storage.clone(),
            None => self.server.backends.default_backend().clone(),
        }
    }

    /// The configuration section of that backend (`[backends.NAME]` or `[storage]`).
    pub fn storage_config(&self) -> &StorageConfig {
        match self.session.logged_in() {
            Some(c) => self.server.backend_config(&c.backend),
            None => &self.server.config.storage,
        }
    }
}

/// The end of a data transfer, reported by its task.
#[derive(Debug)]
pub struct TransferEnd {
    /// The final reply (226, 426, 451, 425 …).
    pub reply: Reply,
    /// Bytes moved over the data connection.
    pub bytes: u64,
    /// Hex SHA-256 of a committed upload (`storage.upload_sha256`), for the transfer
    /// log event.
    pub sha256: Option<String>,
}

/// A data transfer ready to run: the connection sends `preliminary` (150), spawns
/// `job` and answers with its [`TransferEnd`].
pub struct Transfer {
    /// The 150 reply sent before the job starts.
    pub preliminary: Reply,
    /// The transfer itself.
    pub job: BoxFuture<'static, TransferEnd>,
    /// Cancelled by ABOR.
    pub cancel: CancellationToken,
    /// Path for the transfer log event.
    pub path: String,
}

/// A command that runs beside the control channel without a data connection
/// (HASH of a file that must be read): like a transfer it holds the session's one
/// transfer slot, ABOR cancels it (426, then 226) and so does the end of the
/// control connection; its result is the command's only reply.
pub struct Job {
    /// The work; its `reply` is sent when it ends.
    pub job: BoxFuture<'static, TransferEnd>,
    /// Cancelled by ABOR or when the control connection ends.
    pub cancel: CancellationToken,
    /// Path, for STAT and the log.
    pub path: String,
}

/// What the connection does after a command.
pub enum Outcome {
    /// Run a [`Job`] beside the control channel.
    Job(Job),
    /// Send a reply.
    Reply(Reply),
    /// Start a data transfer.
    Transfer(Transfer),
    /// Send a reply and close the connection.
    Close(Reply),
    /// Send the reply (234), then run the TLS handshake on the control channel
    /// (RFC 4217 §4).
    StartTls(Reply),
}

impl From<Reply> for Outcome {
    fn from(r: Reply) -> Self {
        Outcome::Reply(r)
    }
}

/// Runs one command. The login gate, ABOR and transfer sequencing are handled by
/// the connection before this is called.
pub async fn dispatch(cmd: Command, ctx: &mut Ctx<'_>) -> Outcome {
    match cmd {
        Command::Empty => Reply::new(code::SYNTAX_ERROR, "Empty command").into(),
        Command::Unknown(v) => Reply::new(
            code::NOT_IMPLEMENTED,
            format!("Command {v} not implemented"),
        )
        .into(),
        Command::NotImplemented(v) => Reply::new(
            code::NOT_IMPLEMENTED,
            format!("Command {v} not implemented"),
        )
        .into(),
        Command::Invalid { verb, reason, code } => {
            Reply::new(code, format!("{verb}: {reason}")).into()
        }
        Command::User(name) => login::user(ctx, name),
        Command::Pass(pw) => login::pass(ctx, pw).await,
        Command::Acct => Reply::new(code::SUPERFLUOUS, "ACCT not needed").into(),
        Command::Rein => login::rein(ctx),
        Command::Quit => Outcome::Close(Reply::new(code::CLOSING_CONTROL, "Goodbye")),
        Command::Noop => Reply::new(code::COMMAND_OK, "NOOP ok").into(),
        Command::Syst => Reply::new(code::SYSTEM_TYPE, "UNIX Type: L8").into(),
        Command::Feat => info::feat(ctx),
        Command::Opts(o) => info::opts(ctx, &o),
        Command::Help(v) => help_reply(v.as_deref()).into(),
        Command::Stat(None) => info::stat_server(ctx),
        Command::Stat(Some(p)) => files::stat_path(ctx, &p).await,
        Command::Allo => Reply::new(code::SUPERFLUOUS, "ALLO not needed").into(),
        Command::Type(t) => info::type_(ctx, t),
        Command::Mode(_) => Reply::new(code::COMMAND_OK, "Mode set to S").into(),
        Command::Stru(_) => Reply::new(code::COMMAND_OK, "Structure set to F").into(),
        Command::Site(s) => site::site(ctx, &s).await,
        Command::Hash(p) => checksum::hash(ctx, &p).await,
        Command::XHash { algorithm, path } => checksum::xhash(ctx, algorithm, &path).await,
        Command::Auth(m) => security::auth(ctx, &m),
        Command::Pbsz(n) => security::pbsz(ctx, n),
        Command::Prot(l) => security::prot(ctx, l),
        Command::Ccc => security::ccc(ctx),
        Command::Pwd => navigate::pwd(ctx),
        Command::Cwd(p) => navigate::cwd(ctx, &p).await,
        Command::Cdup => navigate::cwd(ctx, "..").await,
        Command::Mkd(p) => navigate::mkd(ctx, &p).await,
        Command::Rmd(p) => navigate::rmd(ctx, &p).await,
        Command::Dele(p) => files::dele(ctx, &p).await,
        Command::Rnfr(p) => files::rnfr(ctx, &p).await,
        Command::Rnto(p) => files::rnto(ctx, &p).await,
        Command::Size(p) => files::size(ctx, &p).await,
        Command::Mdtm(p) => files::mdtm(ctx, &p).await,
        Command::Mfmt { time, path } => files::mfmt(ctx, time, &path).await,
        Command::Mlst(p) => files::mlst(ctx, p.as_deref()).await,
        Command::Rest(n) => {
            ctx.session.rest = Some(n);
            Reply::new(
                code::PENDING_FURTHER_INFO,
                format!("Restarting at {n}. Send STOR or RETR"),
            )
            .into()
        }
        Command::Pasv => datacmd::pasv(ctx).await,
        Command::Epsv(a) => datacmd::epsv(ctx, a).await,
        Command::Port(a) | Command::Eprt(a) => datacmd::port(ctx, a),
        Command::Retr(p) => transfer::retr(ctx, &p).await,
        Command::Stor(p) => transfer::stor(ctx, &p, transfer::StoreKind::Stor).await,
        Command::Appe(p) => transfer::stor(ctx, &p, transfer::StoreKind::Appe).await,
        Command::Stou(p) => transfer::stou(ctx, p.as_deref()).await,
        Command::List(p) => transfer::list(ctx, p.as_deref(), transfer::ListKind::List).await,
        Command::Nlst(p) => transfer::list(ctx, p.as_deref(), transfer::ListKind::Nlst).await,
        Command::Mlsd(p) => transfer::list(ctx, p.as_deref(), transfer::ListKind::Mlsd).await,
        // A running transfer is aborted by the connection, which owns it. With none
        // running, RFC 959 §4.1.3 still wants 226 (and the data connection closed).
        Command::Abor => {
            *ctx.data = None;
            Reply::new(
                code::CLOSING_DATA,
                "ABOR successful; no transfer in progress",
            )
            .into()
        }
    }
}

/// The logged-in user, or the 530 reply.
fn user(ctx: &Ctx<'_>) -> Result<Arc<User>, Reply> {
    ctx.session
        .user()
        .cloned()
        .ok_or_else(|| Reply::new(code::NOT_LOGGED_IN, "Please log in with USER and PASS"))
}

/// A resolved client path: the session's view and the backend's.
struct Target {
    /// As the client sees it (inside the home).
    shown: VPath,
    /// As the backend sees it (home joined).
    storage: VPath,
}

/// Checks `perm`, then resolves `arg` against the cwd inside the home.
fn target(ctx: &Ctx<'_>, arg: &str, perm: Option<Permission>) -> Result<Target, Reply> {
    let u = user(ctx)?;
    if let Some(p) = perm {
        if !u.may(p) {
            return Err(errors::permission_denied());
        }
    }
    let shown = ctx
        .session
        .resolve(arg)
        .map_err(|e| errors::path_reply(&e))?;
    let storage = u.home.join(&shown);
    Ok(Target { shown, storage })
}

/// The target of a command that changes an existing entry's time or mode (MFMT,
/// SITE CHMOD, SITE UTIME): `write` and `list`, or an upload of this very login.
/// A write-only drop box must neither learn that a name exists (550 whether it
/// exists or not) nor change what others uploaded.
fn target_to_change(ctx: &Ctx<'_>, arg: &str) -> Result<Target, Reply> {
    let t = target(ctx, arg, Some(Permission::Write))?;
    let u = user(ctx)?;
    if u.may(Permission::List) || ctx.session.uploaded(&t.storage) {
        Ok(t)
    } else {
        Err(errors::permission_denied())
    }
}

/// Unwraps a handler step or returns its reply.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return crate::handlers::Outcome::Reply(r),
        }
    };
}
pub(crate) use tri;
