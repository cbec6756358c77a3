//! Bad reservation and confirm bodies, bad idempotency keys and bad SKUs: every one a 400
//! (or the domain's own 404/409/422) problem, and nothing changes in Redis or SQL.

use serde_json::json;

use crate::world::{self, Abuse, Expected, refused};
use testkit::fresh_key;

const BAD_REQUEST: Expected = (400, "invalid_request");

/// Reservation bodies that must be refused, by name (sent as raw bytes, JSON or not).
fn bad_reserve_bodies() -> Vec<(String, String, Expected)> {
    let long_sku = "A".repeat(65);
    let huge_sku = "A".repeat(10_000);
    let mut cases: Vec<(String, String, Expected)> = [
        ("empty body", "", BAD_REQUEST),
        ("not json", "sku=HOT&qty=1", BAD_REQUEST),
        ("truncated json", r#"{"sku":"HOT","qty":"#, BAD_REQUEST),
        ("json array", r#"[{"sku":"HOT","qty":1}]"#, BAD_REQUEST),
        ("json string", r#""HOT""#, BAD_REQUEST),
        ("json null", "null", BAD_REQUEST),
        // Found by the reserve_body fuzz target: serde fills a struct from an array of its
        // fields, so this made a reservation until bodies had to be objects.
        ("array form", r#"["HOT",1]"#, BAD_REQUEST),
        (
            "array form after whitespace",
            " \n [\"HOT\", 1]",
            BAD_REQUEST,
        ),
        ("empty object", "{}", BAD_REQUEST),
        ("missing qty", r#"{"sku":"HOT"}"#, BAD_REQUEST),
        ("missing sku", r#"{"qty":1}"#, BAD_REQUEST),
        ("qty as string", r#"{"sku":"HOT","qty":"1"}"#, BAD_REQUEST),
        ("qty as float", r#"{"sku":"HOT","qty":1.5}"#, BAD_REQUEST),
        ("qty as 1.5e0", r#"{"sku":"HOT","qty":1.5e0}"#, BAD_REQUEST),
        ("qty null", r#"{"sku":"HOT","qty":null}"#, BAD_REQUEST),
        ("qty array", r#"{"sku":"HOT","qty":[1]}"#, BAD_REQUEST),
        ("qty bool", r#"{"sku":"HOT","qty":true}"#, BAD_REQUEST),
        ("qty negative", r#"{"sku":"HOT","qty":-1}"#, BAD_REQUEST),
        ("qty zero", r#"{"sku":"HOT","qty":0}"#, BAD_REQUEST),
        (
            "qty 2^63",
            r#"{"sku":"HOT","qty":9223372036854775808}"#,
            BAD_REQUEST,
        ),
        (
            "qty 2^64",
            r#"{"sku":"HOT","qty":18446744073709551616}"#,
            BAD_REQUEST,
        ),
        ("qty 1e30", r#"{"sku":"HOT","qty":1e30}"#, BAD_REQUEST),
        (
            "qty u32 max",
            r#"{"sku":"HOT","qty":4294967295}"#,
            BAD_REQUEST,
        ),
        (
            "qty above Qty::MAX",
            r#"{"sku":"HOT","qty":1000001}"#,
            BAD_REQUEST,
        ),
        ("sku as number", r#"{"sku":7,"qty":1}"#, BAD_REQUEST),
        ("sku empty", r#"{"sku":"","qty":1}"#, BAD_REQUEST),
        ("sku with space", r#"{"sku":" HOT","qty":1}"#, BAD_REQUEST),
        (
            "sku path traversal",
            r#"{"sku":"../HOT","qty":1}"#,
            BAD_REQUEST,
        ),
        ("sku of dots alone", r#"{"sku":"..","qty":1}"#, BAD_REQUEST),
        ("sku hash tag", r#"{"sku":"HOT}{x","qty":1}"#, BAD_REQUEST),
        ("sku redis glob", r#"{"sku":"HOT*","qty":1}"#, BAD_REQUEST),
        ("sku nul", r#"{"sku":"HOT\u0000","qty":1}"#, BAD_REQUEST),
        ("sku newline", r#"{"sku":"HOT\n","qty":1}"#, BAD_REQUEST),
        ("sku non-ascii", r#"{"sku":"HÖT","qty":1}"#, BAD_REQUEST),
        (
            "duplicate qty",
            r#"{"sku":"HOT","qty":1,"qty":3}"#,
            BAD_REQUEST,
        ),
        (
            "nested object",
            r#"{"sku":{"$ne":""},"qty":1}"#,
            BAD_REQUEST,
        ),
        (
            "qty above per-buyer limit",
            r#"{"sku":"HOT","qty":4}"#,
            (422, "purchase_limit"),
        ),
        (
            "unknown sku",
            r#"{"sku":"NOPE","qty":1}"#,
            (404, "unknown_sku"),
        ),
        (
            "more than in stock",
            r#"{"sku":"BIG","qty":11}"#,
            (409, "insufficient_stock"),
        ),
    ]
    .into_iter()
    .map(|(name, body, expected)| (name.to_owned(), body.to_owned(), expected))
    .collect();
    cases.push((
        "sku 65 chars".into(),
        json!({"sku": long_sku, "qty": 1}).to_string(),
        BAD_REQUEST,
    ));
    cases.push((
        "sku 10k chars".into(),
        json!({"sku": huge_sku, "qty": 1}).to_string(),
        BAD_REQUEST,
    ));
    // Mass assignment: the server decides price, totals, status and owner; a body that tries
    // to set any of them is refused outright (the contract accepts exactly {"sku","qty"}).
    for field in [
        "price",
        "unit_price",
        "total",
        "status",
        "user_sub",
        "sold",
        "price_cents",
    ] {
        let body = json!({"sku": "HOT", "qty": 1, field: 0});
        cases.push((
            format!("mass assignment {field}"),
            body.to_string(),
            BAD_REQUEST,
        ));
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reservation_bodies_are_refused_and_change_nothing() {
    let world = world::start(|_| {}).await;
    world.add_product("HOT", 10, 3).await;
    world.add_product("BIG", 10, 100).await;
    let alice = world.idp.token("alice");
    // A live hold and an order, so "nothing changed" covers existing data too.
    world.order(&alice, "HOT", 1).await;
    world.hold(&alice, "HOT", 1).await;
    for (name, raw, expected) in bad_reserve_bodies() {
        let request = world
            .http
            .post(world.url("/api/v1/reservations"))
            .bearer_auth(&alice)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .header("content-type", "application/json")
            .body(raw);
        refused(&world, &format!("reserve: {name}"), request, expected).await;
    }
    world.shutdown().await;
}

/// `1.0` is the integer 1 as JSON Schema (and so openapi.yaml's `type: integer`, its clients and
/// schemathesis) reads it: a reserve of `"qty": 1.0` holds one unit (it was refused as a float).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_number_written_with_a_fraction_is_that_integer() {
    let world = world::start(|_| {}).await;
    world.add_product("HOT", 10, 3).await;
    let alice = world.idp.token("alice");
    let answer = world
        .http
        .post(world.url("/api/v1/reservations"))
        .bearer_auth(&alice)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .header("content-type", "application/json")
        .body(r#"{"sku":"HOT","qty":1.0}"#)
        .send()
        .await
        .unwrap();
    let (status, body) = testkit::body(answer).await;
    assert_eq!((status, body["qty"].as_u64()), (201, Some(1)), "{body}");
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_idempotency_keys_and_confirm_bodies_are_refused() {
    let world = world::start(|_| {}).await;
    world.add_product("HOT", 10, 3).await;
    let alice = world.idp.token("alice");
    let (_, token) = world.hold(&alice, "HOT", 1).await;
    let reserve = json!({"sku": "HOT", "qty": 1});
    for (name, key) in [("too long", "k".repeat(129)), ("empty", String::new())] {
        let request = world
            .http
            .post(world.url("/api/v1/reservations"))
            .bearer_auth(&alice)
            .header("idempotency-key", key)
            .json(&reserve);
        refused(
            &world,
            &format!("idempotency key {name}"),
            request,
            BAD_REQUEST,
        )
        .await;
    }
    let request = world
        .http
        .post(world.url("/api/v1/reservations"))
        .bearer_auth(&alice)
        .json(&reserve);
    let case = "idempotency key missing";
    refused(&world, case, request, (400, "idempotency_key_required")).await;

    let confirms = [
        ("empty body", String::new()),
        ("not json", "reservation_token=x".to_owned()),
        ("token as number", r#"{"reservation_token":7}"#.to_owned()),
        ("token null", r#"{"reservation_token":null}"#.to_owned()),
        ("missing token", "{}".to_owned()),
        ("array", format!(r#"[{{"reservation_token":"{token}"}}]"#)),
        ("array form", format!(r#"["{token}"]"#)),
    ]
    .into_iter()
    .map(|(name, body)| (name.to_owned(), body))
    .chain(
        // Mass assignment on the confirm: price, quantity and status come from the server and
        // the signed token only.
        ["unit_price", "total", "status", "qty", "sku", "user_sub"].map(|field| {
            let body = json!({"reservation_token": token, field: 1}).to_string();
            (format!("mass assignment {field}"), body)
        }),
    );
    for (name, raw) in confirms {
        let request = world
            .http
            .post(world.url("/api/v1/orders"))
            .bearer_auth(&alice)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .header("content-type", "application/json")
            .body(raw);
        refused(&world, &format!("confirm: {name}"), request, BAD_REQUEST).await;
    }
    // The hold is intact after all that: a plain confirm still makes the one order.
    let (status, order) = world.confirm(&alice, &fresh_key(), &token).await;
    assert_eq!(status, 201, "{order}");
    world.shutdown().await;
}
