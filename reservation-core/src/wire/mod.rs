//! The wire contract between the gateway and the settlement service: what both sides must
//! spell the same way, taken from here by both. Header names ([`headers`]), the paths of the
//! internal API and of the public routes both route ([`paths`]), the problem codes the gateway
//! acts on when settlement answers ([`codes`]), the problem+json body every error of either
//! side is ([`Problem`]), the RFC 3339 timestamps of their JSON bodies ([`rfc3339_ms`]) and
//! the whole numbers of request bodies ([`whole_number`]).
//! See docs/internal-api.md.

mod number;
mod problem;
mod time;

pub use number::{optional_whole_number, whole_number};
pub use problem::{DEFAULT_RETRY_AFTER_SECS, PROBLEM_CONTENT_TYPE, Problem, problem_type, title};
pub use time::rfc3339_ms;

/// The Redis stream settlement's outbox relay publishes order and product events to when
/// `[settlement.outbox] stream` is empty and the key prefix is the default `stockgate`
/// (`<redis_key_prefix>:events`); the gateway's cache invalidation follows it.
pub const DEFAULT_EVENTS_STREAM: &str = "stockgate:events";

/// Header names (lowercase, as HTTP/2 sends them) the gateway sets or strips and settlement
/// reads or echoes. Standard headers both sides handle through the `http` crate's typed
/// names (`If-Match`, `If-None-Match`, `ETag`, `Retry-After`) are spelled here too for the
/// places that take a plain string.
pub mod headers {
    /// The request id: kept when a client sends an acceptable one, else made; passed to
    /// settlement, echoed on every response and written into every problem body. Not signed.
    pub const REQUEST_ID: &str = "x-request-id";
    /// The gateway's service assertion on every request to settlement
    /// ([`crate::assertion`]); the gateway strips any a client sent.
    pub const ASSERTION: &str = "x-stockgate-assertion";
    /// Required on `POST /api/v1/reservations` and `POST /api/v1/orders`.
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// Identity headers: the gateway strips any a client sent, and settlement believes none
    /// (the identity travels in the assertion).
    pub const USER_SUB: &str = "x-user-sub";
    pub const USER_ROLES: &str = "x-user-roles";
    /// A resource's version (`"<version>"`, strong) on orders and products.
    pub const ETAG: &str = "etag";
    /// The version a change of an order or product is made against (bound in the assertion).
    pub const IF_MATCH: &str = "if-match";
    pub const IF_NONE_MATCH: &str = "if-none-match";
    /// Seconds to wait, on every 429 and 503.
    pub const RETRY_AFTER: &str = "retry-after";
}

/// Paths of the internal API and of the public routes both the gateway and settlement route.
/// A `{name}` segment is a path parameter, as settlement's router spells it; the gateway
/// matches such routes by prefix.
pub mod paths {
    /// `POST`: settle one confirmed reservation into an order.
    pub const SETTLEMENTS: &str = "/internal/settlements";
    /// `POST`: the fate of a reservation whose hold the store no longer has.
    pub const SETTLEMENT_FATE: &str = "/internal/settlements/fate";
    /// Every internal route starts so (their assertions are exempt from the single use).
    pub const INTERNAL_PREFIX: &str = "/internal/";

    /// Liveness on settlement's admin listener: the gateway's upstream health check.
    pub const HEALTHZ: &str = "/healthz";
    /// Readiness on settlement's admin listener: the gateway's dependency monitor.
    pub const READYZ: &str = "/readyz";
    /// Prometheus text on either service's admin listener.
    pub const METRICS: &str = "/metrics";

    /// Every public route starts so.
    pub const API_PREFIX: &str = "/api/v1/";
    /// The catalog list (cached by the gateway).
    pub const PRODUCTS: &str = "/api/v1/products";
    /// One product (cached by the gateway).
    pub const PRODUCT: &str = "/api/v1/products/{sku}";
    pub const ORDERS: &str = "/api/v1/orders";
    pub const ORDER: &str = "/api/v1/orders/{id}";
    pub const ORDER_CANCEL: &str = "/api/v1/orders/{id}/cancel";
    /// What the product changes start with: the gateway drops its cached copies of the
    /// product once one succeeded.
    pub const ADMIN_PRODUCTS_PREFIX: &str = "/api/v1/admin/products/";
    /// `PUT`: create or change a product.
    pub const ADMIN_PRODUCT: &str = "/api/v1/admin/products/{sku}";
    /// The last segment of [`ADMIN_PRODUCT_RESTOCK`].
    pub const RESTOCK_SEGMENT: &str = "restock";
    /// `POST`: add units to a product's total stock.
    pub const ADMIN_PRODUCT_RESTOCK: &str = "/api/v1/admin/products/{sku}/restock";
    pub const ADMIN_ORDER_STATUS: &str = "/api/v1/admin/orders/{id}/status";
    pub const ADMIN_RECONCILE: &str = "/api/v1/admin/reconcile";
}

/// Problem codes of settlement's answers that the gateway acts on, besides the status
/// (docs/internal-api.md has the table of what it does with each).
pub mod codes {
    /// 409 from settle: SQL has no stock left for the reservation (the store drifted).
    pub const OVERSELL_PREVENTED: &str = "oversell_prevented";
    /// 410 from settle or fate: the reservation id is claimed `released` in SQL.
    pub const RESERVATION_RELEASED: &str = "reservation_released";
    /// 410: the reservation token (and so its hold) expired; no order exists for it.
    pub const RESERVATION_EXPIRED: &str = "reservation_expired";
    /// 422 from settle: the buyer's live orders for the SKU would pass its per-buyer limit.
    pub const PURCHASE_LIMIT: &str = "purchase_limit";
    /// 422 from settle: price times quantity does not fit in an order.
    pub const TOTAL_OUT_OF_RANGE: &str = "total_out_of_range";
    /// 404 from settle: no such product in SQL.
    pub const UNKNOWN_SKU: &str = "unknown_sku";
    /// 403: the token or the order belongs to another buyer.
    pub const NOT_OWNER: &str = "not_owner";
    /// 401: the reservation token's signature, key or shape was refused.
    pub const INVALID_RESERVATION_TOKEN: &str = "invalid_reservation_token";

    /// What every refusal of the gateway's service assertion starts with (401): settlement
    /// refused before any handler ran, so nothing was committed.
    pub const SERVICE_AUTH_PREFIX: &str = "service_auth_";
    /// No assertion on the request.
    pub const SERVICE_AUTH_MISSING: &str = "service_auth_missing";
    /// A bad one: signature, key, `alg`, `aud`, `iss`, shape, lifetime, no `jti`.
    pub const SERVICE_AUTH_INVALID: &str = "service_auth_invalid";
    pub const SERVICE_AUTH_EXPIRED: &str = "service_auth_expired";
    /// Signed for another method, path, query, `If-Match` or body.
    pub const SERVICE_AUTH_MISMATCH: &str = "service_auth_mismatch";
    /// The assertion of a write, presented a second time.
    pub const SERVICE_AUTH_REPLAYED: &str = "service_auth_replayed";
}

#[cfg(test)]
mod tests {
    use super::{codes, paths};

    #[test]
    fn templates_start_with_the_prefixes_the_gateway_matches() {
        for path in [
            paths::PRODUCTS,
            paths::PRODUCT,
            paths::ORDERS,
            paths::ORDER,
            paths::ORDER_CANCEL,
            paths::ADMIN_PRODUCT,
            paths::ADMIN_PRODUCT_RESTOCK,
            paths::ADMIN_ORDER_STATUS,
            paths::ADMIN_RECONCILE,
        ] {
            assert!(path.starts_with(paths::API_PREFIX), "{path}");
        }
        assert!(paths::PRODUCT.starts_with(&format!("{}/", paths::PRODUCTS)));
        assert!(paths::ADMIN_PRODUCT.starts_with(paths::ADMIN_PRODUCTS_PREFIX));
        assert_eq!(
            paths::ADMIN_PRODUCT_RESTOCK,
            format!("{}/{}", paths::ADMIN_PRODUCT, paths::RESTOCK_SEGMENT)
        );
        for path in [paths::SETTLEMENTS, paths::SETTLEMENT_FATE] {
            assert!(path.starts_with(paths::INTERNAL_PREFIX), "{path}");
        }
    }

    #[test]
    fn every_service_auth_code_has_the_prefix() {
        for code in [
            codes::SERVICE_AUTH_MISSING,
            codes::SERVICE_AUTH_INVALID,
            codes::SERVICE_AUTH_EXPIRED,
            codes::SERVICE_AUTH_MISMATCH,
            codes::SERVICE_AUTH_REPLAYED,
        ] {
            assert!(code.starts_with(codes::SERVICE_AUTH_PREFIX), "{code}");
        }
    }
}
