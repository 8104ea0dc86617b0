//! A loopback TCP proxy with fault modes: a stand-in for a network path, or a server behind it,
//! that goes away, hangs or crawls.
//!
//! Cut: the listening port is closed (new connections are refused, as with a host that is down).
//! Hang: connections are accepted and never answered. Trickle: answers are forwarded one byte a
//! second. Entering any fault resets every open connection, so pooled keep-alive connections
//! meet the fault too; restoring binds the same port again if it was cut.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Forwards both ways.
    Up,
    /// The port is closed.
    Cut,
    /// Accepts and never answers.
    Hang,
    /// Forwards requests, and answers one byte a second.
    Trickle,
}

/// Forwards `127.0.0.1:port` to a target until dropped.
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = watch::Sender::new(Mode::Up);
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(
            listener,
            addr,
            target,
            mode.subscribe(),
            Arc::clone(&accepted),
        ));
        Self {
            addr,
            mode,
            accepted,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the port and resets every connection through it.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Resets every connection; new ones are accepted and never answered.
    pub fn hang(&self) {
        self.mode.send_replace(Mode::Hang);
    }

    /// Resets every connection; new ones get their answers one byte a second.
    pub fn trickle(&self) {
        self.mode.send_replace(Mode::Trickle);
    }

    /// Forwards normally again (opening the port again if it was cut).
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Up);
    }

    /// Connections accepted so far, whatever the mode.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Cut);
        self.task.abort();
    }
}

async fn serve(
    mut listener: TcpListener,
    addr: SocketAddr,
    target: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    accepted: Arc<AtomicUsize>,
) {
    let connections = mode.clone();
    loop {
        let cut = tokio::select! {
            result = listener.accept() => {
                if let Ok((client, _)) = result {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(handle(client, target, connections.clone()));
                }
                false
            }
            _ = mode.wait_for(|mode| *mode == Mode::Cut) => true,
        };
        if !cut {
            continue;
        }
        drop(listener);
        if mode.wait_for(|mode| *mode != Mode::Cut).await.is_err() {
            return;
        }
        // The port was ours a moment ago; SO_REUSEADDR lets it be bound again at once.
        listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
    }
}

/// Serves one connection in the mode it arrived in, until it ends or the mode changes; then
/// resets it.
async fn handle(mut client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let arrived = *mode.borrow_and_update();
    {
        let serving = async {
            match arrived {
                Mode::Up => {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }
                Mode::Trickle => {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        trickle(&mut client, &mut server).await;
                    }
                }
                Mode::Hang => std::future::pending().await,
                Mode::Cut => {}
            }
        };
        tokio::select! {
            () = serving => {}
            _ = mode.wait_for(|mode| *mode != arrived) => {}
        }
    }
    // Dropping with SO_LINGER 0 resets the connection instead of closing it politely.
    let _ = client.set_zero_linger();
}

/// Forwards the client's bytes as they come and the server's one a second.
async fn trickle(client: &mut TcpStream, server: &mut TcpStream) {
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let requests = tokio::io::copy(&mut client_read, &mut server_write);
    let answers = async {
        let mut byte = [0u8; 1];
        while let Ok(1) = server_read.read(&mut byte).await {
            if client_write.write_all(&byte).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::pin!(requests, answers);
    tokio::select! {
        // The client is done sending; its answers keep crawling.
        _ = &mut requests => answers.await,
        () = &mut answers => {}
    }
}
