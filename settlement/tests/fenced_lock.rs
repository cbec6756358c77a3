//! The fenced Redis lock guarding ops status changes, on real Redis and PostgreSQL: a holder
//! paused past its lease loses the lock to a newer holder, and its late SQL write is refused
//! by the fence while the newer write stands.

mod common;

use std::time::Duration;

use backend_adapters::redis::lock::FencedLock;
use backend_adapters::sql::orders::{self, StatusOutcome};
use backend_adapters::sql::{Db, OrderStatus, SettleOutcome, SettleRequest, settle_batch};
use common::{start_with, test_config};
use reservation_core::{BuyerId, InMemoryStore, Qty, ReservationId, Sku};
use std::sync::Arc;
use testkit::{AsGateway, buyer, delete_keys_under, ops, redis_url, scratch_prefix};

async fn one_order(db: &Db) -> anyhow::Result<String> {
    let sku = Sku::parse("LCK")?;
    let outcome = settle_batch(
        db,
        &[SettleRequest {
            reservation_id: ReservationId::generate(&sku),
            buyer: BuyerId::parse("alice")?,
            sku,
            qty: Qty::new(1)?,
        }],
    )
    .await?;
    match outcome.into_iter().next() {
        Some(SettleOutcome::Created(order)) => Ok(order.id),
        other => anyhow::bail!("not created: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holders_late_write_is_rejected_and_the_newer_one_stands() -> anyhow::Result<()> {
    let prefix = scratch_prefix("fence");
    let app = start_with(
        test_config(&testkit::scratch_schema("fence").await),
        Arc::new(InMemoryStore::new()),
    )
    .await?;
    app.put_product("LCK", 10).await?;
    let db = app.db().await?;
    let order_id = one_order(&db).await?;
    let lock = FencedLock::connect(&redis_url(), &prefix).await?;
    let name = format!("order:{order_id}");
    let lease = Duration::from_millis(200);

    // Holder A takes the lock, then pauses (GC, network) past its lease.
    let a = lock.try_acquire(&name, "holder-a", lease).await?;
    let a = a.ok_or_else(|| anyhow::anyhow!("a did not get the free lock"))?;
    assert!(lock.try_acquire(&name, "holder-b", lease).await?.is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Holder B takes the expired lock with a larger token and writes.
    let b = lock.try_acquire(&name, "holder-b", lease).await?;
    let b = b.ok_or_else(|| anyhow::anyhow!("b did not get the expired lock"))?;
    assert!(b.fence > a.fence);
    let written =
        orders::set_status_fenced(&db, &order_id, OrderStatus::Shipped, b.fence as i64, "b");
    assert!(matches!(written.await?, StatusOutcome::Changed(_)));

    // A wakes up and writes with its old token: refused by the fence, not by luck.
    let late =
        orders::set_status_fenced(&db, &order_id, OrderStatus::Cancelled, a.fence as i64, "a");
    assert_eq!(
        late.await?,
        StatusOutcome::StaleFence {
            current: b.fence as i64
        }
    );
    // A cannot release B's lock either; B can.
    assert!(!lock.release(&a).await?);
    assert!(lock.release(&b).await?);

    let order = orders::get(&db, &order_id).await?;
    assert_eq!(
        order.map(|o| (o.status, o.fence)),
        Some((OrderStatus::Shipped, b.fence as i64))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_status_route_runs_under_the_redis_lock() -> anyhow::Result<()> {
    let prefix = scratch_prefix("fence");
    let mut config = test_config(&testkit::scratch_schema("fence").await);
    config.redis_url = Some(redis_url());
    config.redis_key_prefix = prefix.clone();
    config.outbox.stream = format!("{prefix}:events");
    let app = start_with(config, Arc::new(InMemoryStore::new())).await?;
    app.put_product("LCK", 10).await?;
    let order_id = one_order(&app.db().await?).await?;

    let status = |to: &'static str, who: reservation_core::assertion::Identity| {
        app.http
            .post(app.url(&format!("/api/v1/admin/orders/{order_id}/status")))
            .json(&serde_json::json!({ "status": to }))
            .send_as(&app.gateway, who)
    };
    assert_eq!(status("shipped", buyer("olga")).await?.status(), 403);
    let shipped = status("shipped", ops("olga")).await?;
    assert_eq!(shipped.status(), 200);
    let body: serde_json::Value = shipped.json().await?;
    assert_eq!(body["status"], "shipped");
    let refused = status("cancelled", ops("olga")).await?;
    assert_eq!(refused.status(), 409);
    let body: serde_json::Value = refused.json().await?;
    assert_eq!(body["code"], "invalid_transition");
    assert_eq!(status("delivered", ops("olga")).await?.status(), 200);

    // The route released its lease each time: the lock is free now.
    let lock = FencedLock::connect(&redis_url(), &prefix).await?;
    let lease = lock
        .try_acquire(
            &format!("order:{order_id}"),
            "probe",
            Duration::from_secs(1),
        )
        .await?;
    assert!(
        lease.is_some_and(|l| l.fence == 4),
        "three writes took tokens 1..=3"
    );
    Ok(())
}

/// After Redis lost the fence counter, new tokens still exceed the fence SQL holds: the lock
/// is taken with the order's fence as a floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_stay_ahead_of_sql_after_redis_lost_the_counter() -> anyhow::Result<()> {
    let prefix = scratch_prefix("fence");
    let mut config = test_config(&testkit::scratch_schema("fence").await);
    config.redis_url = Some(redis_url());
    config.redis_key_prefix = prefix.clone();
    config.outbox.stream = format!("{prefix}:events");
    let app = start_with(config, Arc::new(InMemoryStore::new())).await?;
    app.put_product("LCK", 10).await?;
    let db = app.db().await?;
    let order_id = one_order(&db).await?;
    // An earlier era of the counter left fence 41 on the order.
    let lock = FencedLock::connect(&redis_url(), &prefix).await?;
    let shipped = orders::set_status_fenced(&db, &order_id, OrderStatus::Shipped, 41, "ops");
    assert!(matches!(shipped.await?, StatusOutcome::Changed(_)));
    // Redis loses this test's keys (the order lock's counter never existed here either).
    delete_keys_under(&prefix).await;
    let fresh = lock
        .try_acquire("probe-counter", "p", Duration::from_secs(1))
        .await?;
    assert_eq!(
        fresh.map(|l| l.fence),
        Some(1),
        "without a floor a fresh counter hands out 1, which fence 41 would refuse"
    );

    let delivered = app
        .http
        .post(app.url(&format!("/api/v1/admin/orders/{order_id}/status")))
        .json(&serde_json::json!({ "status": "delivered" }))
        .send_as(&app.gateway, ops("olga"))
        .await?;
    assert_eq!(delivered.status(), 200);
    let order = orders::get(&db, &order_id).await?;
    assert_eq!(
        order.map(|o| (o.status, o.fence)),
        Some((OrderStatus::Delivered, 42))
    );
    Ok(())
}
