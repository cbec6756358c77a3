//! The real stack for the abuse suite: gateway and settlement in-process
//! (`all_in_one::start`) on the Redis reservation store under a private key prefix and a
//! scratch PostgreSQL schema, plus [`State`]: everything an abuse case could change, so each
//! case asserts "changed nothing" on the real data rather than on a mock.

use std::collections::BTreeMap;

use backend_adapters::sql::Db;
use redis::AsyncCommands;
use serde_json::{Value, json};
use stockgate::all_in_one::AllInOne;
use stockgate::config::Config;

use testkit::{Idp, body};

/// Price of every product the suite creates; an order must show exactly this.
pub const PRICE_CENTS: i64 = 1999;

pub struct World {
    all: Option<AllInOne>,
    pub base: String,
    pub http: reqwest::Client,
    pub idp: Idp,
    /// The gateway's Redis key prefix (the settlement's is `{prefix}-settlement`).
    prefix: String,
    redis: redis::aio::MultiplexedConnection,
    db: Db,
    data_dir: std::path::PathBuf,
}

/// Everything an abuse case could change: every reservation-store key under the prefix with
/// its content (cache copies and rate-limit budgets aside), and the SQL tables (orders and products in full, history and outbox counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    redis: BTreeMap<String, String>,
    products: String,
    orders: String,
    history: i64,
    outbox: i64,
}

impl World {
    pub async fn start(adjust: impl FnOnce(&mut Config)) -> World {
        let prefix = format!("sgtest:abuse-{}", uuid::Uuid::new_v4().simple());
        let (mut config, database_url) = testkit::real_stack_config("abuse", &prefix).await;
        // No hold expires during a test: the state must stay still between two snapshots.
        config.gateway.reservations.hold_ttl_secs = 600;
        adjust(&mut config);
        let data_dir = config.gateway.data_dir.clone();
        let (all, idp) = testkit::start_real_stack(config).await;
        let redis = redis::Client::open(testkit::redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("redis at REDIS_URL");
        World {
            base: format!("http://{}", all.public_addr()),
            all: Some(all),
            http: reqwest::Client::new(),
            idp,
            prefix,
            redis,
            db: Db::connect(&database_url, 2).await.unwrap(),
            data_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `host:port` of the gateway, for raw-socket cases.
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    pub fn shared(&self) -> &gateway::app::Shared {
        &self.all.as_ref().unwrap().shared
    }

    pub async fn put_product(&self, sku: &str, total_stock: i64, limit: i64) {
        let product = json!({"name": sku, "price_cents": PRICE_CENTS, "total_stock": total_stock,
                             "per_buyer_limit": limit, "sale_state": "on_sale"});
        let ops = self.idp.ops_token("olga");
        let (status, product) =
            testkit::put_product(&self.http, &self.base, &ops, sku, &product).await;
        assert!(status == 200 || status == 201, "{product}");
    }

    /// A new hold of `qty` HOT units for `token`'s buyer: (reservation id, reservation token).
    pub async fn hold(&self, token: &str, sku: &str, qty: u32) -> (String, String) {
        let key = uuid::Uuid::new_v4().to_string();
        let (status, created) =
            testkit::post_reservation(&self.http, &self.base, token, &key, sku, qty).await;
        assert_eq!(status, 201, "{created}");
        (
            created["reservation_id"].as_str().unwrap().to_owned(),
            created["token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn confirm(&self, token: &str, reservation_token: &str) -> (u16, Value) {
        let key = uuid::Uuid::new_v4().to_string();
        testkit::post_order(&self.http, &self.base, token, &key, reservation_token).await
    }

    /// A confirmed order of `qty` units: its JSON as the buyer saw it.
    pub async fn order(&self, token: &str, sku: &str, qty: u32) -> Value {
        let (_, reservation_token) = self.hold(token, sku, qty).await;
        let (status, order) = self.confirm(token, &reservation_token).await;
        assert_eq!(status, 201, "{order}");
        order
    }

    pub async fn state(&self) -> State {
        let mut redis = self.redis.clone();
        let mut keys: Vec<String> = Vec::new();
        {
            let mut iter = redis
                .scan_match::<_, String>(format!("{}:*", self.prefix))
                .await
                .unwrap();
            while let Some(key) = next_key(&mut iter).await {
                keys.push(key);
            }
        }
        // Not state a refusal could corrupt: cached catalog copies, and rate-limit budgets
        // (`<prefix>:rl:<rule>:<key>`), which refused requests are meant to spend.
        let cache = format!("{}:cache:", self.prefix);
        let budgets = format!("{}:rl:", self.prefix);
        let mut dump = BTreeMap::new();
        let kept = |k: &String| !k.starts_with(&cache) && !k.starts_with(&budgets);
        for key in keys.into_iter().filter(kept) {
            let content = dump_key(&mut redis, &key).await;
            dump.insert(key, content);
        }
        let (products, orders, history, outbox): (String, String, i64, i64) = sqlx::query_as(
            "SELECT coalesce((SELECT json_agg(p ORDER BY sku)::text FROM products p), ''),
                    coalesce((SELECT json_agg(o ORDER BY id)::text FROM orders o), ''),
                    (SELECT count(*) FROM order_status_history),
                    (SELECT count(*) FROM outbox)",
        )
        .fetch_one(self.db.pool())
        .await
        .unwrap();
        State {
            redis: dump,
            products,
            orders,
            history,
            outbox,
        }
    }

    /// Every key under the gateway's prefix with its PTTL in ms (-1: no expiry).
    pub async fn keys_with_pttl(&self) -> BTreeMap<String, i64> {
        let mut redis = self.redis.clone();
        let mut keys: Vec<String> = Vec::new();
        {
            let mut iter = redis
                .scan_match::<_, String>(format!("{}:*", self.prefix))
                .await
                .unwrap();
            while let Some(key) = next_key(&mut iter).await {
                keys.push(key);
            }
        }
        let mut out = BTreeMap::new();
        for key in keys {
            let pttl: i64 = redis.pttl(&key).await.unwrap();
            out.insert(key, pttl);
        }
        out
    }

    /// The SQL orders of one reservation: (status, qty, unit price, total, buyer).
    pub async fn sql_orders_of(
        &self,
        reservation_id: &str,
    ) -> Vec<(String, i64, i64, i64, String)> {
        sqlx::query_as(
            "SELECT status, qty, unit_price_cents, total_cents, user_sub FROM orders
             WHERE reservation_id = $1",
        )
        .bind(reservation_id)
        .fetch_all(self.db.pool())
        .await
        .unwrap()
    }

    pub async fn shutdown(mut self) {
        if let Some(all) = self.all.take() {
            all.shutdown().await;
        }
        // Leave nothing behind on the shared Redis.
        let mut redis = self.redis.clone();
        for pattern in [
            format!("{}:*", self.prefix),
            format!("{}-settlement*", self.prefix),
        ] {
            let mut keys: Vec<String> = Vec::new();
            {
                let mut iter = redis.scan_match::<_, String>(pattern).await.unwrap();
                while let Some(key) = next_key(&mut iter).await {
                    keys.push(key);
                }
            }
            for key in keys {
                let _: () = redis.del(key).await.unwrap();
            }
        }
        self.db.close().await;
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

async fn next_key(iter: &mut redis::AsyncIter<'_, String>) -> Option<String> {
    iter.next_item().await.map(|item| item.unwrap())
}

/// A key's type and content as text, whatever its type.
async fn dump_key(redis: &mut redis::aio::MultiplexedConnection, key: &str) -> String {
    let kind: String = redis::cmd("TYPE")
        .arg(key)
        .query_async(redis)
        .await
        .unwrap();
    let content: Vec<String> = match kind.as_str() {
        "string" => vec![redis.get(key).await.unwrap()],
        "hash" => {
            let map: BTreeMap<String, String> = redis.hgetall(key).await.unwrap();
            map.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
        }
        "zset" => redis
            .zrange_withscores::<_, Vec<String>>(key, 0, -1)
            .await
            .unwrap(),
        "set" => {
            let mut members: Vec<String> = redis.smembers(key).await.unwrap();
            members.sort();
            members
        }
        "list" => redis.lrange(key, 0, -1).await.unwrap(),
        "stream" => vec![redis.xlen::<_, i64>(key).await.unwrap().to_string()],
        // Gone between SCAN and TYPE.
        _ => Vec::new(),
    };
    format!("{kind}:{}", content.join("|"))
}

/// The problem an abuse case must get: its status and `code`.
pub type Expected = (u16, &'static str);

/// Sends one abuse request and checks the answer is the expected problem+json (status,
/// content type, every problem field, `code`) and that the real state did not change.
pub async fn refused(
    world: &World,
    case: &str,
    request: reqwest::RequestBuilder,
    expected: Expected,
) {
    let before = world.state().await;
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (status, problem) = body(response).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (expected.0, Some(expected.1)),
        "{case}: {problem}"
    );
    assert_eq!(content_type, "application/problem+json", "{case}");
    let after = world.state().await;
    // Nothing changes, the store's idempotency bindings included: a refusal binds no key
    // (DESIGN.md §6, a refused request leaves no lasting state).
    assert_eq!(after, before, "{case} changed the state");
    println!(
        "abuse case {case}: {status} {} and nothing changed",
        expected.1
    );
}
