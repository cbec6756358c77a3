//! The `ReservationStore` conformance suite and the model-based property test against a local
//! 3-master Redis Cluster (`REDIS_CLUSTER_URL`, started by `scripts/redis-cluster.sh start`):
//! every script keeps one SKU's keys in one slot, so the store behaves exactly as on one server.

mod cluster_support;
mod redis_support;

reservation_core::reservation_store_conformance!(
    cluster_support::self_cleaning_cluster_store().await
);

/// Random operation sequences through the cluster store and the plain model.
#[test]
fn cluster_store_agrees_with_the_model() {
    reservation_core::testsuite::check_against_model(
        32,
        cluster_support::self_cleaning_cluster_store,
    );
}
