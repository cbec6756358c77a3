//! Names of the Redis keys of the reservation store. Every key of one SKU carries the SKU as
//! its `{sku}` hash tag, so a script touching them all runs in one slot of Redis Cluster.
//!
//! ```text
//! <prefix>:{<sku>}:stock                 hash: total available held confirming sold limit max state
//! <prefix>:{<sku>}:hold:<id>             hash: buyer qty state created expires idem
//! <prefix>:{<sku>}:expiry                zset: id of every held hold, scored by expires_at_ms
//! <prefix>:{<sku>}:confirming            set: id of every confirming hold
//! <prefix>:{<sku>}:buyers                hash: buyer -> units held + confirming + confirmed
//! <prefix>:{<sku>}:idem:<n>:<buyer>:<key> string: id of the hold made under that key
//! <prefix>:{<sku>}:returned:<id>         string: this id's cancelled units went back to stock
//!                                        (expires after the retention)
//! <prefix>:{<sku>}:returned              set (before 2026-12, read only): ids returned by an
//!                                        older release; consulted so an upgrade never returns
//!                                        a redelivered cancellation twice
//! <prefix>:{<sku>}:repair                hash: the journal of a counter repair in progress:
//!                                        ticket, f:<id> / r:<id> -> "<qty>:<buyer>" (expires)
//! <prefix>:idem:<n>:<buyer>:<key>        string "<sku>|<qty>|<id>": what the key is bound to
//! <prefix>:skus                          set: every SKU with counters
//! ```
//!
//! `<n>` is the byte length of the buyer: a buyer may contain `:`, and the length keeps
//! `("a:b", "c")` and `("a", "b:c")` apart. The last two keys are the only ones outside a
//! SKU's slot; only the one-key scripts `claim_binding` and `drop_binding` touch a binding.
//! A binding exists only for a key that made a hold: the `<id>` names the request that wrote
//! it, so a refused request deletes its own binding and never another's.

use reservation_core::{BuyerId, IdempotencyKey, ReservationId, Sku};

/// The keys of one SKU, all under its `{sku}` hash tag.
#[derive(Debug, Clone)]
pub(crate) struct SkuKeys {
    pub stock: String,
    pub expiry: String,
    pub confirming: String,
    pub buyers: String,
    /// The journal of a counter repair in progress (`begin_repair.lua`).
    pub repair: String,
    /// A hold's key is this followed by its id. Scripts that find ids in an index (expiry,
    /// confirming, idempotency record) name the hold keys from it.
    pub hold_prefix: String,
    /// A returned marker's key is this followed by the reservation id.
    pub returned_prefix: String,
    /// The set older releases recorded returned ids in. Never written; read until the last
    /// cancellation an old release could have returned is past any redelivery.
    pub returned_legacy: String,
    idem_prefix: String,
    buyer_holds_prefix: String,
}

impl SkuKeys {
    pub fn new(prefix: &str, sku: &Sku) -> Self {
        let base = format!("{prefix}:{{{sku}}}");
        SkuKeys {
            stock: format!("{base}:stock"),
            expiry: format!("{base}:expiry"),
            confirming: format!("{base}:confirming"),
            buyers: format!("{base}:buyers"),
            repair: format!("{base}:repair"),
            hold_prefix: format!("{base}:hold:"),
            returned_prefix: format!("{base}:returned:"),
            returned_legacy: format!("{base}:returned"),
            idem_prefix: format!("{base}:idem:"),
            buyer_holds_prefix: format!("{base}:byholds:"),
        }
    }

    pub fn hold(&self, id: &ReservationId) -> String {
        format!("{}{}", self.hold_prefix, id)
    }

    /// The marker that a cancelled order's units went back to stock.
    pub fn returned(&self, id: &ReservationId) -> String {
        format!("{}{}", self.returned_prefix, id)
    }

    /// The per-SKU index of one buyer's holds (zset: reservation id → creation time), so that
    /// the buyer's open holds are listed without scanning the SKU's.
    pub fn buyer_holds(&self, buyer: &BuyerId) -> String {
        format!(
            "{}{}:{}",
            self.buyer_holds_prefix,
            buyer.as_str().len(),
            buyer
        )
    }

    /// The per-SKU idempotency record: the id of the hold made under (buyer, key).
    pub fn idempotency(&self, buyer: &BuyerId, key: &IdempotencyKey) -> String {
        format!("{}{}", self.idem_prefix, buyer_and_key(buyer, key))
    }
}

/// The cross-slot binding of (buyer, key) to the SKU and quantity of the hold it made.
pub(crate) fn binding_key(prefix: &str, buyer: &BuyerId, key: &IdempotencyKey) -> String {
    format!("{prefix}:idem:{}", buyer_and_key(buyer, key))
}

/// The set of every SKU with counters.
pub(crate) fn skus_key(prefix: &str) -> String {
    format!("{prefix}:skus")
}

fn buyer_and_key(buyer: &BuyerId, key: &IdempotencyKey) -> String {
    format!("{}:{}:{}", buyer.as_str().len(), buyer, key.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T>(r: Result<T, reservation_core::ReservationError>) -> T {
        r.unwrap_or_else(|e| panic!("test input is valid: {e}"))
    }

    #[test]
    fn every_key_of_a_sku_carries_its_hash_tag() {
        let sku = parse(Sku::parse("HOT-1"));
        let keys = SkuKeys::new("sg", &sku);
        let id = ReservationId::generate(&sku);
        let buyer = parse(BuyerId::parse("alice"));
        let key = parse(IdempotencyKey::parse("k1"));
        for name in [
            keys.stock.clone(),
            keys.expiry.clone(),
            keys.confirming.clone(),
            keys.buyers.clone(),
            keys.returned(&id),
            keys.returned_legacy.clone(),
            keys.hold(&id),
            keys.idempotency(&buyer, &key),
            keys.buyer_holds(&buyer),
        ] {
            assert!(name.starts_with("sg:{HOT-1}:"), "{name}");
        }
    }

    #[test]
    fn buyer_length_keeps_colons_apart() {
        let a = binding_key(
            "sg",
            &parse(BuyerId::parse("a:b")),
            &parse(IdempotencyKey::parse("c")),
        );
        let b = binding_key(
            "sg",
            &parse(BuyerId::parse("a")),
            &parse(IdempotencyKey::parse("b:c")),
        );
        assert_ne!(a, b);
        assert_eq!(a, "sg:idem:3:a:b:c");
    }
}
