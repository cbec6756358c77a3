//! Buyer keys from a JWKS URL: loaded at start, and re-fetched when a token names a `kid` the
//! cached set does not have (the identity provider rotated its key), at most once per
//! minimum interval.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use gateway::auth::{AuthError, BuyerAuth, BuyerClaims, KeySet, KeySource};
use gateway::config::AuthConfig;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reservation_core::TokenSigner;

#[derive(Default)]
struct Provider {
    keys: Mutex<Vec<jsonwebtoken::jwk::Jwk>>,
    fetches: AtomicUsize,
}

async fn jwks(State(provider): State<Arc<Provider>>) -> String {
    provider.fetches.fetch_add(1, Ordering::SeqCst);
    let set = JwkSet {
        keys: provider.keys.lock().unwrap().clone(),
    };
    serde_json::to_string(&set).unwrap()
}

fn token(signer: &TokenSigner) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = BuyerClaims {
        sub: "alice".into(),
        roles: vec![],
        iss: "stockgate-dev".into(),
        aud: "stockgate".into(),
        exp: now + 60,
        nbf: now,
        iat: now,
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(signer.kid().to_owned());
    let key = EncodingKey::from_ed_pem(signer.to_pkcs8_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_once_and_made_up_kids_cost_no_extra_fetch() {
    let old = TokenSigner::generate("idp-1");
    let new = TokenSigner::generate("idp-2");
    let provider = Arc::new(Provider::default());
    provider.keys.lock().unwrap().push(old.public_jwk());
    let app = Router::new()
        .route("/jwks.json", get(jwks))
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let min_refresh = Duration::from_millis(300);
    let keys = KeySet::load(KeySource::Url(url), min_refresh)
        .await
        .unwrap();
    let auth = BuyerAuth::new(&AuthConfig::default(), keys).unwrap();
    assert_eq!(auth.verify(&token(&old)).await.unwrap().sub, "alice");
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 1);

    // The provider rotates; once the minimum interval has passed, the first token with the
    // new kid triggers one fetch.
    provider.keys.lock().unwrap().push(new.public_jwk());
    tokio::time::sleep(min_refresh).await;
    assert!(auth.verify(&token(&new)).await.is_ok());
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 2);

    // A flood of made-up kids right after: no fetch at all within the interval.
    let stranger = TokenSigner::generate("made-up");
    for _ in 0..20 {
        assert_eq!(
            auth.verify(&token(&stranger)).await,
            Err(AuthError::UnknownKey)
        );
    }
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 2);
}
