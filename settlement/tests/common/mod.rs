//! Shared set-up of the settlement integration tests: a fresh PostgreSQL schema (or SQLite
//! file) and a fresh Redis key prefix per test, the service started in-process on
//! `127.0.0.1:0`, and reservation tokens signed by a test key. Every request goes as the
//! gateway sends it: signed with the test gateway's assertion key ([`AsGateway::send_as`]).
//! A missing PostgreSQL or Redis fails the test: nothing here skips.

#![allow(dead_code)] // each test binary uses a different part of this module

mod slow_store;

#[allow(unused_imports)] // only the tests that slow the store use it
pub use slow_store::SlowStore;

use std::sync::Arc;

use backend_adapters::sql::Db;
use reservation_core::assertion::{
    ASSERTION_HEADER, AssertionSigner, AssertionVerifier, Bound, Identity,
};
use reservation_core::token::RESERVATION_AUDIENCE;
use reservation_core::{
    BuyerId, InMemoryStore, Qty, ReservationClaims, ReservationId, ReservationStore, Sku,
    TokenSigner, TokenVerifier,
};
use serde_json::{Value, json};
use settlement::{RunningSettlement, SettlementConfig, SettlementDeps};

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".into())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A unique Redis key prefix for one test: tests share the server, never keys.
pub fn redis_prefix() -> String {
    format!("sgtest:{}", uuid::Uuid::new_v4().simple())
}

/// A URL whose connections all use a fresh, empty schema.
pub async fn postgres_url() -> anyhow::Result<String> {
    Ok(backend_adapters::sql::scratch_schema_url(&database_url(), "settle").await?)
}

pub fn sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("sg-{}.db", uuid::Uuid::new_v4().simple()));
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Deletes every key under `prefix` (what "Redis lost its data" means for one test, without
/// a FLUSHALL that would wipe the keys of tests running beside it).
pub async fn wipe_redis_prefix(prefix: &str) -> anyhow::Result<usize> {
    let client = redis::Client::open(redis_url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let n: usize = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
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

/// A buyer as the gateway asserts them.
pub fn buyer(sub: &str) -> Identity {
    Identity {
        sub: Some(sub.to_owned()),
        roles: vec![],
    }
}

/// An operator as the gateway asserts them.
pub fn ops(sub: &str) -> Identity {
    Identity {
        sub: Some(sub.to_owned()),
        roles: vec!["ops".to_owned()],
    }
}

/// The gateway's own requests (catalog reads): no buyer.
pub fn nobody() -> Identity {
    Identity::default()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sends a request as the gateway does: with an assertion for `who` over its method, path
/// with query and body, signed by `gateway`.
pub trait AsGateway {
    fn send_as(
        self,
        gateway: &AssertionSigner,
        who: Identity,
    ) -> impl std::future::Future<Output = anyhow::Result<reqwest::Response>>;
}

impl AsGateway for reqwest::RequestBuilder {
    async fn send_as(
        self,
        gateway: &AssertionSigner,
        who: Identity,
    ) -> anyhow::Result<reqwest::Response> {
        let (client, request) = self.build_split();
        let mut request = request?;
        let assertion = assertion_for(&request, gateway, &who, now_secs())?;
        request
            .headers_mut()
            .insert(ASSERTION_HEADER, assertion.parse()?);
        Ok(client.execute(request).await?)
    }
}

/// The assertion `gateway` would sign for `request` at `now`.
pub fn assertion_for(
    request: &reqwest::Request,
    gateway: &AssertionSigner,
    who: &Identity,
    now: u64,
) -> anyhow::Result<String> {
    let url = request.url();
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let body = request
        .body()
        .and_then(|b| b.as_bytes())
        .unwrap_or_default();
    let if_match = request
        .headers()
        .get(reqwest::header::IF_MATCH)
        .and_then(|v| v.to_str().ok());
    let bound = Bound::new(request.method().as_str(), &target, body).with_if_match(if_match);
    Ok(gateway.sign(&bound, who, now)?)
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
    let url = postgres_url().await?;
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
            .send_as(&self.gateway, ops("olga"))
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
        let now = jsonwebtoken_now();
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
            .send_as(&self.gateway, self::buyer(buyer))
            .await
    }

    /// A connection to the service's database, for assertions on rows.
    pub async fn db(&self) -> anyhow::Result<Db> {
        Ok(Db::connect(&self.db_url, 2).await?)
    }
}

fn jsonwebtoken_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn scalar(db: &Db, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(db.pool()).await?)
}
