//! The client of the settlement service's `POST /internal/settlements` (docs/internal-api.md),
//! over a pooled keep-alive HTTP client. Its one job is to tell the three cases apart that
//! decide what happens to the hold: committed, certainly not committed, and unknown (the
//! request was sent and the answer did not come back in time). Every request carries the
//! gateway's assertion for the buyer ([`crate::service_auth`]): settlement serves no one else.

use std::sync::Arc;
use std::time::Duration;

use backend_adapters::telemetry::{KeyValue, Span, SpanKind, Telemetry};
use bytes::Bytes;
use reservation_core::assertion::{AssertionSigner, Identity};
use reservation_core::wire::{codes, headers, paths};
use serde::Deserialize;

use crate::conn_age::RenewingClient;

/// What the settlement call came to.
#[derive(Debug)]
pub enum Settled {
    /// 201 (committed now) or 200 (committed earlier, a retry): the order body.
    Committed { created: bool, order: Bytes },
    /// Settlement refused the request for good or for now; nothing was committed.
    Refused { status: u16, code: String },
    /// Nothing was committed and it may be retried (connection refused, 503).
    Unavailable { reason: String },
    /// The request may have been committed: a timeout or broken answer after sending, or an
    /// unexpected server error. The hold stays `confirming` for a retry or the reconciler.
    Ambiguous { reason: String },
}

#[derive(Deserialize)]
struct ProblemCode {
    #[serde(default)]
    code: String,
}

/// A pooled client for one settlement upstream; its connections are renewed at
/// `upstream.max_connection_age_secs` ([`crate::conn_age`]).
pub struct SettlementClient {
    http: RenewingClient,
    assertions: Arc<AssertionSigner>,
    base: String,
    /// Each call is a client span whose `traceparent` goes with the request.
    telemetry: Telemetry,
}

impl SettlementClient {
    /// `host_port` is the upstream's `host:port`; `timeout` bounds the whole call; no
    /// connection is used once it is `max_age` old. The error is reqwest's, building the
    /// client.
    pub fn new(
        host_port: &str,
        assertions: Arc<AssertionSigner>,
        connect_timeout: Duration,
        timeout: Duration,
        pool_idle: Duration,
        max_age: Duration,
    ) -> Result<Self, reqwest::Error> {
        let builder = move || {
            reqwest::Client::builder()
                .connect_timeout(connect_timeout)
                .timeout(timeout)
                .pool_idle_timeout(pool_idle)
                .tcp_nodelay(true)
        };
        let http = RenewingClient::new(builder, max_age)?;
        Ok(SettlementClient {
            http,
            assertions,
            base: format!("http://{host_port}"),
            telemetry: Telemetry::off(),
        })
    }

    /// Traces each call as a child of the request's span (`telemetry` on).
    pub fn with_telemetry(self, telemetry: Telemetry) -> Self {
        SettlementClient { telemetry, ..self }
    }

    /// Sends the reservation token with the request id, asserted for `buyer`; `parent` is
    /// the request's span.
    pub async fn settle(
        &self,
        token: &str,
        request_id: &str,
        buyer: &Identity,
        parent: &Span,
    ) -> Settled {
        self.traced(paths::SETTLEMENTS, token, request_id, buyer, parent)
            .await
    }

    /// Asks settlement to decide the fate of a reservation whose hold the store no longer has
    /// (`POST /internal/settlements/fate`): `Committed { created: false }` with the order, or
    /// `Refused { 410, "reservation_released" }` once SQL claimed it released.
    pub async fn decide_fate(
        &self,
        token: &str,
        request_id: &str,
        buyer: &Identity,
        parent: &Span,
    ) -> Settled {
        self.traced(paths::SETTLEMENT_FATE, token, request_id, buyer, parent)
            .await
    }

    /// [`SettlementClient::post`] in a client span `settlement call` (when tracing is on).
    async fn traced(
        &self,
        path: &'static str,
        token: &str,
        request_id: &str,
        buyer: &Identity,
        parent: &Span,
    ) -> Settled {
        if !self.telemetry.is_on() {
            return self
                .post(path, token, request_id, buyer, &Span::none())
                .await;
        }
        let span = self.telemetry.span(
            "settlement call",
            SpanKind::Client,
            &parent.context(),
            vec![
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("url.path", path),
            ],
        );
        let settled = self.post(path, token, request_id, buyer, &span).await;
        match &settled {
            Settled::Committed { created, .. } => {
                span.set_http_status(if *created { 201 } else { 200 })
            }
            Settled::Refused { status, .. } => span.set_http_status(*status),
            Settled::Unavailable { reason } | Settled::Ambiguous { reason } => {
                span.set_error(reason)
            }
        }
        span.end();
        settled
    }

    async fn post(
        &self,
        path: &str,
        token: &str,
        request_id: &str,
        buyer: &Identity,
        span: &Span,
    ) -> Settled {
        let body = serde_json::json!({ "reservation_token": token }).to_string();
        let http = self.http.get();
        let mut builder = http.post(format!("{}{path}", self.base));
        for (name, value) in span.headers() {
            builder = builder.header(name, value);
        }
        let built = builder
            .header(headers::REQUEST_ID, request_id)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .build();
        // Nothing was sent yet: a request that could not be built or signed is "not committed".
        let mut request = match built {
            Ok(request) => request,
            Err(e) => {
                return Settled::Unavailable {
                    reason: e.to_string(),
                };
            }
        };
        if let Err(e) = crate::service_auth::sign_request(&self.assertions, &mut request, buyer) {
            return Settled::Unavailable {
                reason: e.with_cause(),
            };
        }
        let sent = http.execute(request).await;
        let response = match sent {
            Ok(response) => response,
            // A connect failure means no byte of the request reached settlement.
            Err(e) if e.is_connect() => {
                return Settled::Unavailable {
                    reason: e.to_string(),
                };
            }
            Err(e) => {
                return Settled::Ambiguous {
                    reason: e.to_string(),
                };
            }
        };
        let status = response.status().as_u16();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) if status == 200 || status == 201 => {
                // The order committed but its body was lost: ambiguous for the buyer's answer,
                // not for the hold (a retry gets the order back with 200).
                return Settled::Ambiguous {
                    reason: e.to_string(),
                };
            }
            Err(_) => Bytes::new(),
        };
        match status {
            200 | 201 => Settled::Committed {
                created: status == 201,
                order: body,
            },
            503 => Settled::Unavailable {
                reason: "settlement answered 503".into(),
            },
            400..=499 => {
                let code = serde_json::from_slice::<ProblemCode>(&body)
                    .map(|p| p.code)
                    .unwrap_or_default();
                // Settlement did not take this gateway for the gateway (a key it does not
                // publish: a rotation done in the wrong order). It refused before any handler
                // ran, so nothing was committed; the buyer may retry once the keys agree.
                if status == 401 && code.starts_with(codes::SERVICE_AUTH_PREFIX) {
                    tracing::error!(%code, "settlement refused the gateway's service assertion: check settlement_auth keys");
                    return Settled::Unavailable {
                        reason: format!("settlement refused the service assertion ({code})"),
                    };
                }
                Settled::Refused { status, code }
            }
            // A 500 may come from a commit whose answer failed: it is not proof of nothing.
            _ => Settled::Ambiguous {
                reason: format!("settlement answered {status}"),
            },
        }
    }
}
