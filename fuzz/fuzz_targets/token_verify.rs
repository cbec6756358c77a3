//! The reservation-token verifier on arbitrary text and on real tokens with arbitrary byte
//! edits. Properties: never panics; a token is accepted only if the fixture key signed it
//! (checked independently with ed25519-dalek); every edited real token is refused.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static VERIFIER: LazyLock<reservation_core::TokenVerifier> =
    LazyLock::new(stockgate_fuzz::verifier);
static KNOWN: LazyLock<Vec<String>> = LazyLock::new(stockgate_fuzz::known_tokens);

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any text as a token.
    Raw(String),
    /// A real token with bytes replaced (position, new byte), inserted or cut.
    Edited {
        which: u8,
        edits: Vec<(u16, u8)>,
        cut: Option<u16>,
    },
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw(text) => {
            if VERIFIER.verify(&text).is_ok() {
                assert!(
                    stockgate_fuzz::signed_by_fixture_key(&text),
                    "accepted a token the key never signed: {text}"
                );
            }
        }
        Input::Edited { which, edits, cut } => {
            let original = &KNOWN[usize::from(which) % KNOWN.len()];
            let mut bytes = original.clone().into_bytes();
            for (at, byte) in edits {
                let at = usize::from(at) % bytes.len();
                bytes[at] = byte;
            }
            if let Some(cut) = cut {
                bytes.truncate(usize::from(cut) % (bytes.len() + 1));
            }
            let Ok(edited) = String::from_utf8(bytes) else {
                return;
            };
            let verdict = VERIFIER.verify(&edited);
            if edited == *original {
                assert!(verdict.is_ok());
            } else {
                assert!(verdict.is_err(), "an edited token was accepted: {edited}");
            }
        }
    }
});
