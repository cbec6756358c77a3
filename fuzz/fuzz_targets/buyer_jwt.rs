//! Buyer authentication (`BuyerAuth::authenticate`, the first thing every buyer request meets)
//! on an arbitrary `Authorization` header value, with the default auth config and a JWKS of
//! one fixture identity key. Properties: never panics; every refusal is a 401/403 value; an
//! accepted token was signed by the identity key (checked independently with ed25519-dalek)
//! and names a non-empty `sub`.
#![no_main]

use gateway::auth::{BuyerAuth, KeySet, KeySource};
use gateway::config::AuthConfig;
use jsonwebtoken::jwk::JwkSet;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use std::time::Duration;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
});

static AUTH: LazyLock<BuyerAuth> = LazyLock::new(|| {
    let jwks = JwkSet {
        keys: vec![stockgate_fuzz::idp_signer().public_jwk()],
    };
    let keys = RUNTIME
        .block_on(KeySet::load(KeySource::Static(jwks), Duration::from_secs(10)))
        .expect("a static key set loads");
    BuyerAuth::new(&AuthConfig::default(), keys).expect("the default auth config is valid")
});

fuzz_target!(|data: &[u8]| {
    match RUNTIME.block_on(AUTH.authenticate(Some(data))) {
        Ok(identity) => {
            let value = std::str::from_utf8(data).expect("an accepted header is text");
            let token = value[7..].trim();
            assert!(
                stockgate_fuzz::signed_by(stockgate_fuzz::IDP_SEED, token),
                "accepted a buyer token the identity key never signed: {value}"
            );
            assert!(!identity.sub.is_empty());
        }
        Err(error) => {
            let (status, _) = error.status_and_code();
            assert!(status == 401 || status == 403, "{error}: {status}");
        }
    }
});
