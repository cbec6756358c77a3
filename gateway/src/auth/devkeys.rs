//! Local-use keys, generated into `data_dir` on first use (never shipped, never shared):
//! the dev identity provider key that `stockgate token` signs buyer JWTs with (its public half
//! is the dev JWKS the gateway trusts when no `auth.jwks_*` is configured), and the gateway's
//! reservation-token signing key with its public JWKS for the settlement service.
//!
//! Production configures a real identity provider's JWKS and a managed reservation key.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reservation_core::TokenSigner;

use super::BuyerClaims;
use crate::config::Config;

/// The dev identity provider's public key set, in `data_dir`.
pub const DEV_JWKS_FILE: &str = "dev-idp-jwks.json";
/// The dev identity provider's private key (PKCS#8 PEM), in `data_dir`.
pub const DEV_KEY_FILE: &str = "dev-idp-key.pem";
/// The `kid` of the dev identity key.
pub const DEV_KID: &str = "dev-idp-1";
/// The generated reservation-token key and its public set, in `data_dir`.
pub const RESERVATION_KEY_FILE: &str = "reservation-key.pem";
pub const RESERVATION_JWKS_FILE: &str = "reservation-jwks.json";

/// A key that failed to load or be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct KeyError {
    pub path: PathBuf,
    pub message: String,
}

fn key_err(path: &Path, message: impl ToString) -> KeyError {
    KeyError {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Reads the PEM at `key_path` as an Ed25519 key with `kid`, generating it (and writing the
/// public set to `jwks_path`) when the file does not exist yet.
fn load_or_generate(kid: &str, key_path: &Path, jwks_path: &Path) -> Result<TokenSigner, KeyError> {
    if key_path.exists() {
        let pem = std::fs::read_to_string(key_path).map_err(|e| key_err(key_path, e))?;
        let signer = TokenSigner::from_pkcs8_pem(kid, &pem).map_err(|e| key_err(key_path, e))?;
        // Rewrite the public set if it went missing, so the pair always matches.
        if !jwks_path.exists() {
            write_jwks(&signer, jwks_path)?;
        }
        return Ok(signer);
    }
    if let Some(dir) = key_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| key_err(dir, e))?;
    }
    let signer = TokenSigner::generate(kid);
    write_private(key_path, &signer.to_pkcs8_pem())?;
    write_jwks(&signer, jwks_path)?;
    tracing::info!(key = %key_path.display(), "generated a local key");
    Ok(signer)
}

fn write_jwks(signer: &TokenSigner, path: &Path) -> Result<(), KeyError> {
    let set = JwkSet {
        keys: vec![signer.public_jwk()],
    };
    let json = serde_json::to_string_pretty(&set).map_err(|e| key_err(path, e))?;
    std::fs::write(path, json).map_err(|e| key_err(path, e))
}

fn write_private(path: &Path, pem: &str) -> Result<(), KeyError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| key_err(path, e))?;
    file.write_all(pem.as_bytes()).map_err(|e| key_err(path, e))
}

/// Makes sure the dev identity key and its JWKS exist in `data_dir` (used when the config
/// names no identity provider).
pub fn ensure_dev_identity(config: &Config) -> Result<(), KeyError> {
    let key = dev_key_path(config);
    load_or_generate(DEV_KID, &key, &config.data_dir.join(DEV_JWKS_FILE)).map(|_| ())
}

fn dev_key_path(config: &Config) -> PathBuf {
    config
        .auth
        .dev_signing_key
        .clone()
        .unwrap_or_else(|| config.data_dir.join(DEV_KEY_FILE))
}

/// The reservation-token signer: the configured key file, or one generated into `data_dir`.
/// Its public JWKS is written next to the generated key for the settlement service.
pub fn reservation_signer(config: &Config) -> Result<TokenSigner, KeyError> {
    let kid = &config.reservations.signing_key_id;
    match &config.reservations.signing_key_file {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| key_err(path, e))?;
            TokenSigner::from_pkcs8_pem(kid, &pem).map_err(|e| key_err(path, e))
        }
        None => load_or_generate(
            kid,
            &config.data_dir.join(RESERVATION_KEY_FILE),
            &config.data_dir.join(RESERVATION_JWKS_FILE),
        ),
    }
}

/// Mints a buyer JWT with the dev identity key (generated on first use).
pub fn mint_dev_token(
    config: &Config,
    sub: &str,
    roles: &[String],
    ttl: Duration,
) -> Result<String, KeyError> {
    ensure_dev_identity(config)?;
    let key_path = dev_key_path(config);
    let pem = std::fs::read(&key_path).map_err(|e| key_err(&key_path, e))?;
    let key = EncodingKey::from_ed_pem(&pem).map_err(|e| key_err(&key_path, e))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = BuyerClaims {
        sub: sub.to_owned(),
        roles: roles.to_vec(),
        iss: config.auth.issuer.clone(),
        aud: config.auth.audience.clone(),
        iat: now,
        nbf: now,
        exp: now + ttl.as_secs(),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(DEV_KID.to_owned());
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| key_err(&key_path, e))
}
