//! Unit tests of the event envelope, its id and its type.

use super::*;

#[test]
fn valid_types() {
    for t in ["order.created", "a", "user-profile.updated_v2", "ü.ß"] {
        assert!(EventType::new(t).is_ok(), "{t}");
    }
}

#[test]
fn invalid_types() {
    assert_eq!(EventType::new(""), Err(InvalidEventType::Empty));
    assert!(matches!(
        EventType::new("a".repeat(256)),
        Err(InvalidEventType::TooLong { len: 256 })
    ));
    assert!(EventType::new("a".repeat(255)).is_ok());
    for (t, c) in [
        ("order created", ' '),
        ("order.*", '*'),
        ("#", '#'),
        ("a\tb", '\t'),
    ] {
        match EventType::new(t) {
            Err(InvalidEventType::InvalidChar { found, .. }) => assert_eq!(found, c),
            other => panic!("{t:?}: {other:?}"),
        }
    }
    for t in [".a", "a.", "a..b"] {
        assert!(matches!(
            EventType::new(t),
            Err(InvalidEventType::EmptyWord { .. })
        ));
    }
}

/// Every type of up to four characters from an alphabet of each kind is
/// accepted exactly when the rules say so, ASCII or not (the ASCII fast
/// path and the general one agree).
#[test]
fn types_follow_the_rules_on_every_short_string() {
    let alphabet = [
        'a', 'Z', '-', '.', '*', '#', ' ', '\t', '\u{7f}', 'é', '\u{a0}',
    ];
    let rule = |t: &str| {
        !t.is_empty()
            && !t
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '#')
            && !t.split('.').any(str::is_empty)
    };
    let mut words = vec![String::new()];
    for _ in 0..4 {
        let longer: Vec<String> = words
            .iter()
            .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
            .collect();
        for t in &longer {
            assert_eq!(EventType::new(t.as_str()).is_ok(), rule(t), "{t:?}");
        }
        words = longer;
    }
}

#[test]
fn try_new_hands_back_the_payload() {
    let err = Event::try_new("bad type", serde_json::json!({"k": 1})).unwrap_err();
    assert_eq!(err.data, serde_json::json!({"k": 1}));
    assert!(matches!(
        err.reason,
        InvalidEventReason::Type(InvalidEventType::InvalidChar { .. })
    ));
}

#[test]
fn try_new_hands_back_a_payload_that_cannot_be_encoded() {
    // serde_json refuses map keys that are not strings.
    let data: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into_iter().collect();
    let err = Event::try_new("a", data.clone()).unwrap_err();
    assert_eq!(err.data, data);
    assert!(matches!(err.reason, InvalidEventReason::Data(_)), "{err}");
}

#[test]
fn debug_shows_the_envelope_not_the_payload() {
    let e = Event::try_new("a.b", serde_json::json!({"secret": "s3cr3t"})).unwrap();
    let text = format!("{e:?}");
    assert!(
        text.contains("a.b") && text.contains("data_bytes: 19"),
        "{text}"
    );
    assert!(!text.contains("s3cr3t"), "{text}");
    let err = Event::try_new("a b", serde_json::json!({"secret": "s3cr3t"})).unwrap_err();
    assert!(!format!("{err:?} {err}").contains("s3cr3t"));
}

#[test]
fn typed_payloads_are_encoded_once_and_read_back() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Order<'a> {
        id: u64,
        note: &'a str,
    }
    let e = Event::try_new("order.created", Order { id: 7, note: "hi" }).unwrap();
    assert_eq!(e.raw_data().get(), r#"{"id":7,"note":"hi"}"#);
    assert_eq!(
        e.data_as::<Order<'_>>().unwrap(),
        Order { id: 7, note: "hi" }
    );
    assert_eq!(e.data(), serde_json::json!({"id": 7, "note": "hi"}));
    assert_eq!(e.clone().into_data()["note"], "hi");
}

/// The wire format is the one of the `Value` payloads before: the same bytes.
#[test]
fn encoding_is_byte_for_byte_the_envelope() {
    let id: EventId = "01a219ad-bc7d-74c2-b81d-e16adffe2f1b".parse().unwrap();
    let at = DateTime::parse_from_rfc3339("2026-01-01T12:00:00.123456Z")
        .unwrap()
        .with_timezone(&Utc);
    let headers = [("k".to_owned(), "v".to_owned())].into_iter().collect();
    let data = serde_json::json!({"b": 1, "a": [1, 2.5, "ü\n"], "c": null});
    let e = Event::from_parts(id, EventType::new("a.b").unwrap(), data, at, headers);
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"id":"01a219ad-bc7d-74c2-b81d-e16adffe2f1b","type":"a.b","data":{"a":[1,2.5,"ü\n"],"b":1,"c":null},"timestamp":"2026-01-01T12:00:00.123456Z","headers":{"k":"v"}}"#
    );
}

#[test]
fn from_json_keeps_the_text_and_validates_it() {
    let t = EventType::new("a").unwrap();
    let e = Event::from_json(t.clone(), b" {\"x\": [1, 2]} ").unwrap();
    assert_eq!(e.raw_data().get(), r#"{"x": [1, 2]}"#);
    assert_eq!(e.data()["x"][1], 2);
    let deep_ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
    assert!(Event::from_json(t.clone(), deep_ok.as_bytes()).is_ok());
    let too_deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let lone_surrogate = r#""\ud800""#;
    for bad in [
        "",
        "{",
        "{} x",
        "[1,]",
        "1e400",
        "{\"a\": -1e999}",
        lone_surrogate,
        too_deep.as_str(),
    ] {
        assert!(
            Event::from_json(t.clone(), bad.as_bytes()).is_err(),
            "{bad:?} was accepted"
        );
    }
    assert!(Event::from_json(t, b"\"\xff\"").is_err());
}

#[test]
fn decoding_refuses_a_payload_a_value_cannot_hold() {
    let wire = r#"{"id":"01a219ad-bc7d-74c2-b81d-e16adffe2f1b","type":"a","data":[1e400],"timestamp":"2026-01-01T00:00:00Z"}"#;
    assert!(serde_json::from_str::<Event>(wire).is_err());
    let fine = wire.replace("1e400", "1e300");
    let e: Event = serde_json::from_str(&fine).unwrap();
    assert_eq!(e.raw_data().get(), "[1e300]");
}

#[test]
fn serde_round_trip_and_shape() {
    let event = Event::try_new("order.created", serde_json::json!({"n": "ünï"}))
        .unwrap()
        .with_header("traceparent", "00-abc");
    let json = serde_json::to_value(&event).unwrap();
    let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["data", "headers", "id", "timestamp", "type"]);
    let back: Event = serde_json::from_value(json).unwrap();
    assert_eq!(back, event);
    assert_eq!(
        event.encoded_len(),
        serde_json::to_vec(&event).unwrap().len()
    );
}

#[test]
fn check_size_agrees_with_the_encoding() {
    let samples = [
        serde_json::json!(null),
        serde_json::json!({"a": [1, 2.5, -3e300, true, null], "ü\"\n": "\u{1}x\"y"}),
        serde_json::json!("x".repeat(1000)),
    ];
    for data in samples {
        let e = Event::try_new("a.b", data).unwrap().with_header("k", "v\"");
        let exact = e.encoded_len();
        assert_eq!(e.check_size(exact), Ok(()));
        assert_eq!(e.check_size(exact - 1), Err(exact));
        assert_eq!(e.check_size(usize::MAX), Ok(()));
    }
}

#[test]
fn timestamp_has_at_most_microseconds() {
    let e = Event::try_new("a", serde_json::Value::Null).unwrap();
    let json = serde_json::to_value(&e).unwrap();
    let ts = json["timestamp"].as_str().unwrap();
    let fraction = ts
        .split('.')
        .nth(1)
        .map_or(0, |f| f.trim_end_matches('Z').len());
    assert!(fraction <= 6, "{ts}");
}

#[test]
fn deserialising_validates_the_type() {
    let json = serde_json::json!({
        "id": EventId::new(), "type": "a b", "data": null,
        "timestamp": "2026-01-01T00:00:00Z"
    });
    assert!(serde_json::from_value::<Event>(json).is_err());
}

#[test]
fn ids_are_time_ordered() {
    let a = EventId::new();
    let b = EventId::new();
    assert!(a < b);
    assert_eq!(a.as_uuid().get_version_num(), 7);
}
