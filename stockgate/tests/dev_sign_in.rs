//! `POST /dev/token` as an attacker meets it: the real `stockgate all-in-one` binary, no
//! configuration file, configured only by `STOCKGATE_*` variables the way the container image
//! is. A production-shaped process (a Redis URL, a database URL, a non-loopback listener, the
//! image's own default) answers 404 problem+json and mints nothing; the fully embedded default
//! serves it; the explicit switch serves it anywhere, with a warning in the log and on the
//! banner. Needs `REDIS_URL` and `DATABASE_URL` for the Redis and database cases.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::body;

/// One `stockgate all-in-one` process, killed when dropped.
struct Process {
    child: Child,
    base: String,
    banner: String,
    data_dir: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

impl Process {
    /// Starts the binary with exactly `env` (plus a private data dir and free admin port) and
    /// waits for its banner.
    fn start(env: &[(&str, &str)]) -> Process {
        let data_dir = std::env::temp_dir().join(format!(
            "stockgate-devsignin-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let mut command = Command::new(env!("CARGO_BIN_EXE_stockgate"));
        command
            .arg("all-in-one")
            .env_clear()
            .env("STOCKGATE_DATA_DIR", &data_dir)
            .env("STOCKGATE_ADMIN_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the stockgate binary starts");
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = String::new();
        let mut base = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        // The banner ends with the `try:` line.
        while !banner.contains("  try: ") {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = received.recv_timeout(left) else {
                let _ = child.kill();
                let mut stderr = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
                panic!("all-in-one with {env:?} did not start:\n{banner}\n{stderr}");
            };
            if let Some(url) = line.strip_prefix("stockgate is running on ") {
                // A wildcard listener is reached through loopback.
                base = Some(url.replace("0.0.0.0", "127.0.0.1"));
            }
            banner.push_str(&line);
            banner.push('\n');
        }
        Process {
            child,
            base: base.expect("the banner names the address"),
            banner,
            data_dir,
        }
    }

    /// What the process logged to stderr so far (it is killed to end the stream).
    fn stop_and_read_log(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut log = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut log);
        log
    }

    async fn mint_ops_token(&self) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/dev/token", self.base))
            .json(&json!({"buyer": "mallory", "role": "ops"}))
            .send()
            .await
            .unwrap();
        body(response).await
    }
}

async fn assert_refused(env: &[(&str, &str)]) {
    let process = Process::start(env);
    let (status, problem) = process.mint_ops_token().await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("not_found")),
        "{env:?}: {problem}"
    );
    assert!(problem.get("token").is_none(), "{problem}");
    assert!(
        !process.banner.contains("dev sign-in"),
        "{}",
        process.banner
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_shaped_all_in_one_mints_no_token() {
    let loopback = ("STOCKGATE_LISTEN", "127.0.0.1:0");
    // Redis on its own database index: the process uses the default key prefix.
    let redis = format!("{}/15", testkit::redis_url().trim_end_matches('/'));
    assert_refused(&[loopback, ("STOCKGATE_REDIS_URL", &redis)]).await;
    let database = backend_adapters::sql::scratch_schema_url(&testkit::database_url(), "devsignin")
        .await
        .expect("a scratch schema on PostgreSQL at DATABASE_URL");
    assert_refused(&[loopback, ("STOCKGATE_DATABASE_URL", &database)]).await;
    assert_refused(&[("STOCKGATE_LISTEN", "0.0.0.0:0")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_images_default_mints_no_token() {
    // deploy/Dockerfile's `ENV` lines and `CMD ["all-in-one"]`, as `docker run` starts them;
    // its data dir is replaced by a private one and its listener by a free loopback port.
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/Dockerfile");
    let text = std::fs::read_to_string(dockerfile).unwrap();
    assert!(text.contains("CMD [\"all-in-one\"]"));
    let image_env = dockerfile_env(&text);
    assert!(
        image_env
            .iter()
            .any(|(name, _)| name == "STOCKGATE_DATA_DIR")
    );
    let mut env: Vec<(&str, &str)> = image_env
        .iter()
        .filter(|(name, _)| name != "STOCKGATE_DATA_DIR")
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    env.push(("STOCKGATE_LISTEN", "127.0.0.1:0"));
    assert_refused(&env).await;
}

/// The `NAME=value` pairs of a Dockerfile's `ENV` instructions (with `\` continuations).
fn dockerfile_env(text: &str) -> Vec<(String, String)> {
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|line| line.trim().strip_prefix("ENV "))
        .flat_map(|pairs| pairs.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_signs_in_and_says_so() {
    let process = Process::start(&[("STOCKGATE_LISTEN", "127.0.0.1:0")]);
    let (status, minted) = process.mint_ops_token().await;
    assert_eq!(
        (status, minted["roles"].clone()),
        (200, json!(["ops"])),
        "{minted}"
    );
    assert!(
        process
            .banner
            .contains("dev sign-in is on (the embedded default")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explicit_switch_signs_in_anywhere_with_a_loud_warning() {
    let process = Process::start(&[
        ("STOCKGATE_LISTEN", "0.0.0.0:0"),
        ("STOCKGATE_DEV_TOKEN", "1"),
    ]);
    let (status, minted) = process.mint_ops_token().await;
    assert_eq!(
        (status, minted["roles"].clone()),
        (200, json!(["ops"])),
        "{minted}"
    );
    let token = minted["token"].as_str().unwrap();
    // The token is a real ops token for this process.
    let report = reqwest::Client::new()
        .get(format!("{}/api/v1/admin/reconcile", process.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 200);
    let banner = process.banner.clone();
    assert!(
        banner.contains("WARNING: dev sign-in is on (switched on by web.dev_token"),
        "{banner}"
    );
    let log = process.stop_and_read_log();
    assert!(
        log.contains("WARN") && log.contains("dev sign-in is on"),
        "{log}"
    );
}
