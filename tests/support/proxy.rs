//! A loopback TCP proxy that can be cut: a stand-in for a network path that goes away.
//!
//! While cut, the listening port is closed (new connections are refused, as with a host that
//! is down) and every open connection is reset, so pooled keep-alive connections die too.
//! Restoring binds the same port again.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards `127.0.0.1:port` to a target until dropped.
pub struct Proxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = watch::Sender::new(true);
        let task = tokio::spawn(serve(listener, addr, target, up.subscribe()));
        Self { addr, up, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the port and resets every connection through it.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Opens the port again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.up.send_replace(false);
        self.task.abort();
    }
}

async fn serve(
    mut listener: TcpListener,
    addr: SocketAddr,
    target: SocketAddr,
    mut up: watch::Receiver<bool>,
) {
    let connections = up.clone();
    loop {
        let cut = tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(forward(client, target, connections.clone()));
                }
                false
            }
            _ = up.wait_for(|up| !up) => true,
        };
        if !cut {
            continue;
        }
        drop(listener);
        if up.wait_for(|up| *up).await.is_err() {
            return;
        }
        // The port was ours a moment ago; SO_REUSEADDR lets it be bound again at once.
        listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr, mut up: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = up.wait_for(|up| !up) => {
            // Dropping with SO_LINGER 0 resets the connection instead of closing it politely.
            let _ = client.set_zero_linger();
        }
    }
}
