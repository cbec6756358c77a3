//! `POST /api/v1/orders` body parsing (`parse_confirm_body`) and then the token check the
//! edge runs next, on arbitrary bytes. Properties: never panics; a refusal is a 400
//! `invalid_request` value; the verifier accepts a token only if the fixture key signed it
//! (checked independently with ed25519-dalek).
#![no_main]

use gateway::edge::orders::parse_confirm_body;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static VERIFIER: LazyLock<reservation_core::TokenVerifier> =
    LazyLock::new(stockgate_fuzz::verifier);

fuzz_target!(|data: &[u8]| {
    match parse_confirm_body(data) {
        Ok(token) => {
            if VERIFIER.verify(&token).is_ok() {
                assert!(
                    stockgate_fuzz::signed_by_fixture_key(&token),
                    "accepted a token the key never signed: {token}"
                );
            }
        }
        Err(problem) => {
            assert_eq!((problem.status, problem.code), (400, "invalid_request"));
        }
    }
});
