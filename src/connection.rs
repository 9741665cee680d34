//! One control connection: read lines, gate on login, dispatch, write replies, and
//! run at most one data transfer beside the control channel.
//!
//! While a transfer runs, the control channel is still read: ABOR cancels it (426
//! for the transfer, then 226 for ABOR — RFC 959 §4.1.3), STAT answers at once, and
//! every other command waits in a short queue until the transfer's final reply has
//! been sent, as RFC 959 §5.4 sequencing requires. A HASH that reads a file runs
//! the same way (one transfer or digest at a time per session).
//!
//! Limits no command can extend: a session that has not logged in is closed after
//! `server.login_timeout_secs` whatever it sends, and a pending passive listener
//! (or PORT target) unused for `server.data_timeout_secs` is dropped, freeing its
//! port and its `passive.max_pending` place.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::control::{self, ControlWrite};
use crate::handlers::{self, Ctx, Outcome, TransferEnd};
use crate::liveness::ControlWatch;
use crate::protocol::codec::{LineEvent, LineReader};
use crate::protocol::{command, Command, Reply};
use crate::server::Shared;
use crate::session::Session;

/// Commands that may wait for a running transfer to end.
const MAX_QUEUED: usize = 32;

struct Running {
    handle: JoinHandle<TransferEnd>,
    cancel: CancellationToken,
    started: Instant,
    verb: String,
    path: String,
    /// Metrics label of the session's backend.
    backend: String,
    /// The session's totals, for the `session ended` event.
    totals: Arc<crate::session::Totals>,
    /// Who runs it, for the webhook event.
    origin: Arc<crate::webhooks::Origin>,
    /// A data transfer (false: a HASH job, which is not a transfer in the log and
    /// metrics).
    transfer: bool,
}

/// Per-session command rate limit: a token bucket holding `2 × rate` tokens,
/// refilled at `rate` per second; an empty bucket delays the next command.
struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_sec: u32) -> Option<Self> {
        (per_sec > 0).then(|| Self {
            rate: f64::from(per_sec),
            tokens: f64::from(per_sec) * 2.0,
            last: Instant::now(),
        })
    }

    /// How long to wait before the next command may run.
    fn take(&mut self) -> Duration {
        let now = Instant::now();
        let burst = self.rate * 2.0;
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(burst);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Serves one control connection until QUIT, EOF, timeout, error or shutdown.
/// `implicit`: the implicit-FTPS listener — TLS from the first byte.
pub async fn serve(stream: TcpStream, shared: Arc<Shared>, mut session: Session, implicit: bool) {
    // Telnet Synch (RFC 959 §4.1.3 ABOR) arrives as TCP urgent data: keep it in
    // the normal stream so the codec sees every byte in order.
    if let Err(e) = socket2::SockRef::from(&stream).set_out_of_band_inline(true) {
        tracing::debug!(error = %e, "SO_OOBINLINE not set");
    }
    // Every reply goes out in one write. Without TCP_NODELAY, Nagle holds a reply
    // (226 after 150, 257 after a quick command) until the previous one is ACKed,
    // and clients delay ACKs by 40 ms: measured 40–130 ms lost per file with rclone.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    let cfg = &shared.config.server;
    let (signal, control) = crate::liveness::channel(&stream);
    let (rd, mut wr) = if implicit {
        let Some(tls) = shared.tls.as_ref() else {
            return;
        };
        match Box::pin(tls.accept(stream)).await {
            Ok((s, conn)) => {
                session.tls_control = true;
                session.tls = Some(conn);
                control::tls(s)
            }
            Err(e) => {
                tracing::debug!(error = %e, "implicit FTPS handshake failed");
                return;
            }
        }
    } else {
        control::plain(stream)
    };
    let mut reader = LineReader::new(rd, cfg.max_line)
        .with_line_timeout(Duration::from_secs(cfg.command_line_timeout_secs.max(1)));
    let mut rate = RateLimit::new(cfg.max_commands_per_sec);
    if send(
        &mut wr,
        &Reply::new(220, shared.config.server.greeting.clone()),
    )
    .await
    .is_err()
    {
        return;
    }
    let idle = Duration::from_secs(shared.config.server.idle_timeout_secs);
    let mut data = None;
    let mut running: Option<Running> = None;
    let mut queued: VecDeque<Command> = VecDeque::new();
    let mut commands_seen = 0u64;
    let begun = Instant::now();
    let totals = session.totals.clone();
    // A pending data endpoint expires `data_timeout_secs` after PASV/EPSV/PORT/EPRT
    // set it up, whatever else the client sends meanwhile.
    let data_timeout = Duration::from_secs(cfg.data_timeout_secs);
    let mut data_expires: Option<Instant> = None;
    // Until a login succeeds (again after REIN), `login_timeout_secs` from the
    // greeting; NOOP and failed logins do not extend it.
    let login_limit =
        (cfg.login_timeout_secs > 0).then(|| Duration::from_secs(cfg.login_timeout_secs));
    let mut login_deadline = login_limit.map(|d| Instant::now() + d);
    // QUIT was read while a transfer ran (RFC 959 §4.1.1: it may finish).
    let mut quit_seen = false;

    loop {
        if running.is_none() {
            if let Some(cmd) = queued.pop_front() {
                let sets_data = matches!(
                    cmd,
                    Command::Pasv | Command::Epsv(_) | Command::Port(_) | Command::Eprt(_)
                );
                let step = Box::pin(run_command(
                    cmd,
                    &mut session,
                    &shared,
                    &mut data,
                    &control,
                    &mut wr,
                ))
                .await;
                if data.is_none() {
                    data_expires = None;
                } else if sets_data {
                    data_expires = Some(Instant::now() + data_timeout);
                }
                if session.user().is_some() {
                    login_deadline = None;
                } else if login_deadline.is_none() {
                    login_deadline = login_limit.map(|d| Instant::now() + d);
                }
                match step {
                    Step::Continue => {}
                    Step::Started(r) => running = Some(r),
                    Step::Close => break,
                    Step::StartTls => {
                        if !Box::pin(upgrade(&mut reader, &mut wr, &shared, &mut session)).await {
                            break;
                        }
                    }
                }
                continue;
            }
        }
        tokio::select! {
            line = reader.next_line() => {
                let cmd = match line {
                    Ok(Some(LineEvent::Line(l))) if commands_seen == 0 && command::looks_like_http(&l) => {
                        // Cross-protocol request (a browser or an HTTP tool pointed
                        // at the FTP port): answer once and close.
                        tracing::info!("HTTP request on the FTP port, closing");
                        let _ = send(&mut wr, &Reply::new(500, "This is an FTP server, not HTTP; closing")).await;
                        break;
                    }
                    Ok(Some(LineEvent::Line(l))) => command::parse(&l),
                    Ok(Some(LineEvent::TooLong)) => {
                        tracing::info!("command line too long");
                        if send(&mut wr, &Reply::new(500, "Command line too long")).await.is_err() { break; }
                        continue;
                    }
                    Ok(Some(LineEvent::Timeout)) => {
                        tracing::info!("unfinished command line timed out");
                        let _ = send(&mut wr, &Reply::new(421, "Command line not completed in time, closing")).await;
                        break;
                    }
                    Ok(None) | Err(_) => {
                        if commands_seen == 0 {
                            // Load balancer TCP health checks connect and close: not an error.
                            tracing::debug!("connection closed before any command");
                        } else {
                            tracing::info!("client closed the control connection");
                        }
                        break;
                    }
                };
                commands_seen += 1;
                tracing::debug!(verb = cmd.verb(), "command");
                if let Some(rl) = rate.as_mut() {
                    let wait = rl.take();
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                if let Some(r) = running.as_ref() {
                    match cmd {
                        Command::Abor => {
                            // RFC 959 §4.1.3: the transfer's own reply (426 when cut
                            // short), then 226 for the ABOR itself.
                            let r = running.take().expect("checked above");
                            r.cancel.cancel();
                            data = None;
                            let end = finish(&shared, r).await;
                            if send(&mut wr, &end.reply).await.is_err() { break; }
                            shared.metrics.command("ABOR", 226);
                            if send(&mut wr, &Reply::new(226, "ABOR successful")).await.is_err() { break; }
                        }
                        Command::Stat(None) => {
                            let secs = r.started.elapsed().as_secs();
                            let reply = Reply::multi(211, "ftpgate status:", vec![
                                format!(" {} {} in progress for {secs} s", r.verb, r.path),
                            ], "End of status");
                            if send(&mut wr, &reply).await.is_err() { break; }
                        }
                        other => {
                            if matches!(other, Command::Quit) {
                                quit_seen = true;
                                signal.quit();
                            }
                            if queued.len() >= MAX_QUEUED {
                                if send(&mut wr, &Reply::new(421, "Too many commands during a transfer")).await.is_err() { break; }
                                break;
                            }
                            queued.push_back(other);
                        }
                    }
                    continue;
                }
                // No transfer runs, so the queue is empty: the top of the loop runs
                // this command now (one place runs commands).
                queued.push_back(cmd);
            }
            // The async block is only polled when the guard holds.
            res = async { (&mut running.as_mut().expect("guarded by is_some").handle).await }, if running.is_some() => {
                let r = running.take().expect("guarded by is_some");
                let end = res.unwrap_or_else(|_| TransferEnd { reply: Reply::new(451, "Transfer failed"), bytes: 0, sha256: None });
                log_end(&shared, &r, &end);
                if send(&mut wr, &end.reply).await.is_err() { break; }
            }
            _ = shared.hard_stop.cancelled(), if running.is_some() => {
                // The shutdown grace period is over: cut the transfer (an upload is
                // aborted, never committed half), then close.
                let r = running.take().expect("guarded by is_some");
                r.cancel.cancel();
                let end = finish(&shared, r).await;
                let _ = send(&mut wr, &end.reply).await;
                let _ = send(&mut wr, &Reply::new(421, "Server shutting down")).await;
                break;
            }
            _ = until(data_expires), if data.is_some() && data_expires.is_some() => {
                // Closes the listener: its port and max_pending place are free again.
                tracing::info!("pending data connection unused for server.data_timeout_secs, closed");
                data = None;
                data_expires = None;
            }
            _ = until(login_deadline), if login_deadline.is_some() && session.user().is_none() => {
                tracing::info!("no login within server.login_timeout_secs, closing");
                let _ = send(&mut wr, &Reply::new(421, "Login timeout, closing control connection")).await;
                break;
            }
            _ = tokio::time::sleep(idle), if running.is_none() => {
                tracing::info!("idle timeout");
                let _ = send(&mut wr, &Reply::new(421, "Idle timeout, closing control connection")).await;
                break;
            }
            _ = crate::server::drained(&shared), if running.is_none() => {
                let _ = send(&mut wr, &Reply::new(421, "Server shutting down")).await;
                break;
            }
        }
    }
    // Uploads ending now are not committed unless QUIT came first (`liveness`).
    signal.closed();
    if let Some(r) = running.take() {
        if quit_seen {
            // RFC 959 §4.1.1 QUIT: "If file transfer is in progress, the connection
            // will remain open for result response and the server will then close
            // it" — unless the shutdown grace period ends first.
            let (cancel, stop) = (r.cancel.clone(), shared.hard_stop.clone());
            let done = finish(&shared, r);
            tokio::pin!(done);
            let end = tokio::select! {
                end = &mut done => end,
                _ = stop.cancelled() => {
                    cancel.cancel();
                    done.await
                }
            };
            if send(&mut wr, &end.reply).await.is_ok() {
                let _ = send(&mut wr, &Reply::new(221, "Goodbye")).await;
            }
        } else {
            // The control connection is gone: stop the transfer (aborting any upload).
            r.cancel.cancel();
            let end = finish(&shared, r).await;
            tracing::info!(
                code = end.reply.code,
                "transfer ended with the control connection"
            );
        }
    }
    let _ = wr.shutdown().await;
    let (bytes_in, bytes_out, files_in, files_out) = totals.get();
    macro_rules! session_ended {
        ($level:ident) => {
            tracing::$level!(
                duration_ms = begun.elapsed().as_millis() as u64,
                commands = commands_seen,
                bytes_in,
                bytes_out,
                files_in,
                files_out,
                "session ended"
            )
        };
    }
    // A load balancer's TCP health check sends no command: debug, like its close.
    if commands_seen == 0 {
        session_ended!(debug);
    } else {
        session_ended!(info);
    }
}

/// Sleeps until `deadline`; pending forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

enum Step {
    Continue,
    Started(Running),
    Close,
    /// 234 sent: run the TLS handshake.
    StartTls,
}

/// The TLS handshake after `AUTH TLS`; false: the connection is unusable.
async fn upgrade(
    reader: &mut LineReader<control::ControlRead>,
    wr: &mut ControlWrite,
    shared: &Shared,
    session: &mut Session,
) -> bool {
    let Some(tls) = shared.tls.as_ref() else {
        return false;
    };
    match control::start_tls(reader, wr, tls).await {
        Ok(conn) => {
            session.tls_control = true;
            session.tls = Some(conn);
            tracing::debug!("control channel now TLS");
            true
        }
        Err(e) => {
            tracing::info!(error = %e, "TLS handshake on the control channel failed");
            false
        }
    }
}

async fn run_command(
    cmd: Command,
    session: &mut Session,
    shared: &Arc<Shared>,
    data: &mut Option<crate::datachan::DataEndpoint>,
    control: &ControlWatch,
    wr: &mut ControlWrite,
) -> Step {
    let verb = cmd.verb().to_owned();
    let metrics = &shared.metrics;
    if session.user().is_none() && !Session::allowed_before_login(&cmd) {
        metrics.command(&verb, 530);
        return reply_or_close(wr, &Reply::new(530, "Please log in with USER and PASS")).await;
    }
    session.before_command(&cmd);
    let mut ctx = Ctx {
        session,
        server: shared,
        data,
        control,
    };
    // Boxed: the handlers' futures (transfers, listings) are large, and inline
    // they would make every idle session's task as big as the largest of them.
    let outcome = Box::pin(handlers::dispatch(cmd, &mut ctx)).await;
    let backend = shared
        .backend_label(session.user().map(|u| u.as_ref()))
        .to_owned();
    match outcome {
        Outcome::Reply(r) => {
            metrics.command(&verb, r.code);
            reply_or_close(wr, &r).await
        }
        Outcome::Close(r) => {
            metrics.command(&verb, r.code);
            let _ = send(wr, &r).await;
            Step::Close
        }
        Outcome::StartTls(r) => {
            metrics.command(&verb, r.code);
            if send(wr, &r).await.is_err() {
                Step::Close
            } else {
                Step::StartTls
            }
        }
        Outcome::Transfer(t) => {
            if send(wr, &t.preliminary).await.is_err() {
                t.cancel.cancel();
                let _ = tokio::spawn(t.job.instrument(tracing::Span::current())).await;
                return Step::Close;
            }
            let handle = tokio::spawn(t.job.instrument(tracing::Span::current()));
            Step::Started(Running {
                handle,
                cancel: t.cancel,
                started: Instant::now(),
                verb,
                path: t.path,
                backend,
                totals: session.totals.clone(),
                origin: Arc::new(crate::webhooks::Origin::of(session)),
                transfer: true,
            })
        }
        Outcome::Job(j) => {
            let handle = tokio::spawn(j.job.instrument(tracing::Span::current()));
            Step::Started(Running {
                handle,
                cancel: j.cancel,
                started: Instant::now(),
                verb,
                path: j.path,
                backend,
                transfer: false,
                totals: session.totals.clone(),
                origin: Arc::new(crate::webhooks::Origin::of(session)),
            })
        }
    }
}

async fn reply_or_close(wr: &mut ControlWrite, r: &Reply) -> Step {
    if send(wr, r).await.is_err() {
        Step::Close
    } else {
        Step::Continue
    }
}

/// Awaits a transfer task and logs its end.
async fn finish(shared: &Shared, mut r: Running) -> TransferEnd {
    let end = (&mut r.handle).await.unwrap_or_else(|_| TransferEnd {
        reply: Reply::new(451, "Transfer failed"),
        bytes: 0,
        sha256: None,
    });
    log_end(shared, &r, &end);
    end
}

/// Logs the end of a transfer ([`log_transfer`]) or of a HASH job (its reply code
/// in the command metrics and a debug event).
fn log_end(shared: &Shared, r: &Running, end: &TransferEnd) {
    if r.transfer {
        log_transfer(shared, r, end);
    } else {
        shared.metrics.command(&r.verb, end.reply.code);
        tracing::debug!(
            verb = r.verb.as_str(),
            path = r.path.as_str(),
            bytes = end.bytes,
            code = end.reply.code,
            "digest job ended"
        );
    }
}

/// One log event and the metrics per transfer: path, bytes, duration, result.
fn log_transfer(shared: &Shared, r: &Running, end: &TransferEnd) {
    let elapsed = r.started.elapsed();
    let ms = elapsed.as_millis() as u64;
    let ok = end.reply.code == 226;
    let result = if ok { "ok" } else { "failed" };
    let verb = r.verb.as_str();
    let direction = match verb {
        "STOR" | "APPE" | "STOU" => "in",
        _ => "out",
    };
    shared.metrics.command(verb, end.reply.code);
    shared
        .metrics
        .transfer(direction, &r.backend, ok, end.bytes, elapsed.as_secs_f64());
    r.totals.record(
        direction == "in",
        matches!(verb, "RETR" | "STOR" | "APPE" | "STOU"),
        ok,
        end.bytes,
    );
    // Every transfer, also one cut by ABOR or by the client closing the data
    // connection early (rclone mount's ranged reads), is one info event.
    tracing::info!(
        verb,
        path = r.path.as_str(),
        bytes = end.bytes,
        duration_ms = ms,
        code = end.reply.code,
        result,
        sha256 = end.sha256.as_deref(),
        "transfer"
    );
    let (code, sha) = (end.reply.code, end.sha256.as_deref());
    shared
        .events
        .transfer(&r.origin, verb, &r.path, code, end.bytes, sha, elapsed);
}

async fn send(wr: &mut ControlWrite, r: &Reply) -> std::io::Result<()> {
    tracing::debug!(code = r.code, "reply");
    wr.write_all(r.to_wire().as_bytes()).await?;
    // TLS buffers records until flushed.
    wr.flush().await
}
