//! Data-connection set-up commands: PASV (RFC 959 §4.1.2), EPSV (RFC 2428 §3),
//! PORT (RFC 959 §4.1.2) and EPRT (RFC 2428 §2). Each replaces any endpoint set up
//! before, so a session never holds more than one pending passive listener.

use std::net::{IpAddr, SocketAddr};

use super::{Ctx, Outcome};
use crate::datachan::{self, DataEndpoint};
use crate::protocol::code;
use crate::protocol::{EpsvArg, Reply};

async fn listen(ctx: &mut Ctx<'_>) -> Result<SocketAddr, Reply> {
    *ctx.data = None; // close the previous listener first
    if let Some(ports) = &ctx.server.data_plane.shared_ports {
        return match ports.reserve(ctx.session.peer.ip()) {
            Ok(p) => {
                let addr = SocketAddr::new(ctx.session.local.ip(), p.port);
                *ctx.data = Some(Box::new(DataEndpoint::Shared(p)));
                Ok(addr)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no passive port free");
                Err(Reply::new(
                    code::CANT_OPEN_DATA,
                    "Cannot open passive connection",
                ))
            }
        };
    }
    let Ok(slot) = ctx
        .server
        .data_plane
        .passive_slots
        .clone()
        .try_acquire_owned()
    else {
        tracing::warn!("passive.max_pending listeners are pending: refusing PASV/EPSV");
        return Err(Reply::new(
            code::CANT_OPEN_DATA,
            "Too many pending data connections, try again",
        ));
    };
    let ip = ctx.session.socket_local.ip();
    match datachan::bind_passive(ip, ctx.server.data_plane.passive_ports).await {
        Ok(l) => {
            let addr = l
                .local_addr()
                .map_err(|_| Reply::new(code::CANT_OPEN_DATA, "Cannot open passive connection"))?;
            *ctx.data = Some(Box::new(DataEndpoint::Passive(l, Some(slot))));
            Ok(addr)
        }
        Err(e) => {
            tracing::warn!(error = %e, "passive listener failed");
            Err(Reply::new(
                code::CANT_OPEN_DATA,
                "Cannot open passive connection",
            ))
        }
    }
}

/// PASV: `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`, announcing the
/// `passive.advertise_for` address of the client's network, else
/// `passive.advertise`, else the address the client connected to. IPv4 only.
pub(super) async fn pasv(ctx: &mut Ctx<'_>) -> Outcome {
    if ctx.session.epsv_all {
        return Reply::new(code::BAD_SEQUENCE, "PASV not allowed after EPSV ALL").into();
    }
    let announce = match ctx
        .server
        .data_plane
        .advertised_ip(ctx.session.peer.ip())
        .or(Some(datachan::canonical(ctx.session.local.ip())))
    {
        Some(IpAddr::V4(v4)) => v4,
        _ => return Reply::new(code::CANT_OPEN_DATA, "PASV needs IPv4; use EPSV").into(),
    };
    match listen(ctx).await {
        Ok(addr) => Reply::new(
            code::ENTERING_PASSIVE,
            format!(
                "Entering Passive Mode ({})",
                datachan::pasv_tuple(announce, addr.port())
            ),
        )
        .into(),
        Err(r) => r.into(),
    }
}

/// EPSV: `229 Entering Extended Passive Mode (|||port|)`; `EPSV ALL` locks the
/// session to EPSV.
pub(super) async fn epsv(ctx: &mut Ctx<'_>, arg: EpsvArg) -> Outcome {
    match arg {
        EpsvArg::All => {
            ctx.session.epsv_all = true;
            return Reply::new(code::COMMAND_OK, "EPSV ALL ok").into();
        }
        EpsvArg::Protocol(p) => {
            let ours = if ctx.session.local.is_ipv4() { 1 } else { 2 };
            if p != ours {
                return Reply::new(
                    code::PROTOCOL_NOT_SUPPORTED,
                    format!("Network protocol not supported, use ({ours})"),
                )
                .into();
            }
        }
        EpsvArg::Any => {}
    }
    match listen(ctx).await {
        Ok(addr) => Reply::new(
            code::ENTERING_EXTENDED_PASSIVE,
            format!("Entering Extended Passive Mode (|||{}|)", addr.port()),
        )
        .into(),
        Err(r) => r.into(),
    }
}

/// PORT/EPRT: remember the client's address after the RFC 2577 bounce checks.
pub(super) fn port(ctx: &mut Ctx<'_>, target: SocketAddr) -> Outcome {
    if ctx.session.epsv_all {
        return Reply::new(code::BAD_SEQUENCE, "PORT/EPRT not allowed after EPSV ALL").into();
    }
    let cfg = &ctx.server.config.active;
    if !cfg.enabled {
        return Reply::new(
            code::NOT_IMPLEMENTED,
            "Active mode is disabled; use PASV or EPSV",
        )
        .into();
    }
    if let Err(why) =
        datachan::check_active_target(target, ctx.session.peer.ip(), cfg.check_peer_ip)
    {
        tracing::warn!(%target, "refused active data target");
        return Reply::new(code::NOT_IMPLEMENTED_FOR_PARAMETER, why).into();
    }
    *ctx.data = Some(Box::new(DataEndpoint::Active(target)));
    Reply::new(
        code::COMMAND_OK,
        "PORT command successful. Consider using PASV",
    )
    .into()
}
