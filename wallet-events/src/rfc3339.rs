//! Timestamps on the wire: RFC 3339 in UTC with a `Z`, fractional seconds
//! as chrono writes them by default (none, 3, 6 or 9 digits, the fewest
//! that keep the value). Use as `#[serde(with = "wallet_events::rfc3339")]`.
//!
//! The bytes are exactly chrono's own serialization (a test holds them to
//! it); writing the digits directly instead of through `core::fmt` makes
//! it several times cheaper, and every event and API entry carries one.
//! Reading takes any RFC 3339 offset, with chrono's dedicated parser.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match write(at, &mut buf) {
        Some(len) => serializer.serialize_str(
            std::str::from_utf8(&buf[..len]).expect("digits and separators are ASCII"),
        ),
        // Years outside 0..=9999: chrono's own (signed) form.
        None => serde::Serialize::serialize(at, serializer),
    }
}

/// Appends `at` to `out` as a JSON string, exactly as [`serialize`]
/// writes it.
pub fn push_quoted(out: &mut String, at: &DateTime<Utc>) {
    let mut buf = [0u8; 30];
    match write(at, &mut buf) {
        Some(len) => {
            out.push('"');
            out.push_str(std::str::from_utf8(&buf[..len]).expect("ASCII"));
            out.push('"');
        }
        None => out.push_str(&serde_json::to_string(at).expect("a time serializes")),
    }
}

/// Writes `at` into `buf`; `None` for a year outside 0..=9999.
fn write(at: &DateTime<Utc>, buf: &mut [u8; 30]) -> Option<usize> {
    let year = u32::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
    let (mut second, mut nano) = (at.second(), at.nanosecond());
    // A leap second is carried in the nanoseconds, as chrono writes it.
    if nano >= 1_000_000_000 {
        second += 1;
        nano -= 1_000_000_000;
    }
    let mut put = |at: usize, value: u32, digits: usize| {
        let mut v = value;
        for i in (0..digits).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, at.month(), 2);
    put(8, at.day(), 2);
    put(11, at.hour(), 2);
    put(14, at.minute(), 2);
    put(17, second, 2);
    let mut len = 19;
    let (fraction, digits) = if nano == 0 {
        (0, 0)
    } else if nano % 1_000_000 == 0 {
        (nano / 1_000_000, 3)
    } else if nano % 1_000 == 0 {
        (nano / 1_000, 6)
    } else {
        (nano, 9)
    };
    if digits > 0 {
        put(20, fraction, digits);
        len += 1 + digits;
    }
    for (at, byte) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        buf[at] = byte;
    }
    if digits > 0 {
        buf[19] = b'.';
    }
    buf[len] = b'Z';
    Some(len + 1)
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Ours(#[serde(with = "super")] DateTime<Utc>);

    #[test]
    fn writes_exactly_what_chrono_writes_and_reads_it_back() {
        let base = Utc.with_ymd_and_hms(2026, 11, 30, 21, 5, 9).unwrap();
        let mut cases = vec![
            base,
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
        ];
        for nanos in [
            1,
            7_000,
            120_000_000,
            123_456_000,
            123_456_789,
            999_999_999,
            1_500_000_000,
        ] {
            cases.push(base.with_nanosecond(nanos).unwrap());
        }
        // A spread of microsecond timestamps, as the databases give them.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let micros = (state % 253_402_300_799_000_000) as i64;
            cases.push(DateTime::from_timestamp_micros(micros).unwrap());
        }
        for at in cases {
            let ours = serde_json::to_string(&Ours(at)).unwrap();
            let chrono = serde_json::to_string(&at).unwrap();
            assert_eq!(ours, chrono, "{at:?}");
            let back: Ours = serde_json::from_str(&ours).unwrap();
            // A leap second reads back as the next second's start, as
            // with chrono's own format.
            if at.nanosecond() < 1_000_000_000 {
                assert_eq!(back.0, at);
            }
        }
        let far = Utc.with_ymd_and_hms(12_000, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            serde_json::to_string(&Ours(far)).unwrap(),
            serde_json::to_string(&far).unwrap()
        );
    }
}
