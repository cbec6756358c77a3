//! The route table of DESIGN.md §2: which requests the edge answers itself, which it proxies
//! to the settlement service, and who may call each (anyone, a buyer, ops). Classification is
//! a pure function of method and path so it is tested without a server.

use http::Method;
use reservation_core::Sku;
use reservation_core::wire::paths;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Anyone,
    Buyer,
    /// A buyer token with the `ops` role.
    Ops,
}

/// Every route the edge knows; also the `route` label of the request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    ReservationCreate,
    /// `GET /api/v1/reservations?sku=`: the caller's open holds of one SKU.
    ReservationList,
    ReservationGet,
    ReservationRelease,
    Stock,
    OrderConfirm,
    /// Proxied: catalog reads.
    Products,
    /// Proxied: the buyer's own orders (list, get, cancel) and other buyer routes.
    Orders,
    /// Proxied: `/api/v1/admin/*`.
    Admin,
    /// `GET /api/v1/admin/edge`: the gateway's own counters and rate-limit rules (ops).
    EdgeStats,
    /// The storefront and ops console pages and their assets (when served).
    Web,
    /// `POST /dev/token`: a dev sign-in token (when enabled).
    DevToken,
    /// A known path with a method it does not take.
    MethodNotAllowed,
    NotFound,
}

impl Route {
    pub const ALL: [Route; 16] = [
        Route::Healthz,
        Route::Readyz,
        Route::ReservationCreate,
        Route::ReservationList,
        Route::ReservationGet,
        Route::ReservationRelease,
        Route::Stock,
        Route::OrderConfirm,
        Route::Products,
        Route::Orders,
        Route::Admin,
        Route::EdgeStats,
        Route::Web,
        Route::DevToken,
        Route::MethodNotAllowed,
        Route::NotFound,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::ReservationCreate => "reservations_create",
            Route::ReservationList => "reservations_list",
            Route::ReservationGet => "reservations_get",
            Route::ReservationRelease => "reservations_release",
            Route::Stock => "stock",
            Route::OrderConfirm => "orders_confirm",
            Route::Products => "products",
            Route::Orders => "orders",
            Route::Admin => "admin",
            Route::EdgeStats => "edge_stats",
            Route::Web => "web",
            Route::DevToken => "dev_token",
            Route::MethodNotAllowed => "method_not_allowed",
            Route::NotFound => "not_found",
        }
    }

    /// Position in [`Route::ALL`] (the metrics arrays are indexed by it): the declaration
    /// order, which `ALL` follows (a unit test checks it).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn access(self) -> Access {
        match self {
            Route::Healthz
            | Route::Readyz
            | Route::Stock
            | Route::Products
            | Route::Web
            | Route::DevToken
            | Route::MethodNotAllowed
            | Route::NotFound => Access::Anyone,
            Route::ReservationCreate
            | Route::ReservationList
            | Route::ReservationGet
            | Route::ReservationRelease
            | Route::OrderConfirm
            | Route::Orders => Access::Buyer,
            Route::Admin | Route::EdgeStats => Access::Ops,
        }
    }

    /// Whether the request goes to the settlement upstream (else the edge answers).
    pub fn is_proxied(self) -> bool {
        matches!(self, Route::Products | Route::Orders | Route::Admin)
    }
}

/// A classified request: the route and the path parameter it carries, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub route: Route,
    /// `{id}` of a reservation or `{sku}` of the stock route.
    pub param: Option<String>,
    /// For [`Route::MethodNotAllowed`]: the methods the path takes, the `Allow` header a 405
    /// must carry (RFC 9110 §15.5.6).
    pub allow: Option<&'static str>,
}

fn matched(route: Route, param: Option<&str>) -> Matched {
    Matched {
        route,
        param: param.map(str::to_owned),
        allow: None,
    }
}

/// A known path asked with a method it does not take; `allow` lists those it does.
fn not_allowed(allow: &'static str) -> Matched {
    Matched {
        route: Route::MethodNotAllowed,
        param: None,
        allow: Some(allow),
    }
}

/// The `Allow` value of the paths that take GET (and so HEAD) only.
const GET_ONLY: &str = "GET, HEAD";

/// Maps a method and path (without query) to its route.
pub fn classify(method: &Method, path: &str) -> Matched {
    let get = method == Method::GET || method == Method::HEAD;
    match path {
        paths::HEALTHZ if get => return matched(Route::Healthz, None),
        paths::READYZ if get => return matched(Route::Readyz, None),
        paths::HEALTHZ | paths::READYZ => return not_allowed(GET_ONLY),
        // Any method: the handler answers 404 while the feature is off, else 405 for a wrong
        // method, so a disabled endpoint looks the same whatever is sent to it.
        "/dev/token" => return matched(Route::DevToken, None),
        _ if crate::web::is_page_path(path) => return matched(Route::Web, None),
        _ => {}
    }
    let Some(rest) = path.strip_prefix(paths::API_PREFIX) else {
        return matched(Route::NotFound, None);
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["reservations"] if method == Method::POST => matched(Route::ReservationCreate, None),
        // The SKU comes in the query string (see `reservations::list_query`).
        ["reservations"] if get => matched(Route::ReservationList, None),
        ["reservations"] => not_allowed("GET, HEAD, POST"),
        ["reservations", id] if !id.is_empty() => match *method {
            Method::GET => matched(Route::ReservationGet, Some(id)),
            Method::DELETE => matched(Route::ReservationRelease, Some(id)),
            _ => not_allowed("GET, DELETE"),
        },
        ["stock", sku] if !sku.is_empty() => {
            if get {
                matched(Route::Stock, Some(sku))
            } else {
                not_allowed(GET_ONLY)
            }
        }
        ["orders"] if method == Method::POST => matched(Route::OrderConfirm, None),
        // The list is settlement's, the confirm the gateway's: neither alone knows both.
        ["orders"] if !get => not_allowed("GET, HEAD, POST"),
        ["products"] | ["products", _] => {
            if get {
                matched(Route::Products, None)
            } else {
                not_allowed(GET_ONLY)
            }
        }
        // Answered by the gateway itself, so classified before the proxied admin routes.
        ["admin", "edge"] if get => matched(Route::EdgeStats, None),
        ["admin", "edge"] => not_allowed(GET_ONLY),
        ["admin", ..] => matched(Route::Admin, None),
        // Everything else under /api/v1 is the settlement's: orders list/get/cancel and any
        // buyer route it adds. It needs a buyer; settlement answers 404 for unknown paths.
        _ => matched(Route::Orders, None),
    }
}

/// The SKU a product edit changes: `PUT /api/v1/admin/products/{sku}` and
/// `POST /api/v1/admin/products/{sku}/restock`. The gateway that proxies one drops its cached
/// copies of the product once the upstream answered 2xx (other replicas learn it from the
/// `product.updated` event).
/// The SKU is the canonical one settlement acts on ([`path_sku`]), so `H%4FT` drops `HOT`.
pub fn product_change(method: &Method, path: &str) -> Option<Sku> {
    let rest = path.strip_prefix(paths::ADMIN_PRODUCTS_PREFIX)?;
    let sku = match rest.split_once('/') {
        None if method == Method::PUT => rest,
        Some((sku, paths::RESTOCK_SEGMENT)) if method == Method::POST => sku,
        _ => return None,
    };
    path_sku(sku)
}

/// The SKU a path segment names, exactly as settlement reads it: percent-decoded (its router
/// decodes path parameters) and valid by [`Sku::parse`]. Case is kept: SKUs are
/// case-sensitive (SQL compares them byte for byte), so `hot` is another, unknown SKU.
/// `None`: not a valid SKU in any encoding.
pub fn path_sku(segment: &str) -> Option<Sku> {
    Sku::parse(&percent_decode(segment)?).ok()
}

/// Strict percent-decoding: every `%` must start two hex digits, and the result must be
/// UTF-8. (`+` stays `+`: in a path it is not a space; no SKU has either.)
pub(crate) fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether a path could name a different resource to the upstream (or to anything that
/// normalizes paths) than to this route table: dot segments (`/api/v1/../admin`), empty
/// segments (`//`), backslashes, and percent-encoded `/`, `\`, `.` or NUL. Such a request is
/// refused before routing, so nothing is proxied on a guess.
pub fn is_ambiguous_path(path: &str) -> bool {
    // Runs on every request: no allocation, one pass per check.
    let encoded_separator = path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && [b"2f", b"5c", b"2e", b"00"]
                .iter()
                .any(|e| w[1..].eq_ignore_ascii_case(*e))
    });
    encoded_separator
        || path.contains('\\')
        || path.contains("//")
        || path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

/// Methods whose requests may be retried on another connection (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_routes_and_params() {
        let m = classify(&Method::POST, "/api/v1/reservations");
        assert_eq!(m.route, Route::ReservationCreate);
        let m = classify(&Method::DELETE, "/api/v1/reservations/rsv_1");
        assert_eq!(
            (m.route, m.param.as_deref()),
            (Route::ReservationRelease, Some("rsv_1"))
        );
        let m = classify(&Method::GET, "/api/v1/stock/HOT");
        assert_eq!((m.route, m.param.as_deref()), (Route::Stock, Some("HOT")));
        assert_eq!(
            classify(&Method::POST, "/api/v1/orders").route,
            Route::OrderConfirm
        );
        let put = classify(&Method::PUT, "/api/v1/reservations");
        assert_eq!(
            (put.route, put.allow),
            (Route::MethodNotAllowed, Some("GET, HEAD, POST"))
        );
        let options = classify(&Method::OPTIONS, "/api/v1/orders");
        assert_eq!(options.allow, Some("GET, HEAD, POST"));
        let patch = classify(&Method::PATCH, "/api/v1/reservations/rsv_1");
        assert_eq!(patch.allow, Some("GET, DELETE"));
        for path in [
            "/healthz",
            "/readyz",
            "/api/v1/stock/HOT",
            "/api/v1/products",
        ] {
            let post = classify(&Method::POST, path);
            assert_eq!(
                (post.route, post.allow),
                (Route::MethodNotAllowed, Some("GET, HEAD")),
                "{path}"
            );
        }
        let list = classify(&Method::GET, "/api/v1/reservations").route;
        assert_eq!(
            (list, list.access()),
            (Route::ReservationList, Access::Buyer)
        );
        assert_eq!(
            classify(&Method::HEAD, "/api/v1/reservations").route,
            Route::ReservationList
        );
        assert_eq!(list.name(), "reservations_list");
        assert!(!list.is_proxied());
    }

    #[test]
    fn proxied_routes_and_their_access() {
        assert_eq!(
            classify(&Method::GET, "/api/v1/orders").route,
            Route::Orders
        );
        assert_eq!(
            classify(&Method::POST, "/api/v1/orders/o1/cancel").route,
            Route::Orders
        );
        assert_eq!(
            classify(&Method::GET, "/api/v1/products/HOT").route,
            Route::Products
        );
        let admin = classify(&Method::PUT, "/api/v1/admin/products/HOT").route;
        assert_eq!((admin, admin.access()), (Route::Admin, Access::Ops));
        assert_eq!(Route::Products.access(), Access::Anyone);
        assert_eq!(classify(&Method::GET, "/other").route, Route::NotFound);
        assert!(Route::ALL.iter().enumerate().all(|(i, r)| r.index() == i));
    }

    #[test]
    fn path_skus_are_decoded_validated_and_keep_their_case() {
        let sku = |segment| path_sku(segment).map(|sku| sku.as_str().to_owned());
        for (segment, expected) in [
            ("HOT", Some("HOT")),
            ("H%4FT", Some("HOT")),
            ("%48%4f%54", Some("HOT")),
            ("h%4fT", Some("hOT")),
            ("A-1_b.2", Some("A-1_b.2")),
            ("", None),
            ("HOT%", None),
            ("HOT%4", None),
            ("HOT%zz", None),
            ("HOT%20", None),
            ("HOT%2F", None),
            ("%C3%A9", None),
            ("%FF", None),
            ("HOT+1", None),
        ] {
            assert_eq!(sku(segment), expected.map(str::to_owned), "{segment}");
        }
    }

    #[test]
    fn product_edits_name_the_sku_whose_cache_they_drop() {
        let change =
            |method: Method, path| product_change(&method, path).map(|sku| sku.as_str().to_owned());
        let hot = Some("HOT".to_owned());
        assert_eq!(change(Method::PUT, "/api/v1/admin/products/HOT"), hot);
        assert_eq!(change(Method::PUT, "/api/v1/admin/products/H%4FT"), hot);
        assert_eq!(
            change(Method::POST, "/api/v1/admin/products/%48OT/restock"),
            hot
        );
        for (method, path) in [
            (Method::GET, "/api/v1/admin/products/HOT"),
            (Method::POST, "/api/v1/admin/products/HOT"),
            (Method::PUT, "/api/v1/admin/products/HOT/restock"),
            (Method::POST, "/api/v1/admin/products/HOT/other"),
            (Method::POST, "/api/v1/admin/products//restock"),
            (Method::PUT, "/api/v1/admin/products/"),
            (Method::PUT, "/api/v1/products/HOT"),
        ] {
            assert_eq!(change(method.clone(), path), None, "{method} {path}");
        }
        let restock = classify(&Method::POST, "/api/v1/admin/products/HOT/restock").route;
        assert_eq!((restock, restock.access()), (Route::Admin, Access::Ops));
    }

    #[test]
    fn dot_segments_and_encoded_separators_are_ambiguous() {
        for path in [
            "/api/v1/../admin",
            "/api/v1/orders/./o1",
            "/api/v1/orders/..",
            "/api/v1//admin/products/HOT",
            "/api/v1/admin%2Fproducts/HOT",
            "/api/v1/%2e%2e/admin",
            "/api/v1/orders/o1%5c..",
            "/api/v1\\admin",
            "/api/v1/stock/HOT%00",
        ] {
            assert!(is_ambiguous_path(path), "{path}");
        }
        for path in [
            "/",
            "/healthz",
            "/api/v1/stock/HOT.2",
            "/api/v1/products/",
            "/a%20b",
        ] {
            assert!(!is_ambiguous_path(path), "{path}");
        }
    }

    #[test]
    fn gateway_answered_pages_and_admin_stats() {
        let stats = classify(&Method::GET, "/api/v1/admin/edge").route;
        assert_eq!((stats, stats.access()), (Route::EdgeStats, Access::Ops));
        assert_eq!(
            classify(&Method::POST, "/api/v1/admin/edge").route,
            Route::MethodNotAllowed
        );
        for path in ["/", "/ops", "/assets/app.css"] {
            assert_eq!(classify(&Method::GET, path).route, Route::Web, "{path}");
        }
        assert_eq!(classify(&Method::GET, "/assets/").route, Route::NotFound);
        let dev = classify(&Method::POST, "/dev/token").route;
        assert_eq!((dev, dev.access()), (Route::DevToken, Access::Anyone));
        assert!(!Route::Web.is_proxied() && !Route::EdgeStats.is_proxied());
    }
}
