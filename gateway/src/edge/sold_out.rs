//! Sold-out memory: after the store answers `sold_out` for a SKU, the edge answers further
//! reservations for it from process memory for a short while, so a flood after a sell-out
//! costs no store round trip. A release or a stock read that sees units again forgets it.
//!
//! Trade-off: during that window an idempotent replay of an earlier successful reservation is
//! also told `sold_out`; retried after the window it gets its reservation back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reservation_core::Sku;

/// SKUs recently seen sold out, each with the instant its memory ends.
pub struct SoldOutMemory {
    ttl: Duration,
    until: Mutex<HashMap<Sku, Instant>>,
}

impl SoldOutMemory {
    pub fn new(ttl: Duration) -> Self {
        SoldOutMemory {
            ttl,
            until: Mutex::new(HashMap::new()),
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
}
