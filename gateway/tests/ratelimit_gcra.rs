//! Rate limits on real Redis through real HTTP: the admitted count of a GCRA rule over a
//! measured window, the 429 answer, each decision counted once, shadow rules, and rules keyed
//! by the reservation body.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reservation_core::{InMemoryStore, ReservationStore, Sku};
use serde_json::json;
use testkit::{Upstream, header, redis_url};
use testkit::{body, product};

/// Writes `rules` to a fresh file and returns its path.
fn rules_file(rules: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("rules-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, rules).unwrap();
    path
}

async fn store_with_hot() -> Arc<dyn ReservationStore> {
    let store = Arc::new(InMemoryStore::new());
    for sku in ["HOT", "TEE"] {
        let sku = Sku::parse(sku).unwrap();
        store
            .configure_product(&sku, &product(1000, 1000))
            .await
            .unwrap();
    }
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_per_second_burst_5_rule_admits_the_expected_count_within_5_percent() {
    let upstream = Upstream::start();
    let path = rules_file(
        "[[rule]]\nname = \"stock\"\nmethod = \"GET\"\npath = \"/api/v1/stock/{sku}\"\n\
         key = [\"ip\", \"sku\"]\nrate = 10\nburst = 5\n",
    );
    let mut config = testkit::edge_config(upstream.addr, Some(&redis_url()));
    config.ratelimit.rules_file = Some(path.clone());
    let edge = testkit::start_edge(config, Some(store_with_hot().await)).await;

    // Requests every 5 ms (far above the rate) for about 4 s; the count is taken over the
    // window the requests actually spanned: GCRA admits `burst` at once, then one per 100 ms.
    let url = edge.url("/api/v1/stock/HOT");
    let (mut admitted, mut refused) = (0u64, 0u64);
    let mut first_429 = None;
    let start = Instant::now();
    let mut last_sent = start;
    while start.elapsed() < Duration::from_secs(4) {
        last_sent = Instant::now();
        let response = edge.http.get(&url).send().await.unwrap();
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => {
                refused += 1;
                first_429.get_or_insert(response);
            }
            other => panic!("unexpected status {other}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let window = last_sent.duration_since(start).as_secs_f64();
    let expected = 5.0 + (window * 10.0).floor();
    let error = (admitted as f64 - expected).abs() / expected;
    assert!(
        error <= 0.05,
        "admitted {admitted}, expected {expected} over {window:.3} s ({refused} refused)"
    );
    println!("admitted {admitted}, expected {expected} over {window:.3} s, refused {refused}");
    assert!(refused > 100);

    // The refusal: 429 problem+json, Retry-After, RateLimit-* headers.
    let limited = first_429.unwrap();
    assert_eq!(header(&limited, "retry-after"), "1");
    assert_eq!(header(&limited, "ratelimit-limit"), "5");
    assert_eq!(header(&limited, "ratelimit-remaining"), "0");
    assert_eq!(header(&limited, "ratelimit-policy"), "10;w=1;burst=5");
    assert!(!header(&limited, "ratelimit-reset").is_empty());
    let (status, problem) = body(limited).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (429, Some("rate_limited"))
    );

    // Another SKU is another key: its own burst.
    assert_eq!(edge.get("/api/v1/stock/TEE").await.status(), 200);
    // Every decision is counted once, under one label: the 429s are the Redis refusals plus
    // the ones answered from memory (which used to be counted under both).
    let series = |decision: &str| {
        format!(r#"stockgate_ratelimit_decisions_total{{decision="{decision}",rule="stock"}}"#)
    };
    let (limited, local) = (
        edge.metric(&series("limited")).await,
        edge.metric(&series("limited_local")).await,
    );
    assert!(local > 0, "refusals answered from memory");
    assert_eq!(
        limited + local,
        refused,
        "limited {limited} + limited_local {local}"
    );
    assert_eq!(edge.metric(&series("allowed")).await, admitted + 1);
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_rule_refuses_nothing_but_counts() {
    let upstream = Upstream::start();
    let path = rules_file(
        "[[rule]]\nname = \"catalog-shadow\"\npath = \"/api/v1/products/*\"\nkey = [\"ip\"]\n\
         rate = 1\nperiod_secs = 60\nburst = 2\nshadow = true\n",
    );
    let mut config = testkit::edge_config(upstream.addr, Some(&redis_url()));
    config.ratelimit.rules_file = Some(path.clone());
    let edge = testkit::start_edge(config, None).await;

    for _ in 0..20 {
        assert_eq!(edge.get("/api/v1/products/HOT").await.status(), 200);
    }
    let series = |decision: &str| {
        format!(
            r#"stockgate_ratelimit_decisions_total{{decision="{decision}",rule="catalog-shadow"}}"#
        )
    };
    assert_eq!(edge.metric(&series("allowed")).await, 2);
    let shadow = edge.metric(&series("shadow_limited")).await;
    let local = edge.metric(&series("limited_local")).await;
    assert_eq!(
        shadow, 18,
        "every request over the budget counted (local: {local})"
    );
    assert_eq!(edge.metric(&series("limited")).await, 0);
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_keyed_by_buyer_and_the_sku_of_the_reservation_body() {
    let upstream = Upstream::start();
    let path = rules_file(
        "[[rule]]\nname = \"reserve\"\nmethod = \"POST\"\npath = \"/api/v1/reservations\"\n\
         key = [\"sub\", \"sku\"]\nrate = 1\nperiod_secs = 60\nburst = 2\n",
    );
    let mut config = testkit::edge_config(upstream.addr, Some(&redis_url()));
    config.ratelimit.rules_file = Some(path.clone());
    let edge = testkit::start_edge(config, Some(store_with_hot().await)).await;
    let reserve = |token: String, sku: &'static str, key: String| {
        let request = edge
            .http
            .post(edge.url("/api/v1/reservations"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&json!({"sku": sku, "qty": 1}));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let alice = edge.idp.token("alice");
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(reserve(alice.clone(), "HOT", format!("a{i}")).await);
    }
    assert_eq!(statuses, [201, 201, 429]);
    // Other SKU, other buyer: other budgets.
    assert_eq!(reserve(alice.clone(), "TEE", "t".into()).await, 201);
    assert_eq!(reserve(edge.idp.token("bob"), "HOT", "b".into()).await, 201);
    let _ = std::fs::remove_file(path);
}
