//! Fixtures the fuzz targets share: a reservation-token key fixed by a seed (so tokens in a
//! corpus stay valid from one run to the next), an impostor key with the same `kid`, and the
//! claims the real key has signed. The property every token target checks: the verifier
//! accepts a token only if [`signed_by_fixture_key`], an independent check of the signature
//! with ed25519-dalek's strict verification, says the fixture key signed exactly that text.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::{Signature, SigningKey};
use reservation_core::token::RESERVATION_AUDIENCE;
use reservation_core::{
    BuyerId, Qty, ReservationClaims, ReservationId, Sku, TokenSigner, TokenVerifier,
};

pub const KID: &str = "fuzz-1";

/// 2100-01-01: far enough that a corpus token never expires.
pub const FAR_FUTURE: u64 = 4_102_444_800;

fn signer_from_seed(kid: &str, seed: u8) -> TokenSigner {
    let pem = SigningKey::from_bytes(&[seed; 32])
        .to_pkcs8_pem(LineEnding::LF)
        .expect("a fixed ed25519 key encodes as pkcs8");
    TokenSigner::from_pkcs8_pem(kid, &pem).expect("a fixed ed25519 key parses back")
}

/// The seed of the key the verifier trusts.
const SEED: u8 = 7;

/// The key the verifier trusts.
pub fn signer() -> TokenSigner {
    signer_from_seed(KID, SEED)
}

/// Another key under the same `kid`: its signatures must never verify.
pub fn impostor() -> TokenSigner {
    signer_from_seed(KID, 9)
}

pub fn verifier() -> TokenVerifier {
    TokenVerifier::for_signer(&signer())
}

/// The only claims [`signer`] ever signs outside the round-trip target.
pub fn known_claims() -> Vec<ReservationClaims> {
    [
        ("HOT", "alice", 2),
        ("MUG-2.blue_x", "bob@example.com", 1_000_000),
    ]
    .into_iter()
    .map(|(sku, sub, qty)| {
        let sku = Sku::parse(sku).unwrap();
        ReservationClaims {
            rid: ReservationId::parse(&format!("rsv_0123456789abcdef0123456789abcdef_{sku}"))
                .unwrap(),
            sub: BuyerId::parse(sub).unwrap(),
            sku,
            qty: Qty::new(qty).unwrap(),
            iat: 1_700_000_000,
            exp: FAR_FUTURE,
            aud: RESERVATION_AUDIENCE.to_owned(),
        }
    })
    .collect()
}

/// [`known_claims`] signed by [`signer`] (EdDSA is deterministic: the same text every run).
pub fn known_tokens() -> Vec<String> {
    let signer = signer();
    known_claims()
        .iter()
        .map(|claims| signer.sign(claims).expect("known claims sign"))
        .collect()
}

/// Whether the fixture key signed exactly `header.payload` of `token` (canonical base64url
/// signature, strict Ed25519 verification): the oracle the verifier is checked against.
pub fn signed_by_fixture_key(token: &str) -> bool {
    signed_by(SEED, token)
}

/// The seed of the identity provider's key in the buyer-token target.
pub const IDP_SEED: u8 = 11;
pub const IDP_KID: &str = "fuzz-idp";

/// The identity provider's key (buyer tokens), as the gateway would load it from a JWKS.
pub fn idp_signer() -> TokenSigner {
    signer_from_seed(IDP_KID, IDP_SEED)
}

/// Whether the key of `seed` signed exactly `header.payload` of the compact JWS `token`.
pub fn signed_by(seed: u8, token: &str) -> bool {
    let Some((input, signature)) = token.rsplit_once('.') else {
        return false;
    };
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(&bytes) else {
        return false;
    };
    SigningKey::from_bytes(&[seed; 32])
        .verifying_key()
        .verify_strict(input.as_bytes(), &signature)
        .is_ok()
}
