//! A confirm whose hold the store no longer has (a Redis failover promoted a replica that
//! missed the hold, or the hold was pruned), through the real stack (gateway, settlement,
//! Redis, PostgreSQL in one process). The hold's key is deleted to stand for the loss.
//!
//! Before the fix the edge answered from the store alone: 404 `reservation_not_found` even when
//! an earlier try of the same confirm had committed the order (its answer lost across the
//! failover). Now settlement decides in SQL (`POST /internal/settlements/fate`): the order if
//! one exists, else the reservation is claimed released and the buyer gets 410.
//! (Before the fix both tests fail: the first with 404 instead of the order, the second with
//! 404 instead of 410 and no `released` fate in SQL.)

use serde_json::{Value, json};
use sqlx::Row;
use testkit::RealStack;

async fn stack(label: &str) -> RealStack {
    stack_with(label, |_| {}).await
}

/// The real stack, `adjust`ed, with product LOST (10 units, 2 per buyer).
async fn stack_with(label: &str, adjust: impl FnOnce(&mut stockgate::config::Config)) -> RealStack {
    let stack = RealStack::start(label, adjust).await;
    let product = json!({"name": "Lost tee", "price_cents": 1500, "total_stock": 10,
        "per_buyer_limit": 2, "sale_state": "on_sale"});
    let (status, _) = stack.put_product("LOST", &product).await;
    assert!(status == 201 || status == 200, "product: {status}");
    stack
}

/// A buyer's one hold of LOST, its confirm, its loss, and what SQL and settlement say of it.
trait LostHold {
    async fn hold_lost(&self, buyer: &str) -> Value;
    async fn confirm_hold(&self, buyer: &str, hold: &Value) -> (u16, Value);
    async fn lose_hold(&self, hold: &Value);
    fn settle_calls(&self) -> u64;
    async fn orders_of(&self, hold: &Value) -> i64;
    async fn fate(&self, hold: &Value) -> Option<(String, String)>;
}

impl LostHold for RealStack {
    async fn hold_lost(&self, buyer: &str) -> Value {
        let token = self.idp.token(buyer);
        let (status, hold) = self.reserve(&token, "k1", "LOST", 1).await;
        assert_eq!(status, 201, "{hold}");
        hold
    }

    async fn confirm_hold(&self, buyer: &str, hold: &Value) -> (u16, Value) {
        let token = self.idp.token(buyer);
        let reservation_token = hold["token"].as_str().unwrap();
        self.confirm(&token, "c1", reservation_token).await
    }

    /// What a failover to a replica that missed the hold leaves: no hold record.
    async fn lose_hold(&self, hold: &Value) {
        let rid = hold["reservation_id"].as_str().unwrap();
        let key = self.sku_key("LOST", &format!("hold:{rid}"));
        let deleted: u64 = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut self.redis())
            .await
            .unwrap();
        assert_eq!(deleted, 1, "hold key {key}");
    }

    /// Requests settlement's `POST /internal/settlements` has answered, whatever the outcome
    /// (the fate route is not one of them).
    fn settle_calls(&self) -> u64 {
        let settlements = &self.all().settlement.metrics.settlements;
        [
            "created",
            "existing",
            "oversell",
            "unknown_sku",
            "purchase_limit",
            "released",
            "rejected",
            "busy",
            "error",
        ]
        .iter()
        .map(|outcome| settlements.with_label_values(&[outcome]).get())
        .sum()
    }

    async fn orders_of(&self, hold: &Value) -> i64 {
        self.orders_of_reservation(hold["reservation_id"].as_str().unwrap())
            .await
    }

    async fn fate(&self, hold: &Value) -> Option<(String, String)> {
        let rid = hold["reservation_id"].as_str().unwrap();
        sqlx::query("SELECT fate, reason FROM reservation_fates WHERE reservation_id = $1")
            .bind(rid)
            .fetch_optional(self.db.pool())
            .await
            .unwrap()
            .map(|r| (r.get("fate"), r.get("reason")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_whose_hold_was_lost_after_its_commit_gets_the_order() {
    let s = stack("lostordered").await;
    let hold = s.hold_lost("ann").await;
    let (status, first) = s.confirm_hold("ann", &hold).await;
    assert_eq!(status, 201, "{first}");
    s.lose_hold(&hold).await;

    // The retry of a confirm whose answer was lost: the order, as a replay answers it.
    let (status, again) = s.confirm_hold("ann", &hold).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["order_id"], first["order_id"]);
    assert_eq!(again["reservation_id"], hold["reservation_id"]);
    assert_eq!(
        s.fate(&hold).await,
        Some(("ordered".into(), "order".into()))
    );

    // Someone else's token is still refused before anything is decided.
    let (status, foreign) = s.confirm_hold("bob", &hold).await;
    assert_eq!(status, 403, "{foreign}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_whose_hold_was_lost_before_any_commit_is_410_and_released_in_sql() {
    let s = stack("lostreleased").await;
    let hold = s.hold_lost("cat").await;
    s.lose_hold(&hold).await;

    let (status, gone) = s.confirm_hold("cat", &hold).await;
    assert_eq!(status, 410, "{gone}");
    assert_eq!(gone["code"], "reservation_expired", "{gone}");
    assert_eq!(
        s.fate(&hold).await,
        Some(("released".into(), "lost_hold".into()))
    );
    assert_eq!(s.orders_of(&hold).await, 0);
    // Asked again: the same answer, nothing changes.
    let (status, _) = s.confirm_hold("cat", &hold).await;
    assert_eq!(status, 410);
    s.shutdown().await;
}

/// Issue 13: a confirm whose reservation token has expired and whose hold is gone from the
/// store (it expired, was swept and pruned, or a failover lost it). The gateway cannot tell
/// from the store whether an earlier try committed, so it asks settlement's fate route, which
/// never creates an order: 410 problem+json, the reservation claimed released in SQL, no
/// order, and `POST /internal/settlements` never called. A retry gets the same answer; an
/// order placed by an earlier try is still found (200).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_confirm_whose_hold_is_gone_is_410_and_never_settles() {
    let s = stack_with("lostexpired", |c| c.gateway.reservations.hold_ttl_secs = 1).await;
    let gone = s.hold_lost("dan").await;
    let ordered = s.hold_lost("eve").await;
    let (status, first) = s.confirm_hold("eve", &ordered).await;
    assert_eq!(status, 201, "{first}");
    let settles_before = s.settle_calls();
    // Past the hold's expiry and the reservation token's leeway; then the holds are gone.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    s.lose_hold(&gone).await;
    s.lose_hold(&ordered).await;

    for _ in 0..2 {
        let response = s
            .http
            .post(format!("{}/api/v1/orders", s.base))
            .bearer_auth(s.idp.token("dan"))
            .header("idempotency-key", "c1")
            .json(&json!({"reservation_token": gone["token"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 410);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "reservation_expired", "{problem}");
        assert_eq!(problem["status"], 410, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("no order"),
            "{problem}"
        );
    }
    assert_eq!(s.orders_of(&gone).await, 0);
    assert_eq!(
        s.fate(&gone).await,
        Some(("released".into(), "lost_hold".into()))
    );
    assert_eq!(
        s.settle_calls(),
        settles_before,
        "no settle request was sent"
    );

    // The same path finds the order an earlier try placed: 200, as a replay.
    let (status, again) = s.confirm_hold("eve", &ordered).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["order_id"], first["order_id"]);
    assert_eq!(s.orders_of(&ordered).await, 1);
    assert_eq!(
        s.settle_calls(),
        settles_before,
        "no settle request was sent"
    );
    s.shutdown().await;
}
