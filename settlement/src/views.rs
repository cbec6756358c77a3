//! JSON bodies of the API (`Order`, `Product`, the product input), as documented in
//! `docs/internal-api.md` and `openapi.yaml`. Money is in integer cents, times RFC 3339 UTC.

use backend_adapters::sql::{Order, Product, ProductUpsert};
use reservation_core::SaleState;
use reservation_core::wire::{optional_whole_number, rfc3339_ms, whole_number};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    pub order_id: String,
    pub reservation_id: String,
    pub user_sub: String,
    pub sku: String,
    pub qty: i64,
    pub unit_price: i64,
    pub total: i64,
    pub status: String,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        OrderView {
            order_id: o.id.clone(),
            reservation_id: o.reservation_id.clone(),
            user_sub: o.user_sub.clone(),
            sku: o.sku.clone(),
            qty: o.qty,
            unit_price: o.unit_price_cents,
            total: o.total_cents,
            status: o.status.as_str().to_owned(),
            version: o.version,
            created_at: rfc3339_ms(o.created_at_ms),
            updated_at: rfc3339_ms(o.updated_at_ms),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductView {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub total_stock: i64,
    /// Units SQL has sold (not cancelled).
    pub sold: i64,
    pub per_buyer_limit: i64,
    pub max_per_order: i64,
    pub sale_state: SaleState,
    pub version: i64,
    pub updated_at: String,
}

impl From<&Product> for ProductView {
    fn from(p: &Product) -> Self {
        ProductView {
            sku: p.sku.clone(),
            name: p.name.clone(),
            price_cents: p.price_cents,
            total_stock: p.total_stock,
            sold: p.sold,
            per_buyer_limit: p.per_buyer_limit,
            max_per_order: p.max_per_order,
            sale_state: p.sale_state,
            version: p.version,
            updated_at: rfc3339_ms(p.updated_at_ms),
        }
    }
}

/// The body of `PUT /api/v1/admin/products/{sku}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    pub name: String,
    #[serde(deserialize_with = "whole_number")]
    pub price_cents: i64,
    #[serde(deserialize_with = "whole_number")]
    pub total_stock: i64,
    #[serde(deserialize_with = "whole_number")]
    pub per_buyer_limit: i64,
    /// Defaults to `per_buyer_limit`.
    #[serde(default, deserialize_with = "optional_whole_number")]
    pub max_per_order: Option<i64>,
    pub sale_state: SaleState,
}

/// The most units one order (one reservation) may hold: `Qty`'s limit.
const MAX_PER_ORDER: i64 = reservation_core::Qty::MAX as i64;

/// The highest unit price (10^12 minor units): with at most 10^6 units per order, every order
/// total fits in 64 bits (settlement still refuses one that would not, `total_out_of_range`).
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000_000;

impl ProductInput {
    /// The largest `total_stock` (far above any real stock; sums of counters cannot overflow).
    pub const MAX_TOTAL_STOCK: i64 = i64::MAX / 4;

    pub fn validate(self) -> Result<ProductUpsert, ApiError> {
        let bad = |field: &str, reason: &str| ApiError::bad_request(format!("{field} {reason}"));
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(bad("name", "must be 1 to 200 characters"));
        }
        if !(0..=MAX_PRICE_CENTS).contains(&self.price_cents) {
            return Err(bad("price_cents", "must be between 0 and 1000000000000"));
        }
        if !(0..=Self::MAX_TOTAL_STOCK).contains(&self.total_stock) {
            return Err(bad(
                "total_stock",
                "must be between 0 and 2305843009213693951",
            ));
        }
        let limit_range = 1..=i64::from(u32::MAX);
        if !limit_range.contains(&self.per_buyer_limit) {
            return Err(bad("per_buyer_limit", "must be between 1 and 4294967295"));
        }
        // Absent: the buyer's whole limit in one order, as far as one order may go (before,
        // a limit above 10^6 with no max_per_order was refused as if max_per_order were bad).
        let max_per_order = self
            .max_per_order
            .unwrap_or(self.per_buyer_limit.min(MAX_PER_ORDER));
        if !(1..=MAX_PER_ORDER).contains(&max_per_order) {
            return Err(bad("max_per_order", "must be between 1 and 1000000"));
        }
        Ok(ProductUpsert {
            name: name.to_owned(),
            price_cents: self.price_cents,
            total_stock: self.total_stock,
            per_buyer_limit: self.per_buyer_limit,
            max_per_order,
            sale_state: self.sale_state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339_ms(0i64), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123i64), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_795_503_600_000i64), "2026-11-24T07:00:00.000Z");
    }

    #[test]
    fn product_input_rules_name_their_field() {
        let input = |f: fn(&mut ProductInput)| {
            let mut p = ProductInput {
                name: "Tee".into(),
                price_cents: 1999,
                total_stock: 10,
                per_buyer_limit: 2,
                max_per_order: None,
                sale_state: SaleState::OnSale,
            };
            f(&mut p);
            p.validate()
        };
        assert_eq!(input(|_| {}).map(|u| u.max_per_order), Ok(2));
        let detail = |r: Result<ProductUpsert, ApiError>| r.unwrap_err().detail;
        assert!(detail(input(|p| p.name = " ".into())).starts_with("name"));
        assert!(detail(input(|p| p.price_cents = -1)).starts_with("price_cents"));
        // Issue 13.7: 2^62 cents × 4 units wrapped to a total of 0.
        assert!(detail(input(|p| p.price_cents = 1 << 62)).starts_with("price_cents"));
        assert!(input(|p| p.price_cents = MAX_PRICE_CENTS).is_ok());
        assert!(detail(input(|p| p.price_cents = MAX_PRICE_CENTS + 1)).starts_with("price_cents"));
        assert!(detail(input(|p| p.total_stock = -1)).starts_with("total_stock"));
        assert!(detail(input(|p| p.per_buyer_limit = 0)).starts_with("per_buyer_limit"));
        assert!(detail(input(|p| p.max_per_order = Some(0))).starts_with("max_per_order"));
        // A limit above what one order may hold, with no max_per_order: one order takes at
        // most 10^6 units; before, this valid input was refused naming max_per_order.
        let big_limit = input(|p| p.per_buyer_limit = 5_000_000);
        assert_eq!(big_limit.map(|u| u.max_per_order), Ok(MAX_PER_ORDER));
        assert!(detail(input(|p| p.per_buyer_limit = 1 << 32)).starts_with("per_buyer_limit"));
    }
}
