//! The gateway's side of service authentication (`reservation_core::assertion`): the key it
//! signs settlement requests with, the key set a settlement verifies them with, and the
//! assertion for one request.
//!
//! Where the key comes from (`[settlement_auth]`): the configured file, else, for a gateway
//! on its own, a pair generated into `data_dir` (`gateway-assertion-key.pem`, and the public
//! `gateway-assertion-jwks.json` a `stockgate settlement` with the same `data_dir` reads),
//! else, for `all-in-one`, a pair that lives only in the process. A settlement with no key
//! set refuses to start: there is no unauthenticated mode.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use reqwest::header::{HeaderValue, InvalidHeaderValue};
use reservation_core::assertion::{AssertionSigner, AssertionVerifier, Bound, Identity};
use reservation_core::wire::headers;
use reservation_core::{TokenError, TokenSigner};
use thiserror::Error;

use crate::auth::devkeys::{self, KeyError};
use crate::config::Config;

/// The generated assertion key and its public set, in `data_dir`.
pub const ASSERTION_KEY_FILE: &str = "gateway-assertion-key.pem";
pub const ASSERTION_JWKS_FILE: &str = "gateway-assertion-jwks.json";

const SIGNING_KEY_FILE: &str = "settlement_auth.signing_key_file";
const GATEWAY_JWKS_FILE: &str = "settlement_auth.gateway_jwks_file";

/// Where the assertion key comes from when `settlement_auth.signing_key_file` is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsetKey {
    /// A gateway whose settlement runs elsewhere: the pair generated into `data_dir`.
    DataDir,
    /// `all-in-one`: gateway and settlement share the process, so the pair never leaves it.
    Ephemeral,
}

/// The gateway's assertion signer.
pub fn signer(config: &Config, unset: UnsetKey) -> Result<AssertionSigner, KeyError> {
    let kid = &config.settlement_auth.signing_key_id;
    let key = match (&config.settlement_auth.signing_key_file, unset) {
        (Some(path), _) => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| devkeys::key_err(SIGNING_KEY_FILE, path, e))?;
            TokenSigner::from_pkcs8_pem(kid, &pem)
                .map_err(|e| devkeys::key_err(SIGNING_KEY_FILE, path, e))?
        }
        (None, UnsetKey::DataDir) => devkeys::load_or_generate(
            "data_dir",
            kid,
            &config.data_dir.join(ASSERTION_KEY_FILE),
            &config.data_dir.join(ASSERTION_JWKS_FILE),
        )?,
        (None, UnsetKey::Ephemeral) => TokenSigner::generate(kid),
    };
    Ok(AssertionSigner::new(key))
}

/// What a settlement in the gateway's process verifies with: `settlement_auth.gateway_jwks_file`
/// when set (it must verify `signer`'s assertions), else the signer's own public key.
pub fn in_process_verifier(
    config: &Config,
    signer: &AssertionSigner,
) -> Result<AssertionVerifier, KeyError> {
    let Some(path) = &config.settlement_auth.gateway_jwks_file else {
        return AssertionVerifier::new(&signer.jwks())
            .map_err(|e| devkeys::key_err(SIGNING_KEY_FILE, Path::new("(in process)"), e));
    };
    let verifier = read_key_set(path)?;
    // One probe instead of comparing keys: the set must accept what the gateway signs.
    let probe_request = Bound::new("GET", "/", b"");
    let probe = sign(signer, &probe_request, &Identity::default()).unwrap_or_default();
    if verifier.verify(Some(&probe), &probe_request).is_err() {
        return Err(devkeys::key_err(
            GATEWAY_JWKS_FILE,
            path,
            format!(
                "does not verify the gateway's signing key (`settlement_auth.signing_key_id` \
                 = `{}`): publish its public half in the set",
                config.settlement_auth.signing_key_id
            ),
        ));
    }
    Ok(verifier)
}

/// The gateway key set settlement verifies assertions with outside the gateway process:
/// `settlement_auth.gateway_jwks_file`, else the set a gateway generated into `data_dir`.
pub fn gateway_jwks_file(config: &Config) -> PathBuf {
    config
        .settlement_auth
        .gateway_jwks_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join(ASSERTION_JWKS_FILE))
}

/// What `stockgate settlement` verifies with: [`gateway_jwks_file`]. Missing or unreadable,
/// settlement does not start.
pub fn published_verifier(config: &Config) -> Result<AssertionVerifier, KeyError> {
    read_key_set(&gateway_jwks_file(config))
}

fn read_key_set(path: &Path) -> Result<AssertionVerifier, KeyError> {
    let err = |message: String| devkeys::key_err(GATEWAY_JWKS_FILE, path, message);
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "{e}: settlement serves only a gateway whose public keys it has; set \
             settlement_auth.gateway_jwks_file (STOCKGATE_GATEWAY_JWKS_FILE), or start a \
             gateway with the same data_dir first (it generates {ASSERTION_JWKS_FILE})"
        ))
    })?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| err(format!("not a JWKS: {e}")))?;
    AssertionVerifier::new(&set).map_err(|e| err(e.to_string()))
}

/// The assertion for one request to settlement, signed now. Its path is the path with its
/// query, exactly as it goes on the request line.
pub fn sign(
    signer: &AssertionSigner,
    request: &Bound,
    identity: &Identity,
) -> Result<String, reservation_core::TokenError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    signer.sign(request, identity, now)
}

/// Why a request the gateway built could not be signed; nothing was sent.
#[derive(Debug, Error)]
pub enum SignError {
    /// Its body is a stream, which could not be hashed before it is sent.
    #[error("a streamed body cannot be signed")]
    StreamedBody,
    #[error("signing the service assertion")]
    Sign(#[source] TokenError),
    #[error("the service assertion is not a header value")]
    HeaderValue(#[source] InvalidHeaderValue),
}

impl SignError {
    /// This error and its cause on one line, for the logs that take a reason as text.
    pub fn with_cause(&self) -> String {
        match self.source() {
            Some(cause) => format!("{self}: {cause}"),
            None => self.to_string(),
        }
    }
}

/// Signs a request the gateway built itself (settle, fate, catalog fills, the demo seed) for
/// `who`: the assertion over its method, target and body goes in
/// [`headers::ASSERTION`]. The body must be in memory (every such request's is): a stream
/// could not be hashed.
pub fn sign_request(
    signer: &AssertionSigner,
    request: &mut reqwest::Request,
    who: &Identity,
) -> Result<(), SignError> {
    let body = match request.body() {
        None => &[][..],
        Some(body) => body.as_bytes().ok_or(SignError::StreamedBody)?,
    };
    let url = request.url();
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let if_match = request
        .headers()
        .get(reqwest::header::IF_MATCH)
        .and_then(|v| v.to_str().ok());
    let bound = Bound::new(request.method().as_str(), &target, body).with_if_match(if_match);
    let assertion = sign(signer, &bound, who).map_err(SignError::Sign)?;
    let value = HeaderValue::from_str(&assertion).map_err(SignError::HeaderValue)?;
    request.headers_mut().insert(headers::ASSERTION, value);
    Ok(())
}

/// The identity an assertion names for a verified buyer (or nobody).
pub fn identity_of(buyer: Option<&crate::auth::Identity>) -> Identity {
    match buyer {
        Some(buyer) => Identity {
            sub: Some(buyer.sub.clone()),
            roles: buyer.roles.clone(),
        },
        None => Identity::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> Config {
        Config {
            data_dir: dir.join("data"),
            ..Config::default()
        }
    }

    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "stockgate-svcauth-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_separate_settlement_verifies_the_pair_the_gateway_generated() {
        let dir = temp_dir();
        let config = config_in(&dir);
        let message = published_verifier(&config).err().unwrap().to_string();
        assert!(
            message.starts_with("config field `settlement_auth.gateway_jwks_file`")
                && message.contains("gateway-assertion-jwks.json")
                && message.contains("STOCKGATE_GATEWAY_JWKS_FILE"),
            "{message}"
        );
        let signer = signer(&config, UnsetKey::DataDir).unwrap();
        assert!(config.data_dir.join(ASSERTION_KEY_FILE).is_file());
        let verifier = published_verifier(&config).unwrap();
        let jose = Identity {
            sub: Some("José".into()),
            roles: vec![],
        };
        let orders = Bound::new("GET", "/api/v1/orders", b"");
        let token = sign(&signer, &orders, &jose).unwrap();
        assert_eq!(
            verifier.verify(Some(&token), &orders).map(|v| v.identity),
            Ok(jose)
        );
        // The same data_dir gives the same key on the next start.
        let again = super::signer(&config, UnsetKey::DataDir).unwrap();
        let root = Bound::new("GET", "/", b"");
        let token = sign(&again, &root, &Identity::default()).unwrap();
        assert!(verifier.verify(Some(&token), &root).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn all_in_one_writes_no_key_and_a_configured_set_must_match() {
        let dir = temp_dir();
        let mut config = config_in(&dir);
        let signer = signer(&config, UnsetKey::Ephemeral).unwrap();
        assert!(
            !config.data_dir.exists(),
            "an ephemeral pair writes nothing"
        );
        assert!(in_process_verifier(&config, &signer).is_ok());

        let stranger = AssertionSigner::new(TokenSigner::generate("gw-1"));
        let set = dir.join("other.json");
        std::fs::write(&set, serde_json::to_string(&stranger.jwks()).unwrap()).unwrap();
        config.settlement_auth.gateway_jwks_file = Some(set);
        let message = in_process_verifier(&config, &signer)
            .err()
            .unwrap()
            .to_string();
        assert!(
            message.contains("does not verify the gateway's signing key"),
            "{message}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
