//! Hot reload of the rate-limit rules: a broken file (on `POST /admin/reload` or on change)
//! is refused with its reason and a metric while the last good rules stay in force; a good
//! file replaces them without a restart; `stockgate ratelimits check` validates offline.

mod common;
mod support;

use std::time::Duration;

use clap::Parser;
use gateway::cli::{Cli, run};
use support::{Upstream, redis_url};

const STRICT: &str = "[[rule]]\nname = \"catalog\"\npath = \"/api/v1/products/{sku}\"\n\
                      key = [\"ip\", \"sku\"]\nrate = 1\nperiod_secs = 60\nburst = 2\n";

async fn statuses(edge: &support::Edge, sku: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            edge.get(&format!("/api/v1/products/{sku}"))
                .await
                .status()
                .as_u16(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rules_file_leaves_the_old_rules_in_force() {
    let upstream = Upstream::start();
    let path = std::env::temp_dir().join(format!("rules-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, STRICT).unwrap();
    let mut config = support::config(upstream.addr, Some(&redis_url()));
    config.ratelimit.rules_file = Some(path.clone());
    config.ratelimit.reload_interval_ms = 50;
    let edge = support::start(config, None).await;
    assert_eq!(statuses(&edge, "A", 3).await, [200, 200, 429]);

    // A typo: refused on POST /admin/reload with the field named; counted; old rules stay.
    std::fs::write(&path, STRICT.replace("burst = 2", "burts = 2")).unwrap();
    let reload = edge
        .http
        .post(format!("{}/admin/reload", edge.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 422);
    let problem: serde_json::Value = reload.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("burts"),
        "{problem}"
    );
    assert!(edge.metric("stockgate_config_reload_errors_total").await >= 1);
    assert_eq!(statuses(&edge, "B", 3).await, [200, 200, 429]);

    // An invalid value, picked up by the file watch: refused too, old rules still in force.
    let errors = edge.metric("stockgate_config_reload_errors_total").await;
    std::fs::write(&path, STRICT.replace("rate = 1", "rate = 0")).unwrap();
    let mut counted = false;
    for _ in 0..100 {
        if edge.metric("stockgate_config_reload_errors_total").await > errors {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(counted, "the watch refused the changed file");
    assert_eq!(statuses(&edge, "C", 3).await, [200, 200, 429]);

    // A good file replaces the rules: burst 4 now.
    std::fs::write(&path, STRICT.replace("burst = 2", "burst = 4")).unwrap();
    let reload = edge
        .http
        .post(format!("{}/admin/reload", edge.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200);
    let answer: serde_json::Value = reload.json().await.unwrap();
    assert_eq!(answer["rules"], 1);
    assert_eq!(statuses(&edge, "D", 5).await, [200, 200, 200, 200, 429]);
    let _ = std::fs::remove_file(path);
}

#[test]
fn ratelimits_check_validates_a_file_offline() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/ratelimits.toml");
    let cli = Cli::try_parse_from(["stockgate", "ratelimits", "check", shipped]).unwrap();
    run(cli).unwrap();

    let path = std::env::temp_dir().join(format!("rules-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(
        &path,
        STRICT.replace("key = [\"ip\", \"sku\"]", "key = [\"cookie\"]"),
    )
    .unwrap();
    let cli =
        Cli::try_parse_from(["stockgate", "ratelimits", "check", path.to_str().unwrap()]).unwrap();
    let message = format!("{:#}", run(cli).unwrap_err());
    assert!(message.contains("rule[0] field `key`"), "{message}");
    let _ = std::fs::remove_file(path);
}
