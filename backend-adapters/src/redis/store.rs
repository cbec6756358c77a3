//! `RedisStore`: the [`ReservationStore`] on Redis, one Lua script per operation so every
//! operation is one atomic step with Redis `TIME` as the only clock. It has the same semantics
//! as `reservation_core::InMemoryStore`; the conformance suite and the model test check both.
//!
//! All keys of a SKU share its `{sku}` hash tag (the layout is in `keys.rs`), so each script
//! touches one slot. The one cross-slot rule, that an idempotency key which made a hold is bound
//! to that hold's SKU and quantity, is kept by a `SET NX GET` sent with the reserve script in
//! one round trip (pipelined on one server, side by side on a cluster). The binding's value is
//! unique to the request, so a refused request deletes exactly its own binding afterwards and
//! leaves no lasting state (DESIGN.md §6); a success costs no extra round trip.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{Cmd, ErrorKind, RedisError, RedisResult, RetryMethod, Script, ServerErrorKind, Value};
use reservation_core::{
    AbortTo, BuyerId, ConfirmingHold, Hold, ProductStock, Qty, REPAIR_JOURNAL_TTL, RepairStart,
    RepairTicket, Reservation, ReservationError, ReservationId, ReservationStore, ReserveRequest,
    Sku, SoldUnits, StockSnapshot, StoreResult,
};

use super::connection::{ConnectOptions, RedisConnection};
use super::keys::{SkuKeys, binding_key, skus_key};
use super::reply;
use super::scripts::{Scripts, evalsha};

/// Longest lifetime given to any hold or record (100 years): keeps `now + ttl` and `PX`
/// arguments far inside Redis' 64-bit millisecond range, however large a caller's TTL.
const MAX_LIFETIME_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// How the store names its keys and how long it waits.
#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    /// Start of every key name; lets several stores (or test runs) share one Redis.
    /// Must not contain `{`, `}` (they would move the hash tag) or whitespace.
    pub prefix: String,
    /// How long a final hold (confirmed, released, expired) and its idempotency record are
    /// kept for replays before Redis drops them.
    pub retention: Duration,
    /// Longest wait for any one reply, so no request hangs on a dead Redis.
    pub response_timeout: Duration,
    /// Longest wait for a (re)connect.
    pub connect_timeout: Duration,
}

impl Default for RedisStoreConfig {
    fn default() -> Self {
        RedisStoreConfig {
            prefix: "stockgate".to_owned(),
            retention: Duration::from_secs(24 * 3600),
            response_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

impl RedisStoreConfig {
    pub fn validate(&self) -> StoreResult<()> {
        let invalid = |field, reason: &str| ReservationError::InvalidInput {
            field,
            reason: reason.to_owned(),
        };
        if self.prefix.is_empty()
            || self
                .prefix
                .chars()
                .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "prefix",
                "must be non-empty, without braces or whitespace",
            ));
        }
        if self.retention.is_zero() {
            return Err(invalid("retention", "must be positive"));
        }
        if self.response_timeout.is_zero() {
            return Err(invalid("response_timeout", "must be positive"));
        }
        Ok(())
    }
}

/// The reservation store on Redis or Redis Cluster. Cheap to clone; clones share one
/// multiplexed [`RedisConnection`] (which reconnects by itself), cloned per call, never locked.
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConnection,
    scripts: Arc<Scripts>,
    prefix: Arc<str>,
    retention_ms: u64,
}

/// A Redis failure as the domain sees it: connection trouble and timeouts may be retried.
fn backend_error(err: RedisError) -> ReservationError {
    let retryable = !matches!(err.retry_method(), RetryMethod::NoRetry);
    ReservationError::backend(retryable, err.to_string())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisStore {
    /// Connects to `url` and loads every script. The URL names one server
    /// (`redis://127.0.0.1:6379`, `rediss://…`) or a Redis Cluster (`redis+cluster://h1:p1,h2:p2`,
    /// `rediss+cluster://…`); the forms are listed in [`super::connection`].
    pub async fn connect(url: &str, config: RedisStoreConfig) -> StoreResult<Self> {
        config.validate()?;
        let options = ConnectOptions {
            response_timeout: Some(config.response_timeout),
            connect_timeout: Some(config.connect_timeout),
            retries: Some(2),
        };
        let conn = RedisConnection::connect(url, &options)
            .await
            .map_err(backend_error)?;
        let store = RedisStore {
            conn,
            scripts: Arc::new(Scripts::new()),
            prefix: config.prefix.into(),
            retention_ms: millis(config.retention).min(MAX_LIFETIME_MS),
        };
        store.load_scripts().await?;
        Ok(store)
    }

    /// The key prefix this store writes under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Loads every script into Redis (at start; again after a Redis restart if you like —
    /// calls also reload a missing script on their own).
    pub async fn load_scripts(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        self.scripts
            .load_all(&mut conn)
            .await
            .map_err(backend_error)
    }

    /// Readiness: Redis answers and has every script cached.
    pub async fn scripts_loaded(&self) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        self.scripts
            .all_loaded(&mut conn)
            .await
            .map_err(backend_error)
    }

    /// Loads whichever scripts Redis lost (a restart, a failover, `SCRIPT FLUSH`); returns
    /// whether any was missing. Readiness calls it: a replica whose probe only reported the
    /// loss would be taken out of rotation and never get the call that reloads them.
    pub async fn ensure_scripts_loaded(&self) -> StoreResult<bool> {
        if self.scripts_loaded().await? {
            return Ok(false);
        }
        self.load_scripts().await?;
        Ok(true)
    }

    /// The SHA1 of the reserve script (for `redis-benchmark EVALSHA` comparisons).
    pub fn reserve_script_sha(&self) -> &str {
        self.scripts.reserve.get_hash()
    }

    fn keys(&self, sku: &Sku) -> SkuKeys {
        SkuKeys::new(&self.prefix, sku)
    }

    /// Runs one script and splits its reply; on `NOSCRIPT` loads it and runs it again (a few
    /// times: another `SCRIPT FLUSH` may land between the load and the run).
    async fn run(&self, script: &Script, keys: &[&str], args: &[&str]) -> StoreResult<Vec<String>> {
        const LOADS: usize = 3;
        let cmd = evalsha(script, keys, args);
        let mut conn = self.conn.clone();
        let mut loads = 0;
        loop {
            match cmd.query_async::<Value>(&mut conn).await {
                Ok(value) => return reply::fields(value),
                Err(err)
                    if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
                        && loads < LOADS =>
                {
                    loads += 1;
                    script.load_async(&mut conn).await.map_err(backend_error)?;
                }
                Err(err) => return Err(backend_error(err)),
            }
        }
    }

    async fn run_hold(&self, script: &Script, keys: &[&str], args: &[&str]) -> StoreResult<Hold> {
        reply::hold(&self.run(script, keys, args).await?)
    }

    /// Adds a SKU to the global set (outside the SKU's slot, so not in its script).
    async fn remember_sku(&self, sku: &Sku) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SADD")
            .arg(skus_key(&self.prefix))
            .arg(sku.as_str())
            .query_async::<()>(&mut conn)
            .await
            .map_err(backend_error)
    }

    /// The reserve script in one round trip with the cross-slot binding of its idempotency
    /// key: `SET <binding> "<sku>|<qty>|<id>" NX GET PX ..` then `EVALSHA reserve`. Returns
    /// the binding found before (None: this request wrote `mine`) and the script's answer.
    async fn reserve_round_trip(
        &self,
        request: &ReserveRequest,
        mine: &str,
        keys: &[&str],
        args: &[&str],
        record_ms: u64,
    ) -> StoreResult<(Option<String>, StoreResult<Reservation>)> {
        let script = &self.scripts.reserve;
        let mut set = redis::cmd("SET");
        set.arg(binding_key(
            &self.prefix,
            &request.buyer,
            &request.idempotency_key,
        ))
        .arg(mine)
        .arg("NX")
        .arg("GET")
        .arg("PX")
        .arg(record_ms);
        let (bound, answer) = self.send_pair(set, evalsha(script, keys, args)).await?;
        let answer = match answer {
            // Redis lost its script cache (restart, SCRIPT FLUSH). The SET already ran and its
            // answer is kept; only the script is loaded and sent again.
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.run(script, keys, args).await
            }
            Err(err) => Err(backend_error(err)),
            Ok(answer) => reply::fields(answer),
        }
        .and_then(|f| reservation(&f));
        let earlier = match bound {
            Ok(Value::Nil) => Ok(None),
            Err(err) => Err(backend_error(err)),
            Ok(other) => redis::from_redis_value::<String>(other)
                .map(Some)
                .map_err(|e| ReservationError::backend(false, format!("idempotency binding: {e}"))),
        };
        match earlier {
            Ok(earlier) => Ok((earlier, answer)),
            Err(err) => {
                // The binding could not be checked (e.g. its key has the wrong type): refuse,
                // and take back any hold the script made for this request.
                if let Ok(made) = &answer
                    && !made.replayed
                {
                    self.undo_reserve(&made.hold, keys).await;
                }
                Err(err)
            }
        }
    }
}

impl RedisStore {
    /// Two commands in one round trip, each answered on its own (an error in one, such as
    /// NOSCRIPT, does not hide the other's reply). On one server they go as a pipeline; on a
    /// cluster side by side, since they live in different slots and a cluster pipeline must
    /// stay in one. Neither order was ever relied on: other clients' commands interleave
    /// between a pipeline's commands on one server too.
    async fn send_pair(
        &self,
        first: Cmd,
        second: Cmd,
    ) -> StoreResult<(RedisResult<Value>, RedisResult<Value>)> {
        let mut conn = self.conn.clone();
        if conn.is_cluster() {
            let mut other = conn.clone();
            return Ok(tokio::join!(
                first.query_async::<Value>(&mut conn),
                second.query_async::<Value>(&mut other)
            ));
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.add_command(first).add_command(second);
        let replies: Vec<Value> = pipe.query_async(&mut conn).await.map_err(backend_error)?;
        let [a, b] = <[Value; 2]>::try_from(replies)
            .map_err(|_| ReservationError::backend(false, "pipeline: expected 2 replies"))?;
        let result = |v: Value| match v {
            Value::ServerError(err) => Err(RedisError::from(err)),
            other => Ok(other),
        };
        Ok((result(a), result(b)))
    }
}

/// The SKU and quantity a binding's value names: `"<sku>|<qty>|<reservation id>"`, or
/// `"<sku>|<qty>"` as older versions wrote it (a SKU never contains `|`).
fn bound_body(value: &str) -> &str {
    match value.match_indices('|').nth(1) {
        Some((end, _)) => &value[..end],
        None => value,
    }
}

/// A reserve reply's fields: replayed flag, then the hold.
fn reservation(f: &[String]) -> StoreResult<Reservation> {
    let (replayed, hold) = f.split_first().ok_or_else(|| {
        ReservationError::backend(false, "malformed script reply: empty reservation")
    })?;
    Ok(Reservation {
        hold: reply::hold(hold)?,
        replayed: replayed == "1",
    })
}

#[async_trait]
impl ReservationStore for RedisStore {
    async fn ensure_ready(&self) -> StoreResult<bool> {
        self.ensure_scripts_loaded().await
    }

    async fn configure_product(
        &self,
        sku: &Sku,
        stock: &ProductStock,
    ) -> StoreResult<StockSnapshot> {
        stock.validate()?;
        let k = self.keys(sku);
        let (total, limit, max) = (
            stock.total_stock.to_string(),
            stock.per_buyer_limit.to_string(),
            stock.max_per_order.to_string(),
        );
        let f = self
            .run(
                &self.scripts.configure_product,
                &[&k.stock, &k.repair],
                &[&total, &limit, &max, stock.sale_state.as_str()],
            )
            .await?;
        let snapshot = reply::snapshot(sku, &f)?;
        self.remember_sku(sku).await?;
        Ok(snapshot)
    }

    async fn reserve(&self, request: &ReserveRequest) -> StoreResult<Reservation> {
        let k = self.keys(&request.sku);
        let id = ReservationId::generate(&request.sku);
        let hold_key = k.hold(&id);
        let idem_key = k.idempotency(&request.buyer, &request.idempotency_key);
        let ttl_ms = request.hold_ttl_ms.min(MAX_LIFETIME_MS);
        // The idempotency records outlive the hold by the retention, counted from the latest
        // moment the hold can still be held; a final hold renews them for one more retention.
        let record_ms = (ttl_ms + self.retention_ms).max(1);
        let (ttl, record, qty) = (
            ttl_ms.to_string(),
            record_ms.to_string(),
            request.qty.get().to_string(),
        );
        let body = format!("{}|{}", request.sku, request.qty.get());
        // Unique to this request (the id of the hold it would make), so that a refused
        // request's cleanup can tell its own binding from an equal one another request wrote.
        let mine = format!("{body}|{id}");
        let index_key = k.buyer_holds(&request.buyer);
        let keys = [
            k.stock.as_str(),
            &k.buyers,
            &k.expiry,
            &idem_key,
            &hold_key,
            &index_key,
        ];
        let args = [
            id.as_str(),
            request.buyer.as_str(),
            &qty,
            &ttl,
            &k.hold_prefix,
            &record,
        ];
        let (earlier, answer) = self
            .reserve_round_trip(request, &mine, &keys, &args, record_ms)
            .await?;

        if let Some(earlier) = &earlier
            && bound_body(earlier) != body
        {
            // The key belongs to another SKU or quantity. If the script (which cannot see
            // the binding, it lives in another slot) took units for this request, give them
            // back at once. Only a misusing client gets here. An unknown SKU is answered as
            // such (the documented order checks the SKU first).
            return match answer {
                Err(ReservationError::UnknownSku) => answer,
                Ok(made) => {
                    if !made.replayed {
                        self.undo_reserve(&made.hold, &keys).await;
                    }
                    Err(ReservationError::IdempotencyMismatch)
                }
                Err(_) => Err(ReservationError::IdempotencyMismatch),
            };
        }
        match (earlier, answer) {
            // Refused, and this request wrote the binding: delete it again, so the refusal
            // leaves nothing behind. After a backend error the script may have made a hold,
            // so its binding stays (it expires with the hold's records).
            (None, Err(refusal)) if !matches!(refusal, ReservationError::Backend { .. }) => {
                self.drop_binding(request, &mine).await;
                Err(refusal)
            }
            // A new hold under a binding another request wrote with the same body. That
            // request may be refused and delete it: make the binding this request's own.
            (Some(_), Ok(made)) if !made.replayed => {
                self.claim_binding(request, &mine, &body, record_ms, &made.hold, &keys)
                    .await?;
                Ok(made)
            }
            (_, answer) => answer,
        }
    }

    async fn get_hold(&self, id: &ReservationId) -> StoreResult<Hold> {
        let k = self.keys(&id.sku());
        self.run_hold(&self.scripts.get_hold, &[&k.hold(id)], &[id.as_str()])
            .await
    }

    async fn release(&self, id: &ReservationId, buyer: &BuyerId) -> StoreResult<Hold> {
        let k = self.keys(&id.sku());
        let retention = self.retention_ms.to_string();
        self.run_hold(
            &self.scripts.release,
            &[&k.stock, &k.buyers, &k.expiry, &k.hold(id)],
            &[id.as_str(), buyer.as_str(), &retention],
        )
        .await
    }

    async fn begin_confirm(&self, id: &ReservationId, buyer: &BuyerId) -> StoreResult<Hold> {
        let k = self.keys(&id.sku());
        let retention = self.retention_ms.to_string();
        self.run_hold(
            &self.scripts.begin_confirm,
            &[&k.stock, &k.buyers, &k.expiry, &k.confirming, &k.hold(id)],
            &[id.as_str(), buyer.as_str(), &retention],
        )
        .await
    }

    async fn finish_confirm(&self, id: &ReservationId) -> StoreResult<Hold> {
        let k = self.keys(&id.sku());
        let retention = self.retention_ms.to_string();
        self.run_hold(
            &self.scripts.finish_confirm,
            &[&k.stock, &k.confirming, &k.hold(id), &k.repair],
            &[id.as_str(), &retention],
        )
        .await
    }

    async fn abort_confirm(&self, id: &ReservationId, to: AbortTo) -> StoreResult<Hold> {
        let k = self.keys(&id.sku());
        let retention = self.retention_ms.to_string();
        let to = match to {
            AbortTo::Held => "held",
            AbortTo::Released => "released",
        };
        self.run_hold(
            &self.scripts.abort_confirm,
            &[&k.stock, &k.buyers, &k.expiry, &k.confirming, &k.hold(id)],
            &[id.as_str(), to, &retention],
        )
        .await
    }

    async fn expire_due(&self, sku: &Sku, batch: usize) -> StoreResult<Vec<Hold>> {
        let k = self.keys(sku);
        if batch == 0 {
            // ZRANGEBYSCORE .. LIMIT 0 0 would be empty anyway, but the SKU must still exist.
            self.snapshot(sku).await?;
            return Ok(Vec::new());
        }
        let (batch, retention) = (batch.to_string(), self.retention_ms.to_string());
        let f = self
            .run(
                &self.scripts.expire_due,
                &[&k.stock, &k.buyers, &k.expiry],
                &[&batch, &k.hold_prefix, &retention],
            )
            .await?;
        reply::holds(&f)
    }

    async fn confirming_holds(&self, sku: &Sku) -> StoreResult<Vec<ConfirmingHold>> {
        let k = self.keys(sku);
        let f = self
            .run(
                &self.scripts.confirming_holds,
                &[&k.stock, &k.confirming],
                &[&k.hold_prefix],
            )
            .await?;
        let mut holds = reply::confirming_holds(&f)?;
        // A set has no order; callers get a stable one.
        holds.sort_by(|a, b| a.hold.id.cmp(&b.hold.id));
        Ok(holds)
    }

    async fn buyer_holds(
        &self,
        sku: &Sku,
        buyer: &BuyerId,
        limit: usize,
    ) -> StoreResult<Vec<Hold>> {
        let k = self.keys(sku);
        let limit = limit.to_string();
        let f = self
            .run(
                &self.scripts.list_buyer_holds,
                &[&k.buyer_holds(buyer), &k.stock],
                &[&k.hold_prefix, &limit],
            )
            .await?;
        reply::holds(&f)
    }

    async fn return_cancelled(
        &self,
        id: &ReservationId,
        buyer: &BuyerId,
        qty: Qty,
    ) -> StoreResult<bool> {
        let k = self.keys(&id.sku());
        let (units, retention) = (qty.get().to_string(), self.retention_ms.to_string());
        let f = self
            .run(
                &self.scripts.return_cancelled,
                &[
                    &k.stock,
                    &k.buyers,
                    &k.returned(id),
                    &k.confirming,
                    &k.hold(id),
                    &k.returned_legacy,
                    &k.repair,
                ],
                &[id.as_str(), buyer.as_str(), &units, &retention],
            )
            .await?;
        Ok(f.first().map(String::as_str) == Some("1"))
    }

    async fn begin_repair(&self, sku: &Sku) -> StoreResult<RepairStart> {
        let k = self.keys(sku);
        let ticket = RepairTicket::generate();
        let lifetime = REPAIR_JOURNAL_TTL.as_millis().to_string();
        let ids = self
            .run(
                &self.scripts.begin_repair,
                &[&k.repair, &k.confirming],
                &[ticket.as_str(), &lifetime],
            )
            .await?;
        let mut confirming = ids
            .iter()
            .map(|id| {
                ReservationId::parse(id).map_err(|_| {
                    ReservationError::backend(false, format!("bad id in confirming set: {id}"))
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        confirming.sort();
        Ok(RepairStart { ticket, confirming })
    }

    async fn repair_counters(
        &self,
        sku: &Sku,
        stock: &ProductStock,
        sold: &SoldUnits,
        ticket: &RepairTicket,
    ) -> StoreResult<StockSnapshot> {
        stock.validate()?;
        let k = self.keys(sku);
        let mut args = vec![
            stock.total_stock.to_string(),
            stock.per_buyer_limit.to_string(),
            stock.max_per_order.to_string(),
            stock.sale_state.as_str().to_owned(),
            sold.total.to_string(),
            k.hold_prefix.clone(),
            k.returned_prefix.clone(),
            self.retention_ms.to_string(),
            ticket.as_str().to_owned(),
            sold.by_buyer.len().to_string(),
        ];
        for (buyer, units) in &sold.by_buyer {
            args.push(buyer.as_str().to_owned());
            args.push(units.to_string());
        }
        args.push(sold.ordered.len().to_string());
        args.extend(sold.ordered.iter().map(|id| id.as_str().to_owned()));
        args.push(sold.cancelled.len().to_string());
        args.extend(sold.cancelled.iter().map(|id| id.as_str().to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let f = self
            .run(
                &self.scripts.repair_counters,
                &[&k.stock, &k.buyers, &k.expiry, &k.confirming, &k.repair],
                &args,
            )
            .await?;
        let snapshot = reply::snapshot(sku, &f)?;
        self.remember_sku(sku).await?;
        Ok(snapshot)
    }

    async fn snapshot(&self, sku: &Sku) -> StoreResult<StockSnapshot> {
        // One HMGET is atomic on its own: no script needed to read the counters.
        let k = self.keys(sku);
        let mut conn = self.conn.clone();
        let values: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&k.stock)
            .arg(&[
                "total",
                "available",
                "held",
                "confirming",
                "sold",
                "limit",
                "max",
                "state",
            ])
            .query_async(&mut conn)
            .await
            .map_err(backend_error)?;
        let Some(values) = values.into_iter().collect::<Option<Vec<String>>>() else {
            return Err(ReservationError::UnknownSku);
        };
        reply::snapshot(sku, &values)
    }

    async fn skus(&self) -> StoreResult<Vec<Sku>> {
        let mut conn = self.conn.clone();
        let names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(skus_key(&self.prefix))
            .query_async(&mut conn)
            .await
            .map_err(backend_error)?;
        let mut skus = names
            .iter()
            .map(|name| {
                Sku::parse(name).map_err(|_| {
                    ReservationError::backend(false, format!("bad sku in set: {name}"))
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        skus.sort();
        Ok(skus)
    }
}

impl RedisStore {
    /// Deletes the binding a refused reserve wrote, if it still holds this request's value
    /// (`mine`). Best effort: if it fails, the binding lasts until its lifetime ends (the
    /// same request again is then decided afresh; another body under the key is refused).
    async fn drop_binding(&self, request: &ReserveRequest, mine: &str) {
        let key = binding_key(&self.prefix, &request.buyer, &request.idempotency_key);
        if let Err(err) = self.run(&self.scripts.drop_binding, &[&key], &[mine]).await {
            tracing::warn!(error = %err, key, "could not drop the binding of a refused reserve");
        }
    }

    /// Makes the binding of a hold just made hold this request's value (`mine`), replacing an
    /// equal one another request wrote. If the key was bound to another SKU or quantity
    /// meanwhile, or the binding cannot be written, the hold is taken back and the reserve
    /// refused: a hold is never left without its binding.
    async fn claim_binding(
        &self,
        request: &ReserveRequest,
        mine: &str,
        body: &str,
        record_ms: u64,
        hold: &Hold,
        keys: &[&str],
    ) -> StoreResult<()> {
        let key = binding_key(&self.prefix, &request.buyer, &request.idempotency_key);
        let record = record_ms.to_string();
        let claimed = self
            .run(&self.scripts.claim_binding, &[&key], &[mine, body, &record])
            .await;
        if let Err(err) = claimed {
            self.undo_reserve(hold, keys).await;
            return Err(err);
        }
        Ok(())
    }

    /// Erases a hold made for a request whose idempotency key was bound elsewhere, with its
    /// per-SKU idempotency record, so a later request under the key sees no trace of it.
    /// `keys` are the reserve's KEYS. Best effort: if it fails, the hold returns to stock when
    /// it expires.
    async fn undo_reserve(&self, hold: &Hold, keys: &[&str]) {
        let undone = self
            .run(&self.scripts.undo_reserve, keys, &[hold.id.as_str()])
            .await;
        if let Err(err) = undone {
            tracing::warn!(error = %err, reservation_id = %hold.id, "could not undo a hold made under a mismatched idempotency key");
        }
    }
}
