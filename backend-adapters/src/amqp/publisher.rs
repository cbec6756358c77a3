//! [`AmqpPublisher`]: one connection, one session, one sending link, used by one caller at a
//! time (the outbox relay sends its batches one after the other, so one link keeps them in
//! order). `publish` returns `Ok` only once the broker has accepted every message of the
//! batch. Any failure of the connection drops it; the next `publish` reconnects, no sooner
//! than a backoff (100 ms doubling to 5 s) after the last failed attempt, so a broker that is
//! down costs one quick refusal per relay round, not a connection storm.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::link::delivery::DeliveryFut;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::SenderSettleMode;
use fe2o3_amqp::types::messaging::{Outcome, Target, TerminusDurability};
use fe2o3_amqp::{Connection, Sender, Session};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::{AmqpError, AmqpSettings, OutgoingMessage};

/// The connection's idle time-out (AMQP `idle-time-out`), ms.
const IDLE_TIME_OUT_MS: u32 = 60_000;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Sends batches to one address and waits for the broker's `accepted` of each message.
pub struct AmqpPublisher {
    settings: AmqpSettings,
    state: Mutex<State>,
    connected: AtomicBool,
}

#[derive(Default)]
struct State {
    link: Option<Link>,
    /// Failed connection attempts since the last success.
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

struct Link {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    sender: Sender,
}

impl AmqpPublisher {
    /// A publisher that connects on its first `publish` (a broker that is down at start does
    /// not stop the service: the outbox holds the events until it is back).
    pub fn new(settings: AmqpSettings) -> AmqpPublisher {
        AmqpPublisher {
            settings,
            state: Mutex::new(State::default()),
            connected: AtomicBool::new(false),
        }
    }

    /// Connects now (start-up checks and tests); `publish` would do the same.
    pub async fn connect(&self) -> Result<(), AmqpError> {
        let mut state = self.state.lock().await;
        if state.link.is_none() {
            self.reconnect(&mut state).await?;
        }
        Ok(())
    }

    /// Whether the last attempt left a live link.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn settings(&self) -> &AmqpSettings {
        &self.settings
    }

    /// Sends every message in order and waits until the broker accepted each. An error means
    /// some may have been stored and some not: the caller sends the whole batch again later,
    /// and consumers (or Service Bus duplicate detection) drop repeats by `message-id`.
    pub async fn publish(&self, messages: &[OutgoingMessage]) -> Result<(), AmqpError> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock().await;
        let reused = state.link.is_some();
        match self.send_on_link(&mut state, messages).await {
            // A link that sat idle may have been closed by the broker meanwhile (Service Bus
            // detaches idle links; a broker restarted): one fresh connection at once, rather
            // than a failed relay round.
            Err(AmqpError::Send { .. }) if reused => {
                state.retry_at = None;
                self.send_on_link(&mut state, messages).await
            }
            sent => sent,
        }
    }

    /// One attempt: connects when there is no link, sends the batch on it; a failure of the
    /// link drops it.
    async fn send_on_link(
        &self,
        state: &mut State,
        messages: &[OutgoingMessage],
    ) -> Result<(), AmqpError> {
        if state.link.is_none() {
            self.reconnect(state).await?;
        }
        let Some(link) = state.link.as_mut() else {
            return Err(AmqpError::Connect {
                endpoint: self.settings.target.endpoint(),
                message: "no link after connecting".into(),
            });
        };
        let sent = tokio::time::timeout(
            self.settings.send_timeout,
            send_all(&mut link.sender, messages),
        )
        .await
        .unwrap_or(Err(AmqpError::Timeout(self.settings.send_timeout)));
        match sent {
            Ok(()) => Ok(()),
            // The broker answered: the link works, the message was refused (too large, an
            // entity that is disabled, ...). Resending is the relay's call.
            Err(error @ AmqpError::NotAccepted { .. }) => Err(error),
            Err(error) => {
                state.last_error = error.to_string();
                self.drop_link(state);
                Err(error)
            }
        }
    }

    async fn reconnect(&self, state: &mut State) -> Result<(), AmqpError> {
        let endpoint = self.settings.target.endpoint();
        if let Some(retry_at) = state.retry_at {
            let now = Instant::now();
            if retry_at > now {
                return Err(AmqpError::Backoff {
                    endpoint,
                    wait_ms: (retry_at - now).as_millis() as u64,
                    last: state.last_error.clone(),
                });
            }
        }
        match open_sender(&self.settings).await {
            Ok(link) => {
                if state.failures > 0 {
                    tracing::info!(%endpoint, failures = state.failures, "amqp broker reachable again");
                }
                state.link = Some(link);
                state.failures = 0;
                state.retry_at = None;
                self.connected.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << state.failures.min(16))
                    .min(MAX_BACKOFF);
                state.retry_at = Some(Instant::now() + backoff);
                state.last_error = error.to_string();
                self.connected.store(false, Ordering::Relaxed);
                Err(error)
            }
        }
    }

    /// Forgets the link; its connection is closed in the background (a broker that is gone
    /// does not answer the close, which must not hold up the caller).
    fn drop_link(&self, state: &mut State) {
        self.connected.store(false, Ordering::Relaxed);
        // The next attempt waits the first backoff: the broker just failed.
        state.failures = state.failures.max(1);
        state.retry_at = Some(Instant::now() + FIRST_BACKOFF);
        if let Some(link) = state.link.take() {
            tokio::spawn(close(link));
        }
    }
}

async fn close(mut link: Link) {
    let quick = Duration::from_secs(2);
    let _ = tokio::time::timeout(quick, link.sender.close()).await;
    let _ = tokio::time::timeout(quick, link.session.end()).await;
    let _ = tokio::time::timeout(quick, link.connection.close()).await;
}

/// Sends every message without waiting (the broker gets them back to back on the link),
/// then waits for each disposition in order.
async fn send_all(sender: &mut Sender, messages: &[OutgoingMessage]) -> Result<(), AmqpError> {
    let mut pending: Vec<(&str, DeliveryFut<Result<Outcome, SendError>>)> =
        Vec::with_capacity(messages.len());
    for message in messages {
        let delivery = sender
            .send_batchable(message.to_amqp())
            .await
            .map_err(|e| send_error(&message.message_id, e))?;
        pending.push((&message.message_id, delivery));
    }
    for (message_id, delivery) in pending {
        match delivery.await {
            Ok(Outcome::Accepted(_)) => {}
            Ok(other) => {
                return Err(AmqpError::NotAccepted {
                    message_id: message_id.to_owned(),
                    outcome: format!("{other:?}"),
                });
            }
            Err(e) => return Err(send_error(message_id, e)),
        }
    }
    Ok(())
}

fn send_error(message_id: &str, error: SendError) -> AmqpError {
    AmqpError::Send {
        message_id: message_id.to_owned(),
        message: error.to_string(),
    }
}

/// A connection and a session to the broker of `settings` (TLS for `amqps://`), within its
/// connect timeout.
pub(super) async fn open_session(
    settings: &AmqpSettings,
    role: &str,
) -> Result<(ConnectionHandle<()>, SessionHandle<()>), AmqpError> {
    let endpoint = settings.target.endpoint();
    let failed = |message: String| AmqpError::Connect {
        endpoint: endpoint.clone(),
        message,
    };
    let opened = tokio::time::timeout(settings.connect_timeout, async {
        let host = settings.target.host.as_str();
        let tcp = TcpStream::connect((host, settings.target.port))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let container_id = format!("stockgate-{role}-{}", uuid::Uuid::new_v4().simple());
        let builder = Connection::builder()
            .container_id(container_id)
            // The broker must send a frame (heartbeats at least) within this, or the
            // connection is closed: a broker that goes silent after Open would otherwise keep
            // the connection's tasks and socket for as long as TCP does.
            .idle_time_out(IDLE_TIME_OUT_MS)
            // Service Bus routes the connection by the namespace host name in `open`.
            .hostname(host)
            .sasl_hostname(host)
            .sasl_profile(SaslProfile::Plain {
                username: settings.user.clone(),
                password: settings.key.clone(),
            });
        // `amqps` here is TLS from the first byte (port 5671, as Service Bus serves it); the
        // builder is told `amqp` because it is handed a stream that is already TLS (its own
        // `amqps` would first send the AMQP TLS protocol header, which Service Bus refuses).
        let mut connection = if settings.target.tls {
            let tls = tls_connector()
                .map_err(&failed)?
                .connect(server_name(host).map_err(&failed)?, tcp)
                .await
                .map_err(|e| failed(format!("tls: {e}")))?;
            builder.scheme("amqp").open_with_stream(tls).await
        } else {
            builder.scheme("amqp").open_with_stream(tcp).await
        }
        .map_err(|e| failed(format!("open: {e}")))?;
        match Session::begin(&mut connection).await {
            Ok(session) => Ok((connection, session)),
            Err(e) => {
                let _ = connection.close().await;
                Err(failed(format!("begin session: {e}")))
            }
        }
    })
    .await;
    opened.unwrap_or_else(|_| {
        Err(failed(format!(
            "no answer within {:?}",
            settings.connect_timeout
        )))
    })
}

async fn open_sender(settings: &AmqpSettings) -> Result<Link, AmqpError> {
    let (mut connection, mut session) = open_session(settings, "outbox").await?;
    let attach = Sender::builder()
        .name(format!(
            "stockgate-outbox-{}",
            uuid::Uuid::new_v4().simple()
        ))
        // Durable: RabbitMQ declares a `/queue/` target durable only then, so the queue
        // and its messages outlive a broker restart (Service Bus entities always do).
        .target(
            Target::builder()
                .address(settings.address.clone())
                .durable(TerminusDurability::Configuration)
                .build(),
        )
        // Every message waits for its disposition: the broker settles, never the sender.
        .sender_settle_mode(SenderSettleMode::Unsettled)
        .attach(&mut session);
    match tokio::time::timeout(settings.connect_timeout, attach).await {
        Ok(Ok(sender)) => Ok(Link {
            connection,
            session,
            sender,
        }),
        outcome => {
            let message = match outcome {
                Ok(Err(e)) => format!("attach to {:?}: {e}", settings.address),
                _ => format!("attach to {:?}: no answer", settings.address),
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), connection.close()).await;
            Err(AmqpError::Connect {
                endpoint: settings.target.endpoint(),
                message,
            })
        }
    }
}

fn server_name(host: &str) -> Result<tokio_rustls::rustls::pki_types::ServerName<'static>, String> {
    tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("tls: {host:?} is not a host name: {e}"))
}

/// A TLS client trusting the system's roots, built once (loading the roots reads files).
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    use tokio_rustls::rustls;
    static CONNECTOR: std::sync::OnceLock<Result<tokio_rustls::TlsConnector, String>> =
        std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "a system root certificate could not be read");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("tls: no system root certificates to check the broker with".into());
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("tls: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
        })
        .clone()
}
