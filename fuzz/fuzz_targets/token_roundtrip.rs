//! Arbitrary claims through sign → verify. Properties: whatever valid claims are signed verify
//! to the same claims; the same claims signed by another key under the same `kid` are refused
//! as a bad signature; any one-byte change to a signed token is refused.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use reservation_core::token::RESERVATION_AUDIENCE;
use reservation_core::{BuyerId, Qty, ReservationClaims, ReservationId, Sku, TokenError};
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

static SIGNER: LazyLock<reservation_core::TokenSigner> = LazyLock::new(stockgate_fuzz::signer);
static IMPOSTOR: LazyLock<reservation_core::TokenSigner> = LazyLock::new(stockgate_fuzz::impostor);
static VERIFIER: LazyLock<reservation_core::TokenVerifier> =
    LazyLock::new(stockgate_fuzz::verifier);

#[derive(Arbitrary, Debug)]
struct Input {
    rid_hex: u128,
    sku: String,
    sub: String,
    qty: u32,
    iat: u64,
    /// Seconds past now (plus a minute) the token expires.
    lifetime: u32,
    flip_at: u16,
    flip_to: u8,
}

fuzz_target!(|input: Input| {
    // Parse errors are values: invalid parts simply make no claims.
    let (Ok(sku), Ok(sub), Ok(qty)) = (
        Sku::parse(&input.sku),
        BuyerId::parse(&input.sub),
        Qty::new(input.qty),
    ) else {
        return;
    };
    let rid = ReservationId::parse(&format!("rsv_{:032x}_{sku}", input.rid_hex))
        .expect("a well-formed id parses");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = ReservationClaims {
        rid,
        sub,
        sku,
        qty,
        iat: input.iat,
        exp: now + 60 + u64::from(input.lifetime),
        aud: RESERVATION_AUDIENCE.to_owned(),
    };
    let token = SIGNER.sign(&claims).expect("valid claims sign");
    assert_eq!(VERIFIER.verify(&token), Ok(claims.clone()));

    let forged = IMPOSTOR.sign(&claims).expect("valid claims sign");
    assert_eq!(VERIFIER.verify(&forged), Err(TokenError::BadSignature));

    let mut bytes = token.clone().into_bytes();
    let at = usize::from(input.flip_at) % bytes.len();
    if bytes[at] != input.flip_to {
        bytes[at] = input.flip_to;
        if let Ok(flipped) = String::from_utf8(bytes) {
            assert!(
                VERIFIER.verify(&flipped).is_err(),
                "a changed token was accepted: {flipped}"
            );
        }
    }
});
