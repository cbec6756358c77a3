//! The identity provider's public keys: a JWKS read from a file or an `http://` URL, cached
//! in an [`ArcSwap`] so the hot path reads it without locks. Re-read periodically and when a
//! token names an unknown `kid` (key rotation), at most once per minimum interval so a flood
//! of made-up `kid`s cannot turn into a flood of fetches. A failed or empty fetch keeps the
//! last good set.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use thiserror::Error;

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Where the key set comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    File(PathBuf),
    Url(String),
    /// A fixed set (tests and in-process setups); never re-read.
    Static(JwkSet),
}

#[derive(Debug, Error)]
pub enum JwksError {
    #[error("cannot read jwks {source_name}: {message}")]
    Fetch {
        source_name: String,
        message: String,
    },
    #[error("jwks {source_name} is not a valid key set: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
}

type Keys = HashMap<String, Arc<DecodingKey>>;

/// The cached key set.
pub struct KeySet {
    source: KeySource,
    keys: ArcSwap<Keys>,
    min_refresh: Duration,
    /// When this set was created: the base of `last_refresh_ms`.
    created: Instant,
    /// Milliseconds after `created` of the last refresh; read without a lock so a flood of
    /// unknown `kid`s is turned away without waiting on anything.
    last_refresh_ms: AtomicU64,
    /// Serializes refreshes (single flight).
    refreshing: tokio::sync::Mutex<()>,
    http: reqwest::Client,
}

impl KeySet {
    /// Loads the set once; fails when the first load fails (a gateway without keys would
    /// refuse every buyer, better to say so at start).
    pub async fn load(source: KeySource, min_refresh: Duration) -> Result<Arc<Self>, JwksError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| JwksError::Fetch {
                source_name: "http client".into(),
                message: e.to_string(),
            })?;
        let set = KeySet {
            source,
            keys: ArcSwap::from_pointee(HashMap::new()),
            min_refresh,
            created: Instant::now(),
            last_refresh_ms: AtomicU64::new(0),
            refreshing: tokio::sync::Mutex::new(()),
            http,
        };
        let keys = set.fetch().await?;
        set.keys.store(Arc::new(keys));
        Ok(Arc::new(set))
    }

    /// The key named `kid`; an unknown `kid` triggers one rate-limited re-read.
    pub async fn get(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        if let Some(key) = self.keys.load().get(kid) {
            return Some(key.clone());
        }
        if matches!(self.source, KeySource::Static(_)) {
            return None;
        }
        if !self.refresh_due() {
            return None;
        }
        let _single_flight = self.refreshing.lock().await;
        // Another request may have refreshed while this one waited for the lock.
        if let Some(key) = self.keys.load().get(kid) {
            return Some(key.clone());
        }
        if !self.refresh_due() {
            return None;
        }
        self.refresh_now().await;
        self.keys.load().get(kid).cloned()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the minimum interval since the last refresh has passed.
    fn refresh_due(&self) -> bool {
        let last = self.last_refresh_ms.load(Ordering::Acquire);
        let min = u64::try_from(self.min_refresh.as_millis()).unwrap_or(u64::MAX);
        self.now_ms().saturating_sub(last) >= min
    }

    /// Re-reads the source now; on failure logs and keeps the last good set.
    pub async fn refresh_now(&self) {
        self.last_refresh_ms.store(self.now_ms(), Ordering::Release);
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), "jwks refreshed");
                self.keys.store(Arc::new(keys));
            }
            Err(error) => tracing::warn!(%error, "jwks refresh failed, keeping the last good keys"),
        }
    }

    /// Runs forever, re-reading the set every `every` (spawned on a background runtime).
    pub async fn refresh_periodically(self: Arc<Self>, every: Duration) {
        if matches!(self.source, KeySource::Static(_)) {
            return;
        }
        loop {
            tokio::time::sleep(every).await;
            let _single_flight = self.refreshing.lock().await;
            self.refresh_now().await;
        }
    }

    async fn fetch(&self) -> Result<Keys, JwksError> {
        let (name, set) = match &self.source {
            KeySource::Static(set) => ("static".to_owned(), set.clone()),
            KeySource::File(path) => {
                let name = path.display().to_string();
                let bytes = tokio::fs::read(path).await.map_err(|e| JwksError::Fetch {
                    source_name: name.clone(),
                    message: e.to_string(),
                })?;
                let set = parse_set(&name, &bytes)?;
                (name, set)
            }
            KeySource::Url(url) => {
                let fetch_err = |message: String| JwksError::Fetch {
                    source_name: url.clone(),
                    message,
                };
                let response = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| fetch_err(e.to_string()))?;
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| fetch_err(e.to_string()))?;
                (url.clone(), parse_set(url, &bytes)?)
            }
        };
        let keys = decode_keys(&set);
        if keys.is_empty() {
            return Err(JwksError::Parse {
                source_name: name,
                message: "no usable key with a kid".into(),
            });
        }
        Ok(keys)
    }
}

fn parse_set(name: &str, bytes: &[u8]) -> Result<JwkSet, JwksError> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(JwksError::Parse {
            source_name: name.to_owned(),
            message: format!("larger than {MAX_JWKS_BYTES} bytes"),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| JwksError::Parse {
        source_name: name.to_owned(),
        message: e.to_string(),
    })
}

/// Every key with a `kid` that decodes; the others are skipped with a log line (one bad key
/// in a provider's set must not lock every buyer out).
fn decode_keys(set: &JwkSet) -> Keys {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            tracing::warn!("jwks key without kid skipped");
            continue;
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                keys.insert(kid, Arc::new(key));
            }
            Err(error) => tracing::warn!(%kid, %error, "jwks key skipped"),
        }
    }
    keys
}
