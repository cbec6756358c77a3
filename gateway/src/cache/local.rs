//! The in-process parts of the cache: a bounded map of copies (the tier served while Redis is
//! down, and the first place a read looks) and the single-flight table that makes N
//! concurrent misses for one key cost one upstream request in this process.
//! Hand-written rather than `moka`: faster on a hit and a refill, and the keep time is the
//! caller's wall clock (`benches/local_structures.rs`, BENCHMARKS.md).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OnceCell;

use super::entry::Entry;

/// Copies in process memory, at most `max_entries`.
pub struct LocalTier {
    max_entries: usize,
    /// Key → (copy, wall-clock ms after which it is useless even as a stale copy).
    map: Mutex<HashMap<String, (Entry, u64)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps hold plain values; a panic elsewhere cannot leave them inconsistent.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalTier {
    pub fn new(max_entries: usize) -> Self {
        LocalTier {
            max_entries: max_entries.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        lock(&self.map).get(key).map(|(entry, _)| entry.clone())
    }

    /// Stores a copy; when full, drops copies past `drop_after_ms`, then any one copy.
    pub fn put(&self, key: &str, entry: Entry, drop_after_ms: u64, now_ms: u64) {
        let mut map = lock(&self.map);
        if map.len() >= self.max_entries && !map.contains_key(key) {
            map.retain(|_, (_, until)| *until > now_ms);
            if map.len() >= self.max_entries
                && let Some(victim) = map.keys().next().cloned()
            {
                map.remove(&victim);
            }
        }
        map.insert(key.to_owned(), (entry, drop_after_ms));
    }

    pub fn remove(&self, key: &str) {
        lock(&self.map).remove(key);
    }

    /// How many copies are held.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One in-flight fill per key; everyone asking for the key meanwhile waits for its result.
pub struct SingleFlight<T> {
    flights: Mutex<HashMap<String, Arc<OnceCell<T>>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        SingleFlight {
            flights: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> SingleFlight<T> {
    /// Runs `fill` unless a fill for `key` is under way, in which case its result is shared.
    /// Returns the result and whether this caller only waited (coalesced). If the running
    /// caller is cancelled, a waiting one takes over (`OnceCell` semantics).
    pub async fn run<F, Fut>(&self, key: &str, fill: F) -> (T, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let cell = lock(&self.flights)
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let mut ran = false;
        let result = cell
            .get_or_init(|| {
                ran = true;
                fill()
            })
            .await
            .clone();
        // The flight is over: the next miss starts a new one (which first re-checks the tiers
        // the finished fill wrote to, so it does not go upstream again for nothing).
        let mut flights = lock(&self.flights);
        if flights.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            flights.remove(key);
        }
        (result, !ran)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn the_local_tier_stays_bounded() {
        let tier = LocalTier::new(2);
        let entry = Entry::new(Bytes::new(), None, 0, 1);
        tier.put("a", entry.clone(), 10, 0);
        tier.put("b", entry.clone(), 100, 0);
        tier.put("c", entry.clone(), 100, 50);
        assert!(tier.get("a").is_none(), "the expired copy goes first");
        assert!(tier.get("b").is_some() && tier.get("c").is_some());
        tier.remove("b");
        assert!(tier.get("b").is_none());
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fill() {
        let flights = Arc::new(SingleFlight::<u32>::default());
        let fills = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (flights, fills) = (flights.clone(), fills.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run("k", || async {
                        fills.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        7
                    })
                    .await
            }));
        }
        let mut coalesced = 0;
        for task in tasks {
            let (value, waited) = task.await.unwrap();
            assert_eq!(value, 7);
            coalesced += usize::from(waited);
        }
        assert_eq!((fills.load(Ordering::SeqCst), coalesced), (1, 19));
    }
}
