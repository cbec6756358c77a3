//! A total deadline for reading each request's headers (slowloris). Pingora's own read
//! timeout applies per read, so a client trickling one byte just under it would hold a
//! connection forever. [`HeaderDeadline`] wraps the proxy application: if the edge's
//! `early_request_filter` (which runs right after the headers are parsed) has not marked the
//! request within the deadline, the connection is dropped.
//!
//! A reused keep-alive connection first waits idly for its next request, so its budget is the
//! idle timeout plus the header deadline. Pingora gives every new connection a keep-alive
//! setting too, so reuse is recognised by a marker the edge persists in the connection's user
//! context ([`connection_seen`]), which Pingora carries to the next request.
//!
//! On HTTP/2 Pingora starts one session per stream, and only once the stream's whole header
//! block is in, so each stream meets the deadline at once and counts as new (no connection
//! context reaches a stream). Before its first stream a connection is bounded by
//! [`FirstRequestDeadline`]: the preface, the SETTINGS and the first request's headers must
//! arrive within the header deadline (Pingora's HTTP/2 handshake waits for the preface
//! forever, and its idle timeout starts only after it). After that, what a trickling or idle
//! HTTP/2 connection can hold is bounded by the connection's idle timeout (no stream in
//! flight for `limits.idle_timeout_secs` closes it, a header block still arriving included)
//! and by the codec's header-list limit (`super::tls::header_list_limit`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::{ALPN, SocketDigest, Stream};
use pingora::server::ShutdownWatch;

tokio::task_local! {
    /// Set once the current request's headers were read.
    static HEADERS_READ: Arc<AtomicBool>;
}

/// Called by the edge when a request's headers are in.
pub fn mark_headers_read() {
    let _ = HEADERS_READ.try_with(|flag| flag.store(true, Ordering::Release));
}

/// The connection user context of a connection that has served a request.
struct ConnectionSeen;

/// The marker the edge persists on a connection after each request.
pub fn connection_seen() -> Box<dyn std::any::Any + Send + Sync> {
    Box::new(ConnectionSeen)
}

/// Whether the session continues a connection that served a request before. The context is
/// put back, so the proxy still sees it.
fn is_reused(session: &mut ServerSession) -> bool {
    match session.take_connection_user_context() {
        Some(context) => {
            let seen = context.is::<ConnectionSeen>();
            session.set_connection_user_context(Some(context));
            seen
        }
        None => false,
    }
}

/// The proxy application behind the header deadline.
pub struct HeaderDeadline<A> {
    inner: Arc<A>,
    deadline: Duration,
    idle: Duration,
}

impl<A> HeaderDeadline<A> {
    pub fn new(inner: A, deadline: Duration, idle: Duration) -> Self {
        HeaderDeadline {
            inner: Arc::new(inner),
            deadline,
            idle,
        }
    }
}

#[async_trait]
impl<A> HttpServerApp for HeaderDeadline<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // Only an HTTP/2 connection waits for its first stream.
        if session.is_http2() {
            let socket = session.digest().and_then(|d| d.socket_digest.clone());
            if let Some(key) = socket.and_then(|s| connection_key(&s)) {
                first_request_arrived(key);
            }
        }
        let budget = if is_reused(&mut session) {
            self.idle + self.deadline
        } else {
            self.deadline
        };
        let flag = Arc::new(AtomicBool::new(false));
        let inner = self.inner.process_new_http(session, shutdown);
        HEADERS_READ
            .scope(
                flag.clone(),
                unless_late(inner, budget, &flag, "request headers not received in time"),
            )
            .await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await
    }
}

/// Runs `inner` to its end, unless `marked` is still unset when `budget` has passed: then
/// `inner` is dropped (its connection closed) and the answer is `None`. Once marked in time,
/// `inner` may take as long as it needs.
async fn unless_late<T>(
    inner: impl std::future::Future<Output = Option<T>>,
    budget: Duration,
    marked: &AtomicBool,
    late: &'static str,
) -> Option<T> {
    tokio::pin!(inner);
    tokio::select! {
        result = &mut inner => result,
        _ = tokio::time::sleep(budget) => {
            if marked.load(Ordering::Acquire) {
                inner.await
            } else {
                tracing::debug!(?budget, "{late}, closing");
                None
            }
        }
    }
}

/// A connection while it is open: its two addresses.
type ConnectionKey = (SocketAddr, SocketAddr);

/// HTTP/2 connections still waiting for their first request, and the flag their first
/// stream's session sets. Pingora runs each stream's session on a task of its own, so the
/// connection and its first stream meet here, by address.
static AWAITING_FIRST_REQUEST: LazyLock<Mutex<HashMap<ConnectionKey, Arc<AtomicBool>>>> =
    LazyLock::new(Default::default);

fn awaiting() -> std::sync::MutexGuard<'static, HashMap<ConnectionKey, Arc<AtomicBool>>> {
    // Plain flags: a map left by a panicking holder is still right.
    AWAITING_FIRST_REQUEST
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn connection_key(socket: &SocketDigest) -> Option<ConnectionKey> {
    let inet = |addr: Option<&PeerAddr>| addr.and_then(|a| a.as_inet()).copied();
    Some((inet(socket.peer_addr())?, inet(socket.local_addr())?))
}

fn first_request_arrived(key: ConnectionKey) {
    // Only the first stream finds an entry; later ones look up an empty slot.
    if let Some(flag) = awaiting().remove(&key) {
        flag.store(true, Ordering::Release);
    }
}

/// A connection's entry in [`AWAITING_FIRST_REQUEST`] while it waits.
struct AwaitingEntry {
    key: ConnectionKey,
    arrived: Arc<AtomicBool>,
}

impl Drop for AwaitingEntry {
    fn drop(&mut self) {
        // Still there when no stream came; an entry of a later connection with the same
        // addresses is that connection's own.
        let mut awaiting = awaiting();
        if awaiting
            .get(&self.key)
            .is_some_and(|flag| Arc::ptr_eq(flag, &self.arrived))
        {
            awaiting.remove(&self.key);
        }
    }
}

/// Closes an HTTP/2 connection (TLS with ALPN `h2`) that has not sent its first request's
/// headers within `deadline` of the TLS handshake: one that never sends the preface, stops
/// halfway through it, or opens no stream. HTTP/1.1 connections pass straight through to
/// [`HeaderDeadline`], which bounds them already.
pub struct FirstRequestDeadline<A> {
    inner: Arc<A>,
    deadline: Duration,
}

impl<A> FirstRequestDeadline<A> {
    pub fn new(inner: A, deadline: Duration) -> Self {
        FirstRequestDeadline {
            inner: Arc::new(inner),
            deadline,
        }
    }
}

#[async_trait]
impl<A> ServerApp for FirstRequestDeadline<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let is_h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let key = stream.get_socket_digest().and_then(|s| connection_key(&s));
        let (true, Some(key)) = (is_h2, key) else {
            return self.inner.process_new(stream, shutdown).await;
        };
        let arrived = Arc::new(AtomicBool::new(false));
        awaiting().insert(key, arrived.clone());
        // Removes the entry however this future ends (done, dropped at shutdown, a panic).
        let _entry = AwaitingEntry {
            key,
            arrived: arrived.clone(),
        };
        let inner = self.inner.process_new(stream, shutdown);
        unless_late(inner, self.deadline, &arrived, "no HTTP/2 request in time").await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}
