//! Listening sockets and what happens before HTTP: binding one `SO_REUSEPORT` socket per
//! worker, refusing a connection over the cap, and spotting an HTTP/2 preface when h2c is off.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::conn::{Timeouts, TrackedIo};

/// Whether a plain connection opens with the HTTP/2 preface (`PRI * HTTP/2.0`), which is
/// refused when h2c is off. Waits for the first bytes at most the header timeout.
pub async fn h2_preface(io: &TrackedIo<tokio::net::TcpStream>, limits: Timeouts) -> bool {
    const PRI: &[u8] = b"PRI * HTTP/2.0";
    let wait = limits.header.min(limits.idle);
    let peeked = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 14];
        loop {
            match io.get_ref().peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n >= PRI.len() || buf[..n] != PRI[..n] => return buf[..n] == *PRI,
                // A prefix of the preface so far: wait for more.
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await;
    // On timeout, let the connection's own header/idle timeouts deal with it.
    peeked.unwrap_or(false)
}

/// Over the connection cap: a short 503 and close, without reading the request.
pub async fn refuse_connection(mut stream: tokio::net::TcpStream, retry_after: u64) {
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {retry_after}\r\nCache-Control: no-store\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\nConnection: close\r\n\r\nservice unavailable\n"
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(msg.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Whether some socket already listens on `addr` (port 0: never). A probe bound with
/// SO_REUSEADDR but not SO_REUSEPORT fails exactly then: connections left in TIME_WAIT by a
/// previous run do not count.
pub fn already_served(addr: SocketAddr) -> bool {
    use socket2::{Domain, Protocol, Socket, Type};
    if addr.port() == 0 {
        return false;
    }
    let Ok(probe) = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
    else {
        return false;
    };
    let _ = probe.set_reuse_address(true);
    matches!(probe.bind(&addr.into()), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
}

/// Binds `n` listening sockets to `addr` with `SO_REUSEPORT`, one per worker. With port 0 the
/// first socket picks the port and the others join it.
pub fn bind_listeners(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(4096)?;
        let listener: std::net::TcpListener = s.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}
