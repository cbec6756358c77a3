//! Slowloris: a few hundred connections trickling a byte every second, into their headers or
//! into a request body, while a normal client keeps reserving and reading stock. The normal
//! requests must all succeed and every slow connection must be cut off by the server (the
//! total header deadline, the total body deadline). The normal client's latency with and
//! without the attack is printed for RELIABILITY.md; no assertion is made on it.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::world::{self, Abuse};
use testkit::RealStack;

const SLOW_HEADER_CONNECTIONS: usize = 200;
const SLOW_BODY_CONNECTIONS: usize = 100;
/// A slow client gives up (and the case fails) after this long without being cut off.
const SLOW_CLIENT_PATIENCE: Duration = Duration::from_secs(30);

/// Trickles `prefix` whole, then `trickle` one byte a second; true when the server closed.
async fn slow_client(addr: String, prefix: String, trickle: Vec<u8>) -> bool {
    let Ok(mut stream) = TcpStream::connect(&addr).await else {
        return true;
    };
    if stream.write_all(prefix.as_bytes()).await.is_err() {
        return true;
    }
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    for byte in trickle.iter().cycle() {
        if started.elapsed() > SLOW_CLIENT_PATIENCE {
            return false;
        }
        if stream.write_all(&[*byte]).await.is_err() {
            return true;
        }
        // Anything the server says (a 408, a close) ends the attack on this connection.
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {
                // An answer came; the connection must close after it.
                let mut rest = Vec::new();
                return tokio::time::timeout(SLOW_CLIENT_PATIENCE, stream.read_to_end(&mut rest))
                    .await
                    .is_ok();
            }
            Err(_) => {}
        }
    }
    false
}

/// Normal traffic for `for_how_long`: stock reads and reservation replays, one at a time.
/// Returns each request's latency; panics on any failed request.
async fn normal_client(world: &RealStack, token: &str, for_how_long: Duration) -> Vec<Duration> {
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut i = 0u64;
    while started.elapsed() < for_how_long {
        let sent = Instant::now();
        let status = if i.is_multiple_of(2) {
            let r = world
                .http
                .get(world.url("/api/v1/stock/HOT"))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        } else {
            let r = world
                .http
                .post(world.url("/api/v1/reservations"))
                .bearer_auth(token)
                .header("idempotency-key", "steady")
                .json(&serde_json::json!({"sku": "HOT", "qty": 1}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        };
        latencies.push(sent.elapsed());
        assert!(
            status == 200 || status == 201,
            "normal request {i} got {status}"
        );
        i += 1;
    }
    latencies
}

fn summary(latencies: &mut [Duration]) -> String {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    format!(
        "n={} p50={:?} p99={:?} max={:?}",
        latencies.len(),
        at(0.5),
        at(0.99),
        latencies[latencies.len() - 1]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_is_cut_off_while_normal_traffic_is_served() {
    let world = world::start(|c| {
        c.gateway.limits.header_read_timeout_ms = 2_000;
        c.gateway.limits.body_read_timeout_ms = 2_000;
    })
    .await;
    world.add_product("HOT", 10, 3).await;
    let alice = world.idp.token("alice");
    let mallory = world.idp.token("mallory");
    let ops = world.idp.ops_token("mallory");

    let mut baseline = normal_client(&world, &alice, Duration::from_secs(3)).await;
    let before = world.state().await;

    let mut slow = tokio::task::JoinSet::new();
    for i in 0..SLOW_HEADER_CONNECTIONS {
        let prefix = format!("GET /api/v1/stock/HOT HTTP/1.1\r\nhost: x\r\nx-slow-{i}: ");
        slow.spawn(slow_client(world.addr(), prefix, b"abcdefgh".to_vec()));
    }
    for i in 0..SLOW_BODY_CONNECTIONS {
        // An edge route (the body the edge reads itself) and a proxied route whose upstream
        // handler waits for the whole body (an ops product update), both trickled after
        // complete headers.
        let head = if i.is_multiple_of(2) {
            format!(
                "POST /api/v1/reservations HTTP/1.1\r\nauthorization: Bearer {mallory}\r\nidempotency-key: slow-{i}\r\n"
            )
        } else {
            format!("PUT /api/v1/admin/products/HOT HTTP/1.1\r\nauthorization: Bearer {ops}\r\n")
        };
        let prefix = format!(
            "{head}host: x\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n"
        );
        slow.spawn(slow_client(
            world.addr(),
            prefix,
            b"{\"sku\":\"HOT\",\"qty\":1}".to_vec(),
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut attacked = normal_client(&world, &alice, Duration::from_secs(4)).await;

    let results = slow.join_all().await;
    let cut_off = results.iter().filter(|closed| **closed).count();
    println!(
        "abuse case slowloris: {} slow connections ({SLOW_HEADER_CONNECTIONS} headers, {SLOW_BODY_CONNECTIONS} bodies), {cut_off} cut off by the server",
        results.len()
    );
    println!(
        "abuse case slowloris: normal client without attack: {}",
        summary(&mut baseline)
    );
    println!(
        "abuse case slowloris: normal client under attack:   {}",
        summary(&mut attacked)
    );
    assert_eq!(
        cut_off,
        results.len(),
        "some slow connections were never cut off"
    );
    // The normal client only replayed its one reservation; the attack reserved nothing.
    assert_eq!(world.state().await, before);
    world.shutdown().await;
}
