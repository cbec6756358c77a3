//! Requests as the storefront sends them, and answers read with the contract's shape
//! checked (`x-request-id` on every response, problem+json fields on every error).

use serde_json::{Value, json};

/// `PUT /api/v1/admin/products/{sku}` with an ops token, creating a product: status and body.
pub async fn put_product(
    http: &reqwest::Client,
    base: &str,
    ops_token: &str,
    sku: &str,
    product: &Value,
) -> (u16, Value) {
    put_product_if_match(http, base, ops_token, sku, product, None).await
}

/// `PUT /api/v1/admin/products/{sku}` with an ops token and `If-Match` (which changing an
/// existing product needs): status and body.
pub async fn put_product_if_match(
    http: &reqwest::Client,
    base: &str,
    ops_token: &str,
    sku: &str,
    product: &Value,
    if_match: Option<&str>,
) -> (u16, Value) {
    let mut request = http
        .put(format!("{base}/api/v1/admin/products/{sku}"))
        .bearer_auth(ops_token)
        .json(product);
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    body(request.send().await.unwrap()).await
}

/// `POST /api/v1/reservations` as the storefront sends it: status and body.
pub async fn post_reservation(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
    sku: &str,
    qty: u32,
) -> (u16, Value) {
    let response = http
        .post(format!("{base}/api/v1/reservations"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({"sku": sku, "qty": qty}))
        .send()
        .await
        .unwrap();
    body(response).await
}

/// `POST /api/v1/orders` (the confirm) as the storefront sends it: status and body.
pub async fn post_order(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
    reservation_token: &str,
) -> (u16, Value) {
    let response = http
        .post(format!("{base}/api/v1/orders"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({"reservation_token": reservation_token}))
        .send()
        .await
        .unwrap();
    body(response).await
}

/// A fresh idempotency key: a request under it replays no earlier one.
pub fn fresh_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Reads a JSON body, asserting `x-request-id` and, when the status is an error, the
/// problem+json shape.
pub async fn body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert!(
        response.headers().contains_key("x-request-id"),
        "every response has x-request-id"
    );
    let text = response.text().await.unwrap();
    let value: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    if status >= 400 {
        for field in ["type", "title", "status", "detail", "code", "request_id"] {
            assert!(
                value.get(field).is_some(),
                "problem field {field} missing in {text}"
            );
        }
    }
    (status, value)
}

/// The value of header `name` (empty when absent or not text).
pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
