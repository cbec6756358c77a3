//! The HTTPS listener: the certificate served from files that are re-read while the gateway
//! runs, and the HTTP/2 settings that give its streams the limits HTTP/1.1 requests have.
//!
//! A Key Vault CSI mount (or a Kubernetes Secret volume) renews a certificate by writing the
//! new files into a fresh directory and renaming a `..data` symlink over the old one: the
//! paths stay, their content changes, and a modification time may even go back. So the
//! [`CertWatch`] compares the files' content with the pair it last saw, not their times. A
//! changed pair that does not load (unreadable, no certificate, a key that does not belong to
//! the leaf — as when a writer has replaced one file and not yet the other —, a leaf outside
//! its validity period) is logged and counted, and the pair being served stays until a good
//! one arrives. At start-up and in `stockgate check` the same pair is an error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::protocols::http::v2::server::{H2Options, default_h2_options};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use thiserror::Error;

use crate::config::{Http2Config, LimitsConfig};
use crate::metrics::Metrics;

/// Why a certificate and key pair could not be served.
#[derive(Debug, Error)]
pub enum CertError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} is not valid PEM: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("{} holds no usable private key: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("the key in {} does not belong to the certificate in {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("the certificate in {} cannot be used: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    /// Past its notAfter: a browser refuses it, so it is not served (a renewal that wrote
    /// an old certificate keeps the current one).
    #[error("the certificate in {} expired on {not_after}", path.display())]
    Expired { path: PathBuf, not_after: String },
    /// Its notBefore is more than [`CLOCK_SKEW_SECS`] ahead: a pre-staged certificate. The
    /// watch looks again at every interval and serves it from its notBefore on.
    #[error("the certificate in {} is valid from {not_before} only", path.display())]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("cannot set up the TLS listener: {0}")]
    Listener(String),
}

/// The rustls crypto provider of every TLS endpoint of the process: the HTTPS listener and
/// `rediss://` (both use `ring`; installing it first means no library picks another).
pub fn install_crypto_provider() {
    // An error only says a provider is installed already; with one crate feature it is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The two files as last read, compared whole to notice a renewal.
#[derive(Clone, PartialEq, Eq)]
struct PairBytes {
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|error| CertError::Read {
        path: path.to_owned(),
        error,
    })
}

/// How far a certificate's notBefore may be ahead of this clock (a CA's clock, or a node's
/// that is behind): certificates are issued with notBefore = now.
const CLOCK_SKEW_SECS: i64 = 300;

/// A pair that loads: what the listener serves, and the leaf's notAfter (Unix seconds).
struct LoadedPair {
    certified: CertifiedKey,
    not_after: i64,
}

/// Parses a chain and its key and checks that the key belongs to the leaf and that the leaf
/// is valid now.
fn parse_pair(
    cert_path: &Path,
    key_path: &Path,
    pair: &PairBytes,
) -> Result<LoadedPair, CertError> {
    let chain = CertificateDer::pem_slice_iter(&pair.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&pair.key).map_err(|e| CertError::Key {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    let unusable = |reason: String| CertError::Certificate {
        path: cert_path.to_owned(),
        reason,
    };
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|e| unusable(format!("the leaf is not X.509: {e}")))?;
    let validity = leaf.validity();
    let now = x509_parser::time::ASN1Time::now().timestamp();
    let not_after = validity.not_after.timestamp();
    if not_after < now {
        return Err(CertError::Expired {
            path: cert_path.to_owned(),
            not_after: validity.not_after.to_string(),
        });
    }
    if validity.not_before.timestamp() > now + CLOCK_SKEW_SECS {
        return Err(CertError::NotYetValid {
            path: cert_path.to_owned(),
            not_before: validity.not_before.to_string(),
        });
    }
    let certified = CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => CertError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        },
        other => unusable(other.to_string()),
    })?;
    Ok(LoadedPair {
        certified,
        not_after,
    })
}

/// Reads and checks a certificate and key pair (`stockgate check` and start-up).
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, CertError> {
    let pair = PairBytes {
        cert: read(cert_path)?,
        key: read(key_path)?,
    };
    Ok(parse_pair(cert_path, key_path, &pair)?.certified)
}

/// Hands every TLS handshake the pair being served now.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Re-reads the certificate and key files every `every` and serves a changed pair once it
/// loads.
pub struct CertWatch {
    resolver: Arc<CertResolver>,
    cert_path: PathBuf,
    key_path: PathBuf,
    every: Duration,
    /// What the files held at the last look, loaded or not: a bad pair is reported once,
    /// not at every look.
    seen: Mutex<PairBytes>,
    metrics: Arc<Metrics>,
}

impl CertWatch {
    /// Loads the pair (an error here stops the start) and returns the watch with its resolver.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        every: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<CertWatch, CertError> {
        let pair = PairBytes {
            cert: read(cert_path)?,
            key: read(key_path)?,
        };
        let loaded = parse_pair(cert_path, key_path, &pair)?;
        metrics.tls_cert_not_after.set(loaded.not_after);
        Ok(CertWatch {
            resolver: Arc::new(CertResolver {
                current: ArcSwap::from_pointee(loaded.certified),
            }),
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            every,
            seen: Mutex::new(pair),
            metrics,
        })
    }

    pub fn resolver(&self) -> Arc<CertResolver> {
        self.resolver.clone()
    }

    /// One look at the files: serves a changed pair that loads; keeps the old one otherwise.
    fn check(&self) {
        let pair = match (read(&self.cert_path), read(&self.key_path)) {
            (Ok(cert), Ok(key)) => PairBytes { cert, key },
            (Err(error), _) | (_, Err(error)) => {
                // A mount being replaced can be missing for a moment: the next look retries.
                tracing::warn!(%error, "tls certificate files unreadable, serving the previous pair");
                self.metrics.tls_cert_reload_errors.inc();
                return;
            }
        };
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        if *seen == pair {
            return;
        }
        match parse_pair(&self.cert_path, &self.key_path, &pair) {
            Ok(loaded) => {
                self.resolver.current.store(Arc::new(loaded.certified));
                self.metrics.tls_cert_not_after.set(loaded.not_after);
                self.metrics.tls_cert_reloads.inc();
                tracing::info!(cert = %self.cert_path.display(), "tls certificate reloaded");
            }
            Err(error @ CertError::NotYetValid { .. }) => {
                // Not `seen`: the same files are looked at again, and served once valid.
                self.metrics.tls_cert_reload_errors.inc();
                tracing::warn!(%error, "tls certificate not valid yet, serving the previous pair");
                return;
            }
            Err(error) => {
                self.metrics.tls_cert_reload_errors.inc();
                tracing::error!(%error, "tls certificate change refused, serving the previous pair");
            }
        }
        *seen = pair;
    }
}

#[async_trait]
impl BackgroundService for CertWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
                _ = tokio::time::sleep(self.every) => self.check(),
            }
        }
    }
}

/// The listener's TLS settings: the watch's certificate, TLS 1.2 and 1.3 (Pingora's rustls
/// acceptor offers no other version), HTTP/2 preferred by ALPN and HTTP/1.1 beside it.
pub fn settings(resolver: Arc<CertResolver>) -> Result<TlsSettings, CertError> {
    // No paths: the resolver supplies every certificate.
    let mut settings =
        TlsSettings::intermediate("", "").map_err(|e| CertError::Listener(e.to_string()))?;
    settings.set_cert_resolver(resolver);
    settings.enable_h2();
    Ok(settings)
}

/// Bytes HTTP/2 counts per header field beyond its name and value (RFC 9113 §6.5.2).
const H2_FIELD_OVERHEAD: usize = 32;

/// The decoded header-list limit HTTP/2 announces: every request within `[limits]` fits, so
/// the edge answers those over the limits with the same 431 problem as on HTTP/1.1; a header
/// block larger still is refused by the HTTP/2 codec before it is decoded into memory (431
/// and `REFUSED_STREAM`, or GOAWAY when its CONTINUATION frames overflow the limit).
pub fn header_list_limit(limits: &LimitsConfig) -> u32 {
    let bytes = limits.max_header_bytes + H2_FIELD_OVERHEAD * limits.max_header_count;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// The HTTP/2 settings of the HTTPS listener.
pub fn h2_options(http2: &Http2Config, limits: &LimitsConfig) -> H2Options {
    let mut options = default_h2_options();
    options
        .max_header_list_size(header_list_limit(limits))
        .max_concurrent_streams(http2.max_concurrent_streams)
        .initial_window_size(http2.initial_stream_window_bytes)
        .initial_connection_window_size(http2.initial_connection_window_bytes)
        .max_pending_accept_reset_streams(http2.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(Some(http2.max_local_error_reset_streams));
    options
}
