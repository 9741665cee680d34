//! The PROXY protocol (HAProxy's "PROXY protocol" specification, versions 1 and
//! 2): a load balancer prefixes each connection with a header naming the real
//! client and the address the client connected to. Parsing is done by the `ppp`
//! crate; this module only frames the header off the stream, reading exactly its
//! bytes so whatever the client sent after it (the first data bytes of a STOR) stays
//! in the socket.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature (spec §2.2): 12 bytes that cannot start any text protocol.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes including CRLF (spec §2.1).
const V1_MAX: usize = 107;
/// Longest v2 address block plus TLVs we accept; HAProxy sends well under 1 KiB.
const V2_MAX_PAYLOAD: usize = 4096;

/// What a PROXY header says about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A relayed connection: `source` is the real client, `destination` the
    /// address (and port) the client connected to on the load balancer.
    Proxied {
        /// The client.
        source: SocketAddr,
        /// What the client connected to.
        destination: SocketAddr,
    },
    /// `LOCAL` (v2) or `UNKNOWN` (v1): the balancer's own connection, e.g. a
    /// health check; the socket's real addresses apply (spec §2.1, §2.2).
    Local,
}

/// Why a header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The peer sent no complete header in time.
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    /// The bytes are not a PROXY header.
    #[error("invalid PROXY header: {0}")]
    Invalid(String),
    /// The socket failed or closed.
    #[error("reading PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// How long a load balancer may take to send its PROXY header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The header of a connection from `from`, read within [`HEADER_TIMEOUT`] after
/// checking that `from` may send one (`server.proxy_trusted`); `None` (logged) for
/// an untrusted peer, whose connection the caller drops.
pub async fn read_trusted(
    stream: &mut TcpStream,
    from: SocketAddr,
    trusted: &[ipnet::IpNet],
) -> Option<Result<ProxyHeader, ProxyError>> {
    if !is_trusted(from.ip(), trusted) {
        tracing::warn!(%from, "connection from a peer not in server.proxy_trusted");
        return None;
    }
    Some(read_header(stream, HEADER_TIMEOUT).await)
}

/// Reads one PROXY header (v1 or v2) from the start of `stream` within `timeout`.
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyError> {
    match tokio::time::timeout(timeout, read_frame(stream)).await {
        Ok(frame) => parse(&frame?),
        Err(_) => Err(ProxyError::Timeout(timeout)),
    }
}

/// Reads exactly the header's bytes: the 16-byte v2 preamble plus its announced
/// length, or a v1 line up to CRLF (one byte at a time: at most 107 reads, once
/// per connection, and never a byte past the header).
async fn read_frame(stream: &mut TcpStream) -> Result<Vec<u8>, ProxyError> {
    let mut buf = vec![0u8; 8];
    stream.read_exact(&mut buf).await?;
    if buf[..] == V2_SIGNATURE[..8] {
        buf.resize(16, 0);
        stream.read_exact(&mut buf[8..]).await?;
        let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if len > V2_MAX_PAYLOAD {
            return Err(ProxyError::Invalid(format!("v2 length {len} too large")));
        }
        buf.resize(16 + len, 0);
        stream.read_exact(&mut buf[16..]).await?;
        return Ok(buf);
    }
    if !buf.starts_with(b"PROXY ") {
        return Err(ProxyError::Invalid("no PROXY signature".into()));
    }
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n") {
        if buf.len() >= V1_MAX {
            return Err(ProxyError::Invalid("v1 line longer than 107 bytes".into()));
        }
        stream.read_exact(&mut byte).await?;
        buf.push(byte[0]);
    }
    Ok(buf)
}

/// Parses one complete header (pure; unit-tested).
pub fn parse(frame: &[u8]) -> Result<ProxyHeader, ProxyError> {
    use ppp::{v1, v2, HeaderResult};
    match HeaderResult::parse(frame) {
        HeaderResult::V2(Ok(h)) => {
            if h.command == v2::Command::Local {
                return Ok(ProxyHeader::Local);
            }
            match h.addresses {
                v2::Addresses::IPv4(a) => Ok(ProxyHeader::Proxied {
                    source: SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
                    destination: SocketAddr::new(
                        IpAddr::V4(a.destination_address),
                        a.destination_port,
                    ),
                }),
                v2::Addresses::IPv6(a) => Ok(ProxyHeader::Proxied {
                    source: SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
                    destination: SocketAddr::new(
                        IpAddr::V6(a.destination_address),
                        a.destination_port,
                    ),
                }),
                // UNSPEC or UNIX: no TCP addresses to use (spec §2.2).
                _ => Ok(ProxyHeader::Local),
            }
        }
        HeaderResult::V1(Ok(h)) => match h.addresses {
            v1::Addresses::Tcp4(a) => Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
                destination: SocketAddr::new(IpAddr::V4(a.destination_address), a.destination_port),
            }),
            v1::Addresses::Tcp6(a) => Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
                destination: SocketAddr::new(IpAddr::V6(a.destination_address), a.destination_port),
            }),
            v1::Addresses::Unknown => Ok(ProxyHeader::Local),
        },
        HeaderResult::V2(Err(e)) => Err(ProxyError::Invalid(format!("{e:?}"))),
        HeaderResult::V1(Err(e)) => Err(ProxyError::Invalid(format!("{e:?}"))),
    }
}

/// Whether `peer` may send PROXY headers: `trusted` empty means anyone.
pub fn is_trusted(peer: IpAddr, trusted: &[ipnet::IpNet]) -> bool {
    let peer = crate::datachan::canonical(peer);
    trusted.is_empty() || trusted.iter().any(|n| n.contains(&peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(source: &str, dest: &str, local: bool) -> Vec<u8> {
        let src: SocketAddr = source.parse().unwrap();
        let dst: SocketAddr = dest.parse().unwrap();
        let cmd = if local {
            ppp::v2::Version::Two | ppp::v2::Command::Local
        } else {
            ppp::v2::Version::Two | ppp::v2::Command::Proxy
        };
        ppp::v2::Builder::with_addresses(cmd, ppp::v2::Protocol::Stream, (src, dst))
            .build()
            .unwrap()
    }

    #[test]
    fn v1_tcp4_and_tcp6_and_unknown() {
        let h = parse(b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 21\r\n").unwrap();
        assert_eq!(
            h,
            ProxyHeader::Proxied {
                source: "192.0.2.7:51000".parse().unwrap(),
                destination: "10.0.0.1:21".parse().unwrap()
            }
        );
        let h = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 2121\r\n").unwrap();
        assert!(matches!(h, ProxyHeader::Proxied { source, .. } if source.port() == 4000));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap(), ProxyHeader::Local);
    }

    #[test]
    fn v2_proxy_and_local() {
        let h = parse(&v2("198.51.100.9:40000", "203.0.113.5:30003", false)).unwrap();
        assert_eq!(
            h,
            ProxyHeader::Proxied {
                source: "198.51.100.9:40000".parse().unwrap(),
                destination: "203.0.113.5:30003".parse().unwrap()
            }
        );
        let h = parse(&v2("[2001:db8::5]:1", "[2001:db8::6]:2", false)).unwrap();
        assert!(matches!(h, ProxyHeader::Proxied { destination, .. } if destination.port() == 2));
        assert_eq!(
            parse(&v2("127.0.0.1:1", "127.0.0.1:2", true)).unwrap(),
            ProxyHeader::Local
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse(b"USER anonymous\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4\r\n").is_err());
        assert!(parse(b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n").is_err());
        let mut bad = v2("1.2.3.4:5", "6.7.8.9:10", false);
        bad[12] = 0x31; // version 3
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn trusted_networks() {
        let nets = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(is_trusted("10.1.2.3".parse().unwrap(), &nets));
        assert!(is_trusted("::ffff:10.1.2.3".parse().unwrap(), &nets));
        assert!(!is_trusted("192.168.1.1".parse().unwrap(), &nets));
        assert!(is_trusted("192.168.1.1".parse().unwrap(), &[]));
    }

    #[tokio::test]
    async fn reads_exactly_the_header() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut bytes = v2("192.0.2.1:1234", "192.0.2.2:30001", false);
            bytes.extend_from_slice(b"payload");
            s.write_all(&bytes).await.unwrap();
            let mut v1 = TcpStream::connect(addr).await.unwrap();
            v1.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nrest")
                .await
                .unwrap();
            (s, v1)
        });
        for _ in 0..2 {
            let (mut s, _) = l.accept().await.unwrap();
            let h = read_header(&mut s, Duration::from_secs(5)).await.unwrap();
            assert!(matches!(h, ProxyHeader::Proxied { .. }));
            let mut rest = Vec::new();
            let mut buf = [0u8; 16];
            while rest.len() < 4 {
                let n = s.read(&mut buf).await.unwrap();
                rest.extend_from_slice(&buf[..n]);
            }
            assert!(rest == b"payload"[..rest.len()] || rest == b"rest");
        }
        drop(client.await.unwrap());
    }
}
