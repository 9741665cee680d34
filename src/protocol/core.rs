//! The control connection's decisions as a synchronous state machine: no sockets,
//! no clock of its own (every call takes `now`), no tasks. [`crate::connection`]
//! feeds it what happened (a line, a command's outcome, a transfer's end, a timer,
//! shutdown) and performs the [`Action`]s it returns, in order.
//!
//! The rules it keeps:
//! - One command runs at a time, and none while a transfer (or HASH job) runs:
//!   commands read meanwhile wait in a queue of [`MAX_QUEUED`] (RFC 959 §5.4
//!   sequencing: the transfer's final reply comes before any other reply). A full
//!   queue closes with 421.
//! - During a transfer ABOR cuts it: its own reply (426 when cut short), then 226
//!   for ABOR (RFC 959 §4.1.3); `STAT` without argument answers at once with the
//!   transfer's progress (RFC 959 §4.1.3 STAT); QUIT is queued and lets it finish
//!   (RFC 959 §4.1.1).
//! - Timers no command extends: the login deadline (`server.login_timeout_secs`,
//!   from the greeting or REIN), a pending data endpoint's expiry
//!   (`server.data_timeout_secs` from PASV/EPSV/PORT/EPRT); and the idle timeout
//!   (`server.idle_timeout_secs` since the last event, never during a transfer).
//! - `server.max_commands_per_sec`: a token bucket of twice the rate; an empty
//!   bucket delays the next command.
//! - An HTTP request as the first line is answered once and closed; a line over
//!   the limit gets 500; an unfinished line that times out gets 421 and closes.
//!
//! Generic over `T`, the running transfer's handle, which the core holds so that
//! exactly one place owns it: [`Action::Abort`] hands it out to be cut.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::command::{self, Command};
use super::Reply;
use crate::protocol::code;

/// Commands that may wait for a running transfer to end.
pub const MAX_QUEUED: usize = 32;

/// What the connection read from the control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// One complete command line (Telnet commands removed, no CR/LF).
    Line(String),
    /// A line over `server.max_line` was discarded.
    TooLong,
    /// An unfinished line did not complete within `command_line_timeout_secs`.
    LineTimeout,
    /// EOF or a read error: the client is gone.
    Closed,
}

/// What the connection must do, in the order given.
#[derive(Debug, PartialEq)]
pub enum Action<T> {
    /// Send this reply; if sending fails, close.
    Send(Reply),
    /// Wait this long before going on (the command rate limit).
    Delay(Duration),
    /// Cut this transfer: cancel it, forget the pending data endpoint, wait for
    /// it to end and send its own reply (426 when cut short).
    Abort(T),
    /// Count `verb` answered with `code` in the command metrics.
    Count(&'static str, u16),
    /// QUIT arrived during a transfer: uploads ending now are the client's
    /// intent (see `liveness`).
    QuitSeen,
    /// The pending data endpoint expired: drop it (its port is free again).
    DropData,
    /// Close the control connection.
    Close,
}

/// What a finished command left behind, reported by the connection.
#[derive(Debug)]
pub struct Done<T> {
    /// A data endpoint (PASV/EPSV listener or PORT/EPRT target) is pending.
    pub data_pending: bool,
    /// The session is logged in.
    pub logged_in: bool,
    /// The command started a transfer or a HASH job.
    pub started: Option<Started<T>>,
}

/// A transfer (or HASH job) that began, for STAT and ABOR.
#[derive(Debug)]
pub struct Started<T> {
    /// Its verb, e.g. `RETR`.
    pub verb: String,
    /// Its path as the client named it.
    pub path: String,
    /// The connection's handle of it.
    pub handle: T,
}

/// Limits of one control connection, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `idle_timeout_secs`.
    pub idle: Duration,
    /// `login_timeout_secs`; `None` when 0 (off).
    pub login: Option<Duration>,
    /// `data_timeout_secs`.
    pub data: Duration,
    /// `max_commands_per_sec`; 0 = unlimited.
    pub commands_per_sec: u32,
}

struct Running<T> {
    started: Instant,
    verb: String,
    path: String,
    handle: T,
}

/// Per-session command rate limit: a token bucket holding `2 × rate` tokens,
/// refilled at `rate` per second.
#[derive(Debug)]
struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_sec: u32, now: Instant) -> Option<Self> {
        (per_sec > 0).then(|| Self {
            rate: f64::from(per_sec),
            tokens: f64::from(per_sec) * 2.0,
            last: now,
        })
    }

    /// How long to wait before the next command may run.
    fn take(&mut self, now: Instant) -> Duration {
        let burst = self.rate * 2.0;
        self.tokens = (self.tokens
            + now.saturating_duration_since(self.last).as_secs_f64() * self.rate)
            .min(burst);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// The control connection's state: queue, running transfer, timers, counters.
pub struct ControlCore<T> {
    limits: Limits,
    rate: Option<RateLimit>,
    queued: VecDeque<Command>,
    /// Boxed: only a transfer needs its room, and every idle session holds a core.
    running: Option<Box<Running<T>>>,
    commands_seen: u64,
    /// The command handed out by [`ControlCore::next_command`] sets up a data
    /// endpoint.
    sets_data: bool,
    data_expires: Option<Instant>,
    login_deadline: Option<Instant>,
    last_event: Instant,
    quit_seen: bool,
}

impl<T> ControlCore<T> {
    /// A connection greeted at `now`, not logged in.
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            rate: RateLimit::new(limits.commands_per_sec, now),
            queued: VecDeque::new(),
            running: None,
            commands_seen: 0,
            sets_data: false,
            data_expires: None,
            login_deadline: limits.login.map(|d| now + d),
            last_event: now,
            quit_seen: false,
        }
    }

    /// Commands read so far.
    pub fn commands_seen(&self) -> u64 {
        self.commands_seen
    }

    /// True while a transfer or HASH job runs.
    pub fn running(&self) -> bool {
        self.running.is_some()
    }

    /// The running transfer's handle, to await its end.
    pub fn transfer_mut(&mut self) -> Option<&mut T> {
        self.running.as_mut().map(|r| &mut r.handle)
    }

    /// QUIT was read while a transfer ran.
    pub fn quit_seen(&self) -> bool {
        self.quit_seen
    }

    /// The command to run now: the oldest queued one, when no transfer runs.
    pub fn next_command(&mut self) -> Option<Command> {
        if self.running.is_some() {
            return None;
        }
        let cmd = self.queued.pop_front()?;
        if self.queued.is_empty() {
            // Usually the queue holds one command for a moment: let go of its
            // room rather than keep it for the session's life.
            self.queued = VecDeque::new();
        }
        self.sets_data = matches!(
            cmd,
            Command::Pasv | Command::Epsv(_) | Command::Port(_) | Command::Eprt(_)
        );
        Some(cmd)
    }

    /// The command from [`ControlCore::next_command`] finished at `now`.
    pub fn command_done(&mut self, now: Instant, done: Done<T>) {
        self.last_event = now;
        if !done.data_pending {
            self.data_expires = None;
        } else if self.sets_data {
            self.data_expires = Some(now + self.limits.data);
        }
        if done.logged_in {
            self.login_deadline = None;
        } else if self.login_deadline.is_none() {
            // REIN: the login clock starts again.
            self.login_deadline = self.limits.login.map(|d| now + d);
        }
        if let Some(s) = done.started {
            self.running = Some(Box::new(Running {
                started: now,
                verb: s.verb,
                path: s.path,
                handle: s.handle,
            }));
        }
    }

    /// Something read from the control channel at `now`.
    pub fn input(&mut self, now: Instant, input: Input) -> Vec<Action<T>> {
        self.last_event = now;
        let line = match input {
            Input::Line(l) => l,
            Input::TooLong => {
                tracing::info!("command line too long");
                return vec![Action::Send(Reply::new(
                    code::SYNTAX_ERROR,
                    "Command line too long",
                ))];
            }
            Input::LineTimeout => {
                tracing::info!("unfinished command line timed out");
                return vec![
                    Action::Send(Reply::new(
                        code::SERVICE_NOT_AVAILABLE,
                        "Command line not completed in time, closing",
                    )),
                    Action::Close,
                ];
            }
            Input::Closed => {
                if self.commands_seen == 0 {
                    // Load balancer TCP health checks connect and close: not an error.
                    tracing::debug!("connection closed before any command");
                } else {
                    tracing::info!("client closed the control connection");
                }
                return vec![Action::Close];
            }
        };
        if self.commands_seen == 0 && command::looks_like_http(&line) {
            // Cross-protocol request (a browser or an HTTP tool pointed at the FTP
            // port): answer once and close.
            tracing::info!("HTTP request on the FTP port, closing");
            return vec![
                Action::Send(Reply::new(
                    code::SYNTAX_ERROR,
                    "This is an FTP server, not HTTP; closing",
                )),
                Action::Close,
            ];
        }
        let cmd = command::parse(&line);
        self.commands_seen += 1;
        tracing::debug!(verb = cmd.verb(), "command");
        let mut actions = Vec::new();
        if let Some(rl) = self.rate.as_mut() {
            let wait = rl.take(now);
            if !wait.is_zero() {
                actions.push(Action::Delay(wait));
            }
        }
        let Some(r) = self.running.as_ref() else {
            // No transfer runs, so the queue is empty: `next_command` hands this
            // one out next (one place runs commands).
            self.queued.push_back(cmd);
            return actions;
        };
        match cmd {
            Command::Abor => {
                if let Some(r) = self.running.take() {
                    self.data_expires = None;
                    actions.push(Action::Abort(r.handle));
                    actions.push(Action::Count("ABOR", code::CLOSING_DATA));
                    actions.push(Action::Send(Reply::new(
                        code::CLOSING_DATA,
                        "ABOR successful",
                    )));
                }
            }
            Command::Stat(None) => {
                let secs = now.saturating_duration_since(r.started).as_secs();
                actions.push(Action::Send(Reply::multi(
                    code::SYSTEM_STATUS,
                    "ftpgate status:",
                    vec![format!(" {} {} in progress for {secs} s", r.verb, r.path)],
                    "End of status",
                )));
            }
            other => {
                if matches!(other, Command::Quit) && !self.quit_seen {
                    self.quit_seen = true;
                    actions.push(Action::QuitSeen);
                }
                if self.queued.len() >= MAX_QUEUED {
                    actions.push(Action::Send(Reply::new(
                        code::SERVICE_NOT_AVAILABLE,
                        "Too many commands during a transfer",
                    )));
                    actions.push(Action::Close);
                } else {
                    self.queued.push_back(other);
                }
            }
        }
        actions
    }

    /// The running transfer ended by itself at `now` (its reply is the
    /// connection's to send); returns its handle.
    pub fn transfer_ended(&mut self, now: Instant) -> Option<T> {
        self.last_event = now;
        self.running.take().map(|r| r.handle)
    }

    /// When [`ControlCore::timer`] must be called next, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let idle = self
            .running
            .is_none()
            .then(|| self.last_event + self.limits.idle);
        [self.login_deadline, self.data_expires, idle]
            .into_iter()
            .flatten()
            .min()
    }

    /// Time passed: `now` is at or after [`ControlCore::next_deadline`].
    pub fn timer(&mut self, now: Instant) -> Vec<Action<T>> {
        if self.login_deadline.is_some_and(|d| now >= d) {
            tracing::info!("no login within server.login_timeout_secs, closing");
            return vec![
                Action::Send(Reply::new(
                    code::SERVICE_NOT_AVAILABLE,
                    "Login timeout, closing control connection",
                )),
                Action::Close,
            ];
        }
        if self.running.is_none() && now >= self.last_event + self.limits.idle {
            tracing::info!("idle timeout");
            return vec![
                Action::Send(Reply::new(
                    code::SERVICE_NOT_AVAILABLE,
                    "Idle timeout, closing control connection",
                )),
                Action::Close,
            ];
        }
        if self.data_expires.is_some_and(|d| now >= d) {
            // Closes the listener: its port and max_pending place are free again.
            tracing::info!("pending data connection unused for server.data_timeout_secs, closed");
            self.data_expires = None;
            return vec![Action::DropData];
        }
        Vec::new()
    }

    /// The shutdown grace period is over: cut a running transfer (an upload is
    /// aborted, never committed half) and close.
    pub fn hard_stop(&mut self) -> Vec<Action<T>> {
        let mut actions = Vec::new();
        if let Some(r) = self.running.take() {
            actions.push(Action::Abort(r.handle));
        }
        actions.push(Action::Send(Reply::new(
            code::SERVICE_NOT_AVAILABLE,
            "Server shutting down",
        )));
        actions.push(Action::Close);
        actions
    }

    /// Graceful shutdown began: an idle session closes now; one with a transfer
    /// lets it finish (until [`ControlCore::hard_stop`]).
    pub fn draining(&mut self) -> Vec<Action<T>> {
        if self.running.is_some() {
            return Vec::new();
        }
        vec![
            Action::Send(Reply::new(
                code::SERVICE_NOT_AVAILABLE,
                "Server shutting down",
            )),
            Action::Close,
        ]
    }

    /// The connection is ending: the transfer still running, if any.
    pub fn take_running(&mut self) -> Option<T> {
        self.running.take().map(|r| r.handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn limits() -> Limits {
        Limits {
            idle: 300 * SEC,
            login: Some(30 * SEC),
            data: 60 * SEC,
            commands_per_sec: 0,
        }
    }

    fn codes<T>(a: &[Action<T>]) -> Vec<u16> {
        a.iter()
            .filter_map(|a| match a {
                Action::Send(r) => Some(r.code),
                _ => None,
            })
            .collect()
    }

    fn closes<T>(a: &[Action<T>]) -> bool {
        a.iter().any(|a| matches!(a, Action::Close))
    }

    fn line(s: &str) -> Input {
        Input::Line(s.into())
    }

    fn done(logged_in: bool, data_pending: bool) -> Done<u32> {
        Done {
            data_pending,
            logged_in,
            started: None,
        }
    }

    /// A logged-in core with transfer `7` (RETR f) running since `t0`.
    fn transferring(t0: Instant) -> ControlCore<u32> {
        let mut c = ControlCore::new(limits(), t0);
        assert!(c.input(t0, line("RETR f")).is_empty());
        assert_eq!(c.next_command(), Some(Command::Retr("f".into())));
        c.command_done(
            t0,
            Done {
                data_pending: false,
                logged_in: true,
                started: Some(Started {
                    verb: "RETR".into(),
                    path: "f".into(),
                    handle: 7,
                }),
            },
        );
        c
    }

    #[test]
    fn commands_run_one_at_a_time_in_order() {
        let t0 = Instant::now();
        let mut c: ControlCore<u32> = ControlCore::new(limits(), t0);
        assert!(c.input(t0, line("USER a")).is_empty());
        assert!(c.input(t0, line("NOOP")).is_empty());
        assert_eq!(c.next_command(), Some(Command::User("a".into())));
        c.command_done(t0, done(false, false));
        assert_eq!(c.next_command(), Some(Command::Noop));
        assert_eq!(c.next_command(), None);
        assert_eq!(c.commands_seen(), 2);
    }

    #[test]
    fn abor_cuts_the_transfer_then_answers_226() {
        let t0 = Instant::now();
        let mut c = transferring(t0);
        let a = c.input(t0 + SEC, line("ABOR"));
        assert_eq!(
            a,
            vec![
                Action::Abort(7),
                Action::Count("ABOR", 226),
                Action::Send(Reply::new(226, "ABOR successful")),
            ]
        );
        assert!(!c.running());
        assert_eq!(c.next_command(), None, "ABOR is not queued");
    }

    #[test]
    fn abor_without_transfer_is_an_ordinary_command() {
        let t0 = Instant::now();
        let mut c: ControlCore<u32> = ControlCore::new(limits(), t0);
        assert!(c.input(t0, line("ABOR")).is_empty());
        assert_eq!(c.next_command(), Some(Command::Abor));
    }

    #[test]
    fn stat_during_a_transfer_answers_at_once() {
        let t0 = Instant::now();
        let mut c = transferring(t0);
        let a = c.input(t0 + 5 * SEC, line("STAT"));
        let [Action::Send(r)] = a.as_slice() else {
            panic!("{a:?}")
        };
        assert_eq!(r.code, 211);
        assert!(r.to_wire().contains("RETR f in progress for 5 s"), "{r:?}");
        assert!(c.running());
        // STAT with a path waits like any other command.
        assert!(c.input(t0, line("STAT /")).is_empty());
        assert_eq!(c.next_command(), None);
    }

    #[test]
    fn commands_wait_behind_a_transfer_until_it_ends() {
        let t0 = Instant::now();
        let mut c = transferring(t0);
        assert!(c.input(t0, line("PWD")).is_empty());
        assert!(c.input(t0, line("NOOP")).is_empty());
        assert_eq!(c.next_command(), None, "nothing runs during the transfer");
        assert_eq!(c.transfer_ended(t0 + SEC), Some(7));
        assert_eq!(c.next_command(), Some(Command::Pwd));
        c.command_done(t0, done(true, false));
        assert_eq!(c.next_command(), Some(Command::Noop));
    }

    #[test]
    fn a_full_queue_closes_with_421() {
        let t0 = Instant::now();
        let mut c = transferring(t0);
        for _ in 0..MAX_QUEUED {
            assert!(c.input(t0, line("NOOP")).is_empty());
        }
        let a = c.input(t0, line("NOOP"));
        assert_eq!(codes(&a), vec![421]);
        assert!(closes(&a));
    }

    #[test]
    fn quit_during_a_transfer_is_noted_once_and_queued() {
        let t0 = Instant::now();
        let mut c = transferring(t0);
        assert_eq!(c.input(t0, line("QUIT")), vec![Action::QuitSeen]);
        assert!(c.input(t0, line("QUIT")).is_empty());
        assert!(c.quit_seen());
        assert_eq!(c.take_running(), Some(7));
    }

    #[test]
    fn idle_timeout_only_without_a_transfer() {
        let t0 = Instant::now();
        let mut c = transferring(t0);
        // Logged in, no data endpoint: no deadline while the transfer runs.
        assert_eq!(c.next_deadline(), None);
        assert!(c.timer(t0 + 1000 * SEC).is_empty());
        c.transfer_ended(t0 + 10 * SEC);
        assert_eq!(c.next_deadline(), Some(t0 + 310 * SEC));
        assert!(c.timer(t0 + 309 * SEC).is_empty());
        let a = c.timer(t0 + 310 * SEC);
        assert_eq!(codes(&a), vec![421]);
        assert!(closes(&a));
    }

    #[test]
    fn any_line_restarts_the_idle_clock() {
        let t0 = Instant::now();
        let mut c: ControlCore<u32> = ControlCore::new(limits(), t0);
        c.input(t0, line("USER a"));
        c.next_command();
        c.command_done(t0, done(true, false));
        c.input(t0 + 200 * SEC, line("NOOP"));
        assert_eq!(c.next_deadline(), Some(t0 + 500 * SEC));
    }

    #[test]
    fn login_deadline_is_not_extended_by_commands() {
        let t0 = Instant::now();
        let mut c: ControlCore<u32> = ControlCore::new(limits(), t0);
        for s in 0..29 {
            c.input(t0 + s * SEC, line("NOOP"));
            c.next_command();
            c.command_done(t0 + s * SEC, done(false, false));
        }
        assert_eq!(c.next_deadline(), Some(t0 + 30 * SEC));
        let a = c.timer(t0 + 30 * SEC);
        assert_eq!(codes(&a), vec![421]);
        assert!(closes(&a));
    }

    #[test]
    fn login_deadline_ends_at_login_and_restarts_after_rein() {
        let t0 = Instant::now();
        let mut c: ControlCore<u32> = ControlCore::new(limits(), t0);
        c.input(t0, line("PASS x"));
        c.next_command();
        c.command_done(t0 + SEC, done(true, false));
        assert_eq!(c.next_deadline(), Some(t0 + 301 * SEC), "only idle is left");
        c.input(t0 + 100 * SEC, line("REIN"));
        c.next_command();
        c.command_done(t0 + 100 * SEC, done(false, false));
        assert_eq!(c.next_deadline(), Some(t0 + 130 * SEC));
    }

    #[test]
    fn login_timeout_off() {
        let t0 = Instant::now();
        let l = Limits {
            login: None,
            ..limits()
        };
        let c: ControlCore<u32> = ControlCore::new(l, t0);
        assert_eq!(c.next_deadline(), Some(t0 + 300 * SEC));
    }

    #[test]
    fn a_pending_data_endpoint_expires_whatever_else_is_sent() {
        let t0 = Instant::now();
        let mut c: ControlCore<u32> = ControlCore::new(limits(), t0);
        c.input(t0, line("PASS x"));
        c.next_command();
        c.command_done(t0, done(true, false));
        c.input(t0, line("PASV"));
        c.next_command();
        c.command_done(t0, done(true, true));
        // A later command that keeps the endpoint does not extend it.
        c.input(t0 + 50 * SEC, line("NOOP"));
        c.next_command();
        c.command_done(t0 + 50 * SEC, done(true, true));
        assert_eq!(c.next_deadline(), Some(t0 + 60 * SEC));
        assert_eq!(c.timer(t0 + 60 * SEC), vec![Action::DropData]);
        assert_eq!(c.next_deadline(), Some(t0 + 350 * SEC));
    }

    #[test]
    fn a_used_data_endpoint_has_no_expiry() {
        let t0 = Instant::now();
        let mut c: ControlCore<u32> = ControlCore::new(limits(), t0);
        c.input(t0, line("PASS x"));
        c.next_command();
        c.command_done(t0, done(true, false));
        c.input(t0, line("EPSV"));
        c.next_command();
        c.command_done(t0, done(true, true));
        c.input(t0, line("LIST"));
        c.next_command();
        c.command_done(t0, done(true, false));
        assert_eq!(c.next_deadline(), Some(t0 + 300 * SEC));
    }

    #[test]
    fn rate_limit_delays_beyond_the_burst() {
        let t0 = Instant::now();
        let l = Limits {
            commands_per_sec: 10,
            ..limits()
        };
        let mut c: ControlCore<u32> = ControlCore::new(l, t0);
        for _ in 0..20 {
            assert!(c.input(t0, line("NOOP")).is_empty(), "within the burst");
        }
        let a = c.input(t0, line("NOOP"));
        assert_eq!(a, vec![Action::Delay(Duration::from_millis(100))]);
        // A second later ten more tokens are there.
        let later = t0 + SEC;
        for _ in 0..9 {
            assert!(c.input(later, line("NOOP")).is_empty());
        }
        assert!(matches!(
            c.input(later, line("NOOP")).as_slice(),
            [Action::Delay(_)]
        ));
    }

    #[test]
    fn http_as_first_line_closes_but_not_later() {
        let t0 = Instant::now();
        let mut c: ControlCore<u32> = ControlCore::new(limits(), t0);
        let a = c.input(t0, line("GET / HTTP/1.1"));
        assert_eq!(codes(&a), vec![500]);
        assert!(closes(&a));
        let mut c: ControlCore<u32> = ControlCore::new(limits(), t0);
        c.input(t0, line("NOOP"));
        assert!(!closes(&c.input(t0, line("GET / HTTP/1.1"))));
    }

    #[test]
    fn long_lines_and_line_timeouts() {
        let t0 = Instant::now();
        let mut c: ControlCore<u32> = ControlCore::new(limits(), t0);
        let a = c.input(t0, Input::TooLong);
        assert_eq!(codes(&a), vec![500]);
        assert!(!closes(&a));
        let a = c.input(t0, Input::LineTimeout);
        assert_eq!(codes(&a), vec![421]);
        assert!(closes(&a));
        assert_eq!(c.input(t0, Input::Closed), vec![Action::Close]);
    }

    #[test]
    fn shutdown_cuts_a_transfer_only_at_the_hard_stop() {
        let t0 = Instant::now();
        let mut c = transferring(t0);
        assert!(c.draining().is_empty(), "a transfer may finish");
        let a = c.hard_stop();
        assert_eq!(a.first(), Some(&Action::Abort(7)));
        assert_eq!(codes(&a), vec![421]);
        assert!(closes(&a));
        let mut idle: ControlCore<u32> = ControlCore::new(limits(), t0);
        let a = idle.draining();
        assert_eq!(codes(&a), vec![421]);
        assert!(closes(&a));
    }
}
