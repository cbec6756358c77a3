//! Rows of the settlement schema as Rust values, and how they are read from an `Any` row.

use reservation_core::{ProductStock, SaleState, Sku};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use strum::{EnumString, IntoStaticStr};

use super::SqlError;

/// Where an order is in its life. `Delivered` and `Cancelled` are final.
///
/// ```text
/// confirmed ──▶ shipped ──▶ delivered
///     │
///     └──▶ cancelled (buyer or ops; stock returns)
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, IntoStaticStr, EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum OrderStatus {
    Confirmed,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    /// The name in JSON and in SQL: the variant in snake_case (`shipped`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(raw: &str) -> Option<Self> {
        raw.parse().ok()
    }

    /// The ops workflow's allowed moves. Only a confirmed (not yet shipped) order can be
    /// cancelled: its units have not left the warehouse, so they return to stock.
    pub fn can_become(self, next: OrderStatus) -> bool {
        matches!(
            (self, next),
            (OrderStatus::Confirmed, OrderStatus::Shipped)
                | (OrderStatus::Confirmed, OrderStatus::Cancelled)
                | (OrderStatus::Shipped, OrderStatus::Delivered)
        )
    }
}

/// One order: one settled reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub id: String,
    pub reservation_id: String,
    pub user_sub: String,
    pub sku: String,
    pub qty: i64,
    pub unit_price_cents: i64,
    pub total_cents: i64,
    pub status: OrderStatus,
    pub version: i64,
    pub fence: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// The column list [`Order::from_row`] reads, in its order.
pub(crate) const ORDER_COLUMNS: &str = "id, reservation_id, user_sub, sku, qty, unit_price_cents, \
     total_cents, status, version, fence, created_at_ms, updated_at_ms";

impl Order {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, SqlError> {
        let status: String = row.try_get("status")?;
        Ok(Order {
            id: row.try_get("id")?,
            reservation_id: row.try_get("reservation_id")?,
            user_sub: row.try_get("user_sub")?,
            sku: row.try_get("sku")?,
            qty: row.try_get("qty")?,
            unit_price_cents: row.try_get("unit_price_cents")?,
            total_cents: row.try_get("total_cents")?,
            status: OrderStatus::parse(&status)
                .ok_or_else(|| SqlError::Corrupt(format!("order status {status:?}")))?,
            version: row.try_get("version")?,
            fence: row.try_get("fence")?,
            created_at_ms: row.try_get("created_at_ms")?,
            updated_at_ms: row.try_get("updated_at_ms")?,
        })
    }
}

/// One product: catalog data plus SQL's authoritative stock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub total_stock: i64,
    pub sold: i64,
    pub per_buyer_limit: i64,
    pub max_per_order: i64,
    pub sale_state: SaleState,
    pub version: i64,
    pub updated_at_ms: i64,
}

pub(crate) const PRODUCT_COLUMNS: &str = "sku, name, price_cents, total_stock, sold, \
     per_buyer_limit, max_per_order, sale_state, version, updated_at_ms";

impl Product {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, SqlError> {
        let state: String = row.try_get("sale_state")?;
        Ok(Product {
            sku: row.try_get("sku")?,
            name: row.try_get("name")?,
            price_cents: row.try_get("price_cents")?,
            total_stock: row.try_get("total_stock")?,
            sold: row.try_get("sold")?,
            per_buyer_limit: row.try_get("per_buyer_limit")?,
            max_per_order: row.try_get("max_per_order")?,
            sale_state: SaleState::parse(&state)
                .ok_or_else(|| SqlError::Corrupt(format!("sale state {state:?}")))?,
            version: row.try_get("version")?,
            updated_at_ms: row.try_get("updated_at_ms")?,
        })
    }

    /// What the reservation store must be configured with for this product.
    pub fn stock(&self) -> ProductStock {
        self.upsert().stock()
    }

    /// The product's editable fields: what a `PUT` of it unchanged would send.
    pub fn upsert(&self) -> ProductUpsert {
        ProductUpsert {
            name: self.name.clone(),
            price_cents: self.price_cents,
            total_stock: self.total_stock,
            per_buyer_limit: self.per_buyer_limit,
            max_per_order: self.max_per_order,
            sale_state: self.sale_state,
        }
    }

    pub fn sku(&self) -> Result<Sku, SqlError> {
        Sku::parse(&self.sku).map_err(|e| SqlError::Corrupt(format!("sku {:?}: {e}", self.sku)))
    }
}

/// What ops set with `PUT /admin/products/{sku}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductUpsert {
    pub name: String,
    pub price_cents: i64,
    pub total_stock: i64,
    pub per_buyer_limit: i64,
    pub max_per_order: i64,
    pub sale_state: SaleState,
}

impl ProductUpsert {
    /// What the reservation store must be configured with for these values.
    pub fn stock(&self) -> ProductStock {
        ProductStock {
            total_stock: self.total_stock.max(0) as u64,
            per_buyer_limit: u32::try_from(self.per_buyer_limit).unwrap_or(u32::MAX),
            max_per_order: u32::try_from(self.max_per_order).unwrap_or(u32::MAX),
            sale_state: self.sale_state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_workflow_allows_only_forward_moves() {
        use OrderStatus::*;
        assert!(Confirmed.can_become(Shipped));
        assert!(Confirmed.can_become(Cancelled));
        assert!(Shipped.can_become(Delivered));
        assert!(!Shipped.can_become(Cancelled));
        assert!(!Delivered.can_become(Shipped));
        assert!(!Cancelled.can_become(Confirmed));
        for s in [Confirmed, Shipped, Delivered, Cancelled] {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::json!(s), s.as_str());
        }
        assert_eq!(Cancelled.as_str(), "cancelled");
    }
}
