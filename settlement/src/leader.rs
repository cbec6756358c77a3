//! Leader leases for the periodic tasks (outbox relay, sweeper, reconciler): with Redis, one
//! replica holds a renewable lease on a fenced lock and does the work; without Redis (the
//! single-process embedded mode) this process is always the leader.

use std::time::Duration;

use backend_adapters::redis::lock::FencedLock;

/// One named lease this process competes for.
#[derive(Clone)]
pub struct Leader {
    lock: Option<FencedLock>,
    name: String,
    owner: String,
    lease: Duration,
}

impl Leader {
    pub fn new(lock: Option<FencedLock>, name: &str, lease: Duration) -> Self {
        Leader {
            lock,
            name: name.to_owned(),
            owner: uuid::Uuid::new_v4().simple().to_string(),
            lease,
        }
    }

    /// Takes or renews the lease; `false` while another replica holds it or Redis is down
    /// (no work is better than two relays publishing at once).
    pub async fn is_leader(&self) -> bool {
        let Some(lock) = &self.lock else {
            return true;
        };
        match lock.try_acquire(&self.name, &self.owner, self.lease).await {
            Ok(lease) => lease.is_some(),
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "leader lease unavailable");
                false
            }
        }
    }
}
