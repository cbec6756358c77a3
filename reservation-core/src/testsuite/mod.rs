//! The conformance suite of [`ReservationStore`]: every behaviour of the trait is one case,
//! named for what it checks. The in-memory store runs it in this crate's tests; the Redis
//! store runs the same cases against a real Redis (`backend-adapters/tests/`).
//!
//! Use it with the macro, giving an expression that makes a fresh, isolated store (for Redis,
//! one with its own key prefix):
//!
//! ```ignore
//! reservation_core::reservation_store_conformance!(make_store().await);
//! ```
//!
//! The cases, one behaviour each, live in `cases.rs` (reserve, limits, idempotency),
//! `lifecycle.rs` (release, confirm, expiry), `products.rs` (per-SKU operations) and
//! `concurrency.rs` (the flash-sale race). [`check_against_model`] is the model-based
//! property test (`model.rs`); call it from a plain `#[test]`.

use std::sync::Arc;
use std::time::Duration;

use crate::store::ReservationStore;
use crate::types::{
    BuyerId, Hold, IdempotencyKey, ProductStock, Qty, ReserveRequest, SaleState, Sku,
};

mod cases;
mod concurrency;
mod lifecycle;
mod model;
mod products;
pub use cases::*;
pub use concurrency::*;
pub use lifecycle::*;
pub use model::check_against_model;
pub use products::*;

/// Hold lifetime used by cases that do not test expiry.
pub const LONG_TTL_MS: u64 = 60_000;

/// Hold lifetime used by cases that test expiry: short enough to keep the suite fast, long
/// enough that the calls made right after the reserve still see the hold unexpired.
pub const SHORT_TTL_MS: u64 = 100;

/// How long expiry cases wait so that a [`SHORT_TTL_MS`] hold is due, with margin for a
/// loaded machine.
pub const PAST_SHORT_TTL: Duration = Duration::from_millis(2 * SHORT_TTL_MS);

/// A store shared by the tasks of one case.
pub type SharedStore<S> = Arc<S>;

pub fn sku(name: &str) -> Sku {
    Sku::parse(name).expect("test sku is valid")
}

pub fn buyer(name: &str) -> BuyerId {
    BuyerId::parse(name).expect("test buyer is valid")
}

pub fn qty(units: u32) -> Qty {
    Qty::new(units).expect("test qty is valid")
}

pub fn stock(total: u64, per_buyer_limit: u32, max_per_order: u32) -> ProductStock {
    ProductStock {
        total_stock: total,
        per_buyer_limit,
        max_per_order,
        sale_state: SaleState::OnSale,
    }
}

pub fn request(sku_name: &str, buyer_name: &str, units: u32, key: &str) -> ReserveRequest {
    ReserveRequest {
        sku: sku(sku_name),
        buyer: buyer(buyer_name),
        qty: qty(units),
        idempotency_key: IdempotencyKey::parse(key).expect("test key is valid"),
        hold_ttl_ms: LONG_TTL_MS,
    }
}

/// Like [`request`], with a hold lifetime of `ttl_ms`.
pub fn request_with_ttl(
    sku_name: &str,
    buyer_name: &str,
    units: u32,
    key: &str,
    ttl_ms: u64,
) -> ReserveRequest {
    ReserveRequest {
        hold_ttl_ms: ttl_ms,
        ..request(sku_name, buyer_name, units, key)
    }
}

/// The four counters of a SKU as `(available, held, confirming, sold)`, after checking that
/// they add up to the total stock.
pub async fn counters<S: ReservationStore>(store: &S, sku: &Sku) -> (u64, u64, u64, u64) {
    let s = store.snapshot(sku).await.expect("snapshot");
    assert!(s.is_balanced(), "counters do not add up: {s:?}");
    (s.available, s.held, s.confirming, s.sold)
}

/// Reserves with a long TTL and returns the new hold (the case's setup, not what it checks).
pub async fn hold<S: ReservationStore>(
    store: &S,
    sku_name: &str,
    buyer_name: &str,
    units: u32,
    key: &str,
) -> Hold {
    let r = store
        .reserve(&request(sku_name, buyer_name, units, key))
        .await
        .expect("setup reserve");
    assert!(!r.replayed, "setup reserve replayed an earlier hold");
    r.hold
}

/// Takes a hold through begin and finish confirm (setup for cases about sold units).
pub async fn confirm<S: ReservationStore>(store: &S, hold: &Hold) -> Hold {
    store
        .begin_confirm(&hold.id, &hold.buyer)
        .await
        .expect("setup begin_confirm");
    store
        .finish_confirm(&hold.id)
        .await
        .expect("setup finish_confirm")
}

/// Creates a SKU with `total` units, a per-buyer limit and max-per-order of 100.
pub async fn product<S: ReservationStore>(store: &S, name: &str, total: u64) -> Sku {
    let sku = sku(name);
    store
        .configure_product(&sku, &stock(total, 100, 100))
        .await
        .expect("configure product");
    sku
}

/// Expands to one `#[tokio::test]` per conformance case. `$make` is evaluated once per case
/// and must yield a fresh store.
#[macro_export]
macro_rules! reservation_store_conformance {
    ($make:expr) => {
        $crate::reservation_store_conformance!(@cases $make;
            reserve_moves_units_from_available_to_held,
            reserve_of_unknown_sku_is_refused,
            reserve_while_paused_is_refused_and_changes_nothing,
            reserve_more_than_available_is_insufficient_stock,
            reserve_when_nothing_is_available_is_sold_out,
            reserve_above_max_per_order_is_purchase_limit,
            reserve_checks_in_the_documented_order,
            per_buyer_limit_counts_held_confirming_and_confirmed,
            per_buyer_limit_is_freed_by_release_and_expiry,
            same_key_and_body_replays_the_same_hold,
            same_key_with_other_qty_is_idempotency_mismatch,
            same_key_with_other_sku_is_idempotency_mismatch,
            idempotency_keys_are_scoped_per_buyer,
            replay_is_answered_after_the_sale_is_paused,
            replay_after_release_returns_the_released_hold,
            a_refused_request_leaves_its_key_free,
            a_refused_request_is_decided_afresh_when_retried,
            concurrent_requests_with_one_key_make_one_hold,
            refused_and_successful_requests_under_one_key_keep_one_binding,
            release_returns_units_and_is_idempotent,
            release_by_another_buyer_is_not_owner,
            release_of_confirming_or_confirmed_hold_is_invalid_state,
            release_of_a_due_hold_expires_it_once,
            begin_confirm_moves_held_to_confirming,
            begin_confirm_by_another_buyer_is_not_owner,
            begin_confirm_of_an_expired_hold_is_expired_and_returns_units_once,
            begin_confirm_of_a_released_hold_is_released,
            begin_confirm_again_returns_the_hold_unchanged,
            finish_confirm_moves_units_to_sold_and_is_idempotent,
            finish_and_abort_need_a_confirming_hold,
            abort_confirm_to_held_keeps_the_hold,
            abort_confirm_to_held_keeps_the_original_expiry,
            abort_confirm_to_released_returns_units,
            expire_due_returns_units_exactly_once,
            expire_due_respects_the_batch_size,
            expire_due_never_touches_confirming_holds,
            concurrent_sweepers_expire_each_hold_once,
            get_hold_reads_a_due_hold_as_expired,
            unknown_reservation_id_is_not_found,
            sku_operations_on_an_unknown_sku_are_unknown_sku,
            configure_product_moves_available_by_the_difference,
            configure_product_refuses_total_below_committed,
            configure_product_rejects_invalid_stock,
            skus_lists_configured_products,
            confirming_holds_lists_only_confirming_ones,
            buyer_holds_lists_own_open_holds_only,
            buyer_holds_drops_expired_finished_and_refused,
            buyer_holds_is_bounded_oldest_first,
            return_cancelled_finishes_a_hold_still_confirming,
            return_cancelled_returns_units_once,
            repair_counters_rebuilds_from_sold_units,
            repair_finishes_committed_holds_and_marks_cancellations_returned,
            refused_repair_of_a_lost_sku_leaves_no_trace,
            repair_counts_what_its_snapshot_missed,
            a_superseded_repair_writes_nothing,
            a_product_edit_supersedes_a_repair_in_progress,
            snapshot_display_state_follows_stock_and_sale,
            concurrent_reservations_never_oversell,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = ::std::sync::Arc::new($make);
                $crate::testsuite::$case(store).await;
            }
        )*
    };
}
