//! Assembling and running the Pingora server: the public listeners (the [`Edge`] wrapped in a
//! total header-read deadline; cleartext HTTP/1.1 and, with `[server.tls]`, HTTPS with HTTP/2
//! by ALPN, one application with the same limits behind both), the admin listener
//! (`/healthz`, `/admin/health`, `/metrics`, `/admin/reload`), the upstream health check, the
//! certificate watch and the drain watch (`/readyz` 503 once a graceful shutdown begins).
//! [`run_forever`] serves until SIGTERM (graceful drain, then exit); [`start_background`] runs
//! the same server on its own thread and hands back its addresses, which is how tests and
//! `all-in-one` start a gateway on `127.0.0.1:0`.

mod admin;
mod deadline;
mod tls;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::apps::http_app::HttpServer;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use thiserror::Error;
use tokio::sync::oneshot;

use crate::config::{Config, ms};
use crate::edge::{Edge, EdgeState};
use crate::proxy::HealthCheckService;
pub use deadline::{connection_seen, mark_headers_read};
pub use tls::{CertError, header_list_limit, install_crypto_provider, load_pair};

/// Requests one client connection may send before it is closed (frees per-connection memory).
const KEEPALIVE_REQUEST_LIMIT: u32 = 10_000;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot bind {field} {addr}: {error}")]
    Bind {
        field: &'static str,
        addr: String,
        error: std::io::Error,
    },
    #[error("the server did not start listening on {0} in time")]
    NotListening(SocketAddr),
    #[error("cannot start the server thread: {0}")]
    Thread(std::io::Error),
    /// The message includes the cause's (not a `source` too: printed as a chain it would
    /// show twice).
    #[error("server.tls: {0}")]
    Tls(CertError),
}

impl From<CertError> for ServerError {
    fn from(error: CertError) -> Self {
        ServerError::Tls(error)
    }
}

/// A configured server, not yet running.
pub struct Prepared {
    server: Server,
    pub public_addr: SocketAddr,
    /// The HTTPS listener, when `[server.tls]` configures one.
    pub tls_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
}

/// Resolves `host:port`; port 0 is replaced by a free port now, because Pingora binds by
/// address and does not report the port it got. (Tests only: the port is free when picked and
/// taken a moment later by the server; another process could race for it in between.)
fn resolve(field: &'static str, addr: &str) -> Result<SocketAddr, ServerError> {
    let bind_err = |error| ServerError::Bind {
        field,
        addr: addr.to_owned(),
        error,
    };
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|_| bind_err(std::io::Error::other("not an ip:port address")))?;
    if parsed.port() != 0 {
        return Ok(parsed);
    }
    let probe = TcpListener::bind(parsed).map_err(bind_err)?;
    probe.local_addr().map_err(bind_err)
}

/// Builds the Pingora server with both listeners and the health check.
pub fn prepare(
    config: &Config,
    state: Arc<EdgeState>,
    health: HealthCheckService,
) -> Result<Prepared, ServerError> {
    let public_addr = resolve("server.listen", &config.server.listen)?;
    let admin_addr = resolve("server.admin_listen", &config.server.admin_listen)?;

    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period_secs),
        graceful_shutdown_timeout_seconds: Some(config.server.shutdown_timeout_secs),
        max_retries: config.upstream.max_retries,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let metrics = state.metrics.clone();
    let ratelimit = state.ratelimit.clone();
    let health_state = state.health.clone();
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, Edge { state });
    let mut options = HttpServerOptions::default();
    options.keepalive_request_limit = Some(KEEPALIVE_REQUEST_LIMIT);
    // HTTP/2's keep-alive: a connection with no stream in flight for this long is closed, a
    // header block still arriving included (an HTTP/2 slowloris).
    options.h2_idle_timeout = Some(Duration::from_secs(config.limits.idle_timeout_secs));
    proxy.server_options = Some(options);
    proxy.h2_options = Some(tls::h2_options(&config.server.http2, &config.limits));
    let app = deadline::HeaderDeadline::new(
        proxy,
        ms(config.limits.header_read_timeout_ms),
        Duration::from_secs(config.limits.idle_timeout_secs),
    );
    let app = deadline::FirstRequestDeadline::new(app, ms(config.limits.header_read_timeout_ms));
    let mut public = Service::new("stockgate edge".to_owned(), app);
    public.add_tcp(&public_addr.to_string());
    let mut cert_watch = None;
    let tls_addr = match config.server.tls.listener() {
        Some(listener) => {
            let addr = resolve("server.tls.listen", listener.listen)?;
            tls::install_crypto_provider();
            let watch = tls::CertWatch::load(
                listener.cert_file,
                listener.key_file,
                ms(config.server.tls.reload_interval_ms),
                metrics.clone(),
            )?;
            public.add_tls_with_settings(&addr.to_string(), None, tls::settings(watch.resolver())?);
            cert_watch = Some(background_service("tls certificate watch", watch));
            Some(addr)
        }
        None => None,
    };

    let mut admin = Service::new(
        "stockgate admin".to_owned(),
        HttpServer::new_app(admin::AdminApp::new(
            metrics,
            ratelimit,
            health_state.clone(),
        )),
    );
    admin.add_tcp(&admin_addr.to_string());
    let drain = background_service("drain watch", crate::health::DrainWatch(health_state));

    server.add_service(public);
    server.add_service(admin);
    server.add_service(health);
    server.add_service(drain);
    if let Some(watch) = cert_watch {
        server.add_service(watch);
    }
    Ok(Prepared {
        server,
        public_addr,
        tls_addr,
        admin_addr,
    })
}

/// Serves on the calling thread until SIGTERM (graceful: listeners close, in-flight requests
/// drain for `server.grace_period_secs`) or SIGINT (fast).
pub fn run_forever(prepared: Prepared) {
    tracing::info!(
        public = %prepared.public_addr,
        tls = ?prepared.tls_addr,
        admin = %prepared.admin_addr,
        "gateway listening"
    );
    prepared.server.run(RunArgs::default());
}

/// A server running on its own thread; dropping it shuts it down gracefully.
pub struct RunningServer {
    pub public_addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Ends the server when the handle says so (instead of on a Unix signal).
struct StopSignal(Mutex<Option<oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for StopSignal {
    async fn recv(&self) -> ShutdownSignal {
        let receiver = self.0.lock().ok().and_then(|mut r| r.take());
        if let Some(receiver) = receiver {
            // A dropped sender means the handle is gone: shut down as well.
            let _ = receiver.await;
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Starts the server on a new thread and waits until every listener accepts connections.
pub fn start_background(prepared: Prepared) -> Result<RunningServer, ServerError> {
    let (public_addr, tls_addr, admin_addr) =
        (prepared.public_addr, prepared.tls_addr, prepared.admin_addr);
    let (stop, stopped) = oneshot::channel();
    let server = prepared.server;
    let thread = std::thread::Builder::new()
        .name("stockgate-pingora".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(StopSignal(Mutex::new(Some(stopped)))),
            })
        })
        .map_err(ServerError::Thread)?;
    let running = RunningServer {
        public_addr,
        tls_addr,
        admin_addr,
        stop: Some(stop),
        thread: Some(thread),
    };
    wait_listening(public_addr)?;
    if let Some(addr) = tls_addr {
        wait_listening(addr)?;
    }
    wait_listening(admin_addr)?;
    Ok(running)
}

fn wait_listening(addr: SocketAddr) -> Result<(), ServerError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(ServerError::NotListening(addr))
}

impl RunningServer {
    /// Shuts down gracefully and waits for the server thread to end.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the server thread panicked");
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
