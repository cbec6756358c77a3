//! Redis adapters. Every key of one SKU carries the `{sku}` hash tag so each script touches
//! one slot and runs unchanged on Redis Cluster.
//!
//! [`RedisStore`] is the reservation store: one Lua script per operation (`lua/*.lua`).
//! [`RedisConnection`] is one server or a Redis Cluster, plain or TLS, named by the URL.
//! [`cache`] and [`ratelimit`] are the gateway's shared product cache and GCRA limiter.

pub mod cache;
pub mod connection;
mod keys;
pub mod lock;
pub mod ratelimit;
mod reply;
mod scripts;
pub mod single_use;
pub mod store;
pub mod stream;

/// The error of every Redis call here, for callers that keep it as a cause without using
/// `redis` themselves.
pub use ::redis::RedisError;
pub use connection::{ConnectOptions, RedisConnection};
pub use store::{RedisStore, RedisStoreConfig};
