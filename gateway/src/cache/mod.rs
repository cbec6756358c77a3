//! The product cache of `GET /api/v1/products` and `/api/v1/products/{sku}` (DESIGN.md §5):
//! cache-aside with a TTL plus random jitter, single-flight fills, stale-while-revalidate and
//! stale-if-error windows, `ETag` / `If-None-Match`, and a size limit on stored bodies.
//!
//! Tiers, looked at in order: process memory ([`local::LocalTier`], the copy that keeps
//! serving while Redis is down), then Redis (shared by replicas, when `redis_url` is set),
//! then the settlement upstream. The cache key is canonical ([`catalog_key`]): the list, or one
//! product under the SKU settlement would look up (percent-decoded, validated, case kept), and
//! never the query string, which is ignored and not forwarded. So no spelling of a path makes
//! a second copy, and every copy is one the SKU's invalidation drops. Invalidation:
//! [`invalidate`] consumes the settlement's `product.updated` events, and a product change
//! made through this gateway drops the copies at once.
//!
//! Only 200 answers are stored, so unknown SKUs cannot grow the cache: it holds at most the
//! list and one copy per real product (a 404 is passed on, each fill single-flight per SKU;
//! what a flood of made-up SKUs costs upstream is for the per-IP rate limits).

pub mod entry;
pub mod invalidate;
pub mod local;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use reservation_core::Sku;
use reservation_core::assertion::{AssertionSigner, Identity};
use reservation_core::wire::{PROBLEM_CONTENT_TYPE, headers, paths};

use crate::config::{CacheConfig, ms};
use crate::edge::respond::Reply;
use crate::edge::routes;
use crate::edge_redis::EdgeRedis;
use crate::metrics::Metrics;
use crate::problem::Problem;
use crate::proxy::Upstream;
use entry::{Entry, Freshness};
use local::{LocalTier, SingleFlight};

/// The catalog list path; every product change also drops its copy.
pub const LIST_PATH: &str = paths::PRODUCTS;

/// The cache key of a catalog read at `path` (the query string already left out), which is
/// also the path fetched upstream, so an answer always matches its key: `LIST_PATH`, or
/// `LIST_PATH/{sku}` with the SKU as [`routes::path_sku`] reads it (`/H%4FT` and `/HOT` are
/// one key). `None`: the path's SKU is invalid in any encoding (400 before the cache).
pub fn catalog_key(path: &str) -> Option<String> {
    if path == LIST_PATH {
        return Some(LIST_PATH.to_owned());
    }
    let segment = path.strip_prefix(LIST_PATH)?.strip_prefix('/')?;
    routes::path_sku(segment).map(|sku| item_key(&sku))
}

fn item_key(sku: &Sku) -> String {
    format!("{LIST_PATH}/{sku}")
}

/// What one fill (at most one per key at a time) came to.
#[derive(Clone)]
enum Fill {
    /// A fresh copy was already in a tier (another fill or replica stored it meanwhile).
    Found(Entry),
    /// Fetched from the upstream and stored.
    Stored(Entry),
    /// An answer that is not stored (not a 200, or too large), passed on as it is.
    Passed {
        status: u16,
        content_type: String,
        body: Bytes,
    },
    /// The upstream failed: unreachable, timed out, or a 5xx (kept to pass on).
    Failed {
        reason: String,
        answer: Option<(u16, String, Bytes)>,
    },
}

/// An upstream failure: the reason, and the upstream's own 5xx answer to pass on, if any.
type FetchError = (String, Option<(u16, String, Bytes)>);

/// How a copy was served: the metric outcome and the `Cache-Status` / `Warning` headers.
#[derive(Clone, Copy)]
enum Served {
    Hit,
    Miss,
    Coalesced,
    Stale,
    StaleIfError,
}

/// The product cache; one per gateway, shared by every worker.
pub struct ProductCache {
    ttl_ms: u64,
    jitter_ms: u64,
    swr_ms: u64,
    sie_ms: u64,
    max_body_bytes: usize,
    local: LocalTier,
    flights: SingleFlight<Fill>,
    shared: Option<EdgeRedis>,
    http: reqwest::Client,
    upstream: Upstream,
    /// Signs each fill: a catalog read is the gateway's own request, asserted for nobody.
    assertions: Arc<AssertionSigner>,
    upstream_base: String,
    metrics: Arc<Metrics>,
    /// Bumped by every invalidation: a fill that started before one does not store its copy
    /// (it may predate the change).
    generation: AtomicU64,
    /// The id of the last events-stream entry the [`invalidate`] reader handled: where this
    /// replica's cache stands against the stream (tests wait on it).
    stream_position: std::sync::Mutex<Option<String>>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl ProductCache {
    /// The error is reqwest's, building the client of the upstream fills.
    pub fn new(
        config: &CacheConfig,
        shared: Option<EdgeRedis>,
        upstream: Upstream,
        assertions: Arc<AssertionSigner>,
        upstream_host_port: &str,
        read_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(read_timeout)
            .tcp_nodelay(true)
            .build()?;
        let ttl_ms = config.ttl_secs * 1000;
        Ok(ProductCache {
            ttl_ms,
            jitter_ms: ttl_ms * config.jitter_percent / 100,
            swr_ms: config.stale_while_revalidate_secs * 1000,
            sie_ms: config.stale_if_error_secs * 1000,
            max_body_bytes: config.max_body_bytes,
            local: LocalTier::new(config.local_max_entries),
            flights: SingleFlight::default(),
            shared,
            http,
            upstream,
            assertions,
            upstream_base: format!("http://{upstream_host_port}"),
            metrics,
            generation: AtomicU64::new(0),
            stream_position: std::sync::Mutex::new(None),
        })
    }

    /// Answers one catalog read of `path` (without its query string, which is ignored).
    pub async fn serve(
        self: &Arc<Self>,
        path: &str,
        if_none_match: Option<&str>,
        request_id: &str,
    ) -> Reply {
        let Some(key) = catalog_key(path) else {
            self.metrics.cache("invalid");
            let problem = Problem::bad_request(
                "sku must be 1 to 64 letters, digits, '-', '.' or '_' (percent-encoded or not)",
            );
            return Reply::problem(&problem, request_id);
        };
        let path = key.as_str();
        let mut stale = None;
        if let Some(entry) = self.local.get(path) {
            if entry.freshness(now_ms()) == Freshness::Fresh {
                return self.answer(&entry, Served::Hit, if_none_match);
            }
            stale = Some(entry);
        }
        if let Some(entry) = self.shared_get(path).await {
            if entry.freshness(now_ms()) == Freshness::Fresh {
                self.local
                    .put(path, entry.clone(), self.keep_until(&entry), now_ms());
                return self.answer(&entry, Served::Hit, if_none_match);
            }
            if stale
                .as_ref()
                .is_none_or(|s| s.stored_at_ms < entry.stored_at_ms)
            {
                stale = Some(entry);
            }
        }
        let stale_by = |entry: &Entry| match entry.freshness(now_ms()) {
            Freshness::Fresh => 0,
            Freshness::Stale(by) => by,
        };
        if let Some(entry) = &stale
            && stale_by(entry) <= self.swr_ms
        {
            // Serve now; one background fill refreshes the copy for the next readers.
            let (cache, key, rid) = (self.clone(), path.to_owned(), request_id.to_owned());
            tokio::spawn(async move { cache.fill(&key, &rid).await });
            return self.answer(entry, Served::Stale, if_none_match);
        }
        let (fill, coalesced) = self.fill(path, request_id).await;
        let served = if coalesced {
            Served::Coalesced
        } else {
            Served::Miss
        };
        match fill {
            Fill::Found(entry) => self.answer(&entry, Served::Hit, if_none_match),
            Fill::Stored(entry) => self.answer(&entry, served, if_none_match),
            passed @ Fill::Passed { .. } => {
                self.metrics.cache("uncacheable");
                self.pass_on(Ok(passed), request_id)
            }
            Fill::Failed { reason, answer } => match stale {
                Some(entry) if stale_by(&entry) <= self.sie_ms => {
                    tracing::debug!(%reason, path, "serving a stale copy: the upstream failed");
                    self.answer(&entry, Served::StaleIfError, if_none_match)
                }
                _ => {
                    self.metrics.cache("error");
                    self.pass_on(Err((reason, answer)), request_id)
                }
            },
        }
    }

    /// How many copies this process holds in memory (tests, bounds).
    pub fn local_len(&self) -> usize {
        self.local.len()
    }

    /// The id of the last events-stream entry handled (`None` before the first).
    pub fn stream_position(&self) -> Option<String> {
        self.stream_position
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_stream_position(&self, id: &str) {
        *self
            .stream_position
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(id.to_owned());
    }

    /// Drops every copy of `sku`'s page and of the list, here and in Redis. Keys are
    /// canonical, so this is every copy, however the SKU was spelled when it was fetched.
    pub async fn invalidate(&self, sku: &Sku) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let item = item_key(sku);
        let keys = [LIST_PATH, item.as_str()];
        for key in keys {
            self.local.remove(key);
        }
        self.metrics.cache_invalidations.inc();
        if let Some(shared) = self.shared.as_ref().filter(|s| s.health.is_up())
            && let Err(error) = shared.cache.delete(&keys).await
        {
            shared.health.mark_down("cache delete", &error);
        }
    }

    /// One fill per key at a time; returns whether this caller only waited for another's.
    async fn fill(&self, path: &str, request_id: &str) -> (Fill, bool) {
        self.flights
            .run(path, || self.fill_once(path, request_id))
            .await
    }

    async fn fill_once(&self, path: &str, request_id: &str) -> Fill {
        // A fill that finished just before this one started may have stored a fresh copy.
        if let Some(entry) = self.local.get(path)
            && entry.freshness(now_ms()) == Freshness::Fresh
        {
            return Fill::Found(entry);
        }
        if let Some(entry) = self.shared_get(path).await
            && entry.freshness(now_ms()) == Freshness::Fresh
        {
            self.local
                .put(path, entry.clone(), self.keep_until(&entry), now_ms());
            return Fill::Found(entry);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        match self.fetch(path, request_id).await {
            Ok(Fill::Passed {
                status: 200,
                body,
                content_type,
            }) if body.len() <= self.max_body_bytes && content_type.contains("json") => {
                Fill::Stored(self.store(path, body, generation).await)
            }
            other => other.unwrap_or_else(|(reason, answer)| Fill::Failed { reason, answer }),
        }
    }

    /// Stores a fetched body unless an invalidation happened since the fetch started.
    async fn store(&self, path: &str, body: Bytes, generation: u64) -> Entry {
        let entry = Entry::new(body, None, now_ms(), self.fresh_ms());
        if generation != self.generation.load(Ordering::SeqCst) {
            return entry;
        }
        self.local
            .put(path, entry.clone(), self.keep_until(&entry), now_ms());
        if let Some(shared) = self.shared.as_ref().filter(|s| s.health.is_up()) {
            let keep = ms(entry.fresh_ms + self.swr_ms.max(self.sie_ms));
            if let Err(error) = shared.cache.put(path, &entry.encode(), keep).await {
                shared.health.mark_down("cache put", &error);
            }
        }
        entry
    }

    /// The TTL plus a random share of the jitter, so copies stored together expire apart.
    fn fresh_ms(&self) -> u64 {
        if self.jitter_ms == 0 {
            return self.ttl_ms;
        }
        let random = (uuid::Uuid::new_v4().as_u128() & u128::from(u64::MAX)) as u64;
        self.ttl_ms + random % (self.jitter_ms + 1)
    }

    fn keep_until(&self, entry: &Entry) -> u64 {
        entry.stored_at_ms + entry.fresh_ms + self.swr_ms.max(self.sie_ms)
    }

    /// The Redis copy, unless Redis is down (then no request waits on it).
    async fn shared_get(&self, path: &str) -> Option<Entry> {
        let shared = self.shared.as_ref().filter(|s| s.health.is_up())?;
        match shared.cache.get(path).await {
            Ok(raw) => raw.as_deref().and_then(Entry::decode),
            Err(error) => {
                shared.health.mark_down("cache get", &error);
                None
            }
        }
    }

    /// One upstream request; `Err` carries the reason and a 5xx answer to pass on, if any.
    async fn fetch(&self, path: &str, request_id: &str) -> Result<Fill, FetchError> {
        if !self.upstream.is_healthy() {
            return Err(("the settlement upstream is unhealthy".into(), None));
        }
        let mut request = self
            .http
            .get(format!("{}{path}", self.upstream_base))
            .header(headers::REQUEST_ID, request_id)
            .build()
            .map_err(|e| (e.to_string(), None))?;
        crate::service_auth::sign_request(&self.assertions, &mut request, &Identity::default())
            .map_err(|e| (e.with_cause(), None))?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| (e.to_string(), None))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        let body = response.bytes().await.map_err(|e| (e.to_string(), None))?;
        if status >= 500 {
            let reason = format!("the settlement service answered {status}");
            return Err((reason, Some((status, content_type, body))));
        }
        Ok(Fill::Passed {
            status,
            content_type,
            body,
        })
    }

    /// An uncached answer: the upstream's own, or 503 when there is none.
    fn pass_on(&self, fetched: Result<Fill, FetchError>, request_id: &str) -> Reply {
        let (status, content_type, body) = match fetched {
            Ok(Fill::Passed {
                status,
                content_type,
                body,
            }) => (status, content_type, body),
            Ok(Fill::Found(entry) | Fill::Stored(entry)) => {
                (200, "application/json".to_owned(), entry.body)
            }
            Ok(Fill::Failed { answer, reason }) | Err((reason, answer)) => match answer {
                Some(answer) => answer,
                None => {
                    tracing::warn!(%reason, request_id, "catalog read failed and no copy is left");
                    let problem =
                        Problem::upstream_unavailable("the catalog is unavailable, retry later");
                    return Reply::problem(&problem, request_id);
                }
            },
        };
        let mut reply = Reply::raw_json(status, body);
        reply.content_type = if content_type.contains("problem") {
            PROBLEM_CONTENT_TYPE
        } else {
            "application/json"
        };
        reply
    }

    fn answer(&self, entry: &Entry, served: Served, if_none_match: Option<&str>) -> Reply {
        let now = now_ms();
        let (outcome, status_detail, warning) = match served {
            Served::Hit => ("hit", format!("hit; ttl={}", entry.ttl_secs(now)), None),
            Served::Miss => ("miss", "fwd=miss; stored".to_owned(), None),
            Served::Coalesced => ("coalesced", "fwd=miss; collapsed".to_owned(), None),
            Served::Stale => (
                "stale",
                "hit; fwd=stale; detail=stale-while-revalidate".to_owned(),
                Some("110 - \"Response is Stale\""),
            ),
            Served::StaleIfError => (
                "stale_if_error",
                "hit; fwd=stale; detail=stale-if-error".to_owned(),
                Some("111 - \"Revalidation Failed\""),
            ),
        };
        self.metrics.cache(outcome);
        let mut reply = if if_none_match.is_some_and(|inm| entry.matches(inm)) {
            Reply::empty(304)
        } else {
            Reply::raw_json(200, entry.body.clone())
        };
        reply = reply
            .header(headers::ETAG, entry.etag.clone())
            .header("age", entry.age_secs(now).to_string())
            .header("cache-status", format!("stockgate; {status_detail}"))
            .header(
                "cache-control",
                format!("public, max-age={}", entry.ttl_secs(now)),
            );
        if let Some(warning) = warning {
            reply = reply.header("warning", warning);
        }
        reply
    }
}
