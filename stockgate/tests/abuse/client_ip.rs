//! Limits that see the real client (issue 14.4), with the SHIPPED rules
//! (`config/ratelimits.toml`): a flood of forged buyer tokens is refused before its
//! signatures are checked, and made-up `X-Forwarded-For` addresses, from a client talking to
//! the gateway directly or prepended behind a trusted proxy, do not buy a fresh budget.
//! Each refusal is the exact problem and changes nothing (rate-limit budgets aside).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use crate::world::{self, Abuse, refused};
use testkit::{RealStack, body};

/// Requests of each flood.
const FLOOD: usize = 200;
/// `bad-tokens-per-ip` in the shipped rules: 20 refused tokens at once.
const BAD_TOKEN_BURST: usize = 20;
/// `stock-per-ip` in the shipped rules: 60 at once, then 20 a second.
const STOCK_BURST: f64 = 60.0;
const STOCK_RATE: f64 = 20.0;

const ATTACKER: &str = "203.0.113.66";

fn shipped_rules() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/ratelimits.toml"
    ))
}

/// `token` with its signature replaced: verifying it costs a real signature check.
fn forged(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').unwrap();
    format!("{signed}.{}", "A".repeat(signature.len()))
}

fn reserve(world: &RealStack, token: &str, client: &str) -> reqwest::RequestBuilder {
    world
        .http
        .post(world.url("/api/v1/reservations"))
        .bearer_auth(token)
        .header("x-forwarded-for", client)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"sku": "HOT", "qty": 1}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_tokens_is_refused_before_their_signatures_are_checked() {
    let world = world::start(|config| {
        config.gateway.ratelimit.rules_file = Some(shipped_rules());
        // The test client stands for the load balancer in front of the gateway.
        config.gateway.client_ip.trusted_proxies = vec!["127.0.0.1/32".into()];
    })
    .await;
    world.add_product("HOT", 10, 3).await;
    let alice = world.idp.token("alice");
    let forged = forged(&alice);
    let before = world.state().await;
    let checks_before = world.shared().metrics.auth_failures.get();

    let mut answers: BTreeMap<(u16, String), usize> = BTreeMap::new();
    for _ in 0..FLOOD {
        let response = reserve(&world, &forged, ATTACKER).send().await.unwrap();
        let status = response.status().as_u16();
        if status == 429 {
            assert!(response.headers().contains_key("retry-after"));
        }
        let (_, problem) = body(response).await;
        let code = problem["code"].as_str().unwrap_or_default().to_owned();
        *answers.entry((status, code)).or_default() += 1;
    }
    let checked = world.shared().metrics.auth_failures.get() - checks_before;
    let expected = BTreeMap::from([
        ((401, "invalid_token".to_owned()), BAD_TOKEN_BURST),
        ((429, "rate_limited".to_owned()), FLOOD - BAD_TOKEN_BURST),
    ]);
    assert_eq!(answers, expected);
    // The burst, and the one that exhausted it: the other 179 cost no signature check.
    assert_eq!(checked, BAD_TOKEN_BURST as u64 + 1, "signature checks");
    assert_eq!(world.state().await, before, "the flood changed the state");
    println!(
        "abuse case forged-token flood: {FLOOD} requests, {checked} signature checks, \
         {answers:?}, nothing changed"
    );

    // Until its retry time the flooding client is refused whatever it sends ...
    refused(
        &world,
        "a good token from the flooding client",
        reserve(&world, &alice, ATTACKER),
        (429, "rate_limited"),
    )
    .await;
    // ... and a buyer behind the same load balancer is not.
    let (status, created) = body(
        reserve(&world, &alice, "198.51.100.20")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    world.shutdown().await;
}

/// Reads `/api/v1/stock/HOT` `FLOOD` times with the `x-forwarded-for` of `spoof(i)`; the
/// statuses counted, and the most the shipped rule admits over the time it took.
async fn stock_flood(world: &RealStack, spoof: impl Fn(usize) -> String) -> (usize, usize, f64) {
    let started = Instant::now();
    let (mut admitted, mut limited) = (0, 0);
    for i in 0..FLOOD {
        let response = world
            .http
            .get(world.url("/api/v1/stock/HOT"))
            .header("x-forwarded-for", spoof(i))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => limited += 1,
            other => panic!("stock read {i}: {other}"),
        }
    }
    let most = STOCK_BURST + (started.elapsed().as_secs_f64() * STOCK_RATE).ceil() + 1.0;
    (admitted, limited, most)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_forwarded_addresses_from_a_direct_client_buy_no_budget() {
    // The default: no proxy trusted, the TCP peer is the client.
    let world =
        world::start(|config| config.gateway.ratelimit.rules_file = Some(shipped_rules())).await;
    world.add_product("HOT", 10, 3).await;
    let before = world.state().await;
    let (admitted, limited, most) =
        stock_flood(&world, |i| format!("198.51.{}.{}", i / 200, i % 200)).await;
    println!("abuse case spoofed XFF, direct: {admitted} admitted (at most {most}), {limited} 429");
    assert!(
        admitted as f64 <= most,
        "{admitted} admitted, at most {most}"
    );
    assert!(limited > 0);
    assert_eq!(world.state().await, before);
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_prepended_behind_a_trusted_proxy_buy_no_budget() {
    let world = world::start(|config| {
        config.gateway.ratelimit.rules_file = Some(shipped_rules());
        config.gateway.client_ip.trusted_proxies = vec!["127.0.0.1/32".into(), "10.0.0.0/8".into()];
    })
    .await;
    world.add_product("HOT", 10, 3).await;
    let before = world.state().await;
    // The client writes a fresh address each time; the ingress (10.0.0.7) appends the real
    // one it saw, and the load balancer (the peer) forwards it.
    let (admitted, limited, most) = stock_flood(&world, |i| {
        format!("198.51.{}.{}, {ATTACKER}, 10.0.0.7", i / 200, i % 200)
    })
    .await;
    println!(
        "abuse case spoofed XFF, proxied: {admitted} admitted (at most {most}), {limited} 429"
    );
    assert!(
        admitted as f64 <= most,
        "{admitted} admitted, at most {most}"
    );
    assert!(limited > 0);
    assert_eq!(world.state().await, before);
    world.shutdown().await;
}
