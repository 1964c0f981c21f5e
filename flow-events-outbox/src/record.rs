//! How one pending event is laid out in the file.
//!
//! The key is the sequence number (a redb `u64`, so keys sort in publish
//! order). The value is a version byte, the time the event was stored (signed
//! microseconds since the Unix epoch, big-endian), then the event as JSON:
//!
//! ```text
//! [1u8][stored_at: i64 BE, 8 bytes][event JSON ...]
//! ```

use chrono::{DateTime, Utc};
use flow_events_core::{Event, StoredEvent};
use redb::TableDefinition;

/// The one table: sequence number to encoded record.
pub(crate) const PENDING: TableDefinition<'static, u64, &'static [u8]> =
    TableDefinition::new("pending");

/// Records that could not be decoded at a recovery, kept for inspection.
pub(crate) const UNREADABLE: TableDefinition<'static, u64, &'static [u8]> =
    TableDefinition::new("unreadable");

const VERSION: u8 = 1;
const HEADER: usize = 1 + 8;

/// Encodes `event` stored at `stored_at`.
pub(crate) fn encode(
    event: &Event,
    stored_at: DateTime<Utc>,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(HEADER + 256);
    out.push(VERSION);
    out.extend_from_slice(&stored_at.timestamp_micros().to_be_bytes());
    serde_json::to_writer(&mut out, event)?;
    Ok(out)
}

/// The record of an event already encoded as `json` (what [`encode`]
/// would write), stored at `stored_at`.
pub(crate) fn from_json(json: &[u8], stored_at: DateTime<Utc>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + json.len());
    out.push(VERSION);
    out.extend_from_slice(&stored_at.timestamp_micros().to_be_bytes());
    out.extend_from_slice(json);
    out
}

/// Decodes the record stored under `seq`; the reason when it cannot be read.
pub(crate) fn decode(seq: u64, bytes: &[u8]) -> Result<StoredEvent, String> {
    let (header, json) = bytes.split_at_checked(HEADER).ok_or_else(|| {
        format!(
            "record {seq} is {} bytes, shorter than its header",
            bytes.len()
        )
    })?;
    if header[0] != VERSION {
        return Err(format!("record {seq} has unknown version {}", header[0]));
    }
    let mut micros = [0u8; 8];
    micros.copy_from_slice(&header[1..]);
    let stored_at = DateTime::from_timestamp_micros(i64::from_be_bytes(micros))
        .ok_or_else(|| format!("record {seq} has an out-of-range time"))?;
    let event: Event = serde_json::from_slice(json)
        .map_err(|e| format!("record {seq} is not a valid event: {e}"))?;
    Ok(StoredEvent {
        seq,
        event,
        stored_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event::try_new("order.created", serde_json::json!({"order_id": 42}))
            .unwrap()
            .with_header("trace", "abc")
    }

    #[test]
    fn round_trip() {
        let e = event();
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let bytes = encode(&e, at).unwrap();
        let back = decode(7, &bytes).unwrap();
        assert_eq!(back.seq, 7);
        assert_eq!(back.event, e);
        assert_eq!(back.stored_at, at);
    }

    #[test]
    fn damaged_records_say_why() {
        let bytes = encode(&event(), Utc::now()).unwrap();
        assert!(
            decode(1, &bytes[..4])
                .unwrap_err()
                .contains("shorter than its header")
        );
        let mut wrong_version = bytes.clone();
        wrong_version[0] = 9;
        assert!(
            decode(1, &wrong_version)
                .unwrap_err()
                .contains("unknown version")
        );
        let cut = &bytes[..bytes.len() - 3];
        assert!(decode(1, cut).unwrap_err().contains("not a valid event"));
        let mut bad_time = bytes.clone();
        bad_time[1..9].copy_from_slice(&i64::MAX.to_be_bytes());
        assert!(
            decode(1, &bad_time)
                .unwrap_err()
                .contains("out-of-range time")
        );
    }
}
