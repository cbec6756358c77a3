//! The configuration files under `deploy/` (compose, Kubernetes base and overlays) parse with
//! the real config types and pass `validate()`, and the ops rate-limit rules shipped in the
//! Kustomize base load as the gateway would load them: a typo or a renamed option fails here,
//! not in a pod.

use std::path::{Path, PathBuf};

use stockgate::config::Config;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn every_deploy_config_parses_and_validates() {
    for file in [
        "deploy/config/stockgate.toml",
        "deploy/k8s/base/stockgate.toml",
        "deploy/k8s/overlays/local/stockgate.toml",
        "deploy/k8s/overlays/aks/stockgate.toml",
    ] {
        let text = std::fs::read_to_string(repo(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        if let Err(e) = config.validate() {
            panic!("{file}: {e}");
        }
    }
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
