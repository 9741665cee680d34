//! The data channel: passive listeners (PASV, EPSV — RFC 959 §4.1.2, RFC 2428 §3)
//! and active connections (PORT, EPRT — RFC 959 §4.1.2, RFC 2428 §2), with the
//! RFC 2577 protections: one pending listener per session, random ports, the data
//! peer must be the control peer, no bounce to foreign hosts or privileged ports.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

use crate::config::PortRange;
use crate::proxy::ProxyHeader;

/// A place among the `passive.max_pending` listeners (`None`: uncounted).
pub type PendingSlot = Option<tokio::sync::OwnedSemaphorePermit>;

/// How the next data connection will be made.
#[derive(Debug)]
pub enum DataEndpoint {
    /// We listen; the client connects (PASV/EPSV). The slot counts against
    /// `passive.max_pending` until the listener is dropped.
    Passive(TcpListener, PendingSlot),
    /// We connect to the client (PORT/EPRT).
    Active(SocketAddr),
    /// PROXY mode: a port reserved on the shared data listener
    /// (`passive.proxy_listen`).
    Shared(SharedPort),
}

/// Binds a passive listener on `ip`, on a random port of `range` (or of the
/// kernel's ephemeral range when none is configured). Tries random ports first, then scans, so a
/// busy range fails only when every port is taken.
pub async fn bind_passive(ip: IpAddr, range: Option<PortRange>) -> io::Result<TcpListener> {
    // Without a configured range: a random port of the kernel's ephemeral range,
    // bound explicitly with SO_REUSEADDR. bind(port 0) searches for a free port and,
    // with thousands of data connections in TIME_WAIT (many small transfers), that
    // search took 95 % of the CPU and a fifth of the speed; an explicit port may reuse
    // one in TIME_WAIT.
    let range = range.unwrap_or_else(ephemeral_range);
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

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`), else the
/// IANA dynamic range 49152–65535.
pub fn ephemeral_range() -> PortRange {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            let (start, end) = (it.next()??, it.next()??);
            (start >= 1024 && start <= end).then_some(PortRange { start, end })
        })
        .unwrap_or(PortRange {
            start: 49152,
            end: 65535,
        })
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

/// An open data connection: plain TCP, or TLS under `PROT P` (RFC 4217 §9).
#[derive(Debug)]
pub enum DataStream {
    /// `PROT C`.
    Plain(TcpStream),
    /// `PROT P`.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for DataStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            DataStream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            DataStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for DataStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            DataStream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            DataStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            DataStream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            DataStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    /// Under TLS this sends close_notify first (RFC 4217 §10: the end of a
    /// transfer must be a TLS closure, not just a TCP FIN).
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            DataStream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            DataStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Who may connect and how long to wait, for one data connection.
#[derive(Debug, Clone)]
pub struct DataPolicy {
    /// The client (real address, after any PROXY header).
    pub control_peer: IpAddr,
    /// Our socket address of the control connection: active connections start here.
    pub local_ip: IpAddr,
    /// Refuse passive connections from another IP (RFC 2577).
    pub check_peer: bool,
    /// PROXY mode: passive connections start with a PROXY header, only from these
    /// networks (empty: any).
    pub proxy: Option<Vec<ipnet::IpNet>>,
    /// Give up after this long.
    pub timeout: Duration,
}

/// Opens the data connection for a transfer: accepts on a passive listener (only
/// from `control_peer` when `check_peer`; foreign connections are dropped and the
/// wait goes on), takes the connection the shared PROXY listener routed here, or
/// connects to an active target from our control address.
pub async fn open(endpoint: DataEndpoint, policy: &DataPolicy) -> io::Result<TcpStream> {
    let fut = async {
        match endpoint {
            DataEndpoint::Passive(listener, _slot) => loop {
                let (mut stream, from) = listener.accept().await?;
                let client = match &policy.proxy {
                    None => from.ip(),
                    Some(trusted) => match proxied_source(&mut stream, from, trusted).await {
                        Some(ip) => ip,
                        None => continue,
                    },
                };
                if !policy.check_peer || canonical(client) == canonical(policy.control_peer) {
                    return Ok(stream);
                }
                tracing::warn!(from = %client, expected = %policy.control_peer, "refused data connection from a foreign address");
                drop(stream);
            },
            DataEndpoint::Shared(mut port) => (&mut port.rx).await.map_err(|_| {
                io::Error::new(io::ErrorKind::ConnectionAborted, "shared data port closed")
            }),
            DataEndpoint::Active(target) => {
                let socket = match target {
                    SocketAddr::V4(_) => TcpSocket::new_v4()?,
                    SocketAddr::V6(_) => TcpSocket::new_v6()?,
                };
                if policy.local_ip.is_ipv4() == target.is_ipv4() {
                    socket.bind(SocketAddr::new(policy.local_ip, 0))?;
                }
                socket.connect(target).await
            }
        }
    };
    match tokio::time::timeout(policy.timeout, fut).await {
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

/// Reads the PROXY header of a data connection from a trusted balancer: the real
/// client IP, or `None` (connection dropped) for an untrusted peer, a bad header or
/// a `LOCAL` health check.
async fn proxied_source(
    stream: &mut TcpStream,
    from: SocketAddr,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    match crate::proxy::read_trusted(stream, from, trusted).await? {
        Ok(ProxyHeader::Proxied { source, .. }) => Some(source.ip()),
        Ok(ProxyHeader::Local) => {
            tracing::debug!(%from, "PROXY LOCAL on a data port (health check)");
            None
        }
        Err(e) => {
            tracing::info!(%from, error = %e, "data connection without a valid PROXY header");
            None
        }
    }
}

/// The shared passive port of PROXY mode (`passive.proxy_listen`): PASV reserves a
/// port number of `passive.ports` without binding it; the load balancer forwards
/// every port of the range to one listener and names the original destination
/// port in the PROXY header, which picks the waiting session.
#[derive(Debug)]
pub struct SharedPorts {
    range: PortRange,
    pending: std::sync::Mutex<HashMap<u16, Pending>>,
    next_token: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Pending {
    token: u64,
    peer: IpAddr,
    tx: oneshot::Sender<TcpStream>,
}

/// A reserved port of [`SharedPorts`]; released when dropped.
#[derive(Debug)]
pub struct SharedPort {
    /// The port number to announce.
    pub port: u16,
    token: u64,
    rx: oneshot::Receiver<TcpStream>,
    owner: Arc<SharedPorts>,
}

impl Drop for SharedPort {
    fn drop(&mut self) {
        let mut pending = self.owner.lock();
        if pending
            .get(&self.port)
            .is_some_and(|p| p.token == self.token)
        {
            pending.remove(&self.port);
        }
    }
}

/// Why the shared listener refused a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum DeliverError {
    /// No session waits on that port.
    NotPending,
    /// A session waits there, but for another client IP (RFC 2577 port theft).
    ForeignPeer,
}

impl SharedPorts {
    /// Ports of `range`, none reserved.
    pub fn new(range: PortRange) -> Arc<Self> {
        Arc::new(Self {
            range,
            pending: std::sync::Mutex::new(HashMap::new()),
            next_token: std::sync::atomic::AtomicU64::new(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a random free port of the range for a session of `peer`.
    pub fn reserve(self: &Arc<Self>, peer: IpAddr) -> io::Result<SharedPort> {
        let span = u32::from(self.range.end - self.range.start) + 1;
        let offset = rand::thread_rng().gen_range(0..span);
        let mut pending = self.lock();
        for i in 0..span {
            let port = (self.range.start as u32 + (offset + i) % span) as u16;
            if pending.contains_key(&port) {
                continue;
            }
            let token = self
                .next_token
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            pending.insert(
                port,
                Pending {
                    token,
                    peer: canonical(peer),
                    tx,
                },
            );
            return Ok(SharedPort {
                port,
                token,
                rx,
                owner: self.clone(),
            });
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "every passive port is reserved",
        ))
    }

    /// Hands a connection that arrived for `port` from `source` to the session
    /// waiting there. A foreign source leaves the reservation in place.
    pub fn deliver(
        &self,
        port: u16,
        source: IpAddr,
        check_peer: bool,
        stream: TcpStream,
    ) -> Result<(), DeliverError> {
        let mut pending = self.lock();
        match pending.get(&port) {
            None => return Err(DeliverError::NotPending),
            Some(p) if check_peer && p.peer != canonical(source) => {
                return Err(DeliverError::ForeignPeer)
            }
            Some(_) => {}
        }
        let p = pending.remove(&port).ok_or(DeliverError::NotPending)?;
        // The session may have given up meanwhile: then the connection just closes.
        let _ = p.tx.send(stream);
        Ok(())
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
        let s = open(DataEndpoint::Passive(l, None), &policy(ip))
            .await
            .unwrap();
        assert_eq!(s.peer_addr().unwrap().ip(), ip);
        real.await.unwrap().unwrap();
    }

    fn policy(ip: IpAddr) -> DataPolicy {
        DataPolicy {
            control_peer: ip,
            local_ip: ip,
            check_peer: true,
            proxy: None,
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn shared_ports_route_by_port_and_peer() {
        let range = PortRange {
            start: 30000,
            end: 30001,
        };
        let ports = SharedPorts::new(range);
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let a = ports.reserve(client).unwrap();
        let b = ports.reserve(client).unwrap();
        assert_ne!(a.port, b.port);
        assert!(ports.reserve(client).is_err(), "range exhausted");
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let (s1, _) = l.accept().await.unwrap();
        // A thief from another IP is refused and the reservation stays.
        assert_eq!(
            ports.deliver(a.port, "192.0.2.9".parse().unwrap(), true, s1),
            Err(DeliverError::ForeignPeer)
        );
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let (s2, _) = l.accept().await.unwrap();
        assert_eq!(ports.deliver(a.port, client, true, s2), Ok(()));
        let got = open(DataEndpoint::Shared(a), &policy(client)).await;
        assert!(got.is_ok());
        // Delivered and dropped reservations free their ports again.
        drop(b);
        let c = ports.reserve(client).unwrap();
        let d = ports.reserve(client).unwrap();
        assert_ne!(c.port, d.port);
        let _c3 = TcpStream::connect(addr).await.unwrap();
        let (s3, _) = l.accept().await.unwrap();
        assert_eq!(
            ports.deliver(30005, client, true, s3),
            Err(DeliverError::NotPending)
        );
    }
}
