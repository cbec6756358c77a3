//! A stable Redis endpoint for the `redis-failover` fault: a TCP forwarder on a loopback port of
//! its own that the services are configured with, in front of whichever redis-server is the
//! primary (what a managed Redis's stable endpoint or a Sentinel-aware proxy gives clients).
//! [`Endpoint::switch`] points it at another server and closes every connection made to the
//! old one, as a failover does; clients reconnect and land on the new primary.
//!
//! The fault also runs the replication link through one ([`Endpoint::cut`]): a replica that
//! has stopped following its primary holds exactly what it had when the link was cut.
//!
//! It runs on a thread of its own (a single-threaded runtime), apart from the flash sale's
//! runtime, so forwarding is never starved by the load it carries.

use std::net::TcpListener;
use std::thread::JoinHandle;

use anyhow::Context;
use tokio::net::TcpStream;
use tokio::sync::watch;

pub struct Endpoint {
    pub port: u16,
    /// The port forwarded to; `None`: cut (connections closed, new ones closed at once).
    /// Dropping the sender shuts the forwarder down.
    target: Option<watch::Sender<Option<u16>>>,
    thread: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// Listens on a free loopback port and forwards every connection to `127.0.0.1:target`.
    pub fn start(target: u16) -> anyhow::Result<Endpoint> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let (sender, receiver) = watch::channel(Some(target));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("the endpoint's runtime")?;
        let thread = std::thread::Builder::new()
            .name("redis-endpoint".into())
            .spawn(move || runtime.block_on(serve(listener, receiver)))?;
        Ok(Endpoint {
            port,
            target: Some(sender),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// From now on connections go to `127.0.0.1:port`; those open to the old target are closed.
    pub fn switch(&self, port: u16) {
        self.send(Some(port));
    }

    /// Forwards nothing from now on: open connections are closed, new ones closed at once.
    pub fn cut(&self) {
        self.send(None);
    }

    fn send(&self, target: Option<u16>) {
        if let Some(sender) = &self.target {
            sender.send_replace(target);
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.target = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: TcpListener, mut target: watch::Receiver<Option<u16>>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                // Cut: the connection is dropped here, closing it.
                if let Some(port) = *target.borrow() {
                    tokio::spawn(forward(client, port, target.clone()));
                }
            }
            changed = target.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Copies bytes both ways until either side closes or the target changes. A target that
/// refuses the connection (the old primary is gone) closes the client's: it retries.
async fn forward(mut client: TcpStream, port: u16, mut target: watch::Receiver<Option<u16>>) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // Switched while connecting: this server is no longer the one.
    if *target.borrow_and_update() != Some(port) {
        return;
    }
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = target.changed() => {}
    }
}
