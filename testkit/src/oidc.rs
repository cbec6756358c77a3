//! A local OpenID Connect provider shaped like Microsoft Entra ID, served over HTTPS with a
//! throwaway CA ([`crate::tls`]): the v2 discovery document at
//! `/{tenant}/v2.0/.well-known/openid-configuration`, the key set at
//! `/{tenant}/discovery/v2.0/keys` (RSA keys without `alg`, as Entra publishes them), and
//! RS256 tokens with Entra's claims (`iss` v2, `aud` = the app's client id, `oid`, `tid`,
//! `roles`, `ver` "2.0", `nbf`). A test can rotate the signing key (new `kid`, the old one
//! withdrawn) and make the provider misbehave ([`Misbehaviour`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::idp::{base64url, now_secs};
use crate::tls::TestCa;

/// The directory (tenant) id of the test provider.
pub const TENANT: &str = "8f4f2c1e-7d3b-4c55-9a1e-2b6d0c9e4f10";
/// The client id of the stockgate API's app registration: the `aud` of its tokens.
pub const APP_ID: &str = "3c9a7e52-1b8d-4f0e-a6c2-5d4e9f7b2a81";

/// How the provider misbehaves (one at a time).
#[derive(Clone, Debug, Default)]
pub enum Misbehaviour {
    #[default]
    None,
    /// The discovery document names this issuer instead of its own.
    DiscoveryNamesIssuer(String),
    /// The key set answers 302 to this URL.
    RedirectKeysTo(String),
    /// The key set is padded past the gateway's 256 KiB cap.
    OversizedKeys,
}

/// An RSA signing key and its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn generate(kid: &str) -> Self {
        let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("rsa key");
        let pem = private.to_pkcs8_pem(LineEnding::LF).expect("pkcs8 pem");
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa encoding key");
        let jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "kid": kid,
            "n": base64url(private.n().to_bytes_be()),
            "e": base64url(private.e().to_bytes_be()),
        });
        SigningKey {
            kid: kid.to_owned(),
            encoding,
            jwk,
        }
    }

    /// `claims` signed RS256 with this key, its `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

struct Published {
    issuer: String,
    base: String,
    /// The key tokens are signed with; the only one the key set publishes.
    current: Mutex<SigningKey>,
    generation: AtomicUsize,
    misbehaviour: Mutex<Misbehaviour>,
    discovery_fetches: AtomicUsize,
    key_fetches: AtomicUsize,
}

/// The running provider.
pub struct OidcProvider {
    /// `https://127.0.0.1:{port}/{TENANT}/v2.0`, the Entra v2 issuer shape.
    pub issuer: String,
    /// `https://127.0.0.1:{port}`.
    pub base: String,
    pub addr: SocketAddr,
    /// The throwaway CA's certificate (PEM file) that the gateway must trust.
    pub ca_file: PathBuf,
    dir: PathBuf,
    published: Arc<Published>,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl OidcProvider {
    /// Starts the provider on a free loopback port with a fresh CA and signing key.
    pub async fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("stockgate-oidc-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("provider dir");
        let ca = TestCa::new("stockgate test OpenID provider CA");
        let ca_file = ca.write_ca(&dir);
        let cert = ca.issue(&["127.0.0.1", "localhost"]);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let base = format!("https://{addr}");
        let issuer = format!("{base}/{TENANT}/v2.0");
        let published = Arc::new(Published {
            issuer: issuer.clone(),
            base: base.clone(),
            current: Mutex::new(SigningKey::generate("entra-key-1")),
            generation: AtomicUsize::new(1),
            misbehaviour: Mutex::default(),
            discovery_fetches: AtomicUsize::new(0),
            key_fetches: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route(
                &format!("/{TENANT}/v2.0/.well-known/openid-configuration"),
                get(discovery),
            )
            .route(&format!("/{TENANT}/discovery/v2.0/keys"), get(keys))
            .with_state(published.clone());
        let listener = TlsListener {
            tcp: listener,
            acceptor: acceptor(&cert.cert_pem, &cert.key_pem),
        };
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OidcProvider {
            issuer,
            base,
            addr,
            ca_file,
            dir,
            published,
        }
    }

    /// The key tokens are signed with now.
    pub fn signing_key(&self) -> SigningKey {
        self.published.current.lock().unwrap().clone()
    }

    /// Rotates: a new key with a new `kid` signs from now on and is the only one published.
    pub fn rotate(&self) -> SigningKey {
        let n = self.published.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let key = SigningKey::generate(&format!("entra-key-{n}"));
        *self.published.current.lock().unwrap() = key.clone();
        key
    }

    /// Signs with and publishes `key` from now on: Entra ID publishes the same keys in every
    /// tenant's key set.
    pub fn use_key(&self, key: SigningKey) {
        *self.published.current.lock().unwrap() = key;
    }

    pub fn misbehave(&self, misbehaviour: Misbehaviour) {
        *self.published.misbehaviour.lock().unwrap() = misbehaviour;
    }

    pub fn key_fetches(&self) -> usize {
        self.published.key_fetches.load(Ordering::SeqCst)
    }

    pub fn discovery_fetches(&self) -> usize {
        self.published.discovery_fetches.load(Ordering::SeqCst)
    }

    /// An Entra ID v2 access token's claims for the user `oid`, valid for ten minutes: `sub`
    /// is pairwise (per app) and differs from `oid`, as in Entra.
    pub fn claims(&self, oid: &str, roles: &[&str]) -> Value {
        let now = now_secs();
        json!({
            "aud": APP_ID,
            "iss": self.issuer,
            "iat": now,
            "nbf": now - 1,
            "exp": now + 600,
            "oid": oid,
            "sub": format!("pairwise-{oid}"),
            "tid": TENANT,
            "roles": roles,
            "ver": "2.0",
            "azp": "6731de76-14a6-49ae-97bc-6eba6914391e",
            "name": "Test User",
        })
    }

    /// [`OidcProvider::claims`] signed with the current key.
    pub fn token(&self, oid: &str, roles: &[&str]) -> String {
        self.signing_key().sign(&self.claims(oid, roles))
    }
}

async fn discovery(State(published): State<Arc<Published>>) -> Response {
    published.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    let named = match &*published.misbehaviour.lock().unwrap() {
        Misbehaviour::DiscoveryNamesIssuer(other) => other.clone(),
        _ => published.issuer.clone(),
    };
    let tenant_base = format!("{}/{TENANT}", published.base);
    axum::Json(json!({
        "issuer": named,
        "jwks_uri": format!("{tenant_base}/discovery/v2.0/keys"),
        "authorization_endpoint": format!("{tenant_base}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{tenant_base}/oauth2/v2.0/token"),
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "tenant_region_scope": "EU",
    }))
    .into_response()
}

async fn keys(State(published): State<Arc<Published>>) -> Response {
    published.key_fetches.fetch_add(1, Ordering::SeqCst);
    let misbehaviour = published.misbehaviour.lock().unwrap().clone();
    let mut jwk = published.current.lock().unwrap().jwk.clone();
    // Entra names the issuer in each key; a verifier must tolerate the extra member.
    jwk["issuer"] = Value::String(published.issuer.clone());
    match misbehaviour {
        Misbehaviour::RedirectKeysTo(url) => Redirect::to(&url).into_response(),
        Misbehaviour::OversizedKeys => {
            axum::Json(json!({"keys": [jwk], "padding": "x".repeat(300 * 1024)})).into_response()
        }
        _ => axum::Json(json!({"keys": [jwk]})).into_response(),
    }
}

fn acceptor(cert_pem: &str, key_pem: &str) -> TlsAcceptor {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate chain");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("private key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// TCP accepted, then the TLS handshake; a client that fails it (one that does not trust the
/// CA) is dropped and the next one accepted.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            let handshake = self.acceptor.accept(tcp);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
