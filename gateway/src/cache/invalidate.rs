//! Invalidation from the outbox: each gateway replica follows the settlement's events stream
//! with a plain XREAD from the last entry it saw ([`StreamTail`]: every replica sees every
//! event) and drops the cached pages a `product.updated` event names. No consumer group: one
//! per replica (as before) was created under each pod name and never destroyed, so Redis grew
//! with every rollout and scale-up (issue 15.10), and a group gave nothing here: handling is
//! idempotent and a new pod starts at the stream's end with an empty memory tier anyway. The relay publishes within its poll interval (100 ms by
//! default) and the blocking read wakes on the entry, so a change is visible well within a
//! second. Handling is idempotent (a delete), so redelivery after a crash is harmless.

use std::sync::Arc;
use std::time::Duration;

use backend_adapters::redis::cache::edge_connection;
use backend_adapters::redis::stream::{StreamEvent, StreamTail};
use backend_adapters::sql::outbox::topic;
use serde::Deserialize;
use thiserror::Error;

use super::ProductCache;
use crate::edge_redis::EdgeRedis;

/// How long one read blocks waiting for events.
const BLOCK: Duration = Duration::from_millis(1_000);

#[derive(Deserialize)]
struct ProductUpdated {
    sku: reservation_core::Sku,
}

/// This replica's name in logs: `<prefix>-gateway-<replica id>`.
pub fn reader_name(redis_key_prefix: &str, replica_id: Option<&str>) -> String {
    let replica = replica_id
        .map(str::to_owned)
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    format!("{redis_key_prefix}-gateway-{replica}")
}

/// An event this reader cannot act on; it is skipped.
#[derive(Debug, Error)]
#[error("malformed product.updated")]
struct Malformed {
    event_id: i64,
    #[source]
    source: serde_json::Error,
}

/// Drops the cached pages a `product.updated` event names; other topics are not for the
/// cache.
async fn handle(cache: &ProductCache, event: StreamEvent) -> Result<(), Malformed> {
    if event.topic != topic::PRODUCT_UPDATED {
        return Ok(());
    }
    let updated =
        serde_json::from_str::<ProductUpdated>(&event.payload).map_err(|source| Malformed {
            event_id: event.event_id,
            source,
        })?;
    cache.invalidate(&updated.sku).await;
    Ok(())
}

/// Follows the events stream forever, reconnecting after errors where it left off.
pub async fn run(cache: Arc<ProductCache>, redis: EdgeRedis, stream: String, reader: String) {
    let mut position: Option<String> = None;
    loop {
        // Its own connection: a blocking XREAD would hold up every command queued behind it
        // on the shared multiplexed one. Its reply timeout (per node on a cluster, where the
        // stream key lives on the one node owning its slot) is twice the block time, so an
        // empty read returns before it times out.
        let conn = match edge_connection(&redis.url, BLOCK * 2, Duration::from_secs(1)).await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::debug!(%error, "events stream: cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut tail = match &position {
            Some(last_id) => StreamTail::resume(conn, &stream, last_id),
            None => match StreamTail::at_end(conn, &stream).await {
                Ok(tail) => tail,
                Err(error) => {
                    tracing::debug!(%error, "events stream: cannot find its end; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        tracing::info!(stream, reader, "following cache invalidations");
        loop {
            match tail.read(100, BLOCK).await {
                Ok(events) => {
                    let read_any = !events.is_empty();
                    for event in events {
                        // A payload the settlement wrote cannot be malformed; skip it rather
                        // than stop following the stream.
                        if let Err(Malformed { event_id, source }) = handle(&cache, event).await {
                            tracing::error!(event_id, error = %source, "malformed product.updated");
                        }
                    }
                    if read_any {
                        position = Some(tail.last_id().to_owned());
                        cache.set_stream_position(tail.last_id());
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "events stream read failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}
