//! The Pingora edge of stockgate: a library the `stockgate` binary crate composes with the
//! settlement service.
//!
//! A request meets, in order: the limits and the header-read deadline ([`server`]), buyer
//! authentication ([`auth`]), then the route table ([`edge::routes`]): reservation routes are
//! answered at the edge against a [`reservation_core::ReservationStore`], the order confirm
//! goes through the store and the settlement service, and everything else is proxied to the
//! settlement upstream ([`proxy`]); catalog reads go through the product [`cache`], and
//! [`ratelimit`] applies the ops-owned limits to the client [`client_addr`] decides; [`edge_redis`] tracks whether Redis answers
//! (degraded mode), [`health`] readiness and dependency health. [`config`] holds every option, [`problem`] the error
//! format, [`metrics`] the Prometheus series, [`service_auth`] the assertions that let settlement
//! serve only the gateway, [`app`] the wiring, [`web`] the storefront and ops console.

#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod cache;
pub mod client_addr;
pub mod config;
pub mod conn_age;
pub mod edge;
pub mod edge_redis;
pub mod health;
pub mod in_flight;
pub mod metrics;
pub mod problem;
pub mod proxy;
pub mod ratelimit;
pub mod server;
pub mod service_auth;
pub mod web;
