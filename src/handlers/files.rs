//! File commands on the control channel: DELE, RNFR/RNTO (RFC 959 §4.1.3), SIZE,
//! MDTM (RFC 3659 §3, §4), MFMT (draft-somers-ftp-mfxx), MLST (RFC 3659 §7) and
//! STAT with a path (RFC 959: "the reply is like LIST but on the control connection").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ftpgate_storage::{DirEntry, ErrorKind};
use futures::StreamExt;

use super::{target, target_to_change, tri, user, Ctx, Outcome};
use crate::auth::Permission;
use crate::errors::storage_reply;
use crate::listing::{list_line, mlsx_line, name_is_listable, perm_fact, time_val};
use crate::protocol::code;
use crate::protocol::Reply;

/// DELE: files only.
pub(super) async fn dele(ctx: &mut Ctx<'_>, arg: &str) -> Outcome {
    let t = tri!(target(ctx, arg, Some(Permission::Delete)));
    match ctx.storage().delete(&t.storage).await {
        Ok(()) => {
            ctx.server
                .events
                .file_op("delete", ctx.session, &t.storage, None);
            Reply::new(code::FILE_ACTION_OK, "File deleted").into()
        }
        Err(e) => storage_reply(&e).into(),
    }
}

/// RNFR: the source must exist; 350 asks for RNTO.
pub(super) async fn rnfr(ctx: &mut Ctx<'_>, arg: &str) -> Outcome {
    let t = tri!(target(ctx, arg, Some(Permission::Rename)));
    if t.shown.is_root() {
        return Reply::new(code::FILE_UNAVAILABLE, "Cannot rename the home directory").into();
    }
    let storage = ctx.storage();
    match storage.stat(&t.storage).await {
        // Refuse up front rather than after RNTO (S3: a prefix cannot move atomically).
        Ok(m) if m.is_dir() && !storage.capabilities().rename_directories => Reply::new(
            code::FILE_UNAVAILABLE,
            "Renaming directories is not supported on this storage",
        )
        .into(),
        Ok(_) => {
            ctx.session.rename_from = Some(t.storage);
            Reply::new(code::PENDING_FURTHER_INFO, "Ready for RNTO").into()
        }
        Err(e) => storage_reply(&e).into(),
    }
}

/// RNTO: "503 Bad sequence" without a preceding RNFR; replaces an existing file.
pub(super) async fn rnto(ctx: &mut Ctx<'_>, arg: &str) -> Outcome {
    let Some(from) = ctx.session.rename_from.take() else {
        return Reply::new(code::BAD_SEQUENCE, "RNFR required first").into();
    };
    let t = tri!(target(ctx, arg, Some(Permission::Rename)));
    if t.shown.is_root() {
        return Reply::new(code::NAME_NOT_ALLOWED, "File name not allowed").into();
    }
    if t.storage.starts_with(&from) && t.storage != from {
        return Reply::new(
            code::NAME_NOT_ALLOWED,
            "Cannot move a directory into itself",
        )
        .into();
    }
    match ctx.storage().rename(&from, &t.storage).await {
        Ok(()) => {
            ctx.server
                .events
                .file_op("rename", ctx.session, &t.storage, Some(&from));
            Reply::new(code::FILE_ACTION_OK, "Rename successful").into()
        }
        Err(e) => storage_reply(&e).into(),
    }
}

/// SIZE: `213 <bytes>` for files, 550 for directories.
pub(super) async fn size(ctx: &mut Ctx<'_>, arg: &str) -> Outcome {
    let t = tri!(target(ctx, arg, Some(Permission::Read)));
    // The user's own pending upload (newer than any complete file) is what a
    // resuming client must continue from (storage.resume_window_secs).
    if let (Some(window), Some(user)) = (ctx.storage_config().resume_window(), ctx.session.user()) {
        let key = crate::resume::key(&user.name, &t.storage);
        let storage = ctx.storage();
        let found = crate::resume::find(&*storage, window, &key, &ctx.server.metrics).await;
        if let Some(p) = found.live() {
            return Reply::new(code::FILE_STATUS, p.size.to_string()).into();
        }
    }
    match ctx.storage().stat(&t.storage).await {
        Ok(m) if m.is_file() => Reply::new(code::FILE_STATUS, m.size.to_string()).into(),
        Ok(_) => Reply::new(code::FILE_UNAVAILABLE, "Not a regular file").into(),
        Err(e) => storage_reply(&e).into(),
    }
}

/// MDTM: `213 YYYYMMDDHHMMSS` (UTC) for files.
pub(super) async fn mdtm(ctx: &mut Ctx<'_>, arg: &str) -> Outcome {
    let t = tri!(target(ctx, arg, Some(Permission::Read)));
    match ctx.storage().stat(&t.storage).await {
        Ok(m) if m.is_file() => {
            let when = m.modified.unwrap_or_else(SystemTime::now);
            Reply::new(code::FILE_STATUS, time_val(when)).into()
        }
        Ok(_) => Reply::new(code::FILE_UNAVAILABLE, "Not a regular file").into(),
        Err(e) => storage_reply(&e).into(),
    }
}

/// MFMT: `213 Modify=YYYYMMDDHHMMSS; path`; 502 where the backend cannot.
pub(super) async fn mfmt(ctx: &mut Ctx<'_>, time: i64, arg: &str) -> Outcome {
    let t = tri!(target_to_change(ctx, arg));
    if !ctx.storage().capabilities().set_modified {
        return Reply::new(code::NOT_IMPLEMENTED, "MFMT not supported by this storage").into();
    }
    let when = if time >= 0 {
        UNIX_EPOCH + Duration::from_secs(time as u64)
    } else {
        return Reply::new(
            code::ARGUMENT_SYNTAX_ERROR,
            "Times before 1970 are not supported",
        )
        .into();
    };
    // No stat first: the backend answers NotFound / IsADirectory itself (on S3 a
    // stat would cost two more requests after every rclone upload).
    match ctx.storage().set_modified(&t.storage, when).await {
        Ok(()) => Reply::new(
            code::FILE_STATUS,
            format!("Modify={}; {}", time_val(when), arg),
        )
        .into(),
        Err(e) => storage_reply(&e).into(),
    }
}

/// MLST: facts of one entry on the control channel, RFC 3659 §7.2:
/// `250-Listing`, ` facts; /path`, `250 End`.
pub(super) async fn mlst(ctx: &mut Ctx<'_>, arg: Option<&str>) -> Outcome {
    let t = tri!(target(ctx, arg.unwrap_or(""), Some(Permission::List)));
    let u = tri!(user(ctx));
    match ctx.storage().stat(&t.storage).await {
        Ok(m) => {
            let append = ctx.storage().capabilities().append;
            let perm = perm_fact(&m, &u, append);
            let line = mlsx_line(
                &t.shown.to_string(),
                &m,
                ctx.session.facts,
                &perm,
                SystemTime::now(),
            );
            Reply::multi(
                code::FILE_ACTION_OK,
                format!("Listing {}", t.shown),
                vec![format!(" {line}")],
                "End",
            )
            .into()
        }
        Err(e) => storage_reply(&e).into(),
    }
}

/// Most entries `STAT path` sends over the control channel; larger directories
/// should be listed with LIST over a data connection.
const STAT_MAX_ENTRIES: usize = 10_000;

/// STAT path: an `ls -l` listing over the control channel as a 213 reply.
pub(super) async fn stat_path(ctx: &mut Ctx<'_>, arg: &str) -> Outcome {
    let t = tri!(target(
        ctx,
        arg.trim_start_matches("-a ").trim_start_matches("-la "),
        Some(Permission::List)
    ));
    let storage = ctx.storage();
    let now = SystemTime::now();
    let meta = match storage.stat(&t.storage).await {
        Ok(m) => m,
        Err(e) => return storage_reply(&e).into(),
    };
    let mut lines = Vec::new();
    if meta.is_file() {
        let name = t.shown.file_name().unwrap_or("/").to_owned();
        lines.push(list_line(&DirEntry { name, meta }, now));
    } else {
        let mut stream = match storage.list(&t.storage).await {
            Ok(s) => s,
            Err(e) => return storage_reply(&e).into(),
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(e) if name_is_listable(&e.name) => lines.push(list_line(&e, now)),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return storage_reply(&e).into(),
            }
            if lines.len() >= STAT_MAX_ENTRIES {
                lines.push("... (truncated, use LIST)".into());
                break;
            }
        }
    }
    Reply::multi(
        code::FILE_STATUS,
        format!("Status of {}:", t.shown),
        lines,
        "End of status",
    )
    .into()
}
