//! Invalidation from the outbox: each gateway replica reads the settlement's events stream in
//! its own consumer group (so every replica sees every event) and drops the cached pages a
//! `product.updated` event names. The relay publishes within its poll interval (100 ms by
//! default) and the blocking read wakes on the entry, so a change is visible well within a
//! second. Handling is idempotent (a delete), so redelivery after a crash is harmless.

use std::sync::Arc;
use std::time::Duration;

use backend_adapters::redis::cache::edge_connection;
use backend_adapters::redis::stream::{ConsumerGroup, StreamEvent};
use backend_adapters::sql::outbox::topic;
use serde::Deserialize;

use super::ProductCache;
use crate::edge_redis::EdgeRedis;

/// How long one read blocks waiting for events.
const BLOCK: Duration = Duration::from_millis(1_000);
/// Pending entries of a dead consumer (same group: a restarted replica) are taken over after.
const CLAIM_IDLE: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct ProductUpdated {
    sku: reservation_core::Sku,
}

/// This replica's group name: `<prefix>-gateway-<replica id>`.
pub fn group_name(redis_key_prefix: &str, replica_id: Option<&str>) -> String {
    let replica = replica_id
        .map(str::to_owned)
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    format!("{redis_key_prefix}-gateway-{replica}")
}

async fn handle(cache: &ProductCache, event: StreamEvent) -> Result<(), String> {
    if event.topic != topic::PRODUCT_UPDATED {
        return Ok(());
    }
    match serde_json::from_str::<ProductUpdated>(&event.payload) {
        Ok(updated) => cache.invalidate(&updated.sku).await,
        // A payload the settlement wrote cannot be malformed; skip rather than block the group.
        Err(error) => {
            tracing::error!(event_id = event.event_id, %error, "malformed product.updated")
        }
    }
    Ok(())
}

/// Consumes the events stream forever, reconnecting after errors.
pub async fn run(cache: Arc<ProductCache>, redis: EdgeRedis, stream: String, group: String) {
    let consumer = "gateway";
    loop {
        // Its own connection: a blocking XREADGROUP would hold up every command queued
        // behind it on the shared multiplexed one. Its reply timeout (per node on a cluster,
        // where the stream key lives on the one node owning its slot) is twice the block time,
        // so an empty read returns before it times out.
        let conn = match edge_connection(&redis.url, BLOCK * 2, Duration::from_secs(1)).await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::debug!(%error, "events stream: cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(error) = redis.cache.ensure_group_at_end(&stream, &group).await {
            tracing::debug!(%error, "events stream: cannot create the group; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let reader = ConsumerGroup::new(conn, &stream, &group, consumer);
        tracing::info!(stream, group, "consuming cache invalidations");
        loop {
            let processed = reader
                .process(100, BLOCK, CLAIM_IDLE, |event| handle(&cache, event))
                .await;
            if let Err(error) = processed {
                tracing::debug!(%error, "events stream read failed; reconnecting");
                tokio::time::sleep(Duration::from_millis(500)).await;
                break;
            }
        }
    }
}
