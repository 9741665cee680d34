//! One control connection, as a thin shell around [`crate::protocol::core`]: it
//! reads lines, runs the commands the core hands out (login gate, dispatch,
//! replies), runs at most one data transfer beside the control channel, and
//! performs the core's actions with tokio (send, delay, cut the transfer, drop
//! the data endpoint, close). Every decision — the queue behind a transfer, ABOR
//! and STAT during it (RFC 959 §4.1.3, §5.4), the login, idle and data timers,
//! the rate limit, shutdown — is the core's and unit-tested there.

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
use crate::protocol::code;
use crate::protocol::codec::{LineEvent, LineReader};
use crate::protocol::core::{Action, ControlCore, Done, Input, Limits, Started};
use crate::protocol::{Command, Reply};
use crate::session::{Session, Totals};
use crate::state::Shared;

/// A transfer or HASH job running beside the control channel.
struct Running {
    handle: JoinHandle<TransferEnd>,
    cancel: CancellationToken,
    started: Instant,
    verb: String,
    path: String,
    /// Metrics label of the session's backend.
    backend: String,
    /// Who runs it, for the webhook event.
    origin: Arc<crate::webhooks::Origin>,
    /// A data transfer (false: a HASH job, which is not a transfer in the log and
    /// metrics).
    transfer: bool,
}

/// Serves one control connection until QUIT, EOF, timeout, error or shutdown.
/// `implicit`: the implicit-FTPS listener — TLS from the first byte.
pub fn serve(
    stream: TcpStream,
    shared: Arc<Shared>,
    session: Session,
    implicit: bool,
) -> impl std::future::Future<Output = ()> + Send {
    let span = session_span(&session);
    span.in_scope(|| tune_socket(&stream));
    // Opening and closing run once: boxed, so their futures (the implicit-TLS
    // handshake, the last transfer's end) take no room in every idle session's task.
    // Not an `async fn`: its arguments (the `Session` among them) would stay in the
    // session's future for its whole life (a generator keeps its arguments apart
    // from its other state, even once they are moved out); here they move into the
    // boxed opening and are gone once it is done.
    let open = Box::pin(Connection::open(stream, shared, session, implicit).instrument(span));
    async move {
        let Some(mut conn) = open.await else {
            return;
        };
        conn.run().await;
        let span = session_span(&conn.session);
        Box::pin(conn.close().instrument(span)).await;
    }
}

/// The `session` span (id, peer, user) of one step of a connection: its opening, a
/// command, an event, its end. A span per step rather than one for the session's
/// life (issue 13 §6): an idle session holds none (~0.4 KiB each in the log
/// subscriber's registry, which also keeps its high-water mark of slots after the
/// sessions are gone), while every event still names its session.
fn session_span(s: &Session) -> tracing::Span {
    let span = tracing::info_span!(
        "session",
        id = s.id,
        peer = %s.peer,
        user = tracing::field::Empty
    );
    if let Some(u) = s.user() {
        span.record("user", u.name.as_str());
    }
    span
}

/// What woke an idle connection (see [`Connection::wait_event`]).
enum Event {
    Input(Input),
    TransferEnded(Result<TransferEnd, tokio::task::JoinError>),
    HardStop,
    Timer,
    Draining,
}

/// Socket options of a control connection.
fn tune_socket(stream: &TcpStream) {
    // Telnet Synch (RFC 959 §4.1.3 ABOR) arrives as TCP urgent data: keep it in
    // the normal stream so the codec sees every byte in order.
    if let Err(e) = socket2::SockRef::from(stream).set_out_of_band_inline(true) {
        tracing::debug!(error = %e, "SO_OOBINLINE not set");
    }
    // Every reply goes out in one write. Without TCP_NODELAY, Nagle holds a reply
    // (226 after 150, 257 after a quick command) until the previous one is ACKed,
    // and clients delay ACKs by 40 ms: measured 40–130 ms lost per file with rclone.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
}

/// One greeted control connection: the core's decisions and the I/O that carries
/// them out (as mini-redis's `Handler`).
struct Connection {
    shared: Arc<Shared>,
    session: Session,
    reader: LineReader<control::ControlRead>,
    wr: ControlWrite,
    /// The pending data endpoint (PASV/EPSV listener or PORT/EPRT target).
    data: Option<Box<crate::datachan::DataEndpoint>>,
    /// Tells ending uploads whether the control connection is still there.
    control: ControlWatch,
    signal: crate::liveness::ControlSignal,
    core: ControlCore<Running>,
    begun: Instant,
}

impl Connection {
    /// Runs the implicit-FTPS handshake if needed and sends the 220 greeting;
    /// `None` when the connection is already unusable.
    async fn open(
        stream: TcpStream,
        shared: Arc<Shared>,
        mut session: Session,
        implicit: bool,
    ) -> Option<Self> {
        let (signal, control) = crate::liveness::channel(&stream);
        let (rd, mut wr) = if implicit {
            let tls = shared.data_plane.tls.as_ref()?;
            match Box::pin(tls.accept(stream)).await {
                Ok((s, conn)) => {
                    session.tls_control = true;
                    session.tls = Some(conn);
                    control::tls(s)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "implicit FTPS handshake failed");
                    return None;
                }
            }
        } else {
            control::plain(stream)
        };
        let cfg = &shared.config.server;
        let reader = LineReader::new(rd, cfg.max_line)
            .with_line_timeout(Duration::from_secs(cfg.command_line_timeout_secs.max(1)));
        let greeting = Reply::new(code::SERVICE_READY, cfg.greeting.clone());
        send(&mut wr, &greeting).await.ok()?;
        let limits = Limits {
            idle: Duration::from_secs(cfg.idle_timeout_secs),
            login: (cfg.login_timeout_secs > 0)
                .then(|| Duration::from_secs(cfg.login_timeout_secs)),
            data: Duration::from_secs(cfg.data_timeout_secs),
            commands_per_sec: cfg.max_commands_per_sec,
        };
        let begun = Instant::now();
        Some(Self {
            shared,
            session,
            reader,
            wr,
            data: None,
            control,
            signal,
            core: ControlCore::new(limits, begun),
            begun,
        })
    }

    /// Runs commands and performs the core's actions until one closes.
    async fn run(&mut self) {
        loop {
            let open = match self.core.next_command() {
                Some(cmd) => {
                    let span = session_span(&self.session);
                    self.run_command(cmd).instrument(span).await
                }
                None => {
                    // Waits outside any span; what follows runs in one.
                    let event = self.wait_event().await;
                    let span = session_span(&self.session);
                    let actions = span.in_scope(|| self.on_event(event));
                    if actions.is_empty() {
                        true
                    } else {
                        // Boxed: its future (a reply, an ABOR's end) would
                        // otherwise be laid out in every idle session's.
                        Box::pin(self.perform(actions)).instrument(span).await
                    }
                }
            };
            if !open {
                return;
            }
        }
    }

    /// Runs one command the core handed out and tells the core what it left
    /// behind; false: close.
    async fn run_command(&mut self, cmd: Command) -> bool {
        let step = Box::pin(run_command(
            cmd,
            &mut self.session,
            &self.shared,
            &mut self.data,
            &self.control,
            &mut self.wr,
        ))
        .await;
        let (started, open, start_tls) = match step {
            Step::Continue => (None, true, false),
            Step::Started(r) => (Some(r), true, false),
            Step::Close => (None, false, false),
            Step::StartTls => (None, true, true),
        };
        self.core.command_done(
            Instant::now(),
            Done {
                data_pending: self.data.is_some(),
                logged_in: self.session.user().is_some(),
                started: started.map(|r| Started {
                    verb: r.verb.clone(),
                    path: r.path.clone(),
                    handle: r,
                }),
            },
        );
        if start_tls {
            return Box::pin(upgrade(
                &mut self.reader,
                &mut self.wr,
                &self.shared,
                &mut self.session,
            ))
            .await;
        }
        open
    }

    /// Waits for the next thing to happen — a line, a timer, shutdown, and
    /// during a transfer its end ([`Connection::wait_during_transfer`]).
    async fn wait_event(&mut self) -> Event {
        if self.core.running() {
            // Boxed: only a transfer needs these branches, and every branch's
            // future is laid out in this one, which an idle session holds.
            return Box::pin(self.wait_during_transfer()).await;
        }
        let deadline = self.core.next_deadline();
        let shared = &self.shared;
        tokio::select! {
            line = self.reader.next_line() => Event::Input(input(line)),
            _ = until(deadline), if deadline.is_some() => Event::Timer,
            _ = shared.lifecycle.drained() => Event::Draining,
        }
    }

    /// [`Connection::wait_event`] while a transfer or HASH job runs.
    async fn wait_during_transfer(&mut self) -> Event {
        let deadline = self.core.next_deadline();
        let shared = &self.shared;
        tokio::select! {
            line = self.reader.next_line() => Event::Input(input(line)),
            res = transfer_end(self.core.transfer_mut()) => Event::TransferEnded(res),
            _ = shared.lifecycle.hard_stop.cancelled() => Event::HardStop,
            _ = until(deadline), if deadline.is_some() => Event::Timer,
        }
    }

    /// What the core makes of `event`.
    fn on_event(&mut self, event: Event) -> Vec<Action<Running>> {
        let now = Instant::now();
        match event {
            Event::Input(input) => self.core.input(now, input),
            Event::TransferEnded(res) => match self.core.transfer_ended(now) {
                Some(r) => {
                    let end = res.unwrap_or_else(|_| failed_end());
                    log_end(&self.shared, &self.session.totals, &r, &end);
                    vec![Action::Send(end.reply)]
                }
                None => Vec::new(),
            },
            Event::HardStop => self.core.hard_stop(),
            Event::Timer => self.core.timer(now),
            Event::Draining => self.core.draining(),
        }
    }

    /// Carries out the core's actions in order; false: close.
    async fn perform(&mut self, actions: Vec<Action<Running>>) -> bool {
        for action in actions {
            match action {
                Action::Send(r) => {
                    if send(&mut self.wr, &r).await.is_err() {
                        return false;
                    }
                }
                Action::Delay(d) => tokio::time::sleep(d).await,
                Action::Abort(r) => {
                    // RFC 959 §4.1.3: the transfer's own reply (426 when cut short).
                    r.cancel.cancel();
                    self.data = None;
                    let end = finish(&self.shared, &self.session.totals, r).await;
                    if send(&mut self.wr, &end.reply).await.is_err() {
                        return false;
                    }
                }
                Action::Count(verb, code) => self.shared.metrics.command(verb, code),
                Action::QuitSeen => self.signal.quit(),
                Action::DropData => self.data = None,
                Action::Close => return false,
            }
        }
        true
    }

    /// Ends the session: a transfer still running finishes (after QUIT) or is
    /// stopped (client gone), then the `session ended` event.
    async fn close(mut self) {
        // Uploads ending now are not committed unless QUIT came first (`liveness`).
        self.signal.closed();
        if let Some(r) = self.core.take_running() {
            if self.core.quit_seen() {
                // RFC 959 §4.1.1 QUIT: "If file transfer is in progress, the
                // connection will remain open for result response and the server
                // will then close it" — unless the shutdown grace period ends first.
                let (cancel, stop) = (r.cancel.clone(), self.shared.lifecycle.hard_stop.clone());
                let done = finish(&self.shared, &self.session.totals, r);
                tokio::pin!(done);
                let end = tokio::select! {
                    end = &mut done => end,
                    _ = stop.cancelled() => {
                        cancel.cancel();
                        done.await
                    }
                };
                if send(&mut self.wr, &end.reply).await.is_ok() {
                    let bye = Reply::new(code::CLOSING_CONTROL, "Goodbye");
                    let _ = send(&mut self.wr, &bye).await;
                }
            } else {
                // The control connection is gone: stop the transfer (aborting any
                // upload).
                r.cancel.cancel();
                let end = finish(&self.shared, &self.session.totals, r).await;
                tracing::info!(
                    code = end.reply.code,
                    "transfer ended with the control connection"
                );
            }
        }
        let _ = self.wr.shutdown().await;
        let (bytes_in, bytes_out, files_in, files_out) = self.session.totals.get();
        let commands = self.core.commands_seen();
        macro_rules! session_ended {
            ($level:ident) => {
                tracing::$level!(
                    duration_ms = self.begun.elapsed().as_millis() as u64,
                    commands,
                    bytes_in,
                    bytes_out,
                    files_in,
                    files_out,
                    "session ended"
                )
            };
        }
        // A load balancer's TCP health check sends no command: debug, like its close.
        if commands == 0 {
            session_ended!(debug);
        } else {
            session_ended!(info);
        }
    }
}

/// What a line read means to the core.
fn input(line: std::io::Result<Option<LineEvent>>) -> Input {
    match line {
        Ok(Some(LineEvent::Line(l))) => Input::Line(l),
        Ok(Some(LineEvent::TooLong)) => Input::TooLong,
        Ok(Some(LineEvent::Timeout)) => Input::LineTimeout,
        Ok(None) | Err(_) => Input::Closed,
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
    let Some(tls) = shared.data_plane.tls.as_ref() else {
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
    data: &mut Option<Box<crate::datachan::DataEndpoint>>,
    control: &ControlWatch,
    wr: &mut ControlWrite,
) -> Step {
    let verb = cmd.verb().to_owned();
    let metrics = &shared.metrics;
    if session.user().is_none() && !Session::allowed_before_login(&cmd) {
        metrics.command(&verb, code::NOT_LOGGED_IN);
        return reply_or_close(
            wr,
            &Reply::new(code::NOT_LOGGED_IN, "Please log in with USER and PASS"),
        )
        .await;
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
    let backend = session.backend_label().to_owned();
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

/// The end of a transfer task that panicked or was cancelled by the runtime.
fn failed_end() -> TransferEnd {
    TransferEnd {
        reply: Reply::new(code::LOCAL_ERROR, "Transfer failed"),
        bytes: 0,
        sha256: None,
    }
}

/// The running transfer's end; pending forever without one.
async fn transfer_end(r: Option<&mut Running>) -> Result<TransferEnd, tokio::task::JoinError> {
    match r {
        Some(r) => (&mut r.handle).await,
        None => std::future::pending().await,
    }
}

/// Awaits a transfer task and logs its end.
async fn finish(shared: &Shared, totals: &Totals, mut r: Running) -> TransferEnd {
    let end = (&mut r.handle).await.unwrap_or_else(|_| failed_end());
    log_end(shared, totals, &r, &end);
    end
}

/// Logs the end of a transfer ([`log_transfer`]) or of a HASH job (its reply code
/// in the command metrics and a debug event).
fn log_end(shared: &Shared, totals: &Totals, r: &Running, end: &TransferEnd) {
    if r.transfer {
        log_transfer(shared, totals, r, end);
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
/// `totals`: the session's, for the `session ended` event.
fn log_transfer(shared: &Shared, totals: &Totals, r: &Running, end: &TransferEnd) {
    let elapsed = r.started.elapsed();
    let ms = elapsed.as_millis() as u64;
    let ok = end.reply.code == code::CLOSING_DATA;
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
    totals.record(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13 §6: every idle session holds `serve`'s future for its life (boxed
    /// in its task), so what only a command, a transfer or the opening needs is
    /// boxed while it runs. 1,176 bytes when written (2,656 before); a change that
    /// lays a large future out inline again fails here.
    #[tokio::test]
    async fn an_idle_sessions_future_stays_small() {
        let shared = Shared::for_tests().await;
        let (s, _client) = crate::testing::tcp_pair().await;
        let (peer, addr) = (s.peer_addr().unwrap(), s.local_addr().unwrap());
        let f = serve(s, shared, Session::new(1, peer, addr), false);
        let size = std::mem::size_of_val(&f);
        assert!(size <= 1_300, "serve's future is {size} bytes");
    }
}
