//! The reservation and confirm flow through real HTTP: reserve → confirm → order, idempotent
//! replays, release, foreign tokens, sold-out memory, and every settlement outcome of
//! docs/internal-api.md against the mock settlement service.

use reservation_core::HoldState;
use serde_json::json;
use testkit::{Mode, body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_confirm_order_with_idempotent_replays() {
    let gw = testkit::start_gateway().await;
    let alice = gw.idp.token("alice");

    let (status, created) = body(gw.reserve(&alice, "k1", "HOT", 2).await).await;
    assert_eq!(status, 201, "{created}");
    for field in ["reservation_id", "token", "sku", "qty", "expires_at"] {
        assert!(created.get(field).is_some(), "{field} missing");
    }
    assert_eq!(
        (created["sku"].as_str(), created["qty"].as_u64()),
        (Some("HOT"), Some(2))
    );

    // Same key, same body: the same reservation, 200.
    let (status, replay) = body(gw.reserve(&alice, "k1", "HOT", 2).await).await;
    assert_eq!(status, 200);
    assert_eq!(replay, created);
    // Same key, other body: 422.
    let (status, problem) = body(gw.reserve(&alice, "k1", "HOT", 1).await).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("idempotency_mismatch"))
    );

    let snapshot = gw.snapshot("HOT").await;
    assert_eq!((snapshot.available, snapshot.held), (3, 2));

    let token = created["token"].as_str().unwrap();
    let (status, order) = body(gw.confirm(&alice, token).await).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["reservation_id"], created["reservation_id"]);
    assert_eq!(order["status"], "confirmed");
    // Again with the same token: the same order, 200.
    let (status, again) = body(gw.confirm(&alice, token).await).await;
    assert_eq!(status, 200);
    assert_eq!(again["order_id"], order["order_id"]);

    let snapshot = gw.snapshot("HOT").await;
    assert_eq!(
        (
            snapshot.available,
            snapshot.held,
            snapshot.confirming,
            snapshot.sold
        ),
        (3, 0, 0, 2)
    );
    let id = created["reservation_id"].as_str().unwrap();
    let (status, hold) = body(
        gw.http
            .get(gw.url(&format!("/api/v1/reservations/{id}")))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, hold["state"].as_str()), (200, Some("confirmed")));

    let (status, stock) = body(
        gw.http
            .get(gw.url("/api/v1/stock/HOT"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        stock,
        json!({"sku": "HOT", "available": 3, "held": 0, "sold": 2, "state": "on_sale"})
    );
    assert_eq!(gw.state.metrics.confirm_count("created"), 1);
    assert_eq!(gw.state.metrics.confirm_count("replayed"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_returns_stock_and_a_released_hold_is_never_confirmed() {
    let gw = testkit::start_gateway().await;
    let alice = gw.idp.token("alice");
    let (_, created) = body(gw.reserve(&alice, "k1", "HOT", 3).await).await;
    assert_eq!(gw.snapshot("HOT").await.available, 2);
    let id = created["reservation_id"].as_str().unwrap();

    let release = || {
        gw.http
            .delete(gw.url(&format!("/api/v1/reservations/{id}")))
            .bearer_auth(&alice)
            .send()
    };
    assert_eq!(release().await.unwrap().status(), 204);
    assert_eq!(gw.snapshot("HOT").await.available, 5);
    assert_eq!(
        release().await.unwrap().status(),
        204,
        "releasing twice changes nothing"
    );
    assert_eq!(gw.snapshot("HOT").await.available, 5);

    let (status, problem) =
        body(gw.confirm(&alice, created["token"].as_str().unwrap()).await).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (410, Some("reservation_expired"))
    );
    assert_eq!(
        gw.mock
            .settlements
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_buyers_token_gets_403_and_changes_nothing() {
    let gw = testkit::start_gateway().await;
    let (alice, mallory) = (gw.idp.token("alice"), gw.idp.token("mallory"));
    let (_, created) = body(gw.reserve(&alice, "k1", "HOT", 1).await).await;
    let before = gw.snapshot("HOT").await;
    let store_calls = gw.counting.calls();

    let (status, problem) = body(
        gw.confirm(&mallory, created["token"].as_str().unwrap())
            .await,
    )
    .await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("not_owner")));
    assert_eq!(
        gw.counting.calls(),
        store_calls,
        "a foreign token never reaches the store"
    );
    let id = created["reservation_id"].as_str().unwrap();
    let (status, _) = body(
        gw.http
            .get(gw.url(&format!("/api/v1/reservations/{id}")))
            .bearer_auth(&mallory)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = body(
        gw.http
            .delete(gw.url(&format!("/api/v1/reservations/{id}")))
            .bearer_auth(&mallory)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);

    assert_eq!(gw.snapshot("HOT").await, before);
    assert_eq!(gw.mock.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sold_out_is_remembered_without_asking_the_store_again() {
    let gw = testkit::start_gateway().await;
    let (status, _) = body(gw.reserve(&gw.idp.token("bob"), "k", "TINY", 1).await).await;
    assert_eq!(status, 201);
    let (status, problem) = body(gw.reserve(&gw.idp.token("carol"), "k", "TINY", 1).await).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("sold_out")));
    let (status, problem) = body(gw.reserve(&gw.idp.token("dave"), "k", "TINY", 1).await).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("sold_out")));
    assert_eq!(
        gw.state.metrics.reservation_count("sold_out"),
        1,
        "the store was asked once"
    );
    assert_eq!(gw.state.metrics.reservation_count("sold_out_cached"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_the_sell_out_still_returns_the_reservation() {
    // bob takes the last unit, carol's attempt makes the edge remember TINY as sold out; bob's
    // retry under the same key must still get his reservation back, not `sold_out`.
    let gw = testkit::start_gateway().await;
    let bob = gw.idp.token("bob");
    let (status, first) = body(gw.reserve(&bob, "k-bob", "TINY", 1).await).await;
    assert_eq!(status, 201);
    let (status, problem) = body(gw.reserve(&gw.idp.token("carol"), "k", "TINY", 1).await).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("sold_out")));

    let (status, replay) = body(gw.reserve(&bob, "k-bob", "TINY", 1).await).await;
    assert_eq!(status, 200, "a replay is answered from the store: {replay}");
    assert_eq!(replay["reservation_id"], first["reservation_id"]);
    assert_eq!(replay["token"], first["token"]);
    // A new buyer is still answered from memory.
    let (status, _) = body(gw.reserve(&gw.idp.token("dave"), "k", "TINY", 1).await).await;
    assert_eq!(status, 409);
    assert_eq!(gw.state.metrics.reservation_count("sold_out_cached"), 1);
    let stock = gw.snapshot("TINY").await;
    assert_eq!((stock.available, stock.held), (0, 1));
}

/// Regression (redis-pause fault run): Redis ran a reserve but its reply came after the
/// deadline (503); the SKU then sold out, and the buyer's retry under the same key was told
/// `sold_out` from the edge's memory while its hold sat unseen until it expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_reserve_whose_answer_was_lost_gets_its_hold_after_the_sell_out() {
    let gw = testkit::start_gateway().await;
    let alice = gw.idp.token("alice");
    gw.counting
        .lose_reserve_answers
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let (status, problem) = body(gw.reserve(&alice, "k-lost", "TINY", 1).await).await;
    assert_eq!(status, 503, "{problem}");
    // The one unit is alice's: the next buyer makes the edge remember TINY as sold out.
    let (status, _) = body(gw.reserve(&gw.idp.token("bob"), "k", "TINY", 1).await).await;
    assert_eq!(status, 409);
    let (status, replay) = body(gw.reserve(&alice, "k-lost", "TINY", 1).await).await;
    assert_eq!(
        status, 200,
        "the retry gets the hold the lost answer made: {replay}"
    );
    assert_eq!(gw.snapshot("TINY").await.held, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_unavailable_keeps_the_hold_confirming_and_a_retry_succeeds() {
    let gw = testkit::start_gateway().await;
    let alice = gw.idp.token("alice");
    let (_, created) = body(gw.reserve(&alice, "k1", "HOT", 1).await).await;
    let token = created["token"].as_str().unwrap();
    let id = reservation_core::ReservationId::parse(created["reservation_id"].as_str().unwrap())
        .unwrap();

    gw.mock.set_mode(Mode::Unavailable);
    let response = gw.confirm(&alice, token).await;
    assert!(response.headers().contains_key("retry-after"));
    let (status, problem) = body(response).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (503, Some("upstream_unavailable"))
    );
    // Not back to `held`: an earlier try of this confirm could have been committed, and a
    // held hold would expire under its order (found by the settlement-kill fault run).
    assert_eq!(
        reservation_core::ReservationStore::get_hold(&*gw.store, &id)
            .await
            .unwrap()
            .state,
        HoldState::Confirming
    );

    gw.mock.set_mode(Mode::Commit);
    let (status, _) = body(gw.confirm(&alice, token).await).await;
    assert_eq!(status, 201);
    assert_eq!(gw.snapshot("HOT").await.sold, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_oversell_releases_the_units() {
    let gw = testkit::start_gateway().await;
    let alice = gw.idp.token("alice");
    let (_, created) = body(gw.reserve(&alice, "k1", "HOT", 2).await).await;
    gw.mock.set_mode(Mode::Oversell);
    let (status, problem) =
        body(gw.confirm(&alice, created["token"].as_str().unwrap()).await).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("sold_out")));
    let snapshot = gw.snapshot("HOT").await;
    assert_eq!(
        (
            snapshot.available,
            snapshot.held,
            snapshot.confirming,
            snapshot.sold
        ),
        (5, 0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_timeout_leaves_the_hold_confirming_until_a_retry() {
    let gw = testkit::start_gateway().await;
    let alice = gw.idp.token("alice");
    let (_, created) = body(gw.reserve(&alice, "k1", "HOT", 1).await).await;
    let token = created["token"].as_str().unwrap();

    gw.mock.set_mode(Mode::Slow);
    let response = gw.confirm(&alice, token).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.status(), 503);
    let snapshot = gw.snapshot("HOT").await;
    assert_eq!(
        (snapshot.held, snapshot.confirming),
        (0, 1),
        "outcome unknown: the hold stays confirming"
    );
    assert_eq!(gw.state.metrics.confirm_count("ambiguous"), 1);

    gw.mock.set_mode(Mode::Commit);
    let (status, _) = body(gw.confirm(&alice, token).await).await;
    // The slow call committed in the mock after all, so the retry finds the order: 200.
    assert!(status == 200 || status == 201, "retry answered {status}");
    let snapshot = gw.snapshot("HOT").await;
    assert_eq!((snapshot.confirming, snapshot.sold), (0, 1));
}

/// Regression (settlement-kill and postgres-restart fault runs): the first try of a confirm
/// commits but its answer is lost; the buyer retries after the hold's expiry. The retry must
/// get the order, not 410, and the hold must end `confirmed`, never expire under the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_retried_after_expiry_gets_the_order_its_lost_first_try_placed() {
    let gw = testkit::start_gateway_with(|c| c.reservations.hold_ttl_secs = 1).await;
    let alice = gw.idp.token("alice");
    let (_, created) = body(gw.reserve(&alice, "k1", "HOT", 1).await).await;
    let token = created["token"].as_str().unwrap();
    let id = reservation_core::ReservationId::parse(created["reservation_id"].as_str().unwrap())
        .unwrap();

    gw.mock.set_mode(Mode::Slow);
    assert_eq!(gw.confirm(&alice, token).await.status(), 503);
    // Past the hold's expiry and the token's leeway (the mock commits the slow call).
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    gw.mock.set_mode(Mode::Commit);
    let (status, order) = body(gw.confirm(&alice, token).await).await;
    // 200 when the mock had committed the first try, 201 when the dropped call never ran.
    assert!(
        status == 200 || status == 201,
        "the late retry gets the order: {order}"
    );
    assert_eq!(order["reservation_id"], created["reservation_id"]);
    let hold = reservation_core::ReservationStore::get_hold(&*gw.store, &id)
        .await
        .unwrap();
    assert_eq!(hold.state, HoldState::Confirmed);
    let snapshot = gw.snapshot("HOT").await;
    assert_eq!(
        (snapshot.held, snapshot.confirming, snapshot.sold),
        (0, 0, 1)
    );

    // An expired token whose hold never got to settlement is still refused, store untouched.
    let (_, other) = body(gw.reserve(&alice, "k2", "HOT", 1).await).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let (status, problem) = body(gw.confirm(&alice, other["token"].as_str().unwrap()).await).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (410, Some("reservation_expired"))
    );
    // ... and another buyer's expired token is refused before any store call.
    let (status, problem) = body(gw.confirm(&gw.idp.token("mallory"), token).await).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("not_owner")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_routes_need_no_token_and_are_proxied_with_a_request_id() {
    let gw = testkit::start_gateway().await;
    let response = gw
        .http
        .get(gw.url("/api/v1/products"))
        .header("x-request-id", "trace-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "trace-123");
    assert_eq!(
        gw.mock.last_header("x-request-id").as_deref(),
        Some("trace-123")
    );
    assert_eq!(gw.mock.last_header("x-user-sub"), None);

    let (status, _) = body(gw.http.get(gw.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let (status, ready) = body(gw.http.get(gw.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    assert!(
        gw.metrics_show(r#"stockgate_requests_total{route="products",status="200"} 1"#)
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_lets_the_in_flight_confirm_finish() {
    let mut gw = testkit::start_gateway_with(|c| {
        c.server.grace_period_secs = 3;
        c.upstream.settle_timeout_ms = 5_000;
    })
    .await;
    let alice = gw.idp.token("alice");
    let (_, created) = body(gw.reserve(&alice, "k1", "HOT", 1).await).await;
    gw.mock.set_mode(Mode::Slow);

    let request = gw
        .http
        .post(gw.url("/api/v1/orders"))
        .bearer_auth(&alice)
        .header("idempotency-key", "c1")
        .json(&json!({"reservation_token": created["token"]}))
        .send();
    let in_flight = tokio::spawn(request);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let server = gw.server.take().unwrap();
    let stopping = tokio::task::spawn_blocking(move || server.shutdown());

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(
        response.status(),
        201,
        "the confirm in flight at SIGTERM completed"
    );
    stopping.await.unwrap();
    assert_eq!(gw.snapshot("HOT").await.sold, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_answers_503_with_retry_after_and_keeps_the_hold() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = testkit::start_gateway_with(|c| {
        c.upstream.settlement_addr = closed.to_string();
        c.upstream.settlement_admin_port = closed.port();
    })
    .await;
    let alice = gw.idp.token("alice");
    let (status, created) = body(gw.reserve(&alice, "k1", "HOT", 1).await).await;
    assert_eq!(status, 201, "reservations do not need the upstream");

    let response = gw
        .http
        .get(gw.url("/api/v1/orders"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let (status, problem) = body(response).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (503, Some("upstream_unavailable"))
    );

    let response = gw.confirm(&alice, created["token"].as_str().unwrap()).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(body(response).await.0, 503);
    let snapshot = gw.snapshot("HOT").await;
    assert_eq!(
        (snapshot.held, snapshot.confirming, snapshot.sold),
        (1, 0, 0),
        "hold kept"
    );

    // This pod can still serve (tests/readiness.rs): readiness does not follow the upstream,
    // even once the health check has marked it down.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let (status, ready) = body(gw.http.get(gw.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
}
