//! SITE (RFC 959 §4.1.3: "services specific to his system"): `HELP`, `CHMOD` and
//! lftp's `UTIME`/`UTIME2`. Unknown subcommands are 504 ("command not implemented for
//! that parameter").

use std::time::{Duration, UNIX_EPOCH};

use ftpgate_storage::ErrorKind;

use super::{target_to_change, tri, Ctx, Outcome};
use crate::errors::storage_reply;
use crate::protocol::code;
use crate::protocol::command::parse_timeval;
use crate::protocol::Reply;

/// The subcommands `SITE HELP` lists.
pub const SITE_COMMANDS: &str = "HELP CHMOD UTIME UTIME2";

/// Dispatches one SITE subcommand.
pub(super) async fn site(ctx: &mut Ctx<'_>, arg: &str) -> Outcome {
    let (sub, rest) = arg.split_once(' ').unwrap_or((arg, ""));
    match sub.to_ascii_uppercase().as_str() {
        "HELP" | "" => Reply::multi(
            code::HELP,
            "SITE commands:",
            vec![format!(" {SITE_COMMANDS}")],
            "End",
        )
        .into(),
        "CHMOD" => chmod(ctx, rest).await,
        "UTIME" | "UTIME2" => utime(ctx, rest).await,
        other => Reply::new(
            code::NOT_IMPLEMENTED_FOR_PARAMETER,
            format!("SITE {other} not implemented"),
        )
        .into(),
    }
}

/// `SITE CHMOD <octal> <path>`: applied where storage keeps Unix permissions (local
/// disk: the permission bits only); elsewhere (S3, memory) accepted as a no-op so
/// uploads by tools that always send it (WinSCP, curlftpfs) don't fail.
async fn chmod(ctx: &mut Ctx<'_>, rest: &str) -> Outcome {
    let Some((mode, path)) = rest.trim_start().split_once(' ') else {
        return Reply::new(
            code::ARGUMENT_SYNTAX_ERROR,
            "SITE CHMOD needs a mode and a path",
        )
        .into();
    };
    let Ok(mode) = u32::from_str_radix(mode, 8) else {
        return Reply::new(
            code::ARGUMENT_SYNTAX_ERROR,
            "SITE CHMOD needs an octal mode",
        )
        .into();
    };
    if mode > 0o7777 || path.trim().is_empty() {
        return Reply::new(
            code::ARGUMENT_SYNTAX_ERROR,
            "SITE CHMOD needs an octal mode and a path",
        )
        .into();
    }
    let t = tri!(target_to_change(ctx, path));
    let storage = ctx.storage();
    match storage.set_permissions(&t.storage, mode).await {
        Ok(()) => Reply::new(
            code::COMMAND_OK,
            format!("SITE CHMOD {:o} applied", mode & 0o777),
        )
        .into(),
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            // Still a 550 for a path that does not exist.
            match storage.stat(&t.storage).await {
                Ok(_) => Reply::new(
                    code::COMMAND_OK,
                    "SITE CHMOD accepted; this storage keeps no permissions",
                )
                .into(),
                Err(e) => storage_reply(&e).into(),
            }
        }
        Err(e) => storage_reply(&e).into(),
    }
}

/// lftp's forms: `SITE UTIME <YYYYMMDDhhmm[ss]> <path>` (also `UTIME2`) and
/// `SITE UTIME <path> <atime> <mtime> <ctime> UTC` (ProFTPD's mod_site_misc); the
/// modification time is set as MFMT sets it.
async fn utime(ctx: &mut Ctx<'_>, rest: &str) -> Outcome {
    let Some((time, path)) = parse_utime(rest) else {
        return Reply::new(
            code::ARGUMENT_SYNTAX_ERROR,
            "SITE UTIME needs YYYYMMDDhhmmss and a path, or a path, three times and UTC",
        )
        .into();
    };
    let t = tri!(target_to_change(ctx, &path));
    let storage = ctx.storage();
    if !storage.capabilities().set_modified {
        return Reply::new(
            code::NOT_IMPLEMENTED,
            "SITE UTIME not supported by this storage",
        )
        .into();
    }
    let when = UNIX_EPOCH + Duration::from_secs(time);
    match storage.set_modified(&t.storage, when).await {
        Ok(()) => Reply::new(code::COMMAND_OK, "Date/time changed okay").into(),
        Err(e) => storage_reply(&e).into(),
    }
}

/// (seconds since the epoch, path) of a SITE UTIME argument.
pub fn parse_utime(rest: &str) -> Option<(u64, String)> {
    let rest = rest.trim_start();
    let words: Vec<&str> = rest.split(' ').collect();
    // <path> <atime> <mtime> <ctime> UTC: the path may contain spaces.
    if words.len() >= 5 && words[words.len() - 1].eq_ignore_ascii_case("UTC") {
        let n = words.len();
        let mtime = parse_timeval(words[n - 3])?;
        let path = words[..n - 4].join(" ");
        if path.is_empty() || mtime < 0 {
            return None;
        }
        return Some((mtime as u64, path));
    }
    // <time> <path>, time with or without seconds.
    let (time, path) = rest.split_once(' ')?;
    let full = if time.len() == 12 {
        format!("{time}00")
    } else {
        time.to_owned()
    };
    let secs = parse_timeval(&full)?;
    if path.trim().is_empty() || secs < 0 {
        return None;
    }
    Some((secs as u64, path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_forms() {
        assert_eq!(
            parse_utime("20200102030405 a b.txt"),
            Some((1_577_934_245, "a b.txt".into()))
        );
        assert_eq!(
            parse_utime("202001020304 f"),
            Some((1_577_934_240, "f".into()))
        );
        assert_eq!(
            parse_utime("my file 20200101000000 20200102030405 20200101000000 UTC"),
            Some((1_577_934_245, "my file".into()))
        );
        assert_eq!(parse_utime("f"), None);
        assert_eq!(parse_utime("2020 f"), None);
        assert_eq!(parse_utime("x 1 2 3 UTC"), None);
    }
}
