//! Buyer keys from a JWKS URL: loaded at start, and re-fetched when a token names a `kid` the
//! cached set does not have (the identity provider rotated its key), at most once per
//! minimum interval. What the URL can send is bounded: an endless body is cut off at the size
//! cap while streaming, a redirect is followed only within the same origin, and keys not meant
//! for signing with an allowed algorithm are ignored. Plain `http://` is allowed here because
//! the host is loopback (`gateway::auth::fetch::check_url`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use gateway::auth::{AuthError, BuyerAuth, BuyerClaims, KeySet, KeySource};
use gateway::config::{AuthConfig, Config};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reservation_core::TokenSigner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// Serves `app` on a free loopback port; returns its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_body_is_cut_off_at_the_cap_while_streaming() {
    // A raw server: a chunked 200 that never ends, counting what it managed to write.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                    transfer-encoding: chunked\r\n\r\n";
        socket.write_all(head.as_bytes()).await.unwrap();
        let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
        while socket.write_all(chunk.as_bytes()).await.is_ok() {
            counter.fetch_add(0x4000, Ordering::SeqCst);
        }
    });
    let started = std::time::Instant::now();
    let error = KeySet::load(KeySource::Url(url), Duration::from_secs(10))
        .await
        .err()
        .expect("an endless body is refused");
    let message = error.to_string();
    assert!(message.contains("larger than 262144 bytes"), "{message}");
    // Refused on reaching the cap, not after the client's 5 s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The fetch stopped reading: what the server could write is the cap plus socket buffers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = written.load(Ordering::SeqCst);
    assert!(sent < 16 * 1024 * 1024, "{sent} bytes sent");

    // A declared length over the cap is refused before its body is read.
    let app = Router::new().route("/big.json", get(|| async { " ".repeat(256 * 1024 + 1) }));
    let base = serve(app).await;
    let error = KeySet::load(
        KeySource::Url(format!("{base}/big.json")),
        Duration::from_secs(10),
    )
    .await
    .err()
    .expect("a body over the cap is refused");
    assert!(error.to_string().contains("larger than"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_followed_only_within_the_same_origin() {
    let signer = TokenSigner::generate("idp-1");
    let provider = Arc::new(Provider::default());
    provider.keys.lock().unwrap().push(signer.public_jwk());
    let other_origin = serve(
        Router::new()
            .route("/jwks.json", get(jwks))
            .with_state(provider.clone()),
    )
    .await;
    let elsewhere = format!("{other_origin}/jwks.json");
    let app = Router::new()
        .route(
            "/moved.json",
            get(|| async { axum::response::Redirect::temporary("/jwks.json") }),
        )
        .route(
            "/elsewhere.json",
            get(move || async move { axum::response::Redirect::temporary(&elsewhere) }),
        )
        .route("/jwks.json", get(jwks))
        .with_state(provider.clone());
    let base = serve(app).await;

    // Moved within the provider's own origin: followed.
    KeySet::load(
        KeySource::Url(format!("{base}/moved.json")),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 1);

    // To another origin (another port of the same host): refused, the target never asked.
    let error = KeySet::load(
        KeySource::Url(format!("{base}/elsewhere.json")),
        Duration::from_secs(10),
    )
    .await
    .err()
    .expect("a redirect to another origin is an error");
    let message = error.to_string();
    assert!(
        message.contains("answered 307") && message.contains("another origin"),
        "{message}"
    );
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_not_for_signing_with_an_allowed_algorithm_are_ignored() {
    use jsonwebtoken::jwk::{KeyAlgorithm, PublicKeyUse};
    // Four Ed25519 keys, published as: a signing key; a key without use or alg; an encryption
    // key; a key for PS512, which the configured allowlist (EdDSA, RS256, ES256) leaves out.
    let signers: Vec<TokenSigner> = ["good", "bare", "enc", "ps512"]
        .into_iter()
        .map(TokenSigner::generate)
        .collect();
    let provider = Arc::new(Provider::default());
    for signer in &signers {
        let mut jwk = signer.public_jwk();
        match signer.kid() {
            "bare" => {
                jwk.common.public_key_use = None;
                jwk.common.key_algorithm = None;
            }
            "enc" => jwk.common.public_key_use = Some(PublicKeyUse::Encryption),
            "ps512" => jwk.common.key_algorithm = Some(KeyAlgorithm::PS512),
            _ => {}
        }
        provider.keys.lock().unwrap().push(jwk);
    }
    let base = serve(
        Router::new()
            .route("/jwks.json", get(jwks))
            .with_state(provider),
    )
    .await;
    // The gateway's own wiring: the key set from the configuration, with its allowlist.
    let mut config = Config::default();
    config.auth.jwks_url = Some(format!("{base}/jwks.json"));
    config.validate().unwrap();
    let keys = gateway::app::load_keys(&config).await.unwrap();
    let auth = BuyerAuth::new(&config.auth, keys).unwrap();
    for signer in &signers {
        let verdict = auth
            .verify(&token(signer))
            .await
            .map(|identity| identity.sub);
        let expected = match signer.kid() {
            "good" | "bare" => Ok("alice".to_owned()),
            _ => Err(AuthError::UnknownKey),
        };
        assert_eq!(verdict, expected, "{}", signer.kid());
    }
}

#[test]
fn a_zero_minimum_refresh_interval_is_refused() {
    let mut config = Config::default();
    config.auth.jwks_min_refresh_secs = 0;
    let message = config.validate().unwrap_err().to_string();
    assert_eq!(
        message,
        "config field `auth.jwks_min_refresh_secs` must be at least 1: it bounds the re-fetches \
         unknown kids can cause"
    );
}
