//! Service assertions: how settlement knows a request comes from the gateway, and for whom.
//!
//! The gateway signs one short-lived compact JWS (EdDSA) per request it sends settlement, in
//! header [`ASSERTION_HEADER`]. It names the audience and issuer, lives
//! [`ASSERTION_LIFETIME_SECS`], and is bound to the request ([`Bound`]): method, path with
//! query, the `If-Match` precondition and the SHA-256 of the body (`bh`), so a captured
//! assertion cannot carry another request. Each has a unique id (`jti`): settlement takes the
//! assertion of a request that changes something once, so it cannot be replayed either. The
//! identity the gateway acts for travels as JSON claims (`sub`, any UTF-8 string, and
//! `roles`), never as headers. Settlement verifies with the gateway's public keys (a JWKS, so
//! a key can rotate: every `kid` of the set verifies).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::token::{MAX_LEEWAY_SECS, MAX_TOKEN_LEN, TokenError, TokenSigner};
use crate::wire::codes;

/// The request header that carries the assertion ([`crate::wire::headers::ASSERTION`]).
pub const ASSERTION_HEADER: &str = crate::wire::headers::ASSERTION;
/// `aud` of every assertion: no other JWT (a buyer's, a reservation token) is taken for one.
pub const SETTLEMENT_AUDIENCE: &str = "stockgate:settlement";
/// `iss` of every assertion.
pub const GATEWAY_ISSUER: &str = "stockgate:gateway";
/// How long an assertion is worth presenting: long enough for one request and its retries
/// to be signed afresh, short enough that a captured one is soon worthless.
pub const ASSERTION_LIFETIME_SECS: u64 = 30;

/// The claims of one assertion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    /// The HTTP method, upper case.
    pub method: String,
    /// The path with its query string, exactly as sent.
    pub path: String,
    /// base64url (no padding) of the SHA-256 of the body.
    pub bh: String,
    /// The request's `If-Match` (a precondition is part of what the caller asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_match: Option<String>,
    /// A unique id of this assertion.
    #[serde(default)]
    pub jti: String,
    /// The buyer or operator the gateway acts for; `None` for the gateway's own requests
    /// (catalog reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// What of a request an assertion is bound to.
#[derive(Clone, Copy, Debug)]
pub struct Bound<'a> {
    /// The HTTP method (compared without case).
    pub method: &'a str,
    /// The path with its query string, exactly as on the request line.
    pub path: &'a str,
    /// The `If-Match` header's value, when the request has one.
    pub if_match: Option<&'a str>,
    pub body: &'a [u8],
}

impl<'a> Bound<'a> {
    /// A request without `If-Match`.
    pub fn new(method: &'a str, path: &'a str, body: &'a [u8]) -> Self {
        Bound {
            method,
            path,
            if_match: None,
            body,
        }
    }

    pub fn with_if_match(self, if_match: Option<&'a str>) -> Self {
        Bound { if_match, ..self }
    }
}

/// A verified assertion: who the request acts for, and the assertion's id (for the
/// single-use check of a request that changes something).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub identity: Identity,
    pub id: String,
}

/// Who a verified request acts for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub sub: Option<String>,
    pub roles: Vec<String>,
}

impl Identity {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case(role))
    }
}

/// Why settlement refused a request's assertion; each is a 401 with its own code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AssertionError {
    #[error("no service assertion")]
    Missing,
    #[error("service assertion is invalid")]
    Invalid,
    #[error("service assertion has expired")]
    Expired,
    #[error("service assertion does not match this request")]
    Mismatch,
    #[error("service assertion was already used")]
    Replayed,
}

impl AssertionError {
    pub fn code(&self) -> &'static str {
        match self {
            AssertionError::Missing => codes::SERVICE_AUTH_MISSING,
            AssertionError::Invalid => codes::SERVICE_AUTH_INVALID,
            AssertionError::Expired => codes::SERVICE_AUTH_EXPIRED,
            AssertionError::Mismatch => codes::SERVICE_AUTH_MISMATCH,
            AssertionError::Replayed => codes::SERVICE_AUTH_REPLAYED,
        }
    }
}

/// base64url (no padding) of the SHA-256 of `body`.
pub fn body_hash(body: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(body))
}

/// The gateway's side: signs one assertion per request.
pub struct AssertionSigner {
    key: TokenSigner,
}

impl AssertionSigner {
    pub fn new(key: TokenSigner) -> Self {
        AssertionSigner { key }
    }

    /// The public half as a one-key JWKS, for a settlement in the same process.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.key.public_jwk()],
        }
    }

    /// The assertion for one request at `now_secs`.
    pub fn sign(
        &self,
        request: &Bound,
        identity: &Identity,
        now_secs: u64,
    ) -> Result<String, TokenError> {
        self.key.sign_json(&AssertionClaims {
            iss: GATEWAY_ISSUER.to_owned(),
            aud: SETTLEMENT_AUDIENCE.to_owned(),
            iat: now_secs,
            exp: now_secs + ASSERTION_LIFETIME_SECS,
            method: request.method.to_ascii_uppercase(),
            path: request.path.to_owned(),
            bh: body_hash(request.body),
            if_match: request.if_match.map(str::to_owned),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            sub: identity.sub.clone(),
            roles: identity.roles.clone(),
        })
    }
}

/// Settlement's side: verifies an assertion against the gateway's key set and the request.
#[derive(Clone)]
pub struct AssertionVerifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl AssertionVerifier {
    /// A verifier for every Ed25519 key with a `kid` in `keys` (several during a rotation).
    pub fn new(keys: &JwkSet) -> Result<Self, TokenError> {
        let mut by_kid = HashMap::new();
        for jwk in &keys.keys {
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or_else(|| TokenError::InvalidKey("a key has no kid".into()))?;
            let key =
                DecodingKey::from_jwk(jwk).map_err(|e| TokenError::InvalidKey(e.to_string()))?;
            if key.family() != jsonwebtoken::AlgorithmFamily::Ed {
                return Err(TokenError::InvalidKey(format!("key {kid} is not ed25519")));
            }
            if by_kid.insert(kid.clone(), key).is_some() {
                return Err(TokenError::InvalidKey(format!("kid {kid} appears twice")));
            }
        }
        if by_kid.is_empty() {
            return Err(TokenError::InvalidKey("the key set is empty".into()));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = MAX_LEEWAY_SECS;
        validation.set_audience(&[SETTLEMENT_AUDIENCE]);
        validation.set_issuer(&[GATEWAY_ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
        Ok(AssertionVerifier {
            keys: by_kid,
            validation,
        })
    }

    /// Checks `token` (the header's value, `None` when absent) for `request`, and returns who
    /// it acts for with the assertion's id.
    pub fn verify(&self, token: Option<&str>, request: &Bound) -> Result<Verified, AssertionError> {
        let token = token.ok_or(AssertionError::Missing)?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(AssertionError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AssertionError::Invalid)?;
        if header.alg != Algorithm::EdDSA {
            return Err(AssertionError::Invalid);
        }
        let key = header
            .kid
            .and_then(|kid| self.keys.get(&kid))
            .ok_or(AssertionError::Invalid)?;
        let claims = jsonwebtoken::decode::<AssertionClaims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AssertionError::Expired,
                _ => AssertionError::Invalid,
            })?;
        // An assertion minted for longer than the lifetime is not one the gateway signed.
        if claims.exp.saturating_sub(claims.iat) > ASSERTION_LIFETIME_SECS || claims.jti.is_empty()
        {
            return Err(AssertionError::Invalid);
        }
        if !claims.method.eq_ignore_ascii_case(request.method)
            || claims.path != request.path
            || claims.if_match.as_deref() != request.if_match
            || claims.bh != body_hash(request.body)
        {
            return Err(AssertionError::Mismatch);
        }
        Ok(Verified {
            identity: Identity {
                sub: claims.sub,
                roles: claims.roles,
            },
            id: claims.jti,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn jose() -> Identity {
        Identity {
            sub: Some("José".into()),
            roles: vec!["buyer".into()],
        }
    }

    #[test]
    fn a_signed_assertion_verifies_and_round_trips_a_non_ascii_sub() {
        let signer = AssertionSigner::new(TokenSigner::generate("g1"));
        let verifier = AssertionVerifier::new(&signer.jwks()).unwrap();
        let token = signer
            .sign(
                &Bound::new("GET", "/api/v1/orders?x=1", b""),
                &jose(),
                now(),
            )
            .unwrap();
        let verified = verifier
            .verify(Some(&token), &Bound::new("GET", "/api/v1/orders?x=1", b""))
            .unwrap();
        assert_eq!(verified.identity, jose());
        assert_eq!(verified.id.len(), 32);
    }

    #[test]
    fn each_refusal_has_its_code() {
        let signer = AssertionSigner::new(TokenSigner::generate("g1"));
        let verifier = AssertionVerifier::new(&signer.jwks()).unwrap();
        let t = now();
        let token = signer
            .sign(&Bound::new("POST", "/p", b"{}"), &jose(), t)
            .unwrap();
        let code = |r: Result<Verified, AssertionError>| r.unwrap_err().code();
        assert_eq!(
            code(verifier.verify(None, &Bound::new("POST", "/p", b"{}"))),
            "service_auth_missing"
        );
        assert_eq!(
            code(verifier.verify(Some("garbage"), &Bound::new("POST", "/p", b"{}"))),
            "service_auth_invalid"
        );
        let other = AssertionSigner::new(TokenSigner::generate("g1"));
        let forged = other
            .sign(&Bound::new("POST", "/p", b"{}"), &jose(), t)
            .unwrap();
        assert_eq!(
            code(verifier.verify(Some(&forged), &Bound::new("POST", "/p", b"{}"))),
            "service_auth_invalid"
        );
        let old = signer
            .sign(&Bound::new("POST", "/p", b"{}"), &jose(), t - 120)
            .unwrap();
        assert_eq!(
            code(verifier.verify(Some(&old), &Bound::new("POST", "/p", b"{}"))),
            "service_auth_expired"
        );
        for (method, path, body) in [
            ("PUT", "/p", &b"{}"[..]),
            ("POST", "/q", b"{}"),
            ("POST", "/p?x", b"{}"),
            ("POST", "/p", b"{\"a\":1}"),
        ] {
            assert_eq!(
                code(verifier.verify(Some(&token), &Bound::new(method, path, body))),
                "service_auth_mismatch"
            );
        }
        // The precondition is bound too: `If-Match: "3"` can become neither `*` nor nothing.
        let pinned = Bound::new("PUT", "/p", b"{}").with_if_match(Some("\"3\""));
        let token = signer.sign(&pinned, &jose(), t).unwrap();
        assert!(verifier.verify(Some(&token), &pinned).is_ok());
        for if_match in [Some("*"), None] {
            assert_eq!(
                code(verifier.verify(Some(&token), &pinned.with_if_match(if_match))),
                "service_auth_mismatch"
            );
        }
    }

    #[test]
    fn a_reservation_audience_token_is_not_an_assertion() {
        let key = TokenSigner::generate("g1");
        let jwks = JwkSet {
            keys: vec![key.public_jwk()],
        };
        let verifier = AssertionVerifier::new(&jwks).unwrap();
        let t = now();
        let mut claims = AssertionClaims {
            iss: GATEWAY_ISSUER.into(),
            aud: "stockgate:reservation".into(),
            iat: t,
            exp: t + 10,
            method: "GET".into(),
            path: "/".into(),
            bh: body_hash(b""),
            if_match: None,
            jti: "j1".into(),
            sub: None,
            roles: vec!["ops".into()],
        };
        let token = key.sign_json(&claims).unwrap();
        assert_eq!(
            verifier.verify(Some(&token), &Bound::new("GET", "/", b"")),
            Err(AssertionError::Invalid)
        );
        claims.aud = SETTLEMENT_AUDIENCE.into();
        claims.exp = t + 3600;
        let long_lived = key.sign_json(&claims).unwrap();
        assert_eq!(
            verifier.verify(Some(&long_lived), &Bound::new("GET", "/", b"")),
            Err(AssertionError::Invalid)
        );
    }

    #[test]
    fn every_kid_of_a_rotating_set_verifies() {
        let old = AssertionSigner::new(TokenSigner::generate("old"));
        let new = AssertionSigner::new(TokenSigner::generate("new"));
        let mut jwks = old.jwks();
        jwks.keys.extend(new.jwks().keys);
        let verifier = AssertionVerifier::new(&jwks).unwrap();
        for signer in [&old, &new] {
            let token = signer
                .sign(&Bound::new("GET", "/", b""), &jose(), now())
                .unwrap();
            assert!(
                verifier
                    .verify(Some(&token), &Bound::new("GET", "/", b""))
                    .is_ok()
            );
        }
    }
}
