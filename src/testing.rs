//! Helpers for the crate's unit tests.

use tokio::net::{TcpListener, TcpStream};

/// A connected loopback TCP pair: the accepted (server) side and the client side.
pub(crate) async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("address");
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
    (accepted.expect("accept").0, client.expect("connect"))
}
