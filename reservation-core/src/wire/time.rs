//! Timestamps in JSON bodies: RFC 3339 UTC with milliseconds (`2026-11-24T07:00:00.123Z`),
//! the format of every `expires_at`, `created_at`, `updated_at` and `generated_at`.

use std::time::{Duration, UNIX_EPOCH};

/// The last millisecond RFC 3339's four-digit year can write: 9999-12-31T23:59:59.999Z.
const MAX_MS: i128 = 253_402_300_799_999;

/// Milliseconds since the epoch (any integer type: the gateway's `u64`, SQL's `i64`) as
/// RFC 3339 UTC with milliseconds. An instant before 1970 or after year 9999 is written as
/// the nearest one that can be (neither comes from a clock of this system; the formatter
/// would refuse them, and a panic here would take a worker down).
pub fn rfc3339_ms(epoch_ms: impl Into<i128>) -> String {
    let clamped = epoch_ms.into().clamp(0, MAX_MS);
    // In range by the clamp; the fallback is never taken.
    let ms = u64::try_from(clamped).unwrap_or(0);
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_ms(0u64), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_935_600_123u64), "2026-11-29T07:00:00.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000u64), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123i64), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_795_503_600_000i64), "2026-11-24T07:00:00.000Z");
        assert_eq!(rfc3339_ms(4_107_542_400_000i64), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn instants_it_cannot_write_are_clamped_not_a_panic() {
        assert_eq!(rfc3339_ms(-1i64), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(i64::MIN), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            rfc3339_ms(253_402_300_799_999u64),
            "9999-12-31T23:59:59.999Z"
        );
    }
}
