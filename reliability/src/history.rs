//! What a client was told: one record per operation (reserve, confirm, release) with its final
//! answer after retries. The invariant checker holds the system to these answers. An
//! operation whose last try timed out or lost its connection has no status: the client does
//! not know what happened ("maybe"), and the checker accepts either outcome for it.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Reserve,
    Confirm,
    Release,
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
}

impl Record {
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
