//! sFlow v5 datagrams built from the specification (sflow.org's "sFlow
//! Version 5"): what the collector's tests send, and the stream the
//! benchmark harness (`ductd-bench network`) sends at 10,000 datagrams a
//! second. Each datagram carries an optional counter sample (generic
//! interface counter records) and an optional flow sample of raw Ethernet
//! headers; [`super::datagram::decode`] reads both back.

use super::datagram::InterfaceCounters;

/// Appends XDR words.
fn put(out: &mut Vec<u8>, words: &[u32]) {
    for w in words {
        out.extend_from_slice(&w.to_be_bytes());
    }
}

/// Appends XDR variable-length opaque data (length, bytes, padding).
fn opaque(out: &mut Vec<u8>, data: &[u8]) {
    put(out, &[data.len() as u32]);
    out.extend_from_slice(data);
    out.resize(out.len() + (4 - data.len() % 4) % 4, 0);
}

/// The body of a generic interface counter record (format 1).
pub fn counters_record(c: &InterfaceCounters) -> Vec<u8> {
    let mut r = Vec::new();
    put(&mut r, &[c.if_index, 6]);
    put(&mut r, &[(c.if_speed >> 32) as u32, c.if_speed as u32, 1, 3]);
    put(
        &mut r,
        &[
            (c.in_octets >> 32) as u32,
            c.in_octets as u32,
            c.in_packets,
            7,
            8,
            9,
            c.in_errors,
            0,
        ],
    );
    put(
        &mut r,
        &[
            (c.out_octets >> 32) as u32,
            c.out_octets as u32,
            c.out_packets,
            1,
            2,
            3,
            c.out_errors,
            0,
        ],
    );
    r
}

/// An Ethernet frame carrying the headers of an IPv4 TCP packet of `len`
/// bytes from `src:sport` to `dst:dport`.
pub fn frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, len: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, (len >> 8) as u8, len as u8, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0; 16]);
    f
}

/// A datagram from `agent`: a counter sample of `counters` (left out when
/// empty), then a flow sample of `frames` sampled on ifIndex `input` (left
/// out when empty).
pub fn encode(
    agent: [u8; 4],
    sequence: u32,
    counters: &[InterfaceCounters],
    input: u32,
    frames: &[Vec<u8>],
) -> Vec<u8> {
    let samples = u32::from(!counters.is_empty()) + u32::from(!frames.is_empty());
    let mut d = Vec::new();
    put(&mut d, &[5, 1]);
    d.extend_from_slice(&agent);
    put(&mut d, &[0, sequence, 123_456, samples]);
    if !counters.is_empty() {
        // Counter sample (format 2).
        let mut s = Vec::new();
        put(&mut s, &[sequence, 1, counters.len() as u32]);
        for c in counters {
            put(&mut s, &[1]);
            opaque(&mut s, &counters_record(c));
        }
        put(&mut d, &[2]);
        opaque(&mut d, &s);
    }
    if !frames.is_empty() {
        // Flow sample (format 1) with raw packet header records.
        let mut s = Vec::new();
        put(
            &mut s,
            &[
                sequence,
                input,
                400,
                4000,
                0,
                input,
                0x4000_0000 | 7,
                frames.len() as u32,
            ],
        );
        for f in frames {
            let mut r = Vec::new();
            put(&mut r, &[1, f.len() as u32 + 4, 4]);
            opaque(&mut r, f);
            put(&mut s, &[1]);
            opaque(&mut s, &r);
        }
        put(&mut d, &[1]);
        opaque(&mut d, &s);
    }
    d
}
