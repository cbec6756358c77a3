//! The I/O side of stockgate's domain: Redis (the Lua reservation store, cache, rate limiter,
//! fenced lock and streams) and SQL (the settlement repository, migrations and outbox).
//! AMQP 1.0 (the outbox relay's broker sink: Azure Service Bus). Only this crate talks to `redis`,
//! `sqlx` and `fe2o3-amqp`.

#![forbid(unsafe_code)]

pub mod amqp;
pub mod redis;
pub mod sql;
pub mod telemetry;
