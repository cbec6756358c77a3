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
//! context reaches a stream). What a trickling or idle HTTP/2 connection can hold is bounded
//! instead by the connection's idle timeout (no stream in flight for
//! `limits.idle_timeout_secs` closes it, a header block still arriving included) and by the
//! codec's header-list limit (`super::tls::header_list_limit`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v2::server::H2Options;
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
        let budget = if is_reused(&mut session) {
            self.idle + self.deadline
        } else {
            self.deadline
        };
        let flag = Arc::new(AtomicBool::new(false));
        let inner = self.inner.process_new_http(session, shutdown);
        HEADERS_READ
            .scope(flag.clone(), async move {
                tokio::pin!(inner);
                tokio::select! {
                    reused = &mut inner => reused,
                    _ = tokio::time::sleep(budget) => {
                        if flag.load(Ordering::Acquire) {
                            // Headers arrived in time: the request itself may take longer.
                            inner.await
                        } else {
                            tracing::debug!(?budget, "request headers not received in time, closing");
                            None
                        }
                    }
                }
            })
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
