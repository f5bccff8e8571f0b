//! Checked against the bytes Duct 2.2.1's own encoders write for the same
//! events (tests/data/nats, made by make_reference.py there).

use super::*;

macro_rules! reference {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/nats/", $name))
    };
}

fn full() -> Event {
    let mut ev = Event::new("web1.example", "cpu");
    ev.state = Some("ok".into());
    ev.description = "CPU 12% été \"quoted\"".into();
    ev.metric = Some(Metric::Float(0.12));
    ev.ttl = 60.0;
    ev.tags = vec!["a".into(), "b".into()];
    ev.time = 1732500000.25;
    ev.attributes = vec![("dc".into(), "west".into()), ("rack".into(), "r1".into())];
    ev
}

fn int() -> Event {
    let mut ev = Event::new("db1", "load.count");
    ev.state = Some(String::new());
    ev.metric = Some(Metric::Int(5));
    ev.ttl = 30.5;
    ev.time = 1700000000.0;
    ev
}

fn none() -> Event {
    let mut ev = Event::new("h", "ping");
    ev.state = Some("critical".into());
    ev.description = "unreachable".into();
    ev.metric = None;
    ev.ttl = 120.0;
    ev.tags = vec!["net".into()];
    ev.time = 1.5e-7;
    ev
}

fn tiny() -> Event {
    let mut ev = Event::new("h", "rate");
    ev.state = Some("ok".into());
    ev.metric = Some(Metric::Float(1.5e-7));
    ev.time = 12345678901234567.0;
    ev
}

fn encoded(format: Format, ev: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    encode(format, ev, &mut out);
    out
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_format_is_written_byte_for_byte_as_duct_writes_it() {
    let cases: [(&str, Event, [&[u8]; 4]); 4] = [
        (
            "full",
            full(),
            [
                reference!("full.json"),
                reference!("full.senml-json"),
                reference!("full.senml-cbor"),
                reference!("full.senml-cbor-extended"),
            ],
        ),
        (
            "int",
            int(),
            [
                reference!("int.json"),
                reference!("int.senml-json"),
                reference!("int.senml-cbor"),
                reference!("int.senml-cbor-extended"),
            ],
        ),
        (
            "none",
            none(),
            [
                reference!("none.json"),
                reference!("none.senml-json"),
                reference!("none.senml-cbor"),
                reference!("none.senml-cbor-extended"),
            ],
        ),
        (
            "tiny",
            tiny(),
            [
                reference!("tiny.json"),
                reference!("tiny.senml-json"),
                reference!("tiny.senml-cbor"),
                reference!("tiny.senml-cbor-extended"),
            ],
        ),
    ];
    let formats = [
        Format::Json,
        Format::SenmlJson,
        Format::SenmlCbor,
        Format::SenmlCborExtended,
    ];
    for (name, ev, refs) in cases {
        for (format, want) in formats.iter().zip(refs) {
            let got = encoded(*format, &ev);
            assert_eq!(show(&got), show(want), "{name} as {}", format.name());
            assert_eq!(got, want, "{name} as {}", format.name());
        }
    }
}

const DEFAULTS: Defaults<'static> = Defaults {
    host: "here",
    ttl: 60.0,
};

#[test]
fn duct_payloads_read_back_as_the_events_they_came_from() {
    let ev = decode(Format::SenmlJson, reference!("full.senml-json"), &DEFAULTS).unwrap();
    assert_eq!(ev, full());
    let ev = decode(
        Format::SenmlCborExtended,
        reference!("full.senml-cbor-extended"),
        &DEFAULTS,
    )
    .unwrap();
    assert_eq!(ev, full());
    let ev = decode(Format::Json, reference!("full.json"), &DEFAULTS).unwrap();
    assert_eq!(ev, full());
    // As Duct reads them: SenML metrics are floats, the state is "ok"
    // when none is said, the TTL the default when none is said.
    let ev = decode(Format::SenmlCbor, reference!("int.senml-cbor"), &DEFAULTS).unwrap();
    assert_eq!(ev.metric, Some(Metric::Float(5.0)));
    assert_eq!((ev.host.as_str(), ev.service.as_str()), ("db1", "load.count"));
    assert_eq!((ev.state.as_deref(), ev.ttl, ev.time), (Some("ok"), 60.0, 1700000000.0));
    let ev = decode(Format::Json, reference!("int.json"), &DEFAULTS).unwrap();
    assert_eq!(ev, int());
    let ev = decode(Format::SenmlJson, reference!("none.senml-json"), &DEFAULTS).unwrap();
    assert_eq!(ev, none());
    let ev = decode(
        Format::SenmlCborExtended,
        reference!("tiny.senml-cbor-extended"),
        &DEFAULTS,
    )
    .unwrap();
    assert_eq!(ev, tiny());
}

#[test]
fn what_is_written_reads_back_in_every_format() {
    let mut ev = full();
    ev.metric = Some(Metric::Float(f64::INFINITY));
    ev.attributes.push(("dc".into(), "east".into()));
    for format in [Format::Json, Format::SenmlJson, Format::SenmlCborExtended] {
        let back = decode(format, &encoded(format, &ev), &DEFAULTS).unwrap();
        assert_eq!(back.metric, ev.metric, "{}", format.name());
        let mut attributes = back.attributes.clone();
        attributes.sort();
        assert_eq!(
            attributes,
            [("dc".to_string(), "east".to_string()), ("rack".into(), "r1".into())],
            "a repeated key once, with its last value"
        );
    }
}

#[test]
fn missing_fields_take_the_defaults_and_rfc_labels_are_read() {
    let ev = decode(Format::SenmlJson, br#"[{"n": "temp", "v": 21}]"#, &DEFAULTS).unwrap();
    assert_eq!((ev.host.as_str(), ev.service.as_str()), ("here", "temp"));
    assert_eq!(ev.metric, Some(Metric::Float(21.0)));
    let ev = decode(
        Format::Json,
        br#"{"host": "ductd-host", "service": "s", "metric": 2}"#,
        &DEFAULTS,
    )
    .unwrap();
    assert_eq!((ev.host.as_str(), ev.metric), ("ductd-host", Some(Metric::Int(2))));
    // RFC 8428 CBOR: [{-2: "dev/", 0: "t", 2: 1.5}]
    let mut data = Vec::new();
    cbor::array(&mut data, 1);
    cbor::map(&mut data, 3);
    cbor::int(&mut data, -2);
    cbor::text(&mut data, "dev/");
    cbor::int(&mut data, 0);
    cbor::text(&mut data, "t");
    cbor::int(&mut data, 2);
    cbor::float(&mut data, 1.5);
    let ev = decode(Format::SenmlCbor, &data, &DEFAULTS).unwrap();
    assert_eq!((ev.host.as_str(), ev.service.as_str()), ("dev", "t"));
    assert_eq!(ev.metric, Some(Metric::Float(1.5)));
}

#[test]
fn garbage_is_an_error() {
    for (format, data) in [
        (Format::Json, &b"not json"[..]),
        (Format::Json, b"[1]"),
        (Format::Json, br#"{"service": 3}"#),
        (Format::SenmlJson, b"{}"),
        (Format::SenmlJson, b"[]"),
        (Format::SenmlJson, br#"[{"n": 1}]"#),
        (Format::SenmlCbor, b"\xff\xff"),
        (Format::SenmlCbor, b"\x80"),
        (Format::SenmlCbor, b"\x81\x01"),
    ] {
        assert!(
            decode(format, data, &DEFAULTS).is_err(),
            "{}: {:?}",
            format.name(),
            show(data)
        );
    }
}

#[test]
fn floats_are_written_as_python_writes_them() {
    for (v, want) in [
        (0.1, "0.1"),
        (60.0, "60.0"),
        (-2.5, "-2.5"),
        (1e16, "1e+16"),
        (1.5e-7, "1.5e-07"),
        (0.0001, "0.0001"),
        (123456789012345.6, "123456789012345.6"),
        (1e22, "1e+22"),
        (0.0, "0.0"),
    ] {
        assert_eq!(python_repr(v), want);
    }
}
