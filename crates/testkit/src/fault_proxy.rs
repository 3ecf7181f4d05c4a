//! An in-process TCP fault proxy: listens on a free loopback port and forwards every
//! connection to one backend (PostgreSQL, Redis, …). A test switches its mode:
//!
//! - `Pass`: forwards bytes both ways.
//! - `Refuse`: the listening socket is closed (connects get ECONNREFUSED) and every open
//!   connection is reset (SO_LINGER 0, both sides).
//! - `Silent`: a network that drops packets. New connections are left in the listen backlog
//!   unanswered; open connections are held but no byte moves in either direction. Back in
//!   `Pass`, held bytes and backlogged connections move on, as after a healed network.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Refuse,
    Silent,
    /// The proxy is being dropped: everything closes.
    Shutdown,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pass => "pass",
            Mode::Refuse => "refuse",
            Mode::Silent => "silent",
            Mode::Shutdown => "shutdown",
        }
    }
}

/// A running proxy; dropping it closes the listener and every connection.
pub struct FaultProxy {
    name: String,
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    received: Arc<AtomicU64>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`; `name` appears in
    /// its log lines.
    pub async fn start(name: &str, upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(Mode::Pass);
        let received = Arc::new(AtomicU64::new(0));
        tokio::spawn(accept_loop(listener, addr, upstream, rx, received.clone()));
        Ok(Self {
            name: name.to_owned(),
            addr,
            mode: tx,
            received,
        })
    }

    /// Bytes received from clients so far (whether forwarded yet or held): how a test tells
    /// whether a client still talks to the backend.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set(&self, mode: Mode) {
        tracing::info!(proxy = %self.name, mode = mode.name(), "fault proxy mode");
        self.mode.send_replace(mode);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Shutdown);
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Waits until the mode is `Pass` (true) or the connection must end (false).
async fn until_pass(rx: &mut watch::Receiver<Mode>) -> bool {
    loop {
        let mode = *rx.borrow_and_update();
        match mode {
            Mode::Pass => return true,
            Mode::Refuse | Mode::Shutdown => return false,
            Mode::Silent => {
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut rx: watch::Receiver<Mode>,
    received: Arc<AtomicU64>,
) {
    let mut listener = Some(listener);
    loop {
        let mode = *rx.borrow_and_update();
        match mode {
            Mode::Shutdown => return,
            Mode::Refuse => {
                // Closing the listening socket: connects are refused, the backlog is reset.
                listener = None;
                if rx.changed().await.is_err() {
                    return;
                }
            }
            Mode::Silent | Mode::Pass => {
                if listener.is_none() {
                    listener = rebind(addr, &mut rx).await;
                    if listener.is_none() {
                        continue;
                    }
                }
                let Some(l) = listener.as_ref() else { continue };
                if mode == Mode::Silent {
                    // Not accepting: new connections wait in the backlog, unanswered.
                    if rx.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                tokio::select! {
                    accepted = l.accept() => {
                        if let Ok((client, _)) = accepted {
                            tokio::spawn(connection(client, upstream, rx.clone(), received.clone()));
                        }
                    }
                    changed = rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Binds the proxy's port again (after `Refuse`), retrying briefly; gives up (None) when the
/// mode moves on meanwhile or the port stays taken.
async fn rebind(addr: SocketAddr, rx: &mut watch::Receiver<Mode>) -> Option<TcpListener> {
    for _ in 0..100 {
        match bind(addr) {
            Ok(l) => return Some(l),
            Err(e) => {
                if matches!(*rx.borrow(), Mode::Refuse | Mode::Shutdown) {
                    return None;
                }
                tracing::debug!(%addr, error = %e, "fault proxy: rebinding; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    None
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut rx: watch::Receiver<Mode>,
    received: Arc<AtomicU64>,
) {
    let server =
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream)).await {
            Ok(Ok(s)) => s,
            _ => {
                let _ = client.set_zero_linger();
                return;
            }
        };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut client = client;
    let mut server = server;
    let reset = {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let up = pump(&mut cr, &mut sw, rx.clone(), Some(&received));
        let down = pump(&mut sr, &mut cw, rx.clone(), None);
        tokio::select! {
            r = async { tokio::try_join!(up, down) } => r.is_err(),
            () = async {
                let _ = rx.wait_for(|m| matches!(m, Mode::Refuse | Mode::Shutdown)).await;
            } => true,
        }
    };
    if reset {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// Copies one direction while the mode allows; Ok at end of stream (after passing the
/// half-close on), Err when the connection must be torn down.
async fn pump<R, W>(
    read: &mut R,
    write: &mut W,
    mut rx: watch::Receiver<Mode>,
    counter: Option<&AtomicU64>,
) -> Result<(), ()>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !until_pass(&mut rx).await {
            return Err(());
        }
        let n = read.read(&mut buf).await.map_err(drop)?;
        if let Some(c) = counter {
            c.fetch_add(n as u64, Ordering::SeqCst);
        }
        // Bytes read while the network went silent are held until it heals.
        if !until_pass(&mut rx).await {
            return Err(());
        }
        if n == 0 {
            let _ = write.shutdown().await;
            return Ok(());
        }
        write.write_all(&buf[..n]).await.map_err(drop)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn pass_refuse_silent_pass() {
        let echo = echo_server().await;
        let proxy = FaultProxy::start("test", echo).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut c, b"hello").await.unwrap(), b"hello");
        assert_eq!(proxy.received(), 5);

        // Refuse: the open connection breaks, new connects are refused.
        proxy.set(Mode::Refuse);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(roundtrip(&mut c, b"x").await.is_err());
        let e = TcpStream::connect(proxy.addr()).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);

        // Pass again: the same port serves.
        proxy.set(Mode::Pass);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut c, b"again").await.unwrap(), b"again");

        // Silent: bytes are held, new connections unanswered; both resume on Pass.
        proxy.set(Mode::Silent);
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.write_all(b"held").await.unwrap();
        let mut buf = [0u8; 4];
        assert!(
            tokio::time::timeout(Duration::from_millis(300), c.read_exact(&mut buf))
                .await
                .is_err()
        );
        let mut late = TcpStream::connect(proxy.addr()).await.unwrap();
        late.write_all(b"late").await.unwrap();
        let mut lbuf = [0u8; 4];
        assert!(
            tokio::time::timeout(Duration::from_millis(300), late.read_exact(&mut lbuf))
                .await
                .is_err()
        );
        proxy.set(Mode::Pass);
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"held");
        tokio::time::timeout(Duration::from_secs(2), late.read_exact(&mut lbuf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&lbuf, b"late");
    }
}
