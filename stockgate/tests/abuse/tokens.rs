//! Reservation tokens replayed, tampered with or forged; another buyer's reservation and order
//! ids (BOLA); client-sent prices, statuses and owners (mass assignment); ops routes with a
//! buyer token. Every refusal is the exact problem and changes nothing; a replay gives the
//! one order back.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reservation_core::{ReservationClaims, ReservationId, Sku, TokenSigner};
use serde_json::{Value, json};

use crate::world::{self, Abuse, PRICE_CENTS, refused};
use testkit::{RealStack, body, fresh_key};

const BAD_TOKEN: (u16, &str) = (401, "invalid_reservation_token");

/// `token` with its payload replaced by `claims`, header and signature kept.
fn with_payload(token: &str, claims: &impl serde::Serialize) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let payload = testkit::base64url(serde_json::to_vec(claims).unwrap());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

fn confirm_request(
    world: &RealStack,
    buyer: &str,
    reservation_token: &str,
) -> reqwest::RequestBuilder {
    world
        .http
        .post(world.url("/api/v1/orders"))
        .bearer_auth(buyer)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"reservation_token": reservation_token}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_forged_reservation_tokens_are_refused() {
    let world = world::start(|_| {}).await;
    world.add_product("HOT", 10, 3).await;
    world.add_product("BIG", 10, 100).await;
    let (alice, bob) = (world.idp.token("alice"), world.idp.token("bob"));
    let (_, token) = world.hold(&alice, "HOT", 1).await;
    let (other_id, _) = world.hold(&alice, "HOT", 1).await;
    let (bobs_id, _) = world.hold(&bob, "HOT", 1).await;
    let signer = world.shared().signer.clone();
    let claims = world.shared().verifier().verify(&token).unwrap();

    let mut cases: Vec<(&str, String, &str, (u16, &str))> = Vec::new();
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut value = serde_json::to_value(&claims).unwrap();
        edit(&mut value);
        with_payload(&token, &value)
    };
    cases.push((
        "payload qty raised",
        edited(&|c| c["qty"] = json!(3)),
        &alice,
        BAD_TOKEN,
    ));
    cases.push((
        "payload sku changed",
        edited(&|c| c["sku"] = json!("BIG")),
        &alice,
        BAD_TOKEN,
    ));
    cases.push((
        "payload rid swapped",
        edited(&|c| c["rid"] = json!(other_id)),
        &alice,
        BAD_TOKEN,
    ));
    cases.push((
        "payload sub to bob",
        edited(&|c| c["sub"] = json!("bob")),
        &bob,
        BAD_TOKEN,
    ));
    cases.push((
        "payload exp extended",
        edited(&|c| c["exp"] = json!(4_102_444_800u64)),
        &alice,
        BAD_TOKEN,
    ));
    // Same kid, another key: the signature cannot match.
    let impostor = TokenSigner::generate(signer.kid());
    cases.push((
        "signed by another key",
        impostor.sign(&claims).unwrap(),
        &alice,
        BAD_TOKEN,
    ));
    let stranger = TokenSigner::generate("stranger");
    cases.push((
        "unknown kid",
        stranger.sign(&claims).unwrap(),
        &alice,
        BAD_TOKEN,
    ));
    let none_header = testkit::base64url(
        json!({"alg": "none", "kid": signer.kid()})
            .to_string()
            .as_bytes(),
    );
    let payload = token.split('.').nth(1).unwrap();
    cases.push((
        "alg none",
        format!("{none_header}.{payload}."),
        &alice,
        BAD_TOKEN,
    ));
    let public_x = match &signer.public_jwk().algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(p) => p.x.clone(),
        other => panic!("unexpected key {other:?}"),
    };
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(signer.kid().to_owned());
    let hs256 = jsonwebtoken::encode(
        &hs_header,
        &claims,
        &EncodingKey::from_secret(public_x.as_bytes()),
    )
    .unwrap();
    cases.push(("hs256 with the public key", hs256, &alice, BAD_TOKEN));
    let (head, _) = token.rsplit_once('.').unwrap();
    cases.push(("signature stripped", format!("{head}."), &alice, BAD_TOKEN));
    cases.push((
        "truncated",
        token[..token.len() - 10].to_owned(),
        &alice,
        BAD_TOKEN,
    ));
    cases.push(("5000 chars", "a".repeat(5000), &alice, BAD_TOKEN));
    cases.push(("garbage", "x".into(), &alice, BAD_TOKEN));
    cases.push(("empty", String::new(), &alice, BAD_TOKEN));
    cases.push((
        "buyer jwt as reservation token",
        alice.clone(),
        &alice,
        BAD_TOKEN,
    ));
    // Signed with the real key (only the gateway holds it): the store still decides.
    let expired = ReservationClaims {
        exp: 1_000,
        ..claims.clone()
    };
    let expired = signer.sign(&expired).unwrap();
    cases.push(("expired", expired, &alice, (410, "reservation_expired")));
    let ghost = ReservationClaims {
        rid: ReservationId::generate(&Sku::parse("HOT").unwrap()),
        ..claims.clone()
    };
    let ghost = signer.sign(&ghost).unwrap();
    cases.push((
        // A signed token whose hold the store lacks (a failover lost it): SQL decides its
        // fate, and with no order it is released there and answered 410.
        "real key, no such hold",
        ghost,
        &alice,
        (410, "reservation_expired"),
    ));
    let stolen = ReservationClaims {
        rid: ReservationId::parse(&bobs_id).unwrap(),
        ..claims.clone()
    };
    let stolen = signer.sign(&stolen).unwrap();
    cases.push((
        "real key, bob's hold as alice",
        stolen,
        &alice,
        (403, "not_owner"),
    ));
    cases.push((
        "alice's token presented by bob",
        token.clone(),
        &bob,
        (403, "not_owner"),
    ));

    for (name, bad, buyer, expected) in cases {
        refused(
            &world,
            &format!("token: {name}"),
            confirm_request(&world, buyer, &bad),
            expected,
        )
        .await;
    }
    // The untouched token still works: none of the above used up the hold.
    let (status, order) = world.confirm(&alice, &fresh_key(), &token).await;
    assert_eq!(status, 201, "{order}");
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_reservation_token_gives_the_same_one_order() {
    let world = world::start(|_| {}).await;
    world.add_product("HOT", 10, 3).await;
    let alice = world.idp.token("alice");
    let (id, token) = world.hold(&alice, "HOT", 2).await;
    let (status, order) = world.confirm(&alice, &fresh_key(), &token).await;
    assert_eq!(status, 201, "{order}");
    let settled = world.state().await;
    for _ in 0..5 {
        let (status, again) = world.confirm(&alice, &fresh_key(), &token).await;
        assert_eq!(
            (status, &again["order_id"]),
            (200, &order["order_id"]),
            "{again}"
        );
    }
    assert_eq!(world.state().await, settled, "replays changed the state");
    assert_eq!(world.sql_orders_of(&id).await.len(), 1);

    // Concurrent replays of a fresh token: exactly one order; every answer is that order or
    // a 409 while the first confirm is in flight.
    let (id, token) = world.hold(&alice, "HOT", 1).await;
    let answers = concurrent_confirms(&world, &alice, &token, 8).await;
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    for (status, answer) in &answers {
        match status {
            200 | 201 => assert_eq!(answer["order_id"], created[0]["order_id"]),
            409 => assert!(answer["code"].is_string()),
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert_eq!(world.sql_orders_of(&id).await.len(), 1);
    println!("abuse case token: replayed 5x sequentially and 8x concurrently: one order each");
    world.shutdown().await;
}

/// `n` confirms of one token, all in flight at once.
async fn concurrent_confirms(
    world: &RealStack,
    buyer: &str,
    token: &str,
    n: usize,
) -> Vec<(u16, Value)> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let request = confirm_request(world, buyer, token);
        tasks.spawn(async move { body(request.send().await.unwrap()).await });
    }
    tasks.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_buyers_ids_and_ops_routes_are_refused() {
    let world = world::start(|_| {}).await;
    world.add_product("HOT", 10, 3).await;
    let (alice, bob) = (world.idp.token("alice"), world.idp.token("bob"));
    let order = world.order(&alice, "HOT", 1).await;
    let order_id = order["order_id"].as_str().unwrap().to_owned();
    let (hold_id, _) = world.hold(&alice, "HOT", 1).await;
    let reservation = world.url(&format!("/api/v1/reservations/{hold_id}"));
    let order_url = world.url(&format!("/api/v1/orders/{order_id}"));
    let cancel = format!("{order_url}/cancel");
    let status_url = world.url(&format!("/api/v1/admin/orders/{order_id}/status"));
    let ghost = world.url("/api/v1/reservations/rsv_0123456789abcdef0123456789abcdef_HOT");
    let http = &world.http;
    let (get, post) = (|url: &str| http.get(url), |url: &str| http.post(url));
    const NOT_OWNER: (u16, &str) = (403, "not_owner");
    const NO_ORDER: (u16, &str) = (404, "order_not_found");
    const NO_HOLD: (u16, &str) = (404, "reservation_not_found");
    const FORBIDDEN: (u16, &str) = (403, "forbidden");
    let new_price = json!({"name": "HOT", "price_cents": 1, "total_stock": 1000,
                           "per_buyer_limit": 1000, "sale_state": "on_sale"});

    let cases = vec![
        (
            "bob reads alice's hold",
            get(&reservation).bearer_auth(&bob),
            NOT_OWNER,
        ),
        (
            "bob releases alice's hold",
            http.delete(&reservation).bearer_auth(&bob),
            NOT_OWNER,
        ),
        (
            "bob reads alice's order",
            get(&order_url).bearer_auth(&bob),
            NO_ORDER,
        ),
        (
            "bob cancels alice's order",
            post(&cancel).bearer_auth(&bob).header("if-match", "\"1\""),
            NO_ORDER,
        ),
        (
            "bob cancels alice's order, if-match *",
            post(&cancel).bearer_auth(&bob).header("if-match", "*"),
            NO_ORDER,
        ),
        (
            "bob with forged identity headers",
            get(&order_url)
                .bearer_auth(&bob)
                .header("x-user-sub", "alice")
                .header("x-user-roles", "ops"),
            NO_ORDER,
        ),
        (
            "no such reservation",
            get(&ghost).bearer_auth(&bob),
            NO_HOLD,
        ),
        (
            "malformed reservation id",
            http.delete(world.url("/api/v1/reservations/rsv_x"))
                .bearer_auth(&bob),
            NO_HOLD,
        ),
        // Ops-only routes and fields with a buyer token (forged role headers do not help).
        (
            "buyer sets a price",
            http.put(world.url("/api/v1/admin/products/HOT"))
                .bearer_auth(&alice)
                .header("x-user-roles", "ops")
                .json(&new_price),
            FORBIDDEN,
        ),
        (
            "buyer ships an order",
            post(&status_url)
                .bearer_auth(&alice)
                .json(&json!({"status": "shipped"})),
            FORBIDDEN,
        ),
        (
            "buyer reads the drift report",
            get(&world.url("/api/v1/admin/reconcile")).bearer_auth(&bob),
            FORBIDDEN,
        ),
        // Ops may change a status, but only the status, and only as an object.
        (
            "ops status as an array",
            post(&status_url)
                .bearer_auth(world.idp.ops_token("olga"))
                .header("content-type", "application/json")
                .body(r#"["shipped"]"#),
            (400, "invalid_request"),
        ),
        (
            "ops status with a price",
            post(&status_url)
                .bearer_auth(world.idp.ops_token("olga"))
                .json(&json!({"status": "shipped", "unit_price_cents": 0})),
            (400, "invalid_request"),
        ),
    ];
    for (name, request, expected) in cases {
        refused(&world, &format!("bola: {name}"), request, expected).await;
    }
    // Bob's own list does not show alice's order.
    let (status, list) = body(
        http.get(world.url("/api/v1/orders"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, list.as_array().map(Vec::len)),
        (200, Some(0)),
        "{list}"
    );
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_prices_and_statuses_on_a_cancel_are_ignored() {
    let world = world::start(|_| {}).await;
    world.add_product("HOT", 10, 3).await;
    let alice = world.idp.token("alice");
    let order = world.order(&alice, "HOT", 2).await;
    assert_eq!(order["unit_price"], json!(PRICE_CENTS), "{order}");
    let order_id = order["order_id"].as_str().unwrap();
    let response = world
        .http
        .post(world.url(&format!("/api/v1/orders/{order_id}/cancel")))
        .bearer_auth(&alice)
        .header("if-match", "\"1\"")
        .json(
            &json!({"status": "shipped", "unit_price_cents": 0, "unit_price": 0, "total": 0,
                      "qty": 99, "user_sub": "bob", "version": 42}),
        )
        .send()
        .await
        .unwrap();
    let (status, cancelled) = body(response).await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
    let rid = order["reservation_id"].as_str().unwrap();
    assert_eq!(
        world.sql_orders_of(rid).await,
        vec![(
            "cancelled".to_owned(),
            2,
            PRICE_CENTS,
            2 * PRICE_CENTS,
            "alice".to_owned()
        )]
    );
    println!("abuse case mass assignment on cancel: body ignored, SQL keeps the server's price");
    world.shutdown().await;
}
