//! The JSON text of an event's timestamp, written the way chrono's serde
//! writes it (RFC 3339 in UTC with `Z`; a fraction of 3, 6 or 9 digits, or
//! none, as the nanoseconds need), but formatted in one go.
//!
//! Hand-written because chrono's `Serialize` hands serde_json a `Display`
//! that writes one character at a time, each through the string escaper:
//! about 2 400 instructions per timestamp, written twice per publish (the
//! size check and the message body). This takes about a tenth of that. Years
//! outside 0..=9999 go to chrono as before.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serializer;

/// Serialises `time` exactly as `DateTime<Utc>`'s own `Serialize` does.
pub(crate) fn serialize<S: Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 32];
    match write(time, &mut buf) {
        Some(text) => serializer.serialize_str(text),
        None => serde::Serialize::serialize(time, serializer),
    }
}

/// Writes `time` into `buf`; `None` for a year chrono writes with a sign.
pub(crate) fn write<'a>(time: &DateTime<Utc>, buf: &'a mut [u8; 32]) -> Option<&'a str> {
    // The fields are read off the naive time: `DateTime`'s own accessors
    // apply the (zero) offset again for each field.
    let time = time.naive_utc();
    let year = time.year();
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut sec = time.second();
    let mut nano = time.nanosecond();
    // A leap second: chrono writes it as second 60.
    if nano >= 1_000_000_000 {
        sec += 1;
        nano -= 1_000_000_000;
    }
    let fraction = if nano == 0 {
        None
    } else if nano.is_multiple_of(1_000_000) {
        Some((nano / 1_000_000, 3))
    } else if nano.is_multiple_of(1_000) {
        Some((nano / 1_000, 6))
    } else {
        Some((nano, 9))
    };
    let mut w = Writer { buf, n: 0 };
    w.digits(year.unsigned_abs(), 4);
    w.byte(b'-');
    w.digits(time.month(), 2);
    w.byte(b'-');
    w.digits(time.day(), 2);
    w.byte(b'T');
    w.digits(time.hour(), 2);
    w.byte(b':');
    w.digits(time.minute(), 2);
    w.byte(b':');
    w.digits(sec, 2);
    if let Some((value, width)) = fraction {
        w.byte(b'.');
        w.digits(value, width);
    }
    w.byte(b'Z');
    let n = w.n;
    std::str::from_utf8(&buf[..n]).ok()
}

/// Writes ASCII into a buffer long enough for any timestamp of years 0..=9999.
struct Writer<'a> {
    buf: &'a mut [u8; 32],
    n: usize,
}

impl Writer<'_> {
    fn byte(&mut self, b: u8) {
        self.buf[self.n] = b;
        self.n += 1;
    }

    /// `value` in `width` digits, zero-padded.
    fn digits(&mut self, value: u32, width: u32) {
        for i in (0..width).rev() {
            self.byte(b'0' + ((value / 10u32.pow(i)) % 10) as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone};

    use super::*;

    fn ours(t: &DateTime<Utc>) -> String {
        let mut out = Vec::new();
        serialize(t, &mut serde_json::Serializer::new(&mut out)).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn same_as_chrono(t: DateTime<Utc>) {
        assert_eq!(ours(&t), serde_json::to_string(&t).unwrap(), "{t:?}");
    }

    #[test]
    fn writes_what_chrono_writes() {
        same_as_chrono(Utc::now());
        same_as_chrono(Utc.timestamp_opt(0, 0).unwrap());
        for nanos in [
            0,
            1,
            999,
            1_000,
            120_000,
            1_000_000,
            123_456_000,
            999_999_999,
            5,
        ] {
            same_as_chrono(Utc.timestamp_opt(1_764_650_000, nanos).unwrap());
        }
        let mut rng_state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2_000 {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            let secs = (rng_state % 253_402_300_799) as i64;
            let nanos = (rng_state >> 20) as u32 % 1_000_000_000;
            same_as_chrono(Utc.timestamp_opt(secs, nanos).unwrap());
            same_as_chrono(Utc.timestamp_opt(secs, nanos / 1_000 * 1_000).unwrap());
        }
    }

    #[test]
    fn leap_seconds_and_far_years_too() {
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        same_as_chrono(leap);
        let far = NaiveDate::from_ymd_opt(12_345, 1, 2)
            .unwrap()
            .and_hms_opt(3, 4, 5)
            .unwrap()
            .and_utc();
        same_as_chrono(far);
        let before = NaiveDate::from_ymd_opt(-1, 1, 2)
            .unwrap()
            .and_hms_opt(3, 4, 5)
            .unwrap()
            .and_utc();
        same_as_chrono(before);
    }
}
