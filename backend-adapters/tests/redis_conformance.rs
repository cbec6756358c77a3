//! The `ReservationStore` conformance suite and the model-based property test, run against a
//! real Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`), each case on a fresh key prefix
//! that is deleted when the case ends.

mod redis_support;

reservation_core::reservation_store_conformance!(redis_support::self_cleaning_store().await);

/// Random operation sequences through the Redis store and the plain model, compared answer
/// by answer and counter by counter.
#[test]
fn redis_store_agrees_with_the_model() {
    reservation_core::testsuite::check_against_model(64, redis_support::self_cleaning_store);
}
