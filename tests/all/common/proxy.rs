//! A TCP forwarder a test can kill and bring back on the same port: the
//! honest way to make a source database unreachable to a running host (its
//! connections drop, new ones are refused) while the database itself stays
//! up for the test to write to.

use std::net::SocketAddr;

use tokio::net::{TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A forwarder from `127.0.0.1:port` to a target address.
pub struct Proxy {
    /// The port it listens on.
    pub port: u16,
    target: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let mut p = Self { port: 0, target, task: None };
        p.listen();
        p
    }

    /// Closes the listener and every forwarded connection: the port refuses
    /// connections until [`Proxy::revive`].
    pub async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn revive(&mut self) {
        assert!(self.task.is_none(), "the proxy is running");
        self.listen();
    }

    fn listen(&mut self) {
        let socket = TcpSocket::new_v4().unwrap();
        // The port was just in use (TIME_WAIT connections keep it bound).
        socket.set_reuseaddr(true).unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 1], self.port))).unwrap();
        let listener = socket.listen(64).unwrap();
        self.port = listener.local_addr().unwrap().port();
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            // Dropped with this task when it is aborted: every connection closes.
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Splits `url` around its `host:port`: `postgres://u@127.0.0.1:5432/db?x`
/// -> (`postgres://u@`, 127.0.0.1:5432, `/db?x`).
fn split(url: &str) -> (&str, SocketAddr, &str) {
    let start = url.find("://").unwrap() + 3;
    let start = url[start..].find('@').map_or(start, |at| start + at + 1);
    let end = url[start..].find(['/', '?']).map_or(url.len(), |e| start + e);
    let authority = &url[start..end];
    let target: SocketAddr = authority
        .replace("localhost", "127.0.0.1")
        .parse()
        .unwrap_or_else(|e| panic!("`{authority}` of {url} is not an address with a port: {e}"));
    (&url[..start], target, &url[end..])
}

impl Proxy {
    /// A proxy to the database of `url`, and the URL that goes through it.
    pub async fn for_url(url: &str) -> (Self, String) {
        let (head, target, tail) = split(url);
        let proxy = Self::start(target).await;
        let url = format!("{head}127.0.0.1:{}{tail}", proxy.port);
        (proxy, url)
    }
}
