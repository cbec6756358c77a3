//! `GET /api/v1/reservations?sku=<SKU>` (issue 15.6): a buyer lists their own open holds of one
//! SKU, each with a reservation token, so a storefront that lost its page (a reload, another
//! tab) can still confirm or release what counts toward the buyer's limit. Run through the
//! whole stack in one process twice: on Redis and PostgreSQL, and on the embedded default's
//! in-memory store and SQLite.
//! (Before the route the list was 405 `method_not_allowed`: every test here failed.)

use std::time::Duration;

use serde_json::{Value, json};
use stockgate::config::Config;
use testkit::{RealStack, body};

#[derive(Clone, Copy)]
enum Backend {
    Redis,
    Memory,
}

/// The stack on `backend`, `adjust`ed, with products LIST (10 units, 3 per buyer) and OTHER.
async fn stack(backend: Backend, label: &str, adjust: impl FnOnce(&mut Config)) -> RealStack {
    let stack = match backend {
        Backend::Redis => RealStack::start(label, adjust).await,
        // No Redis or database URL: the in-memory store and an SQLite file in the data dir.
        Backend::Memory => {
            RealStack::start_embedded(|config| {
                config.gateway.limits.header_read_timeout_ms = 10_000;
                adjust(config);
            })
            .await
        }
    };
    for sku in ["LIST", "OTHER"] {
        let product = json!({"name": format!("{sku} tee"), "price_cents": 1500,
            "total_stock": 10, "per_buyer_limit": 3, "sale_state": "on_sale"});
        let (status, answer) = stack.put_product(sku, &product).await;
        assert_eq!(status, 201, "{answer}");
    }
    stack
}

/// What these tests do through the stack: one unit held, listed, confirmed or released.
trait Holds {
    async fn hold_one(&self, buyer: &str, key: &str, sku: &str) -> Value;
    async fn list_raw(&self, token: Option<&str>, query: &str) -> reqwest::Response;
    async fn list(&self, buyer: &str, sku: &str) -> Vec<Value>;
    async fn confirm_listed(&self, buyer: &str, reservation_token: &Value) -> (u16, Value);
    async fn release(&self, buyer: &str, hold: &Value);
}

impl Holds for RealStack {
    async fn hold_one(&self, buyer: &str, key: &str, sku: &str) -> Value {
        let token = self.idp.token(buyer);
        let (status, hold) = self.reserve(&token, key, sku, 1).await;
        assert_eq!(status, 201, "{hold}");
        hold
    }

    /// `GET /api/v1/reservations?<query>` as `token` (none: no Authorization header).
    async fn list_raw(&self, token: Option<&str>, query: &str) -> reqwest::Response {
        let mut request = self
            .http
            .get(format!("{}/api/v1/reservations{query}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// The buyer's open holds of `sku`, as listed.
    async fn list(&self, buyer: &str, sku: &str) -> Vec<Value> {
        let token = self.idp.token(buyer);
        let response = self.list_raw(Some(&token), &format!("?sku={sku}")).await;
        assert_eq!(
            response.headers()["cache-control"],
            "no-store",
            "the tokens must not be cached"
        );
        let (status, list) = body(response).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["sku"], sku);
        assert_eq!(list["truncated"], false);
        list["holds"].as_array().unwrap().clone()
    }

    async fn confirm_listed(&self, buyer: &str, reservation_token: &Value) -> (u16, Value) {
        let token = self.idp.token(buyer);
        let reservation_token = reservation_token.as_str().unwrap();
        self.confirm(&token, "c1", reservation_token).await
    }

    async fn release(&self, buyer: &str, hold: &Value) {
        let id = hold["reservation_id"].as_str().unwrap();
        let response = self
            .http
            .delete(format!("{}/api/v1/reservations/{id}", self.base))
            .bearer_auth(self.idp.token(buyer))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
}

fn ids(holds: &[Value]) -> Vec<&str> {
    holds
        .iter()
        .map(|h| h["reservation_id"].as_str().unwrap())
        .collect()
}

/// Own open holds only: not another buyer's, not another SKU's, not a released or confirmed
/// one; each with the fields of the reserve's answer, and a token that confirms.
async fn own_open_holds_and_a_token_that_confirms(backend: Backend, label: &str) {
    let stack = stack(backend, label, |_| {}).await;
    let kept = stack.hold_one("alice", "k1", "LIST").await;
    let released = stack.hold_one("alice", "k2", "LIST").await;
    let confirmed = stack.hold_one("alice", "k3", "LIST").await;
    let bobs = stack.hold_one("bob", "k1", "LIST").await;
    stack.hold_one("alice", "k4", "OTHER").await;
    stack.release("alice", &released).await;
    let (status, order) = stack.confirm_listed("alice", &confirmed["token"]).await;
    assert_eq!(status, 201, "{order}");

    let listed = stack.list("alice", "LIST").await;
    assert_eq!(ids(&listed), vec![kept["reservation_id"].as_str().unwrap()]);
    let hold = &listed[0];
    for field in ["reservation_id", "sku", "qty", "expires_at", "token"] {
        assert_eq!(hold[field], kept[field], "{field}");
    }
    assert_eq!(hold["state"], "held");
    assert_eq!(ids(&stack.list("bob", "LIST").await), ids(&[bobs]));
    assert_eq!(stack.list("carol", "LIST").await, Vec::<Value>::new());

    // The listed token confirms (what a reloaded page does), and the hold leaves the list.
    let (status, order) = stack.confirm_listed("alice", &hold["token"]).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["reservation_id"], kept["reservation_id"]);
    assert_eq!(stack.list("alice", "LIST").await, Vec::<Value>::new());
    assert_eq!(stack.list("alice", "OTHER").await.len(), 1);
    stack.shutdown().await;
}

/// A hold past its expiry is not listed, swept or not (the store's clock decides).
async fn expired_holds_are_not_listed(backend: Backend, label: &str) {
    let stack = stack(backend, label, |config| {
        config.gateway.reservations.hold_ttl_secs = 1;
    })
    .await;
    let hold = stack.hold_one("alice", "k1", "LIST").await;
    assert_eq!(
        ids(&stack.list("alice", "LIST").await),
        ids(std::slice::from_ref(&hold))
    );
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(stack.list("alice", "LIST").await, Vec::<Value>::new());
    stack.shutdown().await;
}

/// No token, a bad token, a missing, invalid, repeated or unknown SKU, another parameter:
/// each refused with its problem code, before the store is asked.
async fn bad_requests_are_refused(backend: Backend, label: &str) {
    let stack = stack(backend, label, |_| {}).await;
    let token = stack.idp.token("alice");
    let (status, problem) = body(stack.list_raw(None, "?sku=LIST").await).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some("missing_token"))
    );
    let (status, problem) = body(stack.list_raw(Some("not.a.jwt"), "?sku=LIST").await).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some("invalid_token"))
    );
    for query in [
        "",
        "?",
        "?sku=",
        "?sku=%7BLIST%7D",
        "?sku=LI%ST",
        "?sku=LIST&sku=OTHER",
        "?sku=LIST&limit=100",
    ] {
        let (status, problem) = body(stack.list_raw(Some(&token), query).await).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some("invalid_request")),
            "{query}: {problem}"
        );
    }
    let (status, problem) = body(stack.list_raw(Some(&token), "?sku=NOPE").await).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("unknown_sku"))
    );
    // Percent-encoded, the SKU is the same one (decoded as a path SKU is).
    let (status, _) = body(stack.list_raw(Some(&token), "?sku=L%49ST").await).await;
    assert_eq!(status, 200);
    let response = stack
        .http
        .put(format!("{}/api/v1/reservations?sku=LIST", stack.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, problem) = body(response).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lists_own_open_holds_and_the_token_confirms() {
    own_open_holds_and_a_token_that_confirms(Backend::Redis, "holdsown").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_lists_own_open_holds_and_the_token_confirms() {
    own_open_holds_and_a_token_that_confirms(Backend::Memory, "holdsown").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_does_not_list_expired_holds() {
    expired_holds_are_not_listed(Backend::Redis, "holdsexp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_does_not_list_expired_holds() {
    expired_holds_are_not_listed(Backend::Memory, "holdsexp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refuses_bad_list_requests() {
    bad_requests_are_refused(Backend::Redis, "holdsbad").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_refuses_bad_list_requests() {
    bad_requests_are_refused(Backend::Memory, "holdsbad").await;
}
