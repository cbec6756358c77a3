//! The I/O side of stockgate's domain: Redis (the Lua reservation store, cache, rate limiter,
//! fenced lock and streams) and SQL (the settlement repository, migrations and outbox).
//! Only this crate talks to `redis` and `sqlx`.

#![forbid(unsafe_code)]

pub mod redis;
pub mod sql;
