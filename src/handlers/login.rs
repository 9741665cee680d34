//! USER, PASS, REIN (RFC 959 §4.1.1). "The server may reply 331 to any USER": the
//! reply never tells whether a name exists, and a failed PASS is answered 530 after
//! a delay whatever was wrong (RFC 2577 §"Protecting passwords").
//!
//! A PASS waits for its client address's turn ([`crate::auth::Authenticator::turn`]);
//! within it the ban is checked (a ban covers sessions opened before it: PASS
//! from a banned address gets 530 without any password check) and a failure is
//! counted, so no more passwords are checked per address than the ban allows.

use std::time::Duration;

use super::{Ctx, Outcome};
use crate::metrics::ResultLabel;
use crate::protocol::code;
use crate::protocol::{Password, Reply};
use crate::session::LoginState;

const LOGIN_OK: ResultLabel = ResultLabel { result: "ok" };
const LOGIN_FAILED: ResultLabel = ResultLabel { result: "failed" };
const LOGIN_BANNED: ResultLabel = ResultLabel { result: "banned" };

/// The 530 for a login attempted before `AUTH TLS` when TLS is required (RFC
/// 4217 §4: the server may refuse USER on an unprotected channel).
fn tls_first() -> Outcome {
    Reply::new(code::NOT_LOGGED_IN, "TLS required: send AUTH TLS first").into()
}

/// USER: always 331, the name is only remembered.
pub(super) fn user(ctx: &mut Ctx<'_>, name: String) -> Outcome {
    if ctx.session.tls_required() && !ctx.session.tls_control {
        return tls_first();
    }
    ctx.session.login = LoginState::AwaitPass { name };
    // A new login begins: the previous one's place in its user's max_sessions goes.
    ctx.session.user_slot = None;
    ctx.session.throttles = crate::limits::Throttles::default();
    ctx.session.cwd = ftpgate_storage::VPath::root();
    Reply::new(code::NEED_PASSWORD, "Please specify the password").into()
}

/// PASS: verify, or count a failure, wait, and disconnect after too many.
pub(super) async fn pass(ctx: &mut Ctx<'_>, pw: Password) -> Outcome {
    if ctx.session.tls_required() && !ctx.session.tls_control {
        return tls_first();
    }
    let name = match &ctx.session.login {
        LoginState::AwaitPass { name } => name.clone(),
        LoginState::LoggedIn(_) => return Reply::new(code::LOGGED_IN, "Already logged in").into(),
        LoginState::AwaitUser => {
            return Reply::new(code::BAD_SEQUENCE, "Login with USER first").into()
        }
    };
    let ip = crate::datachan::canonical(ctx.session.peer.ip());
    // One turn per client as the bans and session caps count it (an IPv6 network
    // of `server.ipv6_prefix_len` bits is one client).
    let client = crate::bans::client_key(ip, ctx.server.config.server.ipv6_prefix_len);
    let turn = ctx.server.auth.turn(client).await;
    if ctx.server.limits.bans.banned(ip).is_some() {
        drop(turn);
        ctx.server.metrics.logins.get_or_create(&LOGIN_BANNED).inc();
        ctx.session.login_failures += 1;
        ctx.session.login = LoginState::AwaitUser;
        tracing::warn!(user = %name, peer = %ip, "login refused: address banned, password not checked");
        let cfg = &ctx.server.config.server;
        tokio::time::sleep(Duration::from_millis(cfg.login_failure_delay_ms)).await;
        if ctx.session.login_failures >= cfg.max_login_failures {
            return Outcome::Close(Reply::new(
                code::SERVICE_NOT_AVAILABLE,
                "Too many failed logins from your address, try again later",
            ));
        }
        return Reply::new(code::NOT_LOGGED_IN, "Login incorrect").into();
    }
    // `users.allowed_networks` is checked here, against the client address after
    // any PROXY header: USER answers 331 for every name (RFC 959 allows it), so a
    // refusal there would tell that the name exists. A refused network costs a
    // dummy hash check and ends exactly like a wrong password.
    let info = crate::auth_hook::LoginInfo {
        ip,
        tls: ctx.session.tls_control,
        session_id: ctx.session.id,
    };
    let checked = turn.login(&name, &pw.0, &info).await;
    let network_refused = matches!(checked, crate::auth::Checked::NetworkRefused);
    let verified = match checked {
        crate::auth::Checked::Ok(u) => Some(u),
        _ => None,
    };
    // Counted before the turn ends, so the next check from this address sees a ban.
    let ban = match verified {
        Some(_) => None,
        None => ctx.server.limits.bans.failure(ip),
    };
    drop(turn);
    if network_refused {
        ctx.server.metrics.user_limit_refused("network");
        tracing::warn!(user = %name, peer = %ip, "login refused: client network not in the user's allowed_networks");
    }
    match verified {
        Some(user) => {
            let Some((slot, throttles)) = ctx.server.limits.user_limits.login(&user) else {
                ctx.server.metrics.user_limit_refused("sessions");
                ctx.server.metrics.logins.get_or_create(&LOGIN_FAILED).inc();
                ctx.session.login = LoginState::AwaitUser;
                tracing::warn!(user = %user.name, max_sessions = ?user.max_sessions, "login refused: user has max_sessions sessions already");
                // RFC 959 §4.2: "421 Service not available, closing control connection".
                return Outcome::Close(Reply::new(
                    code::SERVICE_NOT_AVAILABLE,
                    "Too many sessions for this user, closing control connection",
                ));
            };
            ctx.session.user_slot = Some(slot);
            ctx.session.throttles = throttles;
            ctx.server.metrics.logins.get_or_create(&LOGIN_OK).inc();
            tracing::Span::current().record("user", user.name.as_str());
            tracing::info!(user = %user.name, "login ok");
            ctx.session.login = LoginState::LoggedIn(ctx.server.login(user));
            ctx.session.cwd = ftpgate_storage::VPath::root();
            Reply::new(code::LOGGED_IN, "Login successful").into()
        }
        None => {
            ctx.server.metrics.logins.get_or_create(&LOGIN_FAILED).inc();
            ctx.server.events.login_failed(ctx.session, &name);
            ctx.session.login_failures += 1;
            ctx.session.login = LoginState::AwaitUser;
            tracing::warn!(
                user = %name,
                peer = %ctx.session.peer.ip(),
                failures = ctx.session.login_failures,
                "login failed"
            );
            let cfg = &ctx.server.config.server;
            tokio::time::sleep(Duration::from_millis(cfg.login_failure_delay_ms)).await;
            if let Some(length) = ban {
                tracing::warn!(peer = %ip, ban_secs = length.as_secs(), "client banned after repeated failed logins");
                return Outcome::Close(Reply::new(
                    code::SERVICE_NOT_AVAILABLE,
                    "Too many failed logins from your address, try again later",
                ));
            }
            if ctx.session.login_failures >= cfg.max_login_failures {
                return Outcome::Close(Reply::new(
                    code::SERVICE_NOT_AVAILABLE,
                    "Too many failed logins, closing connection",
                ));
            }
            Reply::new(code::NOT_LOGGED_IN, "Login incorrect").into()
        }
    }
}

/// REIN: forget the login and all transfer parameters (RFC 959 §4.1.1).
pub(super) fn rein(ctx: &mut Ctx<'_>) -> Outcome {
    ctx.session.reinitialize();
    *ctx.data = None;
    Reply::new(code::SERVICE_READY, "Service ready for new user").into()
}
