//! Protection of the public listener: body and header limits, the total header-read deadline
//! (slowloris), required idempotency keys, problem+json for routing errors, and the admin
//! listener.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use testkit::body;

/// Sends raw bytes and returns what the server answered before closing or `wait` passing.
fn raw_exchange(addr: &str, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

async fn exchange(gw: &testkit::TestGateway, request: String) -> String {
    let addr = gw.base.trim_start_matches("http://").to_owned();
    tokio::task::spawn_blocking(move || {
        raw_exchange(&addr, request.as_bytes(), Duration::from_secs(3))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_oversized_body_gets_413_before_it_is_sent() {
    let gw = testkit::start_gateway().await;
    let token = gw.idp.token("alice");
    // Only the headers go out: the gateway must answer without waiting for the 1 MiB body.
    let request = format!(
        "POST /api/v1/reservations HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nidempotency-key: k\r\ncontent-type: application/json\r\ncontent-length: 1048576\r\n\r\n"
    );
    let answer = exchange(&gw, request).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"));
    assert!(answer.to_ascii_lowercase().contains("x-request-id"));
    assert_eq!(gw.snapshot("HOT").await.available, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_oversized_bodies_get_413_at_the_edge_and_on_proxied_routes() {
    let gw = testkit::start_gateway_with(|c| c.limits.max_body_bytes = 1024).await;
    let token = gw.idp.token("alice");
    let chunk = "x".repeat(4096);
    for (path, extra) in [
        ("/api/v1/reservations", "idempotency-key: k\r\n"),
        ("/api/v1/orders/o1/cancel", ""),
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n{extra}transfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        );
        let answer = exchange(&gw, request).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
    }
    // The edge route never touched the store. (The proxied request had started streaming to
    // the upstream; it was cut off mid-body, which the upstream sees as a broken request.)
    assert_eq!(gw.snapshot("HOT").await.available, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_get_431() {
    let gw = testkit::start_gateway().await;
    let mut request = gw.http.get(gw.url("/api/v1/stock/HOT"));
    for i in 0..100 {
        request = request.header(format!("x-filler-{i}"), "1");
    }
    let (status, problem) = body(request.send().await.unwrap()).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (431, Some("headers_too_large"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_sent_as_many_fields_count_as_one_header() {
    // HTTP/2 clients may split the Cookie header into one field per cookie (RFC 9113
    // §8.2.3): a browser with 100 cookies is not sending 100 headers.
    let gw = testkit::start_gateway().await;
    let mut request = gw.http.get(gw.url("/api/v1/stock/HOT"));
    for i in 0..100 {
        request = request.header("cookie", format!("c{i}=1"));
    }
    let (status, answer) = body(request.send().await.unwrap()).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_at_the_total_deadline() {
    let gw = testkit::start_gateway().await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    // Trickle one header byte every 100 ms (each read is quick; only a total deadline helps).
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        stream.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
        while started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(100));
            if stream.write_all(b"x").is_err() {
                return Some(started.elapsed());
            }
            stream
                .set_read_timeout(Some(Duration::from_millis(1)))
                .unwrap();
            let mut buf = [0u8; 64];
            if let Ok(0) = stream.read(&mut buf) {
                return Some(started.elapsed());
            }
        }
        None
    })
    .await
    .unwrap();
    let closed_after = closed_after.expect("the connection was never closed");
    // Deadline 700 ms in the test config.
    assert!(
        closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_outlives_the_header_deadline() {
    let gw = testkit::start_gateway().await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let answers = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut answers = Vec::new();
        for _ in 0..2 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).unwrap_or(0);
            answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            // Idle for longer than the 700 ms header deadline, within the idle timeout.
            std::thread::sleep(Duration::from_millis(1200));
        }
        answers
    })
    .await
    .unwrap();
    assert!(
        answers.iter().all(|a| a.starts_with("HTTP/1.1 200")),
        "{answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_is_required_on_edge_posts() {
    let gw = testkit::start_gateway().await;
    let token = gw.idp.token("alice");
    let response = gw
        .http
        .post(gw.url("/api/v1/reservations"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"sku": "HOT", "qty": 1}))
        .send()
        .await
        .unwrap();
    let (status, problem) = body(response).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("idempotency_key_required"))
    );
    let response = gw
        .http
        .post(gw.url("/api/v1/orders"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"reservation_token": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(body(response).await.0, 400);
    let (status, problem) = body(gw.reserve(&token, "k", "HOT", 0).await).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(gw.snapshot("HOT").await.available, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_errors_are_problems_and_admin_serves_metrics() {
    let gw = testkit::start_gateway().await;
    let (status, problem) = body(gw.http.get(gw.url("/nope")).send().await.unwrap()).await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")));
    // A 405 names the methods the path takes (RFC 9110 §15.5.6).
    let put = gw
        .http
        .put(gw.url("/api/v1/reservations"))
        .send()
        .await
        .unwrap();
    assert_eq!(testkit::header(&put, "allow"), "GET, HEAD, POST");
    let (status, _) = body(put).await;
    assert_eq!(status, 405);
    let (status, _) = body(
        gw.http
            .get(gw.url("/api/v1/stock/NOPE"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);

    assert!(
        gw.metrics_show(r#"stockgate_requests_total{route="not_found",status="404"} 1"#)
            .await
    );
    assert!(gw.metrics_show("stockgate_in_flight_requests 0").await);
    let reload = gw
        .http
        .post(format!("{}/admin/reload", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200);
    let (status, _) = body(
        gw.http
            .get(format!("{}/other", gw.admin))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
}

/// The kubelet's liveness probe asks the admin listener (deploy/k8s/base/gateway.yaml), whose
/// threads a sale's traffic does not share: `GET /healthz` there is 200, other methods 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_liveness() {
    let gw = testkit::start_gateway().await;
    let url = format!("{}/healthz", gw.admin);
    let (status, answer) = body(gw.http.get(&url).send().await.unwrap()).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("ok")));
    let post = gw.http.post(&url).send().await.unwrap();
    assert_eq!(testkit::header(&post, "allow"), "GET");
    let (status, problem) = body(post).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}
