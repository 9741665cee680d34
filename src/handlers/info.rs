//! Informational and parameter commands: SYST, FEAT (RFC 2389 §3), OPTS (RFC 2389
//! §4, incl. `OPTS HASH`), HELP and STAT (RFC 959 §4.1.3), TYPE/MODE/STRU (RFC 959 §4.1.2).

use super::{Ctx, Outcome};
use crate::checksum::Algorithm;
use crate::listing::Facts;
use crate::protocol::code;
use crate::protocol::command::VERBS;
use crate::protocol::{Reply, TransferType};

/// FEAT: "each feature … on a separate line, beginning with a single space"
/// (RFC 2389 §3.2). Only what works on this backend is listed: rclone sends MFMT
/// after every upload when FEAT offers it.
pub(super) fn feat(ctx: &mut Ctx<'_>) -> Outcome {
    let caps = ctx.storage().capabilities();
    let mut lines = Vec::new();
    // RFC 4217 §6: AUTH TLS, PBSZ and PROT are advertised where TLS is offered.
    if ctx.session.tls_mode != crate::config::TlsMode::Off && ctx.server.data_plane.tls.is_some() {
        lines.push(" AUTH TLS".to_owned());
    }
    lines.extend([
        " EPRT".to_owned(),
        " EPSV".to_owned(),
        Algorithm::feat_line(ctx.session.hash_algorithm),
        " MDTM".to_owned(),
    ]);
    if caps.set_modified {
        lines.push(" MFMT".into());
    }
    lines.push(format!(" MLST {}", ctx.session.facts.feat_string()));
    lines.push(" PASV".into());
    if ctx.session.tls_mode != crate::config::TlsMode::Off && ctx.server.data_plane.tls.is_some() {
        lines.push(" PBSZ".into());
        lines.push(" PROT".into());
    }
    lines.push(" REST STREAM".into());
    lines.push(" SIZE".into());
    lines.push(" TVFS".into());
    lines.push(" UTF8".into());
    // The legacy digest commands, as ProFTPD's mod_digest lists them.
    for verb in ["XCRC", "XMD5", "XSHA1", "XSHA256"] {
        lines.push(format!(" {verb} filename"));
    }
    Outcome::Reply(Reply::multi(code::SYSTEM_STATUS, "Features:", lines, "End"))
}

/// OPTS UTF8 ON|OFF (RFC 2640 §3.2: names are always UTF-8 here) and OPTS MLST
/// (RFC 3659 §7.9).
pub(super) fn opts(ctx: &mut Ctx<'_>, arg: &str) -> Outcome {
    let (name, rest) = arg.split_once(' ').unwrap_or((arg, ""));
    match name.to_ascii_uppercase().as_str() {
        "UTF8" | "UTF-8" => match rest.trim().to_ascii_uppercase().as_str() {
            "ON" | "" => Reply::new(code::COMMAND_OK, "Always in UTF8 mode").into(),
            "OFF" => Reply::new(code::COMMAND_OK, "UTF8 stays on; names are UTF-8").into(),
            _ => Reply::new(code::ARGUMENT_SYNTAX_ERROR, "OPTS UTF8 takes ON or OFF").into(),
        },
        "MLST" => {
            ctx.session.facts = Facts::parse(rest);
            Reply::new(
                code::COMMAND_OK,
                format!("MLST OPTS {}", ctx.session.facts.selected()),
            )
            .into()
        }
        // draft-bryan-ftpext-hash-02 §4: without an argument the selected algorithm,
        // with one the new selection; an algorithm we don't offer is 504.
        "HASH" => match rest.trim() {
            "" => Reply::new(code::COMMAND_OK, ctx.session.hash_algorithm.name()).into(),
            name => match Algorithm::parse(name) {
                Some(a) => {
                    ctx.session.hash_algorithm = a;
                    Reply::new(code::COMMAND_OK, a.name()).into()
                }
                None => Reply::new(
                    code::NOT_IMPLEMENTED_FOR_PARAMETER,
                    format!("Unknown algorithm {name}"),
                )
                .into(),
            },
        },
        _ => Reply::new(
            code::ARGUMENT_SYNTAX_ERROR,
            format!("Option {name} not understood"),
        )
        .into(),
    }
}

/// HELP: 214 with the verbs we implement, or a word on one verb.
pub fn help_reply(verb: Option<&str>) -> Reply {
    match verb {
        Some(v) => {
            let up = v.trim().to_ascii_uppercase();
            if VERBS.contains(&up.as_str()) {
                Reply::new(
                    code::HELP,
                    format!("{up} is implemented; see RFC 959, 2428, 3659"),
                )
            } else {
                Reply::new(code::NOT_IMPLEMENTED, format!("Unknown command {up}"))
            }
        }
        None => {
            let lines = VERBS
                .chunks(8)
                .map(|c| format!(" {}", c.join(" ")))
                .collect();
            Reply::multi(
                code::HELP,
                "The following commands are recognized:",
                lines,
                "Help OK",
            )
        }
    }
}

/// STAT without argument: 211 server status (RFC 959 §4.1.3).
pub(super) fn stat_server(ctx: &mut Ctx<'_>) -> Outcome {
    let s = &ctx.session;
    let who = s
        .user()
        .map(|u| u.name.clone())
        .unwrap_or_else(|| "(not logged in)".into());
    let ty = match s.transfer_type {
        TransferType::Ascii => "ASCII",
        TransferType::Image => "BINARY",
    };
    let lines = vec![
        format!(" Connected from {}", s.peer.ip()),
        format!(" Logged in as {who}"),
        format!(" TYPE: {ty}, STRUcture: File, MODE: Stream"),
        format!(" Storage: {}", ctx.storage().kind()),
        " No data connection".to_owned(),
    ];
    Reply::multi(
        code::SYSTEM_STATUS,
        "ftpgate status:",
        lines,
        "End of status",
    )
    .into()
}

/// TYPE: A (optionally N) or I / L 8. Data is converted only when
/// `transfer.ascii_conversion` is on.
pub(super) fn type_(ctx: &mut Ctx<'_>, t: TransferType) -> Outcome {
    ctx.session.transfer_type = t;
    match t {
        TransferType::Ascii => Reply::new(code::COMMAND_OK, "Switching to ASCII mode").into(),
        TransferType::Image => Reply::new(code::COMMAND_OK, "Switching to Binary mode").into(),
    }
}
