//! The reconciler against the real Redis store and PostgreSQL: it resolves holds stuck in
//! `confirming` from SQL, reports drift after Redis lost this test's keys (deleted by prefix,
//! not FLUSHALL, because other tests share the server), and `repair` rebuilds the counters
//! from SQL. The sweeper expires due holds.

mod common;

use std::sync::Arc;
use std::time::Duration;

use backend_adapters::redis::{RedisStore, RedisStoreConfig};
use backend_adapters::sql::Db;
use common::{TestApp, start_with, test_config};
use reservation_core::{
    BuyerId, Hold, HoldState, IdempotencyKey, Qty, ReservationClaims, ReservationStore,
    ReserveRequest, Sku,
};
use settlement::maintenance::{ReconcileOptions, reconcile, sweep};
use testkit::{AsGateway, delete_keys_under, ops, redis_url, scratch_prefix};

/// The Redis reservation store under this test's own key prefix.
async fn store_under(prefix: &str) -> anyhow::Result<RedisStore> {
    let config = RedisStoreConfig {
        prefix: prefix.to_owned(),
        ..RedisStoreConfig::default()
    };
    Ok(RedisStore::connect(&redis_url(), config).await?)
}

async fn reserve(store: &RedisStore, buyer: &str, key: &str, ttl_ms: u64) -> anyhow::Result<Hold> {
    let reservation = store
        .reserve(&ReserveRequest {
            sku: Sku::parse("REC")?,
            buyer: BuyerId::parse(buyer)?,
            qty: Qty::new(1)?,
            idempotency_key: IdempotencyKey::parse(key)?,
            hold_ttl_ms: ttl_ms,
        })
        .await?;
    Ok(reservation.hold)
}

/// Begin-confirm and settle, as the gateway does; `finish` says whether the gateway lived to
/// call `finish_confirm`.
async fn buy(app: &TestApp, store: &RedisStore, hold: &Hold, finish: bool) -> anyhow::Result<()> {
    let hold = store.begin_confirm(&hold.id, &hold.buyer).await?;
    let token = app.signer.sign(&ReservationClaims::for_hold(&hold))?;
    let settled = app.settle(hold.buyer.as_str(), &token).await?;
    anyhow::ensure!(settled.status() == 201, "settle: {}", settled.status());
    if finish {
        store.finish_confirm(&hold.id).await?;
    }
    Ok(())
}

/// Where the repair-race tests start: the service on a fresh schema, the Redis store under a
/// fresh prefix, product REC with 10 units.
struct Rec {
    prefix: String,
    store: RedisStore,
    app: TestApp,
    db: Db,
    redis: redis::aio::MultiplexedConnection,
    sku: Sku,
    /// `<prefix>:{REC}:stock`.
    stock_key: String,
}

async fn rec() -> anyhow::Result<Rec> {
    let prefix = scratch_prefix("reconcile");
    let store = store_under(&prefix).await?;
    let db_url = testkit::scratch_schema("reconcile").await;
    let app = start_with(test_config(&db_url), Arc::new(store.clone())).await?;
    app.put_product("REC", 10).await?;
    let redis = redis::Client::open(redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    Ok(Rec {
        stock_key: format!("{}:{{REC}}:stock", store.prefix()),
        prefix,
        store,
        app,
        db: Db::connect(&db_url, 4).await?,
        redis,
        sku: Sku::parse("REC")?,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_resolves_confirming_and_repairs_counters_after_redis_lost_data()
-> anyhow::Result<()> {
    let prefix = scratch_prefix("reconcile");
    let store = store_under(&prefix).await?;
    let db_url = testkit::scratch_schema("reconcile").await;
    let app = start_with(test_config(&db_url), Arc::new(store.clone())).await?;
    app.put_product("REC", 50).await?;
    let sku = Sku::parse("REC")?;

    for i in 0..8 {
        let hold = reserve(&store, &format!("b{i}"), "k", 60_000).await?;
        buy(&app, &store, &hold, true).await?;
    }
    // The gateway died after SQL committed this one, and before settling that one.
    let committed = reserve(&store, "late", "k", 60_000).await?;
    buy(&app, &store, &committed, false).await?;
    let orphan = reserve(&store, "orphan", "k", 60_000).await?;
    store.begin_confirm(&orphan.id, &orphan.buyer).await?;

    let db = Db::connect(&db_url, 2).await?;
    let resolve = ReconcileOptions {
        repair: false,
        confirming_grace: Some(Duration::ZERO),
    };
    let report = reconcile(&db, &store, None, resolve).await?;
    let rec = &report.skus[0];
    assert_eq!((rec.confirming_confirmed, rec.confirming_released), (1, 1));
    assert!(report.ok, "{report:?}");
    assert_eq!(
        store.get_hold(&committed.id).await?.state,
        HoldState::Confirmed
    );
    assert_eq!(store.get_hold(&orphan.id).await?.state, HoldState::Released);
    let snap = store.snapshot(&sku).await?;
    assert_eq!((snap.sold, snap.available, snap.confirming), (9, 41, 0));

    // Redis loses every key of this test.
    assert!(delete_keys_under(&prefix).await > 0);
    let report = reconcile(&db, &store, None, resolve).await?;
    assert!(!report.ok);
    assert!(report.skus[0].store.is_none(), "{report:?}");

    let repair = ReconcileOptions {
        repair: true,
        ..resolve
    };
    let report = reconcile(&db, &store, None, repair).await?;
    assert!(report.skus[0].repaired);
    let snap = store.snapshot(&sku).await?;
    assert_eq!(
        (snap.total_stock, snap.sold, snap.available, snap.held),
        (50, 9, 41, 0)
    );
    assert!(snap.is_balanced());
    assert!(reconcile(&db, &store, None, resolve).await?.ok);

    // The rebuilt counters serve reservations again.
    reserve(&store, "after", "k2", 60_000).await?;
    assert_eq!(store.snapshot(&sku).await?.available, 40);
    app.running.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_returns_due_holds_to_stock() -> anyhow::Result<()> {
    let prefix = scratch_prefix("reconcile");
    let store = store_under(&prefix).await?;
    let app = start_with(
        test_config(&testkit::scratch_schema("reconcile").await),
        Arc::new(store.clone()),
    )
    .await?;
    app.put_product("REC", 10).await?;
    for i in 0..5 {
        reserve(&store, &format!("s{i}"), "k", 50).await?;
    }
    reserve(&store, "keeper", "k", 60_000).await?;
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(sweep(&store, 2).await?, 5);
    let snap = store.snapshot(&Sku::parse("REC")?).await?;
    assert_eq!((snap.available, snap.held), (9, 1));
    Ok(())
}

/// The service's own maintenance task, under its Redis leader lease, expires due holds
/// without anyone calling the sweeper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_service_sweeps_under_its_leader_lease() -> anyhow::Result<()> {
    let prefix = scratch_prefix("reconcile");
    let store = store_under(&prefix).await?;
    let mut config = test_config(&testkit::scratch_schema("reconcile").await);
    config.redis_url = Some(redis_url());
    config.redis_key_prefix = prefix.clone();
    config.outbox.stream = format!("{prefix}:events");
    config.maintenance.enabled = true;
    config.maintenance.sweep_interval_ms = 30;
    let app = start_with(config, Arc::new(store.clone())).await?;
    app.put_product("REC", 10).await?;
    reserve(&store, "s", "k", 50).await?;
    let sku = Sku::parse("REC")?;
    let mut snap = store.snapshot(&sku).await?;
    for _ in 0..100 {
        if snap.held == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        snap = store.snapshot(&sku).await?;
    }
    assert_eq!((snap.available, snap.held), (10, 0));
    assert!(app.running.metrics.holds_expired.get() >= 1);
    app.running.shutdown().await;
    Ok(())
}

/// Issue 13.5: the buyer cancels an order whose gateway never finished the confirm (the hold is
/// still `confirming`). The relay's `return_cancelled` finishes the hold and returns the units;
/// before, it refused (`sold` was short), the relay dropped the error, and the units stayed
/// off sale while the drift report called the positive drift fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_before_the_gateway_finished_its_confirm_returns_the_units() -> anyhow::Result<()>
{
    use backend_adapters::sql::orders::{self, CancelOutcome};
    use settlement::relay::{RelayChannel, relay_once};
    use settlement::{Metrics, OutboxSink, StoreEffects};

    let store = store_under(&scratch_prefix("reconcile")).await?;
    let db_url = testkit::scratch_schema("reconcile").await;
    let app = start_with(test_config(&db_url), Arc::new(store.clone())).await?;
    app.put_product("REC", 10).await?;
    let sku = Sku::parse("REC")?;
    let hold = reserve(&store, "carl", "k", 60_000).await?;
    buy(&app, &store, &hold, false).await?;
    assert_eq!(store.snapshot(&sku).await?.confirming, 1);

    let db = Db::connect(&db_url, 2).await?;
    let order = orders::by_reservation(&db, hold.id.as_str())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no order"))?;
    let cancelled = orders::cancel(&db, &order.id, "carl", order.version).await?;
    assert!(matches!(cancelled, CancelOutcome::Cancelled(_)));

    let metrics = Metrics::new(&prometheus::Registry::new())?;
    let effects: Arc<dyn OutboxSink> = Arc::new(StoreEffects {
        store: Arc::new(store.clone()),
        metrics: metrics.clone(),
    });
    relay_once(&db, &RelayChannel::redis(vec![effects], false), 100).await?;
    assert_eq!(metrics.relay_effects_failed.get(), 0);
    let snap = store.snapshot(&sku).await?;
    assert_eq!(
        (snap.available, snap.held, snap.confirming, snap.sold),
        (10, 0, 0, 0)
    );
    assert_eq!(store.get_hold(&hold.id).await?.state, HoldState::Confirmed);
    // The gateway's late finish changes nothing, and the report agrees with SQL.
    store.finish_confirm(&hold.id).await?;
    assert_eq!(store.snapshot(&sku).await?.available, 10);
    let resolve = ReconcileOptions {
        repair: false,
        confirming_grace: Some(Duration::ZERO),
    };
    let report = reconcile(&db, &store, None, resolve).await?;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.skus[0].sold_drift, 0);
    app.running.shutdown().await;
    Ok(())
}

/// Issue 15.3: a repair while a committed order's hold is still `confirming` and a
/// cancellation is not yet relayed. Before, the repair set sold from SQL *and* counted the
/// hold as confirming (available short), the gateway's late finish added it again, the report
/// called the positive drift fine, and the late cancellation was returned twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_never_undersells_nor_returns_a_cancellation_twice() -> anyhow::Result<()> {
    use backend_adapters::sql::orders::{self, CancelOutcome};
    use settlement::relay::{RelayChannel, relay_once};
    use settlement::{Metrics, OutboxSink, StoreEffects};

    let prefix = scratch_prefix("reconcile");
    let store = store_under(&prefix).await?;
    let db_url = testkit::scratch_schema("reconcile").await;
    let app = start_with(test_config(&db_url), Arc::new(store.clone())).await?;
    app.put_product("REC", 10).await?;
    let sku = Sku::parse("REC")?;
    let db = Db::connect(&db_url, 2).await?;
    // Redis lost its copy of the SKU's stock hash fields for sold (the kind of loss repair is
    // for): settle one order fully, then mangle the counters.
    let done = reserve(&store, "ann", "k", 60_000).await?;
    buy(&app, &store, &done, true).await?;
    // A committed order whose gateway has not finished it yet.
    let unfinished = reserve(&store, "ben", "k", 60_000).await?;
    buy(&app, &store, &unfinished, false).await?;
    // A cancellation not yet relayed.
    let order = orders::by_reservation(&db, done.id.as_str())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no order"))?;
    let cancelled = orders::cancel(&db, &order.id, "ann", order.version).await?;
    assert!(matches!(cancelled, CancelOutcome::Cancelled(_)));
    let mut redis = redis::Client::open(redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let stock_key = format!("{}:{{REC}}:stock", store.prefix());
    let _: () = redis::cmd("HSET")
        .arg(&stock_key)
        .arg(&["sold", "7"])
        .query_async(&mut redis)
        .await?;

    let repair = ReconcileOptions {
        repair: true,
        confirming_grace: None,
    };
    let report = reconcile(&db, &store, None, repair).await?;
    assert!(report.skus[0].repaired, "{report:?}");
    let snap = store.snapshot(&sku).await?;
    // SQL: 1 live unit (ben's), none in flight; ann's is cancelled.
    assert_eq!(
        (snap.available, snap.held, snap.confirming, snap.sold),
        (9, 0, 0, 1),
        "{snap:?}"
    );
    // The gateway finishes ben's hold late, the relay delivers ann's cancellation late:
    // neither changes the counters.
    store.finish_confirm(&unfinished.id).await?;
    let metrics = Metrics::new(&prometheus::Registry::new())?;
    let effects: Arc<dyn OutboxSink> = Arc::new(StoreEffects {
        store: Arc::new(store.clone()),
        metrics,
    });
    while relay_once(&db, &RelayChannel::redis(vec![effects.clone()], false), 100).await? > 0 {}
    let snap = store.snapshot(&sku).await?;
    assert_eq!((snap.available, snap.sold), (9, 1), "{snap:?}");
    let check = ReconcileOptions {
        repair: false,
        confirming_grace: None,
    };
    let report = reconcile(&db, &store, None, check).await?;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.skus[0].unexplained_drift, 0);

    // Drift the explanation does not cover is not ok: units off sale.
    let _: () = redis::cmd("HINCRBY")
        .arg(&stock_key)
        .arg("sold")
        .arg(1)
        .query_async(&mut redis)
        .await?;
    let _: () = redis::cmd("HINCRBY")
        .arg(&stock_key)
        .arg("available")
        .arg(-1)
        .query_async(&mut redis)
        .await?;
    let report = reconcile(&db, &store, None, check).await?;
    assert!(!report.ok, "positive drift is not fine: {report:?}");
    assert_eq!(report.skus[0].unexplained_drift, 1);
    app.running.shutdown().await;
    Ok(())
}

/// Issue 15.3, the race left: a repair reads SQL, then a confirm commits *and* its gateway
/// finishes it in Redis, then the repair writes the counters (and again with a cancellation
/// the relay returns in that window). The store's journal of the window lets the repair count
/// what its SQL snapshot missed. Before, the first left `sold` one short and `available` one
/// over (the unit sold twice in Redis) and the buyer's count short; the second left `sold` one
/// over for good (a unit off sale: the late return was already marked done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_racing_a_finish_or_a_return_keeps_the_counters_exact() -> anyhow::Result<()> {
    use backend_adapters::sql::{orders, products};
    use settlement::maintenance::{apply_repair, prepare_repair};
    use settlement::relay::{RelayChannel, relay_once};
    use settlement::{Metrics, OutboxSink, StoreEffects};

    let Rec {
        prefix,
        store,
        app,
        db,
        mut redis,
        sku,
        stock_key,
    } = rec().await?;
    let buyers_key = format!("{}:{{REC}}:buyers", store.prefix());
    let ann = reserve(&store, "ann", "k", 60_000).await?;
    buy(&app, &store, &ann, true).await?;
    let metrics = Metrics::new(&prometheus::Registry::new())?;
    let effects: Arc<dyn OutboxSink> = Arc::new(StoreEffects {
        store: Arc::new(store.clone()),
        metrics,
    });
    while relay_once(&db, &RelayChannel::redis(vec![effects.clone()], false), 100).await? > 0 {}
    let product = || async {
        products::get(&db, "REC")
            .await?
            .ok_or_else(|| anyhow::anyhow!("no product"))
    };

    // 1. Redis lost `sold`; the repair reads SQL (ann's unit), then eve's confirm commits and
    //    its gateway finishes it in Redis, then the repair writes.
    let _: () = redis::cmd("HSET")
        .arg(&stock_key)
        .arg(&["sold", "7"])
        .query_async(&mut redis)
        .await?;
    let repair = prepare_repair(&db, &store, &product().await?).await?;
    let eve = reserve(&store, "eve", "k", 60_000).await?;
    buy(&app, &store, &eve, true).await?;
    apply_repair(&store, &repair).await?;
    let snap = store.snapshot(&sku).await?;
    assert_eq!(
        (snap.available, snap.held, snap.confirming, snap.sold),
        (8, 0, 0, 2),
        "{snap:?}"
    );
    let eve_units: Option<u64> = redis::cmd("HGET")
        .arg(&buyers_key)
        .arg("eve")
        .query_async(&mut redis)
        .await?;
    assert_eq!(
        eve_units,
        Some(1),
        "eve's bought unit counts toward her limit"
    );

    // 2. The repair reads SQL (ann's order live), then ann cancels and the relay returns the
    //    unit, then the repair writes.
    let _: () = redis::cmd("HSET")
        .arg(&stock_key)
        .arg(&["sold", "7"])
        .query_async(&mut redis)
        .await?;
    let repair = prepare_repair(&db, &store, &product().await?).await?;
    let order = orders::by_reservation(&db, ann.id.as_str())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no order"))?;
    let cancelled = orders::cancel(&db, &order.id, "ann", order.version).await?;
    assert!(matches!(cancelled, orders::CancelOutcome::Cancelled(_)));
    while relay_once(&db, &RelayChannel::redis(vec![effects.clone()], false), 100).await? > 0 {}
    apply_repair(&store, &repair).await?;
    let snap = store.snapshot(&sku).await?;
    assert_eq!(
        (snap.available, snap.held, snap.confirming, snap.sold),
        (9, 0, 0, 1),
        "{snap:?}"
    );
    let ann_units: Option<u64> = redis::cmd("HGET")
        .arg(&buyers_key)
        .arg("ann")
        .query_async(&mut redis)
        .await?;
    assert_eq!(ann_units, None, "ann's cancelled unit no longer counts");

    // Late duplicates change nothing, and the report agrees with SQL.
    store.finish_confirm(&eve.id).await?;
    while relay_once(&db, &RelayChannel::redis(vec![effects.clone()], false), 100).await? > 0 {}
    assert_eq!(store.snapshot(&sku).await?.available, 9);
    let check = ReconcileOptions {
        repair: false,
        confirming_grace: None,
    };
    let report = reconcile(&db, &store, None, check).await?;
    assert!(report.ok, "{report:?}");
    app.running.shutdown().await;
    delete_keys_under(&prefix).await;
    Ok(())
}

/// An ops `PUT` of REC's settings, as the gateway sends it.
async fn edit(app: &TestApp, total: i64, limit: i64, state: &str) -> anyhow::Result<()> {
    let response = app
        .http
        .put(app.url("/api/v1/admin/products/REC"))
        .header("if-match", "*")
        .json(&serde_json::json!({
            "name": "REC tee", "price_cents": 1999, "total_stock": total,
            "per_buyer_limit": limit, "max_per_order": 10, "sale_state": state
        }))
        .send_as(&app.gateway, ops("olga"))
        .await?;
    anyhow::ensure!(response.status() == 200, "edit: {}", response.status());
    Ok(())
}

/// An ops edit of the product while `reconcile --repair` runs stands. The repair used to
/// write the settings of the product list it read when the run began: an edit that came
/// before the SKU's turn (a sale paused, a restock, a lower limit) was undone in Redis, and
/// the paused SKU took orders again while SQL and the storefront said paused. Now the repair
/// writes the settings of its own SQL snapshot, an edit after that snapshot supersedes it, and
/// the report compares the settings too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ops_edit_during_a_repair_stands() -> anyhow::Result<()> {
    use backend_adapters::sql::products;
    use reservation_core::{ReservationError, SaleState};
    use settlement::maintenance::{MaintenanceError, apply_repair, prepare_repair};

    let Rec {
        prefix,
        store,
        app,
        db,
        mut redis,
        sku,
        stock_key,
    } = rec().await?;
    let settings =
        |s: &reservation_core::StockSnapshot| (s.total_stock, s.per_buyer_limit, s.sale_state);
    let lose_sold = |redis: &mut redis::aio::MultiplexedConnection| {
        let mut redis = redis.clone();
        let key = stock_key.clone();
        async move {
            let _: () = redis::cmd("HSET")
                .arg(&key)
                .arg(&["sold", "3"])
                .query_async(&mut redis)
                .await?;
            anyhow::Ok(())
        }
    };

    // 1. The run read the product list, then ops paused the sale and restocked, then the
    //    repair of REC began: it writes what SQL has now.
    lose_sold(&mut redis).await?;
    let read_when_the_run_began = products::get(&db, "REC").await?.unwrap();
    edit(&app, 30, 1, "paused").await?;
    let repair = prepare_repair(&db, &store, &read_when_the_run_began).await?;
    apply_repair(&store, &repair).await?;
    let snap = store.snapshot(&sku).await?;
    assert_eq!(settings(&snap), (30, 1, SaleState::Paused), "{snap:?}");
    assert_eq!(snap.available, 30);

    // 2. The repair read SQL, then ops edited: the edit stands, the repair is refused.
    lose_sold(&mut redis).await?;
    let repair = prepare_repair(&db, &store, &products::get(&db, "REC").await?.unwrap()).await?;
    edit(&app, 40, 2, "on_sale").await?;
    let err = apply_repair(&store, &repair).await.unwrap_err();
    assert!(
        matches!(
            err,
            MaintenanceError::Store(ReservationError::RepairSuperseded)
        ),
        "{err:?}"
    );
    let snap = store.snapshot(&sku).await?;
    assert_eq!(settings(&snap), (40, 2, SaleState::OnSale), "{snap:?}");

    // 3. The report sees a sale state Redis and SQL disagree on; the repair puts SQL's back.
    let _: () = redis::cmd("HSET")
        .arg(&stock_key)
        .arg(&["sold", "0", "available", "40", "state", "paused"])
        .query_async(&mut redis)
        .await?;
    let check = ReconcileOptions {
        repair: false,
        confirming_grace: None,
    };
    let report = reconcile(&db, &store, None, check).await?;
    assert!(!report.ok && !report.skus[0].settings_match, "{report:?}");
    let repair = ReconcileOptions {
        repair: true,
        ..check
    };
    reconcile(&db, &store, None, repair).await?;
    let report = reconcile(&db, &store, None, check).await?;
    assert!(report.ok, "{report:?}");
    assert_eq!(
        settings(&store.snapshot(&sku).await?),
        (40, 2, SaleState::OnSale)
    );
    app.running.shutdown().await;
    delete_keys_under(&prefix).await;
    Ok(())
}

/// An ops edit configures the store, then commits SQL. A repair that began between the two
/// read the old row and wrote it back over the edit (found by a second attacker review: a
/// paused sale back on sale in Redis, 3 units reserved of it). The repair now waits for the
/// edit's lock before it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_waits_for_an_edit_between_its_store_write_and_its_commit() -> anyhow::Result<()> {
    use backend_adapters::sql::products;
    use reservation_core::SaleState;
    use settlement::maintenance::{apply_repair, prepare_repair};

    let Rec {
        prefix,
        store,
        app,
        db,
        sku,
        ..
    } = rec().await?;
    let app = Arc::new(app);
    // A settle batch holding the product row: the edit's UPDATE waits on it after the edit
    // has configured the store.
    let mut row_lock = db.pool().begin().await?;
    sqlx::query("SELECT sku FROM products WHERE sku = 'REC' FOR UPDATE")
        .execute(&mut *row_lock)
        .await?;
    let editing = tokio::spawn({
        let app = app.clone();
        async move { edit(&app, 10, 1, "paused").await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.snapshot(&sku).await?.sale_state != SaleState::Paused {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the edit never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stale = products::get(&db, "REC").await?.unwrap();
    assert_eq!(
        stale.sale_state,
        SaleState::OnSale,
        "the edit has not committed"
    );
    let repairing = tokio::spawn({
        let (db, store) = (db.clone(), store.clone());
        async move {
            let repair = prepare_repair(&db, &store, &stale).await?;
            apply_repair(&store, &repair).await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    row_lock.commit().await?;
    editing.await??;
    repairing.await??;
    let snap = store.snapshot(&sku).await?;
    assert_eq!(
        (snap.per_buyer_limit, snap.sale_state),
        (1, SaleState::Paused),
        "{snap:?}"
    );
    delete_keys_under(&prefix).await;
    Ok(())
}

/// Issue 15.8: a replica that is not the leader (another holds both leases) still reports the
/// outbox lag, says it does not lead, and clears drift gauges it set as a former leader.
/// Before, only the leader updated the lag (a settlement without Redis showed a flat lag) and
/// a former leader's drift paged until restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_does_not_lead_reports_lag_and_clears_stale_drift() -> anyhow::Result<()> {
    use backend_adapters::redis::lock::FencedLock;

    let prefix = scratch_prefix("reconcile");
    let store = store_under(&prefix).await?;
    // Another replica holds both leases for the whole test.
    let other = FencedLock::connect(&redis_url(), &prefix).await?;
    for lease in ["leader:outbox-relay", "leader:maintenance"] {
        let held = other
            .try_acquire(lease, "other-replica", Duration::from_secs(60))
            .await?;
        anyhow::ensure!(held.is_some(), "could not take {lease}");
    }
    let mut config = test_config(&testkit::scratch_schema("reconcile").await);
    config.redis_url = Some(redis_url());
    config.redis_key_prefix = prefix.clone();
    config.outbox.stream = format!("{prefix}:events");
    config.maintenance.enabled = true;
    config.maintenance.sweep_interval_ms = 20;
    config.maintenance.reconcile_interval_ms = 20;
    let app = start_with(config, Arc::new(store.clone())).await?;
    let metrics = app.running.metrics.clone();
    // A value this replica left behind when it was the leader.
    metrics.drift_sold.with_label_values(&["REC"]).set(-5);
    app.put_product("REC", 10).await?;

    let mut reported = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let text = metrics.render();
        let stale_drift = text.contains("stockgate_reconcile_sold_drift{sku=\"REC\"}");
        if metrics.outbox_pending.get() >= 1 && !stale_drift {
            reported = true;
            break;
        }
    }
    assert!(reported, "{}", metrics.render());
    let text = metrics.render();
    assert!(
        text.contains("stockgate_settlement_leader{task=\"outbox_relay\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("stockgate_settlement_leader{task=\"maintenance\"} 0"),
        "{text}"
    );
    app.running.shutdown().await;
    Ok(())
}
