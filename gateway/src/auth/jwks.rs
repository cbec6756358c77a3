//! The identity provider's public keys: a JWKS read from a file, a URL, or the `jwks_uri` an
//! issuer's OpenID discovery document names ([`super::discovery`]; the document is re-read with
//! every refresh, so a moved `jwks_uri` is followed), fetched through the bounded client of
//! [`super::fetch`]. Several sources (several issuers) make one set; each
//! source's keys are cached in an [`ArcSwap`] so the hot path reads them without locks.
//!
//! Key rotation: every source is re-read periodically, and when a token names an unknown
//! `kid`, at most once per minimum interval so a flood of made-up `kid`s cannot turn into a
//! flood of fetches. A failed fetch keeps the source's last good keys, for at most
//! `max_stale` after its last successful read: past that they stop verifying (the provider may
//! have withdrawn them). A set read successfully replaces the old one whole, so an empty set
//! withdraws every key of its source. Only signature keys are kept: a key whose `use` is not
//! `sig`, or whose `alg` is not one of the allowed algorithms, is skipped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use prometheus::IntCounterVec;
use thiserror::Error;

use super::discovery::{self, DiscoveryError};
use super::fetch::{FetchError, Fetcher};

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// How long keys outlive their source's last successful read by default.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 3600);

/// Every public-key algorithm (the allowlist of [`KeySet::load`]).
pub const PUBLIC_KEY_ALGORITHMS: &[Algorithm] = &[
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

/// Where a key set comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    File(PathBuf),
    Url(String),
    /// The `jwks_uri` of this issuer's OpenID discovery document; its keys verify only
    /// tokens of this issuer.
    Discovery(String),
    /// A fixed set (tests and in-process setups); never re-read, never stale.
    Static(JwkSet),
}

impl KeySource {
    fn name(&self) -> String {
        match self {
            KeySource::File(path) => path.display().to_string(),
            KeySource::Url(url) => url.clone(),
            KeySource::Discovery(issuer) => discovery::configuration_url(issuer),
            KeySource::Static(_) => "static".into(),
        }
    }
}

#[derive(Debug, Error)]
pub enum JwksError {
    #[error("cannot read jwks {path}", path = .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("jwks {source_name} is not a valid key set: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    /// Only at start: a refresh that finds no usable key withdraws the keys instead.
    #[error("jwks {source_name} has no usable key with a kid")]
    NoUsableKey { source_name: String },
}

impl JwksError {
    /// The label of this failure in `stockgate_jwks_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            JwksError::Read { .. } => "read",
            JwksError::Fetch(e) => e.kind(),
            JwksError::Discovery(e) => e.kind(),
            JwksError::Parse { .. } => "parse",
            JwksError::NoUsableKey { .. } => "no_usable_key",
        }
    }
}

/// One verification key, the algorithm it is published for if the JWKS names one (a token
/// must then be signed with exactly that algorithm), and the issuer whose discovery published
/// it (a token verified with it must carry that `iss`).
#[derive(Clone)]
pub struct VerifyingKey {
    pub key: DecodingKey,
    pub alg: Option<Algorithm>,
    pub issuer: Option<String>,
}

/// Why no key verifies a token's `kid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingKey {
    /// No source publishes it.
    Unknown,
    /// Only sources not read successfully for longer than `max_stale` have it.
    Stale,
}

type Keys = HashMap<String, Arc<VerifyingKey>>;

/// How a [`KeySet`] reads and keeps its keys.
#[derive(Debug, Clone)]
pub struct KeySetOptions {
    /// Least time between two re-reads caused by unknown `kid`s.
    pub min_refresh: Duration,
    /// Keys outlive their source's last successful read by at most this.
    pub max_stale: Duration,
    /// Keys published for another algorithm than these are skipped.
    pub algorithms: Vec<Algorithm>,
    /// An extra CA (PEM) for `https://` sources, next to the system roots.
    pub ca_file: Option<PathBuf>,
}

impl KeySetOptions {
    /// Every public-key algorithm, the system roots, keys stale after a day.
    pub fn new(min_refresh: Duration) -> Self {
        KeySetOptions {
            min_refresh,
            max_stale: DEFAULT_MAX_STALE,
            algorithms: PUBLIC_KEY_ALGORITHMS.to_vec(),
            ca_file: None,
        }
    }
}

/// One source and the keys last read from it.
struct Source {
    source: KeySource,
    keys: ArcSwap<Keys>,
    /// Milliseconds after the set's `created` of the last successful read.
    read_ms: AtomicU64,
}

/// The cached key set.
pub struct KeySet {
    sources: Vec<Source>,
    options: KeySetOptions,
    /// When this set was created: the base of every `*_ms` field.
    created: Instant,
    /// Milliseconds after `created` of the last refresh attempt; read without a lock so a
    /// flood of unknown `kid`s is turned away without waiting on anything.
    last_refresh_ms: AtomicU64,
    /// Serializes refreshes (single flight).
    refreshing: tokio::sync::Mutex<()>,
    /// Built only when a source is fetched over the network.
    fetcher: Option<Fetcher>,
    /// `stockgate_jwks_errors_total{kind}`, once the gateway's metrics exist.
    errors: OnceLock<IntCounterVec>,
}

impl KeySet {
    /// Loads one source, keeping keys for any public-key algorithm (see [`KeySet::load_all`]).
    pub async fn load(source: KeySource, min_refresh: Duration) -> Result<Arc<Self>, JwksError> {
        Self::load_all(vec![source], KeySetOptions::new(min_refresh)).await
    }

    /// Loads every source once; fails when one fails or has no usable key (a gateway that
    /// cannot verify an issuer's tokens would refuse its buyers: better to say so at start).
    pub async fn load_all(
        sources: Vec<KeySource>,
        options: KeySetOptions,
    ) -> Result<Arc<Self>, JwksError> {
        let networked = sources
            .iter()
            .any(|s| matches!(s, KeySource::Url(_) | KeySource::Discovery(_)));
        let fetcher = match networked {
            true => Some(Fetcher::new(options.ca_file.as_deref())?),
            false => None,
        };
        let set = KeySet {
            sources: sources
                .into_iter()
                .map(|source| Source {
                    source,
                    keys: ArcSwap::from_pointee(HashMap::new()),
                    read_ms: AtomicU64::new(0),
                })
                .collect(),
            options,
            created: Instant::now(),
            last_refresh_ms: AtomicU64::new(0),
            refreshing: tokio::sync::Mutex::new(()),
            fetcher,
            errors: OnceLock::new(),
        };
        for source in &set.sources {
            let keys = set.read(&source.source).await?;
            if keys.is_empty() {
                return Err(JwksError::NoUsableKey {
                    source_name: source.source.name(),
                });
            }
            source.keys.store(Arc::new(keys));
            source.read_ms.store(set.now_ms(), Ordering::Release);
        }
        Ok(Arc::new(set))
    }

    /// Counts refresh failures in `counter` (labelled by [`JwksError::kind`]).
    pub fn count_errors_in(&self, counter: IntCounterVec) {
        let _ = self.errors.set(counter);
    }

    /// The keys named `kid` (one per source that publishes it, usually one); an unknown or
    /// stale `kid` triggers one rate-limited re-read.
    pub async fn get(&self, kid: &str) -> Result<Vec<Arc<VerifyingKey>>, MissingKey> {
        let missing = match self.lookup(kid) {
            Ok(keys) => return Ok(keys),
            Err(missing) => missing,
        };
        if self.is_static() || !self.refresh_due() {
            return Err(missing);
        }
        let _single_flight = self.refreshing.lock().await;
        // Another request may have refreshed while this one waited for the lock.
        if let Ok(keys) = self.lookup(kid) {
            return Ok(keys);
        }
        if !self.refresh_due() {
            return Err(missing);
        }
        self.refresh_locked().await;
        self.lookup(kid)
    }

    fn lookup(&self, kid: &str) -> Result<Vec<Arc<VerifyingKey>>, MissingKey> {
        let now = self.now_ms();
        let max_stale = u64::try_from(self.options.max_stale.as_millis()).unwrap_or(u64::MAX);
        let mut found = Vec::new();
        let mut stale = false;
        for source in &self.sources {
            let Some(key) = source.keys.load().get(kid).cloned() else {
                continue;
            };
            let age = now.saturating_sub(source.read_ms.load(Ordering::Acquire));
            if matches!(source.source, KeySource::Static(_)) || age <= max_stale {
                found.push(key);
            } else {
                stale = true;
            }
        }
        match (found.is_empty(), stale) {
            (false, _) => Ok(found),
            (true, true) => Err(MissingKey::Stale),
            (true, false) => Err(MissingKey::Unknown),
        }
    }

    fn is_static(&self) -> bool {
        self.sources
            .iter()
            .all(|s| matches!(s.source, KeySource::Static(_)))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the minimum interval since the last refresh has passed.
    fn refresh_due(&self) -> bool {
        let last = self.last_refresh_ms.load(Ordering::Acquire);
        let min = u64::try_from(self.options.min_refresh.as_millis()).unwrap_or(u64::MAX);
        self.now_ms().saturating_sub(last) >= min
    }

    /// Re-reads every source now (after any refresh already running).
    pub async fn refresh_now(&self) {
        let _single_flight = self.refreshing.lock().await;
        self.refresh_locked().await;
    }

    /// Re-reads every source; a source that fails keeps its last good keys (logged, counted).
    async fn refresh_locked(&self) {
        self.last_refresh_ms.store(self.now_ms(), Ordering::Release);
        for source in &self.sources {
            if matches!(source.source, KeySource::Static(_)) {
                continue;
            }
            match self.read(&source.source).await {
                Ok(keys) => {
                    if keys.is_empty() {
                        tracing::warn!(
                            source = %source.source.name(),
                            "jwks has no usable key: its keys are withdrawn"
                        );
                    } else {
                        tracing::debug!(source = %source.source.name(), keys = keys.len(), "jwks refreshed");
                    }
                    source.keys.store(Arc::new(keys));
                    source.read_ms.store(self.now_ms(), Ordering::Release);
                }
                Err(error) => {
                    if let Some(counter) = self.errors.get() {
                        counter.with_label_values(&[error.kind()]).inc();
                    }
                    tracing::warn!(
                        source = %source.source.name(),
                        error = %super::fetch::error_chain(&error),
                        "jwks refresh failed, keeping the last good keys until they go stale"
                    );
                }
            }
        }
    }

    /// Runs forever, re-reading the set every `every` (spawned on a background runtime).
    pub async fn refresh_periodically(self: Arc<Self>, every: Duration) {
        if self.is_static() {
            return;
        }
        loop {
            tokio::time::sleep(every).await;
            self.refresh_now().await;
        }
    }

    /// Reads one source's usable keys.
    async fn read(&self, source: &KeySource) -> Result<Keys, JwksError> {
        let algorithms = &self.options.algorithms;
        let fetcher = || {
            self.fetcher
                .as_ref()
                .ok_or_else(|| FetchError::Client("no https client for a networked source".into()))
        };
        let (name, bytes, issuer) = match source {
            KeySource::Static(set) => return Ok(decode_keys(set, algorithms, None)),
            KeySource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|source| JwksError::Read {
                        path: path.clone(),
                        source,
                    })?;
                (path.display().to_string(), bytes, None)
            }
            KeySource::Url(url) => {
                let bytes = fetcher()?.get(url, MAX_JWKS_BYTES).await?;
                (url.clone(), bytes, None)
            }
            KeySource::Discovery(issuer) => {
                let url = discovery::jwks_uri(fetcher()?, issuer).await?;
                let bytes = fetcher()?.get(&url, MAX_JWKS_BYTES).await?;
                (url, bytes, Some(issuer.as_str()))
            }
        };
        let set = parse_set(&name, &bytes)?;
        Ok(decode_keys(&set, algorithms, issuer))
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
fn decode_keys(set: &JwkSet, algorithms: &[Algorithm], issuer: Option<&str>) -> Keys {
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
                let issuer = issuer.map(str::to_owned);
                keys.insert(kid, Arc::new(VerifyingKey { key, alg, issuer }));
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
        assert!(decode_keys(&set, &allowed, None).is_empty());
    }
}
