//! Local-use keys, generated into `data_dir` on first use (never shipped, never shared):
//! the dev identity provider key that `stockgate token` signs buyer JWTs with (its public half
//! is the dev JWKS the gateway trusts when no `auth.jwks_*` is configured), and the gateway's
//! reservation-token signing key with its public JWKS for the settlement service.
//!
//! Production configures a real identity provider's JWKS and a managed reservation key, with
//! the key set that verifies reservation tokens (`reservations.public_jwks_file`): during a
//! rotation it holds the previous key as well as the current one, so holds signed before the
//! rotation still confirm ([`reservation_verifier`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reservation_core::token::MAX_LEEWAY_SECS;
use reservation_core::{TokenSigner, TokenVerifier};

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

/// A key that failed to load or be written, with the config field that names it.
#[derive(Debug, thiserror::Error)]
#[error("config field `{field}` ({path}): {message}", path = .path.display())]
pub struct KeyError {
    pub field: &'static str,
    pub path: PathBuf,
    pub message: String,
}

/// The fields keys come from (a generated key lives in `data_dir`).
const DATA_DIR: &str = "data_dir";
const SIGNING_KEY_FILE: &str = "reservations.signing_key_file";
const SIGNING_KEY_ID: &str = "reservations.signing_key_id";
const PUBLIC_JWKS_FILE: &str = "reservations.public_jwks_file";

pub(crate) fn key_err(field: &'static str, path: &Path, message: impl ToString) -> KeyError {
    KeyError {
        field,
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Reads the PEM at `key_path` as an Ed25519 key with `kid`, generating it (and writing the
/// public set to `jwks_path`) when the file does not exist yet.
pub(crate) fn load_or_generate(
    field: &'static str,
    kid: &str,
    key_path: &Path,
    jwks_path: &Path,
) -> Result<TokenSigner, KeyError> {
    let key_err = |path: &Path, e: &dyn std::fmt::Display| key_err(field, path, e);
    if key_path.exists() {
        let pem = std::fs::read_to_string(key_path).map_err(|e| key_err(key_path, &e))?;
        let signer = TokenSigner::from_pkcs8_pem(kid, &pem).map_err(|e| key_err(key_path, &e))?;
        // Rewrite the public set if it went missing, so the pair always matches.
        if !jwks_path.exists() {
            write_jwks(field, &signer, jwks_path)?;
        }
        return Ok(signer);
    }
    if let Some(dir) = key_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| key_err(dir, &e))?;
    }
    let signer = TokenSigner::generate(kid);
    write_private(field, key_path, &signer.to_pkcs8_pem())?;
    write_jwks(field, &signer, jwks_path)?;
    tracing::info!(key = %key_path.display(), "generated a local key");
    Ok(signer)
}

fn write_jwks(field: &'static str, signer: &TokenSigner, path: &Path) -> Result<(), KeyError> {
    let set = JwkSet {
        keys: vec![signer.public_jwk()],
    };
    let json = serde_json::to_string_pretty(&set).map_err(|e| key_err(field, path, e))?;
    std::fs::write(path, json).map_err(|e| key_err(field, path, e))
}

fn write_private(field: &'static str, path: &Path, pem: &str) -> Result<(), KeyError> {
    let key_err = |e: std::io::Error| key_err(field, path, e);
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(key_err)?;
    file.write_all(pem.as_bytes()).map_err(key_err)
}

/// Makes sure the dev identity key and its JWKS exist in `data_dir` (used when the config
/// names no identity provider).
pub fn ensure_dev_identity(config: &Config) -> Result<(), KeyError> {
    let (field, key) = dev_key_path(config);
    let jwks = config.data_dir.join(DEV_JWKS_FILE);
    load_or_generate(field, DEV_KID, &key, &jwks).map(|_| ())
}

/// The dev identity key and the config field it comes from.
fn dev_key_path(config: &Config) -> (&'static str, PathBuf) {
    match &config.auth.dev_signing_key {
        Some(path) => ("auth.dev_signing_key", path.clone()),
        None => (DATA_DIR, config.data_dir.join(DEV_KEY_FILE)),
    }
}

/// The reservation-token signer: the configured key file, or one generated into `data_dir`.
/// Its public JWKS is written next to the generated key for the settlement service.
pub fn reservation_signer(config: &Config) -> Result<TokenSigner, KeyError> {
    let kid = &config.reservations.signing_key_id;
    match &config.reservations.signing_key_file {
        Some(path) => {
            let pem =
                std::fs::read_to_string(path).map_err(|e| key_err(SIGNING_KEY_FILE, path, e))?;
            TokenSigner::from_pkcs8_pem(kid, &pem).map_err(|e| key_err(SIGNING_KEY_FILE, path, e))
        }
        None => load_or_generate(
            DATA_DIR,
            kid,
            &config.data_dir.join(RESERVATION_KEY_FILE),
            &config.data_dir.join(RESERVATION_JWKS_FILE),
        ),
    }
}

/// What the gateway verifies reservation tokens with (its confirm check, and the in-process
/// settlement of `all-in-one`): every key of `reservations.public_jwks_file` when it is set,
/// so tokens of the previous key still confirm after a rotation; else the signer's own key.
///
/// Checked at start: the set must parse, hold Ed25519 keys with distinct `kid`s, and publish
/// the signer's key under its `kid` (settlement, which verifies with the same set, would
/// refuse every new token otherwise).
pub fn reservation_verifier(
    config: &Config,
    signer: &TokenSigner,
) -> Result<TokenVerifier, KeyError> {
    let Some(path) = &config.reservations.public_jwks_file else {
        return Ok(TokenVerifier::for_signer(signer));
    };
    let (set, verifier) = read_key_set(PUBLIC_JWKS_FILE, path)?;
    let kid = signer.kid();
    match set.find(kid) {
        None => Err(key_err(
            PUBLIC_JWKS_FILE,
            path,
            format!(
                "has no key with kid `{kid}` ({SIGNING_KEY_ID}): publish the new key in the set \
                 before the gateway signs with it"
            ),
        )),
        Some(jwk) if !signer.is_public_half(jwk) => Err(key_err(
            PUBLIC_JWKS_FILE,
            path,
            format!(
                "its key `{kid}` is not the public half of the signing key ({SIGNING_KEY_FILE})"
            ),
        )),
        Some(_) => Ok(verifier),
    }
}

/// The JWKS that verifies reservation tokens outside the gateway process:
/// `reservations.public_jwks_file`, else the set generated next to the key in `data_dir`.
pub fn reservation_jwks_file(config: &Config) -> PathBuf {
    config
        .reservations
        .public_jwks_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join(RESERVATION_JWKS_FILE))
}

/// Where the identity provider's keys come from: `auth.jwks_file`, else the dev JWKS in
/// `data_dir`.
pub fn buyer_jwks_file(config: &Config) -> PathBuf {
    config
        .auth
        .jwks_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join(DEV_JWKS_FILE))
}

/// What `stockgate settlement` verifies reservation tokens with: the published key set
/// (`reservations.public_jwks_file`, by default the one generated next to the key in
/// `data_dir`), checked as in [`reservation_verifier`].
pub fn published_reservation_verifier(config: &Config) -> Result<TokenVerifier, KeyError> {
    let field = match config.reservations.public_jwks_file {
        Some(_) => PUBLIC_JWKS_FILE,
        None => DATA_DIR,
    };
    Ok(read_key_set(field, &reservation_jwks_file(config))?.1)
}

/// Reads a JWKS file of reservation-token keys and builds its verifier.
fn read_key_set(field: &'static str, path: &Path) -> Result<(JwkSet, TokenVerifier), KeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| key_err(field, path, e))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| key_err(field, path, format!("not a JWKS: {e}")))?;
    let verifier =
        TokenVerifier::new(&set, MAX_LEEWAY_SECS).map_err(|e| key_err(field, path, e))?;
    Ok((set, verifier))
}

/// Mints a buyer JWT with the dev identity key (generated on first use).
pub fn mint_dev_token(
    config: &Config,
    sub: &str,
    roles: &[String],
    ttl: Duration,
) -> Result<String, KeyError> {
    ensure_dev_identity(config)?;
    let (field, key_path) = dev_key_path(config);
    let pem = std::fs::read(&key_path).map_err(|e| key_err(field, &key_path, e))?;
    let key = EncodingKey::from_ed_pem(&pem).map_err(|e| key_err(field, &key_path, e))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = BuyerClaims {
        sub: sub.to_owned(),
        roles: roles.to_vec(),
        // The dev identity is trusted only with nothing else configured: the first (the
        // default) issuer and audience.
        iss: config.auth.issuer.first().cloned().unwrap_or_default(),
        aud: config.auth.audience.first().cloned().unwrap_or_default(),
        iat: now,
        nbf: now,
        exp: now + ttl.as_secs(),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(DEV_KID.to_owned());
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| key_err(field, &key_path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reservation_core::token::TokenError;
    use reservation_core::{HoldState, ReservationClaims, Sku};

    /// A config whose data dir and key files live in a fresh temp dir.
    struct Fixture {
        dir: PathBuf,
        config: Config,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!(
                "stockgate-devkeys-{}",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let config = Config {
                data_dir: dir.join("data"),
                ..Config::default()
            };
            Fixture { dir, config }
        }

        /// Signs with `signer`'s key (written to a file) and publishes `published`.
        fn rotate_to(&mut self, signer: &TokenSigner, published: &[&TokenSigner]) {
            let key = self.write(&format!("{}.pem", signer.kid()), &signer.to_pkcs8_pem());
            let set = JwkSet {
                keys: published.iter().map(|s| s.public_jwk()).collect(),
            };
            let jwks = self.write("jwks.json", &serde_json::to_string(&set).unwrap());
            let r = &mut self.config.reservations;
            r.signing_key_file = Some(key);
            r.signing_key_id = signer.kid().to_owned();
            r.public_jwks_file = Some(jwks);
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }

        fn verifier(&self) -> Result<TokenVerifier, KeyError> {
            reservation_verifier(&self.config, &reservation_signer(&self.config)?)
        }

        fn error(&self) -> String {
            match self.verifier() {
                Ok(_) => panic!("the key configuration was accepted"),
                Err(e) => e.to_string(),
            }
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn token(signer: &TokenSigner) -> String {
        let sku = Sku::parse("HOT").unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let hold = reservation_core::Hold {
            id: reservation_core::ReservationId::generate(&sku),
            sku,
            buyer: reservation_core::BuyerId::parse("alice").unwrap(),
            qty: reservation_core::Qty::new(1).unwrap(),
            state: HoldState::Held,
            created_at_ms: now,
            expires_at_ms: now + 60_000,
        };
        signer.sign(&ReservationClaims::for_hold(&hold)).unwrap()
    }

    #[test]
    fn after_a_rotation_the_previous_key_still_verifies() {
        let (a, b, c) = (
            TokenSigner::generate("rsv-a"),
            TokenSigner::generate("rsv-b"),
            TokenSigner::generate("rsv-c"),
        );
        let mut fixture = Fixture::new();
        fixture.rotate_to(&b, &[&a, &b]);
        let verifier = fixture.verifier().unwrap();
        assert!(verifier.verify(&token(&a)).is_ok(), "previous key");
        assert!(verifier.verify(&token(&b)).is_ok(), "current key");
        assert_eq!(verifier.verify(&token(&c)), Err(TokenError::UnknownKey));
        // Another key under the previous kid is no previous key.
        let impostor = TokenSigner::generate("rsv-a");
        assert_eq!(
            verifier.verify(&token(&impostor)),
            Err(TokenError::BadSignature)
        );
        // Retired: a set with the current key only refuses the previous key's tokens.
        fixture.rotate_to(&b, &[&b]);
        let verifier = fixture.verifier().unwrap();
        assert_eq!(verifier.verify(&token(&a)), Err(TokenError::UnknownKey));
    }

    #[test]
    fn without_a_key_set_only_the_signing_key_verifies() {
        let mut fixture = Fixture::new();
        let (a, b) = (
            TokenSigner::generate("rsv-a"),
            TokenSigner::generate("rsv-b"),
        );
        fixture.rotate_to(&b, &[&a, &b]);
        fixture.config.reservations.public_jwks_file = None;
        let verifier = fixture.verifier().unwrap();
        assert!(verifier.verify(&token(&b)).is_ok());
        assert_eq!(verifier.verify(&token(&a)), Err(TokenError::UnknownKey));
    }

    #[test]
    fn each_key_rule_names_its_field() {
        let (a, b) = (
            TokenSigner::generate("rsv-a"),
            TokenSigner::generate("rsv-b"),
        );
        let expect = |fixture: &Fixture, parts: &[&str]| {
            let message = fixture.error();
            for part in parts {
                assert!(message.contains(part), "{message:?} lacks {part:?}");
            }
        };
        let field = "config field `reservations.public_jwks_file`";

        let mut f = Fixture::new();
        f.rotate_to(&b, &[&a, &b]);
        f.config.reservations.public_jwks_file = Some(f.dir.join("missing.json"));
        expect(&f, &[field, "missing.json"]);

        f.rotate_to(&b, &[&a, &b]);
        f.write("jwks.json", "{\"keys\": [");
        expect(&f, &[field, "not a JWKS"]);

        let twin = TokenSigner::generate("rsv-a");
        f.rotate_to(&b, &[&a, &twin, &b]);
        expect(&f, &[field, "kid rsv-a appears twice"]);

        f.rotate_to(&b, &[&a]);
        expect(
            &f,
            &[
                field,
                "no key with kid `rsv-b`",
                "reservations.signing_key_id",
            ],
        );

        let other_b = TokenSigner::generate("rsv-b");
        f.rotate_to(&b, &[&a, &other_b]);
        expect(&f, &[field, "`rsv-b` is not the public half"]);

        f.rotate_to(&b, &[&a, &b]);
        f.write("rsv-b.pem", "-----BEGIN PRIVATE KEY-----\nnot a key\n");
        expect(
            &f,
            &["config field `reservations.signing_key_file`", "rsv-b.pem"],
        );

        f.rotate_to(&b, &[&a, &b]);
        assert!(f.verifier().is_ok(), "the fixture itself is valid");
    }
}
