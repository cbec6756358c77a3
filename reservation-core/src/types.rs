//! Domain types of the reservation hot path: what a buyer reserves, the hold that records it,
//! and the per-SKU stock counters. Constructors validate, so a value of these types is always
//! safe to put in a Redis key or an SQL row.

use std::fmt;

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr};

use crate::error::ReservationError;

/// Longest SKU accepted. SKUs are part of Redis keys and of reservation ids.
pub const MAX_SKU_LEN: usize = 64;
/// Longest buyer subject (`sub` claim) accepted.
pub const MAX_SUB_LEN: usize = 128;
/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

fn invalid(field: &'static str, reason: &str) -> ReservationError {
    ReservationError::InvalidInput {
        field,
        reason: reason.to_owned(),
    }
}

/// A stock-keeping unit: 1..=64 characters of `[A-Za-z0-9._-]`, not only dots.
///
/// The narrow alphabet keeps SKUs free of `{`/`}` (they become Redis Cluster hash tags) and of
/// the `_` separator's ambiguity inside a [`ReservationId`] (the SKU is its last part). A SKU
/// of dots alone (`.`, `..`) would be a dot segment in `/api/v1/stock/{sku}`, which the gateway
/// refuses as an ambiguous path: such a product could never be addressed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, ReservationError> {
        if raw.is_empty() || raw.len() > MAX_SKU_LEN {
            return Err(invalid("sku", "must be 1 to 64 characters"));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(invalid(
                "sku",
                "may contain only letters, digits, '-', '.' and '_'",
            ));
        }
        if raw.bytes().all(|b| b == b'.') {
            return Err(invalid("sku", "may not be only dots"));
        }
        Ok(Sku(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = ReservationError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Sku::parse(&raw)
    }
}

impl From<Sku> for String {
    fn from(sku: Sku) -> String {
        sku.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A positive quantity of units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Qty(u32);

impl Qty {
    /// Upper bound on any single quantity, far above any per-order limit; it keeps counter
    /// arithmetic well inside both Lua's exact-integer range and SQL's `INTEGER`.
    pub const MAX: u32 = 1_000_000;

    pub fn new(units: u32) -> Result<Self, ReservationError> {
        if units == 0 || units > Self::MAX {
            return Err(invalid("qty", "must be between 1 and 1000000"));
        }
        Ok(Qty(units))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Qty {
    type Error = ReservationError;
    fn try_from(units: u32) -> Result<Self, Self::Error> {
        Qty::new(units)
    }
}

impl From<Qty> for u32 {
    fn from(qty: Qty) -> u32 {
        qty.0
    }
}

/// The buyer's identity: the `sub` claim of the buyer's JWT.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BuyerId(String);

impl BuyerId {
    pub fn parse(raw: &str) -> Result<Self, ReservationError> {
        // Characters, not bytes: the limit openapi.yaml states (`maxLength`, which counts
        // characters) for the dev sign-in's `buyer` and any identity provider's `sub`.
        if raw.is_empty() || raw.chars().count() > MAX_SUB_LEN {
            return Err(invalid("sub", "must be 1 to 128 characters"));
        }
        if raw.chars().any(|c| c.is_control()) {
            return Err(invalid("sub", "must not contain control characters"));
        }
        Ok(BuyerId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BuyerId {
    type Error = ReservationError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        BuyerId::parse(&raw)
    }
}

impl From<BuyerId> for String {
    fn from(id: BuyerId) -> String {
        id.0
    }
}

impl fmt::Display for BuyerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The client's `Idempotency-Key`: 1..=128 visible ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, ReservationError> {
        if raw.is_empty() || raw.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(invalid("Idempotency-Key", "must be 1 to 128 characters"));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "Idempotency-Key",
                "must be visible ASCII characters",
            ));
        }
        Ok(IdempotencyKey(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = ReservationError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        IdempotencyKey::parse(&raw)
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> String {
        key.0
    }
}

/// A reservation id: `rsv_<32 hex digits>_<sku>`.
///
/// The SKU is part of the id so a hold can be found (and its `{sku}`-tagged Redis keys named)
/// from the id alone, without a cross-slot index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReservationId(String);

impl ReservationId {
    const PREFIX: &'static str = "rsv_";
    const HEX_LEN: usize = 32;

    /// A fresh random id for a hold of `sku`.
    pub fn generate(sku: &Sku) -> Self {
        ReservationId(format!(
            "{}{}_{}",
            Self::PREFIX,
            uuid::Uuid::new_v4().simple(),
            sku
        ))
    }

    pub fn parse(raw: &str) -> Result<Self, ReservationError> {
        let bad = || invalid("reservation_id", "is not a reservation id");
        let rest = raw.strip_prefix(Self::PREFIX).ok_or_else(bad)?;
        let (hex, sku) = rest.split_at_checked(Self::HEX_LEN).ok_or_else(bad)?;
        let sku = sku.strip_prefix('_').ok_or_else(bad)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Sku::parse(sku).map_err(|_| bad())?;
        Ok(ReservationId(raw.to_owned()))
    }

    /// The SKU this reservation holds units of.
    pub fn sku(&self) -> Sku {
        // The constructor checked the layout, so the tail is a valid SKU.
        Sku(self.0[Self::PREFIX.len() + Self::HEX_LEN + 1..].to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ReservationId {
    type Error = ReservationError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        ReservationId::parse(&raw)
    }
}

impl From<ReservationId> for String {
    fn from(id: ReservationId) -> String {
        id.0
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a hold is in its life. `Confirmed`, `Released` and `Expired` are final.
///
/// ```text
/// held ──begin_confirm──▶ confirming ──finish_confirm──▶ confirmed
///  │  ▲                       │
///  │  └──abort_confirm(keep)──┤
///  │                          └──abort_confirm(release)──▶ released
///  ├──release──▶ released
///  └──expiry (sweeper, or a late confirm)──▶ expired
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, IntoStaticStr, EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum HoldState {
    Held,
    Confirming,
    Confirmed,
    Released,
    Expired,
}

impl HoldState {
    /// The name in JSON, in Redis and in SQL: the variant in snake_case (`held`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(raw: &str) -> Option<Self> {
        raw.parse().ok()
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            HoldState::Confirmed | HoldState::Released | HoldState::Expired
        )
    }
}

impl fmt::Display for HoldState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A buyer's claim on `qty` units of one SKU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: ReservationId,
    pub sku: Sku,
    pub buyer: BuyerId,
    pub qty: Qty,
    pub state: HoldState,
    /// Milliseconds since the Unix epoch, by the store's clock (Redis `TIME` for Redis).
    pub created_at_ms: u64,
    /// While `Held`, the hold is returned to stock once the store's clock reaches this.
    pub expires_at_ms: u64,
}

/// A hold in `Confirming`, with when its confirm began (the reconciler's grace counts from
/// there, not from the reservation: a buyer may confirm late in the hold's life).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfirmingHold {
    pub hold: Hold,
    /// Milliseconds since the Unix epoch, by the store's clock, when `begin_confirm` moved it
    /// to `Confirming`.
    pub since_ms: u64,
}

/// Whether a SKU may be reserved right now (set by ops).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, IntoStaticStr, EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum SaleState {
    OnSale,
    Paused,
}

impl SaleState {
    /// The name in JSON, in Redis and in SQL: the variant in snake_case (`on_sale`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(raw: &str) -> Option<Self> {
        raw.parse().ok()
    }
}

/// What ops set for a SKU's stock: the input of [`ReservationStore::configure_product`].
///
/// [`ReservationStore::configure_product`]: crate::ReservationStore::configure_product
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductStock {
    /// Units that exist in total: available + held + confirming + sold.
    pub total_stock: u64,
    /// Most units one buyer may hold and buy of this SKU (held + confirming + confirmed).
    pub per_buyer_limit: u32,
    /// Most units in one reservation.
    pub max_per_order: u32,
    pub sale_state: SaleState,
}

impl ProductStock {
    pub fn validate(&self) -> Result<(), ReservationError> {
        if self.total_stock > i64::MAX as u64 / 4 {
            return Err(invalid("total_stock", "is too large"));
        }
        if self.per_buyer_limit == 0 {
            return Err(invalid("per_buyer_limit", "must be at least 1"));
        }
        if self.max_per_order == 0 || self.max_per_order > Qty::MAX {
            return Err(invalid("max_per_order", "must be between 1 and 1000000"));
        }
        Ok(())
    }
}

/// The counters of one SKU. At rest, `available + held + confirming + sold == total_stock`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockSnapshot {
    pub sku: Sku,
    pub total_stock: u64,
    pub available: u64,
    pub held: u64,
    pub confirming: u64,
    pub sold: u64,
    pub per_buyer_limit: u32,
    pub max_per_order: u32,
    pub sale_state: SaleState,
}

impl StockSnapshot {
    /// What a storefront shows: `paused`, else `sold_out` when nothing is available, else `on_sale`.
    pub fn display_state(&self) -> &'static str {
        match self.sale_state {
            SaleState::Paused => "paused",
            SaleState::OnSale if self.available == 0 => "sold_out",
            SaleState::OnSale => "on_sale",
        }
    }

    /// Whether the counters add up to the total stock.
    pub fn is_balanced(&self) -> bool {
        self.available + self.held + self.confirming + self.sold == self.total_stock
    }
}

/// What the authority (SQL) knows of one SKU's sales, read in one snapshot: the input of a
/// counter repair.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SoldUnits {
    /// Units in live (not cancelled) orders, in total and per buyer.
    pub total: u64,
    pub by_buyer: Vec<(BuyerId, u64)>,
    /// Reservation ids that have an order in the snapshot, live or cancelled: of those the
    /// repair asked about (the holds confirming when it began) and every recent order. A hold
    /// of one of them the store still has as held or confirming is finished by the repair, not
    /// counted: its units are in `total` (or were cancelled) already. It also tells the repair
    /// which of the finishes it journaled the snapshot has ([`RepairTicket`]).
    pub ordered: Vec<ReservationId>,
    /// Reservation ids of cancelled orders: their units are out of `total` already, so the
    /// repair marks them returned and a cancellation the relay delivers later changes nothing.
    pub cancelled: Vec<ReservationId>,
}

/// A counter repair the store has begun ([`ReservationStore::begin_repair`]): until
/// [`ReservationStore::repair_counters`] with this ticket, the store journals every change
/// `finish_confirm` and `return_cancelled` make to the SKU's `sold`, so the repair can tell
/// which of them its SQL snapshot (read after the start) already has. A newer start of the
/// same SKU supersedes this one.
///
/// [`ReservationStore::begin_repair`]: crate::ReservationStore::begin_repair
/// [`ReservationStore::repair_counters`]: crate::ReservationStore::repair_counters
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairTicket(String);

impl RepairTicket {
    /// A fresh, unique ticket.
    pub fn generate() -> Self {
        RepairTicket(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What [`ReservationStore::begin_repair`] answers: the ticket, and the SKU's holds that were
/// confirming at that moment (the repair asks SQL about them).
///
/// [`ReservationStore::begin_repair`]: crate::ReservationStore::begin_repair
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairStart {
    pub ticket: RepairTicket,
    pub confirming: Vec<ReservationId>,
}

/// A request to reserve units: the input of [`ReservationStore::reserve`].
///
/// [`ReservationStore::reserve`]: crate::ReservationStore::reserve
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReserveRequest {
    pub sku: Sku,
    pub buyer: BuyerId,
    pub qty: Qty,
    pub idempotency_key: IdempotencyKey,
    /// How long the hold lasts before it returns to stock.
    pub hold_ttl_ms: u64,
}

/// The answer to a reserve: the hold, and whether it was created now or replayed for a
/// repeated idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub hold: Hold,
    pub replayed: bool,
}

/// Where an aborted confirm leaves the hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortTo {
    /// The settlement did not happen but may be retried (e.g. it was unavailable): keep the hold.
    Held,
    /// The settlement was refused for good (e.g. SQL would oversell): return the units to stock.
    Released,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_rejects_hash_tag_braces_and_empty() {
        assert!(Sku::parse("{x}").is_err());
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse(&"a".repeat(65)).is_err());
        assert_eq!(Sku::parse("HOT-1.a_b").unwrap().as_str(), "HOT-1.a_b");
    }

    #[test]
    fn sku_of_dots_alone_is_refused() {
        for dots in [".", "..", "..."] {
            assert!(Sku::parse(dots).is_err(), "{dots}");
        }
        assert!(Sku::parse("..a").is_ok());
    }

    #[test]
    fn reservation_id_round_trips_and_names_its_sku() {
        let sku = Sku::parse("TEE_red-L").unwrap();
        let id = ReservationId::generate(&sku);
        let parsed = ReservationId::parse(id.as_str()).unwrap();
        assert_eq!(parsed.sku(), sku);
        assert!(ReservationId::parse("rsv_zz").is_err());
        assert!(ReservationId::parse(&format!("rsv_{}_", "0".repeat(32))).is_err());
        assert!(ReservationId::parse(&format!("rsv_{}_{{x}}", "0".repeat(32))).is_err());
    }

    #[test]
    fn qty_bounds() {
        assert!(Qty::new(0).is_err());
        assert!(Qty::new(Qty::MAX + 1).is_err());
        assert_eq!(Qty::new(3).unwrap().get(), 3);
        assert!(serde_json::from_str::<Qty>("0").is_err());
        assert!(serde_json::from_str::<Qty>("-1").is_err());
    }

    #[test]
    fn state_names_are_serdes_and_parse_back() {
        use HoldState::*;
        for state in [Held, Confirming, Confirmed, Released, Expired] {
            assert_eq!(serde_json::json!(state), state.as_str());
            assert_eq!(HoldState::parse(state.as_str()), Some(state));
        }
        assert_eq!(Confirming.as_str(), "confirming");
        for state in [SaleState::OnSale, SaleState::Paused] {
            assert_eq!(serde_json::json!(state), state.as_str());
            assert_eq!(SaleState::parse(state.as_str()), Some(state));
        }
        assert_eq!(SaleState::OnSale.as_str(), "on_sale");
        assert_eq!(HoldState::parse("Held"), None);
        assert_eq!(SaleState::parse("onsale"), None);
    }

    #[test]
    fn a_buyer_id_is_up_to_128_characters_of_any_script() {
        // 128 characters of three bytes each: the limit counts characters (before: bytes,
        // so a name openapi.yaml allows was refused).
        let korean = "가".repeat(MAX_SUB_LEN);
        assert!(BuyerId::parse(&korean).is_ok());
        assert!(BuyerId::parse(&format!("{korean}가")).is_err());
        assert!(BuyerId::parse("").is_err());
        assert!(
            BuyerId::parse("a\u{97}b").is_err(),
            "C1 controls are control characters"
        );
    }

    #[test]
    fn idempotency_key_must_be_visible_ascii() {
        assert!(IdempotencyKey::parse("abc 1").is_err());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("k-123").is_ok());
    }
}
