//! In-process handler tests: the shared state is built from a configuration over
//! the memory backend without binding any socket ([`Shared::build`]), a user logs
//! in with USER/PASS through [`dispatch`], and commands run through the same
//! sequencing (`Session::before_command`) and dispatch as on a real connection.
//! Replies (RFC 959 §4.2 codes and texts) and storage effects are asserted.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use async_trait::async_trait;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use ftpgate_storage::testkit::{get, p, put};
use ftpgate_storage::{
    ByteStream, Capabilities, EntryStream, ErrorKind, Metadata, StorageBackend, StorageError,
    Upload, VPath, WriteMode,
};

use super::{dispatch, Ctx, Outcome};
use crate::config::Config;
use crate::datachan::DataEndpoint;
use crate::liveness::ControlWatch;
use crate::protocol::command::parse;
use crate::protocol::{code, Reply};
use crate::session::Session;
use crate::state::{Backends, Shared};

/// The password of every test user.
const PASSWORD: &str = "s3cret";

/// A bcrypt hash of [`PASSWORD`] at the lowest cost, made once.
fn hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash(PASSWORD, 4).unwrap())
}

/// `[storage]` in memory, a second memory backend `scratch`, and the users
/// `alice` (home `/alice`, every permission), `reader` (read and list only),
/// `bob` (on `scratch`) and `quota` (with `quota_bytes`).
fn config(extra: &str) -> Config {
    let h = hash();
    let toml = format!(
        r#"
[server]
login_failure_delay_ms = 0

[storage]
kind = "memory"

[backends.scratch]
kind = "memory"

[[users]]
name = "alice"
password_hash = "{h}"
home = "/alice"

[[users]]
name = "reader"
password_hash = "{h}"
home = "/alice"
permissions = ["read", "list"]

[[users]]
name = "bob"
password_hash = "{h}"
home = "/bob"
backend = "scratch"

[[users]]
name = "quota"
password_hash = "{h}"
home = "/q"
quota_bytes = 1000
{extra}
"#
    );
    Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string(&toml))
        .extract()
        .unwrap()
}

/// One control connection's state without its sockets.
struct Rig {
    shared: Arc<Shared>,
    session: Session,
    data: Option<Box<DataEndpoint>>,
    control: ControlWatch,
    /// Keeps the descriptor `control` refers to open.
    _pair: (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ),
}

impl Rig {
    /// A connection to a fresh server state, not logged in.
    async fn new() -> Self {
        Self::over(Arc::new(Shared::build(config("")).await.unwrap()))
    }

    /// A new connection to `shared`.
    fn over(shared: Arc<Shared>) -> Self {
        let pair = std::os::unix::net::UnixStream::pair().unwrap();
        let (_signal, control) = crate::liveness::channel(&pair.0);
        let session = Session::new(
            1,
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:2121".parse().unwrap(),
        );
        Self {
            shared,
            session,
            data: None,
            control,
            _pair: pair,
        }
    }

    /// A fresh server state with `user` logged in.
    async fn user(user: &str) -> Self {
        let mut rig = Self::new().await;
        rig.login(user).await;
        rig
    }

    /// USER and PASS, both answered as expected.
    async fn login(&mut self, user: &str) {
        assert_eq!(self.cmd(&format!("USER {user}")).await.code, 331);
        let r = self.cmd(&format!("PASS {PASSWORD}")).await;
        assert_eq!(r.code, code::LOGGED_IN, "{r:?}");
    }

    /// Runs one command line and returns its reply.
    async fn cmd(&mut self, line: &str) -> Reply {
        let cmd = parse(line);
        self.session.before_command(&cmd);
        let mut ctx = Ctx {
            session: &mut self.session,
            server: &self.shared,
            data: &mut self.data,
            control: &self.control,
        };
        match dispatch(cmd, &mut ctx).await {
            Outcome::Reply(r) | Outcome::Close(r) | Outcome::StartTls(r) => r,
            Outcome::Transfer(_) | Outcome::Job(_) => panic!("{line}: not a control reply"),
        }
    }

    /// The code and first line of a command's reply.
    async fn run(&mut self, line: &str) -> (u16, String) {
        let r = self.cmd(line).await;
        (r.code, r.lines[0].clone())
    }

    /// `[storage]`.
    fn storage(&self) -> Arc<dyn StorageBackend> {
        self.shared.backends.default_backend().clone()
    }
}

/// Whether `path` exists on `store`.
async fn exists(store: &dyn StorageBackend, path: &str) -> bool {
    store.stat(&p(path)).await.is_ok()
}

#[tokio::test]
async fn login_resolves_the_users_backend_once() {
    let mut rig = Rig::user("bob").await;
    let ctx = rig.session.logged_in().unwrap();
    assert_eq!(ctx.backend.label(), "scratch");
    assert!(ctx.quota.is_none());
    assert_eq!(rig.run("MKD new").await.0, code::PATH_CREATED);
    let scratch = rig.shared.backends.lookup(Some("scratch")).unwrap().clone();
    assert!(exists(&*scratch, "/bob/new").await);
    assert!(!exists(&*rig.storage(), "/bob/new").await);
    // A reload moving bob to [storage] applies to the next login only.
    let mut users = rig.shared.config.all_users().unwrap();
    users.iter_mut().for_each(|u| u.backend = None);
    rig.shared.auth.replace(&users).unwrap();
    assert_eq!(rig.run("MKD second").await.0, code::PATH_CREATED);
    assert!(exists(&*scratch, "/bob/second").await);
    let mut next = Rig::over(rig.shared.clone());
    next.login("bob").await;
    let ctx = next.session.logged_in().unwrap();
    assert_eq!(ctx.backend.label(), "storage");
}

#[tokio::test]
async fn quota_area_is_resolved_at_login_and_shared() {
    let a = Rig::user("quota").await;
    let mut b = Rig::over(a.shared.clone());
    b.login("quota").await;
    let qa = a.session.logged_in().unwrap().quota.clone().unwrap();
    let qb = b.session.logged_in().unwrap().quota.clone().unwrap();
    assert!(Arc::ptr_eq(&qa, &qb));
    let alice = Rig::user("alice").await;
    assert!(alice.session.logged_in().unwrap().quota.is_none());
}

#[tokio::test]
async fn wrong_password_is_530_and_leaves_no_login() {
    let mut rig = Rig::new().await;
    assert_eq!(rig.run("USER alice").await.0, code::NEED_PASSWORD);
    let (c, text) = rig.run("PASS wrong").await;
    assert_eq!((c, text.as_str()), (code::NOT_LOGGED_IN, "Login incorrect"));
    assert!(rig.session.logged_in().is_none());
    assert_eq!(rig.session.login_failures, 1);
    assert_eq!(rig.run("MKD x").await.0, code::NOT_LOGGED_IN);
    assert!(!exists(&*rig.storage(), "/alice/x").await);
}

#[tokio::test]
async fn mkd_cwd_pwd_cdup() {
    let mut rig = Rig::user("alice").await;
    assert_eq!(
        rig.run("PWD").await,
        (code::PATH_CREATED, "\"/\" is the current directory".into())
    );
    assert_eq!(
        rig.run("MKD docs").await,
        (code::PATH_CREATED, "\"/docs\" created".into())
    );
    assert!(rig
        .storage()
        .stat(&p("/alice/docs"))
        .await
        .unwrap()
        .is_dir());
    assert_eq!(rig.run("CWD docs").await.0, code::FILE_ACTION_OK);
    assert_eq!(
        rig.run("MKD sub").await,
        (code::PATH_CREATED, "\"/docs/sub\" created".into())
    );
    assert!(exists(&*rig.storage(), "/alice/docs/sub").await);
    assert_eq!(rig.run("CWD sub").await.0, code::FILE_ACTION_OK);
    assert_eq!(
        rig.run("PWD").await.1,
        "\"/docs/sub\" is the current directory"
    );
    assert_eq!(rig.run("CDUP").await.0, code::FILE_ACTION_OK);
    assert_eq!(rig.run("PWD").await.1, "\"/docs\" is the current directory");
    assert_eq!(rig.run("CDUP").await.0, code::FILE_ACTION_OK);
    assert_eq!(rig.run("CDUP").await.0, code::FILE_ACTION_OK);
    assert_eq!(rig.run("PWD").await.1, "\"/\" is the current directory");
}

#[tokio::test]
async fn mkd_of_an_existing_name_is_550() {
    let mut rig = Rig::user("alice").await;
    assert_eq!(rig.run("MKD d").await.0, code::PATH_CREATED);
    assert_eq!(
        rig.run("MKD d").await,
        (code::FILE_UNAVAILABLE, "File exists".into())
    );
    assert_eq!(rig.run("MKD /").await.0, code::FILE_UNAVAILABLE);
    // A missing parent: refused by the storage, nothing created.
    assert_eq!(rig.run("MKD no/such").await.0, code::FILE_UNAVAILABLE);
    assert!(!exists(&*rig.storage(), "/alice/no").await);
}

#[tokio::test]
async fn cwd_to_a_missing_dir_or_a_file_is_550_and_keeps_the_cwd() {
    let mut rig = Rig::user("alice").await;
    put(&*rig.storage(), "/alice/f.txt", b"x").await;
    assert_eq!(
        rig.run("CWD nope").await,
        (code::FILE_UNAVAILABLE, "Failed to change directory".into())
    );
    assert_eq!(
        rig.run("CWD f.txt").await,
        (
            code::FILE_UNAVAILABLE,
            "Failed to change directory: not a directory".into()
        )
    );
    assert!(rig.session.cwd.is_root());
}

#[tokio::test]
async fn path_traversal_stays_inside_the_home() {
    let mut rig = Rig::user("alice").await;
    let store = rig.storage();
    store.mkdir(&p("/etc")).await.unwrap();
    put(&*store, "/etc/passwd", b"root:x:0:0").await;
    // `..` stops at the home: `../../etc` is the home's `etc`, missing.
    assert_eq!(rig.run("CWD ../../etc").await.0, code::FILE_UNAVAILABLE);
    assert_eq!(
        rig.run("SIZE ../../etc/passwd").await.0,
        code::FILE_UNAVAILABLE
    );
    assert_eq!(
        rig.run("DELE ../../etc/passwd").await.0,
        code::FILE_UNAVAILABLE
    );
    assert_eq!(rig.run("MKD ../../etc").await.0, code::PATH_CREATED);
    assert!(exists(&*store, "/alice/etc").await);
    assert_eq!(rig.run("CWD ../../etc").await.0, code::FILE_ACTION_OK);
    assert_eq!(rig.run("PWD").await.1, "\"/etc\" is the current directory");
    assert_eq!(rig.run("SIZE passwd").await.0, code::FILE_UNAVAILABLE);
    assert_eq!(get(&*store, "/etc/passwd").await, b"root:x:0:0");
}

#[tokio::test]
async fn dele_removes_a_file_and_refuses_missing_ones_and_dirs() {
    let mut rig = Rig::user("alice").await;
    let store = rig.storage();
    put(&*store, "/alice/a.bin", b"abc").await;
    store.mkdir(&p("/alice/dir")).await.unwrap();
    assert_eq!(
        rig.run("DELE a.bin").await,
        (code::FILE_ACTION_OK, "File deleted".into())
    );
    assert!(!exists(&*store, "/alice/a.bin").await);
    assert_eq!(
        rig.run("DELE a.bin").await,
        (code::FILE_UNAVAILABLE, "No such file or directory".into())
    );
    assert_eq!(rig.run("DELE dir").await.0, code::FILE_UNAVAILABLE);
    assert!(exists(&*store, "/alice/dir").await);
}

#[tokio::test]
async fn rmd_removes_empty_dirs_only_and_never_the_home() {
    let mut rig = Rig::user("alice").await;
    let store = rig.storage();
    store.mkdir(&p("/alice/full")).await.unwrap();
    put(&*store, "/alice/full/f", b"1").await;
    store.mkdir(&p("/alice/empty")).await.unwrap();
    assert_eq!(
        rig.run("RMD full").await,
        (code::FILE_UNAVAILABLE, "Directory not empty".into())
    );
    assert!(exists(&*store, "/alice/full/f").await);
    assert_eq!(rig.run("CWD empty").await.0, code::FILE_ACTION_OK);
    assert_eq!(rig.run("RMD /empty").await.0, code::FILE_ACTION_OK);
    assert!(!exists(&*store, "/alice/empty").await);
    // The cwd was inside the removed directory: back to its parent.
    assert!(rig.session.cwd.is_root());
    assert_eq!(
        rig.run("RMD /").await,
        (
            code::FILE_UNAVAILABLE,
            "Cannot remove the home directory".into()
        )
    );
    assert!(exists(&*store, "/alice").await);
}

#[tokio::test]
async fn rnfr_rnto_renames_with_the_content() {
    let mut rig = Rig::user("alice").await;
    let store = rig.storage();
    put(&*store, "/alice/old.txt", b"payload-1").await;
    assert_eq!(rig.run("RNFR old.txt").await.0, code::PENDING_FURTHER_INFO);
    assert_eq!(
        rig.run("RNTO new.txt").await,
        (code::FILE_ACTION_OK, "Rename successful".into())
    );
    assert!(!exists(&*store, "/alice/old.txt").await);
    assert_eq!(get(&*store, "/alice/new.txt").await, b"payload-1");
}

#[tokio::test]
async fn rnto_needs_the_rnfr_right_before_it() {
    let mut rig = Rig::user("alice").await;
    let store = rig.storage();
    put(&*store, "/alice/a", b"1").await;
    assert_eq!(
        rig.run("RNTO b").await,
        (code::BAD_SEQUENCE, "RNFR required first".into())
    );
    assert_eq!(rig.run("RNFR a").await.0, code::PENDING_FURTHER_INFO);
    // Any other command clears the pending rename (RFC 959 §4.1.3).
    assert_eq!(rig.run("NOOP").await.0, code::COMMAND_OK);
    assert_eq!(rig.run("RNTO b").await.0, code::BAD_SEQUENCE);
    assert!(exists(&*store, "/alice/a").await);
    assert!(!exists(&*store, "/alice/b").await);
    assert_eq!(rig.run("RNFR missing").await.0, code::FILE_UNAVAILABLE);
    assert!(rig.session.rename_from.is_none());
}

#[tokio::test]
async fn size_and_mdtm_answer_for_files_and_refuse_dirs() {
    let mut rig = Rig::user("alice").await;
    let store = rig.storage();
    put(&*store, "/alice/f", &[7u8; 1234]).await;
    store.mkdir(&p("/alice/d")).await.unwrap();
    assert_eq!(rig.run("SIZE f").await, (code::FILE_STATUS, "1234".into()));
    assert_eq!(
        rig.run("SIZE d").await,
        (code::FILE_UNAVAILABLE, "Not a regular file".into())
    );
    assert_eq!(rig.run("SIZE nope").await.0, code::FILE_UNAVAILABLE);
    let (c, when) = rig.run("MDTM f").await;
    assert_eq!(c, code::FILE_STATUS);
    assert_eq!(when.len(), 14, "{when}");
    assert!(when.bytes().all(|b| b.is_ascii_digit()), "{when}");
    let modified = store.stat(&p("/alice/f")).await.unwrap().modified.unwrap();
    assert_eq!(when, crate::listing::time_val(modified));
    assert_eq!(rig.run("MDTM d").await.0, code::FILE_UNAVAILABLE);
}

#[tokio::test]
async fn mlst_reports_the_facts_of_one_entry() {
    let mut rig = Rig::user("alice").await;
    let store = rig.storage();
    put(&*store, "/alice/f.txt", b"12345").await;
    store.mkdir(&p("/alice/d")).await.unwrap();
    let r = rig.cmd("MLST f.txt").await;
    assert_eq!(r.code, code::FILE_ACTION_OK);
    assert_eq!(r.lines.len(), 3, "{r:?}");
    let line = &r.lines[1];
    assert!(line.starts_with(" type=file;size=5;modify="), "{line}");
    assert!(line.ends_with("; /f.txt"), "{line}");
    assert!(line.contains("perm="), "{line}");
    let r = rig.cmd("MLST d").await;
    assert!(r.lines[1].starts_with(" type=dir;modify="), "{r:?}");
    assert!(r.lines[1].ends_with(" /d"), "{r:?}");
    assert_eq!(rig.run("MLST nope").await.0, code::FILE_UNAVAILABLE);
}

#[tokio::test]
async fn a_read_only_user_cannot_change_anything() {
    let mut rig = Rig::user("reader").await;
    let store = rig.storage();
    put(&*store, "/alice/f", b"keep").await;
    for line in ["DELE f", "MKD d", "RMD f", "RNFR f"] {
        assert_eq!(
            rig.run(line).await,
            (code::FILE_UNAVAILABLE, "Permission denied".into()),
            "{line}"
        );
    }
    assert_eq!(get(&*store, "/alice/f").await, b"keep");
    assert!(!exists(&*store, "/alice/d").await);
    assert_eq!(rig.run("SIZE f").await, (code::FILE_STATUS, "4".into()));
}

#[tokio::test]
async fn commands_before_login_get_530() {
    let mut rig = Rig::new().await;
    for line in ["CWD /", "MKD x", "DELE x", "SIZE x", "MLST"] {
        assert_eq!(rig.run(line).await.0, code::NOT_LOGGED_IN, "{line}");
    }
    assert!(!exists(&*rig.storage(), "/x").await);
}

/// A backend whose every operation fails with one error kind.
#[derive(Debug)]
struct Failing(ErrorKind);

impl Failing {
    fn err<T>(&self) -> ftpgate_storage::Result<T> {
        Err(StorageError::new(self.0, "injected failure"))
    }
}

#[async_trait]
impl StorageBackend for Failing {
    fn kind(&self) -> &'static str {
        "failing"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }
    async fn stat(&self, _: &VPath) -> ftpgate_storage::Result<Metadata> {
        self.err()
    }
    async fn list(&self, _: &VPath) -> ftpgate_storage::Result<EntryStream> {
        self.err()
    }
    async fn read(&self, _: &VPath, _: u64) -> ftpgate_storage::Result<ByteStream> {
        self.err()
    }
    async fn create(&self, _: &VPath, _: WriteMode) -> ftpgate_storage::Result<Box<dyn Upload>> {
        self.err()
    }
    async fn delete(&self, _: &VPath) -> ftpgate_storage::Result<()> {
        self.err()
    }
    async fn mkdir(&self, _: &VPath) -> ftpgate_storage::Result<()> {
        self.err()
    }
    async fn rmdir(&self, _: &VPath) -> ftpgate_storage::Result<()> {
        self.err()
    }
    async fn rename(&self, _: &VPath, _: &VPath) -> ftpgate_storage::Result<()> {
        self.err()
    }
    async fn set_modified(&self, _: &VPath, _: SystemTime) -> ftpgate_storage::Result<()> {
        self.err()
    }
}

/// `alice` logged in on a server whose `[storage]` fails every call with `kind`.
async fn failing(kind: ErrorKind) -> Rig {
    let mut shared = Shared::build(config("")).await.unwrap();
    shared.backends = Backends::new(Arc::new(Failing(kind)), HashMap::new());
    let mut rig = Rig::over(Arc::new(shared));
    rig.login("alice").await;
    rig
}

#[tokio::test]
async fn a_transient_storage_error_is_451_to_retry() {
    let mut rig = failing(ErrorKind::Transient).await;
    let want = (
        code::LOCAL_ERROR,
        "Storage temporarily unavailable, try again".to_owned(),
    );
    for line in ["MKD d", "DELE f", "SIZE f", "MLST f"] {
        assert_eq!(rig.run(line).await, want, "{line}");
    }
    // CWD maps only 550s to its own text; a 451 stays a 451.
    assert_eq!(rig.run("CWD d").await, want);
    assert!(rig.session.cwd.is_root());
}

#[tokio::test]
async fn storage_errors_map_to_their_codes() {
    for (kind, want) in [
        (ErrorKind::InsufficientStorage, code::INSUFFICIENT_STORAGE),
        (ErrorKind::InvalidName, code::NAME_NOT_ALLOWED),
        (ErrorKind::PermissionDenied, code::FILE_UNAVAILABLE),
        (ErrorKind::Unsupported, code::NOT_IMPLEMENTED),
    ] {
        let mut rig = failing(kind).await;
        assert_eq!(rig.run("MKD d").await.0, want, "{kind:?}");
    }
}

#[tokio::test]
async fn opts_mlst_selects_the_facts_mlst_reports() {
    let mut rig = Rig::user("alice").await;
    put(&*rig.storage(), "/alice/f", b"123").await;
    assert_eq!(
        rig.run("OPTS MLST size;").await,
        (code::COMMAND_OK, "MLST OPTS size;".into())
    );
    let r = rig.cmd("MLST f").await;
    assert_eq!(r.lines[1], " size=3; /f");
}

#[tokio::test]
async fn stat_with_a_path_lists_on_the_control_channel() {
    let mut rig = Rig::user("alice").await;
    let store = rig.storage();
    store.mkdir(&p("/alice/d")).await.unwrap();
    put(&*store, "/alice/d/one.txt", &[1u8; 42]).await;
    store.mkdir(&p("/alice/d/sub")).await.unwrap();
    let r = rig.cmd("STAT d").await;
    assert_eq!(r.code, code::FILE_STATUS);
    assert_eq!(r.lines.first().map(String::as_str), Some("Status of /d:"));
    let body = &r.lines[1..r.lines.len() - 1];
    assert_eq!(body.len(), 2, "{r:?}");
    let file = body.iter().find(|l| l.ends_with(" one.txt")).unwrap();
    assert!(
        file.starts_with("-rw-r--r--") && file.contains(" 42 "),
        "{file}"
    );
    let dir = body.iter().find(|l| l.ends_with(" sub")).unwrap();
    assert!(dir.starts_with("drwxr-xr-x"), "{dir}");
    assert_eq!(rig.run("STAT nope").await.0, code::FILE_UNAVAILABLE);
}

#[tokio::test]
async fn rein_forgets_the_login_and_its_backend() {
    let mut rig = Rig::user("bob").await;
    assert_eq!(rig.run("MKD x").await.0, code::PATH_CREATED);
    assert_eq!(rig.run("CWD x").await.0, code::FILE_ACTION_OK);
    assert_eq!(rig.run("REIN").await.0, code::SERVICE_READY);
    assert!(rig.session.logged_in().is_none());
    assert!(rig.session.cwd.is_root());
    assert_eq!(rig.run("MKD y").await.0, code::NOT_LOGGED_IN);
    rig.login("alice").await;
    assert_eq!(rig.session.logged_in().unwrap().backend.label(), "storage");
    assert_eq!(rig.run("MKD y").await.0, code::PATH_CREATED);
    assert!(exists(&*rig.storage(), "/alice/y").await);
}
