//! Buyer authentication at the edge: `Authorization: Bearer <JWT>` from an identity provider,
//! verified against a cached JWKS ([`jwks`], found by OpenID discovery or configured, fetched
//! by [`fetch`]) selected by `kid`, with an algorithm allowlist and deliberate
//! `exp`/`nbf`/`iss`/`aud` checks (`exp` required, `nbf` checked when present). The buyer id
//! (`auth.subject_claim`, e.g. Entra ID's `oid`) and the roles (`auth.roles_claim`, mapped by
//! `auth.roles_map`) are what the edge acts on and asserts to settlement
//! ([`crate::service_auth`]); nothing the client sends about its identity is trusted.
//!
//! [`devkeys`] holds the dev identity key used by `stockgate token` and the embedded default.

mod cache;
pub mod devkeys;
pub mod discovery;
pub mod fetch;
pub mod jwks;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::config::AuthConfig;
pub use jwks::{KeySet, KeySetOptions, KeySource, MissingKey};

/// Buyer tokens longer than this are refused before any parsing (a 64 KiB token costs nothing).
/// Room for an Entra ID token with its `groups` claim (up to 200 group ids, about 10 KiB).
pub const MAX_BUYER_TOKEN_LEN: usize = 16 * 1024;
/// The role that opens the ops routes (`/api/v1/admin/*`).
pub const OPS_ROLE: &str = "ops";

/// The claims of the tokens stockgate mints itself (`stockgate token`, the dev sign-in) and
/// its tests sign. Verification reads claims by name ([`BuyerAuth::verify`]), as providers
/// differ: `aud` may be a list, `nbf` may be absent, the buyer id may be another claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuyerClaims {
    pub sub: String,
    #[serde(default)]
    pub roles: Vec<String>,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    #[serde(default)]
    pub iat: u64,
}

/// Who is calling, after the token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub sub: String,
    pub roles: Vec<String>,
}

impl Identity {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Why a request was not authenticated. Every variant answers 401 except `Forbidden` (403).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("bearer token is malformed")]
    Malformed,
    #[error("bearer token algorithm is not allowed")]
    AlgorithmNotAllowed,
    #[error("bearer token is signed with an unknown key")]
    UnknownKey,
    #[error("bearer token signature is invalid")]
    BadSignature,
    #[error("bearer token has expired")]
    Expired,
    #[error("bearer token is not valid yet")]
    NotYetValid,
    #[error("bearer token has the wrong issuer or audience")]
    WrongIssuerOrAudience,
    /// The token's key is known but its source has not been read for longer than
    /// `auth.max_stale_keys_secs`: the token may be good, the gateway cannot tell (503).
    #[error("the identity provider's keys could not be refreshed, retry later")]
    KeysUnavailable,
    #[error("bearer token lacks a required scope")]
    InsufficientScope,
    #[error("this route needs the {0} role")]
    Forbidden(&'static str),
}

impl AuthError {
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            AuthError::Forbidden(_) => (403, "forbidden"),
            AuthError::InsufficientScope => (403, "insufficient_scope"),
            AuthError::KeysUnavailable => (503, "identity_keys_unavailable"),
            AuthError::Missing => (401, "missing_token"),
            AuthError::Expired => (401, "token_expired"),
            _ => (401, "invalid_token"),
        }
    }
}

/// Why a name in the `auth.algorithms` allowlist is refused (config validation puts the text
/// after the field's name).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AlgorithmError {
    #[error("unknown algorithm {name:?}")]
    Unknown {
        name: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// A shared secret cannot be published in a JWKS.
    #[error("{name} is symmetric; only public-key algorithms are allowed")]
    Symmetric { name: String },
}

/// Parses an algorithm name from the config allowlist; symmetric algorithms are refused
/// because a shared secret cannot be published in a JWKS.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, AlgorithmError> {
    let alg = Algorithm::from_str(name).map_err(|source| AlgorithmError::Unknown {
        name: name.to_owned(),
        source,
    })?;
    if alg.family() == AlgorithmFamily::Hmac {
        return Err(AlgorithmError::Symmetric {
            name: name.to_owned(),
        });
    }
    Ok(alg)
}

/// What a verified token's claims are read for (from `[auth]`).
struct ClaimRules {
    subject_claim: String,
    roles_claim: String,
    roles_map: BTreeMap<String, String>,
    required_scopes: Vec<String>,
}

/// Verifies buyer tokens. Cheap to clone (shared key cache and verified-token cache).
#[derive(Clone)]
pub struct BuyerAuth {
    keys: Arc<KeySet>,
    /// One prepared validation per allowed algorithm (built once, not per request).
    allowed: Arc<Vec<(Algorithm, Validation)>>,
    rules: Arc<ClaimRules>,
    verified: Arc<cache::VerifiedTokens>,
}

impl BuyerAuth {
    /// Fails only on a name of `auth.algorithms` ([`parse_algorithm`]).
    pub fn new(config: &AuthConfig, keys: Arc<KeySet>) -> Result<Self, AlgorithmError> {
        let mut allowed = Vec::new();
        for name in &config.algorithms {
            let alg = parse_algorithm(name)?;
            let mut validation = Validation::new(alg);
            validation.leeway = config.leeway_secs;
            // Checked when present; Entra ID sets it, not every provider does.
            validation.validate_nbf = true;
            validation.set_issuer(&config.issuer);
            validation.set_audience(&config.audience);
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            allowed.push((alg, validation));
        }
        Ok(BuyerAuth {
            keys,
            allowed: Arc::new(allowed),
            rules: Arc::new(ClaimRules {
                subject_claim: config.subject_claim.clone(),
                roles_claim: config.roles_claim.clone(),
                roles_map: config.roles_map.clone(),
                required_scopes: config.required_scopes.clone(),
            }),
            verified: Arc::default(),
        })
    }

    pub fn key_set(&self) -> &Arc<KeySet> {
        &self.keys
    }

    /// Checks an `Authorization` header value and returns the caller's identity.
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Identity, AuthError> {
        let raw = authorization.ok_or(AuthError::Missing)?;
        if raw.len() > MAX_BUYER_TOKEN_LEN + 7 {
            return Err(AuthError::Malformed);
        }
        let value = std::str::from_utf8(raw).map_err(|_| AuthError::Malformed)?;
        // The scheme is case-insensitive (RFC 9110 §11.1), followed by spaces or tabs.
        let (scheme, token) = value.split_once([' ', '\t']).ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing);
        }
        self.verify(token.trim_matches([' ', '\t'])).await
    }

    /// Verifies one token: allowlisted algorithm, known `kid` of the same key family, then
    /// signature, `exp`, `nbf`, `iss`, `aud`, the key's own issuer, the required scopes and a
    /// well-formed buyer id.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() || token.len() > MAX_BUYER_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        if let Some(identity) = self.verified.get(token) {
            return Ok(identity);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        // The allowlist is checked before any key is looked up, so `alg: none` and HMAC
        // tokens (the "HS256 signed with the public key" confusion) never reach a verifier.
        let validation = self
            .allowed
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .map(|(_, validation)| validation)
            .ok_or(AuthError::AlgorithmNotAllowed)?;
        let kid = header.kid.ok_or(AuthError::UnknownKey)?;
        let candidates = self.keys.get(&kid).await.map_err(|missing| match missing {
            MissingKey::Unknown => AuthError::UnknownKey,
            MissingKey::Stale => AuthError::KeysUnavailable,
        })?;
        // Two issuers may publish the same `kid`, even the same key (Entra ID publishes one
        // key set in every tenant): the first key that verifies the token for its own issuer
        // decides. A key of another issuer is passed over, not the end of the search.
        let mut outcome = Err(AuthError::UnknownKey);
        for key in &candidates {
            outcome = verify_with(token, header.alg, key, validation);
            if !matches!(
                outcome,
                Err(AuthError::BadSignature
                    | AuthError::AlgorithmNotAllowed
                    | AuthError::WrongIssuerOrAudience)
            ) {
                break;
            }
        }
        let (claims, exp) = outcome?;
        let identity = self.identity(&claims)?;
        self.verified.insert(token, &identity, exp);
        Ok(identity)
    }

    /// The buyer id, roles and scopes of verified claims.
    fn identity(&self, claims: &Value) -> Result<Identity, AuthError> {
        let rules = &self.rules;
        let sub = claims
            .get(&rules.subject_claim)
            .and_then(Value::as_str)
            .ok_or(AuthError::Malformed)?;
        // The buyer id becomes a store key and an upstream header: the same rule as BuyerId.
        reservation_core::BuyerId::parse(sub).map_err(|_| AuthError::Malformed)?;
        let raw_roles: Vec<&str> = match claims.get(&rules.roles_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().ok_or(AuthError::Malformed))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(AuthError::Malformed),
        };
        let roles: Vec<String> = if rules.roles_map.is_empty() {
            // Taken as they are, they go upstream in a comma-separated header.
            if raw_roles
                .iter()
                .any(|r| r.is_empty() || !r.bytes().all(|b| b.is_ascii_graphic() && b != b','))
            {
                return Err(AuthError::Malformed);
            }
            raw_roles.into_iter().map(str::to_owned).collect()
        } else {
            // Only what the map names counts (validated config values); the provider's other
            // roles mean nothing to stockgate.
            let mut mapped: Vec<String> = raw_roles
                .iter()
                .filter_map(|r| rules.roles_map.get(*r).cloned())
                .collect();
            mapped.sort();
            mapped.dedup();
            mapped
        };
        if !rules.required_scopes.is_empty() {
            let granted = ["scp", "scope"]
                .iter()
                .find_map(|name| claims.get(*name).and_then(Value::as_str))
                .unwrap_or_default();
            let granted: Vec<&str> = granted.split(' ').collect();
            if !rules
                .required_scopes
                .iter()
                .all(|scope| granted.contains(&scope.as_str()))
            {
                return Err(AuthError::InsufficientScope);
            }
        }
        Ok(Identity {
            sub: sub.to_owned(),
            roles,
        })
    }
}

/// Checks `token` against one key: family and `alg` of the key, signature and the standard
/// claims, and the key's issuer. Returns the claims and `exp`.
fn verify_with(
    token: &str,
    alg: Algorithm,
    key: &jwks::VerifyingKey,
    validation: &Validation,
) -> Result<(Value, u64), AuthError> {
    // A key published for one algorithm verifies only that one (RFC 7517 `alg`).
    if key.key.family() != alg.family() || key.alg.is_some_and(|a| a != alg) {
        return Err(AuthError::AlgorithmNotAllowed);
    }
    let data = jsonwebtoken::decode::<Value>(token, &key.key, validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                AuthError::WrongIssuerOrAudience
            }
            ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed,
            _ => AuthError::Malformed,
        }
    })?;
    let claims = data.claims;
    // A key found by discovery of one issuer vouches only for that issuer's tokens.
    if let Some(issuer) = &key.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
    {
        return Err(AuthError::WrongIssuerOrAudience);
    }
    // A NumericDate may have a fraction (RFC 7519 §2); jsonwebtoken checked it already.
    let exp = claims
        .get("exp")
        .and_then(|exp| {
            exp.as_u64()
                .or_else(|| exp.as_f64().filter(|e| *e >= 0.0).map(|e| e as u64))
        })
        .ok_or(AuthError::Malformed)?;
    Ok((claims, exp))
}

#[cfg(test)]
mod tests;
