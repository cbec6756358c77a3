//! The ops-owned rate-limit rules parser (`ratelimit::rules::parse`) on arbitrary text, then
//! matching a few requests against whatever it accepted. Properties: never panics; errors are
//! values; accepted rules have unique names, limits within their documented ranges and a
//! non-zero interval; a `{sku}` taken from a path is one of its segments.
#![no_main]

use gateway::ratelimit::rules::parse;
use http::Method;
use libfuzzer_sys::fuzz_target;

const REQUESTS: &[(&str, &str)] = &[
    ("POST", "/api/v1/reservations"),
    ("GET", "/api/v1/stock/HOT"),
    ("POST", "/api/v1/orders/o1/cancel"),
    ("DELETE", "/api/v1/reservations/rsv_1"),
    ("GET", "/"),
    ("GET", ""),
    ("GET", "/api/v1//stock/"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(rules) = parse(text, "fuzz") else {
        return;
    };
    for (i, rule) in rules.iter().enumerate() {
        assert!(rules[..i].iter().all(|r| r.name != rule.name));
        assert!((1..=1_000_000).contains(&rule.rate));
        assert!((1..=1_000_000).contains(&rule.burst));
        assert!((1..=86_400).contains(&rule.period_secs));
        assert!(!rule.interval.is_zero());
        assert!(!rule.key.is_empty());
        for (method, path) in REQUESTS {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            if let Some(Some(sku)) = rule.matches(&method, path) {
                assert!(path.split('/').any(|segment| segment == sku));
            }
        }
    }
});
