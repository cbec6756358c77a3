//! HTTP-level junk on raw sockets: bad methods and request lines, ambiguous paths, framing
//! tricks (duplicate Content-Length, Content-Length with Transfer-Encoding, bad chunking),
//! 10 MB bodies, 10,000 headers and huge header values. Run twice: on the real stack
//! (nothing changes in Redis or SQL) and on the in-memory harness (no store call, nothing
//! reaches the upstream).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::world::{self, Abuse};

/// What a junk request must get.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// The edge's problem+json: status and `code`.
    Problem(u16, &'static str),
    /// Pingora's own plain answer with an empty body, before any hook of ours runs (see
    /// RELIABILITY.md: Pingora 0.9 offers no hook to render these as problem+json).
    Plain(u16),
}

pub struct Junk {
    pub name: &'static str,
    pub request: Vec<u8>,
    pub answer: Answer,
}

fn junk(name: &'static str, request: impl Into<Vec<u8>>, answer: Answer) -> Junk {
    Junk {
        name,
        request: request.into(),
        answer,
    }
}

/// Every junk case; `buyer` and `ops` are valid tokens (the junk must fail on its own merits).
pub fn cases(buyer: &str, ops: &str) -> Vec<Junk> {
    use Answer::*;
    let auth = format!("authorization: Bearer {buyer}\r\n");
    let ops_auth = format!("authorization: Bearer {ops}\r\n");
    let reserve = |extra: &str, body: &str| {
        format!(
            "POST /api/v1/reservations HTTP/1.1\r\nhost: x\r\n{auth}idempotency-key: junk\r\ncontent-type: application/json\r\n{extra}\r\n{body}"
        )
    };
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: x\r\n{ops_auth}\r\n");
    let many_headers: String = (0..10_000).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let some_headers: String = (0..200).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let ten_mb = 10 * 1024 * 1024;
    let mut chunked_10mb = reserve("transfer-encoding: chunked\r\n", "").into_bytes();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..(ten_mb / chunk.len()) {
        chunked_10mb.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked_10mb.extend_from_slice(&chunk);
        chunked_10mb.extend_from_slice(b"\r\n");
    }
    chunked_10mb.extend_from_slice(b"0\r\n\r\n");
    vec![
        junk(
            "invalid method token",
            "GE(T /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
            Plain(400),
        ),
        junk(
            "unknown method",
            format!("FOO /api/v1/reservations HTTP/1.1\r\nhost: x\r\n{auth}\r\n"),
            Problem(405, "method_not_allowed"),
        ),
        junk(
            "connect method",
            "CONNECT x:443 HTTP/1.1\r\nhost: x:443\r\n\r\n",
            Plain(405),
        ),
        junk(
            "tls hello on plain http",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            Plain(400),
        ),
        junk(
            "http/2 preface on http/1",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            Plain(400),
        ),
        junk(
            "absolute-form target to an ops route",
            format!(
                "GET http://evil.example/api/v1/admin/reconcile HTTP/1.1\r\nhost: evil.example\r\n{auth}\r\n"
            ),
            Problem(403, "forbidden"),
        ),
        junk(
            "path traversal to admin",
            format!(
                "PUT /api/v1/../admin/products/HOT HTTP/1.1\r\nhost: x\r\n{auth}content-length: 0\r\n\r\n"
            ),
            Problem(400, "invalid_path"),
        ),
        junk(
            "dot segments to internal",
            get("/api/v1/orders/../../internal/settlements"),
            Problem(400, "invalid_path"),
        ),
        junk(
            "encoded dot segments",
            get("/api/v1/orders/%2e%2e/admin/reconcile"),
            Problem(400, "invalid_path"),
        ),
        junk(
            "encoded slash",
            get("/api/v1/admin%2Freconcile"),
            Problem(400, "invalid_path"),
        ),
        junk(
            "encoded backslash",
            get("/api/v1/orders/..%5cadmin"),
            Problem(400, "invalid_path"),
        ),
        junk(
            "empty segment",
            get("/api/v1//admin/reconcile"),
            Problem(400, "invalid_path"),
        ),
        junk(
            "nul in path",
            get("/api/v1/stock/HOT%00"),
            Problem(400, "invalid_path"),
        ),
        junk(
            "duplicate content-length",
            reserve(
                "content-length: 22\r\ncontent-length: 23\r\n",
                r#"{"sku":"HOT","qty":1} "#,
            ),
            Plain(400),
        ),
        junk(
            "negative content-length",
            reserve("content-length: -1\r\n", ""),
            Plain(400),
        ),
        junk(
            "te not chunked last",
            reserve("transfer-encoding: chunked, identity\r\n", "0\r\n\r\n"),
            Plain(400),
        ),
        junk(
            "te on http/1.0",
            format!(
                "POST /api/v1/reservations HTTP/1.0\r\nhost: x\r\n{auth}transfer-encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            Plain(400),
        ),
        junk(
            "bad chunk size",
            reserve("transfer-encoding: chunked\r\n", "zz\r\n{}\r\n0\r\n\r\n"),
            Problem(400, "invalid_request"),
        ),
        junk(
            "header name with space",
            "GET /healthz HTTP/1.1\r\nhost: x\r\nx bad: 1\r\n\r\n",
            Plain(400),
        ),
        junk(
            "obs-fold header",
            "GET /healthz HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n folded\r\n\r\n",
            Plain(400),
        ),
        junk(
            "10,000 headers",
            format!("GET /api/v1/stock/HOT HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n"),
            Plain(400),
        ),
        junk(
            "200 headers",
            format!("GET /api/v1/stock/HOT HTTP/1.1\r\nhost: x\r\n{some_headers}\r\n"),
            Problem(431, "headers_too_large"),
        ),
        junk(
            "200 KB header value",
            format!(
                "GET /api/v1/stock/HOT HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
                "a".repeat(200 * 1024)
            ),
            Problem(431, "headers_too_large"),
        ),
        junk(
            "2 MB header value",
            format!(
                "GET /api/v1/stock/HOT HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
                "a".repeat(2 * 1024 * 1024)
            ),
            Plain(400),
        ),
        junk(
            "10 MB declared body",
            reserve(&format!("content-length: {ten_mb}\r\n"), ""),
            Problem(413, "payload_too_large"),
        ),
        junk(
            "10 MB chunked body",
            chunked_10mb,
            Problem(413, "payload_too_large"),
        ),
    ]
}

/// One raw response: status, content type, body.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    /// How many responses came back on the connection (smuggling: must be one).
    pub responses: usize,
}

/// Sends `request` on a new connection and reads until the server closes it or `wait` passes.
/// Writing happens on its own thread so that an early answer (413 before a 10 MB body is
/// sent) is read while the client is still writing, before the server resets the connection.
pub fn exchange(addr: &str, request: Vec<u8>, wait: Duration) -> RawAnswer {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        // The server may close mid-body: a failed write is part of the exchange.
        let _ = writer.write_all(&request);
    });
    let mut reader = stream;
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let _ = reader.shutdown(std::net::Shutdown::Both);
    let _ = writing.join();
    parse(&answer)
}

fn parse(raw: &[u8]) -> RawAnswer {
    let text = String::from_utf8_lossy(raw).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    RawAnswer {
        status,
        content_type,
        body: body.to_owned(),
        responses: text.matches("HTTP/1.1 ").count(),
    }
}

/// Checks a raw answer against what the case must get.
pub fn check(name: &str, got: &RawAnswer, answer: Answer) {
    match answer {
        Answer::Problem(status, code) => {
            assert_eq!(got.status, status, "{name}: {got:?}");
            assert_eq!(
                got.content_type, "application/problem+json",
                "{name}: {got:?}"
            );
            let problem: serde_json::Value = serde_json::from_str(&got.body)
                .unwrap_or_else(|e| panic!("{name}: body is not json ({e}): {got:?}"));
            assert_eq!(problem["code"], code, "{name}: {got:?}");
            for field in ["type", "title", "status", "detail", "request_id"] {
                assert!(
                    problem.get(field).is_some(),
                    "{name}: no {field} in {got:?}"
                );
            }
        }
        Answer::Plain(status) => assert_eq!(got.status, status, "{name}: {got:?}"),
    }
}

async fn run(addr: &str, junk: Junk) -> RawAnswer {
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || exchange(&addr, junk.request, Duration::from_secs(5)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_junk_on_the_real_stack_changes_nothing() {
    let world = world::start(|_| {}).await;
    world.add_product("HOT", 10, 3).await;
    let alice = world.idp.token("alice");
    world.order(&alice, "HOT", 1).await;
    world.hold(&alice, "HOT", 1).await;
    let ops = world.idp.ops_token("olga");
    for case in cases(&alice, &ops) {
        let (name, answer) = (case.name, case.answer);
        let before = world.state().await;
        let got = run(&world.addr(), case).await;
        check(name, &got, answer);
        assert_eq!(world.state().await, before, "{name} changed the state");
        println!(
            "abuse case http: {name}: {} {answer:?} and nothing changed",
            got.status
        );
    }
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_junk_never_reaches_the_store_or_the_upstream() {
    let gw = testkit::start_gateway().await;
    let alice = gw.idp.token("alice");
    let ops = gw.idp.ops_token("olga");
    let addr = gw.base.trim_start_matches("http://").to_owned();
    for case in cases(&alice, &ops) {
        let name = case.name;
        let answer = case.answer;
        let (calls, hits) = (gw.counting.calls(), gw.mock.hits());
        let got = run(&addr, case).await;
        check(name, &got, answer);
        assert_eq!(gw.counting.calls(), calls, "{name} reached the store");
        assert_eq!(gw.mock.hits(), hits, "{name} reached the upstream");
    }
}

/// Content-Length and Transfer-Encoding together: the body is framed by the chunked encoding
/// alone (RFC 9112 §6.1) and the connection is closed after the answer, so bytes hidden after
/// the chunked body (a smuggled request that would release alice's hold) never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_smuggled_behind_content_length_and_chunked_never_runs() {
    let world = world::start(|_| {}).await;
    world.add_product("HOT", 10, 3).await;
    let alice = world.idp.token("alice");
    let (hold_id, _) = world.hold(&alice, "HOT", 1).await;
    let smuggled = format!(
        "DELETE /api/v1/reservations/{hold_id} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {alice}\r\n\r\n"
    );
    let chunked_part = "0\r\n\r\n";
    for (name, path) in [
        ("edge route", "/api/v1/reservations"),
        ("proxied route", "/api/v1/orders/o1/cancel"),
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {alice}\r\nidempotency-key: smuggle\r\ncontent-type: application/json\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n{chunked_part}{smuggled}",
            chunked_part.len() + smuggled.len()
        );
        let before = world.state().await;
        let got = run(&world.addr(), junk("smuggling", request, Answer::Plain(0))).await;
        assert_eq!(got.responses, 1, "{name}: {got:?}");
        assert!((400..500).contains(&got.status), "{name}: {got:?}");
        assert_eq!(
            got.content_type, "application/problem+json",
            "{name}: {got:?}"
        );
        assert_eq!(
            world.state().await,
            before,
            "{name}: the smuggled request ran"
        );
        println!(
            "abuse case http: cl+te smuggling on {name}: one {} answer, smuggled request never ran",
            got.status
        );
    }
    world.shutdown().await;
}
