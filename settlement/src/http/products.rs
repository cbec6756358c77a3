//! The product routes: the catalog reads (anyone; the gateway caches them) and the two ops
//! edits, `PUT /api/v1/admin/products/{sku}` (a whole product, optimistic locking on its
//! version) and `POST /api/v1/admin/products/{sku}/restock` (a relative change that cannot
//! lose a concurrent one). Both run [`change`]: SQL's edit lock and read, the reservation
//! store configured, SQL committed, and the store put back when SQL did not commit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use backend_adapters::sql::products::{self, EditOutcome};
use backend_adapters::sql::{Product, ProductUpsert};
use reservation_core::{ProductStock, ReservationError, SaleState, Sku};
use serde::Deserialize;

use super::{AppState, Caller, Shared, json_body, json_response, listed_versions, ops};
use crate::error::ApiError;
use crate::views::{ProductInput, ProductView};

fn unknown_sku() -> ApiError {
    ApiError::new(404, "unknown_sku", "unknown sku")
}

pub(crate) async fn list_products(State(state): Shared) -> Result<Response, ApiError> {
    let products = products::list(&state.db).await?;
    let views: Vec<ProductView> = products.iter().map(ProductView::from).collect();
    Ok(json_response(StatusCode::OK, &views, None))
}

pub(crate) async fn get_product(
    State(state): Shared,
    headers: HeaderMap,
    Path(sku): Path<String>,
) -> Result<Response, ApiError> {
    let product = products::get(&state.db, &sku)
        .await?
        .ok_or_else(unknown_sku)?;
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .and_then(listed_versions)
        .is_some_and(|listed| listed.is_none_or(|v| v.contains(&product.version)));
    if cached {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(value) = super::etag(product.version).parse() {
            response.headers_mut().insert(header::ETAG, value);
        }
        return Ok(response);
    }
    Ok(json_response(
        StatusCode::OK,
        &ProductView::from(&product),
        Some(product.version),
    ))
}

/// What an edit requires of the version SQL has (RFC 9110 §13.1).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Precondition {
    /// Neither header.
    None,
    /// `If-Match`: the product exists at one of these versions (`None`: `*`, at any).
    Match(Option<Vec<i64>>),
    /// `If-None-Match: *`: the product does not exist yet.
    Absent,
    /// Both, evaluated in RFC 9110 §13.2.2's order: `If-Match` first, then `If-None-Match: *`
    /// (which no product can pass both of: always 412, never a 400 for a lawful request).
    MatchAndAbsent(Option<Vec<i64>>),
}

impl Precondition {
    fn of(headers: &HeaderMap) -> Result<Self, ApiError> {
        let text = |name: header::HeaderName| {
            headers
                .get(&name)
                .map(|v| {
                    v.to_str()
                        .map_err(|_| ApiError::bad_request(format!("{name} is not text")))
                })
                .transpose()
        };
        match (text(header::IF_MATCH)?, text(header::IF_NONE_MATCH)?) {
            (Some(if_match), if_none_match) => {
                let listed = listed_versions(if_match).ok_or_else(|| {
                    ApiError::bad_request("If-Match is not a list of product ETags")
                })?;
                match if_none_match {
                    None => Ok(Precondition::Match(listed)),
                    Some(value) if value.trim() == "*" => Ok(Precondition::MatchAndAbsent(listed)),
                    Some(_) => Err(ApiError::bad_request(
                        "If-None-Match on a product edit must be * (create only)",
                    )),
                }
            }
            (None, Some(value)) if value.trim() == "*" => Ok(Precondition::Absent),
            (None, Some(_)) => Err(ApiError::bad_request(
                "If-None-Match on a product edit must be * (create only)",
            )),
            (None, None) => Ok(Precondition::None),
        }
    }

    /// Whether a `PUT` may replace `current`: an existing product only with `If-Match` naming
    /// its version (or `*`), a new one with no precondition or `If-None-Match: *`.
    fn allows(&self, current: Option<&Product>) -> Result<(), ApiError> {
        match (self, current) {
            (Precondition::MatchAndAbsent(listed), _) => {
                Precondition::Match(listed.clone()).allows(current)?;
                Precondition::Absent.allows(current)
            }
            (Precondition::None | Precondition::Absent, None) => Ok(()),
            (Precondition::None, Some(_)) => Err(ApiError::new(
                428,
                "precondition_required",
                "changing an existing product needs If-Match with its ETag",
            )),
            (Precondition::Absent, Some(p)) => Err(ApiError::stale_version(
                p.version,
                format!("the product already exists (version {})", p.version),
            )),
            (Precondition::Match(_), None) => Err(ApiError::new(
                412,
                "stale_version",
                "If-Match names a version of a product that does not exist",
            )),
            (Precondition::Match(None), Some(_)) => Ok(()),
            (Precondition::Match(Some(versions)), Some(p)) if versions.contains(&p.version) => {
                Ok(())
            }
            (Precondition::Match(Some(_)), Some(p)) => Err(ApiError::stale_version(
                p.version,
                format!("the product is at version {}", p.version),
            )),
        }
    }
}

/// `PUT /api/v1/admin/products/{sku}`: creates a product (201) or replaces one (200) whose
/// version `If-Match` names.
pub(crate) async fn put_product(
    State(state): Shared,
    caller: Caller,
    headers: HeaderMap,
    Path(sku): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    ops(&caller)?;
    let sku = Sku::parse(&sku).map_err(ApiError::from)?;
    let upsert = json_body::<ProductInput>(&body)?.validate()?;
    let precondition = Precondition::of(&headers)?;
    change(state, sku, move |current| {
        precondition.allows(current)?;
        Ok(upsert)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestockBody {
    #[serde(deserialize_with = "reservation_core::wire::whole_number")]
    units: i64,
}

/// Most units one restock adds (far above any real delivery; keeps sums far from overflow).
const MAX_RESTOCK_UNITS: i64 = 1_000_000_000;

/// `POST /api/v1/admin/products/{sku}/restock` `{"units": n}`: adds `n` units to the total
/// stock as SQL has it when the restock runs, so concurrent restocks all count. `If-Match` is
/// optional (a client that wants "only if nothing changed" sends it).
pub(crate) async fn restock(
    State(state): Shared,
    caller: Caller,
    headers: HeaderMap,
    Path(sku): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    ops(&caller)?;
    let sku = Sku::parse(&sku).map_err(ApiError::from)?;
    let RestockBody { units } = json_body(&body)?;
    if !(1..=MAX_RESTOCK_UNITS).contains(&units) {
        return Err(ApiError::bad_request(format!(
            "units must be between 1 and {MAX_RESTOCK_UNITS}"
        )));
    }
    let precondition = match Precondition::of(&headers)? {
        Precondition::Absent => {
            return Err(ApiError::bad_request(
                "a restock adds to an existing product: If-None-Match does not apply",
            ));
        }
        precondition => precondition,
    };
    change(state, sku, move |current| {
        let current = current.ok_or_else(unknown_sku)?;
        if precondition != Precondition::None {
            precondition.allows(Some(current))?;
        }
        let total_stock = current.total_stock + units;
        if total_stock > ProductInput::MAX_TOTAL_STOCK {
            return Err(ApiError::bad_request(format!(
                "total_stock would exceed {}",
                ProductInput::MAX_TOTAL_STOCK
            )));
        }
        Ok(ProductUpsert {
            total_stock,
            ..current.upsert()
        })
    })
    .await
}

/// One product edit, from start to answer. It runs as a task of its own: once the store is
/// configured, a caller that hangs up must not cancel the commit or the store's restore.
async fn change(
    state: Arc<AppState>,
    sku: Sku,
    decide: impl FnOnce(Option<&Product>) -> Result<ProductUpsert, ApiError> + Send + 'static,
) -> Result<Response, ApiError> {
    tokio::spawn(async move { change_inner(&state, &sku, decide).await })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "product edit task failed");
            ApiError::new(500, "internal_error", "internal error")
        })?
}

/// Takes SQL's edit lock and reads the product; `decide` turns it into the new values (or
/// refuses); the store is configured; SQL commits. The store goes first so that its refusal
/// (units held above the new total) leaves SQL unchanged. Whenever the store may have taken
/// values SQL then did not commit, it is put back ([`restore_store`]).
async fn change_inner(
    state: &AppState,
    sku: &Sku,
    decide: impl FnOnce(Option<&Product>) -> Result<ProductUpsert, ApiError>,
) -> Result<Response, ApiError> {
    let edit = products::begin_edit(&state.db, sku).await?;
    let upsert = decide(edit.current.as_ref())?;
    if let Some(sold) = edit.sold_above(upsert.total_stock) {
        return Err(stock_below_sold(sold));
    }
    if let Err(error) = state.store.configure_product(sku, &upsert.stock()).await {
        // A refusal changed nothing; a failed call (timeout, lost connection) may have
        // applied the new values.
        if matches!(error, ReservationError::Backend { .. }) {
            edit.rollback().await;
            restore_store(state, sku).await;
        }
        return Err(error.into());
    }
    let refusal = match edit.commit(&upsert).await {
        Ok(EditOutcome::Committed(product)) => {
            let status = if product.version == 1 {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            return Ok(json_response(
                status,
                &ProductView::from(&product),
                Some(product.version),
            ));
        }
        Ok(EditOutcome::StockBelowSold { sold }) => stock_below_sold(sold),
        Ok(EditOutcome::Changed {
            version: Some(version),
        }) => ApiError::stale_version(
            version,
            format!("the product changed meanwhile (now version {version})"),
        ),
        Ok(EditOutcome::Changed { version: None }) => unknown_sku(),
        Err(e) => e.into(),
    };
    restore_store(state, sku).await;
    Err(refusal)
}

fn stock_below_sold(sold: i64) -> ApiError {
    ApiError::new(
        409,
        "stock_below_sold",
        format!("total_stock is below the {sold} units already sold"),
    )
}

/// What the store is set to for a SKU SQL does not have (a creation that did not commit):
/// no stock, paused.
const NOT_IN_SQL: ProductStock = ProductStock {
    total_stock: 0,
    per_buyer_limit: 1,
    max_per_order: 1,
    sale_state: SaleState::Paused,
};

/// Puts the store back to the values SQL has committed for `sku`, after an edit configured
/// the store and SQL did not commit it. Best effort: it takes the SKU's edit lock again and
/// re-reads SQL, so it can never overwrite a newer edit with older values (an edit that got
/// in between configured and committed its own values, which the re-read returns). When SQL
/// cannot be read, or the store refuses (buyers took units of the new total meanwhile), the
/// failure is logged and counted and the reconciler reports the drift.
async fn restore_store(state: &AppState, sku: &Sku) {
    let restored = async {
        let edit = products::begin_edit(&state.db, sku)
            .await
            .map_err(|e| format!("reading sql: {e}"))?;
        let stock = edit.current.as_ref().map_or(NOT_IN_SQL, Product::stock);
        let result = state.store.configure_product(sku, &stock).await;
        edit.rollback().await;
        result.map_err(|e| format!("configuring the store: {e}"))
    }
    .await;
    let result = match restored {
        Ok(_) => {
            tracing::warn!(%sku, "product edit not committed in sql; store put back to sql's values");
            "restored"
        }
        Err(error) => {
            tracing::error!(%sku, %error, "product edit not committed in sql and the store could not be put back; the reconciler reports the drift");
            "failed"
        }
    };
    state
        .metrics
        .product_store_restores
        .with_label_values(&[result])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn product(version: i64) -> Product {
        Product {
            sku: "HOT".into(),
            name: "Hot".into(),
            price_cents: 1,
            total_stock: 5,
            sold: 0,
            per_buyer_limit: 1,
            max_per_order: 1,
            sale_state: SaleState::OnSale,
            version,
            updated_at_ms: 0,
        }
    }

    fn precondition(pairs: &[(&'static str, &'static str)]) -> Result<Precondition, ApiError> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        Precondition::of(&headers)
    }

    fn code(result: Result<(), ApiError>) -> Option<(u16, &'static str, Option<i64>)> {
        result
            .err()
            .map(|e| (e.status.as_u16(), e.code, e.etag_version))
    }

    #[test]
    fn a_put_needs_the_current_version_to_change_a_product() {
        let v3 = product(3);
        let none = precondition(&[]).unwrap();
        assert_eq!(code(none.allows(None)), None);
        assert_eq!(
            code(none.allows(Some(&v3))),
            Some((428, "precondition_required", None))
        );
        let stale = precondition(&[("if-match", "\"2\"")]).unwrap();
        assert_eq!(
            code(stale.allows(Some(&v3))),
            Some((412, "stale_version", Some(3)))
        );
        assert_eq!(code(stale.allows(None)), Some((412, "stale_version", None)));
        let listed = precondition(&[("if-match", "\"2\", W/\"3\"")]).unwrap();
        assert_eq!(code(listed.allows(Some(&v3))), None);
        let any = precondition(&[("if-match", "*")]).unwrap();
        assert_eq!(code(any.allows(Some(&v3))), None);
        let create = precondition(&[("if-none-match", "*")]).unwrap();
        assert_eq!(code(create.allows(None)), None);
        assert_eq!(
            code(create.allows(Some(&v3))),
            Some((412, "stale_version", Some(3)))
        );
    }

    /// Both headers are lawful (RFC 9110 §13.2.2 evaluates If-Match, then If-None-Match), and
    /// no product passes both: 412, with the current ETag when there is a product. (Before:
    /// 400, a refusal of a request openapi.yaml allows.)
    #[test]
    fn if_match_with_if_none_match_star_is_never_met() {
        let both = precondition(&[("if-match", "\"3\""), ("if-none-match", "*")]).unwrap();
        assert_eq!(
            code(both.allows(Some(&product(3)))),
            Some((412, "stale_version", Some(3)))
        );
        assert_eq!(
            code(both.allows(Some(&product(4)))),
            Some((412, "stale_version", Some(4)))
        );
        assert_eq!(code(both.allows(None)), Some((412, "stale_version", None)));
        let any_and_absent = precondition(&[("if-match", "*"), ("if-none-match", "*")]).unwrap();
        assert_eq!(
            code(any_and_absent.allows(None)),
            Some((412, "stale_version", None))
        );
    }

    #[test]
    fn malformed_preconditions_are_bad_requests() {
        for pairs in [
            &[("if-match", "version-3")][..],
            &[("if-none-match", "\"3\"")],
            &[("if-match", "\"3\""), ("if-none-match", "\"3\"")],
        ] {
            let error = precondition(pairs).unwrap_err();
            assert_eq!(
                (error.status.as_u16(), error.code),
                (400, "invalid_request")
            );
        }
    }
}
