//! The real stack for the abuse suite ([`testkit::RealStack`]: gateway and settlement
//! in-process on the Redis reservation store under a private key prefix and a scratch
//! PostgreSQL schema), plus [`State`]: everything an abuse case could change, so each case
//! asserts "changed nothing" on the real data rather than on a mock.

use std::collections::BTreeMap;

use redis::AsyncCommands;
use serde_json::Value;
use stockgate::config::Config;

use testkit::{RealStack, body, fresh_key};

/// Price of every product the suite creates; an order must show exactly this.
pub use testkit::PRICE_CENTS;

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

/// The stack of one abuse case, `adjust`ed.
pub async fn start(adjust: impl FnOnce(&mut Config)) -> RealStack {
    RealStack::start("abuse", |config| {
        // No hold expires during a test: the state must stay still between two snapshots.
        config.gateway.reservations.hold_ttl_secs = 600;
        adjust(config);
    })
    .await
}

/// What the abuse cases do and read beyond the shared harness.
pub trait Abuse {
    /// A new hold of `qty` units for `token`'s buyer: (reservation id, reservation token).
    async fn hold(&self, token: &str, sku: &str, qty: u32) -> (String, String);
    /// A confirmed order of `qty` units: its JSON as the buyer saw it.
    async fn order(&self, token: &str, sku: &str, qty: u32) -> Value;
    async fn state(&self) -> State;
    /// Every key under the gateway's prefix with its PTTL in ms (-1: no expiry).
    async fn keys_with_pttl(&self) -> BTreeMap<String, i64>;
    /// The SQL orders of one reservation: (status, qty, unit price, total, buyer).
    async fn sql_orders_of(&self, reservation_id: &str) -> Vec<(String, i64, i64, i64, String)>;
}

impl Abuse for RealStack {
    async fn hold(&self, token: &str, sku: &str, qty: u32) -> (String, String) {
        let (status, created) = self.reserve(token, &fresh_key(), sku, qty).await;
        assert_eq!(status, 201, "{created}");
        (
            created["reservation_id"].as_str().unwrap().to_owned(),
            created["token"].as_str().unwrap().to_owned(),
        )
    }

    async fn order(&self, token: &str, sku: &str, qty: u32) -> Value {
        let (_, reservation_token) = self.hold(token, sku, qty).await;
        let (status, order) = self.confirm(token, &fresh_key(), &reservation_token).await;
        assert_eq!(status, 201, "{order}");
        order
    }

    async fn state(&self) -> State {
        let mut redis = self.redis();
        // Not state a refusal could corrupt: cached catalog copies, and rate-limit budgets
        // (`<prefix>:rl:<rule>:<key>`), which refused requests are meant to spend.
        let cache = format!("{}:cache:", self.prefix);
        let budgets = format!("{}:rl:", self.prefix);
        let mut dump = BTreeMap::new();
        let kept = |k: &String| !k.starts_with(&cache) && !k.starts_with(&budgets);
        for key in self.keys().await.into_iter().filter(kept) {
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

    async fn keys_with_pttl(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for key in self.keys().await {
            let pttl = self.pttl(&key).await;
            out.insert(key, pttl);
        }
        out
    }

    async fn sql_orders_of(&self, reservation_id: &str) -> Vec<(String, i64, i64, i64, String)> {
        sqlx::query_as(
            "SELECT status, qty, unit_price_cents, total_cents, user_sub FROM orders
             WHERE reservation_id = $1",
        )
        .bind(reservation_id)
        .fetch_all(self.db.pool())
        .await
        .unwrap()
    }
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
    world: &RealStack,
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
