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

use std::sync::Arc;

use crate::store::ReservationStore;
use crate::types::{BuyerId, IdempotencyKey, ProductStock, Qty, ReserveRequest, SaleState, Sku};

mod cases;
pub use cases::*;

/// Hold lifetime used by cases that do not test expiry.
pub const LONG_TTL_MS: u64 = 60_000;

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
