//! How many requests are being served at once, per client and in all.
//!
//! The rate limiter counts requests per second; it does not see requests that stay open. Over
//! HTTP/2 one client can keep `max_concurrent_streams` requests open on each of many
//! connections, each waiting on a slow upstream or reading its answer slowly, and so hold
//! memory and upstream connections that other buyers need. A request is admitted only while
//! its client (its address; an IPv6 client its /64, as for the rate limits) has fewer than `limits.max_in_flight_per_client` open (429 `too_many_in_flight`
//! above) and the gateway fewer than `limits.max_in_flight` (503 `overloaded` above); the
//! [`InFlightGuard`] it holds gives its place back when the request ends, however it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::IntGauge;

use crate::client_addr::client_network;
use reservation_core::wire::Problem;

/// The open requests of every client and of the gateway.
pub struct InFlight {
    per_client_max: u32,
    /// An IPv6 client is its network of this many bits, as for the rate limits
    /// (`ratelimit.ipv6_prefix_len`): one subscriber may send from any address of its /64.
    ipv6_prefix_len: u8,
    total_max: usize,
    total: AtomicUsize,
    /// Only clients with a request open have an entry: the map is as large as the number
    /// of clients being served, not of clients ever seen.
    per_client: Mutex<HashMap<IpAddr, u32>>,
    /// `stockgate_in_flight_requests`.
    gauge: IntGauge,
}

/// One admitted request's place; dropping it frees the place.
pub struct InFlightGuard {
    owner: Arc<InFlight>,
    client: Option<IpAddr>,
}

impl InFlight {
    pub fn new(
        per_client_max: u32,
        total_max: usize,
        ipv6_prefix_len: u8,
        gauge: IntGauge,
    ) -> Arc<Self> {
        Arc::new(InFlight {
            per_client_max,
            ipv6_prefix_len,
            total_max,
            total: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            gauge,
        })
    }

    /// Admits a request of `client` (unknown: counted in the total only), or says why not.
    pub fn enter(self: &Arc<Self>, client: Option<IpAddr>) -> Result<InFlightGuard, Problem> {
        let client = client.map(|ip| client_network(ip, self.ipv6_prefix_len));
        // The client's own cap first: a client refused at its cap never takes a place in the
        // total, even for a moment, so it cannot push other clients into 503s.
        if let Some(ip) = client {
            let mut per_client = self.lock();
            let open = per_client.entry(ip).or_insert(0);
            if *open >= self.per_client_max {
                return Err(Problem::new(
                    429,
                    "too_many_in_flight",
                    format!(
                        "this client has {} requests open; wait for one to finish",
                        self.per_client_max
                    ),
                ));
            }
            *open += 1;
        }
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.total_max {
            self.total.fetch_sub(1, Ordering::AcqRel);
            if let Some(ip) = client {
                self.leave(ip);
            }
            return Err(Problem::new(
                503,
                "overloaded",
                "the gateway is serving as many requests as it takes; retry",
            ));
        }
        self.gauge.inc();
        Ok(InFlightGuard {
            owner: self.clone(),
            client,
        })
    }

    /// Requests open now, in all.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Gives back one of `ip`'s places; the entry goes with its last one.
    fn leave(&self, ip: IpAddr) {
        let mut per_client = self.lock();
        if let Some(open) = per_client.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                per_client.remove(&ip);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        // The map holds plain counters: one left by a panicking holder is still right.
        self.per_client.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Some(ip) = self.client {
            self.owner.leave(ip);
        }
        self.owner.total.fetch_sub(1, Ordering::AcqRel);
        self.owner.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    fn gate(per_client: u32, total: usize) -> Arc<InFlight> {
        InFlight::new(per_client, total, 64, IntGauge::new("g", "g").unwrap())
    }

    #[test]
    fn a_client_at_its_cap_is_refused_until_one_of_its_requests_ends() {
        let gate = gate(2, 100);
        let first = gate.enter(ip(1)).unwrap();
        let _second = gate.enter(ip(1)).unwrap();
        let refused = gate.enter(ip(1)).err().unwrap();
        assert_eq!((refused.status, refused.code), (429, "too_many_in_flight"));
        // Another client is not held back by this one.
        let _other = gate.enter(ip(2)).unwrap();
        drop(first);
        assert!(gate.enter(ip(1)).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_its_network_and_ipv4_mapped_is_ipv4() {
        let gate = gate(2, 100);
        let v6 = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        let _a = gate.enter(v6("2001:db8:1:2::1")).unwrap();
        let _b = gate.enter(v6("2001:db8:1:2:ffff::9")).unwrap();
        let refused = gate.enter(v6("2001:db8:1:2:dead:beef::1")).err().unwrap();
        assert_eq!(refused.code, "too_many_in_flight", "same /64");
        assert!(gate.enter(v6("2001:db8:1:3::1")).is_ok(), "another /64");
        let _c = gate.enter(ip(7)).unwrap();
        let _d = gate.enter(v6("::ffff:10.0.0.7")).unwrap();
        assert!(gate.enter(ip(7)).is_err(), "::ffff:10.0.0.7 is 10.0.0.7");
    }

    #[test]
    fn the_total_cap_refuses_with_503_and_counts_clients_without_an_address() {
        let gate = gate(10, 2);
        let _a = gate.enter(None).unwrap();
        let _b = gate.enter(ip(1)).unwrap();
        let refused = gate.enter(ip(2)).err().unwrap();
        assert_eq!((refused.status, refused.code), (503, "overloaded"));
        assert!(refused.retry_after.is_some());
        assert_eq!(gate.total(), 2, "a refusal leaves no place taken");
        assert_eq!(
            gate.lock().get(&ip(2).unwrap()),
            None,
            "nor a client's place"
        );
    }

    #[test]
    fn ended_requests_leave_no_entry_and_the_gauge_at_zero() {
        let gate = gate(3, 100);
        let guards: Vec<_> = (0..50).map(|i| gate.enter(ip(i)).unwrap()).collect();
        assert_eq!(gate.gauge.get(), 50);
        drop(guards);
        assert_eq!(gate.total(), 0);
        assert_eq!(gate.gauge.get(), 0);
        assert!(gate.lock().is_empty());
    }
}
