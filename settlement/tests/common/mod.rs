//! Shared set-up of the settlement integration tests: the service started in-process on
//! `127.0.0.1:0` on a fresh PostgreSQL schema (`testkit::scratch_schema`) or SQLite file, and
//! reservation tokens signed by a test key. Every request goes as the gateway sends it:
//! signed with the test gateway's assertion key (`testkit::AsGateway::send_as`). Service URLs
//! and scratch Redis prefixes are testkit's: a missing PostgreSQL or Redis fails the test,
//! nothing here skips.

#![allow(dead_code)] // each test binary uses a different part of this module

mod slow_store;

#[allow(unused_imports)] // only the tests that slow the store use it
pub use slow_store::SlowStore;

use std::sync::Arc;

use backend_adapters::sql::Db;
use reservation_core::assertion::{AssertionSigner, AssertionVerifier};
use reservation_core::token::RESERVATION_AUDIENCE;
use reservation_core::{
    BuyerId, InMemoryStore, Qty, ReservationClaims, ReservationId, ReservationStore, Sku,
    TokenSigner, TokenVerifier,
};
use serde_json::{Value, json};
use settlement::{RunningSettlement, SettlementConfig, SettlementDeps};
use testkit::AsGateway;

pub fn sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("sg-{}.db", uuid::Uuid::new_v4().simple()));
    format!("sqlite://{}?mode=rwc", path.display())
}

/// One running service plus what a test needs to talk to it.
pub struct TestApp {
    pub running: RunningSettlement,
    pub base: String,
    pub db_url: String,
    pub signer: TokenSigner,
    /// The test gateway's assertion key: the only caller settlement serves.
    pub gateway: AssertionSigner,
    /// The same key, to sign claims no gateway would (the negative suite).
    pub gateway_key: TokenSigner,
    pub store: Arc<dyn ReservationStore>,
    pub http: reqwest::Client,
}

/// A config for tests: the given database, no periodic maintenance (tests call it), a fast
/// relay, and a port picked by the OS.
pub fn test_config(db_url: &str) -> SettlementConfig {
    let mut config = SettlementConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap_or(config_default_addr()),
        admin_listen_addr: config_default_addr(),
        database_url: db_url.to_owned(),
        db_max_connections: 20,
        ..SettlementConfig::default()
    };
    config.maintenance.enabled = false;
    config.outbox.poll_interval_ms = 20;
    config
}

fn config_default_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

pub async fn start_with(
    config: SettlementConfig,
    store: Arc<dyn ReservationStore>,
) -> anyhow::Result<TestApp> {
    let signer = TokenSigner::generate("test-k1");
    let gateway_key = TokenSigner::generate("test-gw-1");
    let gateway = AssertionSigner::new(TokenSigner::from_pkcs8_pem(
        gateway_key.kid(),
        &gateway_key.to_pkcs8_pem(),
    )?);
    let db_url = config.database_url.clone();
    let deps = SettlementDeps {
        store: store.clone(),
        verifier: TokenVerifier::for_signer(&signer),
        gateway_keys: AssertionVerifier::new(&gateway.jwks())?,
        registry: prometheus::Registry::new(),
    };
    let running = settlement::start(config, deps).await?;
    Ok(TestApp {
        base: format!("http://{}", running.addr),
        running,
        db_url,
        signer,
        gateway,
        gateway_key,
        store,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?,
    })
}

/// The service on a fresh PostgreSQL schema with the in-memory store.
pub async fn start_postgres() -> anyhow::Result<TestApp> {
    let url = testkit::scratch_schema("settle").await;
    start_with(test_config(&url), Arc::new(InMemoryStore::new())).await
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `PUT /api/v1/admin/products/{sku}` as ops.
    pub async fn put_product(&self, sku: &str, total_stock: i64) -> anyhow::Result<Value> {
        let response = self
            .http
            .put(self.url(&format!("/api/v1/admin/products/{sku}")))
            .json(&json!({
                "name": format!("{sku} tee"), "price_cents": 1999, "total_stock": total_stock,
                "per_buyer_limit": 1000, "max_per_order": 10, "sale_state": "on_sale"
            }))
            .send_as(&self.gateway, testkit::ops("olga"))
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "put product: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    /// A signed reservation token for a new reservation id.
    pub fn token(&self, sku: &str, buyer: &str, qty: u32) -> anyhow::Result<(String, String)> {
        let sku = Sku::parse(sku)?;
        let now = testkit::now_secs();
        let claims = ReservationClaims {
            rid: ReservationId::generate(&sku),
            sub: BuyerId::parse(buyer)?,
            sku,
            qty: Qty::new(qty)?,
            iat: now,
            exp: now + 600,
            aud: RESERVATION_AUDIENCE.to_owned(),
        };
        Ok((claims.rid.to_string(), self.signer.sign(&claims)?))
    }

    /// `POST /internal/settlements` as the gateway does it.
    pub async fn settle(&self, buyer: &str, token: &str) -> anyhow::Result<reqwest::Response> {
        self.http
            .post(self.url("/internal/settlements"))
            .header("x-request-id", "req-test")
            .json(&json!({ "reservation_token": token }))
            .send_as(&self.gateway, testkit::buyer(buyer))
            .await
    }

    /// A connection to the service's database, for assertions on rows.
    pub async fn db(&self) -> anyhow::Result<Db> {
        Ok(Db::connect(&self.db_url, 2).await?)
    }
}

pub async fn scalar(db: &Db, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(db.pool()).await?)
}
