//! What every stockgate crate's tests share, so that each test states only what it tests:
//!
//! - [`services`]: the URLs of the real services (PostgreSQL, Redis, Redis Cluster) with one
//!   policy — the environment variable, else the local default; a service that does not answer
//!   fails the test, none skips — and scratch key prefixes and schemas with their clean-up;
//! - [`idp`]: a test identity provider that signs buyer and ops tokens, and [`assertion`]:
//!   requests to settlement signed as a gateway signs them;
//! - [`mock_settlement`]: a small settlement service that records what the gateway sends, and
//!   [`catalog`]: a product upstream that counts what reaches it;
//! - [`edge`]: the gateway alone in front of either;
//! - [`stack`]: test configurations, and the real stack (gateway and settlement on Redis and
//!   PostgreSQL) in one process; [`real_stack`]: that stack with the test's views into it;
//! - [`broker`]: the AMQP 1.0 broker (RabbitMQ), scratch queues, a consumer that rides
//!   through restarts, and a broker restart;
//! - [`tls`]: a throwaway certificate authority and the server certificates it issues, and
//!   [`oidc`]: a local OpenID Connect provider shaped like Entra ID, served over HTTPS with it;
//! - [`otlp`]: an OTLP/HTTP receiver that decodes the spans a service exports;
//! - [`http`]: requests as the storefront sends them, and answers read with the problem+json
//!   shape checked.
//!
//! Everything is re-exported at the root: tests write `testkit::start_gateway()`.

pub mod assertion;
pub mod broker;
pub mod catalog;
pub mod counting;
pub mod edge;
pub mod http;
pub mod idp;
pub mod mock_settlement;
pub mod oidc;
pub mod otlp;
pub mod real_stack;
pub mod services;
pub mod stack;
pub mod tls;

pub use assertion::{AsGateway, buyer, nobody, ops};
pub use catalog::{Catalog, Upstream};
pub use counting::CountingStore;
pub use edge::{
    Edge, TestGateway, edge_config, product, start_edge, start_edge_shared, start_gateway,
    start_gateway_with, start_gateway_with_keys,
};
pub use http::{
    body, fresh_key, header, post_order, post_reservation, put_product, put_product_if_match,
};
pub use idp::{AUDIENCE, ISSUER, Idp, KID, base64url, now_secs, unverified_claims};
pub use mock_settlement::{MockSettlement, Mode, start_mock};
pub use oidc::{Misbehaviour, OidcProvider};
pub use real_stack::{PRICE_CENTS, RealStack};
pub use services::{
    assert_redis_cluster_up, database_url, delete_keys_under, keys_under, redis_cluster_nodes,
    redis_cluster_url, redis_connection, redis_url, required_env, scan_under, scratch_prefix,
    scratch_schema, unlink_keys_under,
};
pub use stack::{embedded_config, gateway_config, real_stack_config, start_real_stack};
