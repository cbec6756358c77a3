//! Group commit: concurrent settlement requests queue up for one worker, which gathers them
//! for at most `max_wait` or `max_batch` requests and settles the lot in one SQL transaction;
//! each caller is answered after COMMIT. While a batch commits, the next one fills up, so under
//! load batches grow by themselves and the wait only costs latency when traffic is light.
//!
//! `CommitMode::PerOrder` bypasses the queue: every request runs its own transaction (the
//! same `settle_batch` with one request), which is the baseline the benchmark compares with.
//!
//! Every transaction runs under `group_commit.deadline_ms`: the worker is the one path to SQL
//! for every confirm, so one batch stuck behind a lock must not hold the queue for longer. A
//! batch that fails for a reason a retry may get past (a session time limit, the deadline, a
//! deadlock) fails all its callers at once with 503 `database_busy`: settling them one by one
//! would make each of them wait the same limit again.

use std::time::{Duration, Instant};

use backend_adapters::sql::{Backend, Db, SettleOutcome, SettleRequest, SqlError, settle_batch};
use backend_adapters::telemetry::{KeyValue, Span, SpanKind, SpanRef, Telemetry};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{CommitMode, SettlementConfig};
use crate::error::ApiError;
use crate::metrics::Metrics;

type Reply = oneshot::Sender<Result<SettleOutcome, ApiError>>;

struct Job {
    request: SettleRequest,
    reply: Reply,
    /// The span of the HTTP request this job came with: the batch span links to it.
    origin: Option<SpanRef>,
}

/// Settles requests, grouped or one by one according to the configured mode.
pub struct Committer {
    batches: Batches,
    /// `Some` in group mode: the queue of the batch worker.
    queue: Option<mpsc::Sender<Job>>,
}

impl Committer {
    /// In group mode, also spawns the batch worker; it ends once the committer is dropped.
    pub fn start(
        db: Db,
        metrics: Metrics,
        telemetry: Telemetry,
        config: &SettlementConfig,
    ) -> (Committer, Option<JoinHandle<()>>) {
        let batches = Batches {
            db,
            metrics,
            telemetry,
            deadline: config.batch_deadline(),
        };
        match config.commit_mode {
            CommitMode::PerOrder => (
                Committer {
                    batches,
                    queue: None,
                },
                None,
            ),
            CommitMode::Group => {
                // Enough room for a few batches; past that, callers wait to enqueue
                // (backpressure instead of unbounded memory).
                let (tx, rx) = mpsc::channel(config.group_commit.max_batch * 8);
                let worker = tokio::spawn(run_batches(
                    batches.clone(),
                    rx,
                    config.group_commit.max_batch,
                    config.max_wait(),
                ));
                (
                    Committer {
                        batches,
                        queue: Some(tx),
                    },
                    Some(worker),
                )
            }
        }
    }

    /// Settles one request; returns once its transaction committed (or failed).
    /// `span` is the HTTP request's (none when tracing is off).
    pub async fn settle(
        &self,
        request: SettleRequest,
        span: &Span,
    ) -> Result<SettleOutcome, ApiError> {
        let origin = span.span_context();
        let Some(queue) = &self.queue else {
            let mut outcomes = self.batches.commit(&[request], &[origin]).await?;
            return outcomes
                .pop()
                .ok_or_else(|| ApiError::new(500, "internal_error", "no settlement outcome"));
        };
        let (reply, answer) = oneshot::channel();
        let shutting_down = || ApiError::new(503, "shutting_down", "the service is stopping");
        queue
            .send(Job {
                request,
                reply,
                origin,
            })
            .await
            .map_err(|_| shutting_down())?;
        answer.await.map_err(|_| shutting_down())?
    }
}

/// What the worker (or a per-order settle) commits with.
#[derive(Clone)]
struct Batches {
    db: Db,
    metrics: Metrics,
    telemetry: Telemetry,
    deadline: Option<Duration>,
}

impl Batches {
    /// One transaction for `requests`, timed and counted, given up after the deadline
    /// (`SqlError::Deadline`: dropping it rolls the transaction back unless its COMMIT was
    /// already sent, so the outcome is open; the gateway keeps the hold `confirming` and a
    /// retry finds the order if it landed).
    ///
    /// Traced as a span of its own trace (a batch belongs to no one request) linked to the
    /// span of each request it carries (`origins`), with the SQL transaction as its child.
    async fn commit(
        &self,
        requests: &[SettleRequest],
        origins: &[Option<SpanRef>],
    ) -> Result<Vec<SettleOutcome>, SqlError> {
        let started = Instant::now();
        let (batch_span, sql_span) = self.spans(requests.len(), origins);
        let settled = settle_batch(&self.db, requests);
        let outcomes = match self.deadline {
            Some(deadline) => tokio::time::timeout(deadline, settled)
                .await
                .unwrap_or(Err(SqlError::Deadline(deadline))),
            None => settled.await,
        };
        if let Err(error) = &outcomes {
            sql_span.set_error(error);
            batch_span.set_error(error);
        }
        sql_span.end();
        batch_span.end();
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(requests.len() as f64);
        outcomes
    }

    /// The batch span (linked to `origins`) and the SQL span under it; nothing, not even the
    /// attribute lists, while tracing is off.
    fn spans(&self, size: usize, origins: &[Option<SpanRef>]) -> (Span, Span) {
        if !self.telemetry.is_on() {
            return (Span::none(), Span::none());
        }
        let batch_span = self.telemetry.span_with_links(
            "settlement batch",
            SpanKind::Internal,
            &Default::default(),
            vec![KeyValue::new("batch.size", size as i64)],
            origins.iter().flatten().cloned().collect(),
        );
        let system = match self.db.backend() {
            Backend::Postgres => "postgresql",
            Backend::Sqlite => "sqlite",
        };
        let sql_span = self.telemetry.span(
            "sql settle_batch",
            SpanKind::Client,
            &batch_span.context(),
            vec![
                KeyValue::new("db.system.name", system),
                KeyValue::new("db.operation.name", "settle_batch"),
            ],
        );
        (batch_span, sql_span)
    }

    async fn settle_jobs(&self, jobs: Vec<Job>) {
        let requests: Vec<SettleRequest> = jobs.iter().map(|j| j.request.clone()).collect();
        let origins: Vec<Option<SpanRef>> = jobs.iter().map(|j| j.origin.clone()).collect();
        match self.commit(&requests, &origins).await {
            Ok(outcomes) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    // A caller that went away (timeout) simply does not read its answer.
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) if jobs.len() > 1 && !e.is_transient() => {
                // Keep one odd request from failing everyone: settle each alone.
                tracing::warn!(error = %e, batch = jobs.len(), "batch failed, settling one by one");
                for job in jobs {
                    let answer = self
                        .commit(
                            std::slice::from_ref(&job.request),
                            std::slice::from_ref(&job.origin),
                        )
                        .await
                        .map_err(ApiError::from)
                        .and_then(|mut o| {
                            o.pop().ok_or_else(|| {
                                ApiError::new(500, "internal_error", "no settlement outcome")
                            })
                        });
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => {
                // Busy or unreachable: the same for every request of the batch.
                let error = ApiError::from(e);
                for job in jobs {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

async fn run_batches(
    batches: Batches,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    max_wait: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + max_wait;
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(job)) => jobs.push(job),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        batches.settle_jobs(jobs).await;
    }
}
