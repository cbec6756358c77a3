//! Sold-out memory: after the store answers `sold_out` for a SKU, the edge answers further
//! reservations for it from process memory for a short while, so a flood after a sell-out
//! costs no store round trip. A release or a stock read that sees units again forgets it.
//!
//! An idempotent replay must still get its reservation back (200, same hold), so the edge also
//! remembers the (buyer, idempotency key) of the last [`RECENT_RESERVATIONS`] reservations it
//! made or may have made (the store's answer timed out): a request under one of those keys
//! always goes to the store. A replay that lands on
//! another replica within the short window is still told `sold_out`; retried after the window,
//! it gets its reservation back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reservation_core::{BuyerId, IdempotencyKey, Sku};

/// How many recent reservations of this replica are remembered for replays (~10 MB at most).
pub const RECENT_RESERVATIONS: usize = 100_000;

type ReservationKey = (BuyerId, IdempotencyKey);

/// SKUs recently seen sold out, each with the instant its memory ends.
pub struct SoldOutMemory {
    ttl: Duration,
    until: Mutex<HashMap<Sku, Instant>>,
    recent: Mutex<RecentKeys>,
}

/// A bounded first-in-first-out set of the reservations this replica made.
#[derive(Default)]
struct RecentKeys {
    keys: HashSet<ReservationKey>,
    order: VecDeque<ReservationKey>,
}

impl SoldOutMemory {
    pub fn new(ttl: Duration) -> Self {
        SoldOutMemory {
            ttl,
            until: Mutex::new(HashMap::new()),
            recent: Mutex::new(RecentKeys::default()),
        }
    }

    /// Whether the edge may answer `sold_out` without asking the store: the SKU is remembered
    /// as sold out and the request is not a replay of a reservation this replica made.
    pub fn answers_for(&self, sku: &Sku, buyer: &BuyerId, key: &IdempotencyKey) -> bool {
        if !self.is_sold_out(sku) {
            return false;
        }
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        !recent.keys.contains(&(buyer.clone(), key.clone()))
    }

    /// Records a reservation this replica made, or may have made (its answer was lost to a
    /// timeout), so its replays reach the store.
    pub fn note_reservation(&self, buyer: &BuyerId, key: &IdempotencyKey) {
        if self.ttl.is_zero() {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let entry = (buyer.clone(), key.clone());
        if recent.keys.insert(entry.clone()) {
            recent.order.push_back(entry);
            if recent.order.len() > RECENT_RESERVATIONS
                && let Some(oldest) = recent.order.pop_front()
            {
                recent.keys.remove(&oldest);
            }
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Sku, Instant>> {
        // The map holds plain values; a panic elsewhere cannot leave it inconsistent.
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_sold_out(&self, sku: &Sku) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let mut map = self.map();
        match map.get(sku) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                map.remove(sku);
                false
            }
            None => false,
        }
    }

    pub fn remember(&self, sku: &Sku) {
        if !self.ttl.is_zero() {
            self.map().insert(sku.clone(), Instant::now() + self.ttl);
        }
    }

    pub fn forget(&self, sku: &Sku) {
        self.map().remove(sku);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_forgotten_or_expired() {
        let sku = Sku::parse("HOT").unwrap();
        let memory = SoldOutMemory::new(Duration::from_secs(60));
        assert!(!memory.is_sold_out(&sku));
        memory.remember(&sku);
        assert!(memory.is_sold_out(&sku));
        memory.forget(&sku);
        assert!(!memory.is_sold_out(&sku));

        let short = SoldOutMemory::new(Duration::from_millis(1));
        short.remember(&sku);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.is_sold_out(&sku));
    }

    #[test]
    fn replays_of_reservations_made_here_still_reach_the_store() {
        let sku = Sku::parse("HOT").unwrap();
        let alice = BuyerId::parse("alice").unwrap();
        let bob = BuyerId::parse("bob").unwrap();
        let key = IdempotencyKey::parse("k1").unwrap();
        let memory = SoldOutMemory::new(Duration::from_secs(60));
        memory.note_reservation(&alice, &key);
        memory.remember(&sku);
        assert!(
            !memory.answers_for(&sku, &alice, &key),
            "alice's replay goes to the store"
        );
        assert!(
            memory.answers_for(&sku, &bob, &key),
            "bob is new: answered from memory"
        );
    }

    #[test]
    fn recent_reservations_are_bounded() {
        let memory = SoldOutMemory::new(Duration::from_secs(60));
        let buyer = BuyerId::parse("alice").unwrap();
        for i in 0..RECENT_RESERVATIONS + 10 {
            memory.note_reservation(&buyer, &IdempotencyKey::parse(&format!("k{i}")).unwrap());
        }
        let recent = memory.recent.lock().unwrap();
        assert_eq!(recent.keys.len(), RECENT_RESERVATIONS);
        assert_eq!(recent.order.len(), RECENT_RESERVATIONS);
        assert!(
            !recent
                .keys
                .contains(&(buyer.clone(), IdempotencyKey::parse("k0").unwrap()))
        );
    }

    #[test]
    fn zero_ttl_disables_the_memory() {
        let sku = Sku::parse("HOT").unwrap();
        let short = SoldOutMemory::new(Duration::ZERO);
        short.remember(&sku);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.is_sold_out(&sku));
    }
}
