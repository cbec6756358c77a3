//! The identity provider's public keys: a JWKS read from a file or an `http://` URL, cached
//! in an [`ArcSwap`] so the hot path reads it without locks. Re-read periodically and when a
//! token names an unknown `kid` (key rotation), at most once per minimum interval so a flood
//! of made-up `kid`s cannot turn into a flood of fetches. A failed or empty fetch keeps the
//! last good set.
//!
//! What a provider (or whoever sits between it and us) can send is bounded: a URL body is
//! streamed and the fetch aborted once it passes [`MAX_JWKS_BYTES`] (the whole body is never
//! read first), redirects are not followed, and only signature keys are kept: a key whose
//! `use` is not `sig`, or whose `alg` is not one of the allowed algorithms, is skipped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use thiserror::Error;

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Every public-key algorithm (the allowlist of [`KeySet::load`]).
const PUBLIC_KEY_ALGORITHMS: &[Algorithm] = &[
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

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

/// One verification key and the algorithm it is published for, if the JWKS names one (a
/// token must then be signed with exactly that algorithm).
#[derive(Clone)]
pub struct VerifyingKey {
    pub key: DecodingKey,
    pub alg: Option<Algorithm>,
}

type Keys = HashMap<String, Arc<VerifyingKey>>;

/// The cached key set.
pub struct KeySet {
    source: KeySource,
    keys: ArcSwap<Keys>,
    min_refresh: Duration,
    /// Keys published for another algorithm than these are skipped.
    algorithms: Vec<Algorithm>,
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
    /// Loads the set once, keeping keys for any public-key algorithm; fails when the first
    /// load fails (a gateway without keys would refuse every buyer, better to say so at start).
    pub async fn load(source: KeySource, min_refresh: Duration) -> Result<Arc<Self>, JwksError> {
        Self::load_allowing(source, min_refresh, PUBLIC_KEY_ALGORITHMS.to_vec()).await
    }

    /// [`KeySet::load`] keeping only keys usable with `algorithms` (`auth.algorithms`).
    pub async fn load_allowing(
        source: KeySource,
        min_refresh: Duration,
        algorithms: Vec<Algorithm>,
    ) -> Result<Arc<Self>, JwksError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            // A redirect could send the fetch anywhere (another host, a metadata address).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| JwksError::Fetch {
                source_name: "http client".into(),
                message: e.to_string(),
            })?;
        let set = KeySet {
            source,
            keys: ArcSwap::from_pointee(HashMap::new()),
            min_refresh,
            algorithms,
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
    pub async fn get(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
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
                let bytes = self
                    .fetch_url(url)
                    .await
                    .map_err(|message| JwksError::Fetch {
                        source_name: url.clone(),
                        message,
                    })?;
                (url.clone(), parse_set(url, &bytes)?)
            }
        };
        let keys = decode_keys(&set, &self.algorithms);
        if keys.is_empty() {
            return Err(JwksError::Parse {
                source_name: name,
                message: "no usable key with a kid".into(),
            });
        }
        Ok(keys)
    }
}

impl KeySet {
    /// GETs `url` and reads its body a chunk at a time, giving up as soon as it passes
    /// [`MAX_JWKS_BYTES`] (a declared larger length is refused before any byte is read). Only
    /// a 2xx answer counts: a redirect is an error, not followed.
    async fn fetch_url(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut response = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_redirection() {
            return Err(format!("answered {status}: redirects are not followed"));
        }
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let too_large = || format!("body larger than {MAX_JWKS_BYTES} bytes");
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
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

/// Every signature key with a `kid` that decodes and may be used with `algorithms`; the others
/// are skipped with a log line (one bad key in a provider's set must not lock every buyer out).
fn decode_keys(set: &JwkSet, algorithms: &[Algorithm]) -> Keys {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            tracing::warn!("jwks key without kid skipped");
            continue;
        };
        let alg = match usable_algorithm(jwk, algorithms) {
            Ok(alg) => alg,
            Err(reason) => {
                tracing::warn!(%kid, reason, "jwks key skipped");
                continue;
            }
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                keys.insert(kid, Arc::new(VerifyingKey { key, alg }));
            }
            Err(error) => tracing::warn!(%kid, %error, "jwks key skipped"),
        }
    }
    keys
}

/// Whether `jwk` may verify buyer tokens: its `use`, when given, is `sig`, and its `alg`, when
/// given, is one of `algorithms` (then returned: tokens must use exactly it). A key without
/// `alg` is used for the allowed algorithms of its key type.
fn usable_algorithm(jwk: &Jwk, algorithms: &[Algorithm]) -> Result<Option<Algorithm>, String> {
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(other) => return Err(format!("use is {other:?}, not sig")),
    }
    let Some(declared) = jwk.common.key_algorithm else {
        return Ok(None);
    };
    // `KeyAlgorithm` prints its JWA name; encryption algorithms are no `Algorithm`.
    match declared.to_string().parse::<Algorithm>() {
        Ok(alg) if alg.family() != AlgorithmFamily::Hmac && algorithms.contains(&alg) => {
            Ok(Some(alg))
        }
        _ => Err(format!("alg {declared} is not an allowed algorithm")),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::jwk::KeyAlgorithm;

    use super::*;

    fn jwk(key_use: Option<PublicKeyUse>, alg: Option<KeyAlgorithm>) -> Jwk {
        let mut jwk = reservation_core::TokenSigner::generate("k").public_jwk();
        jwk.common.public_key_use = key_use;
        jwk.common.key_algorithm = alg;
        jwk
    }

    #[test]
    fn only_signature_keys_for_allowed_algorithms_are_kept() {
        let allowed = [Algorithm::EdDSA, Algorithm::RS256];
        let usable = |jwk: &Jwk| usable_algorithm(jwk, &allowed);
        assert_eq!(usable(&jwk(None, None)), Ok(None));
        let signing = jwk(Some(PublicKeyUse::Signature), Some(KeyAlgorithm::EdDSA));
        assert_eq!(usable(&signing), Ok(Some(Algorithm::EdDSA)));
        for refused in [
            jwk(Some(PublicKeyUse::Encryption), None),
            jwk(Some(PublicKeyUse::Other("wrap".into())), None),
            jwk(None, Some(KeyAlgorithm::ES256)),
            jwk(None, Some(KeyAlgorithm::RSA_OAEP)),
            jwk(None, Some(KeyAlgorithm::HS256)),
            jwk(None, Some(KeyAlgorithm::UNKNOWN_ALGORITHM)),
        ] {
            assert!(usable(&refused).is_err(), "{:?}", refused.common);
        }
        let set = JwkSet {
            keys: vec![jwk(Some(PublicKeyUse::Encryption), None)],
        };
        assert!(decode_keys(&set, &allowed).is_empty());
    }
}
