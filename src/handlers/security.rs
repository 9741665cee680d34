//! RFC 4217 (FTP over TLS) commands: AUTH, PBSZ, PROT, CCC. The TLS handshake
//! itself happens in the connection, after the 234 reply.

use super::{Ctx, Outcome};
use crate::config::TlsMode;
use crate::protocol::code;
use crate::protocol::Reply;

/// AUTH TLS (also `TLS-C`, and `SSL` as old clients send): 234, then the
/// connection upgrades (RFC 4217 §4). Only before login and only once.
pub(super) fn auth(ctx: &mut Ctx<'_>, mechanism: &str) -> Outcome {
    if ctx.session.tls_mode == TlsMode::Off || ctx.server.data_plane.tls.is_none() {
        return Reply::new(
            code::NOT_IMPLEMENTED,
            "TLS is not configured on this server",
        )
        .into();
    }
    if !matches!(mechanism, "TLS" | "TLS-C" | "SSL") {
        return Reply::new(
            code::NOT_IMPLEMENTED_FOR_PARAMETER,
            format!("AUTH {mechanism} not supported; use AUTH TLS"),
        )
        .into();
    }
    if ctx.session.tls_control {
        return Reply::new(code::BAD_SEQUENCE, "Already using TLS").into();
    }
    if ctx.session.user().is_some() {
        return Reply::new(code::BAD_SEQUENCE, "AUTH must come before login").into();
    }
    Outcome::StartTls(Reply::new(
        code::SECURITY_EXCHANGE_OK,
        format!("AUTH {mechanism} ok, start TLS"),
    ))
}

/// PBSZ: only 0 makes sense for TLS (RFC 4217 §8); answered `PBSZ=0`.
pub(super) fn pbsz(ctx: &mut Ctx<'_>, _size: u64) -> Outcome {
    if !ctx.session.tls_control {
        return Reply::new(code::BAD_SEQUENCE, "PBSZ needs AUTH TLS first").into();
    }
    ctx.session.pbsz = true;
    Reply::new(code::COMMAND_OK, "PBSZ=0").into()
}

/// PROT P (TLS on data connections) or C (clear; refused with 534 when TLS is
/// required); S and E are not supported (536) — RFC 4217 §9.
pub(super) fn prot(ctx: &mut Ctx<'_>, level: char) -> Outcome {
    if !ctx.session.tls_control {
        return Reply::new(code::BAD_SEQUENCE, "PROT needs AUTH TLS first").into();
    }
    if !ctx.session.pbsz {
        return Reply::new(code::BAD_SEQUENCE, "PROT needs PBSZ first").into();
    }
    match level {
        'P' => {
            ctx.session.prot_private = true;
            Reply::new(code::COMMAND_OK, "PROT now Private").into()
        }
        'C' if ctx.session.tls_required() => Reply::new(
            code::POLICY_REFUSED,
            "PROT C refused: this server requires protected data",
        )
        .into(),
        'C' => {
            ctx.session.prot_private = false;
            Reply::new(code::COMMAND_OK, "PROT now Clear").into()
        }
        _ => Reply::new(
            code::PROT_NOT_SUPPORTED,
            "Only PROT P and PROT C are supported",
        )
        .into(),
    }
}

/// CCC: refused; the control channel stays encrypted (RFC 4217 §6 allows a
/// server to refuse with 534).
pub(super) fn ccc(_ctx: &mut Ctx<'_>) -> Outcome {
    Reply::new(
        code::POLICY_REFUSED,
        "CCC refused: the control channel stays encrypted",
    )
    .into()
}
