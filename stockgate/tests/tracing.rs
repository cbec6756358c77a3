//! Distributed tracing over the wire: the services export OTLP/HTTP protobuf to a receiver
//! this test starts on loopback ([`testkit::otlp`]), which decodes it as a collector does.
//!
//! - The real stack (gateway and settlement on Redis and PostgreSQL), sampling 1.0: one
//!   reserve and one confirm that carries a client's `traceparent`. The confirm's gateway span
//!   continues the client's trace; the settlement's request span is a child of the gateway's
//!   `settlement call` span in the same trace; the group-commit batch span links to that
//!   request span; the Redis calls are children of their request's span.
//! - The gateway alone in front of the mock settlement: with tracing off no `traceparent`
//!   reaches the upstream (not even the client's); with sampling 0.0 nothing is exported
//!   for a new trace, while a client's sampled trace is still followed.

use serde_json::json;
use testkit::otlp::{OtlpReceiver, ReceivedSpan};
use testkit::{RealStack, body, fresh_key};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    hit: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| hit(s)).collect();
    assert_eq!(found.len(), 1, "one {what} expected in {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_is_one_trace_across_gateway_and_settlement() {
    let receiver = OtlpReceiver::start().await;
    let world = RealStack::start("trace", |config| {
        config.gateway.telemetry.otlp_endpoint = Some(receiver.endpoint());
        config.gateway.telemetry.sampling_ratio = 1.0;
    })
    .await;
    world.add_product("HOT", 10, 3).await;
    let alice = world.idp.token("alice");
    let (status, created) = world.reserve(&alice, "k1", "HOT", 1).await;
    assert_eq!(status, 201, "{created}");
    let response = world
        .http
        .post(world.url("/api/v1/orders"))
        .bearer_auth(&alice)
        .header("idempotency-key", fresh_key())
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .header("tracestate", "shop=storefront")
        .header("x-request-id", "confirm-traced-1")
        .json(&json!({"reservation_token": created["token"]}))
        .send()
        .await
        .unwrap();
    let (status, order) = body(response).await;
    assert_eq!(status, 201, "{order}");

    world.all().edge.telemetry.flush().await;
    world.all().settlement.telemetry.flush().await;
    let spans = receiver
        .wait_for(|spans| {
            spans.iter().any(|s| s.name == "settlement batch")
                && spans.iter().filter(|s| s.name == "gateway request").count() >= 3
        })
        .await;

    // The confirm continues the client's trace, under the client's span.
    let confirm = one(&spans, "confirm span", |s| {
        s.name == "gateway request" && s.attribute("http.route") == Some("orders_confirm")
    });
    assert_eq!(confirm.service, "stockgate-gateway");
    assert_eq!(confirm.kind, SERVER);
    assert_eq!(confirm.trace_id, CLIENT_TRACE);
    assert_eq!(confirm.parent_span_id, CLIENT_SPAN);
    assert_eq!(confirm.attribute("request_id"), Some("confirm-traced-1"));
    assert_eq!(confirm.attribute("http.response.status_code"), Some("201"));

    // Its Redis calls and its settlement call are its children.
    for name in [
        "redis begin_confirm",
        "redis finish_confirm",
        "settlement call",
    ] {
        let child = one(&spans, name, |s| s.name == name);
        assert_eq!(child.kind, CLIENT, "{name}");
        assert_eq!(child.trace_id, CLIENT_TRACE, "{name}");
        assert_eq!(child.parent_span_id, confirm.span_id, "{name}");
    }
    let call = one(&spans, "settlement call", |s| s.name == "settlement call");

    // The settlement's request span: same trace, the gateway's call as its parent.
    let settle = one(&spans, "settlement request of the confirm", |s| {
        s.name == "settlement request" && s.attribute("url.path") == Some("/internal/settlements")
    });
    assert_eq!(settle.service, "stockgate-settlement");
    assert_eq!(settle.kind, SERVER);
    assert_eq!(settle.trace_id, CLIENT_TRACE);
    assert_eq!(settle.parent_span_id, call.span_id);
    assert_eq!(settle.attribute("request_id"), Some("confirm-traced-1"));

    // The batch that carried it links to it; the SQL transaction is the batch's child.
    let batch = one(&spans, "batch span", |s| s.name == "settlement batch");
    assert_eq!(batch.service, "stockgate-settlement");
    assert!(
        batch
            .links
            .contains(&(settle.trace_id.clone(), settle.span_id.clone())),
        "{batch:#?} does not link to {settle:#?}"
    );
    let sql = one(&spans, "sql span", |s| s.name == "sql settle_batch");
    assert_eq!(sql.parent_span_id, batch.span_id);
    assert_eq!(sql.trace_id, batch.trace_id);
    assert_eq!(sql.attribute("db.system.name"), Some("postgresql"));

    // The reserve came without a traceparent: a trace of its own starts at the edge.
    let reserve = one(&spans, "reserve span", |s| {
        s.name == "gateway request" && s.attribute("http.route") == Some("reservations_create")
    });
    assert!(reserve.parent_span_id.is_empty(), "{reserve:#?}");
    assert_ne!(reserve.trace_id, CLIENT_TRACE);
    let script = one(&spans, "redis reserve", |s| s.name == "redis reserve");
    assert_eq!(script.parent_span_id, reserve.span_id);

    // Refusals name the trace: one of the gateway's own, and one of settlement's passed on.
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let response = world
        .http
        .post(world.url("/api/v1/orders"))
        .bearer_auth(&alice)
        .header("idempotency-key", fresh_key())
        .header("traceparent", &traceparent)
        .json(&json!({"reservation_token": "not-a-token"}))
        .send()
        .await
        .unwrap();
    let (status, problem) = body(response).await;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem["trace_id"], CLIENT_TRACE, "{problem}");
    let response = world
        .http
        .get(world.url("/api/v1/orders/ord_unknown"))
        .bearer_auth(&alice)
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    let (status, problem) = body(response).await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem["trace_id"], CLIENT_TRACE, "{problem}");

    print_trace(&spans, CLIENT_TRACE, batch);
    world.shutdown().await;
}

/// The confirm's trace as docs/tracing.md shows it (run with `--nocapture`).
fn print_trace(spans: &[ReceivedSpan], trace_id: &str, batch: &ReceivedSpan) {
    let mut trace: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == trace_id || s.trace_id == batch.trace_id)
        .collect();
    trace.sort_by_key(|s| s.start_unix_nano);
    let origin = trace.first().map_or(0, |s| s.start_unix_nano);
    for span in trace {
        println!(
            "trace {} span {} parent {:16} {:22} {:24} +{:>7.3} ms {:>7.3} ms links {:?}",
            &span.trace_id[..8],
            span.span_id,
            span.parent_span_id,
            span.service,
            span.name,
            (span.start_unix_nano - origin) as f64 / 1e6,
            span.duration().as_secs_f64() * 1e3,
            span.links
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tracing_off_no_traceparent_goes_upstream() {
    let gw = testkit::start_gateway().await;
    assert!(!gw.state.telemetry.is_on());
    let alice = gw.idp.token("alice");
    let created: serde_json::Value = gw
        .reserve(&alice, "k1", "HOT", 1)
        .await
        .json()
        .await
        .unwrap();
    let reservation_token = created["token"].as_str().unwrap();
    let response = gw
        .http
        .post(gw.url("/api/v1/orders"))
        .bearer_auth(&alice)
        .header("idempotency-key", "confirm-off")
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({"reservation_token": reservation_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(gw.mock.last_settlement_header("x-request-id").is_some());
    assert_eq!(gw.mock.last_settlement_header("traceparent"), None);

    // A proxied request: the client's trace headers are not passed on either.
    let response = gw
        .http
        .get(gw.url("/api/v1/orders"))
        .bearer_auth(&alice)
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .header("tracestate", "shop=storefront")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(gw.mock.last_header("traceparent"), None);
    assert_eq!(gw.mock.last_header("tracestate"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_zero_exports_nothing_new_but_follows_a_sampled_client() {
    let receiver = OtlpReceiver::start().await;
    let gw = testkit::start_gateway_with(|config| {
        config.telemetry.otlp_endpoint = Some(receiver.endpoint());
        config.telemetry.sampling_ratio = 0.0;
    })
    .await;
    let alice = gw.idp.token("alice");
    let created: serde_json::Value = gw
        .reserve(&alice, "k1", "HOT", 1)
        .await
        .json()
        .await
        .unwrap();
    let response = gw.confirm(&alice, created["token"].as_str().unwrap()).await;
    assert_eq!(response.status(), 201);
    // Settlement still gets a parent, marked not sampled (flags 00), so it records nothing.
    let sent = gw
        .mock
        .last_settlement_header("traceparent")
        .expect("a traceparent upstream");
    assert!(sent.starts_with("00-") && sent.ends_with("-00"), "{sent}");
    gw.state.telemetry.flush().await;
    assert_eq!(receiver.posts(), 0, "{:#?}", receiver.spans());

    // A client's sampled trace is recorded whatever the ratio (parent-based).
    let created: serde_json::Value = gw
        .reserve(&alice, "k2", "HOT", 1)
        .await
        .json()
        .await
        .unwrap();
    let response = gw
        .http
        .post(gw.url("/api/v1/orders"))
        .bearer_auth(&alice)
        .header("idempotency-key", "confirm-sampled")
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({"reservation_token": created["token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let sent = gw
        .mock
        .last_settlement_header("traceparent")
        .expect("a traceparent upstream");
    assert!(
        sent.starts_with(&format!("00-{CLIENT_TRACE}-")) && sent.ends_with("-01"),
        "{sent}"
    );
    assert!(
        !sent.contains(CLIENT_SPAN),
        "the parent is the gateway's span: {sent}"
    );
    gw.state.telemetry.flush().await;
    let spans = receiver
        .wait_for(|spans| spans.iter().any(|s| s.name == "settlement call"))
        .await;
    assert!(
        spans.iter().all(|s| s.trace_id == CLIENT_TRACE),
        "{spans:#?}"
    );
    let call = one(&spans, "settlement call", |s| s.name == "settlement call");
    assert!(sent.contains(&call.span_id), "{sent} names {call:#?}");
}
