//! The conformance suite against the in-memory store.

use reservation_core::InMemoryStore;

reservation_core::reservation_store_conformance!(InMemoryStore::new());
