//! What the gateway serves to a browser: the storefront and ops console assets (content type,
//! `ETag`/304, `cache-control`, a strict content security policy; a plain 404 when not
//! served), `POST /dev/token` (on only where configured, validated, and its tokens accepted
//! by the gateway), and `GET /api/v1/admin/edge` (ops role only). The browser tests of the
//! pages themselves are in `web/tests` (scripts/browser-tests.sh).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use stockgate::all_in_one;
use testkit::{body, header};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_carry_type_tag_cache_policy_and_answer_304() {
    let gw = testkit::start_gateway_with(|c| c.web.storefront = true).await;
    let page = gw.http.get(gw.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    let policy = header(&page, "content-security-policy");
    assert!(policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"));
    assert!(!header(&page, "x-request-id").is_empty());
    let etag = header(&page, "etag");
    assert!(etag.starts_with('"'), "{etag}");
    assert!(page.text().await.unwrap().contains("/assets/storefront.js"));

    let again = gw
        .http
        .get(gw.url("/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&again, "etag"), etag);
    assert!(again.bytes().await.unwrap().is_empty());

    let script = gw.http.get(gw.url("/assets/api.js")).send().await.unwrap();
    assert_eq!(
        (script.status(), header(&script, "content-type")),
        (StatusCode::OK, "text/javascript; charset=utf-8".to_owned())
    );
    let ops = gw.http.get(gw.url("/ops")).send().await.unwrap();
    assert!(ops.text().await.unwrap().contains("/assets/ops.js"));

    let head = gw
        .http
        .head(gw.url("/assets/app.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.bytes().await.unwrap().is_empty());
    let (status, problem) =
        body(gw.http.get(gw.url("/assets/nope.js")).send().await.unwrap()).await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")));
    let (status, problem) = body(gw.http.post(gw.url("/")).send().await.unwrap()).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_dev_token_are_plain_404s_when_off() {
    let gw = testkit::start_gateway().await;
    for path in ["/", "/ops", "/assets/api.js"] {
        let (status, problem) = body(gw.http.get(gw.url(path)).send().await.unwrap()).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
    let minted = gw
        .http
        .post(gw.url("/dev/token"))
        .json(&json!({"buyer": "mallory", "role": "ops"}))
        .send()
        .await
        .unwrap();
    let (status, problem) = body(minted).await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")));
    let (status, _) = body(gw.http.get(gw.url("/dev/token")).send().await.unwrap()).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_stats_need_the_ops_role_and_show_rules_and_counters() {
    let rules = std::env::temp_dir().join(format!("web-rules-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"reserve-per-buyer\"\nmethod = \"POST\"\n\
         path = \"/api/v1/reservations\"\nkey = [\"sub\"]\nrate = 1\nperiod_secs = 60\nburst = 1\n",
    )
    .unwrap();
    let rules_path = rules.clone();
    let gw = testkit::start_gateway_with(move |c| c.ratelimit.rules_file = Some(rules_path)).await;
    let stats = gw.url("/api/v1/admin/edge");

    let (status, _) = body(gw.http.get(&stats).send().await.unwrap()).await;
    assert_eq!(status, 401);
    let buyer = gw.idp.token("bob");
    let (status, problem) = body(
        gw.http
            .get(&stats)
            .bearer_auth(&buyer)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("forbidden")));

    // One reservation, then one refused by the rule: both show in the counters.
    assert_eq!(gw.reserve(&buyer, "k1", "HOT", 1).await.status(), 201);
    assert_eq!(gw.reserve(&buyer, "k2", "HOT", 1).await.status(), 429);
    let ops = gw.idp.ops_token("olga");
    let response = gw.http.get(&stats).bearer_auth(&ops).send().await.unwrap();
    assert_eq!(header(&response, "cache-control"), "no-store");
    let (status, report) = body(response).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["counters"]["reservations"]["created"], 1);
    assert_eq!(report["counters"]["responses_429"], 1);
    assert!(report["counters"]["requests"].as_u64().unwrap() >= 2);
    assert_eq!(report["redis_degraded"], false);
    let rule = &report["ratelimit"]["rules"][0];
    assert_eq!(rule["name"], "reserve-per-buyer");
    assert_eq!(rule["method"], "POST");
    assert_eq!(rule["path"], "/api/v1/reservations");
    assert_eq!(rule["key"], json!(["sub"]));
    assert_eq!(rule["decisions"]["allowed"], 1);
    assert_eq!(rule["decisions"]["limited"], 1);
    let load = &report["ratelimit"]["last_load"];
    assert_eq!(
        (load["ok"].as_bool(), load["rules"].as_u64()),
        (Some(true), Some(1))
    );

    // A broken file is refused on reload; the console sees why, and the old rule stays.
    std::fs::write(&rules, "[[rule]]\nname = \"\"\n").unwrap();
    let reload = gw
        .http
        .post(format!("{}/admin/reload", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 422);
    let (_, report) = body(gw.http.get(&stats).bearer_auth(&ops).send().await.unwrap()).await;
    let load = &report["ratelimit"]["last_load"];
    assert_eq!(
        (load["ok"].as_bool(), load["rules"].as_u64()),
        (Some(false), Some(1))
    );
    assert!(
        load["error"].as_str().unwrap().contains("rules file"),
        "{load}"
    );

    let (status, _) = body(gw.http.post(&stats).bearer_auth(&ops).send().await.unwrap()).await;
    assert_eq!(status, 405);
    let _ = std::fs::remove_file(rules);
}

/// The embedded setup with the dev sign-in on: all-in-one on the in-memory store and SQLite.
async fn all_in_one_with_dev_tokens() -> (all_in_one::AllInOne, String, std::path::PathBuf) {
    let mut config = testkit::embedded_config();
    // The dev identity, not the test one: dev tokens are signed with its key.
    config.gateway.auth = gateway::config::Config::default().auth;
    config.gateway.limits.header_read_timeout_ms = 10_000;
    config.gateway.web.dev_token = Some(true);
    config.validate().unwrap();
    let data_dir = config.gateway.data_dir.clone();
    let all = all_in_one::start(config, None, true).await.unwrap();
    let base = format!("http://{}", all.public_addr());
    (all, base, data_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_tokens_sign_in_buyers_and_ops_and_refuse_bad_input() {
    let (all, base, data_dir) = all_in_one_with_dev_tokens().await;
    let http = reqwest::Client::new();
    let mint = |body: Value| http.post(format!("{base}/dev/token")).json(&body).send();

    let (status, alice) = body(mint(json!({"buyer": "alice"})).await.unwrap()).await;
    assert_eq!(status, 200, "{alice}");
    assert_eq!(
        (alice["sub"].as_str(), alice["roles"].clone()),
        (Some("alice"), json!([]))
    );
    assert!(alice["expires_at"].as_str().unwrap().ends_with('Z'));
    let alice = alice["token"].as_str().unwrap().to_owned();
    let (status, _) = body(
        http.get(format!("{base}/api/v1/orders"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let edge = format!("{base}/api/v1/admin/edge");
    let (status, _) = body(http.get(&edge).bearer_auth(&alice).send().await.unwrap()).await;
    assert_eq!(status, 403);

    let (status, olga) = body(mint(json!({"buyer": "olga", "role": "ops"})).await.unwrap()).await;
    assert_eq!((status, olga["roles"].clone()), (200, json!(["ops"])));
    let olga = olga["token"].as_str().unwrap().to_owned();
    let (status, report) = body(http.get(&edge).bearer_auth(&olga).send().await.unwrap()).await;
    assert_eq!(status, 200, "{report}");
    // The console's other source: the settlement's drift report, with the outbox relay lag.
    let reconcile = http
        .get(format!("{base}/api/v1/admin/reconcile"))
        .bearer_auth(&olga)
        .send()
        .await
        .unwrap();
    let (status, report) = body(reconcile).await;
    assert_eq!(status, 200, "{report}");
    assert!(report["skus"].is_array(), "{report}");
    assert!(report["outbox"]["pending"].is_i64(), "{report}");
    assert!(report["outbox"]["lag_seconds"].is_f64(), "{report}");

    for (bad, code) in [
        (json!({"buyer": ""}), "invalid_buyer"),
        (json!({"buyer": "a\u{7}b"}), "invalid_buyer"),
        (json!({"buyer": "x".repeat(129)}), "invalid_buyer"),
        (json!({"buyer": "eve", "role": "admin"}), "invalid_request"),
        (json!({"buyer": "eve", "roles": ["ops"]}), "invalid_request"),
        (json!({"name": "eve"}), "invalid_request"),
        // Serde would fill the struct from an array of its fields: objects only.
        (json!(["eve", "ops"]), "invalid_request"),
    ] {
        let (status, problem) = body(mint(bad.clone()).await.unwrap()).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some(code)),
            "{bad}"
        );
    }
    let not_json = http
        .post(format!("{base}/dev/token"))
        .body("buyer=eve")
        .send()
        .await
        .unwrap();
    assert_eq!(body(not_json).await.0, 400);
    let (status, _) = body(http.get(format!("{base}/dev/token")).send().await.unwrap()).await;
    assert_eq!(status, 405);
    // all-in-one serves the storefront.
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);

    tokio::time::timeout(Duration::from_secs(30), all.shutdown())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(data_dir);
}
