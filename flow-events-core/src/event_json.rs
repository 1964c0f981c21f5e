//! An event's JSON written in one go: byte for byte what its `Serialize`
//! gives through serde_json, without serde's map and string machinery.
//!
//! Hand-written for the publish path, which encodes every event once (the
//! size check, then the message body): serde_json writes each key and the
//! event type through its string escaper, one byte at a time, and goes
//! through a map serialiser per field. Strings that need escaping (a header
//! with a quote, say) still go through serde_json's escaper, and a timestamp
//! chrono writes with a sign (years outside 0..=9999) through chrono.

use crate::event::Event;
use crate::event_time;

/// Appends the JSON of `event` to `out`: what `serde_json::to_writer(out,
/// event)` writes.
pub(crate) fn write(event: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"id":""#);
    let mut id = uuid::Uuid::encode_buffer();
    let id = event.id().as_uuid().hyphenated().encode_lower(&mut id);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(br#"","type":"#);
    string(out, event.event_type().as_str());
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(event.raw_data().get().as_bytes());
    out.extend_from_slice(br#","timestamp":"#);
    let mut time = [0u8; 32];
    match event_time::write(&event.timestamp(), &mut time) {
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        }
        // Writing to a `Vec` never fails, and a timestamp always serialises.
        None => {
            let _ = serde_json::to_writer(&mut *out, &event.timestamp());
        }
    }
    let headers = event.headers();
    if !headers.is_empty() {
        out.extend_from_slice(br#","headers":{"#);
        for (i, (key, value)) in headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, key);
            out.push(b':');
            string(out, value);
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// `s` as a JSON string: copied when nothing in it needs escaping (no
/// quote, backslash or control character), else through serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a `Vec` never fails, and a string always serialises.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{DateTime, TimeZone, Utc};

    use super::*;
    use crate::event::{EventId, EventType};

    fn written(event: &Event) -> Vec<u8> {
        let mut out = Vec::new();
        write(event, &mut out);
        out
    }

    fn event(event_type: &str, at: DateTime<Utc>, headers: &[(&str, &str)]) -> Event {
        let headers: BTreeMap<String, String> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let data = serde_json::json!({"b": 1, "a": [1, 2.5, "ü\n\"q\""], "c": null});
        Event::from_parts(
            EventId::new(),
            EventType::new(event_type).unwrap(),
            data,
            at,
            headers,
        )
    }

    #[test]
    fn the_same_bytes_as_serde_json() {
        let now = Utc::now();
        let cases = [
            event("order.created", now, &[]),
            event("a.b", now, &[("k", "v"), ("traceparent", "00-abc-01")]),
            event(
                "quo\"te\\d",
                now,
                &[("he\"ad", "va\\lue\n\t\u{1}ü"), ("", "")],
            ),
            event(
                "x",
                Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap(),
                &[],
            ),
            event(
                "far",
                Utc.with_ymd_and_hms(12_000, 1, 1, 0, 0, 0).unwrap(),
                &[],
            ),
            event("del", now, &[("é", "\u{7f}")]),
        ];
        for e in &cases {
            assert_eq!(
                String::from_utf8(written(e)).unwrap(),
                serde_json::to_string(e).unwrap()
            );
        }
    }

    #[test]
    fn random_times_and_ids_agree() {
        for i in 0..2_000_i64 {
            let secs = fastrand::i64(0..253_402_300_799);
            let nanos = match i % 4 {
                0 => 0,
                1 => fastrand::u32(0..1_000) * 1_000_000,
                2 => fastrand::u32(0..1_000_000) * 1_000,
                _ => fastrand::u32(0..1_000_000_000),
            };
            let at = Utc.timestamp_opt(secs, nanos).unwrap();
            let e = event("t.random", at, &[("n", &i.to_string())]);
            assert_eq!(written(&e), serde_json::to_vec(&e).unwrap());
        }
    }
}
