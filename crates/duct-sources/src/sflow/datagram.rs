//! sFlow version 5 datagrams (sflow.org's "sFlow Version 5", XDR encoded):
//! a pure decoder of what `duct.sources.sflow.sFlow` needs — the generic
//! interface counters of counter samples, and the IPv4 conversations of
//! flow samples (sampled Ethernet headers, or IPv4 flow records).
//!
//! Datagrams come from the network: the decoder never panics, never reads
//! past a length it was given, skips records and samples of formats it
//! does not know (each carries its own length), and refuses a datagram
//! whose lengths do not add up.
//!
//! The tests decode datagrams made by [`super::generate`] (written from the
//! specification) and datagrams captured from pmacct's sFlow agent
//! (`tests/fixtures/sflow/`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// The generic interface counters (counter record format 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InterfaceCounters {
    pub if_index: u32,
    pub if_speed: u64,
    pub in_octets: u64,
    pub in_packets: u32,
    pub in_errors: u32,
    pub out_octets: u64,
    pub out_packets: u32,
    pub out_errors: u32,
}

/// One sampled IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conversation {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Ports for TCP and UDP, `None` otherwise.
    pub ports: Option<(u16, u16)>,
    /// The IP packet's total length.
    pub bytes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sample {
    Counters(Vec<InterfaceCounters>),
    Flow {
        input: u32,
        output: u32,
        sampling_rate: u32,
        packets: Vec<Conversation>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub agent: IpAddr,
    pub sub_agent: u32,
    pub sequence: u32,
    pub uptime_ms: u32,
    pub samples: Vec<Sample>,
}

struct Xdr<'a> {
    b: &'a [u8],
}

impl<'a> Xdr<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return Err(DecodeError(format!("truncated in {what}")));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok((u64::from(self.u32(what)?) << 32) | u64::from(self.u32(what)?))
    }

    /// A variable-length opaque: its length, its bytes, padding to 4.
    fn opaque(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)? as usize;
        let data = self.take(len, what)?;
        self.take((4 - len % 4) % 4, what)?;
        Ok(data)
    }
}

/// Decodes one sFlow v5 datagram.
pub fn decode(bytes: &[u8]) -> Result<Datagram, DecodeError> {
    let mut x = Xdr { b: bytes };
    let version = x.u32("the version")?;
    if version != 5 {
        return Err(DecodeError(format!("sFlow version {version}, not 5")));
    }
    let agent = match x.u32("the agent address type")? {
        1 => {
            let b = x.take(4, "the agent address")?;
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
        2 => {
            let b: [u8; 16] = x.take(16, "the agent address")?.try_into().unwrap_or([0; 16]);
            IpAddr::V6(Ipv6Addr::from(b))
        }
        t => return Err(DecodeError(format!("agent address type {t}"))),
    };
    let sub_agent = x.u32("the sub-agent id")?;
    let sequence = x.u32("the sequence number")?;
    let uptime_ms = x.u32("the uptime")?;
    let count = x.u32("the sample count")?;
    let mut samples = Vec::new();
    for _ in 0..count {
        let format = x.u32("a sample's format")?;
        let body = x.opaque("a sample")?;
        // Enterprise 0 only; the low 12 bits are the format.
        let sample = match format {
            1 => Some(flow_sample(body, false)?),
            2 => Some(counter_sample(body, false)?),
            3 => Some(flow_sample(body, true)?),
            4 => Some(counter_sample(body, true)?),
            _ => None,
        };
        samples.extend(sample);
    }
    if !x.b.is_empty() {
        return Err(DecodeError(format!("{} bytes after the last sample", x.b.len())));
    }
    Ok(Datagram {
        agent,
        sub_agent,
        sequence,
        uptime_ms,
        samples,
    })
}

fn counter_sample(body: &[u8], expanded: bool) -> Result<Sample, DecodeError> {
    let mut x = Xdr { b: body };
    x.u32("the counter sample's sequence")?;
    x.take(if expanded { 8 } else { 4 }, "the counter sample's source")?;
    let records = x.u32("the counter record count")?;
    let mut out = Vec::new();
    for _ in 0..records {
        let format = x.u32("a counter record's format")?;
        let data = x.opaque("a counter record")?;
        if format == 1 {
            let mut r = Xdr { b: data };
            let if_index = r.u32("ifIndex")?;
            r.u32("ifType")?;
            let if_speed = r.u64("ifSpeed")?;
            r.take(8, "ifDirection and ifStatus")?;
            let in_octets = r.u64("ifInOctets")?;
            let in_packets = r.u32("ifInUcastPkts")?;
            r.take(12, "the in counters")?;
            let in_errors = r.u32("ifInErrors")?;
            r.u32("ifInUnknownProtos")?;
            let out_octets = r.u64("ifOutOctets")?;
            let out_packets = r.u32("ifOutUcastPkts")?;
            r.take(12, "the out counters")?;
            let out_errors = r.u32("ifOutErrors")?;
            r.u32("ifPromiscuousMode")?;
            out.push(InterfaceCounters {
                if_index,
                if_speed,
                in_octets,
                in_packets,
                in_errors,
                out_octets,
                out_packets,
                out_errors,
            });
        }
    }
    Ok(Sample::Counters(out))
}

fn flow_sample(body: &[u8], expanded: bool) -> Result<Sample, DecodeError> {
    let mut x = Xdr { b: body };
    x.u32("the flow sample's sequence")?;
    x.take(if expanded { 8 } else { 4 }, "the flow sample's source")?;
    let sampling_rate = x.u32("the sampling rate")?;
    x.take(8, "the sample pool and drops")?;
    let (input, output) = if expanded {
        x.u32("the input format")?;
        let i = x.u32("the input")?;
        x.u32("the output format")?;
        (i, x.u32("the output")?)
    } else {
        // The top two bits are the format; the rest the ifIndex.
        (x.u32("the input")? & 0x3fff_ffff, x.u32("the output")? & 0x3fff_ffff)
    };
    let records = x.u32("the flow record count")?;
    let mut packets = Vec::new();
    for _ in 0..records {
        let format = x.u32("a flow record's format")?;
        let data = x.opaque("a flow record")?;
        match format {
            // Raw packet header: protocol 1 is Ethernet, 11 a bare IPv4
            // packet (what pmacct sends for frames captured on Linux's
            // loopback).
            1 => {
                let mut r = Xdr { b: data };
                let protocol = r.u32("the header protocol")?;
                r.take(8, "the frame length and stripped bytes")?;
                let header = r.opaque("the sampled header")?;
                match protocol {
                    1 => packets.extend(ethernet(header)),
                    11 => packets.extend(ipv4(header)),
                    _ => {}
                }
            }
            // IPv4 data.
            3 => {
                let mut r = Xdr { b: data };
                let bytes = r.u32("the IP length")?;
                let proto = r.u32("the IP protocol")?;
                let s = r.take(4, "the source address")?;
                let d = r.take(4, "the destination address")?;
                let sport = r.u32("the source port")?;
                let dport = r.u32("the destination port")?;
                packets.push(Conversation {
                    src: Ipv4Addr::new(s[0], s[1], s[2], s[3]),
                    dst: Ipv4Addr::new(d[0], d[1], d[2], d[3]),
                    ports: matches!(proto, 6 | 17).then_some((sport as u16, dport as u16)),
                    bytes,
                });
            }
            _ => {}
        }
    }
    Ok(Sample::Flow {
        input,
        output,
        sampling_rate,
        packets,
    })
}

/// The IPv4 packet in a sampled Ethernet frame (802.1Q tags skipped), if
/// it is one and enough of it was sampled.
fn ethernet(frame: &[u8]) -> Option<Conversation> {
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        at += 4;
        ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    }
    if ethertype != 0x0800 {
        return None;
    }
    ipv4(frame.get(at + 2..)?)
}

/// The conversation of a sampled IPv4 packet's headers, if enough of them
/// were sampled.
fn ipv4(ip: &[u8]) -> Option<Conversation> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let bytes = u32::from(u16::from_be_bytes([ip[2], ip[3]]));
    let proto = ip[9];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let ports = if matches!(proto, 6 | 17) {
        let l4 = ip.get(ihl..ihl + 4)?;
        Some((u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]])))
    } else {
        None
    };
    Some(Conversation { src, dst, ports, bytes })
}

#[cfg(test)]
mod tests {
    use super::super::generate::{encode, frame};
    use super::*;

    fn sample_counters() -> InterfaceCounters {
        InterfaceCounters {
            if_index: 3,
            if_speed: 10_000_000_000,
            in_octets: 0x1_0000_0005,
            in_packets: 42,
            in_errors: 1,
            out_octets: 777,
            out_packets: 9,
            out_errors: 0,
        }
    }

    #[test]
    fn counters_and_flows_are_decoded() {
        let frames = [frame([10, 0, 0, 1], [10, 0, 0, 2], 40_000, 443, 1500)];
        let d = decode(&encode([192, 0, 2, 7], 11, &[sample_counters()], 3, &frames)).unwrap();
        assert_eq!(d.agent, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(d.sequence, 11);
        assert_eq!(d.samples[0], Sample::Counters(vec![sample_counters()]));
        assert_eq!(
            d.samples[1],
            Sample::Flow {
                input: 3,
                output: 7,
                sampling_rate: 400,
                packets: vec![Conversation {
                    src: Ipv4Addr::new(10, 0, 0, 1),
                    dst: Ipv4Addr::new(10, 0, 0, 2),
                    ports: Some((40_000, 443)),
                    bytes: 1500
                }]
            }
        );
    }

    /// The ten datagrams pmacct's sFlow agent sent (see the fixtures'
    /// README): flow samples of the HTTP and UDP traffic it was shown, and
    /// one counter sample without records.
    fn pmacct_captures() -> Vec<Datagram> {
        (0..10)
            .map(|i| {
                let bytes = crate::services::fixture("sflow", &format!("pmacct-{i:03}.bin"));
                decode(&bytes).unwrap_or_else(|e| panic!("pmacct-{i:03}.bin: {e}"))
            })
            .collect()
    }

    #[test]
    fn datagrams_captured_from_pmacct_are_decoded() {
        let captures = pmacct_captures();
        let local = Ipv4Addr::LOCALHOST;
        let mut tcp_packets = 0;
        let mut udp = Vec::new();
        let mut empty_counter_samples = 0;
        for (i, d) in captures.iter().enumerate() {
            assert_eq!(d.agent, IpAddr::V4(local));
            assert_eq!(d.sequence, i as u32 + 1);
            for s in &d.samples {
                match s {
                    Sample::Flow {
                        input,
                        sampling_rate,
                        packets,
                        ..
                    } => {
                        assert_eq!((*input, *sampling_rate), (1, 1));
                        for p in packets {
                            assert_eq!((p.src, p.dst), (local, local));
                            match p.ports {
                                Some((18080, _)) | Some((_, 18080)) => tcp_packets += 1,
                                other => udp.push((other, p.bytes)),
                            }
                        }
                    }
                    Sample::Counters(c) => {
                        assert!(c.is_empty(), "pmacct sends its counter samples without records");
                        empty_counter_samples += 1;
                    }
                }
            }
        }
        // Three HTTP exchanges (handshake, request, answer, close) and
        // three 200-byte UDP datagrams from port 40000 to 9999.
        assert!(tcp_packets >= 3 * 8, "{tcp_packets} TCP packets");
        assert_eq!(udp, [(Some((40_000, 9999)), 228); 3]);
        assert_eq!(empty_counter_samples, 1);
    }

    #[test]
    fn malformed_datagrams_are_errors_not_panics() {
        let frames = [frame([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, 60)];
        let good = encode([192, 0, 2, 7], 1, &[sample_counters()], 3, &frames);
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_err(), "cut at {n}");
        }
        for i in 0..good.len() {
            for v in [0x00, 0xff, 0x7f, good[i] ^ 1] {
                let mut m = good.clone();
                m[i] = v;
                let _ = decode(&m);
            }
        }
        let mut v4 = good.clone();
        v4[3] = 4;
        assert_eq!(decode(&v4).unwrap_err().0, "sFlow version 4, not 5");
        assert!(decode(b"").is_err());
    }
}
