//! Buyer token checks against a static key set.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{EncodingKey, Header};
use reservation_core::TokenSigner;

use super::*;

struct Fixture {
    auth: BuyerAuth,
    key: EncodingKey,
}

async fn fixture() -> Fixture {
    let signer = TokenSigner::generate("k1");
    let set = JwkSet {
        keys: vec![signer.public_jwk()],
    };
    let keys = KeySet::load(KeySource::Static(set), Duration::from_secs(10))
        .await
        .unwrap();
    let auth = BuyerAuth::new(&AuthConfig::default(), keys).unwrap();
    let key = EncodingKey::from_ed_pem(signer.to_pkcs8_pem().as_bytes()).unwrap();
    Fixture { auth, key }
}

fn claims(roles: &[&str]) -> BuyerClaims {
    let now = jsonwebtoken::get_current_timestamp();
    BuyerClaims {
        sub: "alice".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        iss: "stockgate-dev".into(),
        aud: "stockgate".into(),
        exp: now + 60,
        nbf: now,
        iat: now,
    }
}

fn sign(fx: &Fixture, claims: &BuyerClaims) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(&header, claims, &fx.key).unwrap()
}

#[tokio::test]
async fn a_good_token_yields_sub_and_roles() {
    let fx = fixture().await;
    let token = sign(&fx, &claims(&["ops"]));
    let header = format!("Bearer {token}");
    let identity = fx.auth.authenticate(Some(header.as_bytes())).await.unwrap();
    assert_eq!(identity.sub, "alice");
    assert!(identity.has_role(OPS_ROLE));
    assert_eq!(identity.roles, ["ops"]);
}

#[tokio::test]
async fn small_leeway_and_claim_checks() {
    let fx = fixture().await;
    let now = jsonwebtoken::get_current_timestamp();
    // Within the 5 s leeway: accepted; beyond it: refused.
    let barely = sign(
        &fx,
        &BuyerClaims {
            exp: now - 2,
            ..claims(&[])
        },
    );
    assert!(fx.auth.verify(&barely).await.is_ok());
    let expired = sign(
        &fx,
        &BuyerClaims {
            exp: now - 30,
            ..claims(&[])
        },
    );
    assert_eq!(fx.auth.verify(&expired).await, Err(AuthError::Expired));
    let early = sign(
        &fx,
        &BuyerClaims {
            nbf: now + 30,
            ..claims(&[])
        },
    );
    assert_eq!(fx.auth.verify(&early).await, Err(AuthError::NotYetValid));
    let foreign = sign(
        &fx,
        &BuyerClaims {
            aud: "other".into(),
            ..claims(&[])
        },
    );
    assert_eq!(
        fx.auth.verify(&foreign).await,
        Err(AuthError::WrongIssuerOrAudience)
    );
    let comma_role = sign(&fx, &claims(&["ops,admin"]));
    assert_eq!(fx.auth.verify(&comma_role).await, Err(AuthError::Malformed));
    assert_eq!(fx.auth.authenticate(None).await, Err(AuthError::Missing));
    assert_eq!(
        fx.auth.authenticate(Some(b"Basic abc")).await,
        Err(AuthError::Missing)
    );
}

#[test]
fn symmetric_algorithms_cannot_be_allowed() {
    assert!(parse_algorithm("HS256").is_err());
    assert!(parse_algorithm("none").is_err());
    assert_eq!(parse_algorithm("EdDSA"), Ok(Algorithm::EdDSA));
}

#[test]
fn an_unknown_algorithm_is_named_and_keeps_its_cause() {
    use std::error::Error as _;
    let unknown = parse_algorithm("XS1").unwrap_err();
    assert_eq!(unknown.to_string(), "unknown algorithm \"XS1\"");
    assert!(unknown.source().is_some());
    let symmetric = parse_algorithm("HS256").unwrap_err();
    assert_eq!(
        symmetric.to_string(),
        "HS256 is symmetric; only public-key algorithms are allowed"
    );
}

#[tokio::test]
async fn an_unknown_kid_rereads_the_jwks_file_for_key_rotation() {
    let dir =
        std::env::temp_dir().join(format!("stockgate-jwks-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    let old = TokenSigner::generate("k1");
    let new = TokenSigner::generate("k2");
    let write = |signers: &[&TokenSigner]| {
        let set = JwkSet {
            keys: signers.iter().map(|s| s.public_jwk()).collect(),
        };
        std::fs::write(&path, serde_json::to_string(&set).unwrap()).unwrap();
    };
    write(&[&old]);
    let keys = KeySet::load(KeySource::File(path.clone()), Duration::ZERO)
        .await
        .unwrap();
    let auth = BuyerAuth::new(&AuthConfig::default(), keys).unwrap();

    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k2".into());
    let new_key = EncodingKey::from_ed_pem(new.to_pkcs8_pem().as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&header, &claims(&[]), &new_key).unwrap();
    assert_eq!(auth.verify(&token).await, Err(AuthError::UnknownKey));

    // The provider publishes the new key: the next token with its kid triggers a re-read.
    write(&[&old, &new]);
    assert_eq!(auth.verify(&token).await.unwrap().sub, "alice");
    // A broken file keeps the last good keys.
    std::fs::write(&path, "not json").unwrap();
    auth.key_set().refresh_now().await;
    assert!(auth.verify(&token).await.is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_set_read_without_keys_withdraws_them() {
    let dir =
        std::env::temp_dir().join(format!("stockgate-jwks-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    let signer = TokenSigner::generate("k1");
    let set = JwkSet {
        keys: vec![signer.public_jwk()],
    };
    std::fs::write(&path, serde_json::to_string(&set).unwrap()).unwrap();
    let keys = KeySet::load(KeySource::File(path.clone()), Duration::ZERO)
        .await
        .unwrap();
    let auth = BuyerAuth::new(&AuthConfig::default(), keys).unwrap();
    let key = EncodingKey::from_ed_pem(signer.to_pkcs8_pem().as_bytes()).unwrap();
    let token_for = |sub: &str| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("k1".into());
        let claims = BuyerClaims {
            sub: sub.into(),
            ..claims(&[])
        };
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    assert!(auth.verify(&token_for("alice")).await.is_ok());

    // The provider withdrew every key: a valid JSON set with none, unlike a broken file.
    std::fs::write(&path, r#"{"keys": []}"#).unwrap();
    auth.key_set().refresh_now().await;
    assert_eq!(
        auth.verify(&token_for("bob")).await,
        Err(AuthError::UnknownKey)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_other_schemes_carry_no_token() {
    let fx = fixture().await;
    let token = sign(&fx, &claims(&[]));
    for header in [
        format!("Bearer {token}"),
        format!("BEARER {token}"),
        format!("bEaReR\t{token}"),
        format!("Bearer   {token}  "),
    ] {
        let identity = fx.auth.authenticate(Some(header.as_bytes())).await;
        assert_eq!(identity.unwrap().sub, "alice", "{header:?}");
    }
    for header in [
        format!("Basic {token}"),
        format!("Bearer{token}"),
        "Bearer".into(),
    ] {
        let refused = fx.auth.authenticate(Some(header.as_bytes())).await;
        assert!(
            matches!(refused, Err(AuthError::Missing)),
            "{header:?}: {refused:?}"
        );
    }
}

#[tokio::test]
async fn an_exp_with_a_fraction_is_a_numeric_date() {
    let fx = fixture().await;
    let now = jsonwebtoken::get_current_timestamp();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let claims = serde_json::json!({
        "sub": "alice", "iss": "stockgate-dev", "aud": "stockgate",
        "exp": now as f64 + 60.5, "nbf": now,
    });
    let token = jsonwebtoken::encode(&header, &claims, &fx.key).unwrap();
    assert_eq!(fx.auth.verify(&token).await.unwrap().sub, "alice");
}
