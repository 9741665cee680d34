//! The control-channel codec: bytes → lines, with a hard line-length limit and
//! Telnet command stripping (RFC 959 §4.1.3 "ABOR" is sent after Telnet IP and
//! Synch; RFC 854 defines IAC sequences).
//!
//! Lines end at LF (a preceding CR is removed). A line longer than the limit is
//! discarded up to its LF and reported as [`LineEvent::TooLong`]; nothing beyond
//! the limit is ever buffered. Bytes that are not UTF-8 are read as Latin-1 so old
//! devices can still name files with accented letters.

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;

/// Telnet "Interpret As Command".
const IAC: u8 = 255;

/// Bytes taken by one read. The buffer is allocated when input arrives (the plain
/// socket reads into the stack first and keeps only what came) and released when
/// it holds no unfinished line, so 10,000 idle sessions hold no read buffers.
const READ_CHUNK: usize = 1024;

/// What the reader produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// One complete line, Telnet commands removed, without CR/LF.
    Line(String),
    /// A line exceeded the limit and was discarded (answer 500).
    TooLong,
    /// An unfinished line did not complete within the line timeout (slowloris):
    /// answer 421 and close.
    Timeout,
}

/// Removes Telnet commands from raw line bytes (RFC 854): `IAC IAC` is a literal
/// 0xFF, `IAC WILL/WONT/DO/DONT x` is three bytes, other `IAC x` pairs (IP, DM, …)
/// are two bytes. A lone IAC before an ordinary byte (the Synch DM went out of band)
/// is dropped and the byte kept.
pub fn strip_telnet(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != IAC {
            out.push(b);
            i += 1;
            continue;
        }
        match raw.get(i + 1) {
            Some(&IAC) => {
                out.push(IAC);
                i += 2;
            }
            Some(251..=254) => i += 3,
            Some(240..=250) => i += 2,
            Some(_) | None => i += 1,
        }
    }
    out
}

/// Decodes line bytes: UTF-8 when valid, else Latin-1.
pub fn decode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Turns raw line bytes (without LF) into the command text.
pub fn line_from_bytes(raw: &[u8]) -> String {
    let mut bytes = strip_telnet(raw);
    while bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    decode(&bytes)
}

/// A byte source for [`LineReader`].
#[allow(async_fn_in_trait)] // used with concrete types only
pub trait ReadSome {
    /// Appends at least one byte to `buf`, or returns 0 at end of stream.
    async fn read_some(&mut self, buf: &mut BytesMut) -> std::io::Result<usize>;
}

/// The control socket. Reads go through `poll_read_ready()` + `try_read_buf()` so
/// that a short read never drops readiness: with Telnet Synch the kernel stops a
/// read at the urgent mark (lftp's `IAC IP IAC DM ABOR`, ftplib's `MSG_OOB` ABOR),
/// and the bytes after it must still be read without waiting for more input.
/// Readiness is polled rather than awaited through `readable()`, whose future (a
/// waiter for the socket's list, ~160 bytes) every idle session would hold while it
/// waits: polling keeps the one waker in the socket's own slot.
impl ReadSome for OwnedReadHalf {
    async fn read_some(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        let stream: &tokio::net::TcpStream = self.as_ref();
        std::future::poll_fn(|cx| loop {
            std::task::ready!(stream.poll_read_ready(cx))?;
            // Into the stack, then only what came into `buf`: readiness can be
            // stale (the last read took every byte without seeing `WouldBlock`),
            // and room made before reading would then stay with the waiting,
            // idle session (issue 13 §6: 1 KiB each).
            let mut chunk = [0u8; READ_CHUNK];
            // A `WouldBlock` clears the readiness: poll again (and register).
            match stream.try_read(&mut chunk) {
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    return std::task::Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        })
        .await
    }
}

/// In-memory input (tests, fuzzing).
impl ReadSome for &[u8] {
    async fn read_some(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        self.read_buf(buf).await
    }
}

/// Reads control lines from `R` with at most `max_line` bytes buffered.
pub struct LineReader<R> {
    inner: R,
    buf: BytesMut,
    max_line: usize,
    discarding: bool,
    line_timeout: Option<std::time::Duration>,
    /// When the first byte of the current unfinished line arrived.
    partial_since: Option<tokio::time::Instant>,
}

impl<R: ReadSome> LineReader<R> {
    /// Wraps a reader; `max_line` bounds every line (RFC 959 sets no limit; we must).
    pub fn new(inner: R, max_line: usize) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            max_line,
            discarding: false,
            line_timeout: None,
            partial_since: None,
        }
    }

    /// Bounds how long an unfinished line may take to complete; past it
    /// [`LineEvent::Timeout`] is returned.
    pub fn with_line_timeout(mut self, t: std::time::Duration) -> Self {
        self.line_timeout = Some(t);
        self
    }

    /// Swaps the byte source (the TLS upgrade after `AUTH TLS`); bytes already
    /// buffered stay. Returns the old source.
    pub fn replace_inner(&mut self, inner: R) -> R {
        std::mem::replace(&mut self.inner, inner)
    }

    /// Bytes read but not yet returned as a line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when bytes of an unfinished line are buffered (slowloris detection).
    pub fn has_partial_line(&self) -> bool {
        !self.buf.is_empty() || self.discarding
    }

    /// The next line, or `None` at end of stream. Cancel-safe: bytes read so far
    /// stay buffered in `self`.
    pub async fn next_line(&mut self) -> std::io::Result<Option<LineEvent>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let raw = self.buf.split_to(pos + 1);
                if self.buf.is_empty() {
                    // Nothing pipelined: let go of the buffer (also after a long line).
                    self.buf = BytesMut::new();
                }
                // What is left (a pipelined next line) starts its own clock.
                self.partial_since = (!self.buf.is_empty()).then(tokio::time::Instant::now);
                if self.discarding {
                    self.discarding = false;
                    return Ok(Some(LineEvent::TooLong));
                }
                if pos > self.max_line {
                    return Ok(Some(LineEvent::TooLong));
                }
                return Ok(Some(LineEvent::Line(line_from_bytes(&raw[..pos]))));
            }
            if self.buf.len() > self.max_line {
                self.discarding = true;
                self.buf.advance(self.buf.len());
            }
            if !self.buf.is_empty() {
                // Sources other than the plain socket make room themselves (a
                // BytesMut read grows by itself).
                self.buf.reserve(READ_CHUNK);
            }
            let n = match (self.line_timeout, self.has_partial_line()) {
                (Some(limit), true) => {
                    let since = *self
                        .partial_since
                        .get_or_insert_with(tokio::time::Instant::now);
                    // Boxed: only a line in pieces needs the timer, and inline it
                    // would take room in every idle session.
                    match Box::pin(tokio::time::timeout_at(
                        since + limit,
                        self.inner.read_some(&mut self.buf),
                    ))
                    .await
                    {
                        Ok(r) => r?,
                        Err(_) => return Ok(Some(LineEvent::Timeout)),
                    }
                }
                _ => {
                    let n = self.inner.read_some(&mut self.buf).await?;
                    if self.partial_since.is_none() && n > 0 {
                        self.partial_since = Some(tokio::time::Instant::now());
                    }
                    n
                }
            };
            if n == 0 {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telnet_ip_synch_before_abor() {
        // IAC IP, IAC DM (DM sent inline), then ABOR.
        let raw = [255, 244, 255, 242, b'A', b'B', b'O', b'R', b'\r'];
        assert_eq!(line_from_bytes(&raw), "ABOR");
        // DM went out of band: IAC directly before 'A'.
        let raw = [255, 244, 255, b'A', b'B', b'O', b'R'];
        assert_eq!(line_from_bytes(&raw), "ABOR");
    }

    #[test]
    fn telnet_negotiation_and_escaped_iac() {
        assert_eq!(strip_telnet(&[255, 251, 1, b'x']), b"x");
        assert_eq!(strip_telnet(&[b'a', 255, 255, b'b']), vec![b'a', 255, b'b']);
        assert_eq!(strip_telnet(&[b'a', 255]), b"a");
    }

    #[test]
    fn latin1_fallback() {
        assert_eq!(decode(&[b'R', b'E', b'T', b'R', b' ', 0xE4]), "RETR ä");
        assert_eq!(decode("RETR ü".as_bytes()), "RETR ü");
    }

    #[tokio::test]
    async fn lines_and_limits() {
        let input: &[u8] = b"USER a\r\nNOOP\n\r\nXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\nPWD\r\npartial";
        let mut r = LineReader::new(input, 16);
        assert_eq!(
            r.next_line().await.unwrap(),
            Some(LineEvent::Line("USER a".into()))
        );
        assert_eq!(
            r.next_line().await.unwrap(),
            Some(LineEvent::Line("NOOP".into()))
        );
        assert_eq!(
            r.next_line().await.unwrap(),
            Some(LineEvent::Line("".into()))
        );
        assert_eq!(r.next_line().await.unwrap(), Some(LineEvent::TooLong));
        assert_eq!(
            r.next_line().await.unwrap(),
            Some(LineEvent::Line("PWD".into()))
        );
        assert_eq!(r.next_line().await.unwrap(), None);
    }

    #[tokio::test]
    async fn unfinished_line_times_out() {
        let (client, server) = tokio::io::duplex(64);
        struct Duplex(tokio::io::DuplexStream);
        impl ReadSome for Duplex {
            async fn read_some(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
                self.0.read_buf(buf).await
            }
        }
        let mut r = LineReader::new(Duplex(server), 4096)
            .with_line_timeout(std::time::Duration::from_millis(300));
        let mut client = client;
        use tokio::io::AsyncWriteExt;
        client.write_all(b"NOOP\r\nUSE").await.unwrap();
        assert_eq!(
            r.next_line().await.unwrap(),
            Some(LineEvent::Line("NOOP".into()))
        );
        // "USE" never completes: Timeout after 300 ms.
        let t = tokio::time::Instant::now();
        assert_eq!(r.next_line().await.unwrap(), Some(LineEvent::Timeout));
        assert!(t.elapsed() >= std::time::Duration::from_millis(250));
    }

    #[tokio::test]
    async fn buffer_is_released_between_lines() {
        let input: &[u8] = b"NOOP\r\nPWD\r";
        let mut r = LineReader::new(input, 4096);
        assert_eq!(r.buf.capacity(), 0, "nothing allocated before input");
        assert_eq!(
            r.next_line().await.unwrap(),
            Some(LineEvent::Line("NOOP".into()))
        );
        assert!(r.buf.capacity() > 0, "the pipelined PWD stays buffered");
        let mut r = LineReader::new(&b"NOOP\r\n"[..], 4096);
        r.next_line().await.unwrap();
        assert_eq!(r.buf.capacity(), 0, "an empty buffer is let go");
    }

    /// Issue 13 §6: after a line the socket still looks readable (nothing told
    /// it otherwise); waiting for the next line must not leave room made for it.
    #[tokio::test]
    async fn a_waiting_socket_reader_holds_no_buffer() {
        use tokio::io::AsyncWriteExt;
        let (server, mut client) = crate::testing::tcp_pair().await;
        let (rd, _wr) = server.into_split();
        let mut r = LineReader::new(rd, 4096);
        client.write_all(b"NOOP\r\n").await.unwrap();
        assert_eq!(
            r.next_line().await.unwrap(),
            Some(LineEvent::Line("NOOP".into()))
        );
        let wait = tokio::time::timeout(std::time::Duration::from_millis(50), r.next_line());
        assert!(wait.await.is_err(), "no second line was sent");
        assert_eq!(r.buf.capacity(), 0, "an idle reader holds no buffer");
        client.write_all(b"PWD\r\n").await.unwrap();
        assert_eq!(
            r.next_line().await.unwrap(),
            Some(LineEvent::Line("PWD".into()))
        );
    }

    #[tokio::test]
    async fn huge_line_is_not_buffered() {
        let mut big = vec![b'A'; 1 << 20];
        big.extend_from_slice(b"\r\nNOOP\r\n");
        let mut r = LineReader::new(&big[..], 4096);
        assert_eq!(r.next_line().await.unwrap(), Some(LineEvent::TooLong));
        assert!(r.buf.capacity() < 64 * 1024);
        assert_eq!(
            r.next_line().await.unwrap(),
            Some(LineEvent::Line("NOOP".into()))
        );
    }
}
