//! Bounded age of the gateway's connections to settlement (`upstream.max_connection_age_secs`).
//!
//! In Kubernetes the gateway reaches settlement through its Service's ClusterIP, which kube-proxy
//! balances per TCP connection. Keep-alive connections that stay busy are never closed, so they
//! stay with the pods that existed when they were opened: settlement replicas added by the HPA
//! during a sale (or by a rollout) would get almost nothing. Bounding the age of every
//! connection makes each one reconnect, and so be balanced again, within that time. Both
//! clients of settlement do it their own way:
//!
//! - [`RenewingClient`]: reqwest (the confirm's `POST /internal/settlements`) has no maximum
//!   connection lifetime, so the whole client, with its pool, is replaced once it is
//!   `max_age` old. The old pool closes its idle connections when the last request still
//!   using it ends; no request is cut off.
//! - [`too_old`]: Pingora (the proxied routes) reports when each upstream connection was
//!   established; a request about to use one older than `max_age` asks for `Connection:
//!   close` (`edge::filters`), so the connection ends after that answer and the next request
//!   opens a fresh one.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use pingora::protocols::Digest;

/// A reqwest client whose connections are at most `max_age` old when a request starts.
pub struct RenewingClient {
    build: Box<dyn Fn() -> reqwest::ClientBuilder + Send + Sync>,
    max_age: Duration,
    current: Mutex<Current>,
}

struct Current {
    client: reqwest::Client,
    since: Instant,
}

impl RenewingClient {
    /// `build` makes the builder of each new client (the same settings every time); the
    /// error is reqwest's for the first one (a TLS backend or resolver that cannot start).
    pub fn new(
        build: impl Fn() -> reqwest::ClientBuilder + Send + Sync + 'static,
        max_age: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = build().build()?;
        Ok(RenewingClient {
            build: Box::new(build),
            max_age,
            current: Mutex::new(Current {
                client,
                since: Instant::now(),
            }),
        })
    }

    /// The client to send a request with: the current one, or a fresh one (empty pool) when
    /// the current one is `max_age` old. A client clone is a handle to the same pool.
    pub fn get(&self) -> reqwest::Client {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.since.elapsed() >= self.max_age {
            match (self.build)().build() {
                Ok(client) => current.client = client,
                // The settings built once already; keep the old pool rather than fail a call.
                Err(error) => tracing::warn!(%error, "cannot renew the settlement client"),
            }
            current.since = Instant::now();
        }
        current.client.clone()
    }
}

/// Whether the Pingora upstream connection described by `digest` is at least `max_age` old
/// (established time of its lowest layer, the TCP connection). Unknown age: not too old.
pub fn too_old(digest: Option<&Digest>, max_age: Duration) -> bool {
    let established = digest
        .and_then(|d| d.timing_digest.iter().flatten().next())
        .map(|timing| timing.established_ts);
    established
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .is_some_and(|age| age >= max_age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_replaced_at_its_age_and_kept_before() {
        let renewing = RenewingClient::new(reqwest::Client::builder, Duration::from_millis(50))
            .expect("a client");
        let first = renewing.current.lock().unwrap().since;
        renewing.get();
        assert_eq!(
            renewing.current.lock().unwrap().since,
            first,
            "kept while young"
        );
        std::thread::sleep(Duration::from_millis(60));
        renewing.get();
        assert!(
            renewing.current.lock().unwrap().since > first,
            "renewed when old"
        );
    }

    #[test]
    fn a_connection_is_too_old_from_its_established_time() {
        use pingora::protocols::TimingDigest;
        let digest = |age: Duration| Digest {
            timing_digest: vec![
                None,
                Some(TimingDigest {
                    established_ts: SystemTime::now() - age,
                    ..Default::default()
                }),
            ],
            ..Default::default()
        };
        let max_age = Duration::from_secs(30);
        assert!(!too_old(Some(&digest(Duration::from_secs(29))), max_age));
        assert!(too_old(Some(&digest(Duration::from_secs(31))), max_age));
        assert!(!too_old(None, max_age), "unknown age: kept");
    }
}
