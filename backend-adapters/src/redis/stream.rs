//! The events stream: the outbox relay appends to it, readers consume it with consumer groups.
//!
//! Each entry's stream id is `<outbox id>-0` and its `id` field the outbox id. Redis refuses
//! an XADD whose id is not above the stream's last generated id, so a relay that crashed after
//! XADD but before marking the row published must not append it again: [`StreamPublisher::
//! publish`] skips an event whose entry is already in the stream. An event whose id is at or
//! below the stream's last id *without* being in it (the stream is ahead of this outbox: a
//! restored or fresh database against an existing Redis, or two deployments on one stream) is
//! never dropped: it is appended with an id Redis assigns, and counted, so operators see it.
//! [`StreamTail`] readers follow the stream without a group (XREAD), leaving nothing in Redis.
//! Group readers get every event once per group (XREADGROUP), acknowledge after handling (XACK), and
//! take over the entries of dead consumers (XAUTOCLAIM); a reader that crashes after handling
//! but before XACK sees the entry again, so handlers dedupe on `event_id` or are idempotent.

use std::future::Future;
use std::time::Duration;

use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoStreamReply, StreamMaxlen,
    StreamReadOptions, StreamReadReply,
};
use redis::{AsyncCommands, RedisError};
use thiserror::Error;

use super::connection::{ConnectOptions, RedisConnection};

#[derive(Debug, Error)]
pub enum StreamError {
    #[error("redis error: {0}")]
    Redis(#[from] RedisError),
    #[error("malformed stream entry {0}")]
    Malformed(String),
}

/// One event as it travels through the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEvent {
    /// The stream entry id (`<event_id>-0`), what XACK takes.
    pub entry_id: String,
    /// The outbox id: stable across republishing, what consumers dedupe on.
    pub event_id: i64,
    pub topic: String,
    /// JSON text.
    pub payload: String,
}

impl StreamEvent {
    fn from_entry(entry: &StreamId) -> Result<Self, StreamError> {
        let bad = || StreamError::Malformed(entry.id.clone());
        Ok(StreamEvent {
            entry_id: entry.id.clone(),
            event_id: entry.get::<i64>("id").ok_or_else(bad)?,
            topic: entry.get::<String>("topic").ok_or_else(bad)?,
            payload: entry.get::<String>("payload").ok_or_else(bad)?,
        })
    }
}

/// The stream's last generated id's first part (0 for a stream that does not exist).
async fn last_event_id(conn: &mut RedisConnection, stream: &str) -> Result<i64, StreamError> {
    let exists: bool = conn.exists(stream).await?;
    if !exists {
        return Ok(0);
    }
    let info: StreamInfoStreamReply = conn.xinfo_stream(stream).await?;
    let ms = info.last_generated_id.split('-').next().unwrap_or("0");
    ms.parse()
        .map_err(|_| StreamError::Malformed(info.last_generated_id.clone()))
}

/// Appends outbox events to the stream, capped at about `maxlen` entries.
#[derive(Clone)]
pub struct StreamPublisher {
    conn: RedisConnection,
    stream: String,
    maxlen: usize,
}

impl StreamPublisher {
    pub fn new(conn: impl Into<RedisConnection>, stream: &str, maxlen: usize) -> Self {
        StreamPublisher {
            conn: conn.into(),
            stream: stream.to_owned(),
            maxlen,
        }
    }

    pub async fn connect(url: &str, stream: &str, maxlen: usize) -> Result<Self, StreamError> {
        let conn = RedisConnection::connect(url, &ConnectOptions::default()).await?;
        Ok(Self::new(conn, stream, maxlen))
    }

    /// Publishes `(event_id, topic, payload)` in ascending id order. Only one relay may
    /// publish at a time (it runs under a leader lease).
    pub async fn publish(&self, events: &[(i64, &str, &str)]) -> Result<Published, StreamError> {
        let mut conn = self.conn.clone();
        let last = last_event_id(&mut conn, &self.stream).await?;
        let present = self.already_present(&mut conn, events, last).await?;
        let mut pipe = redis::pipe();
        let mut published = Published::default();
        // Once one entry took a Redis-assigned id, the later ones must too: an explicit
        // `<id>-0` would now be below the stream's last id.
        let mut assign_ids = false;
        for (id, topic, payload) in events {
            if present.contains(id) {
                published.skipped += 1;
                continue;
            }
            assign_ids |= *id <= last;
            let entry_id = if assign_ids {
                published.reassigned += 1;
                "*".to_owned()
            } else {
                format!("{id}-0")
            };
            let fields = [
                ("id", id.to_string()),
                ("topic", (*topic).to_owned()),
                ("payload", (*payload).to_owned()),
            ];
            pipe.xadd_maxlen(
                &self.stream,
                StreamMaxlen::Approx(self.maxlen),
                entry_id,
                &fields,
            )
            .ignore();
            published.appended += 1;
        }
        if published.appended > 0 {
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(published)
    }

    /// The events of `events` whose own entry (`<id>-0` with that `id` field) the stream
    /// already has: a relay delivered them before it could mark them published. One XRANGE
    /// over the ids at or below the stream's last id, and none when all are above it.
    async fn already_present(
        &self,
        conn: &mut RedisConnection,
        events: &[(i64, &str, &str)],
        last: i64,
    ) -> Result<std::collections::HashSet<i64>, StreamError> {
        let low: Vec<i64> = events
            .iter()
            .map(|(id, _, _)| *id)
            .filter(|id| *id <= last)
            .collect();
        let (Some(from), Some(to)) = (low.iter().min(), low.iter().max()) else {
            return Ok(Default::default());
        };
        let reply: redis::streams::StreamRangeReply = conn
            .xrange(&self.stream, format!("{from}-0"), format!("{to}-0"))
            .await?;
        Ok(reply
            .ids
            .iter()
            .filter_map(|entry| {
                let id = entry.get::<i64>("id")?;
                (entry.id == format!("{id}-0")).then_some(id)
            })
            .collect())
    }
}

/// What one [`StreamPublisher::publish`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Entries appended (including `reassigned`).
    pub appended: usize,
    /// Appended with a Redis-assigned id because the stream was ahead of the outbox.
    pub reassigned: usize,
    /// Already in the stream (a replay after a relay crash): not appended again.
    pub skipped: usize,
}

/// A reader that follows the stream without a consumer group (plain XREAD from the last id it
/// saw): every reader sees every entry and leaves no state in Redis, so readers that come and
/// go (a gateway pod per rollout or scale-up, each with a new name) do not accumulate groups
/// or consumers there. Use it where handling is idempotent and a reader starting fresh needs
/// no history (the gateway's cache invalidation); it gets no redelivery of entries it read
/// and failed to handle.
pub struct StreamTail {
    conn: RedisConnection,
    stream: String,
    /// The id of the last entry read (`0-0` before any).
    last_id: String,
}

impl StreamTail {
    /// A reader of entries added after the stream's current last one (all of them when the
    /// stream is empty or missing).
    pub async fn at_end(
        conn: impl Into<RedisConnection>,
        stream: &str,
    ) -> Result<Self, StreamError> {
        let mut conn = conn.into();
        let last: Vec<StreamId> = conn
            .xrevrange_count::<_, _, _, _, redis::streams::StreamRangeReply>(stream, "+", "-", 1)
            .await?
            .ids;
        let last_id = last
            .first()
            .map_or_else(|| "0-0".to_owned(), |e| e.id.clone());
        Ok(StreamTail {
            conn,
            stream: stream.to_owned(),
            last_id,
        })
    }

    /// Goes on from `last_id` (a reconnect keeps its place) on a new connection.
    pub fn resume(conn: impl Into<RedisConnection>, stream: &str, last_id: &str) -> Self {
        StreamTail {
            conn: conn.into(),
            stream: stream.to_owned(),
            last_id: last_id.to_owned(),
        }
    }

    pub fn last_id(&self) -> &str {
        &self.last_id
    }

    /// The entries after the last one read, waiting up to `block` for the first.
    pub async fn read(
        &mut self,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEvent>, StreamError> {
        let options = StreamReadOptions::default()
            .count(count)
            .block(block.as_millis() as usize);
        let reply: Option<StreamReadReply> = self
            .conn
            .xread_options(&[&self.stream], &[&self.last_id], &options)
            .await?;
        let entries: Vec<StreamId> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
        if let Some(last) = entries.last() {
            self.last_id = last.id.clone();
        }
        entries.iter().map(StreamEvent::from_entry).collect()
    }
}

/// One consumer of one consumer group.
#[derive(Clone)]
pub struct ConsumerGroup {
    conn: RedisConnection,
    stream: String,
    group: String,
    consumer: String,
}

impl ConsumerGroup {
    pub fn new(
        conn: impl Into<RedisConnection>,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> Self {
        ConsumerGroup {
            conn: conn.into(),
            stream: stream.to_owned(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
        }
    }

    pub async fn connect(
        url: &str,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> Result<Self, StreamError> {
        let conn = RedisConnection::connect(url, &ConnectOptions::default()).await?;
        Ok(Self::new(conn, stream, group, consumer))
    }

    /// Creates the group (reading from the stream's start) unless it exists.
    pub async fn ensure(&self) -> Result<(), StreamError> {
        let mut conn = self.conn.clone();
        let created: Result<(), RedisError> = conn
            .xgroup_create_mkstream(&self.stream, &self.group, "0")
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    /// Entries never delivered to this group, waiting up to `block` for the first.
    pub async fn read_new(
        &self,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEvent>, StreamError> {
        let mut conn = self.conn.clone();
        let options = StreamReadOptions::default()
            .group(&self.group, &self.consumer)
            .count(count)
            .block(block.as_millis() as usize);
        let reply: Option<StreamReadReply> = conn
            .xread_options(&[&self.stream], &[">"], &options)
            .await?;
        reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|entry| StreamEvent::from_entry(&entry))
            .collect()
    }

    /// Takes over entries another consumer of the group read but did not acknowledge for
    /// `min_idle` (it died), up to `count`.
    pub async fn claim_stale(
        &self,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<StreamEvent>, StreamError> {
        let mut conn = self.conn.clone();
        let reply: StreamAutoClaimReply = conn
            .xautoclaim_options(
                &self.stream,
                &self.group,
                &self.consumer,
                min_idle.as_millis() as u64,
                "0-0",
                StreamAutoClaimOptions::default().count(count),
            )
            .await?;
        reply.claimed.iter().map(StreamEvent::from_entry).collect()
    }

    pub async fn ack(&self, entry_ids: &[String]) -> Result<(), StreamError> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let _: i64 = conn.xack(&self.stream, &self.group, entry_ids).await?;
        Ok(())
    }

    /// One round: claim stale entries of dead consumers, else read new ones; run `handle` on
    /// each in order and XACK those it handled. An entry whose handler fails stays pending and
    /// comes back through [`claim_stale`](Self::claim_stale). Returns how many were acked.
    pub async fn process<F, Fut, E>(
        &self,
        count: usize,
        block: Duration,
        min_idle: Duration,
        mut handle: F,
    ) -> Result<usize, StreamError>
    where
        F: FnMut(StreamEvent) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut events = self.claim_stale(min_idle, count).await?;
        if events.is_empty() {
            events = self.read_new(count, block).await?;
        }
        let mut handled = Vec::new();
        for event in events {
            let entry_id = event.entry_id.clone();
            match handle(event).await {
                Ok(()) => handled.push(entry_id),
                Err(e) => tracing::warn!(entry_id, error = %e, "stream event handler failed"),
            }
        }
        self.ack(&handled).await?;
        Ok(handled.len())
    }
}
