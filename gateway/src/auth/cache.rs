//! A cache of buyer tokens that already verified, so a buyer's repeated requests (reserve,
//! confirm, reads) pay for the Ed25519/RSA signature check once per token, not once per
//! request — the signature check is the largest CPU cost of an edge request.
//!
//! Safety rules:
//! - the key is the whole token string, so only the exact bytes that verified are trusted;
//! - an entry lives until the token's own `exp` (never past it, no leeway), and at most
//!   [`MAX_ENTRY_AGE`] so that a key withdrawn from the JWKS stops being honoured soon;
//! - only successes are cached; a token that failed is checked again every time.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Identity;

/// Most tokens remembered (a few hundred bytes each); when full, the cache starts over.
pub const MAX_CACHED_TOKENS: usize = 50_000;
/// Longest an entry is trusted without checking the signature again.
pub const MAX_ENTRY_AGE: Duration = Duration::from_secs(60);

struct Entry {
    identity: Identity,
    /// The token's `exp`, seconds since the Unix epoch.
    exp: u64,
    verified_at: Instant,
}

#[derive(Default)]
pub struct VerifiedTokens {
    entries: RwLock<HashMap<String, Entry>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(u64::MAX)
}

impl VerifiedTokens {
    /// The identity of a token that verified recently and has not expired.
    pub fn get(&self, token: &str) -> Option<Identity> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(token)?;
        let fresh = unix_now() < entry.exp && entry.verified_at.elapsed() < MAX_ENTRY_AGE;
        fresh.then(|| entry.identity.clone())
    }

    /// Remembers a token that just verified.
    pub fn insert(&self, token: &str, identity: &Identity, exp: u64) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_CACHED_TOKENS {
            // Starting over is simpler than an LRU and costs one verification per live token.
            entries.clear();
        }
        entries.insert(
            token.to_owned(),
            Entry {
                identity: identity.clone(),
                exp,
                verified_at: Instant::now(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity {
            sub: "alice".into(),
            roles: vec![],
        }
    }

    #[test]
    fn remembers_only_the_exact_token_until_it_expires() {
        let cache = VerifiedTokens::default();
        cache.insert("t1", &alice(), unix_now() + 60);
        assert_eq!(cache.get("t1"), Some(alice()));
        assert_eq!(cache.get("t1x"), None);
        cache.insert("old", &alice(), unix_now().saturating_sub(1));
        assert_eq!(
            cache.get("old"),
            None,
            "an expired token is never answered from cache"
        );
    }

    #[test]
    fn starts_over_when_full() {
        let cache = VerifiedTokens::default();
        let exp = unix_now() + 60;
        for i in 0..MAX_CACHED_TOKENS {
            cache.insert(&format!("t{i}"), &alice(), exp);
        }
        cache.insert("one-more", &alice(), exp);
        assert_eq!(cache.get("one-more"), Some(alice()));
        assert_eq!(cache.get("t0"), None);
        assert_eq!(cache.entries.read().unwrap().len(), 1);
    }
}
