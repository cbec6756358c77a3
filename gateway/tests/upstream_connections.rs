//! The gateway's connections to settlement live at most `upstream.max_connection_age_secs`
//! (issue 15 item 11): a Kubernetes ClusterIP balances per connection, so keep-alive
//! connections that never end keep a gateway's traffic on the settlement pods that existed
//! when they opened. Steady traffic for 3.3 s against the mock settlement, which counts the
//! connections it accepts: with a 1 s maximum age they are renewed about every second (3 to
//! 5 connections, not one per request), with a long one a single connection carries it all.

use std::time::{Duration, Instant};

use reservation_core::{ReservationStore, Sku};
use testkit::{TestGateway, body};

/// How long each run sends, one request at a time, 100 ms apart.
const SPAN: Duration = Duration::from_millis(3_300);

async fn gateway(max_age_secs: u64) -> TestGateway {
    testkit::start_gateway_with(|config| {
        config.upstream.max_connection_age_secs = max_age_secs;
        // Catalog reads go to the upstream on every request (the proxied path).
        config.cache.enabled = false;
        // One probe at start, on its own connection (counted apart by the mock).
        config.upstream.health_check_interval_secs = 3_600;
    })
    .await
}

/// Runs `send` every 100 ms for `SPAN`; the connections settlement accepted for them.
async fn connections_for<F, Fut>(gw: &TestGateway, mut send: F) -> usize
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < SPAN {
        send(sent).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent >= 10, "only {sent} requests in {SPAN:?}");
    let connections = gw.mock.request_connections();
    eprintln!("{sent} requests in {SPAN:?}: {connections} upstream connections");
    connections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_requests_renew_their_upstream_connection_at_the_maximum_age() {
    for (max_age_secs, expected) in [(1, 3..=5), (3_600, 1..=1)] {
        let gw = gateway(max_age_secs).await;
        let connections = connections_for(&gw, |_| async {
            let response = gw
                .http
                .get(gw.url("/api/v1/products"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "proxied to the mock");
            // Closing the upstream connection does not close the buyer's.
            assert_eq!(testkit::header(&response, "connection"), "keep-alive");
        })
        .await;
        assert!(
            expected.contains(&connections),
            "max age {max_age_secs} s: {connections} upstream connections, expected {expected:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_renew_their_settlement_connection_at_the_maximum_age() {
    for (max_age_secs, expected) in [(1, 3..=5), (3_600, 1..=1)] {
        let gw = gateway(max_age_secs).await;
        gw.store
            .configure_product(&Sku::parse("BIG").unwrap(), &testkit::product(1_000, 1))
            .await
            .unwrap();
        let connections = connections_for(&gw, |i| {
            let gw = &gw;
            async move {
                let buyer = gw.idp.token(&format!("buyer-{i}"));
                let (status, hold) = body(gw.reserve(&buyer, "k", "BIG", 1).await).await;
                assert_eq!(status, 201, "{hold}");
                let token = hold["token"].as_str().unwrap();
                let (status, order) = body(gw.confirm(&buyer, token).await).await;
                assert_eq!(status, 201, "{order}");
            }
        })
        .await;
        assert_eq!(
            gw.mock
                .settlements
                .load(std::sync::atomic::Ordering::SeqCst),
            gw.mock.hits(),
            "only confirms reached the mock"
        );
        assert!(
            expected.contains(&connections),
            "max age {max_age_secs} s: {connections} settlement connections, expected {expected:?}"
        );
    }
}
