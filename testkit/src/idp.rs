//! The test identity provider: one Ed25519 key published as a static JWKS, signing buyer and
//! ops tokens for the issuer and audience the test configurations expect.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gateway::auth::BuyerClaims;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reservation_core::TokenSigner;
use serde_json::Value;

pub const KID: &str = "test-idp-1";
pub const ISSUER: &str = "test-issuer";
pub const AUDIENCE: &str = "stockgate-test";

pub struct Idp {
    pub signer: TokenSigner,
    key: EncodingKey,
}

impl Default for Idp {
    fn default() -> Self {
        Self::new()
    }
}

impl Idp {
    pub fn new() -> Self {
        let signer = TokenSigner::generate(KID);
        let key = EncodingKey::from_ed_pem(signer.to_pkcs8_pem().as_bytes()).unwrap();
        Idp { signer, key }
    }

    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.signer.public_jwk()],
        }
    }

    /// Claims valid for ten minutes from now.
    pub fn claims(&self, sub: &str, roles: &[&str]) -> BuyerClaims {
        let now = now_secs();
        BuyerClaims {
            sub: sub.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            exp: now + 600,
            nbf: now - 1,
            iat: now,
        }
    }

    pub fn sign(&self, claims: &BuyerClaims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(KID.into());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }

    pub fn token(&self, sub: &str) -> String {
        self.sign(&self.claims(sub, &[]))
    }

    pub fn ops_token(&self, sub: &str) -> String {
        self.sign(&self.claims(sub, &["ops"]))
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Unpadded URL-safe base64 (JWT segments), for tests that forge tokens.
pub fn base64url(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT's claims, read without verifying (what a test inspects, not what a service trusts);
/// `Null` for anything that is not a JWT with a JSON payload.
pub fn unverified_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap_or_default();
    URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}
