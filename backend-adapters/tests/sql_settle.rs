//! The SQL settlement repository against real PostgreSQL (each test in its own schema) and
//! SQLite (each test in its own file): idempotency under concurrent duplicates, no oversell
//! under 1,000 concurrent settlements, the partial-batch policy, cancel's optimistic lock, the
//! fence check, and outbox ordering. A missing PostgreSQL fails the tests.

use std::sync::Arc;

use backend_adapters::sql::fates::{self, Fate};
use backend_adapters::sql::orders::{self, CancelOutcome, StatusOutcome};
use backend_adapters::sql::outbox;
use backend_adapters::sql::products::{self, EditOutcome};
use backend_adapters::sql::{
    Db, OrderStatus, ProductUpsert, SettleOutcome, SettleRequest, settle_batch,
};
use reservation_core::{BuyerId, Qty, ReservationId, SaleState, Sku};

async fn postgres() -> anyhow::Result<Db> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".into());
    let db = Db::connect(
        &backend_adapters::sql::scratch_schema_url(&url, "sql").await?,
        20,
    )
    .await?;
    db.migrate().await?;
    Ok(db)
}

async fn sqlite() -> anyhow::Result<Db> {
    let path = std::env::temp_dir().join(format!("sg-{}.db", uuid::Uuid::new_v4().simple()));
    let db = Db::connect(&format!("sqlite://{}?mode=rwc", path.display()), 8).await?;
    db.migrate().await?;
    Ok(db)
}

/// Runs one case on both databases.
macro_rules! on_both {
    ($case:ident) => {
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() -> anyhow::Result<()> {
                super::$case(super::postgres().await?).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() -> anyhow::Result<()> {
                super::$case(super::sqlite().await?).await
            }
        }
    };
}

async fn product(db: &Db, sku: &str, total_stock: i64) -> anyhow::Result<Sku> {
    product_priced(db, sku, total_stock, 1999).await
}

async fn product_priced(
    db: &Db,
    sku: &str,
    total_stock: i64,
    price_cents: i64,
) -> anyhow::Result<Sku> {
    let sku = Sku::parse(sku)?;
    let upsert = ProductUpsert {
        name: format!("{sku} tee"),
        price_cents,
        total_stock,
        per_buyer_limit: 5,
        max_per_order: 5,
        sale_state: SaleState::OnSale,
    };
    let edit = products::begin_edit(db, &sku).await?;
    match edit.commit(&upsert).await? {
        EditOutcome::Committed(_) => Ok(sku),
        refused => anyhow::bail!("fresh product refused: {refused:?}"),
    }
}

fn request(sku: &Sku, buyer: &str, qty: u32) -> anyhow::Result<SettleRequest> {
    Ok(SettleRequest {
        reservation_id: ReservationId::generate(sku),
        buyer: BuyerId::parse(buyer)?,
        sku: sku.clone(),
        qty: Qty::new(qty)?,
    })
}

async fn count_orders(db: &Db, sku: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM orders WHERE sku = $1")
            .bind(sku)
            .fetch_one(db.pool())
            .await?,
    )
}

/// DESIGN §6: SQL `sold` is the sum of the non-cancelled orders' quantities.
async fn assert_sold_is_sum_of_live_orders(db: &Db, sku: &str) -> anyhow::Result<()> {
    let live: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(qty), 0) AS BIGINT) FROM orders \
         WHERE sku = $1 AND status <> 'cancelled'",
    )
    .bind(sku)
    .fetch_one(db.pool())
    .await?;
    let sold = products::get(db, sku).await?.map(|p| p.sold);
    assert_eq!(sold, Some(live), "sold of {sku}");
    Ok(())
}

async fn concurrent_duplicates_make_one_order(db: Db) -> anyhow::Result<()> {
    let sku = product(&db, "DUP", 100).await?;
    let req = request(&sku, "alice", 2)?;
    let db = Arc::new(db);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (db, req) = (db.clone(), req.clone());
        tasks.push(tokio::spawn(async move { settle_batch(&db, &[req]).await }));
    }
    // The same reservation three times inside one batch, too.
    let in_batch = settle_batch(&db, &[req.clone(), req.clone(), req.clone()]).await?;
    let mut outcomes = in_batch;
    for task in tasks {
        outcomes.extend(task.await??);
    }
    let created = outcomes
        .iter()
        .filter(|o| matches!(o, SettleOutcome::Created(_)))
        .count();
    assert_eq!(created, 1, "{outcomes:?}");
    let ids: std::collections::HashSet<String> = outcomes
        .iter()
        .map(|o| match o {
            SettleOutcome::Created(o) | SettleOutcome::Existing(o) => o.id.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 1, "every answer names the same order: {ids:?}");
    assert_eq!(count_orders(&db, "DUP").await?, 1);
    assert_eq!(products::get(&db, "DUP").await?.map(|p| p.sold), Some(2));
    Ok(())
}
on_both!(concurrent_duplicates_make_one_order);

async fn thousand_concurrent_settlements_sell_exactly_the_stock(db: Db) -> anyhow::Result<()> {
    let sku = product(&db, "HOT", 600).await?;
    let db = Arc::new(db);
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let req = request(&sku, &format!("buyer-{i}"), 1)?;
        let db = db.clone();
        // One transaction per order, all at once: the conditional UPDATE is what holds.
        tasks.push(tokio::spawn(async move { settle_batch(&db, &[req]).await }));
    }
    let (mut created, mut refused) = (0, 0);
    for task in tasks {
        match task.await??.as_slice() {
            [SettleOutcome::Created(_)] => created += 1,
            [SettleOutcome::Oversell] => refused += 1,
            other => anyhow::bail!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!((created, refused), (600, 400));
    assert_eq!(count_orders(&db, "HOT").await?, 600);
    assert_eq!(products::get(&db, "HOT").await?.map(|p| p.sold), Some(600));
    assert_sold_is_sum_of_live_orders(&db, "HOT").await
}
on_both!(thousand_concurrent_settlements_sell_exactly_the_stock);

async fn a_batch_fits_as_many_orders_as_possible_first_come(db: Db) -> anyhow::Result<()> {
    let sku = product(&db, "FIT", 5).await?;
    let other = Sku::parse("NOPE")?;
    let batch = vec![
        request(&sku, "a", 3)?,
        request(&sku, "b", 3)?,
        request(&sku, "c", 2)?,
        request(&sku, "d", 1)?,
        request(&other, "e", 1)?,
    ];
    let outcomes = settle_batch(&db, &batch).await?;
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|o| match o {
            SettleOutcome::Created(_) => "created",
            SettleOutcome::Existing(_) => "existing",
            SettleOutcome::Oversell => "oversell",
            SettleOutcome::UnknownSku => "unknown",
            SettleOutcome::PurchaseLimit { .. } => "limit",
            SettleOutcome::TotalOutOfRange => "out_of_range",
            SettleOutcome::Released => "released",
        })
        .collect();
    assert_eq!(
        kinds,
        ["created", "oversell", "created", "oversell", "unknown"]
    );
    let p = products::get(&db, "FIT").await?;
    assert_eq!(p.map(|p| (p.sold, p.total_stock)), Some((5, 5)));
    Ok(())
}
on_both!(a_batch_fits_as_many_orders_as_possible_first_come);

async fn cancel_checks_version_and_returns_stock(db: Db) -> anyhow::Result<()> {
    let sku = product(&db, "CXL", 10).await?;
    let outcome = settle_batch(&db, &[request(&sku, "bob", 3)?]).await?;
    let Some(SettleOutcome::Created(order)) = outcome.into_iter().next() else {
        anyhow::bail!("not created");
    };
    assert_eq!(
        orders::cancel(&db, &order.id, "bob", 7).await?,
        CancelOutcome::StaleVersion { current: 1 }
    );
    assert_eq!(
        orders::cancel(&db, &order.id, "mallory", 1).await?,
        CancelOutcome::NotFound
    );
    let CancelOutcome::Cancelled(cancelled) = orders::cancel(&db, &order.id, "bob", 1).await?
    else {
        anyhow::bail!("not cancelled");
    };
    assert_eq!(
        (cancelled.status, cancelled.version),
        (OrderStatus::Cancelled, 2)
    );
    assert_eq!(products::get(&db, "CXL").await?.map(|p| p.sold), Some(0));
    assert_sold_is_sum_of_live_orders(&db, "CXL").await?;
    assert_eq!(
        orders::cancel(&db, &order.id, "bob", 2).await?,
        CancelOutcome::NotCancellable {
            status: OrderStatus::Cancelled
        }
    );
    let topics: Vec<String> = outbox::unpublished(&db, outbox::Delivery::Redis, 100)
        .await?
        .into_iter()
        .map(|e| e.topic)
        .collect();
    assert_eq!(
        topics,
        [
            "product.updated",
            "order.created",
            "order.cancelled",
            "order.status_changed"
        ]
    );
    Ok(())
}
on_both!(cancel_checks_version_and_returns_stock);

async fn a_status_write_with_an_older_fence_is_refused(db: Db) -> anyhow::Result<()> {
    let sku = product(&db, "FNC", 10).await?;
    let outcome = settle_batch(&db, &[request(&sku, "carol", 1)?]).await?;
    let Some(SettleOutcome::Created(order)) = outcome.into_iter().next() else {
        anyhow::bail!("not created");
    };
    let shipped = orders::set_status_fenced(&db, &order.id, OrderStatus::Shipped, 5, "ops").await?;
    assert!(matches!(shipped, StatusOutcome::Changed(ref o) if o.fence == 5));
    assert_eq!(
        orders::set_status_fenced(&db, &order.id, OrderStatus::Cancelled, 4, "ops").await?,
        StatusOutcome::StaleFence { current: 5 }
    );
    assert_eq!(
        orders::set_status_fenced(&db, &order.id, OrderStatus::Cancelled, 6, "ops").await?,
        StatusOutcome::InvalidTransition {
            from: OrderStatus::Shipped
        }
    );
    let now = orders::get(&db, &order.id).await?;
    assert_eq!(now.map(|o| o.status), Some(OrderStatus::Shipped));
    Ok(())
}
on_both!(a_status_write_with_an_older_fence_is_refused);

async fn total_stock_cannot_drop_below_sold(db: Db) -> anyhow::Result<()> {
    let sku = product(&db, "LOW", 10).await?;
    settle_batch(&db, &[request(&sku, "dan", 4)?]).await?;
    let upsert = ProductUpsert {
        name: "low".into(),
        price_cents: 100,
        total_stock: 3,
        per_buyer_limit: 5,
        max_per_order: 5,
        sale_state: SaleState::Paused,
    };
    let edit = products::begin_edit(&db, &sku).await?;
    assert_eq!(edit.sold_above(upsert.total_stock), Some(4));
    // The write itself is conditioned on it too (a batch may settle after the edit began).
    assert_eq!(
        edit.commit(&upsert).await?,
        EditOutcome::StockBelowSold { sold: 4 }
    );
    // The CHECK constraint holds even against a direct write.
    let direct = sqlx::query("UPDATE products SET sold = total_stock + 1 WHERE sku = 'LOW'")
        .execute(db.pool())
        .await;
    assert!(direct.is_err());
    Ok(())
}
on_both!(total_stock_cannot_drop_below_sold);

fn kind(outcome: &SettleOutcome) -> &'static str {
    match outcome {
        SettleOutcome::Created(_) => "created",
        SettleOutcome::Existing(_) => "existing",
        SettleOutcome::Oversell => "oversell",
        SettleOutcome::UnknownSku => "unknown",
        SettleOutcome::PurchaseLimit { .. } => "limit",
        SettleOutcome::TotalOutOfRange => "out_of_range",
        SettleOutcome::Released => "released",
    }
}

async fn settle_one(db: &Db, req: &SettleRequest) -> anyhow::Result<&'static str> {
    let outcomes = settle_batch(db, std::slice::from_ref(req)).await?;
    Ok(outcomes.first().map(kind).unwrap_or("none"))
}

/// Issue 13.1: a reservation the reconciler released is never committed afterwards, and a
/// committed one is never released: whoever claims the id first decides.
async fn a_released_reservation_is_never_settled(db: Db) -> anyhow::Result<()> {
    let sku = product(&db, "REL", 10).await?;
    let req = request(&sku, "alice", 1)?;
    let rid = req.reservation_id.as_str();
    assert_eq!(
        fates::claim_released(&db, rid, "reconciler").await?,
        Fate::Released
    );
    assert_eq!(settle_one(&db, &req).await?, "released");
    assert_eq!(settle_one(&db, &req).await?, "released", "a retry too");
    assert_eq!(count_orders(&db, "REL").await?, 0);
    assert_eq!(products::get(&db, "REL").await?.map(|p| p.sold), Some(0));

    let committed = request(&sku, "bob", 1)?;
    assert_eq!(settle_one(&db, &committed).await?, "created");
    let rid = committed.reservation_id.as_str();
    assert_eq!(
        fates::claim_released(&db, rid, "reconciler").await?,
        Fate::Ordered
    );
    assert_eq!(settle_one(&db, &committed).await?, "existing");
    Ok(())
}
on_both!(a_released_reservation_is_never_settled);

/// Rolling upgrade: a replica from before migration 0002 settles without claiming a fate, so
/// its order has no `reservation_fates` row. The new reconciler must find the order and
/// finish the hold, not claim `released` over a committed order.
async fn an_order_without_a_fate_row_is_never_released(db: Db) -> anyhow::Result<()> {
    let sku = product(&db, "OLD", 10).await?;
    let req = request(&sku, "alice", 1)?;
    assert_eq!(settle_one(&db, &req).await?, "created");
    let rid = req.reservation_id.as_str();
    sqlx::query("DELETE FROM reservation_fates WHERE reservation_id = $1")
        .bind(rid)
        .execute(db.pool())
        .await?;
    assert_eq!(
        fates::claim_released(&db, rid, "reconciler").await?,
        Fate::Ordered
    );
    assert_eq!(fates::get(&db, rid).await?, Some(Fate::Ordered));
    assert_eq!(settle_one(&db, &req).await?, "existing");
    Ok(())
}
on_both!(an_order_without_a_fate_row_is_never_released);

/// The reconciler's claim and a settle batch race for the same id: exactly one wins, every
/// time, and the loser obeys it.
async fn settle_and_release_race_for_one_id(db: Db) -> anyhow::Result<()> {
    let sku = product(&db, "RACE", 1000).await?;
    let db = Arc::new(db);
    let (mut ordered, mut released) = (0, 0);
    for round in 0..40 {
        let req = request(&sku, &format!("buyer{round}"), 1)?;
        let rid = req.reservation_id.as_str().to_owned();
        let settle = {
            let (db, req) = (db.clone(), req.clone());
            tokio::spawn(async move { settle_one(&db, &req).await })
        };
        let claim = {
            let db = db.clone();
            tokio::spawn(async move { fates::claim_released(&db, &rid, "reconciler").await })
        };
        let (settled, claimed) = (settle.await??, claim.await??);
        let order = orders::by_reservation(&db, req.reservation_id.as_str()).await?;
        match claimed {
            Fate::Ordered => {
                assert_eq!(settled, "created", "round {round}");
                assert!(order.is_some(), "round {round}");
                ordered += 1;
            }
            Fate::Released => {
                assert_eq!(settled, "released", "round {round}");
                assert!(order.is_none(), "round {round}");
                released += 1;
            }
        }
    }
    assert_eq!(ordered + released, 40);
    assert_sold_is_sum_of_live_orders(&db, "RACE").await?;
    Ok(())
}
on_both!(settle_and_release_race_for_one_id);

/// Issue 13.2: SQL is the final authority on the per-buyer limit (5 here), across batches,
/// inside one batch and under concurrency, whatever Redis said; a cancellation frees room.
async fn sql_enforces_the_per_buyer_limit(db: Db) -> anyhow::Result<()> {
    let sku = product(&db, "LIM", 100).await?;
    let in_batch = settle_batch(
        &db,
        &[
            request(&sku, "alice", 3)?,
            request(&sku, "alice", 3)?,
            request(&sku, "bob", 3)?,
            request(&sku, "alice", 2)?,
        ],
    )
    .await?;
    let kinds: Vec<&str> = in_batch.iter().map(kind).collect();
    assert_eq!(kinds, ["created", "limit", "created", "created"]);
    assert_eq!(settle_one(&db, &request(&sku, "alice", 1)?).await?, "limit");

    let db = Arc::new(db);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (db, req) = (db.clone(), request(&sku, "carol", 1)?);
        tasks.push(tokio::spawn(async move { settle_one(&db, &req).await }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await?? {
            "created" => created += 1,
            "limit" => {}
            other => anyhow::bail!("unexpected outcome {other}"),
        }
    }
    assert_eq!(created, 5, "carol's live units stop at the limit");

    // A refused id stays refused; a cancellation frees room for a new reservation.
    let bob_first = orders::list_for_buyer(&db, "bob", 10).await?;
    let order = bob_first
        .first()
        .ok_or_else(|| anyhow::anyhow!("bob has no order"))?;
    let over = request(&sku, "bob", 3)?;
    assert_eq!(settle_one(&db, &over).await?, "limit");
    assert!(matches!(
        orders::cancel(&db, &order.id, "bob", order.version).await?,
        CancelOutcome::Cancelled(_)
    ));
    assert_eq!(
        settle_one(&db, &over).await?,
        "limit",
        "refusals are final, and a retry is answered the same"
    );
    assert_eq!(settle_one(&db, &request(&sku, "bob", 5)?).await?, "created");
    assert_sold_is_sum_of_live_orders(&db, "LIM").await?;
    let live: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(MAX(units), 0) AS BIGINT) FROM (SELECT SUM(qty) AS units \
         FROM orders WHERE sku = 'LIM' AND status <> 'cancelled' GROUP BY user_sub) AS per_buyer",
    )
    .fetch_one(db.pool())
    .await?;
    assert!(live <= 5, "a buyer holds {live} live units");
    Ok(())
}
on_both!(sql_enforces_the_per_buyer_limit);

/// A refusal for want of stock is final too: after a restock the same reservation id is still
/// no order (its hold was released), while new reservations fit.
async fn an_oversell_refusal_is_final(db: Db) -> anyhow::Result<()> {
    let sku = product(&db, "FIN", 1).await?;
    assert_eq!(settle_one(&db, &request(&sku, "a", 1)?).await?, "created");
    let late = request(&sku, "b", 1)?;
    assert_eq!(settle_one(&db, &late).await?, "oversell");
    sqlx::query("UPDATE products SET total_stock = 5 WHERE sku = 'FIN'")
        .execute(db.pool())
        .await?;
    // The retry (a gateway whose first answer was lost, or a second gateway) is answered
    // what the first try was: still no stock for this id, not a bare "released".
    assert_eq!(settle_one(&db, &late).await?, "oversell");
    let rid = late.reservation_id.as_str();
    assert_eq!(fates::get(&db, rid).await?, Some(Fate::Released));
    assert_eq!(settle_one(&db, &request(&sku, "b", 1)?).await?, "created");
    Ok(())
}
on_both!(an_oversell_refusal_is_final);

/// Issue 13.7: `price × qty` beyond 64 bits is refused, never wrapped (it made a total of 0)
/// and never a panic in the group-commit worker.
async fn a_total_beyond_64_bits_is_refused(db: Db) -> anyhow::Result<()> {
    let sku = product_priced(&db, "BIG", 10, 1 << 62).await?;
    let batch = [request(&sku, "a", 4)?, request(&sku, "b", 1)?];
    let outcomes = settle_batch(&db, &batch).await?;
    let kinds: Vec<&str> = outcomes.iter().map(kind).collect();
    assert_eq!(kinds, ["out_of_range", "created"]);
    let totals: Vec<i64> = sqlx::query_scalar("SELECT total_cents FROM orders WHERE sku = 'BIG'")
        .fetch_all(db.pool())
        .await?;
    assert_eq!(totals, [1 << 62]);
    assert_eq!(settle_one(&db, &batch[0]).await?, "out_of_range", "a retry");
    Ok(())
}
on_both!(a_total_beyond_64_bits_is_refused);
