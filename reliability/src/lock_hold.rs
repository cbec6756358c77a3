//! The `pg-lock-hold` fault: another PostgreSQL session holds the outbox append lock (what a
//! stuck ops edit or a hung pod holding it does) inside an open transaction, while a probe
//! buyer times single confirm tries through the gateway: each must come back fast with 503 and
//! `Retry-After`, none may hang. The lock is the one every confirm takes last
//! (`backend_adapters::sql::outbox::OUTBOX_APPEND_LOCK_SQL`, per schema), so holding it stops
//! every settlement of the deployment.

use std::time::{Duration, Instant};

use anyhow::Context;
use backend_adapters::sql::Db;
use backend_adapters::sql::outbox::OUTBOX_APPEND_LOCK_SQL;
use serde::Serialize;
use serde_json::json;

use crate::flash_sale::Buyer;

/// How long the lock is held: far past the settlement's `lock_timeout` (2 s), its group-commit
/// deadline (4 s) and the gateway's settle timeout (5 s).
pub const HOLD: Duration = Duration::from_secs(30);
/// A probe request still unanswered after this long hangs.
const HANG: Duration = Duration::from_secs(15);

/// What the probe saw while the lock was held.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LockHoldProbe {
    pub held_secs: f64,
    /// One entry per confirm try made while the lock was held.
    pub confirms: Vec<ProbeConfirm>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeConfirm {
    /// `None`: no answer within 15 s (it hung) or the connection failed.
    pub status: Option<u16>,
    pub code: Option<String>,
    pub retry_after: Option<String>,
    pub millis: u64,
}

impl LockHoldProbe {
    /// Latency of the answered confirm tries: (min, median, max) in ms.
    pub fn latency_ms(&self) -> (u64, u64, u64) {
        let mut ms: Vec<u64> = self.confirms.iter().map(|c| c.millis).collect();
        ms.sort_unstable();
        match (ms.first(), ms.get(ms.len() / 2), ms.last()) {
            (Some(min), Some(mid), Some(max)) => (*min, *mid, *max),
            _ => (0, 0, 0),
        }
    }

    /// Every try answered 503 with a `Retry-After`.
    pub fn all_busy_with_retry_after(&self) -> bool {
        !self.confirms.is_empty()
            && self
                .confirms
                .iter()
                .all(|c| c.status == Some(503) && c.retry_after.is_some())
    }

    pub fn summary(&self) -> String {
        let (min, mid, max) = self.latency_ms();
        let busy = self
            .confirms
            .iter()
            .filter(|c| c.status == Some(503) && c.retry_after.is_some())
            .count();
        format!(
            "outbox append lock held {:.1} s; {} probe confirms during it, {busy} answered 503 \
             with Retry-After, latency min/median/max {min}/{mid}/{max} ms",
            self.held_secs,
            self.confirms.len()
        )
    }
}

/// Takes the outbox append lock on `database_url` (the deployment's schema), keeps it for
/// `hold` while `buyer` reserves one unit of `probe_sku` and tries to confirm it, again and
/// again, once each, then rolls the lock's transaction back.
pub async fn hold_outbox_lock(
    database_url: &str,
    base_url: &str,
    probe_sku: &str,
    buyer: &Buyer,
    hold: Duration,
) -> anyhow::Result<LockHoldProbe> {
    // A session of its own with no limits: the holder is not one of the service's sessions.
    let db = Db::connect(database_url, 1).await?;
    let mut holder = db.pool().begin().await?;
    sqlx::query(OUTBOX_APPEND_LOCK_SQL)
        .execute(&mut *holder)
        .await
        .context("taking the outbox append lock")?;
    let started = Instant::now();
    let http = reqwest::Client::builder().timeout(HANG).build()?;
    let mut probe = LockHoldProbe::default();
    // Stop probing early enough that the last try ends before the lock is let go.
    while started.elapsed() + Duration::from_secs(6) < hold {
        let token = reserve(&http, base_url, probe_sku, buyer).await?;
        probe
            .confirms
            .push(confirm_once(&http, base_url, buyer, &token).await);
    }
    if let Some(rest) = hold.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    holder.rollback().await?;
    probe.held_secs = started.elapsed().as_secs_f64();
    db.close().await;
    Ok(probe)
}

/// A hold of one unit (Redis only: not held up by the SQL lock).
async fn reserve(
    http: &reqwest::Client,
    base_url: &str,
    sku: &str,
    buyer: &Buyer,
) -> anyhow::Result<String> {
    let response = http
        .post(format!("{base_url}/api/v1/reservations"))
        .bearer_auth(&buyer.token)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"sku": sku, "qty": 1}))
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    anyhow::ensure!(status.as_u16() == 201, "probe reserve: {status} {body}");
    body["token"]
        .as_str()
        .map(str::to_owned)
        .context("probe reserve: no token")
}

/// One confirm try, no retry, timed.
async fn confirm_once(
    http: &reqwest::Client,
    base_url: &str,
    buyer: &Buyer,
    token: &str,
) -> ProbeConfirm {
    let started = Instant::now();
    let sent = http
        .post(format!("{base_url}/api/v1/orders"))
        .bearer_auth(&buyer.token)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"reservation_token": token}))
        .send()
        .await;
    let mut answer = ProbeConfirm {
        status: None,
        code: None,
        retry_after: None,
        millis: 0,
    };
    if let Ok(response) = sent {
        answer.status = Some(response.status().as_u16());
        answer.retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Ok(body) = response.json::<serde_json::Value>().await {
            answer.code = body["code"].as_str().map(str::to_owned);
        }
    }
    answer.millis = started.elapsed().as_millis() as u64;
    answer
}
