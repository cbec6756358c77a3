//! Fault runs for stockgate. `stockgate-chaos` (src/bin) and `stockgate/tests/faults.rs` use it:
//!
//! - [`history`]: what each client was told, one record per operation;
//! - [`flash_sale`]: a flash-sale client that retries like a storefront and records the history;
//! - [`churn`]: the churn profile's ops, cancelling orders and restocking during the sale;
//! - [`endpoint`]: a stable Redis endpoint (a TCP forwarder) a failover switches;
//! - [`world`]: private Redis, PostgreSQL and stockgate processes that can be killed, paused
//!   and restarted;
//! - [`faults`]: the faults and one fault run from start to verdict;
//! - [`broker`]: the AMQP broker of the `broker-restart` fault: a consumer, the restart, and
//!   the check that every outbox event arrived once and in order;
//! - [`lock_hold`]: the `pg-lock-hold` fault's lock holder and its timed probe confirms;
//! - [`invariants`]: the checker of docs/design.md §6 over the state and the history;
//! - [`hold_model`]: a model of a hold's life, the same invariants checked in every
//!   interleaving of every actor by a model checker.
#![forbid(unsafe_code)]

pub mod broker;
pub mod churn;
pub mod endpoint;
pub mod faults;
pub mod flash_sale;
pub mod history;
pub mod hold_model;
pub mod invariants;
pub mod lock_hold;
pub mod world;
