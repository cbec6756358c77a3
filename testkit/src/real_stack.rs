//! The real stack of one test, [`RealStack`]: gateway and settlement in one process
//! (`stockgate::all_in_one`) on Redis under a scratch key prefix and a scratch PostgreSQL
//! schema ([`RealStack::start`]), or on the embedded default's in-memory store and SQLite file
//! ([`RealStack::start_embedded`]). It holds what a test drives the stack with (an HTTP client,
//! the test identity provider) and reads its layers with (a Redis connection, the settlement's
//! database), and [`RealStack::shutdown`] leaves nothing behind on the shared Redis or in the
//! temp dir.
//!
//! What one test file alone reads (a stream's entries, outbox rows, a status history) stays in
//! that file, as an extension trait over `RealStack`.

use std::path::Path;

use backend_adapters::sql::Db;
use gateway::app::Shared;
use gateway::metrics::Metrics;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use reservation_core::{Sku, StockSnapshot};
use serde_json::{Value, json};
use stockgate::all_in_one::AllInOne;
use stockgate::config::Config;

use crate::idp::Idp;
use crate::{http, services, stack};

/// Price of every product [`RealStack::add_product`] creates.
pub const PRICE_CENTS: i64 = 1999;

/// Gateway and settlement of one test, running, with the test's views into them.
pub struct RealStack {
    all: AllInOne,
    /// The configuration it runs with, the test's adjustments included.
    pub config: Config,
    /// `http://host:port` of the gateway's public listener.
    pub base: String,
    pub http: reqwest::Client,
    pub idp: Idp,
    /// The gateway's Redis key prefix: reservation store, cache (`:cache:`), rate limits
    /// (`:rl:`). The settlement's is `config.settlement.redis_key_prefix`. Empty on the
    /// in-memory store.
    pub prefix: String,
    /// The settlement's database: the scratch schema, or the SQLite file in the data dir.
    pub db: Db,
    /// `None` on the in-memory store.
    redis: Option<MultiplexedConnection>,
}

impl RealStack {
    /// The stack on Redis (key prefix `sgtest-<label>-…`) and a scratch PostgreSQL schema
    /// (`sgtest_<label>_…`), from [`stack::real_stack_config`] with `adjust` applied.
    pub async fn start(label: &str, adjust: impl FnOnce(&mut Config)) -> RealStack {
        let prefix = services::scratch_prefix(label);
        let (mut config, database_url) = stack::real_stack_config(label, &prefix).await;
        adjust(&mut config);
        let redis = services::redis_connection().await;
        RealStack::started(config, prefix, &database_url, Some(redis)).await
    }

    /// The stack as `stockgate` runs with no Redis or database URL: the in-memory store and an
    /// SQLite file in the data dir ([`stack::embedded_config`], `adjust` applied).
    pub async fn start_embedded(adjust: impl FnOnce(&mut Config)) -> RealStack {
        let mut config = stack::embedded_config();
        adjust(&mut config);
        let database_url = config.database_url_or_embedded();
        RealStack::started(config, String::new(), &database_url, None).await
    }

    async fn started(
        config: Config,
        prefix: String,
        database_url: &str,
        redis: Option<MultiplexedConnection>,
    ) -> RealStack {
        let (all, idp) = stack::start_real_stack(config.clone()).await;
        // After the start: the embedded settlement creates its SQLite file.
        let db = Db::connect(database_url, 2)
            .await
            .unwrap_or_else(|e| panic!("the stack's database at {database_url}: {e}"));
        RealStack {
            base: format!("http://{}", all.public_addr()),
            all,
            config,
            http: reqwest::Client::new(),
            idp,
            prefix,
            db,
            redis,
        }
    }

    /// Both services, as `all_in_one::start` returned them.
    pub fn all(&self) -> &AllInOne {
        &self.all
    }

    /// The gateway's store, signers and metrics.
    pub fn shared(&self) -> &Shared {
        &self.all.shared
    }

    /// The gateway's counters (the settlement's are `all().settlement.metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.all.shared.metrics
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `host:port` of the gateway, for raw-socket cases.
    pub fn addr(&self) -> String {
        self.all.public_addr().to_string()
    }

    /// The gateway's private data dir (removed by [`RealStack::shutdown`]).
    pub fn data_dir(&self) -> &Path {
        &self.config.gateway.data_dir
    }

    /// A connection to the stack's Redis, for reading keys behind its back.
    pub fn redis(&self) -> MultiplexedConnection {
        self.redis
            .clone()
            .expect("this stack runs on the in-memory store: it has no Redis")
    }

    // ---- HTTP, as the storefront and the console send it ----

    /// `GET path` with no credentials.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// `PUT /api/v1/admin/products/{sku}` as ops `olga`, without `If-Match` (a new product):
    /// status and body.
    pub async fn put_product(&self, sku: &str, product: &Value) -> (u16, Value) {
        let ops = self.idp.ops_token("olga");
        http::put_product(&self.http, &self.base, &ops, sku, product).await
    }

    /// `PUT /api/v1/admin/products/{sku}` as ops `olga` with `If-Match: if_match` (a change of
    /// the product at that version): status and body.
    pub async fn edit_product(&self, sku: &str, product: &Value, if_match: &str) -> (u16, Value) {
        let ops = self.idp.ops_token("olga");
        http::put_product_if_match(&self.http, &self.base, &ops, sku, product, Some(if_match)).await
    }

    /// Creates `sku` on sale, named after itself, at [`PRICE_CENTS`], with `total_stock` units
    /// and `limit` per buyer.
    pub async fn add_product(&self, sku: &str, total_stock: i64, limit: i64) {
        let product = json!({"name": sku, "price_cents": PRICE_CENTS, "total_stock": total_stock,
                             "per_buyer_limit": limit, "sale_state": "on_sale"});
        let (status, product) = self.put_product(sku, &product).await;
        assert!(status == 200 || status == 201, "{product}");
    }

    /// `POST /api/v1/reservations` for `token`'s buyer under idempotency key `key`.
    pub async fn reserve(&self, token: &str, key: &str, sku: &str, qty: u32) -> (u16, Value) {
        http::post_reservation(&self.http, &self.base, token, key, sku, qty).await
    }

    /// `POST /api/v1/orders` (the confirm) for `token`'s buyer under idempotency key `key`.
    pub async fn confirm(&self, token: &str, key: &str, reservation_token: &str) -> (u16, Value) {
        http::post_order(&self.http, &self.base, token, key, reservation_token).await
    }

    // ---- the store and SQL, read directly ----

    /// The store's counters of `sku`.
    pub async fn stock(&self, sku: &str) -> StockSnapshot {
        self.all
            .shared
            .store
            .snapshot(&Sku::parse(sku).unwrap())
            .await
            .unwrap()
    }

    /// How many SQL orders of `sku` are not cancelled.
    pub async fn orders_of_sku(&self, sku: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE sku = $1 AND status <> 'cancelled'")
            .bind(sku)
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }

    /// How many SQL orders reservation `reservation_id` made (0 or 1).
    pub async fn orders_of_reservation(&self, reservation_id: &str) -> i64 {
        sqlx::query_scalar("SELECT CAST(count(*) AS BIGINT) FROM orders WHERE reservation_id = $1")
            .bind(reservation_id)
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }

    // ---- Redis, read directly ----

    /// The reservation store's key `rest` of `sku`: `<prefix>:{<sku>}:<rest>`.
    pub fn sku_key(&self, sku: &str, rest: &str) -> String {
        format!("{}:{{{sku}}}:{rest}", self.prefix)
    }

    /// Every key under the gateway's prefix, sorted.
    pub async fn keys(&self) -> Vec<String> {
        services::scan_under(&mut self.redis(), &self.prefix).await
    }

    /// Milliseconds `key` has to live; -1 without an expiry, -2 when it is gone.
    pub async fn pttl(&self, key: &str) -> i64 {
        self.redis().pttl(key).await.unwrap()
    }

    /// Stops the gateway and the settlement, deletes the stack's Redis keys (both prefixes
    /// and the outbox stream) and its data dir. The scratch schema is dropped by the test
    /// command, as every test's is.
    pub async fn shutdown(self) {
        self.all.shutdown().await;
        if let Some(mut redis) = self.redis {
            services::delete_keys_under(&self.prefix).await;
            services::delete_keys_under(&self.config.settlement.redis_key_prefix).await;
            let _: i64 = redis
                .del(&self.config.settlement.outbox.stream)
                .await
                .unwrap();
        }
        self.db.close().await;
        let _ = std::fs::remove_dir_all(&self.config.gateway.data_dir);
    }
}
