//! The data channel: passive listeners (PASV, EPSV — RFC 959 §4.1.2, RFC 2428 §3)
//! and active connections (PORT, EPRT — RFC 959 §4.1.2, RFC 2428 §2), with the
//! RFC 2577 protections: one pending listener per session, random ports, the data
//! peer must be the control peer, no bounce to foreign hosts or privileged ports.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand::Rng;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::config::PortRange;

/// How the next data connection will be made.
#[derive(Debug)]
pub enum DataEndpoint {
    /// We listen; the client connects (PASV/EPSV).
    Passive(TcpListener),
    /// We connect to the client (PORT/EPRT).
    Active(SocketAddr),
}

/// Binds a passive listener on `ip`, on a random port of `range` (or an ephemeral
/// port when no range is configured). Tries random ports first, then scans, so a
/// busy range fails only when every port is taken.
pub async fn bind_passive(ip: IpAddr, range: Option<PortRange>) -> io::Result<TcpListener> {
    let Some(range) = range else {
        return TcpListener::bind(SocketAddr::new(ip, 0)).await;
    };
    let span = u32::from(range.end - range.start) + 1;
    let offset = rand::thread_rng().gen_range(0..span);
    for i in 0..span {
        let port = range.start as u32 + (offset + i) % span;
        let addr = SocketAddr::new(ip, port as u16);
        let socket = match ip {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // SO_REUSEADDR lets a port in TIME_WAIT be reused right away.
        socket.set_reuseaddr(true)?;
        if socket.bind(addr).is_ok() {
            if let Ok(l) = socket.listen(1) {
                return Ok(l);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "every passive port is in use",
    ))
}

/// RFC 959 PASV reply text `h1,h2,h3,h4,p1,p2`.
pub fn pasv_tuple(ip: std::net::Ipv4Addr, port: u16) -> String {
    let o = ip.octets();
    format!(
        "{},{},{},{},{},{}",
        o[0],
        o[1],
        o[2],
        o[3],
        port >> 8,
        port & 0xff
    )
}

/// Checks a PORT/EPRT target against RFC 2577: same IP as the control peer
/// (when `check_ip`) and never a privileged port. `Err` carries the refusal text.
pub fn check_active_target(
    target: SocketAddr,
    control_peer: IpAddr,
    check_ip: bool,
) -> Result<(), &'static str> {
    if target.port() < 1024 {
        return Err("Refusing a data connection to a privileged port");
    }
    if check_ip && canonical(target.ip()) != canonical(control_peer) {
        return Err("Refusing a data connection to a host other than the client");
    }
    Ok(())
}

/// IPv4-mapped IPv6 addresses compare as their IPv4 form.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Opens the data connection for a transfer: accepts on a passive listener (only
/// from `control_peer` when `check_peer`; foreign connections are dropped and the
/// wait goes on) or connects to an active target from our control address.
pub async fn open(
    endpoint: DataEndpoint,
    control_peer: IpAddr,
    local_ip: IpAddr,
    check_peer: bool,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let fut = async {
        match endpoint {
            DataEndpoint::Passive(listener) => loop {
                let (stream, from) = listener.accept().await?;
                if !check_peer || canonical(from.ip()) == canonical(control_peer) {
                    return Ok(stream);
                }
                tracing::warn!(%from, expected = %control_peer, "refused data connection from a foreign address");
                drop(stream);
            },
            DataEndpoint::Active(target) => {
                let socket = match target {
                    SocketAddr::V4(_) => TcpSocket::new_v4()?,
                    SocketAddr::V6(_) => TcpSocket::new_v6()?,
                };
                if local_ip.is_ipv4() == target.is_ipv4() {
                    socket.bind(SocketAddr::new(local_ip, 0))?;
                }
                socket.connect(target).await
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => {
            let s = r?;
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "data connection timed out",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasv_format() {
        assert_eq!(
            pasv_tuple("192.168.1.2".parse().unwrap(), 50001),
            "192,168,1,2,195,81"
        );
    }

    #[test]
    fn bounce_rules() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(check_active_target("127.0.0.1:2000".parse().unwrap(), peer, true).is_ok());
        assert!(check_active_target("127.0.0.2:2000".parse().unwrap(), peer, true).is_err());
        assert!(check_active_target("127.0.0.2:2000".parse().unwrap(), peer, false).is_ok());
        assert!(check_active_target("127.0.0.1:25".parse().unwrap(), peer, false).is_err());
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(check_active_target("127.0.0.1:2000".parse().unwrap(), mapped, true).is_ok());
    }

    #[tokio::test]
    async fn passive_range_is_respected() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // A one-port range on a port that was just free (fixed ports collide with
        // ephemeral ports of other tests).
        let port = std::net::TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let range = PortRange {
            start: port,
            end: port,
        };
        let a = bind_passive(ip, Some(range)).await.unwrap();
        assert_eq!(a.local_addr().unwrap().port(), port);
        // Every port of the range is taken: a clear error, no port outside it.
        assert!(bind_passive(ip, Some(range)).await.is_err());
        drop(a);
        let again = bind_passive(ip, Some(range)).await.unwrap();
        assert_eq!(again.local_addr().unwrap().port(), port);
    }

    #[tokio::test]
    async fn foreign_data_peer_is_refused() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let l = bind_passive(ip, None).await.unwrap();
        let addr = l.local_addr().unwrap();
        let thief = tokio::spawn(async move {
            let s = TcpSocket::new_v4().unwrap();
            s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            s.connect(addr).await
        });
        let _ = thief.await;
        let real = tokio::spawn(async move { TcpStream::connect(addr).await });
        let s = open(
            DataEndpoint::Passive(l),
            ip,
            ip,
            true,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(s.peer_addr().unwrap().ip(), ip);
        real.await.unwrap().unwrap();
    }
}
