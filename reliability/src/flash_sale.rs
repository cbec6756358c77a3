//! A flash-sale client: `attempts` buyers' tries at one SKU, `concurrency` at a time, each
//! reserve → confirm (or, every `release_every`-th hold, reserve → release → confirm anyway,
//! which must be refused). It retries like the storefront does: the same `Idempotency-Key`
//! on every retry, 429/502/503/504 and lost connections retried after `Retry-After` or a
//! capped, jittered backoff, until the operation's deadline. It records the final answer of
//! every operation for the invariant checker.
//!
//! Buyers may think before they confirm (`think_time`, the "slow buyers" profile), and the
//! orders they are told about may be handed to ops, who cancel some of them (`placed`, the
//! "churn" profile, `crate::churn`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::history::{Op, Record, now_ms};

/// An order a buyer was told about (201 or 200).
#[derive(Clone, Debug)]
pub struct Placed {
    pub order_id: String,
    pub reservation_id: String,
    pub buyer: String,
    pub qty: u32,
}

/// A buyer and its bearer token (`stockgate token --format json` writes these).
#[derive(Clone, Debug, Deserialize)]
pub struct Buyer {
    pub sub: String,
    pub token: String,
}

#[derive(Clone, Debug)]
pub struct FlashSale {
    /// The gateway, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    pub sku: String,
    pub attempts: usize,
    pub concurrency: usize,
    /// Attempt `i` is made by buyer `i % buyers.len()`.
    pub buyers: Vec<Buyer>,
    /// Attempt `i` asks for `1 + i % max_qty` units.
    pub max_qty: u32,
    /// Every n-th attempt releases its hold and then tries to confirm it (0: never).
    pub release_every: usize,
    /// Deadline of one request.
    pub request_timeout: Duration,
    /// How long one operation keeps retrying before it records its last answer.
    pub give_up_after: Duration,
    /// A buyer pauses for a time drawn uniformly from `[0, think_time]` between its reserve's
    /// answer and its confirm (or release). Zero: it confirms at once.
    pub think_time: Duration,
    /// Where acknowledged orders are sent (ops may cancel them); `None`: nowhere.
    pub placed: Option<tokio::sync::mpsc::UnboundedSender<Placed>>,
}

/// Attempts finished so far, readable while the sale runs (a fault run waits for the load to
/// be well under way before it strikes).
#[derive(Debug, Default)]
pub struct Progress {
    pub finished: AtomicUsize,
}

impl Progress {
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::Relaxed)
    }
}

/// Runs the sale and returns every operation's record, in attempt order.
pub async fn run(sale: Arc<FlashSale>, progress: Arc<Progress>) -> anyhow::Result<Vec<Record>> {
    anyhow::ensure!(!sale.buyers.is_empty(), "the flash sale needs buyers");
    let client = Client::builder()
        .pool_max_idle_per_host(sale.concurrency)
        .timeout(sale.request_timeout)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..sale.concurrency.max(1) {
        let (sale, client, next, progress) =
            (sale.clone(), client.clone(), next.clone(), progress.clone());
        workers.spawn(async move {
            let mut records = Vec::new();
            loop {
                let attempt = next.fetch_add(1, Ordering::Relaxed);
                if attempt >= sale.attempts {
                    return records;
                }
                records.extend(one_attempt(&sale, &client, attempt).await);
                progress.finished.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut records = Vec::with_capacity(sale.attempts * 2);
    while let Some(done) = workers.join_next().await {
        records.extend(done?);
    }
    records.sort_by_key(|r| (r.attempt, r.op != Op::Reserve));
    Ok(records)
}

/// One buyer's try: its records in the order made.
async fn one_attempt(sale: &FlashSale, client: &Client, attempt: usize) -> Vec<Record> {
    let buyer = &sale.buyers[attempt % sale.buyers.len()];
    let qty = 1 + (attempt as u32) % sale.max_qty.max(1);
    let record = |op: Op, key: &str| Record {
        attempt,
        op,
        buyer: buyer.sub.clone(),
        sku: sale.sku.clone(),
        qty,
        idempotency_key: key.to_owned(),
        status: None,
        code: None,
        reservation_id: None,
        order_id: None,
        ids_seen: Vec::new(),
        tries: 0,
        sent_ms: 0,
        done_ms: 0,
    };
    let url = |path: &str| format!("{}{path}", sale.base_url);

    let key = uuid::Uuid::new_v4().to_string();
    let answer = call(sale, || {
        client
            .post(url("/api/v1/reservations"))
            .bearer_auth(&buyer.token)
            .header("idempotency-key", &key)
            .json(&json!({"sku": sale.sku, "qty": qty}))
    })
    .await;
    let mut reserve = record(Op::Reserve, &key);
    answer.fill(&mut reserve);
    reserve.reservation_id = answer.last_str("reservation_id");
    reserve.ids_seen = answer.ids_seen.clone();
    let token = answer.last_str("token");
    let mut records = vec![reserve.clone()];
    let (Some(id), Some(token), true) =
        (reserve.reservation_id.clone(), token, reserve.succeeded())
    else {
        return records;
    };

    if !sale.think_time.is_zero() {
        let pause = sale
            .think_time
            .mul_f64(rand::thread_rng().gen_range(0.0..=1.0));
        tokio::time::sleep(pause).await;
    }

    if sale.release_every > 0 && attempt.is_multiple_of(sale.release_every) {
        let answer = call(sale, || {
            client
                .delete(url(&format!("/api/v1/reservations/{id}")))
                .bearer_auth(&buyer.token)
        })
        .await;
        let mut release = record(Op::Release, "");
        answer.fill(&mut release);
        release.reservation_id = Some(id.clone());
        records.push(release);
    }

    let key = uuid::Uuid::new_v4().to_string();
    let answer = call(sale, || {
        client
            .post(url("/api/v1/orders"))
            .bearer_auth(&buyer.token)
            .header("idempotency-key", &key)
            .json(&json!({"reservation_token": token}))
    })
    .await;
    let mut confirm = record(Op::Confirm, &key);
    answer.fill(&mut confirm);
    confirm.reservation_id = Some(id);
    if confirm.succeeded() {
        confirm.order_id = answer.last_str("order_id");
        if let (Some(placed), Some(order_id)) = (&sale.placed, &confirm.order_id) {
            // The receiver is gone once ops stopped: nothing more to cancel.
            let _ = placed.send(Placed {
                order_id: order_id.clone(),
                reservation_id: confirm.reservation_id.clone().unwrap_or_default(),
                buyer: buyer.sub.clone(),
                qty,
            });
        }
    }
    records.push(confirm);
    records
}

/// The outcome of one operation after its retries.
pub(crate) struct Answer {
    pub(crate) status: Option<u16>,
    pub(crate) body: Value,
    pub(crate) tries: u32,
    /// `reservation_id` of every answer that named one.
    pub(crate) ids_seen: Vec<String>,
    pub(crate) sent_ms: u64,
    pub(crate) done_ms: u64,
}

impl Answer {
    pub(crate) fn fill(&self, record: &mut Record) {
        record.status = self.status;
        record.tries = self.tries;
        record.code = self.body["code"].as_str().map(str::to_owned);
        record.sent_ms = self.sent_ms;
        record.done_ms = self.done_ms;
    }

    pub(crate) fn last_str(&self, field: &str) -> Option<String> {
        self.body[field].as_str().map(str::to_owned)
    }
}

fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// Sends the request `build` makes until it gets a final answer or the operation's deadline
/// would pass before the next try.
async fn call(sale: &FlashSale, build: impl Fn() -> RequestBuilder) -> Answer {
    call_until(sale.give_up_after, build).await
}

/// [`call`] with a deadline of `give_up_after` from now.
pub(crate) async fn call_until(
    give_up_after: Duration,
    build: impl Fn() -> RequestBuilder,
) -> Answer {
    let deadline = Instant::now() + give_up_after;
    let mut answer = Answer {
        status: None,
        body: Value::Null,
        tries: 0,
        ids_seen: Vec::new(),
        sent_ms: now_ms(),
        done_ms: 0,
    };
    loop {
        answer.tries += 1;
        let wait = match build().send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                match response.bytes().await {
                    Ok(bytes) => {
                        answer.status = Some(status.as_u16());
                        answer.body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    }
                    // The answer was cut off: as good as none.
                    Err(_) => {
                        answer.status = None;
                        answer.body = Value::Null;
                    }
                }
                if let Some(id) = answer.body["reservation_id"].as_str()
                    && !answer.ids_seen.iter().any(|seen| seen == id)
                {
                    answer.ids_seen.push(id.to_owned());
                }
                if answer.status.is_some() && !retryable(status) {
                    answer.done_ms = now_ms();
                    return answer;
                }
                retry_after.map_or_else(|| backoff(answer.tries), |d| d.min(Duration::from_secs(2)))
            }
            Err(_) => {
                answer.status = None;
                answer.body = Value::Null;
                backoff(answer.tries)
            }
        };
        let jittered = wait.mul_f64(1.0 + rand::thread_rng().gen_range(0.0..0.2));
        if Instant::now() + jittered >= deadline {
            answer.done_ms = now_ms();
            return answer;
        }
        tokio::time::sleep(jittered).await;
    }
}

/// 50 ms doubling per try, at most 1 s.
fn backoff(tries: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << tries.min(5))).min(Duration::from_secs(1))
}
