//! The control channel's byte streams: plain TCP halves, or TLS after `AUTH TLS`
//! (RFC 4217 §4) or on the implicit-FTPS listener, and the upgrade between them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::protocol::codec::{LineReader, ReadSome};
use crate::tls::{ConnTls, Tls};

/// The reading side of the control channel.
#[derive(Debug)]
pub enum ControlRead {
    /// Plain TCP (readiness-preserving reads, see [`ReadSome`]).
    Plain(OwnedReadHalf),
    /// TLS.
    Tls(ReadHalf<TlsStream<TcpStream>>),
    /// Taken during an upgrade.
    Gone,
}

impl ReadSome for ControlRead {
    async fn read_some(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            ControlRead::Plain(r) => r.read_some(buf).await,
            ControlRead::Tls(r) => r.read_buf(buf).await,
            ControlRead::Gone => Ok(0),
        }
    }
}

/// The writing side of the control channel.
#[derive(Debug)]
pub enum ControlWrite {
    /// Plain TCP.
    Plain(OwnedWriteHalf),
    /// TLS.
    Tls(WriteHalf<TlsStream<TcpStream>>),
    /// Taken during an upgrade.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "control channel closed")
}

impl AsyncWrite for ControlWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ControlWrite::Plain(w) => Pin::new(w).poll_write(cx, buf),
            ControlWrite::Tls(w) => Pin::new(w).poll_write(cx, buf),
            ControlWrite::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ControlWrite::Plain(w) => Pin::new(w).poll_flush(cx),
            ControlWrite::Tls(w) => Pin::new(w).poll_flush(cx),
            ControlWrite::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ControlWrite::Plain(w) => Pin::new(w).poll_shutdown(cx),
            ControlWrite::Tls(w) => Pin::new(w).poll_shutdown(cx),
            ControlWrite::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// Plain halves of a fresh control connection.
pub fn plain(stream: TcpStream) -> (ControlRead, ControlWrite) {
    let (r, w) = stream.into_split();
    (ControlRead::Plain(r), ControlWrite::Plain(w))
}

/// TLS halves of a handshaken control connection.
pub fn tls(stream: TlsStream<TcpStream>) -> (ControlRead, ControlWrite) {
    let (r, w) = tokio::io::split(stream);
    (ControlRead::Tls(r), ControlWrite::Tls(w))
}

/// After the 234 reply to `AUTH TLS`: runs the handshake on the same TCP
/// connection and swaps both halves for TLS ones. Bytes the client sent after
/// AUTH but before the handshake are a protocol violation (RFC 4217 §4: the client
/// waits for 234), and any failure leaves the connection unusable: `Err` means
/// close it. `Ok`: the connection's TLS context for its data connections.
pub async fn start_tls(
    reader: &mut LineReader<ControlRead>,
    wr: &mut ControlWrite,
    tls: &Tls,
) -> io::Result<ConnTls> {
    if reader.buffered() > 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "client sent plain text after AUTH TLS",
        ));
    }
    let (ControlRead::Plain(r), ControlWrite::Plain(w)) = (
        reader.replace_inner(ControlRead::Gone),
        std::mem::replace(wr, ControlWrite::Gone),
    ) else {
        return Err(io::Error::other("control channel is not plain TCP"));
    };
    let tcp = r.reunite(w).map_err(|e| io::Error::other(e.to_string()))?;
    let (stream, conn) = tls.accept(tcp).await?;
    let (r, w) = self::tls(stream);
    reader.replace_inner(r);
    *wr = w;
    Ok(conn)
}
