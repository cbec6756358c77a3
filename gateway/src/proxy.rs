//! The settlement upstream of the proxied routes: a Pingora load balancer over the configured
//! address with an HTTP health check on `/healthz` of settlement's admin listener (same host,
//! `upstream.settlement_admin_port`: the API port serves only the API), and the peer settings (timeouts, pooled
//! keep-alive) every proxied request uses. Pingora pools upstream connections per peer, so
//! proxied requests reuse warm keep-alive connections, each for at most
//! `upstream.max_connection_age_secs` ([`crate::conn_age`]).

use std::sync::Arc;
use std::time::Duration;

use pingora::http::RequestHeader;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{LoadBalancer, health_check::HttpHealthCheck};
use pingora::prelude::HttpPeer;
use pingora::protocols::Digest;
use pingora::services::background::{GenBackgroundService, background_service};
use reservation_core::wire::paths;

use thiserror::Error;

use crate::config::{UpstreamConfig, ms};

/// Why the settlement upstream could not be set up.
#[derive(Debug, Error)]
pub enum UpstreamError {
    /// `host:port` did not resolve to an address.
    #[error("upstream {host_port}")]
    Address {
        host_port: String,
        #[source]
        source: std::io::Error,
    },
    /// The health check's request could not be built (a `host` not valid in a header).
    #[error("upstream {host_port}: its health check request")]
    HealthCheck {
        host_port: String,
        #[source]
        source: pingora::BError,
    },
}

/// Timeouts copied onto every upstream peer.
#[derive(Debug, Clone)]
struct PeerTimeouts {
    connect: Duration,
    read: Duration,
    write: Duration,
    pool_idle: Duration,
    max_age: Duration,
}

/// The settlement upstream, shared by all proxy workers.
#[derive(Clone)]
pub struct Upstream {
    lb: Arc<LoadBalancer<RoundRobin>>,
    timeouts: PeerTimeouts,
}

/// The health-check task the server runs in the background.
pub type HealthCheckService = GenBackgroundService<LoadBalancer<RoundRobin>>;

impl Upstream {
    /// The upstream at `host_port` and the background service that health-checks it.
    pub fn new(
        host_port: &str,
        config: &UpstreamConfig,
    ) -> Result<(Self, HealthCheckService), UpstreamError> {
        let mut lb = LoadBalancer::<RoundRobin>::try_from_iter([host_port]).map_err(|source| {
            UpstreamError::Address {
                host_port: host_port.to_owned(),
                source,
            }
        })?;
        let health_check_error = |source| UpstreamError::HealthCheck {
            host_port: host_port.to_owned(),
            source,
        };
        let mut check = HttpHealthCheck::new(host_port, false);
        let mut req = RequestHeader::build("GET", paths::HEALTHZ.as_bytes(), None)
            .map_err(health_check_error)?;
        req.insert_header("host", host_port)
            .map_err(health_check_error)?;
        check.req = req;
        check.port_override = Some(config.settlement_admin_port);
        // Connect afresh each time: a pooled connection can hide a dead listener.
        check.reuse_connection = false;
        lb.set_health_check(Box::new(check));
        lb.health_check_frequency = Some(Duration::from_secs(config.health_check_interval_secs));
        let service = background_service("settlement health check", lb);
        let upstream = Upstream {
            lb: service.task(),
            timeouts: PeerTimeouts {
                connect: ms(config.connect_timeout_ms),
                read: ms(config.read_timeout_ms),
                write: ms(config.write_timeout_ms),
                pool_idle: Duration::from_secs(config.pool_idle_timeout_secs),
                max_age: Duration::from_secs(config.max_connection_age_secs),
            },
        };
        Ok((upstream, service))
    }

    /// A healthy backend as a peer with the configured timeouts; `None` when all are down.
    pub fn peer(&self) -> Option<Box<HttpPeer>> {
        let backend = self.lb.select(b"", 16)?;
        let mut peer = HttpPeer::new(backend.addr, false, String::new());
        let options = &mut peer.options;
        options.connection_timeout = Some(self.timeouts.connect);
        options.total_connection_timeout = Some(self.timeouts.connect);
        options.read_timeout = Some(self.timeouts.read);
        options.write_timeout = Some(self.timeouts.write);
        options.idle_timeout = Some(self.timeouts.pool_idle);
        Some(Box::new(peer))
    }

    /// Whether an upstream connection (its Pingora digest) has reached the maximum age.
    pub fn too_old(&self, digest: Option<&Digest>) -> bool {
        crate::conn_age::too_old(digest, self.timeouts.max_age)
    }

    /// Whether the health check currently passes for some backend.
    pub fn is_healthy(&self) -> bool {
        self.lb.select(b"", 16).is_some()
    }
}
