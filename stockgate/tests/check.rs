//! `stockgate check` and `stockgate ratelimits check`: a configuration or a rules file
//! validated offline, exiting non-zero with the field at fault named, as `nginx -t` does.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use stockgate::cli::{Cli, run};

const STRICT: &str = "[[rule]]\nname = \"catalog\"\npath = \"/api/v1/products/{sku}\"\n\
                      key = [\"ip\", \"sku\"]\nrate = 1\nperiod_secs = 60\nburst = 2\n";

fn scratch_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}-{name}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the real binary with `args` and no `STOCKGATE_*` variables: exit success, and what
/// it printed (stdout on success, stderr on failure).
fn stockgate(args: &[&str]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stockgate"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("STOCKGATE_") {
            command.env_remove(name);
        }
    }
    let out = command.output().unwrap();
    let text = if out.status.success() {
        out.stdout
    } else {
        out.stderr
    };
    (
        out.status.success(),
        String::from_utf8_lossy(&text).into_owned(),
    )
}

fn repo_file(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .display()
        .to_string()
}

#[test]
fn ratelimits_check_validates_a_file_offline() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/ratelimits.toml");
    let cli = Cli::try_parse_from(["stockgate", "ratelimits", "check", shipped]).unwrap();
    run(cli).unwrap();

    let path = scratch_file(
        "rules.toml",
        &STRICT.replace("key = [\"ip\", \"sku\"]", "key = [\"cookie\"]"),
    );
    let cli =
        Cli::try_parse_from(["stockgate", "ratelimits", "check", path.to_str().unwrap()]).unwrap();
    let message = format!("{:#}", run(cli).unwrap_err());
    assert!(message.contains("rule[0] field `key`"), "{message}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn check_accepts_the_shipped_configuration_and_the_defaults() {
    let path = repo_file("config/stockgate.toml");
    let (ok, out) = stockgate(&["--config", &path, "check"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), format!("{path}: valid"));
    let (ok, out) = stockgate(&["check"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "the built-in defaults: valid");
}

#[test]
fn check_names_the_field_at_fault() {
    let cases = [
        // Unknown fields, with their path.
        ("[server]\nlisten_port = 3\n", "server.listen_port"),
        ("colour = \"blue\"\n", "colour"),
        (
            "[settlement.group_commit]\nmax_batchh = 3\n",
            "settlement.group_commit.max_batchh",
        ),
        // Wrong types, with their path.
        (
            "[limits]\nmax_body_bytes = \"big\"\n",
            "limits.max_body_bytes",
        ),
        ("database_url = 5\n", "database_url"),
        // Rules a file cannot express.
        (
            "[reservations]\nhold_ttl_secs = 0\n",
            "`reservations.hold_ttl_secs`",
        ),
        (
            "[settlement.group_commit]\nmax_batch = 0\n",
            "group_commit.max_batch",
        ),
        // Files the configuration names are read as the service would read them.
        (
            "[auth]\njwks_file = \"/nonexistent/idp.json\"\n",
            "`auth.jwks_file`",
        ),
        (
            "[ratelimit]\nrules_file = \"/nonexistent/rules.toml\"\n",
            "`ratelimit.rules_file`",
        ),
        // Not TOML at all: the parser's line.
        ("[server\n", "line 1"),
    ];
    for (text, field) in cases {
        let path = scratch_file("stockgate.toml", text);
        let (ok, message) = stockgate(&["--config", path.to_str().unwrap(), "check"]);
        assert!(!ok, "{text:?} passed the check");
        assert!(message.contains(field), "{text:?} → {message}");
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn check_reads_the_rules_file_the_configuration_names() {
    let rules = scratch_file(
        "rules.toml",
        &STRICT.replace("key = [\"ip\", \"sku\"]", "key = [\"cookie\"]"),
    );
    let config = scratch_file(
        "stockgate.toml",
        &format!(
            "[ratelimit]\nrules_file = {:?}\n",
            rules.display().to_string()
        ),
    );
    let (ok, message) = stockgate(&["--config", config.to_str().unwrap(), "check"]);
    assert!(!ok);
    assert!(
        message.contains("ratelimit.rules_file") && message.contains("rule[0] field `key`"),
        "{message}"
    );
    std::fs::write(&rules, STRICT).unwrap();
    let (ok, out) = stockgate(&["--config", config.to_str().unwrap(), "check"]);
    assert!(ok, "{out}");
    assert!(out.contains("1 rate-limit rules"), "{out}");
    let _ = std::fs::remove_file(rules);
    let _ = std::fs::remove_file(config);
}

#[test]
fn check_applies_the_environment_overrides() {
    let out = Command::new(env!("CARGO_BIN_EXE_stockgate"))
        .arg("check")
        .env("STOCKGATE_SETTLEMENT_ADMIN_LISTEN", "nope")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("STOCKGATE_SETTLEMENT_ADMIN_LISTEN"),
        "{message}"
    );
}

#[test]
fn check_parses_the_key_files_as_the_service_does() {
    let dir = std::env::temp_dir().join(format!("check-keys-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.json");
    std::fs::write(&junk, "not json").unwrap();
    let at = |path: &Path| format!("{:?}", path.display().to_string());
    let cases = [
        // A directory, and a file that is not a key set or not a key.
        (
            format!("[auth]\njwks_file = {}\n", at(&dir)),
            "auth.jwks_file",
        ),
        (
            format!("[auth]\njwks_file = {}\n", at(&junk)),
            "auth.jwks_file",
        ),
        (
            format!("[reservations]\nsigning_key_file = {}\n", at(&junk)),
            "reservations.signing_key_file",
        ),
        (
            format!("[reservations]\npublic_jwks_file = {}\n", at(&junk)),
            "reservations.public_jwks_file",
        ),
        (
            format!("[settlement_auth]\nsigning_key_file = {}\n", at(&dir)),
            "settlement_auth.signing_key_file",
        ),
        (
            format!("[settlement_auth]\ngateway_jwks_file = {}\n", at(&junk)),
            "settlement_auth.gateway_jwks_file",
        ),
        // The identity provider's extra CA: read and parsed as the https client does.
        (format!("[auth]\nca_file = {}\n", at(&junk)), "auth.ca_file"),
    ];
    for (text, field) in cases {
        let path = scratch_file("stockgate.toml", &text);
        let (ok, message) = stockgate(&["--config", path.to_str().unwrap(), "check"]);
        assert!(!ok, "{text:?} passed the check");
        assert!(message.contains(field), "{text:?} → {message}");
        let _ = std::fs::remove_file(path);
    }

    // A reservation key whose kid the published set lacks: the service refuses to start, so
    // does the check.
    let signer = reservation_core::TokenSigner::generate("rsv-1");
    let key = dir.join("rsv.pem");
    std::fs::write(&key, signer.to_pkcs8_pem()).unwrap();
    let jwks = dir.join("rsv.json");
    let set = serde_json::json!({"keys": [signer.public_jwk()]});
    std::fs::write(&jwks, set.to_string()).unwrap();
    let file = |kid: &str| {
        scratch_file(
            "stockgate.toml",
            &format!(
                "[reservations]\nsigning_key_file = {}\nsigning_key_id = {kid:?}\npublic_jwks_file = {}\n",
                at(&key),
                at(&jwks)
            ),
        )
    };
    let good = file("rsv-1");
    let (ok, out) = stockgate(&["--config", good.to_str().unwrap(), "check"]);
    assert!(ok, "{out}");
    let bad = file("rsv-9");
    let (ok, message) = stockgate(&["--config", bad.to_str().unwrap(), "check"]);
    assert!(!ok);
    assert!(
        message.contains("reservations.public_jwks_file") && message.contains("rsv-9"),
        "{message}"
    );
    for path in [good, bad] {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unreadable_file_is_reported_once() {
    let dir = std::env::temp_dir();
    let (ok, message) = stockgate(&["--config", dir.to_str().unwrap(), "check"]);
    assert!(!ok);
    assert_eq!(message.matches("Is a directory").count(), 1, "{message}");
}

#[test]
fn check_reads_the_tls_certificate_and_key() {
    let ca = testkit::tls::TestCa::new("check CA");
    let (good, other) = (ca.issue(&["localhost"]), ca.issue(&["localhost"]));
    let dir = std::env::temp_dir().join(format!("check-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = good.write(&dir, "good");
    let (_, other_key) = other.write(&dir, "other");
    let config = |key: &Path| {
        scratch_file(
            "stockgate.toml",
            &format!(
                "[server.tls]\nlisten = \"127.0.0.1:8443\"\ncert_file = {:?}\nkey_file = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            ),
        )
    };
    let path = config(&key);
    let (ok, out) = stockgate(&["--config", path.to_str().unwrap(), "check"]);
    assert!(ok, "{out}");
    let path = config(&other_key);
    let (ok, message) = stockgate(&["--config", path.to_str().unwrap(), "check"]);
    assert!(!ok, "a key that is not the certificate's passed the check");
    assert!(
        message.contains("server.tls.cert_file") && message.contains("does not belong"),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
