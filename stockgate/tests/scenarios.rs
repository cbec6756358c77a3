//! The customer's test scenarios, in the order a buyer meets them (issue 8, item 4): product
//! view (cache miss, then hit), stock view (counters), order (reserve → confirm → SQL order →
//! outbox event on the stream), order status change (ops, fenced lock, SQL, event).
//!
//! Each test runs the real stack in-process (`all_in_one::start`): the Pingora gateway, the real
//! settlement service on a scratch PostgreSQL schema, the Redis reservation store, the edge's
//! Redis cache and rate limiter, the outbox relay and the gateway's invalidation consumer. It
//! asserts on every layer, with exact values: the HTTP answer (status, headers, body), the
//! Redis keys (read with a connection of the test's own), the SQL rows (read with sqlx) and
//! the stream entries (`XRANGE`). `docs/scenarios.md` walks through the same steps layer by
//! layer. Needs `REDIS_URL` and `DATABASE_URL`; each test has its own key prefix, stream and
//! schema, so the tests run in parallel with every other.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use backend_adapters::redis::lock::FencedLock;
use backend_adapters::sql::OrderStatus;
use backend_adapters::sql::orders::{self, StatusOutcome};
use gateway::cache::entry::Entry;
use gateway::cache::now_ms;
use redis::AsyncCommands;
use reservation_core::wire::rfc3339_ms;
use serde_json::{Value, json};
use testkit::{RealStack, body, header};

/// How long the store keeps a final hold and its idempotency record (the store's default).
const RETENTION_MS: i64 = 24 * 3600 * 1000;
/// Hold lifetime of these tests (the gateway's default, 10 minutes).
const HOLD_TTL_MS: i64 = 600_000;
/// The lease (and the longest wait) of the settlement's per-order status lock here.
const STATUS_LOCK_LEASE_MS: u64 = 1_000;
/// The longest the relay and the invalidation consumer get to catch up (a liveness bound: the
/// relay polls every 100 ms; a test only waits this long when something is broken).
const CATCH_UP: Duration = Duration::from_secs(10);

/// Rate limits slow enough that their GCRA keys outlive the test: one request a minute,
/// bursts of five. A key's TTL then tells how many requests it counted.
const RULES: &str = r#"
[[rule]]
name = "reserve-per-buyer-sku"
method = "POST"
path = "/api/v1/reservations"
key = ["sub", "sku"]
rate = 1
period_secs = 60
burst = 5

[[rule]]
name = "confirm-per-buyer"
method = "POST"
path = "/api/v1/orders"
key = ["sub"]
rate = 1
period_secs = 60
burst = 5
"#;

/// The whole stack of one test: the rate limits above in a rules file in its data dir, a short
/// status-lock lease and a minute of cache freshness.
async fn start() -> RealStack {
    RealStack::start("scen", |config| {
        let rules_file = config.gateway.data_dir.join("rules.toml");
        std::fs::create_dir_all(&config.gateway.data_dir).unwrap();
        std::fs::write(&rules_file, RULES).unwrap();
        config.settlement.status_lock_lease_ms = STATUS_LOCK_LEASE_MS;
        config.gateway.cache.replica_id = Some("scen".into());
        // Fresh for a minute (the default is 5 s): a loaded machine cannot turn a hit into a
        // stale answer halfway through a scenario.
        config.gateway.cache.ttl_secs = 60;
        config.gateway.ratelimit.rules_file = Some(rules_file);
    })
    .await
}

/// `sku` as ops write it in these scenarios: a sneaker on sale.
fn sneaker(sku: &str, price_cents: i64, total_stock: i64, limit: i64) -> Value {
    json!({"name": format!("{sku} sneaker"), "price_cents": price_cents,
           "total_stock": total_stock, "per_buyer_limit": limit, "sale_state": "on_sale"})
}

/// The scenarios' own requests, and their views into Redis, PostgreSQL and the stream.
trait Scenario {
    async fn replica(&self, replica: &str) -> testkit::Edge;
    async fn new_product(&self, sku: &str, price_cents: i64, total_stock: i64, limit: i64);
    async fn change_product(
        &self,
        sku: &str,
        version: i64,
        price_cents: i64,
        total_stock: i64,
        limit: i64,
    );
    async fn set_status(&self, token: &str, order_id: &str, to: &str) -> reqwest::Response;
    async fn stock_view(&self, sku: &str) -> Value;
    async fn hash(&self, key: &str) -> BTreeMap<String, String>;
    async fn string(&self, key: &str) -> Option<String>;
    async fn exists(&self, key: &str) -> bool;
    async fn counters(&self, sku: &str, limit: &str) -> (i64, i64, i64, i64, i64);
    async fn stream_entries(&self) -> Vec<(String, i64, String, Value)>;
    async fn product_row(&self, sku: &str) -> (String, String, i64, i64, i64, i64, i64);
    async fn order_rows(&self) -> Vec<Value>;
    async fn history(&self, order_id: &str) -> Vec<(Option<String>, String, String, Option<i64>)>;
    async fn outbox_rows(&self) -> Vec<(i64, String, Value, bool)>;
    async fn relayed(&self, events: usize) -> Vec<(i64, String, Value, bool)>;
    async fn invalidations_handled(&self, edge: &gateway::edge::EdgeState);
}

impl Scenario for RealStack {
    /// A second gateway replica in front of the same settlement and Redis: its own process
    /// memory tier and its own reader of the events stream, the shared Redis
    /// tier and store.
    async fn replica(&self, replica: &str) -> testkit::Edge {
        let mut config = self.config.clone();
        config.gateway.cache.replica_id = Some(replica.into());
        config.gateway.upstream.settlement_addr = self.all().settlement.addr.to_string();
        config.gateway.upstream.settlement_admin_port = self.all().settlement.admin_addr.port();
        config.gateway.data_dir = std::env::temp_dir().join(format!(
            "stockgate-scen-{replica}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        // It follows the settlement's events stream, as `stockgate gateway` does.
        let edge = config.gateway_config();
        // A replica of the same deployment: it signs settlement requests with the same
        // assertion key, the one the in-process settlement verifies.
        let mut shared = gateway::app::Shared::new(&edge, self.all().shared.store.clone()).unwrap();
        shared.assertions = self.all().shared.assertions.clone();
        if let Some(url) = &edge.redis_url {
            shared.connect_edge_redis(&edge, url).await.unwrap();
        }
        testkit::start_edge_shared(edge, shared).await
    }

    // ---- HTTP, as the storefront sends it ----

    /// `PUT /api/v1/admin/products/{sku}` as ops: a new product.
    async fn new_product(&self, sku: &str, price_cents: i64, total_stock: i64, limit: i64) {
        let product = sneaker(sku, price_cents, total_stock, limit);
        let (status, product) = self.put_product(sku, &product).await;
        assert_eq!(status, 201, "{product}");
    }

    /// `PUT /api/v1/admin/products/{sku}` as ops: a change of the product at `version`.
    async fn change_product(
        &self,
        sku: &str,
        version: i64,
        price_cents: i64,
        total_stock: i64,
        limit: i64,
    ) {
        let tag = format!("\"{version}\"");
        let product = sneaker(sku, price_cents, total_stock, limit);
        let (status, product) = self.edit_product(sku, &product, &tag).await;
        assert_eq!(status, 200, "{product}");
    }

    /// `POST /api/v1/admin/orders/{id}/status` with `token`: the response itself, for its headers.
    async fn set_status(&self, token: &str, order_id: &str, to: &str) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/api/v1/admin/orders/{order_id}/status")))
            .bearer_auth(token)
            .json(&json!({ "status": to }))
            .send()
            .await
            .unwrap()
    }

    async fn stock_view(&self, sku: &str) -> Value {
        let (status, stock) = body(self.get(&format!("/api/v1/stock/{sku}")).await).await;
        assert_eq!(status, 200, "{stock}");
        stock
    }

    // ---- Redis, read directly ----

    async fn hash(&self, key: &str) -> BTreeMap<String, String> {
        self.redis().hgetall(key).await.unwrap()
    }

    async fn string(&self, key: &str) -> Option<String> {
        self.redis().get(key).await.unwrap()
    }

    async fn exists(&self, key: &str) -> bool {
        self.redis().exists(key).await.unwrap()
    }

    /// The stock hash of `sku` as `(total, available, held, confirming, sold)`, checking the
    /// fields that do not move.
    async fn counters(&self, sku: &str, limit: &str) -> (i64, i64, i64, i64, i64) {
        let stock = self.hash(&self.sku_key(sku, "stock")).await;
        assert_eq!(
            (
                stock["limit"].as_str(),
                stock["max"].as_str(),
                stock["state"].as_str()
            ),
            (limit, limit, "on_sale"),
            "{stock:?}"
        );
        assert_eq!(stock.len(), 8, "no other field: {stock:?}");
        let n = |field: &str| stock[field].parse::<i64>().unwrap();
        (
            n("total"),
            n("available"),
            n("held"),
            n("confirming"),
            n("sold"),
        )
    }

    /// Every entry of the outbox stream: `(entry id, outbox id field, topic, payload)`.
    async fn stream_entries(&self) -> Vec<(String, i64, String, Value)> {
        let reply: redis::streams::StreamRangeReply = self
            .redis()
            .xrange_all(&self.config.settlement.outbox.stream)
            .await
            .unwrap();
        reply
            .ids
            .iter()
            .map(|entry| {
                let payload: String = entry.get("payload").unwrap();
                (
                    entry.id.clone(),
                    entry.get::<i64>("id").unwrap(),
                    entry.get::<String>("topic").unwrap(),
                    serde_json::from_str(&payload).unwrap(),
                )
            })
            .collect()
    }

    // ---- PostgreSQL, read directly ----

    /// `(sku, name, price_cents, total_stock, sold, version, updated_at_ms)`.
    async fn product_row(&self, sku: &str) -> (String, String, i64, i64, i64, i64, i64) {
        sqlx::query_as(
            "SELECT sku, name, price_cents, total_stock, sold, version, updated_at_ms \
             FROM products WHERE sku = $1",
        )
        .bind(sku)
        .fetch_one(self.db.pool())
        .await
        .unwrap()
    }

    /// Every order as JSON, oldest first, with the columns the API does not show.
    async fn order_rows(&self) -> Vec<Value> {
        type Row = (
            String,
            String,
            String,
            String,
            i64,
            i64,
            i64,
            String,
            i64,
            i64,
            i64,
            i64,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, reservation_id, user_sub, sku, qty, unit_price_cents, total_cents, \
             status, version, fence, created_at_ms, updated_at_ms FROM orders \
             ORDER BY created_at_ms, id",
        )
        .fetch_all(self.db.pool())
        .await
        .unwrap();
        rows.into_iter()
            .map(|r| {
                json!({"id": r.0, "reservation_id": r.1, "user_sub": r.2, "sku": r.3,
                       "qty": r.4, "unit_price_cents": r.5, "total_cents": r.6,
                       "status": r.7, "version": r.8, "fence": r.9,
                       "created_at_ms": r.10, "updated_at_ms": r.11})
            })
            .collect()
    }

    /// `(from_status, to_status, actor, fence)` of one order's history, oldest first.
    async fn history(&self, order_id: &str) -> Vec<(Option<String>, String, String, Option<i64>)> {
        sqlx::query_as(
            "SELECT from_status, to_status, actor, fence FROM order_status_history \
             WHERE order_id = $1 ORDER BY id",
        )
        .bind(order_id)
        .fetch_all(self.db.pool())
        .await
        .unwrap()
    }

    /// Every outbox row: `(id, topic, payload, published)`.
    async fn outbox_rows(&self) -> Vec<(i64, String, Value, bool)> {
        let rows: Vec<(i64, String, String, Option<i64>)> =
            sqlx::query_as("SELECT id, topic, payload, published_at_ms FROM outbox ORDER BY id")
                .fetch_all(self.db.pool())
                .await
                .unwrap();
        rows.into_iter()
            .map(|(id, topic, payload, published)| {
                (
                    id,
                    topic,
                    serde_json::from_str(&payload).unwrap(),
                    published.is_some(),
                )
            })
            .collect()
    }

    // ---- waiting for the asynchronous steps ----

    /// Waits until the relay has published `events` outbox rows to the stream and marked them,
    /// then checks that the stream holds exactly the outbox: one entry per row, in id order,
    /// with the same topic and payload. Returns the rows.
    async fn relayed(&self, events: usize) -> Vec<(i64, String, Value, bool)> {
        let started = Instant::now();
        loop {
            let rows = self.outbox_rows().await;
            let entries = self.stream_entries().await;
            let published = rows.iter().all(|row| row.3);
            if rows.len() == events && published && entries.len() == events {
                let expected: Vec<(String, i64, String, Value)> = rows
                    .iter()
                    .map(|(id, topic, payload, _)| {
                        (format!("{id}-0"), *id, topic.clone(), payload.clone())
                    })
                    .collect();
                assert_eq!(entries, expected, "the stream mirrors the outbox");
                return rows;
            }
            assert!(
                started.elapsed() < CATCH_UP,
                "the relay did not publish {events} events: outbox {rows:?}, stream {entries:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the gateway whose state is `edge` has handled every entry of the stream
    /// (its reader's position is the stream's last id): no cache invalidation is still on its
    /// way to that replica.
    async fn invalidations_handled(&self, edge: &gateway::edge::EdgeState) {
        let cache = edge.cache.as_ref().expect("the cache is on");
        let started = Instant::now();
        loop {
            let last = self.stream_entries().await.last().map(|e| e.0.clone());
            if last.is_some() && cache.stream_position() == last {
                return;
            }
            assert!(
                started.elapsed() < CATCH_UP,
                "the gateway did not handle the stream up to {last:?} (it is at {:?})",
                cache.stream_position()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The problem `code` of an error body.
fn code(problem: &Value) -> &str {
    problem["code"].as_str().unwrap_or_default()
}

/// Scenario 1: a buyer opens a product page. The first view misses every cache tier, is
/// fetched from the settlement (SQL) and stored in process memory and Redis; the second is a
/// hit that never leaves the gateway; a revalidation with the ETag is a 304.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_1_product_view_cache_miss_then_hit() {
    let stack = start().await;
    stack.new_product("HOT", 19_999, 10, 2).await;
    // The product's creation event must be relayed and handled first, or its invalidation
    // could drop the copy this scenario is about to store.
    let outbox = stack.relayed(1).await;
    assert_eq!(
        outbox,
        vec![(
            1,
            "product.updated".into(),
            json!({"sku": "HOT", "version": 1}),
            true
        )]
    );
    stack.invalidations_handled(&stack.all().edge).await;
    let entry_key = format!("{}:cache:/api/v1/products/HOT", stack.prefix);
    let list_key = format!("{}:cache:/api/v1/products", stack.prefix);
    assert!(!stack.exists(&entry_key).await, "nothing cached yet");

    // 1. Cache miss: the gateway fetches from the settlement and stores the copy.
    let response = stack.get("/api/v1/products/HOT").await;
    let answered_ms = now_ms();
    assert_eq!(response.status(), 200);
    let (cache_status, etag, age, cache_control) = (
        header(&response, "cache-status"),
        header(&response, "etag"),
        header(&response, "age"),
        header(&response, "cache-control"),
    );
    assert_eq!(header(&response, "content-type"), "application/json");
    let miss_body = response.bytes().await.unwrap();
    let product: Value = serde_json::from_slice(&miss_body).unwrap();
    assert_eq!(cache_status, "stockgate; fwd=miss; stored");
    assert_eq!(age, "0");

    // SQL: the row the settlement answered from.
    let (sku, name, price, total, sold, version, updated_at_ms) = stack.product_row("HOT").await;
    assert_eq!(
        (sku.as_str(), name.as_str(), price, total, sold, version),
        ("HOT", "HOT sneaker", 19_999, 10, 0, 1)
    );
    assert_eq!(
        product,
        json!({"sku": "HOT", "name": "HOT sneaker", "price_cents": 19_999, "total_stock": 10,
               "sold": 0, "per_buyer_limit": 2, "max_per_order": 2, "sale_state": "on_sale",
               "version": 1, "updated_at": rfc3339_ms(updated_at_ms)})
    );

    // Redis: the shared copy, its validator and its lifetime (fresh + the longer stale window).
    let raw: Vec<u8> = stack.redis().get(&entry_key).await.unwrap();
    let entry = Entry::decode(&raw).expect("a cache entry the gateway wrote");
    assert_eq!(entry.body, miss_body);
    assert_eq!(entry.etag, etag);
    assert_eq!(
        etag,
        Entry::new(miss_body.clone(), None, 0, 0).etag,
        "the ETag is the body's hash"
    );
    let cache = &stack.config.gateway.cache;
    let ttl_ms = cache.ttl_secs * 1000;
    assert!(
        (ttl_ms..=ttl_ms + ttl_ms * cache.jitter_percent / 100).contains(&entry.fresh_ms),
        "freshness is the TTL plus up to {}% jitter: {}",
        cache.jitter_percent,
        entry.fresh_ms
    );
    let keep_ms = entry.fresh_ms
        + 1000
            * cache
                .stale_while_revalidate_secs
                .max(cache.stale_if_error_secs);
    let read_ms = now_ms();
    let pttl = stack.pttl(&entry_key).await;
    let elapsed = now_ms() - entry.stored_at_ms;
    assert!(
        (keep_ms as i64 - elapsed as i64 - 1..=keep_ms as i64).contains(&pttl),
        "PTTL {pttl}, kept {keep_ms} ms from the store {elapsed} ms ago"
    );
    assert!(entry.stored_at_ms <= answered_ms && answered_ms <= read_ms);
    let fresh_left = |at: u64| (entry.stored_at_ms + entry.fresh_ms).saturating_sub(at) / 1000;
    let max_age = |cache_control: &str| -> u64 {
        let secs = cache_control.strip_prefix("public, max-age=").unwrap();
        secs.parse().unwrap()
    };
    // Whole seconds of freshness left when the answer was written.
    let miss_max_age = max_age(&cache_control);
    assert!(
        (fresh_left(answered_ms)..=fresh_left(entry.stored_at_ms)).contains(&miss_max_age),
        "{cache_control}"
    );
    assert!(!stack.exists(&list_key).await, "only the page asked for");

    // 2. Cache hit: served from the gateway's memory; nothing new upstream or in Redis.
    let response = stack.get("/api/v1/products/HOT").await;
    let at_ms = now_ms();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "etag"), etag);
    let hit_max_age = max_age(&header(&response, "cache-control"));
    assert!((fresh_left(at_ms)..=fresh_left(entry.stored_at_ms)).contains(&hit_max_age));
    assert_eq!(
        header(&response, "cache-status"),
        format!("stockgate; hit; ttl={hit_max_age}")
    );
    let age: u64 = header(&response, "age").parse().unwrap();
    assert!(age <= (at_ms - entry.stored_at_ms) / 1000, "age {age}");
    assert_eq!(response.bytes().await.unwrap(), miss_body);
    let metrics = &stack.all().shared.metrics;
    assert_eq!(
        (metrics.cache_count("miss"), metrics.cache_count("hit")),
        (1, 1),
        "one fetch from the settlement, one answer from the cache"
    );
    let again = Entry::decode(&stack.redis().get::<_, Vec<u8>>(&entry_key).await.unwrap());
    assert_eq!(
        again,
        Some(entry.clone()),
        "a hit does not rewrite the copy"
    );

    // 3. Revalidation: the storefront sends the ETag back and gets 304 without a body.
    let response = stack
        .http
        .get(stack.url("/api/v1/products/HOT"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    assert_eq!(header(&response, "etag"), etag);
    assert!(response.bytes().await.unwrap().is_empty());
    assert_eq!(metrics.cache_count("hit"), 2);

    // Reads change nothing in SQL or on the stream.
    assert_eq!(stack.product_row("HOT").await.5, 1);
    assert_eq!(stack.relayed(1).await, outbox);

    // 4. Another replica: its memory is empty, the Redis copy answers (no upstream fetch).
    let replica = stack.replica("scen-2").await;
    let response = replica.get("/api/v1/products/HOT").await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "etag"), etag);
    assert!(
        header(&response, "cache-status").starts_with("stockgate; hit; ttl="),
        "{}",
        header(&response, "cache-status")
    );
    assert_eq!(response.bytes().await.unwrap(), miss_body);
    let replica_metrics = &replica.state.metrics;
    assert_eq!(
        (
            replica_metrics.cache_count("miss"),
            replica_metrics.cache_count("hit")
        ),
        (0, 1)
    );

    // 5. Ops change the price through the first replica: it drops its copies (memory and
    // Redis) before it answers; the outbox event tells the other replica, whose memory still
    // holds the old copy.
    stack.change_product("HOT", 1, 17_999, 10, 2).await;
    assert!(
        !stack.exists(&entry_key).await,
        "dropped by the gateway that proxied the change"
    );
    let outbox = stack.relayed(2).await;
    assert_eq!(
        outbox[1],
        (
            2,
            "product.updated".into(),
            json!({"sku": "HOT", "version": 2}),
            true
        )
    );
    stack.invalidations_handled(&stack.all().edge).await;
    stack.invalidations_handled(&replica.state).await;

    // 6. The other replica misses and fetches the new price; the first then hits its copy in Redis.
    let response = replica.get("/api/v1/products/HOT").await;
    assert_eq!(
        header(&response, "cache-status"),
        "stockgate; fwd=miss; stored"
    );
    let new_etag = header(&response, "etag");
    assert_ne!(new_etag, etag);
    let changed: Value = response.json().await.unwrap();
    assert_eq!(
        (changed["price_cents"].as_i64(), changed["version"].as_i64()),
        (Some(17_999), Some(2))
    );
    let (_, name, price, _, _, version, _) = stack.product_row("HOT").await;
    assert_eq!((name.as_str(), price, version), ("HOT sneaker", 17_999, 2));
    let response = stack.get("/api/v1/products/HOT").await;
    assert!(header(&response, "cache-status").starts_with("stockgate; hit; ttl="));
    assert_eq!(header(&response, "etag"), new_etag);
    assert_eq!(response.json::<Value>().await.unwrap(), changed);
    assert_eq!(
        (metrics.cache_count("miss"), metrics.cache_count("hit")),
        (1, 3),
        "the first replica fetched once in all"
    );
    drop(replica);
    stack.shutdown().await;
}

/// Scenario 2: the storefront polls the live stock of a product. The gateway answers from the
/// Redis counters (never cached), which move with every hold; SQL only learns of sales.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_stock_view_counters() {
    let stack = start().await;
    stack.new_product("DROP", 4_999, 3, 2).await;
    let stock_key = stack.sku_key("DROP", "stock");

    // Fresh product: every unit available.
    let response = stack.get("/api/v1/stock/DROP").await;
    assert_eq!(header(&response, "content-type"), "application/json");
    assert_eq!(
        header(&response, "cache-status"),
        "",
        "stock is never cached"
    );
    assert_eq!(header(&response, "etag"), "");
    let (status, stock) = body(response).await;
    assert_eq!(status, 200);
    assert_eq!(
        stock,
        json!({"sku": "DROP", "available": 3, "held": 0, "sold": 0, "state": "on_sale"})
    );
    assert_eq!(stack.counters("DROP", "2").await, (3, 3, 0, 0, 0));
    assert_eq!(stack.pttl(&stock_key).await, -1, "counters never expire");
    let skus: Vec<String> = stack
        .redis()
        .smembers(format!("{}:skus", stack.prefix))
        .await
        .unwrap();
    assert_eq!(skus, vec!["DROP".to_owned()]);

    // Alice holds 2: available moves to held at once.
    let alice = stack.idp.token("alice");
    let (status, alice_hold) = stack.reserve(&alice, "k-alice", "DROP", 2).await;
    assert_eq!(status, 201, "{alice_hold}");
    assert_eq!(
        stack.stock_view("DROP").await,
        json!({"sku": "DROP", "available": 1, "held": 2, "sold": 0, "state": "on_sale"})
    );
    assert_eq!(stack.counters("DROP", "2").await, (3, 1, 2, 0, 0));

    // Bob holds the last unit: the product reads as sold out.
    let bob = stack.idp.token("bob");
    let (status, bob_hold) = stack.reserve(&bob, "k-bob", "DROP", 1).await;
    assert_eq!(status, 201, "{bob_hold}");
    assert_eq!(
        stack.stock_view("DROP").await,
        json!({"sku": "DROP", "available": 0, "held": 3, "sold": 0, "state": "sold_out"})
    );
    assert_eq!(stack.counters("DROP", "2").await, (3, 0, 3, 0, 0));
    let buyers = stack.hash(&stack.sku_key("DROP", "buyers")).await;
    assert_eq!(
        buyers,
        BTreeMap::from([("alice".into(), "2".into()), ("bob".into(), "1".into())])
    );

    // Bob releases: his unit is back, and so is the sale.
    let id = bob_hold["reservation_id"].as_str().unwrap();
    let response = stack
        .http
        .delete(stack.url(&format!("/api/v1/reservations/{id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        stack.stock_view("DROP").await,
        json!({"sku": "DROP", "available": 1, "held": 2, "sold": 0, "state": "on_sale"})
    );
    assert_eq!(stack.counters("DROP", "2").await, (3, 1, 2, 0, 0));
    let bob_key = stack.sku_key("DROP", &format!("hold:{id}"));
    assert_eq!(stack.hash(&bob_key).await["state"], "released");

    // An unknown SKU is a clear 404, and changes nothing.
    let (status, problem) = body(stack.get("/api/v1/stock/NOPE").await).await;
    assert_eq!((status, code(&problem)), (404, "unknown_sku"));
    assert!(!stack.exists(&stack.sku_key("NOPE", "stock")).await);

    // Holds live in Redis only: SQL has sold nothing and no event was written for them.
    assert_eq!(stack.product_row("DROP").await.4, 0);
    assert!(stack.order_rows().await.is_empty());
    let outbox = stack.relayed(1).await;
    assert_eq!(outbox[0].1, "product.updated");
    stack.shutdown().await;
}

/// Scenario 3: a buyer orders. Reserve (one Lua script: counters, hold, expiry index,
/// idempotency record) → signed reservation token → confirm (hold to confirming, settlement
/// commits the order, status history and outbox row in one transaction, hold to confirmed) →
/// the relay publishes `order.created` on the stream. Retries of both steps are replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_3_order_reserve_confirm_sql_order_outbox_event() {
    let stack = start().await;
    stack.new_product("HOT", 19_999, 10, 3).await;
    stack.relayed(1).await;
    let alice = stack.idp.token("alice");

    // 1. Reserve 2 units under an idempotency key.
    let (status, created) = stack.reserve(&alice, "order-1", "HOT", 2).await;
    assert_eq!(status, 201, "{created}");
    let rid = created["reservation_id"].as_str().unwrap().to_owned();
    assert!(rid.starts_with("rsv_") && rid.ends_with("_HOT"), "{rid}");
    let hold_key = stack.sku_key("HOT", &format!("hold:{rid}"));
    let idem_key = stack.sku_key("HOT", "idem:5:alice:order-1");
    let hold = stack.hash(&hold_key).await;
    let expires: i64 = hold["expires"].parse().unwrap();
    let created_ms: i64 = hold["created"].parse().unwrap();
    assert_eq!(expires - created_ms, HOLD_TTL_MS);
    assert_eq!(
        hold,
        BTreeMap::from([
            ("buyer".into(), "alice".into()),
            ("qty".into(), "2".into()),
            ("state".into(), "held".into()),
            ("created".into(), created_ms.to_string()),
            ("expires".into(), expires.to_string()),
            ("idem".into(), idem_key.clone()),
        ])
    );
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(
        created,
        json!({"reservation_id": rid, "token": token, "sku": "HOT", "qty": 2,
               "expires_at": rfc3339_ms(expires)})
    );
    // The token is the gateway's signature over the hold.
    let claims = stack.all().shared.verifier().verify(&token).unwrap();
    assert_eq!(
        (
            claims.rid.as_str(),
            claims.sub.as_str(),
            claims.sku.as_str(),
            claims.qty.get(),
            claims.exp
        ),
        (
            rid.as_str(),
            "alice",
            "HOT",
            2,
            (expires as u64).div_ceil(1000)
        )
    );
    // Redis: counters, buyer's units, expiry index, idempotency record and its binding.
    assert_eq!(stack.counters("HOT", "3").await, (10, 8, 2, 0, 0));
    assert_eq!(
        stack.hash(&stack.sku_key("HOT", "buyers")).await,
        BTreeMap::from([("alice".into(), "2".into())])
    );
    let due: Option<i64> = stack
        .redis()
        .zscore(stack.sku_key("HOT", "expiry"), &rid)
        .await
        .unwrap();
    assert_eq!(due, Some(expires));
    assert_eq!(
        stack.pttl(&hold_key).await,
        -1,
        "a held hold waits for the sweeper"
    );
    assert_eq!(stack.string(&idem_key).await.as_deref(), Some(rid.as_str()));
    let record_ms = HOLD_TTL_MS + RETENTION_MS;
    let idem_ttl = stack.pttl(&idem_key).await;
    assert!(
        idem_ttl > RETENTION_MS && idem_ttl <= record_ms,
        "{idem_ttl}"
    );
    let binding_key = format!("{}:idem:5:alice:order-1", stack.prefix);
    let binding = format!("HOT|2|{rid}");
    assert_eq!(
        stack.string(&binding_key).await.as_deref(),
        Some(binding.as_str())
    );
    // Nothing in SQL yet.
    assert!(stack.order_rows().await.is_empty());

    // 2. The storefront retries (lost answer): the same hold and token, nothing taken twice.
    let (status, replay) = stack.reserve(&alice, "order-1", "HOT", 2).await;
    assert_eq!((status, &replay), (200, &created));
    assert_eq!(stack.counters("HOT", "3").await, (10, 8, 2, 0, 0));
    let metrics = &stack.all().shared.metrics;
    assert_eq!(
        (
            metrics.reservation_count("created"),
            metrics.reservation_count("replayed")
        ),
        (1, 1)
    );
    // The rate limiter counted both requests against alice's budget for HOT: two minutes of
    // one-a-minute budget, minus the time since.
    let reserve_limit = format!(
        "{}:rl:reserve-per-buyer-sku:sub=alice|sku=HOT",
        stack.prefix
    );
    let limit_ttl = stack.pttl(&reserve_limit).await;
    assert!(limit_ttl > 60_000 && limit_ttl <= 120_000, "{limit_ttl}");

    // 3. Confirm with the token: the order is committed in SQL.
    let (status, order) = stack.confirm(&alice, "confirm-1", &token).await;
    assert_eq!(status, 201, "{order}");
    let rows = stack.order_rows().await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    let order_id = row["id"].as_str().unwrap().to_owned();
    assert!(order_id.starts_with("ord_"), "{order_id}");
    let at = row["created_at_ms"].as_i64().unwrap();
    assert_eq!(
        row,
        &json!({"id": order_id, "reservation_id": rid, "user_sub": "alice", "sku": "HOT",
                "qty": 2, "unit_price_cents": 19_999, "total_cents": 39_998,
                "status": "confirmed", "version": 1, "fence": 0,
                "created_at_ms": at, "updated_at_ms": at})
    );
    assert_eq!(
        order,
        json!({"order_id": order_id, "reservation_id": rid, "user_sub": "alice", "sku": "HOT",
               "qty": 2, "unit_price": 19_999, "total": 39_998, "status": "confirmed",
               "version": 1, "created_at": rfc3339_ms(at), "updated_at": rfc3339_ms(at)})
    );
    assert_eq!(stack.product_row("HOT").await.4, 2, "SQL sold the units");
    assert_eq!(
        stack.history(&order_id).await,
        vec![(None, "confirmed".into(), "settlement".into(), None)]
    );
    // Redis: the hold is confirmed and kept for replays only; the units are sold.
    assert_eq!(stack.counters("HOT", "3").await, (10, 8, 0, 0, 2));
    assert_eq!(stack.hash(&hold_key).await["state"], "confirmed");
    let hold_ttl = stack.pttl(&hold_key).await;
    assert!(hold_ttl > 0 && hold_ttl <= RETENTION_MS, "{hold_ttl}");
    let idem_ttl = stack.pttl(&idem_key).await;
    assert!(
        idem_ttl > 0 && idem_ttl <= RETENTION_MS,
        "renewed: {idem_ttl}"
    );
    let due: Option<i64> = stack
        .redis()
        .zscore(stack.sku_key("HOT", "expiry"), &rid)
        .await
        .unwrap();
    assert_eq!(due, None, "out of the sweeper's index");
    assert!(!stack.exists(&stack.sku_key("HOT", "confirming")).await);

    // 4. The outbox row of the same transaction reaches the stream.
    let event = json!({"order_id": order_id, "reservation_id": rid, "user_sub": "alice",
                       "sku": "HOT", "qty": 2});
    let outbox = stack.relayed(2).await;
    assert_eq!(outbox[1], (2, "order.created".into(), event, true));

    // 5. A retried confirm answers the same order; nothing is written twice.
    let (status, again) = stack.confirm(&alice, "confirm-1", &token).await;
    assert_eq!((status, &again), (200, &order));
    assert_eq!(stack.order_rows().await.len(), 1);
    assert_eq!(stack.counters("HOT", "3").await, (10, 8, 0, 0, 2));
    assert_eq!(stack.relayed(2).await, outbox);
    let confirm_limit = format!("{}:rl:confirm-per-buyer:sub=alice", stack.prefix);
    let limit_ttl = stack.pttl(&confirm_limit).await;
    assert!(limit_ttl > 60_000 && limit_ttl <= 120_000, "{limit_ttl}");

    // The buyer reads the order back through the gateway; the stock view agrees.
    let response = stack
        .http
        .get(stack.url(&format!("/api/v1/orders/{order_id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "etag"), "\"1\"");
    let (status, read) = body(response).await;
    assert_eq!((status, read), (200, order));
    assert_eq!(
        stack.stock_view("HOT").await,
        json!({"sku": "HOT", "available": 8, "held": 0, "sold": 2, "state": "on_sale"})
    );
    stack.shutdown().await;
}

/// Scenario 4: ops move an order along its workflow. The gateway checks the ops role and
/// proxies; the settlement takes the order's fenced Redis lock, writes the status with the
/// fence check, a history row and an outbox row in one transaction, and releases the lock;
/// the relay publishes `order.status_changed`. A holder whose lease lapsed cannot write with
/// its old fence, and a held lock makes a change wait, then answer 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_4_order_status_change_under_the_fenced_lock() {
    let stack = start().await;
    stack.new_product("HOT", 19_999, 10, 3).await;
    let alice = stack.idp.token("alice");
    let (_, held) = stack.reserve(&alice, "order-1", "HOT", 1).await;
    let (status, order) = stack
        .confirm(&alice, "confirm-1", held["token"].as_str().unwrap())
        .await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["order_id"].as_str().unwrap().to_owned();
    stack.relayed(2).await;
    let ops = stack.idp.ops_token("olga");
    let lock_name = format!("order:{order_id}");
    let lock_key = format!(
        "{}:lock:{{{lock_name}}}",
        stack.config.settlement.redis_key_prefix
    );
    let fence_key = format!("{lock_key}:fence");
    let status_of = |row: &Value| {
        (
            row["status"].as_str().unwrap().to_owned(),
            row["version"].as_i64().unwrap(),
            row["fence"].as_i64().unwrap(),
        )
    };

    // A buyer's token is refused at the gateway (403) and reaches nothing behind it.
    let (status, problem) = body(stack.set_status(&alice, &order_id, "shipped").await).await;
    assert_eq!((status, code(&problem)), (403, "forbidden"));
    assert!(!stack.exists(&fence_key).await, "no lock was taken");

    // 1. Ship: lock taken with fence 1, SQL written with it, lock released, event published.
    let response = stack.set_status(&ops, &order_id, "shipped").await;
    assert_eq!(header(&response, "etag"), "\"2\"");
    let (status, shipped) = body(response).await;
    assert_eq!(status, 200, "{shipped}");
    assert_eq!(
        (
            shipped["status"].as_str(),
            shipped["version"].as_i64(),
            &shipped["order_id"]
        ),
        (Some("shipped"), Some(2), &order["order_id"])
    );
    assert_eq!(
        status_of(&stack.order_rows().await[0]),
        ("shipped".into(), 2, 1)
    );
    assert!(!stack.exists(&lock_key).await, "the lock is released");
    assert_eq!(stack.string(&fence_key).await.as_deref(), Some("1"));
    assert_eq!(
        stack.history(&order_id).await,
        vec![
            (None, "confirmed".into(), "settlement".into(), None),
            (
                Some("confirmed".into()),
                "shipped".into(),
                "olga".into(),
                Some(1)
            ),
        ]
    );
    let outbox = stack.relayed(3).await;
    assert_eq!(
        outbox[2],
        (
            3,
            "order.status_changed".into(),
            json!({"order_id": order_id, "sku": "HOT", "from": "confirmed", "to": "shipped", "fence": 1}),
            true
        )
    );

    // 2. A paused holder: an ops tool takes the lock (fence 2) and stalls past its lease. The
    // change through the gateway waits for the lease to lapse, then wins with fence 3.
    let lock = FencedLock::connect(
        &testkit::redis_url(),
        &stack.config.settlement.redis_key_prefix,
    )
    .await
    .unwrap();
    let paused = lock
        .try_acquire(&lock_name, "paused-ops-tool", Duration::from_millis(300))
        .await
        .unwrap()
        .expect("the lock is free");
    assert_eq!(paused.fence, 2);
    let response = stack.set_status(&ops, &order_id, "delivered").await;
    let (status, delivered) = body(response).await;
    assert_eq!(status, 200, "{delivered}");
    assert_eq!(delivered["status"], "delivered");
    assert_eq!(
        status_of(&stack.order_rows().await[0]),
        ("delivered".into(), 3, 3)
    );
    assert_eq!(stack.string(&fence_key).await.as_deref(), Some("3"));
    assert!(!stack.exists(&lock_key).await);
    // The paused tool wakes and writes with its old fence: SQL refuses it.
    let late = orders::set_status_fenced(
        &stack.db,
        &order_id,
        OrderStatus::Cancelled,
        paused.fence as i64,
        "paused-ops-tool",
    )
    .await
    .unwrap();
    assert_eq!(late, StatusOutcome::StaleFence { current: 3 });
    assert!(
        !lock.release(&paused).await.unwrap(),
        "its lease was gone already"
    );
    assert_eq!(
        status_of(&stack.order_rows().await[0]),
        ("delivered".into(), 3, 3)
    );

    // 3. A live holder: while another tool holds the lock, the change waits the lease
    // (`status_lock_lease_ms`) and answers 503 lock_busy with Retry-After; nothing is written.
    let busy = lock
        .try_acquire(&lock_name, "busy-ops-tool", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the lock is free");
    assert_eq!(busy.fence, 4);
    let response = stack.set_status(&ops, &order_id, "cancelled").await;
    assert_eq!(header(&response, "retry-after"), "1");
    let (status, problem) = body(response).await;
    assert_eq!((status, code(&problem)), (503, "lock_busy"), "{problem}");
    assert!(lock.release(&busy).await.unwrap());

    // 4. A move the workflow does not allow: the lock is taken (fence 5) and released, the
    // transition refused before any write.
    let (status, problem) = body(stack.set_status(&ops, &order_id, "cancelled").await).await;
    assert_eq!(
        (status, code(&problem)),
        (409, "invalid_transition"),
        "{problem}"
    );
    assert_eq!(stack.string(&fence_key).await.as_deref(), Some("5"));
    assert!(!stack.exists(&lock_key).await);

    // SQL and the stream hold exactly the two changes that were allowed.
    assert_eq!(
        status_of(&stack.order_rows().await[0]),
        ("delivered".into(), 3, 3)
    );
    assert_eq!(stack.history(&order_id).await.len(), 3);
    let outbox = stack.relayed(4).await;
    assert_eq!(
        outbox[3],
        (
            4,
            "order.status_changed".into(),
            json!({"order_id": order_id, "sku": "HOT", "from": "shipped", "to": "delivered", "fence": 3}),
            true
        )
    );
    // Shipped units stay sold.
    assert_eq!(stack.product_row("HOT").await.4, 1);
    assert_eq!(stack.counters("HOT", "3").await, (10, 9, 0, 0, 1));
    stack.shutdown().await;
}
