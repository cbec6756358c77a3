//! Rotating the reservation-token key (deploy/README.md, "Rotate the token-signing key"): holds
//! signed with the previous key still confirm, through the gateway's own check and the
//! settlement's, as long as the configured key set (`reservations.public_jwks_file`) publishes
//! that key; a token of a key in neither is 401; a retired key's tokens are refused.
//!
//! Two ways in: the all-in-one stack in-process, configured by file (the `[reservations]`
//! section parsed from TOML), and `stockgate gateway` + `stockgate settlement` as processes
//! configured by the environment (`STOCKGATE_RESERVATION_KEY_FILE`, `…_KEY_ID`,
//! `…_JWKS_FILE`), following the runbook's steps. Needs `REDIS_URL` and `DATABASE_URL`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gateway::config::{Config, ReservationsConfig};
use jsonwebtoken::jwk::JwkSet;
use redis::AsyncCommands;
use reservation_core::{TokenSigner, TokenVerifier};
use serde_json::{Value, json};
use testkit::{body, post_order, post_reservation, put_product};

/// Key files of one test: each signer's private key and the key sets published.
struct Keys {
    dir: PathBuf,
}

impl Keys {
    fn new() -> Keys {
        let dir = std::env::temp_dir().join(format!(
            "stockgate-rotation-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Keys { dir }
    }

    /// The private key file of `signer` (PKCS#8 PEM, as `deploy/keys.sh key` writes it).
    fn private(&self, signer: &TokenSigner) -> PathBuf {
        let path = self.dir.join(format!("{}.pem", signer.kid()));
        std::fs::write(&path, signer.to_pkcs8_pem()).unwrap();
        path
    }

    /// A JWKS publishing `signers` (as `deploy/keys.sh jwks` writes it).
    fn set(&self, name: &str, signers: &[&TokenSigner]) -> PathBuf {
        let set = JwkSet {
            keys: signers.iter().map(|s| s.public_jwk()).collect(),
        };
        let path = self.dir.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(&set).unwrap()).unwrap();
        path
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `[reservations]` section as a config file carries it.
fn reservations_section(key: &Path, kid: &str, jwks: &Path) -> ReservationsConfig {
    let toml = format!(
        "[reservations]\nsigning_key_file = {key:?}\nsigning_key_id = {kid:?}\n\
         public_jwks_file = {jwks:?}\n"
    );
    stockgate::config::Config::from_toml(&toml)
        .unwrap()
        .gateway
        .reservations
}

/// The `kid` a reservation token names.
fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// `token`'s claims signed again by `signer`: a token of a key the gateway may not know.
fn resigned(token: &str, by_key_of: &TokenSigner, signer: &TokenSigner) -> String {
    let claims = TokenVerifier::for_signer(by_key_of).verify(token).unwrap();
    signer.sign(&claims).unwrap()
}

const PRODUCT: &str = r#"{"name": "HOT", "price_cents": 1999, "total_stock": 10,
                          "per_buyer_limit": 5, "sale_state": "on_sale"}"#;

/// A new hold of one HOT unit: its reservation token.
async fn reserve(http: &reqwest::Client, base: &str, buyer: &str) -> String {
    let key = uuid::Uuid::new_v4().to_string();
    let (status, created) = post_reservation(http, base, buyer, &key, "HOT", 1).await;
    assert_eq!(status, 201, "{created}");
    created["token"].as_str().unwrap().to_owned()
}

/// The confirm of a reservation token: status and body.
async fn confirm(http: &reqwest::Client, base: &str, buyer: &str, token: &str) -> (u16, Value) {
    let key = uuid::Uuid::new_v4().to_string();
    post_order(http, base, buyer, &key, token).await
}

/// Deletes every Redis key of one test (its gateway and settlement prefixes).
async fn delete_keys(prefix: &str) {
    let client = redis::Client::open(testkit::redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = {
        let mut iter = redis
            .scan_match::<_, String>(format!("{prefix}*"))
            .await
            .unwrap();
        let mut keys = Vec::new();
        while let Some(key) = iter.next_item().await {
            keys.push(key.unwrap());
        }
        keys
    };
    for key in keys {
        let _: () = redis.del(key).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_signed_before_a_rotation_confirm_after_it_in_one_process() {
    let prefix = format!("sgtest:rotation-{}", uuid::Uuid::new_v4().simple());
    let (mut config, _) = testkit::real_stack_config("rotation", &prefix).await;
    let keys = Keys::new();
    let (a, b) = (
        TokenSigner::generate("rsv-a"),
        TokenSigner::generate("rsv-b"),
    );
    let stranger = TokenSigner::generate("rsv-c");
    let http = reqwest::Client::new();

    // Signing with A.
    config.gateway.reservations =
        reservations_section(&keys.private(&a), "rsv-a", &keys.set("a.json", &[&a]));
    let (all, idp) = testkit::start_real_stack(config.clone()).await;
    let base = format!("http://{}", all.public_addr());
    let product: Value = serde_json::from_str(PRODUCT).unwrap();
    let (status, created) =
        put_product(&http, &base, &idp.ops_token("olga"), "HOT", &product).await;
    assert_eq!(status, 201, "{created}");
    let alice = idp.token("alice");
    let (first, second) = (
        reserve(&http, &base, &alice).await,
        reserve(&http, &base, &alice).await,
    );
    assert_eq!(kid_of(&first), "rsv-a");
    all.shutdown().await;

    // Restarted signing with B, A still published: A's holds confirm, new tokens carry B.
    config.gateway.reservations =
        reservations_section(&keys.private(&b), "rsv-b", &keys.set("ab.json", &[&a, &b]));
    let (all, idp) = testkit::start_real_stack(config.clone()).await;
    let base = format!("http://{}", all.public_addr());
    let alice = idp.token("alice");
    let (status, order) = confirm(&http, &base, &alice, &first).await;
    assert_eq!(status, 201, "a hold signed with the previous key: {order}");
    let third = reserve(&http, &base, &alice).await;
    assert_eq!(kid_of(&third), "rsv-b");
    let (status, order) = confirm(&http, &base, &alice, &third).await;
    assert_eq!(status, 201, "{order}");
    // A key in neither set, and another key under the previous kid: 401, the hold untouched.
    for forged in [
        resigned(&second, &a, &stranger),
        resigned(&second, &a, &TokenSigner::generate("rsv-a")),
    ] {
        let (status, problem) = confirm(&http, &base, &alice, &forged).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (401, Some("invalid_reservation_token")),
            "{problem}"
        );
    }
    all.shutdown().await;

    // A retired: its last outstanding token is refused (the runbook waits a hold TTL first).
    config.gateway.reservations =
        reservations_section(&keys.private(&b), "rsv-b", &keys.set("b.json", &[&b]));
    let (all, idp) = testkit::start_real_stack(config.clone()).await;
    let base = format!("http://{}", all.public_addr());
    let (status, problem) = confirm(&http, &base, &idp.token("alice"), &second).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some("invalid_reservation_token")),
        "{problem}"
    );
    all.shutdown().await;
    delete_keys(&prefix).await;
}

/// `stockgate gateway` or `stockgate settlement`, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The processes of the environment-configured run, sharing one config file.
struct Deployment {
    config: PathBuf,
    data_dir: PathBuf,
    gateway_port: u16,
    settlement_port: u16,
    database_url: String,
}

/// Which key a process signs with and which set it verifies with, as environment variables.
struct KeyEnv<'a> {
    key: &'a Path,
    kid: &'a str,
    jwks: &'a Path,
}

impl Deployment {
    fn command(&self, args: &[&str], keys: &KeyEnv) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stockgate"));
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .env("STOCKGATE_REDIS_URL", testkit::redis_url())
            .env("STOCKGATE_DATABASE_URL", &self.database_url)
            .env("STOCKGATE_RESERVATION_KEY_FILE", keys.key)
            .env("STOCKGATE_RESERVATION_KEY_ID", keys.kid)
            .env("STOCKGATE_RESERVATION_JWKS_FILE", keys.jwks)
            .stdin(Stdio::null());
        command
    }

    fn start(&self, what: &str, port: u16, keys: &KeyEnv) -> Process {
        let child = self
            .command(&[what], keys)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting stockgate {what}: {e}"));
        let process = Process(child);
        reliability::world::wait_for_port(port, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("stockgate {what}: {e}"));
        process
    }

    /// A buyer or ops token from the dev identity key the gateway generated in `data_dir`.
    fn buyer_token(&self, sub: &str, roles: &[String]) -> String {
        let config = Config {
            data_dir: self.data_dir.clone(),
            ..Config::default()
        };
        gateway::auth::devkeys::mint_dev_token(&config, sub, roles, Duration::from_secs(600))
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runbook_by_environment_variables_keeps_outstanding_holds_confirmable() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("sgtest:rotenv-{id}");
    let database_url =
        backend_adapters::sql::scratch_schema_url(&testkit::database_url(), "rotenv")
            .await
            .expect("a scratch schema on PostgreSQL at DATABASE_URL");
    let keys = Keys::new();
    let free = || reliability::world::free_port().unwrap();
    let deployment = Deployment {
        config: keys.dir.join("stockgate.toml"),
        data_dir: keys.dir.join("data"),
        gateway_port: free(),
        settlement_port: free(),
        database_url,
    };
    let settlement_admin = free();
    // Everything but the URLs and the keys, which come from the environment.
    std::fs::write(
        &deployment.config,
        format!(
            r#"data_dir = "{data}"
redis_key_prefix = "{prefix}"
[server]
listen = "127.0.0.1:{gateway}"
admin_listen = "127.0.0.1:{admin}"
threads = 1
grace_period_secs = 0
shutdown_timeout_secs = 1
[upstream]
settlement_addr = "127.0.0.1:{settlement}"
settlement_admin_port = {settlement_admin}
health_check_interval_secs = 1
[settlement]
listen_addr = "127.0.0.1:{settlement}"
admin_listen_addr = "127.0.0.1:{settlement_admin}"
redis_key_prefix = "{prefix}-settlement"
[settlement.outbox]
stream = "{prefix}-events"
"#,
            data = deployment.data_dir.display(),
            gateway = deployment.gateway_port,
            admin = free(),
            settlement = deployment.settlement_port,
        ),
    )
    .unwrap();
    let (a, b) = (
        TokenSigner::generate("rsv-a"),
        TokenSigner::generate("rsv-b"),
    );
    let stranger = TokenSigner::generate("rsv-c");
    let (key_a, key_b, key_c) = (keys.private(&a), keys.private(&b), keys.private(&stranger));
    let (set_a, set_ab, set_b) = (
        keys.set("a.json", &[&a]),
        keys.set("ab.json", &[&a, &b]),
        keys.set("b.json", &[&b]),
    );
    let on_a = KeyEnv {
        key: &key_a,
        kid: "rsv-a",
        jwks: &set_a,
    };
    let migrated = deployment.command(&["migrate"], &on_a).output().unwrap();
    assert!(migrated.status.success(), "{migrated:?}");

    let settlement_port = deployment.settlement_port;
    let gateway_port = deployment.gateway_port;
    let base = format!("http://127.0.0.1:{gateway_port}");
    let http = reqwest::Client::new();
    // The gateway first: it generates the assertion key pair in data_dir whose public half
    // settlement needs to start at all.
    let mut gateway = deployment.start("gateway", gateway_port, &on_a);
    let mut settlement = deployment.start("settlement", settlement_port, &on_a);
    // Until its health check has seen settlement, the gateway answers proxied routes 503.
    for _ in 0..50 {
        let catalog = http.get(format!("{base}/api/v1/products")).send().await;
        if catalog.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ops = deployment.buyer_token("olga", &["ops".to_owned()]);
    let alice = deployment.buyer_token("alice", &[]);
    let product: Value = serde_json::from_str(PRODUCT).unwrap();
    let (status, created) = put_product(&http, &base, &ops, "HOT", &product).await;
    assert_eq!(status, 201, "{created}");
    let (first, second) = (
        reserve(&http, &base, &alice).await,
        reserve(&http, &base, &alice).await,
    );
    assert_eq!(kid_of(&first), "rsv-a");

    // 1. Publish the new key first: settlement restarts with A and B.
    let publish = KeyEnv {
        key: &key_a,
        kid: "rsv-a",
        jwks: &set_ab,
    };
    drop(settlement);
    settlement = deployment.start("settlement", settlement_port, &publish);
    // 2. Switch the gateway: it signs with B and still accepts A.
    let switched = KeyEnv {
        key: &key_b,
        kid: "rsv-b",
        jwks: &set_ab,
    };
    drop(gateway);
    gateway = deployment.start("gateway", gateway_port, &switched);
    let (status, order) = confirm(&http, &base, &alice, &first).await;
    assert_eq!(status, 201, "a hold signed before the switch: {order}");
    let third = reserve(&http, &base, &alice).await;
    assert_eq!(kid_of(&third), "rsv-b");
    let (status, order) = confirm(&http, &base, &alice, &third).await;
    assert_eq!(status, 201, "{order}");
    let forged = resigned(&second, &a, &stranger);
    let (status, problem) = confirm(&http, &base, &alice, &forged).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some("invalid_reservation_token")),
        "{problem}"
    );

    // A gateway switched to a key the set does not publish refuses to start, naming why.
    let unpublished = KeyEnv {
        key: &key_c,
        kid: "rsv-c",
        jwks: &set_ab,
    };
    let refused = deployment
        .command(&["gateway"], &unpublished)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "started: {stderr}");
    assert!(
        stderr.contains("reservations.public_jwks_file") && stderr.contains("rsv-c"),
        "{stderr}"
    );

    // 3. Retire A: both restart on B alone; A's last token is refused now.
    let retired = KeyEnv {
        key: &key_b,
        kid: "rsv-b",
        jwks: &set_b,
    };
    drop((settlement, gateway));
    let _settlement = deployment.start("settlement", settlement_port, &retired);
    let _gateway = deployment.start("gateway", gateway_port, &retired);
    let (status, problem) = confirm(&http, &base, &alice, &second).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some("invalid_reservation_token")),
        "{problem}"
    );
    let (status, stock) = body(
        http.get(format!("{base}/api/v1/stock/HOT"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &stock["sold"]), (200, &json!(2)), "{stock}");
    drop((_settlement, _gateway));
    delete_keys(&prefix).await;
}
