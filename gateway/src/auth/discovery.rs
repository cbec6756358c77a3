//! OpenID Connect discovery (OpenID Connect Discovery 1.0, §4): the provider's metadata at
//! `{issuer}/.well-known/openid-configuration` names its key set, `jwks_uri`. The document
//! must name the very issuer it was fetched for (§4.3: otherwise a provider, or whoever
//! answers for it, could vouch for another issuer's tokens), and an `https` issuer must publish
//! an `https` key set.

use serde::Deserialize;
use thiserror::Error;

use super::fetch::{FetchError, Fetcher, check_url};

/// Largest discovery document accepted.
pub const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

/// Why an issuer's metadata was refused.
#[derive(Debug, Error)]
pub enum DiscoveryError {
    #[error("openid discovery of {issuer}")]
    Fetch {
        issuer: String,
        #[source]
        source: FetchError,
    },
    #[error("openid discovery of {issuer}: not a valid document: {message}")]
    Parse { issuer: String, message: String },
    #[error("openid discovery of {issuer}: the document names the issuer {named:?}")]
    IssuerMismatch { issuer: String, named: String },
    #[error("openid discovery of {issuer}: jwks_uri {jwks_uri:?} is refused: {reason}")]
    JwksUri {
        issuer: String,
        jwks_uri: String,
        reason: String,
    },
}

impl DiscoveryError {
    /// The label of this failure in `stockgate_jwks_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            DiscoveryError::Fetch { source, .. } => source.kind(),
            DiscoveryError::Parse { .. } => "discovery_parse",
            DiscoveryError::IssuerMismatch { .. } => "discovery_issuer",
            DiscoveryError::JwksUri { .. } => "discovery_jwks_uri",
        }
    }
}

/// The fields of the provider metadata the gateway uses.
#[derive(Debug, Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: String,
}

/// Where `issuer`'s configuration document lives (§4: the path is appended to the issuer,
/// whose trailing `/` is dropped first).
pub fn configuration_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Reads `issuer`'s metadata and returns its `jwks_uri`.
pub async fn jwks_uri(fetcher: &Fetcher, issuer: &str) -> Result<String, DiscoveryError> {
    let fetch_err = |source| DiscoveryError::Fetch {
        issuer: issuer.to_owned(),
        source,
    };
    let issuer_url = check_url(issuer).map_err(fetch_err)?;
    let body = fetcher
        .get(&configuration_url(issuer), MAX_DISCOVERY_BYTES)
        .await
        .map_err(fetch_err)?;
    let metadata: Metadata = serde_json::from_slice(&body).map_err(|e| DiscoveryError::Parse {
        issuer: issuer.to_owned(),
        message: e.to_string(),
    })?;
    // Compared exactly, as the `iss` claim is.
    if metadata.issuer != issuer {
        return Err(DiscoveryError::IssuerMismatch {
            issuer: issuer.to_owned(),
            named: metadata.issuer,
        });
    }
    let refuse = |reason: String| DiscoveryError::JwksUri {
        issuer: issuer.to_owned(),
        jwks_uri: metadata.jwks_uri.clone(),
        reason,
    };
    let jwks_url = check_url(&metadata.jwks_uri).map_err(|e| refuse(e.to_string()))?;
    if issuer_url.scheme() == "https" && jwks_url.scheme() != "https" {
        return Err(refuse(
            "an https issuer must publish its keys over https".into(),
        ));
    }
    Ok(metadata.jwks_uri)
}
