//! Is the client still there? An upload whose data connection ended cleanly (FIN)
//! is committed only if its control connection is still open, or closed after a
//! QUIT.
//!
//! A client process that is killed closes all its sockets at once: the data
//! connection's FIN looks like the end of the file, and the truncated file used to
//! be committed with 226 although the control connection had been closed too. RFC
//! 959 §4.1.1 (QUIT): "If file transfer is in progress, the connection will remain
//! open for result response and the server will then close it" — a QUIT asks for
//! the transfer to finish; a bare close of the control connection does not.
//!
//! The control loop publishes what it has read ([`ControlState`]); the upload, at
//! its end, also looks at the control socket itself (a non-blocking `MSG_PEEK`), so
//! a close that the control loop has not read yet still counts.
//!
//! The exiting client's kernel releases its sockets in no fixed order (Linux
//! releases the last one opened first, so the data connection's FIN usually comes
//! first), microseconds apart on an idle client host, up to ~45 ms apart on a
//! host with a load of 12 on 2 cores (measured on loopback). No server can tell a
//! live client waiting for 226 from a dead one whose control socket is not yet
//! released, so the upload watches for `server.upload_close_wait_us` after the
//! data connection's end (a close seen earlier ends the wait): the price every
//! live client's upload pays for the check.

use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// What the control loop has read from the client so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlState {
    /// Nothing decisive: the connection is open.
    Open,
    /// QUIT was read (the transfer may finish, RFC 959 §4.1.1).
    Quit,
    /// End of stream or reset without a QUIT before it.
    Closed,
}

/// [`ControlState`] as a number, and [`GONE`] once the control loop dropped its
/// [`ControlSignal`].
const OPEN: u8 = 0;
const QUIT: u8 = 1;
const CLOSED: u8 = 2;
/// Flag: the control loop is gone (its signal dropped).
const GONE: u8 = 4;

/// What the control loop and its uploads share: the state and a wake-up. Every
/// session holds one for its life, so it is kept small (issue 13 §6: a tokio
/// `watch` channel took ~350 bytes with its eight notifiers).
#[derive(Debug, Default)]
struct Shared {
    state: AtomicU8,
    changed: Notify,
}

impl Shared {
    fn state(&self) -> ControlState {
        match self.state.load(Ordering::Acquire) & !GONE {
            OPEN => ControlState::Open,
            QUIT => ControlState::Quit,
            _ => ControlState::Closed,
        }
    }

    fn gone(&self) -> bool {
        self.state.load(Ordering::Acquire) & GONE != 0
    }
}

/// The control loop's side: publishes [`ControlState`].
#[derive(Debug)]
pub struct ControlSignal(Arc<Shared>);

impl ControlSignal {
    /// QUIT was read. Sticky: a close after it does not undo it.
    pub fn quit(&self) {
        self.0.state.store(QUIT, Ordering::Release);
        self.0.changed.notify_waiters();
    }

    /// The control connection ended without QUIT (unless one was read before).
    pub fn closed(&self) {
        if self
            .0
            .state
            .compare_exchange(OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.0.changed.notify_waiters();
        }
    }
}

impl Drop for ControlSignal {
    fn drop(&mut self) {
        self.0.state.fetch_or(GONE, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

/// The transfers' side: created by the control loop, handed to uploads.
#[derive(Debug, Clone)]
pub struct ControlWatch {
    state: Arc<Shared>,
    /// The control connection's socket (the TCP socket under any TLS).
    fd: RawFd,
}

/// How long an upload waits for the control loop to read what is pending on the
/// control connection before deciding.
const SETTLE: Duration = Duration::from_secs(5);

/// A pair for one control connection whose TCP socket is `socket`.
pub fn channel(socket: &impl AsRawFd) -> (ControlSignal, ControlWatch) {
    let shared = Arc::new(Shared::default());
    (
        ControlSignal(Arc::clone(&shared)),
        ControlWatch {
            state: shared,
            fd: socket.as_raw_fd(),
        },
    )
}

/// What a peek at the control socket showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peek {
    /// Open, nothing unread.
    Idle,
    /// Unread bytes (commands, TLS records) that the control loop will read.
    Pending,
    /// End of stream or an error (reset): the client closed it.
    Gone,
}

impl ControlWatch {
    /// A probe usable after the command that created it returned: it owns a
    /// duplicate of the control socket. Call it while the command runs (the
    /// control connection is open then); `None` if the descriptor cannot be
    /// duplicated (the upload then relies on the control loop alone).
    pub fn probe(&self) -> Option<ControlProbe> {
        // SAFETY: `fd` is the socket of the control connection that `serve` owns
        // and keeps open while it runs commands; handlers call this during a
        // command, so the descriptor is valid for this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let owned = fd.try_clone_to_owned().ok()?;
        // SAFETY: the `socket2::Socket` owns the duplicated descriptor and keeps it
        // open, unchanged, for as long as the `AsyncFd` holding it lives.
        let socket = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                socket2::Socket::from(owned),
                tokio::io::Interest::READABLE,
            )
        }
        .ok()?;
        Some(ControlProbe {
            state: Arc::clone(&self.state),
            socket,
        })
    }
}

/// An upload's view of its control connection (see the module docs).
#[derive(Debug)]
pub struct ControlProbe {
    state: Arc<Shared>,
    /// A duplicate of the control socket, registered for readiness.
    socket: tokio::io::unix::AsyncFd<socket2::Socket>,
}

impl ControlProbe {
    fn peek(&self) -> Peek {
        let mut buf = [MaybeUninit::<u8>::uninit(); 1];
        // The socket is non-blocking (tokio's): an empty queue is WouldBlock.
        match self.socket.get_ref().peek(&mut buf) {
            Ok(0) => Peek::Gone,
            Ok(_) => Peek::Pending,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Peek::Idle,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Peek::Pending,
            Err(_) => Peek::Gone,
        }
    }

    /// Whether an upload whose data connection just ended cleanly may be
    /// committed: true while the control connection is open with nothing unread,
    /// or once QUIT was read; false once it ended without QUIT. Unread bytes are
    /// left for the control loop to read first (they may be a QUIT, or the end),
    /// for at most a few seconds.
    /// `data_end`: when the data connection ended; `wait`: how long after it to
    /// watch for a close (`server.upload_close_wait_us`).
    pub async fn client_still_there(
        &mut self,
        data_end: tokio::time::Instant,
        wait: Duration,
    ) -> bool {
        // Watch until `wait` after the data's end (tokio's timer rounds up to the
        // next millisecond): the control socket turning readable (a FIN, a reset,
        // a command) or a QUIT/close read by the loop decides at once, without
        // spinning.
        let until = data_end + wait;
        let state = Arc::clone(&self.state);
        loop {
            // Registered before the state is read: a change after the read wakes it.
            let changed = state.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if state.state() != ControlState::Open || self.peek() != Peek::Idle {
                break;
            }
            if state.gone() {
                break; // the control loop is gone
            }
            let ready = tokio::select! {
                r = self.socket.readable() => r,
                _ = &mut changed => continue,
                _ = tokio::time::sleep_until(until) => break,
            };
            match ready {
                Ok(mut guard) => guard.clear_ready(),
                Err(_) => break,
            }
        }
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let changed = state.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match state.state() {
                ControlState::Quit => return true,
                ControlState::Closed => return false,
                ControlState::Open => {}
            }
            let peek = self.peek();
            if peek == Peek::Idle {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                // Commands still unread after seconds: a live (pipelining) client.
                // A close the loop never got to: not committed.
                return peek == Peek::Pending;
            }
            // Wait for the loop to read on (a state change), re-peeking now and
            // then: a pending command read by the loop changes no state.
            if state.gone() {
                return false; // the control loop is gone
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn open_quit_and_closed() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let (signal, watch) = channel(&server);
        // Open and quiet: commit.
        assert!(
            watch
                .probe()
                .unwrap()
                .client_still_there(tokio::time::Instant::now(), Duration::ZERO)
                .await
        );
        // QUIT read by the loop, then the close: commit.
        signal.quit();
        signal.closed();
        assert!(
            watch
                .probe()
                .unwrap()
                .client_still_there(tokio::time::Instant::now(), Duration::ZERO)
                .await
        );
        // Closed (EOF in the socket) without QUIT: not committed.
        let (signal, watch) = channel(&server);
        client.write_all(b"NOOP\r\n").unwrap();
        drop(client);
        let mut probe = watch.probe().unwrap();
        let decided = tokio::spawn(async move {
            probe
                .client_still_there(tokio::time::Instant::now(), Duration::ZERO)
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        signal.closed();
        assert!(!decided.await.unwrap());
    }
}
