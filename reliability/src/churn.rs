//! The "churn" profile's ops: while the sale runs, ops cancel some of the orders buyers were
//! told about (`POST /api/v1/admin/orders/{id}/status` `{"status":"cancelled"}`, whose units the
//! relay returns to the store) and restock the SKU by a few units now and then (`POST
//! /api/v1/admin/products/{sku}/restock`, a relative change). Every call is recorded like a
//! buyer's, so the checker can hold SQL to it: an acknowledged cancel is cancelled, a cancelled
//! order was cancelled by someone, and SQL's total is the first stock plus the restocks.
//!
//! Neither call is retried: the API does not dedupe restocks (a lost answer may have been
//! applied), and a cancel's retry would meet its own first try. A call without an answer (or a
//! 5xx) is recorded as "maybe" and the checker allows either outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::Client;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::flash_sale::{Placed, call_until};
use crate::history::{Op, Record};

#[derive(Clone, Debug)]
pub struct Churn {
    pub base_url: String,
    pub ops_token: String,
    pub sku: String,
    /// The share of acknowledged orders ops cancel (0.0–1.0).
    pub cancel_share: f64,
    /// A restock of 1..=`restock_max_units` units every `restock_every`.
    pub restock_every: Duration,
    pub restock_max_units: u32,
    /// Records get attempt numbers from here on (above the sale's).
    pub first_attempt: usize,
}

/// Runs ops until `stop` is set; returns their records. Orders arrive on `placed` as buyers
/// are told about them; each is cancelled with probability `cancel_share`, after a pause of up
/// to 200 ms (some land while the hold is still being finished).
pub async fn run(
    churn: Churn,
    mut placed: UnboundedReceiver<Placed>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Record>> {
    let client = Client::builder().timeout(Duration::from_secs(10)).build()?;
    let mut cancels = tokio::task::JoinSet::new();
    let mut records = Vec::new();
    let mut attempt = churn.first_attempt;
    let mut next_restock = Instant::now() + churn.restock_every;
    while !stop.load(Ordering::Relaxed) {
        while let Ok(order) = placed.try_recv() {
            if !rand::thread_rng().gen_bool(churn.cancel_share.clamp(0.0, 1.0)) {
                continue;
            }
            let (client, churn) = (client.clone(), churn.clone());
            let pause = Duration::from_millis(rand::thread_rng().gen_range(0..=200));
            attempt += 1;
            let this = attempt;
            cancels.spawn(async move {
                tokio::time::sleep(pause).await;
                cancel(&client, &churn, this, order).await
            });
        }
        if Instant::now() >= next_restock {
            next_restock += churn.restock_every;
            attempt += 1;
            let units = rand::thread_rng().gen_range(1..=churn.restock_max_units.max(1));
            records.push(restock(&client, &churn, attempt, units).await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while let Some(done) = cancels.join_next().await {
        records.push(done?);
    }
    Ok(records)
}

fn record(churn: &Churn, attempt: usize, op: Op, qty: u32) -> Record {
    Record {
        attempt,
        op,
        buyer: "chaos-ops".into(),
        sku: churn.sku.clone(),
        qty,
        idempotency_key: String::new(),
        status: None,
        code: None,
        reservation_id: None,
        order_id: None,
        ids_seen: Vec::new(),
        tries: 0,
        sent_ms: 0,
        done_ms: 0,
    }
}

async fn cancel(client: &Client, churn: &Churn, attempt: usize, order: Placed) -> Record {
    let url = format!(
        "{}/api/v1/admin/orders/{}/status",
        churn.base_url, order.order_id
    );
    let answer = call_until(Duration::ZERO, || {
        client
            .post(&url)
            .bearer_auth(&churn.ops_token)
            .json(&json!({"status": "cancelled"}))
    })
    .await;
    let mut record = record(churn, attempt, Op::Cancel, order.qty);
    answer.fill(&mut record);
    record.order_id = Some(order.order_id);
    record.reservation_id = Some(order.reservation_id);
    record
}

async fn restock(client: &Client, churn: &Churn, attempt: usize, units: u32) -> Record {
    let url = format!(
        "{}/api/v1/admin/products/{}/restock",
        churn.base_url, churn.sku
    );
    let answer = call_until(Duration::ZERO, || {
        client
            .post(&url)
            .bearer_auth(&churn.ops_token)
            .json(&json!({"units": units}))
    })
    .await;
    let mut record = record(churn, attempt, Op::Restock, units);
    answer.fill(&mut record);
    record
}
