//! The wire contract between the gateway and the settlement service: what both sides must
//! spell the same way. See docs/internal-api.md.

/// The Redis stream settlement's outbox relay publishes order and product events to when
/// `[settlement.outbox] stream` is empty and the key prefix is the default `stockgate`
/// (`<redis_key_prefix>:events`); the gateway's cache invalidation follows it.
pub const DEFAULT_EVENTS_STREAM: &str = "stockgate:events";
