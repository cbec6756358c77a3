//! Sign and verify one reservation-token-shaped JWT 20 000 times each way: through
//! `jsonwebtoken` (which rebuilds the Ed25519 key from PKCS#8 — deriving its public key — on
//! every `encode`, and decompresses the public point on every `decode`), and with the
//! `ed25519_dalek` keys kept in memory. The two signatures are byte-identical (EdDSA is
//! deterministic), which the program asserts.

use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::{Signer, SigningKey, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use std::time::Instant;

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    rid: String,
    sub: String,
    sku: String,
    qty: u32,
    exp: u64,
    iat: u64,
    aud: String,
}

fn per_call_us(n: usize, started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let n = 20_000;
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let der = key.to_pkcs8_der().unwrap();
    let encoding = EncodingKey::from_ed_der(der.as_bytes());
    let decoding = DecodingKey::from_ed_der(key.verifying_key().as_bytes());
    let claims = Claims {
        rid: "rsv_0123456789abcdef0123456789abcdef_HOT".into(),
        sub: "buyer-17".into(),
        sku: "HOT".into(),
        qty: 1,
        exp: 4_000_000_000,
        iat: 1,
        aud: "stockgate-settlement".into(),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("rsv-1".into());
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let started = Instant::now();
    let mut token = String::new();
    for _ in 0..n {
        token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
    }
    let sign_jwt = per_call_us(n, started);

    let started = Instant::now();
    let mut direct = String::new();
    for _ in 0..n {
        let message = format!(
            "{}.{}",
            b64.encode(serde_json::to_vec(&header).unwrap()),
            b64.encode(serde_json::to_vec(&claims).unwrap())
        );
        let signature = key.sign(message.as_bytes());
        direct = format!("{message}.{}", b64.encode(signature.to_bytes()));
    }
    let sign_direct = per_call_us(n, started);
    assert_eq!(token, direct, "the same token either way");

    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["stockgate-settlement"]);
    let started = Instant::now();
    for _ in 0..n {
        jsonwebtoken::decode::<Claims>(&token, &decoding, &validation).unwrap();
    }
    let verify_jwt = per_call_us(n, started);

    let verifying = key.verifying_key();
    let started = Instant::now();
    for _ in 0..n {
        let (message, signature) = token.rsplit_once('.').unwrap();
        let signature =
            ed25519_dalek::Signature::from_slice(&b64.decode(signature).unwrap()).unwrap();
        verifying.verify(message.as_bytes(), &signature).unwrap();
        let payload = message.split_once('.').unwrap().1;
        let _: Claims = serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
    }
    let verify_direct = per_call_us(n, started);

    println!("sign:   jsonwebtoken::encode {sign_jwt:.1} µs | SigningKey kept {sign_direct:.1} µs");
    println!(
        "verify: jsonwebtoken::decode {verify_jwt:.1} µs | VerifyingKey kept {verify_direct:.1} µs"
    );
}
