//! One cached catalog answer: the body, its ETag, when it was stored and how long it is
//! fresh. Times are wall-clock milliseconds because copies travel between replicas through
//! Redis. The encoding is a short text header (`v1`, stored-at, fresh-for, ETag, one per
//! line) followed by the body bytes.

use bytes::Bytes;

/// A stored catalog answer (always a 200 with a JSON body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub body: Bytes,
    /// A strong validator, quoted (`"3"` from the settlement, else a hash of the body).
    pub etag: String,
    pub stored_at_ms: u64,
    /// Fresh for this long after `stored_at_ms` (the TTL with its jitter).
    pub fresh_ms: u64,
}

/// How a copy relates to now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Past freshness by this many milliseconds.
    Stale(u64),
}

impl Entry {
    pub fn new(body: Bytes, etag: Option<String>, stored_at_ms: u64, fresh_ms: u64) -> Self {
        let etag = etag.unwrap_or_else(|| format!("\"fnv-{:016x}\"", fnv1a(&body)));
        Entry {
            body,
            etag,
            stored_at_ms,
            fresh_ms,
        }
    }

    pub fn freshness(&self, now_ms: u64) -> Freshness {
        let expires = self.stored_at_ms.saturating_add(self.fresh_ms);
        if now_ms < expires {
            Freshness::Fresh
        } else {
            Freshness::Stale(now_ms - expires)
        }
    }

    /// Whole seconds since the copy was stored (the `Age` header).
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_at_ms) / 1000
    }

    /// Whole seconds of freshness left.
    pub fn ttl_secs(&self, now_ms: u64) -> u64 {
        self.stored_at_ms
            .saturating_add(self.fresh_ms)
            .saturating_sub(now_ms)
            / 1000
    }

    /// Whether an `If-None-Match` value names this copy (weak comparison, RFC 9110 §13.1.2).
    pub fn matches(&self, if_none_match: &str) -> bool {
        let ours = self.etag.trim_start_matches("W/");
        if_none_match
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/") == ours)
    }

    pub fn encode(&self) -> Vec<u8> {
        let head = format!(
            "v1\n{}\n{}\n{}\n",
            self.stored_at_ms, self.fresh_ms, self.etag
        );
        let mut out = Vec::with_capacity(head.len() + self.body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// `None` for bytes this code did not write (then the copy is simply a miss).
    pub fn decode(raw: &[u8]) -> Option<Entry> {
        let mut rest = raw;
        let mut line = || {
            let end = rest.iter().position(|b| *b == b'\n')?;
            let text = std::str::from_utf8(&rest[..end]).ok()?.to_owned();
            rest = &rest[end + 1..];
            Some(text)
        };
        if line()? != "v1" {
            return None;
        }
        let stored_at_ms = line()?.parse().ok()?;
        let fresh_ms = line()?.parse().ok()?;
        let etag = line()?;
        Some(Entry {
            body: Bytes::copy_from_slice(rest),
            etag,
            stored_at_ms,
            fresh_ms,
        })
    }
}

/// FNV-1a, 64 bit: a cheap content hash for ETags (not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_foreign_bytes() {
        let entry = Entry::new(
            Bytes::from_static(b"[{\"sku\":\"HOT\"}]\n"),
            None,
            1_000,
            5_000,
        );
        assert!(entry.etag.starts_with("\"fnv-"));
        assert_eq!(Entry::decode(&entry.encode()), Some(entry));
        assert_eq!(Entry::decode(b"garbage"), None);
        assert_eq!(Entry::decode(b"v1\nx\n1\n\"e\"\n"), None);
    }

    #[test]
    fn freshness_age_and_validators() {
        let entry = Entry::new(Bytes::new(), Some("\"7\"".into()), 10_000, 5_000);
        assert_eq!(entry.freshness(14_999), Freshness::Fresh);
        assert_eq!(entry.freshness(15_500), Freshness::Stale(500));
        assert_eq!((entry.age_secs(12_100), entry.ttl_secs(12_100)), (2, 2));
        assert!(entry.matches("\"7\""));
        assert!(entry.matches("W/\"7\", \"8\""));
        assert!(entry.matches("*"));
        assert!(!entry.matches("\"8\""));
    }
}
