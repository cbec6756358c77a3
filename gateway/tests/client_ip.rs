//! Who the client is, through real HTTP on real Redis: the rate limits' `ip` is the TCP peer
//! unless the peer is a trusted proxy, then the first untrusted address of X-Forwarded-For
//! from the right; IPv6 clients share one budget per /64; `before_auth` and `auth_failure`
//! rules refuse a flood of bad tokens before their signature is checked.

use std::path::PathBuf;

use testkit::{Upstream, redis_url};

/// 2 catalog reads per client, then one a minute: the third read of one client is 429.
const CATALOG_PER_IP: &str = "[[rule]]\nname = \"catalog\"\nmethod = \"GET\"\n\
    path = \"/api/v1/products/*\"\nkey = [\"ip\"]\nrate = 1\nperiod_secs = 60\nburst = 2\n\
    phase = \"before_auth\"\n";

fn rules_file(rules: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("rules-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, rules).unwrap();
    path
}

async fn edge_with(rules: &str, trusted: &[&str]) -> (testkit::Edge, Upstream, PathBuf) {
    let upstream = Upstream::start();
    let path = rules_file(rules);
    let mut config = testkit::edge_config(upstream.addr, Some(&redis_url()));
    config.ratelimit.rules_file = Some(path.clone());
    config.client_ip.trusted_proxies = trusted.iter().map(|s| s.to_string()).collect();
    let edge = testkit::start_edge(config, None).await;
    (edge, upstream, path)
}

/// The status of a catalog read sent with `x-forwarded-for: xff` (none when empty).
async fn read(edge: &testkit::Edge, xff: &str) -> u16 {
    let mut request = edge.http.get(edge.url("/api/v1/products/HOT"));
    if !xff.is_empty() {
        request = request.header("x-forwarded-for", xff);
    }
    request.send().await.unwrap().status().as_u16()
}

/// A `GET` rule spends the same budget on `HEAD`: the edge answers a `HEAD` of a catalog
/// page as the `GET` (a cache fill, upstream on a miss). Before, rule matching compared the
/// method exactly and HEADs of unknown SKUs went to SQL without a limit (150 of 150 passed
/// the shipped `catalog-per-ip`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_requests_spend_the_get_rules_budget() {
    let (edge, upstream, path) = edge_with(CATALOG_PER_IP, &[]).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let url = edge.url(&format!("/api/v1/products/NOPE{i}"));
        statuses.push(edge.http.head(url).send().await.unwrap().status().as_u16());
    }
    assert_eq!(&statuses[2..], [429, 429], "{statuses:?}");
    assert_eq!(
        read(&edge, "").await,
        429,
        "HEADs and GETs share one budget"
    );
    assert_eq!(
        upstream.catalog.hits(),
        2,
        "refused HEADs never went upstream"
    );
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_address_from_an_untrusted_peer_is_ignored() {
    // Proxies trusted, but the test client (127.0.0.1) is not one of them.
    let (edge, _upstream, path) = edge_with(CATALOG_PER_IP, &["10.0.0.0/8"]).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        // A new made-up client each time, and a made-up trusted hop next to it.
        statuses.push(read(&edge, &format!("198.51.100.{i}, 10.0.0.1")).await);
    }
    assert_eq!(statuses, [200, 200, 429, 429], "one budget: the peer's");
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_trusted_proxies_the_first_untrusted_hop_from_the_right_is_the_client() {
    let (edge, _upstream, path) = edge_with(CATALOG_PER_IP, &["127.0.0.1/32", "10.0.0.0/8"]).await;
    // The client prepends whatever it likes; the edge proxy appended its real address
    // 203.0.113.5, two inner proxies (10.x) theirs; the peer is the last proxy.
    let mut statuses = Vec::new();
    for i in 0..3 {
        let xff = format!("198.51.100.{i}, 203.0.113.5, 10.1.1.1, 10.2.2.2");
        statuses.push(read(&edge, &xff).await);
    }
    assert_eq!(statuses, [200, 200, 429], "203.0.113.5's budget");
    // Another real client behind the same proxies has its own budget.
    assert_eq!(read(&edge, "203.0.113.6, 10.1.1.1, 10.2.2.2").await, 200);
    assert_eq!(read(&edge, "203.0.113.7, 10.2.2.2").await, 200);
    // No header from the trusted peer: the peer is the client (its own budget).
    assert_eq!(read(&edge, "").await, 200);
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_forwarded_entry_stops_at_the_last_good_hop() {
    let (edge, _upstream, path) = edge_with(CATALOG_PER_IP, &["127.0.0.1/32", "10.0.0.0/8"]).await;
    // Whatever sits left of the garbage, the key is the hop right of it (10.3.3.3).
    let mut statuses = Vec::new();
    for i in 0..3 {
        let xff = format!("203.0.113.{i}, not-an-address, 10.3.3.3");
        statuses.push(read(&edge, &xff).await);
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(
        read(&edge, "203.0.113.1, 10.3.3.3:80, unknown").await,
        200,
        "`unknown` next to the peer: the peer's own budget"
    );
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_share_a_budget_per_64() {
    let (edge, _upstream, path) = edge_with(CATALOG_PER_IP, &["127.0.0.1/32"]).await;
    // Three addresses of one /64 (a subscriber picks any): one budget.
    let mut statuses = Vec::new();
    for client in [
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
        "2001:db8:1:2:ffff:1:2:3",
    ] {
        statuses.push(read(&edge, client).await);
    }
    assert_eq!(statuses, [200, 200, 429]);
    // The neighbouring /64 is another subscriber; IPv4 clients are counted per address.
    assert_eq!(read(&edge, "2001:db8:1:3::1").await, 200);
    assert_eq!(read(&edge, "[2001:db8:1:4::1]:443").await, 200);
    assert_eq!(read(&edge, "203.0.113.7").await, 200);
    assert_eq!(read(&edge, "203.0.113.8").await, 200);
    let _ = std::fs::remove_file(path);
}

/// The status of a reservation attempt with a bad token, from `xff`.
async fn bad_token(edge: &testkit::Edge, xff: &str) -> u16 {
    edge.http
        .get(edge.url("/api/v1/reservations/00000000-0000-0000-0000-000000000000"))
        .bearer_auth("eyJhbGciOiJFZERTQSJ9.e30.c2ln")
        .header("x-forwarded-for", xff)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_tokens_is_refused_before_their_signature_is_checked() {
    let rules = "[[rule]]\nname = \"bad-tokens\"\npath = \"/api/v1/*\"\nkey = [\"ip\"]\n\
                 rate = 1\nperiod_secs = 60\nburst = 5\nphase = \"auth_failure\"\n";
    let (edge, _upstream, path) = edge_with(rules, &["127.0.0.1/32"]).await;
    let mut statuses = Vec::new();
    for _ in 0..50 {
        statuses.push(bad_token(&edge, "203.0.113.66").await);
    }
    let count = |status: u16| statuses.iter().filter(|s| **s == status).count();
    // 5 failures within the budget are answered 401; the 6th exhausts it (429); the 44
    // after it are refused from memory without looking at the token.
    assert_eq!((count(401), count(429)), (5, 45), "{statuses:?}");
    let checked = edge.metric("stockgate_auth_failures_total").await;
    assert_eq!(checked, 6, "signature checks of the flood");
    let series = |decision: &str| {
        format!(r#"stockgate_ratelimit_decisions_total{{decision="{decision}",rule="bad-tokens"}}"#)
    };
    assert_eq!(edge.metric(&series("allowed")).await, 5);
    assert_eq!(edge.metric(&series("limited")).await, 1);
    assert_eq!(edge.metric(&series("limited_local")).await, 44);

    // The blocked client is refused whatever it sends; another client is not.
    let good = edge.idp.token("alice");
    let response = edge
        .http
        .get(edge.url("/api/v1/stock/HOT"))
        .bearer_auth(&good)
        .header("x-forwarded-for", "203.0.113.66")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(bad_token(&edge, "203.0.113.67").await, 401);
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_before_auth_rule_throttles_requests_before_their_token_is_checked() {
    let rules = "[[rule]]\nname = \"api-per-ip\"\npath = \"/api/v1/*\"\nkey = [\"ip\"]\n\
                 rate = 1\nperiod_secs = 60\nburst = 3\nphase = \"before_auth\"\n";
    let (edge, _upstream, path) = edge_with(rules, &[]).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(bad_token(&edge, "").await);
    }
    assert_eq!(&statuses[..4], [401, 401, 401, 429]);
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(edge.metric("stockgate_auth_failures_total").await, 3);
    let _ = std::fs::remove_file(path);
}
