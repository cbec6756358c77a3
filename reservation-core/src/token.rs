//! Reservation tokens: EdDSA-signed JWTs the gateway hands a buyer with each hold, so the
//! settlement service can verify a confirm on its own. A token is never the authority on
//! expiry (the hold's state in the store is); its `exp` only bounds how long it is worth
//! presenting, which is why the verifier's leeway is a few seconds at most.
//!
//! Keys rotate: the signer names its key with `kid`, and a [`TokenVerifier`] holds a key set
//! (published as a JWKS) so tokens of the previous key still verify during a rotation.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::types::{BuyerId, Hold, Qty, ReservationId, Sku};

/// The audience every reservation token names, so that no other JWT is ever taken for one.
pub const RESERVATION_AUDIENCE: &str = "stockgate:reservation";
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 4096;
/// The largest leeway a verifier accepts for `exp`/`iat`.
pub const MAX_LEEWAY_SECS: u64 = 5;

/// The claims of a reservation token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationClaims {
    pub rid: ReservationId,
    pub sub: BuyerId,
    pub sku: Sku,
    pub qty: Qty,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// The hold's expiry, rounded up to whole seconds.
    pub exp: u64,
    pub aud: String,
}

impl ReservationClaims {
    pub fn for_hold(hold: &Hold) -> Self {
        ReservationClaims {
            rid: hold.id.clone(),
            sub: hold.buyer.clone(),
            sku: hold.sku.clone(),
            qty: hold.qty,
            iat: hold.created_at_ms / 1000,
            exp: hold.expires_at_ms.div_ceil(1000),
            aud: RESERVATION_AUDIENCE.to_owned(),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("reservation token is malformed")]
    Malformed,
    #[error("reservation token is signed with an unknown key")]
    UnknownKey,
    #[error("reservation token signature is invalid")]
    BadSignature,
    #[error("reservation token has expired")]
    Expired,
    #[error("reservation token key is invalid: {0}")]
    InvalidKey(String),
}

impl TokenError {
    /// The HTTP status and problem `code` a client sees (an expired token means the hold
    /// expired too: it carries the hold's expiry).
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            TokenError::Expired => (410, crate::wire::codes::RESERVATION_EXPIRED),
            TokenError::InvalidKey(_) => (500, "token_key_error"),
            _ => (401, crate::wire::codes::INVALID_RESERVATION_TOKEN),
        }
    }
}

/// Signs reservation tokens with one Ed25519 key.
///
/// Signing is on the reserve hot path, so the signer keeps what never changes: the expanded
/// key and the encoded JWS header. (`jsonwebtoken::encode` would re-derive the key from PKCS#8
/// on every call, which costs as much again as the signature.) The output is a standard
/// compact JWS that `jsonwebtoken` verifies; the tests check that.
pub struct TokenSigner {
    kid: String,
    signing_key: SigningKey,
    /// `base64url({"typ":"JWT","alg":"EdDSA","kid":…})`, the same for every token.
    encoded_header: String,
}

impl TokenSigner {
    /// A fresh random key (the embedded default and tests).
    pub fn generate(kid: &str) -> Self {
        let signing_key = SigningKey::generate(&mut rand::rngs::OsRng);
        Self::from_signing_key(kid, signing_key)
    }

    /// A key from a PKCS#8 PEM file's contents (`openssl genpkey -algorithm ed25519`).
    pub fn from_pkcs8_pem(kid: &str, pem: &str) -> Result<Self, TokenError> {
        let signing_key =
            SigningKey::from_pkcs8_pem(pem).map_err(|e| TokenError::InvalidKey(e.to_string()))?;
        Ok(Self::from_signing_key(kid, signing_key))
    }

    fn from_signing_key(kid: &str, signing_key: SigningKey) -> Self {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        let header_json =
            serde_json::to_vec(&header).expect("a jws header always serializes to json");
        TokenSigner {
            kid: kid.to_owned(),
            signing_key,
            encoded_header: URL_SAFE_NO_PAD.encode(header_json),
        }
    }

    /// The private key as PKCS#8 PEM, to write a generated key to a file.
    pub fn to_pkcs8_pem(&self) -> String {
        self.signing_key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("an in-memory ed25519 key always encodes as pkcs8")
            .to_string()
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK with this signer's `kid`.
    pub fn public_jwk(&self) -> Jwk {
        let public = DecodingKey::from_ed_der(self.signing_key.verifying_key().as_bytes());
        let mut jwk = Jwk::from_decoding_key(&public, Some(Algorithm::EdDSA))
            .expect("an ed25519 public key always converts to a jwk");
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::EdDSA);
        jwk
    }

    /// Whether `jwk` is this signer's public key (whatever its `kid`, `use` or `alg` say):
    /// a published key set must carry the key the signer signs with.
    pub fn is_public_half(&self, jwk: &Jwk) -> bool {
        let x = |jwk: &Jwk| match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(p) => Some(p.x.clone()),
            _ => None,
        };
        x(jwk).is_some() && x(jwk) == x(&self.public_jwk())
    }

    /// The compact JWS `header.claims.signature` for `claims`.
    pub fn sign(&self, claims: &ReservationClaims) -> Result<String, TokenError> {
        self.sign_json(claims)
    }

    /// The compact JWS of any claims set under this key: the service assertions the gateway
    /// sends settlement ([`crate::assertion`]) use the same key kind and encoding.
    pub fn sign_json<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let claims_json =
            serde_json::to_vec(claims).map_err(|e| TokenError::InvalidKey(e.to_string()))?;
        let mut token = String::with_capacity(256);
        token.push_str(&self.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims_json, &mut token);
        let signature = self.signing_key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }
}

/// Verifies reservation tokens against a set of public keys selected by `kid`.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
    /// The same checks without `exp`, for [`TokenVerifier::verify_ignoring_expiry`].
    validation_any_age: Validation,
}

impl TokenVerifier {
    /// A verifier for every EdDSA key with a `kid` in `keys`; `leeway_secs` at most
    /// [`MAX_LEEWAY_SECS`]. A `kid` that appears twice is refused: which key would verify it
    /// is ambiguous.
    pub fn new(keys: &JwkSet, leeway_secs: u64) -> Result<Self, TokenError> {
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
        validation.leeway = leeway_secs.min(MAX_LEEWAY_SECS);
        validation.set_audience(&[RESERVATION_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        let mut validation_any_age = validation.clone();
        validation_any_age.validate_exp = false;
        Ok(TokenVerifier {
            keys: by_kid,
            validation,
            validation_any_age,
        })
    }

    /// A verifier for one signer's key (the embedded default and tests).
    pub fn for_signer(signer: &TokenSigner) -> Self {
        let keys = JwkSet {
            keys: vec![signer.public_jwk()],
        };
        Self::new(&keys, MAX_LEEWAY_SECS).expect("a signer's own key is a valid key set")
    }

    pub fn verify(&self, token: &str) -> Result<ReservationClaims, TokenError> {
        self.decode(token, &self.validation)
    }

    /// Every check of [`TokenVerifier::verify`] but the expiry: for a confirm retried after
    /// the hold's expiry, whose first try may have placed the order (the hold's state and
    /// SQL decide then, never the token's age).
    pub fn verify_ignoring_expiry(&self, token: &str) -> Result<ReservationClaims, TokenError> {
        self.decode(token, &self.validation_any_age)
    }

    fn decode(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<ReservationClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::BadSignature);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        jsonwebtoken::decode::<ReservationClaims>(token, key, validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::HoldState;
    use jsonwebtoken::EncodingKey;

    fn hold(expires_at_ms: u64) -> Hold {
        let sku = Sku::parse("HOT").unwrap();
        Hold {
            id: ReservationId::generate(&sku),
            sku,
            buyer: BuyerId::parse("alice").unwrap(),
            qty: Qty::new(2).unwrap(),
            state: HoldState::Held,
            created_at_ms: 1_000,
            expires_at_ms,
        }
    }

    fn now_ms() -> u64 {
        jsonwebtoken::get_current_timestamp() * 1000
    }

    #[test]
    fn signed_token_verifies_to_the_same_claims() {
        let signer = TokenSigner::generate("k1");
        let claims = ReservationClaims::for_hold(&hold(now_ms() + 60_000));
        let token = signer.sign(&claims).unwrap();
        assert_eq!(
            TokenVerifier::for_signer(&signer).verify(&token),
            Ok(claims)
        );
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_while_both_keys_are_published() {
        let old = TokenSigner::generate("k1");
        let new = TokenSigner::generate("k2");
        let set = JwkSet {
            keys: vec![old.public_jwk(), new.public_jwk()],
        };
        let verifier = TokenVerifier::new(&set, 2).unwrap();
        let claims = ReservationClaims::for_hold(&hold(now_ms() + 60_000));
        assert!(verifier.verify(&old.sign(&claims).unwrap()).is_ok());
        assert!(verifier.verify(&new.sign(&claims).unwrap()).is_ok());
    }

    #[test]
    fn a_key_set_with_a_kid_twice_is_refused() {
        let (a, b) = (TokenSigner::generate("k1"), TokenSigner::generate("k1"));
        let set = JwkSet {
            keys: vec![a.public_jwk(), b.public_jwk()],
        };
        assert_eq!(
            TokenVerifier::new(&set, 2).err(),
            Some(TokenError::InvalidKey("kid k1 appears twice".into()))
        );
    }

    #[test]
    fn a_signer_knows_its_public_half_under_any_kid() {
        let signer = TokenSigner::generate("k1");
        let mut renamed = signer.public_jwk();
        renamed.common.key_id = Some("other".into());
        renamed.common.public_key_use = None;
        assert!(signer.is_public_half(&renamed));
        assert!(!signer.is_public_half(&TokenSigner::generate("k1").public_jwk()));
    }

    #[test]
    fn refuses_unknown_kid_foreign_key_expired_and_tampered_tokens() {
        let signer = TokenSigner::generate("k1");
        let verifier = TokenVerifier::for_signer(&signer);
        let claims = ReservationClaims::for_hold(&hold(now_ms() + 60_000));

        let stranger = TokenSigner::generate("k9");
        assert_eq!(
            verifier.verify(&stranger.sign(&claims).unwrap()),
            Err(TokenError::UnknownKey)
        );
        // Same kid, different key: the signature cannot match.
        let impostor = TokenSigner::generate("k1");
        assert_eq!(
            verifier.verify(&impostor.sign(&claims).unwrap()),
            Err(TokenError::BadSignature)
        );
        let expired = ReservationClaims::for_hold(&hold(now_ms() - 60_000));
        assert_eq!(
            verifier.verify(&signer.sign(&expired).unwrap()),
            Err(TokenError::Expired)
        );
        let token = signer.sign(&claims).unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = signer
            .sign(&ReservationClaims {
                qty: Qty::new(9).unwrap(),
                ..claims.clone()
            })
            .unwrap();
        parts[1] = other.split('.').nth(1).unwrap();
        assert_eq!(
            verifier.verify(&parts.join(".")),
            Err(TokenError::BadSignature)
        );
        assert_eq!(verifier.verify("garbage"), Err(TokenError::Malformed));
        assert_eq!(
            verifier.verify(&"a".repeat(MAX_TOKEN_LEN + 1)),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn ignoring_expiry_skips_only_the_expiry() {
        let signer = TokenSigner::generate("k1");
        let verifier = TokenVerifier::for_signer(&signer);
        let expired = ReservationClaims::for_hold(&hold(now_ms() - 60_000));
        let token = signer.sign(&expired).unwrap();
        assert_eq!(verifier.verify(&token), Err(TokenError::Expired));
        assert_eq!(verifier.verify_ignoring_expiry(&token), Ok(expired.clone()));
        // Signature, key and audience still count.
        let impostor = TokenSigner::generate("k1");
        assert_eq!(
            verifier.verify_ignoring_expiry(&impostor.sign(&expired).unwrap()),
            Err(TokenError::BadSignature)
        );
        let other_audience = ReservationClaims {
            aud: "someone-else".into(),
            ..expired
        };
        assert_eq!(
            verifier.verify_ignoring_expiry(&signer.sign(&other_audience).unwrap()),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn refuses_alg_none_and_hmac_signed_with_the_public_key() {
        let signer = TokenSigner::generate("k1");
        let verifier = TokenVerifier::for_signer(&signer);
        let claims = ReservationClaims::for_hold(&hold(now_ms() + 60_000));
        let body = signer.sign(&claims).unwrap();
        let payload = body.split('.').nth(1).unwrap();
        // {"alg":"none","kid":"k1"}
        let none = format!("eyJhbGciOiJub25lIiwia2lkIjoiazEifQ.{payload}.");
        assert!(verifier.verify(&none).is_err());

        let jwk = signer.public_jwk();
        let x = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(p) => p.x.clone(),
            _ => unreachable!(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let hmac = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(x.as_bytes()))
            .unwrap();
        assert_eq!(verifier.verify(&hmac), Err(TokenError::BadSignature));
    }

    #[test]
    fn signing_matches_jsonwebtoken_byte_for_byte() {
        let signer = TokenSigner::generate("k1");
        let claims = ReservationClaims::for_hold(&hold(now_ms() + 60_000));
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("k1".into());
        let der = signer.signing_key.to_pkcs8_der().unwrap();
        let reference =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes()))
                .unwrap();
        assert_eq!(signer.sign(&claims).unwrap(), reference);
    }

    #[test]
    fn pem_round_trip_keeps_the_key() {
        let signer = TokenSigner::generate("k1");
        let again = TokenSigner::from_pkcs8_pem("k1", &signer.to_pkcs8_pem()).unwrap();
        assert_eq!(signer.public_jwk(), again.public_jwk());
        assert!(TokenSigner::from_pkcs8_pem("k1", "not a key").is_err());
    }
}
