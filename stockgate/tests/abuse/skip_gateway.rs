//! Skipping the gateway (issue 14, items 1 and 6), against `stockgate gateway` and
//! `stockgate settlement` as separate processes sharing one config and `data_dir`, as a
//! deployment runs them: the gateway generates its assertion key pair there, settlement reads
//! the public half. A caller on the settlement port is refused whatever identity headers or
//! tokens it brings; through the gateway everything works, for a buyer whose `sub` is not
//! ASCII too.

use std::time::Duration;

use reliability::world::{Stockgate, StockgateSettings};
use serde_json::{Value, json};

use testkit::body;

/// The two processes and a client of each.
struct Deployment {
    stockgate: Stockgate,
    dir: std::path::PathBuf,
    http: reqwest::Client,
}

impl Deployment {
    async fn start() -> Deployment {
        let dir =
            std::env::temp_dir().join(format!("stockgate-skip-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let database_url =
            backend_adapters::sql::scratch_schema_url(&testkit::database_url(), "skipgw")
                .await
                .expect("a scratch schema on PostgreSQL at DATABASE_URL");
        let stockgate = Stockgate::start(
            std::path::Path::new(env!("CARGO_BIN_EXE_stockgate")),
            &dir,
            &testkit::redis_url(),
            &database_url,
            &StockgateSettings::default(),
            None,
        )
        .expect("stockgate gateway and settlement start");
        let deployment = Deployment {
            stockgate,
            dir,
            http: reqwest::Client::new(),
        };
        deployment.wait_until_the_gateway_sees_settlement().await;
        deployment
    }

    fn gateway(&self, path: &str) -> String {
        format!("{}{path}", self.stockgate.base_url())
    }

    fn settlement(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.stockgate.settlement_port)
    }

    /// `stockgate token --sub <sub>` with the deployment's config (the dev identity key the
    /// gateway trusts).
    fn token(&self, sub: &str, roles: &[&str]) -> String {
        let mut args = vec!["token", "--sub", sub];
        for role in roles {
            args.extend(["--role", role]);
        }
        let out = self.stockgate.command(&args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// The gateway's health check of settlement passes once a second.
    async fn wait_until_the_gateway_sees_settlement(&self) {
        for _ in 0..100 {
            let products = self.http.get(self.gateway("/api/v1/products")).send().await;
            if products.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the gateway never reached settlement");
    }

    async fn available(&self, sku: &str) -> i64 {
        let url = self.gateway(&format!("/api/v1/stock/{sku}"));
        let (status, stock) = body(self.http.get(url).send().await.unwrap()).await;
        assert_eq!(status, 200, "{stock}");
        stock["available"].as_i64().unwrap()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A direct call's answer must be 401 with `code`.
async fn refused(response: reqwest::Response, code: &str, case: &str) {
    let (status, problem) = body(response).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some(code)),
        "{case}: {problem}"
    );
    println!("  skip-gateway: {case} -> 401 {code}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settlement_port_serves_only_the_gateway() {
    let d = Deployment::start().await;
    let http = &d.http;
    let ops = d.token("olga", &["ops"]);
    let product = json!({"name": "Sneaker", "price_cents": super::world::PRICE_CENTS,
                         "total_stock": 10, "per_buyer_limit": 2, "sale_state": "on_sale"});
    let (status, created) =
        testkit::put_product(http, &d.stockgate.base_url(), &ops, "SKIP", &product).await;
    assert_eq!(status, 201, "through the gateway: {created}");

    // José reserves, confirms and lists his orders through the gateway.
    let jose = d.token("José", &[]);
    let base = d.stockgate.base_url();
    let (status, hold) = testkit::post_reservation(http, &base, &jose, "k-jose", "SKIP", 1).await;
    assert_eq!(status, 201, "{hold}");
    let (status, order) = testkit::post_order(
        http,
        &base,
        &jose,
        "c-jose",
        hold["token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["order_id"].as_str().unwrap().to_owned();
    let listed = http
        .get(d.gateway("/api/v1/orders"))
        .bearer_auth(&jose)
        .send()
        .await
        .unwrap();
    let (status, orders) = body(listed).await;
    assert_eq!(status, 200, "{orders}");
    assert_eq!(orders.as_array().map(Vec::len), Some(1), "{orders}");
    assert_eq!(orders[0]["order_id"], order_id.as_str());
    let one = http
        .get(d.gateway(&format!("/api/v1/orders/{order_id}")))
        .bearer_auth(&jose)
        // A client's own assertion header is dropped at the edge, never passed on.
        .header("x-stockgate-assertion", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);

    // Straight to the settlement port, with whatever a caller could bring.
    let price = json!({"name": "Sneaker", "price_cents": 1, "total_stock": 10,
                       "per_buyer_limit": 2, "sale_state": "on_sale"});
    let cases: Vec<(&str, reqwest::RequestBuilder, &str)> = vec![
        (
            "forged ops role sets a price",
            http.put(d.settlement("/api/v1/admin/products/SKIP"))
                .header("x-user-sub", "mallory")
                .header("x-user-roles", "ops")
                .header("if-match", "*")
                .json(&price),
            "service_auth_missing",
        ),
        (
            "forged buyer lists José's orders",
            http.get(d.settlement("/api/v1/orders"))
                .header("x-user-sub", "José"),
            "service_auth_missing",
        ),
        (
            "an ops JWT as the assertion",
            http.get(d.settlement("/api/v1/admin/reconcile"))
                .header("x-stockgate-assertion", &ops)
                .bearer_auth(&ops),
            "service_auth_invalid",
        ),
        (
            "the catalog",
            http.get(d.settlement("/api/v1/products")),
            "service_auth_missing",
        ),
    ];
    for (case, request, code) in cases {
        refused(request.send().await.unwrap(), code, case).await;
    }
    // The probes are on settlement's admin listener, unsigned (the kubelet and the gateway's
    // health check use them); the public port answers them like any unsigned call.
    let admin = format!("http://127.0.0.1:{}", d.stockgate.settlement_admin_port);
    let health = http.get(format!("{admin}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    refused(
        http.get(d.settlement("/healthz")).send().await.unwrap(),
        "service_auth_missing",
        "a probe on the public port",
    )
    .await;

    // A hold released through the gateway, its token posted straight to settlement.
    let bob = d.token("bob", &[]);
    let before = d.available("SKIP").await;
    let (status, hold) = testkit::post_reservation(http, &base, &bob, "k-bob", "SKIP", 1).await;
    assert_eq!(status, 201, "{hold}");
    let id = hold["reservation_id"].as_str().unwrap();
    let released = http
        .delete(d.gateway(&format!("/api/v1/reservations/{id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 204);
    assert_eq!(d.available("SKIP").await, before);
    let token = hold["token"].as_str().unwrap();
    let posted = http
        .post(d.settlement("/internal/settlements"))
        .header("x-user-sub", "bob")
        .json(&json!({"reservation_token": token}))
        .send()
        .await
        .unwrap();
    refused(posted, "service_auth_missing", "a released hold's token").await;
    assert_eq!(d.available("SKIP").await, before, "the unit stays on sale");
    // Through the gateway the released hold is refused as well, by the store.
    let (status, problem) = testkit::post_order(http, &base, &bob, "c-bob", token).await;
    assert_eq!(status, 410, "{problem}");

    // Nothing the direct calls sent changed anything: the price, the orders.
    let (status, shown) = body(
        http.get(d.gateway("/api/v1/products/SKIP"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(shown["price_cents"], super::world::PRICE_CENTS);
    let listed = http
        .get(d.gateway("/api/v1/orders"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    let (status, orders): (u16, Value) = body(listed).await;
    assert_eq!((status, orders), (200, json!([])));
}
