//! The configuration files under `deploy/` (compose, Kubernetes base and overlays) and the
//! examples under `config/` parse with the real config types and pass `validate()`, and the
//! ops rate-limit rules shipped in the Kustomize base load as the gateway would load them: a
//! typo or a renamed option fails here, not in a pod. A file with placeholders (`<tenant-id>`)
//! is refused as shipped, naming the field, and valid once they are filled in.

use std::path::{Path, PathBuf};

use stockgate::config::Config;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// `text` with every `<placeholder>` replaced by a value of the shape it stands for (a GUID,
/// as Entra ID's tenant and client ids are).
fn fill_placeholders(text: &str) -> String {
    let mut filled = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        filled.push_str(&rest[..start]);
        filled.push_str("00000000-0000-0000-0000-000000000000");
        rest = &rest[start + len + 1..];
    }
    filled.push_str(rest);
    filled
}

#[test]
fn every_deploy_config_and_example_parses_and_validates() {
    // (file, the field of its first placeholder, if it has any)
    for (file, placeholder) in [
        ("deploy/config/stockgate.toml", None),
        ("deploy/k8s/base/stockgate.toml", None),
        ("deploy/k8s/overlays/local/stockgate.toml", None),
        (
            "deploy/k8s/overlays/aks/stockgate.toml",
            Some("auth.issuer"),
        ),
        ("config/stockgate.toml", None),
        ("config/entra-id.toml", Some("auth.issuer")),
    ] {
        let text = std::fs::read_to_string(repo(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        match (config.validate(), placeholder) {
            (Ok(()), None) => continue,
            (Err(e), None) => panic!("{file}: {e}"),
            (Ok(()), Some(_)) => panic!("{file}: its placeholders passed validation"),
            (Err(e), Some(field)) => {
                let message = e.to_string();
                assert!(
                    message.starts_with(&format!("config field `{field}` holds the placeholder")),
                    "{file}: {message}"
                );
            }
        }
        let filled = Config::from_toml(&fill_placeholders(&text)).unwrap();
        if let Err(e) = filled.validate() {
            panic!("{file} with its placeholders filled in: {e}");
        }
    }
}

#[test]
fn every_example_under_config_is_checked() {
    // A new example must join the list above (placeholders and all).
    let mut names: Vec<String> = std::fs::read_dir(repo("config"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".toml") && name != "ratelimits.toml")
        .collect();
    names.sort();
    assert_eq!(names, ["entra-id.toml", "stockgate.toml"]);
}

#[test]
fn the_local_overlays_reservation_keys_pass_the_start_check() {
    // The gateway refuses to start unless the key set publishes its signing key: the dev keys
    // shipped for the local overlay must be such a pair.
    let path = "deploy/k8s/overlays/local/stockgate.toml";
    let text = std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let keys = repo("deploy/k8s/overlays/local/dev-keys");
    config.gateway.reservations.signing_key_file = Some(keys.join("reservation-key.pem"));
    config.gateway.reservations.public_jwks_file = Some(keys.join("reservation-jwks.json"));
    let signer = gateway::auth::devkeys::reservation_signer(&config.gateway)
        .unwrap_or_else(|e| panic!("{e}"));
    gateway::auth::devkeys::reservation_verifier(&config.gateway, &signer)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_shipped_rate_limit_rules_load() {
    let path = repo("deploy/k8s/base/ratelimits.toml");
    let rules = gateway::ratelimit::rules::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!rules.is_empty());
}
