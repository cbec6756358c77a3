//! The abuse and bad-input suite (RELIABILITY.md, "Abuse and bad input"): every bad body,
//! header, path, token and foreign id against the REAL stack (gateway + settlement
//! in-process, Redis reservation store under a private prefix, a scratch PostgreSQL schema).
//! Each case asserts the exact 4xx problem+json and that the Redis store keys and the SQL
//! tables are unchanged afterwards. Needs `REDIS_URL` and `DATABASE_URL`; a missing service
//! fails the suite.
//!
//! Builds on, without repeating, `auth_negative.rs` (bad buyer tokens) and `protection.rs`
//! (the limits on the in-memory harness). Run with `--nocapture` to see one line per case
//! and the slowloris latency figures.

#[path = "abuse/world.rs"]
mod world;

#[path = "abuse/bodies.rs"]
mod bodies;

#[path = "abuse/http_junk.rs"]
mod http_junk;

#[path = "abuse/tokens.rs"]
mod tokens;

#[path = "abuse/refusals.rs"]
mod refusals;

#[path = "abuse/slowloris.rs"]
mod slowloris;

#[path = "abuse/client_ip.rs"]
mod client_ip;

#[path = "abuse/skip_gateway.rs"]
mod skip_gateway;
