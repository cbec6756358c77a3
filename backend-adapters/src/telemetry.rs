//! Distributed tracing: spans exported over OTLP (HTTP/protobuf) to a collector, W3C
//! `traceparent`/`tracestate` taken from and given to HTTP requests.
//!
//! Each service holds its own [`Telemetry`] (its own tracer provider and `service.name`)
//! instead of a process-wide subscriber: `stockgate all-in-one` and the tests run the gateway
//! and settlement in one process, and each must show up as its own service. Off (no
//! `otlp_endpoint`), a [`Telemetry`] is `None` inside and every call is one branch: no span,
//! no allocation, no header.
//!
//! Sampling is parent-based: a request whose `traceparent` says "sampled" is recorded
//! whatever `sampling_ratio` is; one without a sampled parent is recorded with probability
//! `sampling_ratio` (decided on the trace id, so every service decides the same).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Link, SpanContext, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracer, SdkTracerProvider};
use serde::Deserialize;
use thiserror::Error;

pub use opentelemetry::KeyValue;
pub use opentelemetry::trace::{SpanContext as SpanRef, SpanKind};

/// The `[telemetry]` table: where spans go and how many traces are kept.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP receiver, `http://host:4318` (`/v1/traces` is appended). Tracing is off
    /// without it. Environment: `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// Share of traces started here that are recorded, 0.0 to 1.0; a client's sampled
    /// `traceparent` is always followed. Environment: `OTEL_TRACES_SAMPLER_ARG`.
    pub sampling_ratio: f64,
    /// `service.name` of the gateway's spans.
    pub gateway_service_name: String,
    /// `service.name` of the settlement service's spans.
    pub settlement_service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            sampling_ratio: 1.0,
            gateway_service_name: "stockgate-gateway".into(),
            settlement_service_name: "stockgate-settlement".into(),
        }
    }
}

// `sampling_ratio` is never NaN once validated, so equality is an equivalence.
impl Eq for TelemetryConfig {}

impl TelemetryConfig {
    /// The first rule broken: the field (under `telemetry.`) and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(endpoint) = &self.otlp_endpoint {
            let rest = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"));
            match rest {
                Some(host) if !host.is_empty() && !host.starts_with('/') => {}
                _ => {
                    return Err((
                        "telemetry.otlp_endpoint",
                        format!("= {endpoint:?} is not an http:// or https:// URL"),
                    ));
                }
            }
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err((
                "telemetry.sampling_ratio",
                format!("= {} is not between 0.0 and 1.0", self.sampling_ratio),
            ));
        }
        for (field, name) in [
            ("telemetry.gateway_service_name", &self.gateway_service_name),
            (
                "telemetry.settlement_service_name",
                &self.settlement_service_name,
            ),
        ] {
            if name.trim().is_empty() {
                return Err((field, "must not be empty".into()));
            }
        }
        Ok(())
    }

    /// `{otlp_endpoint}/v1/traces`, when tracing is on.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref()?;
        Some(format!("{}/v1/traces", base.trim_end_matches('/')))
    }
}

#[derive(Debug, Error)]
pub enum TelemetryError {
    #[error("the OTLP exporter for {url}: {message}")]
    Exporter { url: String, message: String },
}

/// One service's tracer; cheap to clone. `Telemetry::default()` is off.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("on", &self.is_on())
            .finish()
    }
}

impl Telemetry {
    pub fn off() -> Self {
        Telemetry::default()
    }

    /// The tracer of `service_name` per `config`; off when `config` has no endpoint. Must run
    /// inside a Tokio runtime: the batch exporter is a task of it.
    pub fn start(config: &TelemetryConfig, service_name: &str) -> Result<Self, TelemetryError> {
        let Some(url) = config.traces_url() else {
            return Ok(Telemetry::off());
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TelemetryError::Exporter {
                url: url.clone(),
                message: e.to_string(),
            })?;
        // Spans leave at most every second, in batches; a full queue drops spans (counted by
        // the SDK) instead of slowing requests.
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_secs(1))
            .with_max_queue_size(8192)
            .build();
        let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_batch_config(batch)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling_ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service_name.to_owned())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("stockgate");
        tracing::info!(%url, service = service_name, ratio = config.sampling_ratio, "exporting traces");
        Ok(Telemetry {
            inner: Some(Arc::new(Inner { provider, tracer })),
        })
    }

    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// The trace context a request carries in `traceparent`/`tracestate`; empty (a new
    /// trace) without them, with a malformed one, or when tracing is off.
    pub fn extract(&self, headers: &http::HeaderMap) -> Context {
        if self.inner.is_none() {
            return Context::new();
        }
        TraceContextPropagator::new().extract(&HeaderExtractor(headers))
    }

    /// A span `name` under `parent` (a new trace when `parent` has none); a no-op when off.
    pub fn span(
        &self,
        name: &'static str,
        kind: SpanKind,
        parent: &Context,
        attributes: Vec<KeyValue>,
    ) -> Span {
        self.span_with_links(name, kind, parent, attributes, Vec::new())
    }

    /// [`Telemetry::span`] with links to other spans (a batch to the requests it carries).
    pub fn span_with_links(
        &self,
        name: &'static str,
        kind: SpanKind,
        parent: &Context,
        attributes: Vec<KeyValue>,
        links: Vec<SpanContext>,
    ) -> Span {
        let Some(inner) = &self.inner else {
            return Span(None);
        };
        let links = links
            .into_iter()
            .filter(SpanContext::is_valid)
            .map(Link::with_context)
            .collect();
        let span = inner
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .with_links(links)
            .start_with_context(&inner.tracer, parent);
        Span(Some(parent.with_span(span)))
    }

    /// Sends the spans ended so far (tests, shutdown). Blocks a thread of its own: the
    /// SDK's flush waits for the exporter task.
    pub async fn flush(&self) {
        if let Some(inner) = self.inner.clone() {
            let flushed = tokio::task::spawn_blocking(move || inner.provider.force_flush()).await;
            if let Ok(Err(error)) = flushed {
                tracing::warn!(%error, "flushing spans failed");
            }
        }
    }

    /// Flushes and stops the exporter.
    /// Sends the spans still queued, for at most [`SHUTDOWN_WAIT`]: the SDK's own shutdown
    /// ignores its timeout and would wait out every queued export against a collector that
    /// does not answer, past the pod's termination grace period.
    pub async fn shutdown(&self) {
        if let Some(inner) = self.inner.clone() {
            let stopping = tokio::task::spawn_blocking(move || inner.provider.shutdown());
            match tokio::time::timeout(SHUTDOWN_WAIT, stopping).await {
                Ok(Ok(Err(error))) => tracing::debug!(%error, "stopping the span exporter"),
                Err(_) => {
                    tracing::warn!(wait = ?SHUTDOWN_WAIT, "span exporter not stopped in time; queued spans dropped")
                }
                _ => {}
            }
        }
    }
}

/// A started span (or nothing, when tracing is off); ended by [`Span::end`] or on drop.
#[derive(Clone, Debug, Default)]
pub struct Span(Option<Context>);

impl Span {
    pub fn none() -> Self {
        Span(None)
    }

    /// The context with this span, the parent of its children; empty when off.
    pub fn context(&self) -> Context {
        self.0.clone().unwrap_or_default()
    }

    pub fn span_context(&self) -> Option<SpanContext> {
        let cx = self.0.as_ref()?;
        Some(cx.span().span_context().clone())
    }

    /// The trace id, 32 hex digits, when this span is recorded (tracing on and the trace
    /// sampled): an id that can be looked up in the tracing backend, for logs and problem
    /// bodies.
    pub fn trace_id(&self) -> Option<String> {
        let context = self.span_context()?;
        (context.is_valid() && context.is_sampled()).then(|| context.trace_id().to_string())
    }

    pub fn set_attribute(&self, attribute: KeyValue) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(attribute);
        }
    }

    /// The HTTP status of the answer; 5xx marks the span as an error.
    pub fn set_http_status(&self, status: u16) {
        if let Some(cx) = &self.0 {
            let span = cx.span();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                span.set_status(Status::error(format!("HTTP {status}")));
            }
        }
    }

    /// Marks the span failed with `message`.
    pub fn set_error(&self, message: impl std::fmt::Display) {
        if let Some(cx) = &self.0 {
            cx.span().set_status(Status::error(message.to_string()));
        }
    }

    /// `traceparent` (and `tracestate` when there is one) naming this span as the parent of
    /// the request they go on; none when off.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let Some(cx) = &self.0 else {
            return Vec::new();
        };
        let mut headers = HeaderInjector(Vec::new());
        TraceContextPropagator::new().inject_context(cx, &mut headers);
        headers.0
    }

    pub fn end(self) {
        if let Some(cx) = self.0 {
            cx.span().end();
        }
    }
}

/// How long [`Telemetry::shutdown`] waits for the queued spans to go out.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // A caller's `tracestate` is not taken: its size is the caller's choice (the W3C cap
        // of 32 entries is not enforced by the SDK) and every span would carry a copy of it,
        // and it would be passed on upstream. Only `traceparent` is read.
        if key.eq_ignore_ascii_case("tracestate") {
            return None;
        }
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector(Vec<(&'static str, String)>);

impl Injector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        // The W3C propagator sets only these two.
        let name = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        if !value.is_empty() {
            self.0.push((name, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let bad_url = TelemetryConfig {
            otlp_endpoint: Some("collector:4318".into()),
            ..TelemetryConfig::default()
        };
        assert_eq!(bad_url.validate().unwrap_err().0, "telemetry.otlp_endpoint");
        let bad_ratio = TelemetryConfig {
            sampling_ratio: 1.5,
            ..TelemetryConfig::default()
        };
        assert_eq!(
            bad_ratio.validate().unwrap_err().0,
            "telemetry.sampling_ratio"
        );
        let nan = TelemetryConfig {
            sampling_ratio: f64::NAN,
            ..TelemetryConfig::default()
        };
        assert_eq!(nan.validate().unwrap_err().0, "telemetry.sampling_ratio");
        let good = TelemetryConfig {
            otlp_endpoint: Some("http://otel-collector:4318/".into()),
            ..TelemetryConfig::default()
        };
        assert!(good.validate().is_ok());
        assert_eq!(
            good.traces_url().as_deref(),
            Some("http://otel-collector:4318/v1/traces")
        );
    }

    #[test]
    fn off_makes_no_span_and_no_header() {
        let telemetry = Telemetry::off();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let parent = telemetry.extract(&headers);
        let span = telemetry.span("x", SpanKind::Server, &parent, Vec::new());
        assert!(span.headers().is_empty());
        assert_eq!(span.trace_id(), None);
    }
}
