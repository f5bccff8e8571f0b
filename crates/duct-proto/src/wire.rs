//! The encoding hot path: `Msg{events}` written straight from
//! [`duct_core::Event`]s into a caller's reused buffer, with no intermediate
//! protobuf structs and no allocation per event. It writes exactly the
//! bytes that `prost` writes for [`crate::Event::from_event`] (the tests
//! hold the two together), fields in tag order.

use bytes::{BufMut, BytesMut};
use duct_core::{Event, Metric};

/// A `Msg` too large for the 4-byte length prefix of TCP framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a message of {0} bytes does not fit a Riemann frame (4 GiB at most)")]
pub struct MessageTooLarge(pub usize);

// Keys (tag << 3 | wire type); every tag here is below 16, so one byte.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

const fn key(tag: u8, wire_type: u8) -> u8 {
    tag << 3 | wire_type
}

const MSG_EVENTS: u8 = key(6, LEN);
const EV_TIME: u8 = key(1, VARINT);
const EV_STATE: u8 = key(2, LEN);
const EV_SERVICE: u8 = key(3, LEN);
const EV_HOST: u8 = key(4, LEN);
const EV_DESCRIPTION: u8 = key(5, LEN);
const EV_TAGS: u8 = key(7, LEN);
const EV_TTL: u8 = key(8, FIXED32);
const EV_ATTRIBUTES: u8 = key(9, LEN);
const EV_TIME_MICROS: u8 = key(10, VARINT);
const EV_METRIC_SINT64: u8 = key(13, VARINT);
const EV_METRIC_D: u8 = key(14, FIXED64);
const EV_METRIC_F: u8 = key(15, FIXED32);
const ATTR_KEY: u8 = key(1, LEN);
const ATTR_VALUE: u8 = key(2, LEN);

fn varint_len(v: u64) -> usize {
    // 7 bits per byte; zero still takes one.
    ((64 - (v | 1).leading_zeros()) as usize).div_ceil(7)
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8(v as u8 | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Size of a length-delimited field (key, length, body) of `len` bytes.
fn delimited_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn put_str(buf: &mut BytesMut, key: u8, s: &str) {
    buf.put_u8(key);
    put_varint(buf, s.len() as u64);
    buf.put_slice(s.as_bytes());
}

fn attribute_len(k: &str, v: &str) -> usize {
    delimited_len(k.len()) + delimited_len(v.len())
}

/// Size of the encoded `Event` body.
fn event_len(ev: &Event) -> usize {
    let (time, micros) = ev.time_parts();
    let mut n = 1 + varint_len(time as u64);
    if let Some(state) = &ev.state {
        n += delimited_len(state.len());
    }
    n += delimited_len(ev.service.len()) + delimited_len(ev.host.len());
    if !ev.description.is_empty() {
        n += delimited_len(ev.description.len());
    }
    n += ev.tags.iter().map(|t| delimited_len(t.len())).sum::<usize>();
    n += 5; // ttl
    n += ev
        .attributes
        .iter()
        .map(|(k, v)| delimited_len(attribute_len(k, v)))
        .sum::<usize>();
    n += 1 + varint_len(micros as u64);
    n += match ev.metric {
        Some(Metric::Int(v)) => 1 + varint_len(zigzag(v)) + 5,
        Some(Metric::Float(_)) => 9 + 5,
        None => 0,
    };
    n
}

/// Bytes `ev` adds to a `Msg` (its `events` field: key, length, body).
pub fn event_field_len(ev: &Event) -> usize {
    delimited_len(event_len(ev))
}

/// Appends `ev` as one `events` field of a `Msg`.
pub fn put_event_field(buf: &mut BytesMut, ev: &Event) {
    let len = event_len(ev);
    buf.reserve(delimited_len(len));
    buf.put_u8(MSG_EVENTS);
    put_varint(buf, len as u64);
    let (time, micros) = ev.time_parts();
    buf.put_u8(EV_TIME);
    put_varint(buf, time as u64);
    if let Some(state) = &ev.state {
        put_str(buf, EV_STATE, state);
    }
    put_str(buf, EV_SERVICE, &ev.service);
    put_str(buf, EV_HOST, &ev.host);
    if !ev.description.is_empty() {
        put_str(buf, EV_DESCRIPTION, &ev.description);
    }
    for tag in &ev.tags {
        put_str(buf, EV_TAGS, tag);
    }
    buf.put_u8(EV_TTL);
    buf.put_f32_le(ev.ttl);
    for (k, v) in &ev.attributes {
        buf.put_u8(EV_ATTRIBUTES);
        put_varint(buf, attribute_len(k, v) as u64);
        put_str(buf, ATTR_KEY, k);
        put_str(buf, ATTR_VALUE, v);
    }
    buf.put_u8(EV_TIME_MICROS);
    put_varint(buf, micros as u64);
    match ev.metric {
        Some(Metric::Int(v)) => {
            buf.put_u8(EV_METRIC_SINT64);
            put_varint(buf, zigzag(v));
            buf.put_u8(EV_METRIC_F);
            buf.put_f32_le(v as f32);
        }
        Some(Metric::Float(v)) => {
            buf.put_u8(EV_METRIC_D);
            buf.put_f64_le(v);
            buf.put_u8(EV_METRIC_F);
            buf.put_f32_le(v as f32);
        }
        None => {}
    }
}

/// Appends a bare `Msg` carrying `events` (the UDP form: one per datagram).
pub fn put_events_msg<'a>(buf: &mut BytesMut, events: impl IntoIterator<Item = &'a Event>) {
    for ev in events {
        put_event_field(buf, ev);
    }
}

/// Appends a framed `Msg` carrying `events` (the TCP form: 4-byte
/// big-endian length, then the message); returns the frame's size. On
/// error `buf` is left as it was.
pub fn put_events_frame<'a>(
    buf: &mut BytesMut,
    events: impl IntoIterator<Item = &'a Event>,
) -> Result<usize, MessageTooLarge> {
    let start = buf.len();
    buf.put_u32(0);
    put_events_msg(buf, events);
    let len = buf.len() - start - 4;
    let Ok(prefix) = u32::try_from(len) else {
        buf.truncate(start);
        return Err(MessageTooLarge(len));
    };
    buf[start..start + 4].copy_from_slice(&prefix.to_be_bytes());
    Ok(len + 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn sample() -> Event {
        let mut ev = Event::new("h", "cpu");
        ev.state = Some("ok".into());
        ev.time = 1732500000.25;
        ev.description = "CPU 12%".into();
        ev.metric = Some(Metric::Float(0.12));
        ev.tags = vec!["a".into()];
        ev.attributes = vec![("k".into(), "v".into())];
        ev
    }

    fn via_prost(events: &[Event]) -> Vec<u8> {
        crate::Msg {
            events: events.iter().map(crate::Event::from_event).collect(),
            ..crate::Msg::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn varint_lengths() {
        for (v, n) in [(0u64, 1), (127, 1), (128, 2), (16383, 2), (16384, 3), (u64::MAX, 10)] {
            assert_eq!(varint_len(v), n, "{v}");
            let mut buf = BytesMut::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), n, "{v}");
        }
    }

    #[test]
    fn golden_bytes_of_one_event() {
        let mut buf = BytesMut::new();
        let size = put_events_frame(&mut buf, [&sample()]).unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0, 0, 0, 68,                                   // frame length
            0x32, 66,                                      // Msg.events, 66 bytes
            0x08, 0xa0, 0xb4, 0x8f, 0xba, 0x06,            // time 1732500000
            0x12, 2, b'o', b'k',                           // state
            0x1a, 3, b'c', b'p', b'u',                     // service
            0x22, 1, b'h',                                 // host
            0x2a, 7, b'C', b'P', b'U', b' ', b'1', b'2', b'%', // description
            0x3a, 1, b'a',                                 // tags
            0x45, 0x00, 0x00, 0x70, 0x42,                  // ttl 60.0
            0x4a, 6, 0x0a, 1, b'k', 0x12, 1, b'v',         // attributes {k: v}
            0x50, 0x90, 0xb1, 0xda, 0xb8, 0xb1, 0xf6, 0x89, 0x03, // time_micros
            0x71, 0xb8, 0x1e, 0x85, 0xeb, 0x51, 0xb8, 0xbe, 0x3f, // metric_d 0.12
            0x7d, 0x8f, 0xc2, 0xf5, 0x3d,                  // metric_f 0.12
        ];
        assert_eq!(&buf[..], expected);
        assert_eq!(size, expected.len());
        assert_eq!(&buf[4..], &via_prost(&[sample()])[..]);
    }

    #[test]
    fn golden_bytes_of_an_integer_metric() {
        let mut ev = Event::new("", "s");
        ev.time = 1.0;
        ev.ttl = 0.0;
        ev.metric = Some(Metric::Int(-2));
        let mut buf = BytesMut::new();
        put_events_msg(&mut buf, [&ev]);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x32, 23,
            0x08, 1,                        // time
            0x1a, 1, b's',                  // service
            0x22, 0,                        // host (empty)
            0x45, 0, 0, 0, 0,               // ttl
            0x50, 0xc0, 0x84, 0x3d,         // time_micros 1000000
            0x68, 3,                        // metric_sint64 -2 (zigzag 3)
            0x7d, 0x00, 0x00, 0x00, 0xc0,   // metric_f -2.0
        ];
        assert_eq!(&buf[..], expected);
    }

    #[test]
    fn matches_prost_for_every_shape_of_event() {
        let mut events = Vec::new();
        for metric in [
            None,
            Some(Metric::Int(0)),
            Some(Metric::Int(i64::MIN)),
            Some(Metric::Float(f64::NAN)),
        ] {
            for state in [None, Some(String::new()), Some("critical".to_string())] {
                let mut ev = sample();
                ev.metric = metric;
                ev.state = state;
                ev.time = -1.5;
                ev.description = "d".repeat(300);
                ev.tags = vec![String::new(), "x".repeat(200)];
                ev.attributes = vec![(String::new(), String::new()), ("a".repeat(130), "b".into())];
                events.push(ev);
            }
        }
        events.push(Event::new("", ""));
        let mut buf = BytesMut::new();
        put_events_msg(&mut buf, &events);
        let expected = via_prost(&events);
        // NaN != NaN: compare bytes, which is what goes on the wire.
        assert_eq!(&buf[..], &expected[..]);
        let total: usize = events.iter().map(event_field_len).sum();
        assert_eq!(total, buf.len());
    }

    #[test]
    fn frames_append_after_what_the_buffer_holds() {
        let mut buf = BytesMut::from(&b"xx"[..]);
        let n = put_events_frame(&mut buf, [&sample(), &sample()]).unwrap();
        assert_eq!(buf.len(), 2 + n);
        let len = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
        assert_eq!(len, n - 4);
        let msg = crate::Msg::decode(&buf[6..]).unwrap();
        assert_eq!(msg.events.len(), 2);
    }
}
