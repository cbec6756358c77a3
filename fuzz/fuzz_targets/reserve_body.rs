//! `POST /api/v1/reservations` body parsing (`parse_reserve_body`) on arbitrary bytes.
//! Properties: never panics; a refusal is a 400 `invalid_request` value; an accepted body is
//! exactly `{"sku", "qty"}` with a valid SKU and quantity, and parses back to the same input.
#![no_main]

use gateway::edge::reservations::parse_reserve_body;
use libfuzzer_sys::fuzz_target;
use reservation_core::{Qty, Sku};

fuzz_target!(|data: &[u8]| {
    match parse_reserve_body(data) {
        Ok(input) => {
            assert!(Sku::parse(input.sku.as_str()).is_ok());
            assert!((1..=Qty::MAX).contains(&input.qty.get()));
            // Only the two fields: a client-sent price or status never gets through.
            let value: serde_json::Value = serde_json::from_slice(data).expect("accepted is json");
            let object = value.as_object().expect("accepted is an object");
            assert!(object.len() == 2 && object.contains_key("sku") && object.contains_key("qty"));
            let again = serde_json::json!({"sku": input.sku.as_str(), "qty": input.qty.get()});
            assert_eq!(
                parse_reserve_body(again.to_string().as_bytes()).ok(),
                Some(input)
            );
        }
        Err(problem) => {
            assert_eq!((problem.status, problem.code), (400, "invalid_request"));
        }
    }
});
