//! Zero-copy downloads: a binary `RETR` (RFC 959 §4.1.3) of a local file over a plain
//! (not `PROT P`) data connection is sent with `sendfile(2)` straight from the file to
//! the socket, as vsftpd does: no copy through user space, no reading thread.
//!
//! The socket stays non-blocking and owned by tokio: each `sendfile` call runs when
//! the socket is writable (`TcpStream::writable` + `try_io`) and moves at most
//! [`CHUNK`] bytes, so `ABOR` (RFC 959 §4.1.3), server shutdown and the data stall
//! timeout are looked at between calls. The *file* side of the call is an ordinary
//! read: from the page cache or tmpfs it never waits, but on a cold disk it blocks the
//! runtime thread for that read (at most one chunk, with the kernel's read-ahead
//! running ahead of it), as it blocks vsftpd's session process. The storage backend
//! hands out only regular files whose type it checked on the descriptor (never a FIFO
//! or device, which could block for ever).
//!
//! The bytes counted are the bytes the kernel accepted for the socket, like the
//! streamed path's written bytes. A file that ends before the size it had at open
//! (truncated meanwhile) ends as [`Sent::Shrank`]: never a 226 with fewer bytes than
//! the 150 reply announced. A file that grew is sent to its new end, as the streamed
//! read does.

use std::fs::File;
use std::io;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most bytes one `sendfile` call moves (a non-blocking socket takes at most its free
/// buffer space anyway): the cancellation token is checked at least this often.
pub const CHUNK: usize = 1024 * 1024;

/// How a zero-copy send ended; each carries the bytes sent.
#[derive(Debug)]
pub enum Sent {
    /// Everything up to the end of the file, at least the promised length.
    Complete(u64),
    /// The file ended `missing` bytes before the promised length.
    Shrank {
        /// Bytes sent.
        sent: u64,
        /// Bytes promised but not there.
        missing: u64,
    },
    /// The transfer was cancelled (`ABOR`, shutdown).
    Cancelled(u64),
    /// The client accepted nothing for the stall timeout.
    Stalled(u64),
    /// The data connection failed (reset, closed).
    Broken(u64, io::Error),
    /// Reading the file failed.
    ReadFailed(u64, io::Error),
}

impl Sent {
    /// The bytes sent, whatever the outcome.
    pub fn bytes(&self) -> u64 {
        match self {
            Sent::Complete(n)
            | Sent::Cancelled(n)
            | Sent::Stalled(n)
            | Sent::Broken(n, _)
            | Sent::ReadFailed(n, _) => *n,
            Sent::Shrank { sent, .. } => *sent,
        }
    }
}

/// Sends `file` from `offset` to its end over `sock` with `sendfile(2)`; `len` bytes
/// were promised (the size at open minus `offset`). Fails as [`Sent::Stalled`] when
/// the socket accepts nothing for `stall`, as [`Sent::Cancelled`] as soon as `cancel`
/// fires.
pub async fn send(
    sock: &TcpStream,
    file: &File,
    offset: u64,
    len: u64,
    stall: Duration,
    cancel: &CancellationToken,
) -> Sent {
    let mut pos = offset;
    let mut sent = 0u64;
    let mut deadline = Instant::now() + stall;
    loop {
        if cancel.is_cancelled() {
            return Sent::Cancelled(sent);
        }
        let r = sock.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(sock, file, Some(&mut pos), CHUNK).map_err(io::Error::from)
        });
        match r {
            Ok(0) => break,
            Ok(n) => {
                sent += n as u64;
                deadline = Instant::now() + stall;
                // A socket that always has room would otherwise keep this task on
                // its thread for the whole file.
                tokio::task::consume_budget().await;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Sent::Cancelled(sent),
                    w = tokio::time::timeout_at(deadline, sock.writable()) => match w {
                        Err(_) => return Sent::Stalled(sent),
                        Ok(Err(e)) => return Sent::Broken(sent, e),
                        Ok(Ok(())) => {}
                    },
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if socket_error(&e) => return Sent::Broken(sent, e),
            Err(e) => return Sent::ReadFailed(sent, e),
        }
    }
    if sent < len {
        Sent::Shrank {
            sent,
            missing: len - sent,
        }
    } else {
        Sent::Complete(sent)
    }
}

/// Errors of the socket side of `sendfile` (the client went away); the rest come
/// from reading the file.
fn socket_error(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected | TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tcp_pair;
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    fn file_of(data: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        f
    }

    #[tokio::test]
    async fn sends_from_the_offset_to_the_end() {
        let data: Vec<u8> = (0..3 * CHUNK + 12_345).map(|i| (i % 251) as u8).collect();
        let f = file_of(&data);
        let (server, mut client) = tcp_pair().await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let cancel = CancellationToken::new();
        let offset = 1000;
        let len = (data.len() - offset) as u64;
        let r = send(
            &server,
            &f,
            offset as u64,
            len,
            Duration::from_secs(30),
            &cancel,
        )
        .await;
        assert!(matches!(r, Sent::Complete(n) if n == len), "{r:?}");
        drop(server);
        assert_eq!(reader.await.unwrap(), &data[offset..]);
    }

    #[tokio::test]
    async fn a_shorter_file_than_promised_is_reported() {
        let f = file_of(&[7u8; 5000]);
        let (server, _client) = tcp_pair().await;
        let r = send(
            &server,
            &f,
            0,
            8000,
            Duration::from_secs(30),
            &CancellationToken::new(),
        )
        .await;
        assert!(
            matches!(
                r,
                Sent::Shrank {
                    sent: 5000,
                    missing: 3000
                }
            ),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_reader_that_stops_stalls_and_cancel_ends_it() {
        let f = file_of(&vec![1u8; 64 * CHUNK]);
        let (server, client) = tcp_pair().await;
        let r = send(
            &server,
            &f,
            0,
            (64 * CHUNK) as u64,
            Duration::from_millis(300),
            &CancellationToken::new(),
        )
        .await;
        assert!(matches!(r, Sent::Stalled(n) if n > 0), "{r:?}");
        let cancel = CancellationToken::new();
        cancel.cancel();
        let r = send(&server, &f, 0, 1, Duration::from_secs(30), &cancel).await;
        assert!(matches!(r, Sent::Cancelled(0)), "{r:?}");
        drop(client);
    }
}
