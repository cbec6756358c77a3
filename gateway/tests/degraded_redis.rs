//! Degraded mode with Redis stopped mid-test: a private `redis-server` on a spare loopback
//! port (the shared one is never touched) is paused with SIGSTOP, so every call to it hangs,
//! which is the harder case than a refused connection. While it is down: reservations and
//! confirms answer 503 with Retry-After within 200 ms, catalog reads come from memory, rate
//! limits fall back to this replica's share. After SIGCONT everything recovers by itself.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::app::connect_redis;
use reservation_core::{ReservationStore, Sku};
use serde_json::json;
use testkit::{Upstream, header};
use testkit::{body, product};

/// A redis-server of this test only; killed on drop (resumed first if paused).
struct PrivateRedis {
    child: Child,
    url: String,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        // A port the OS calls free right now (a tiny race with other processes is acceptable).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for the degraded-mode test");
        let url = format!("redis://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateRedis { child, url }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for_metric(edge: &testkit::Edge, series: &str, value: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while edge.metric(series).await != value {
        assert!(Instant::now() < deadline, "{series} never became {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_test_degrades_and_recovers() {
    let redis = PrivateRedis::start();
    let upstream = Upstream::start();
    let rules = std::env::temp_dir().join(format!("rules-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"catalog\"\npath = \"/api/v1/products/{sku}\"\nkey = [\"ip\"]\n\
         rate = 1\nperiod_secs = 60\nburst = 4\n",
    )
    .unwrap();
    let mut config = testkit::edge_config(upstream.addr, Some(&redis.url));
    config.ratelimit.rules_file = Some(rules.clone());
    config.ratelimit.replicas = 2;
    config.cache.ttl_secs = 60;
    let store = connect_redis(&config, &redis.url).await.unwrap();
    store
        .configure_product(&Sku::parse("HOT").unwrap(), &product(100, 10))
        .await
        .unwrap();
    let edge = testkit::start_edge(config, Some(Arc::new(store))).await;
    let alice = edge.idp.token("alice");
    let reserve = |key: &str| {
        edge.http
            .post(edge.url("/api/v1/reservations"))
            .bearer_auth(&alice)
            .header("idempotency-key", key)
            .json(&json!({"sku": "HOT", "qty": 1}))
            .send()
    };

    // Healthy: a reservation, a cached product page (one of the 4-request burst).
    let (status, held) = body(reserve("before").await.unwrap()).await;
    assert_eq!(status, 201, "{held}");
    assert_eq!(edge.get("/api/v1/products/HOT").await.status(), 200);

    redis.signal("-STOP");
    wait_for_metric(&edge, "stockgate_redis_degraded", 1).await;

    // Reservations and confirms fail closed, fast.
    let started = Instant::now();
    let response = reserve("during").await.unwrap();
    let took = started.elapsed();
    assert_eq!(header(&response, "retry-after"), "1");
    let (status, problem) = body(response).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (503, Some("backend_unavailable"))
    );
    assert!(
        took < Duration::from_millis(200),
        "reserve answered after {took:?}"
    );
    let started = Instant::now();
    let response = edge
        .http
        .post(edge.url("/api/v1/orders"))
        .bearer_auth(&alice)
        .header("idempotency-key", "confirm-during")
        .json(&json!({"reservation_token": held["token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(started.elapsed() < Duration::from_millis(200));

    // Catalog reads come from process memory, fast; the limit is this replica's share
    // (burst 4 over 2 replicas = 2, one of which is still to take).
    let started = Instant::now();
    let cached = edge.get("/api/v1/products/HOT").await;
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(cached.status(), 200);
    assert!(cached.text().await.unwrap().contains("HOT"));
    assert_eq!(edge.get("/api/v1/products/HOT").await.status(), 200);
    assert_eq!(edge.get("/api/v1/products/HOT").await.status(), 429);
    assert!(
        edge.metric(r#"stockgate_ratelimit_decisions_total{decision="degraded",rule="catalog"}"#)
            .await
            >= 3
    );

    // Redis returns: degraded mode ends without anyone doing anything.
    redis.signal("-CONT");
    wait_for_metric(&edge, "stockgate_redis_degraded", 0).await;
    let (status, created) = body(reserve("after").await.unwrap()).await;
    assert_eq!(status, 201, "{created}");
    let (status, replay) = body(reserve("before").await.unwrap()).await;
    assert_eq!(
        (status, &replay["reservation_id"]),
        (200, &held["reservation_id"])
    );
    let _ = std::fs::remove_file(rules);
}
