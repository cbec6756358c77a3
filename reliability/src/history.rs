//! What a client was told: one record per operation (a buyer's reserve, confirm, release; an
//! ops cancel or restock) with its final answer after retries. The invariant checker holds the system to these answers. An
//! operation whose last try timed out or lost its connection has no status: the client does
//! not know what happened ("maybe"), and the checker accepts either outcome for it.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Reserve,
    Confirm,
    Release,
    /// Ops cancelled an order (`POST /api/v1/admin/orders/{id}/status`, `cancelled`).
    Cancel,
    /// Ops added `qty` units to the SKU's total stock (`POST …/restock`).
    Restock,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Which client attempt (one buyer trying to buy once) the operation belongs to.
    pub attempt: usize,
    pub op: Op,
    pub buyer: String,
    pub sku: String,
    pub qty: u32,
    pub idempotency_key: String,
    /// The final HTTP status; `None` when the last try got no answer (timeout, connection
    /// lost): the outcome is unknown.
    pub status: Option<u16>,
    /// The problem `code` of an error answer.
    pub code: Option<String>,
    /// The reservation the operation is about (from the answer for reserve).
    pub reservation_id: Option<String>,
    /// The order id of a successful confirm.
    pub order_id: Option<String>,
    /// Every reservation id the answers to this operation named (retries of one reserve must
    /// all name the same one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids_seen: Vec<String>,
    /// How many requests the operation took (1 = no retry).
    pub tries: u32,
    /// When the first try was sent and when the last answer (or the give-up) came, in Unix
    /// milliseconds: the checker judges confirms against the hold TTL and a fault's window by
    /// them (the processes share this machine's clock).
    #[serde(default)]
    pub sent_ms: u64,
    #[serde(default)]
    pub done_ms: u64,
}

impl Record {
    /// Whether the operation was under way at some moment of `[from_ms, to_ms]`.
    pub fn overlaps(&self, (from_ms, to_ms): (u64, u64)) -> bool {
        self.sent_ms <= to_ms && self.done_ms >= from_ms
    }

    pub fn succeeded(&self) -> bool {
        matches!(self.status, Some(200..=299))
    }

    /// The client cannot know what happened: no answer, or a 5xx still standing after every
    /// retry (a 503 "the order may or may not have been placed", or a Redis timeout after the
    /// script may have run).
    pub fn unknown(&self) -> bool {
        matches!(self.status, None | Some(500..))
    }

    /// A definite "no": a 4xx (429 after every retry included).
    pub fn refused(&self) -> bool {
        matches!(self.status, Some(400..=499))
    }
}

/// Writes records as JSON lines.
pub fn write_jsonl(path: &Path, records: &[Record]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for record in records {
        serde_json::to_writer(&mut out, record)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads records written by [`write_jsonl`]; a bad line is an error naming its number.
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Record>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut records = Vec::new();
    for (n, line) in file.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?;
        records.push(record);
    }
    Ok(records)
}
