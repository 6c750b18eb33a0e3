//! Time helpers: the database stores microseconds since the Unix epoch; the API speaks
//! `google.protobuf.Timestamp`.

use pbjson_types::Timestamp;

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Microseconds since the epoch → Timestamp.
pub fn ts(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

/// Timestamp → microseconds since the epoch.
pub fn micros(t: &Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(t.nanos) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_including_before_epoch() {
        for m in [0, 1, 999_999, 1_700_000_000_123_456, -1, -1_000_001] {
            assert_eq!(micros(&ts(m)), m);
        }
    }
}
