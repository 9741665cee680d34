//! PWD, CWD/CDUP, MKD, RMD (RFC 959 §4.1.1, §4.1.3). Paths shown to the client are
//! relative to the user's home; 257 replies quote them per RFC 959 Appendix II.

use super::{target, tri, Ctx, Outcome};
use crate::auth::Permission;
use crate::errors::storage_reply;
use crate::protocol::code;
use crate::protocol::reply::quote_path;
use crate::protocol::Reply;

/// PWD: `257 "/dir" is the current directory`.
pub(super) fn pwd(ctx: &mut Ctx<'_>) -> Outcome {
    Reply::new(
        code::PATH_CREATED,
        format!(
            "{} is the current directory",
            quote_path(&ctx.session.cwd.to_string())
        ),
    )
    .into()
}

/// CWD: "550 Failed to change directory" for anything that is not a directory
/// (rclone expects 550, not 501, for a missing one).
pub(super) async fn cwd(ctx: &mut Ctx<'_>, arg: &str) -> Outcome {
    let t = tri!(target(ctx, arg, None));
    match ctx.storage().stat(&t.storage).await {
        Ok(m) if m.is_dir() => {
            ctx.session.cwd = t.shown;
            Reply::new(code::FILE_ACTION_OK, "Directory successfully changed").into()
        }
        Ok(_) => Reply::new(
            code::FILE_UNAVAILABLE,
            "Failed to change directory: not a directory",
        )
        .into(),
        Err(e) => {
            let r = storage_reply(&e);
            if r.code == code::FILE_UNAVAILABLE {
                Reply::new(code::FILE_UNAVAILABLE, "Failed to change directory").into()
            } else {
                r.into()
            }
        }
    }
}

/// MKD: `257 "/new" created`.
pub(super) async fn mkd(ctx: &mut Ctx<'_>, arg: &str) -> Outcome {
    let t = tri!(target(ctx, arg, Some(Permission::Mkdir)));
    if t.shown.is_root() {
        return Reply::new(code::FILE_UNAVAILABLE, "File exists").into();
    }
    match ctx.storage().mkdir(&t.storage).await {
        Ok(()) => {
            ctx.server
                .events
                .file_op("mkdir", ctx.session, &t.storage, None);
            Reply::new(
                code::PATH_CREATED,
                format!("{} created", quote_path(&t.shown.to_string())),
            )
            .into()
        }
        Err(e) => storage_reply(&e).into(),
    }
}

/// RMD: removes an empty directory; never the home itself.
pub(super) async fn rmd(ctx: &mut Ctx<'_>, arg: &str) -> Outcome {
    let t = tri!(target(ctx, arg, Some(Permission::Delete)));
    if t.shown.is_root() {
        return Reply::new(code::FILE_UNAVAILABLE, "Cannot remove the home directory").into();
    }
    match ctx.storage().rmdir(&t.storage).await {
        Ok(()) => {
            if ctx.session.cwd.starts_with(&t.shown) {
                ctx.session.cwd = t.shown.parent().unwrap_or_default();
            }
            ctx.server
                .events
                .file_op("rmdir", ctx.session, &t.storage, None);
            Reply::new(code::FILE_ACTION_OK, "Directory removed").into()
        }
        Err(e) => storage_reply(&e).into(),
    }
}
