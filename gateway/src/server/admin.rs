//! The admin listener: `GET /healthz` (liveness), `GET /admin/health` (the dependencies' last
//! check, for ops: `crate::health`), `GET /metrics` (Prometheus text) and `POST
//! /admin/reload`, which re-reads the rate-limit rules file (DESIGN.md §5): 200 with the number
//! of rules in force, or 422 naming the error while the last good rules stay. Bind it to a
//! private address.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use reservation_core::wire::{PROBLEM_CONTENT_TYPE, headers, paths};

use crate::health::Health;
use crate::metrics::Metrics;
use crate::problem::Problem;
use crate::ratelimit::RateLimiter;

pub struct AdminApp {
    metrics: Arc<Metrics>,
    ratelimit: Arc<RateLimiter>,
    health: Arc<Health>,
}

impl AdminApp {
    pub fn new(metrics: Arc<Metrics>, ratelimit: Arc<RateLimiter>, health: Arc<Health>) -> Self {
        AdminApp {
            metrics,
            ratelimit,
            health,
        }
    }

    /// `GET /admin/health`: always 200 (a report, not a probe: pointing a readiness probe
    /// here would couple every pod to its dependencies again); `status` is `ok` when every
    /// checked dependency is up, `degraded` when one is down, `unchecked` before the first
    /// check.
    fn health_report(&self) -> Response<Vec<u8>> {
        let snapshot = self.health.snapshot();
        let status = if snapshot.checked_at_ms == 0 {
            "unchecked"
        } else if snapshot.dependencies.values().all(|d| d.up) {
            "ok"
        } else {
            "degraded"
        };
        let body = serde_json::json!({
            "status": status,
            "draining": self.health.is_draining(),
            "checked_at": (snapshot.checked_at_ms > 0)
                .then(|| crate::edge::respond::rfc3339_ms(snapshot.checked_at_ms)),
            "dependencies": snapshot.dependencies,
        });
        respond(200, "application/json", body.to_string().into_bytes())
    }
}

fn new_request_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    respond_with_id(status, content_type, body, &new_request_id())
}

fn respond_with_id(
    status: u16,
    content_type: &str,
    body: Vec<u8>,
    request_id: &str,
) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header(headers::REQUEST_ID, request_id)
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

/// 405 with the `Allow` header RFC 9110 §15.5.6 requires.
fn method_not_allowed(allow: &'static str) -> Response<Vec<u8>> {
    let mut response = problem(Problem::method_not_allowed());
    response
        .headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    response
}

fn problem(problem: Problem) -> Response<Vec<u8>> {
    let request_id = new_request_id();
    let body = problem.to_json(Some(&request_id));
    respond_with_id(problem.status, PROBLEM_CONTENT_TYPE, body, &request_id)
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        match (method, session.req_header().uri.path()) {
            // Liveness, what the kubelet asks (deploy/k8s/base/gateway.yaml): 200 while the
            // process serves. Here and not on the public listener because this listener has
            // threads of its own: a sale saturating the public one must not fail the probe and
            // restart pods under load.
            (Method::GET, paths::HEALTHZ) => {
                respond(200, "application/json", br#"{"status":"ok"}"#.to_vec())
            }
            (Method::GET, "/admin/health") => self.health_report(),
            (Method::GET, paths::METRICS) => {
                respond(200, "text/plain; version=0.0.4", self.metrics.render())
            }
            (Method::POST, "/admin/reload") => match self.ratelimit.reload() {
                Ok(rules) => respond(
                    200,
                    "application/json",
                    serde_json::json!({"reloaded": true, "rules": rules})
                        .to_string()
                        .into_bytes(),
                ),
                Err(error) => problem(Problem::new(422, "invalid_rules", error.to_string())),
            },
            (_, paths::HEALTHZ | "/admin/health" | paths::METRICS) => method_not_allowed("GET"),
            (_, "/admin/reload") => method_not_allowed("POST"),
            _ => problem(Problem::not_found()),
        }
    }
}
