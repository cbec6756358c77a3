//! Whole numbers in request bodies as JSON Schema reads `type: integer` (and so openapi.yaml,
//! its generated clients and API testers): `3` and `3.0` are the same integer, `3.5` is not
//! one. serde reads `3.0` into an integer field as a type error; a field that takes
//! [`whole_number`] accepts it, and still refuses a fraction, a string or a value out of the
//! field's range.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Unexpected, Visitor};

/// The largest float every smaller whole float of which is exact (2^53): above it `1e300` and
/// its neighbours would pass as integers they were never written as.
const MAX_EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

/// `#[serde(deserialize_with = "wire::whole_number")]` on an integer field.
pub fn whole_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    deserializer.deserialize_any(WholeNumber(PhantomData))
}

/// [`whole_number`] for an optional field (with `#[serde(default)]`): absent or `null` is
/// `None`.
pub fn optional_whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    #[derive(serde::Deserialize)]
    #[serde(bound = "T: TryFrom<i128>")]
    struct Whole<T>(#[serde(deserialize_with = "whole_number")] T);
    let value: Option<Whole<T>> = serde::Deserialize::deserialize(deserializer)?;
    Ok(value.map(|Whole(n)| n))
}

struct WholeNumber<T>(PhantomData<T>);

impl<T: TryFrom<i128>> WholeNumber<T> {
    fn in_range<E: de::Error>(&self, value: i128) -> Result<T, E> {
        T::try_from(value)
            .map_err(|_| E::invalid_value(Unexpected::Other("a number out of range"), self))
    }
}

impl<T: TryFrom<i128>> Visitor<'_> for WholeNumber<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number in range")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        self.in_range(value.into())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        self.in_range(value.into())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<T, E> {
        if value.fract() != 0.0 || !value.is_finite() {
            return Err(E::invalid_value(Unexpected::Float(value), &self));
        }
        if value.abs() > MAX_EXACT_FLOAT {
            return Err(E::invalid_value(
                Unexpected::Other("a number out of range"),
                &self,
            ));
        }
        // Exact: a whole number no larger than 2^53.
        self.in_range(value as i128)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct Body {
        #[serde(deserialize_with = "super::whole_number")]
        qty: u32,
    }

    #[derive(Deserialize, Debug)]
    struct Limits {
        #[serde(default, deserialize_with = "super::optional_whole_number")]
        max_per_order: Option<i64>,
    }

    fn max_per_order(json: &str) -> Result<Option<i64>, String> {
        serde_json::from_str::<Limits>(json)
            .map(|l| l.max_per_order)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn optional_whole_numbers() {
        assert_eq!(max_per_order("{}"), Ok(None));
        assert_eq!(max_per_order(r#"{"max_per_order": null}"#), Ok(None));
        assert_eq!(max_per_order(r#"{"max_per_order": 2.0}"#), Ok(Some(2)));
        assert!(max_per_order(r#"{"max_per_order": 2.5}"#).is_err());
    }

    fn qty(json: &str) -> Result<u32, String> {
        serde_json::from_str::<Body>(json)
            .map(|b| b.qty)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_integers_and_fractions_are_not() {
        assert_eq!(qty(r#"{"qty": 3}"#), Ok(3));
        assert_eq!(qty(r#"{"qty": 65537.0}"#), Ok(65537));
        assert_eq!(qty(r#"{"qty": 1e3}"#), Ok(1000));
        assert_eq!(qty(r#"{"qty": -0.0}"#), Ok(0));
        for refused in [
            r#"{"qty": 3.5}"#,
            r#"{"qty": -1}"#,
            r#"{"qty": 4294967296}"#,
            r#"{"qty": 1e300}"#,
            r#"{"qty": "3"}"#,
            r#"{"qty": null}"#,
            r#"{"qty": true}"#,
        ] {
            let error = qty(refused).expect_err(refused);
            assert!(error.contains("whole number"), "{refused}: {error}");
        }
    }
}
