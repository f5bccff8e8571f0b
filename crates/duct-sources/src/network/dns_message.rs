//! DNS messages (RFC 1035 §4) as the DNS check needs them: a query for one
//! name and type, and a response's code and answer records, with the nine
//! record types the check asks for decoded into text.
//!
//! A resolver crate (hickory) would bring its own runtime glue, caches and
//! a dozen dependencies for what is one datagram out and one back; this is
//! a few hundred lines of pure functions, tested on responses captured from
//! unbound. Nothing from the wire is trusted: every read is bounded, and
//! compression pointers may only point backwards, so a loop cannot form.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a message cannot be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("the message ends early")]
    Truncated,
    #[error("bad name: {0}")]
    Name(String),
    #[error("bad compression pointer")]
    Pointer,
    #[error("not a response")]
    NotResponse,
}

/// The record types the check can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    A,
    Ns,
    Cname,
    Soa,
    Ptr,
    Mx,
    Txt,
    Aaaa,
    Srv,
}

impl RecordType {
    pub const ALL: [RecordType; 9] = [
        RecordType::A,
        RecordType::Aaaa,
        RecordType::Cname,
        RecordType::Mx,
        RecordType::Txt,
        RecordType::Ns,
        RecordType::Soa,
        RecordType::Srv,
        RecordType::Ptr,
    ];

    pub fn code(self) -> u16 {
        match self {
            RecordType::A => 1,
            RecordType::Ns => 2,
            RecordType::Cname => 5,
            RecordType::Soa => 6,
            RecordType::Ptr => 12,
            RecordType::Mx => 15,
            RecordType::Txt => 16,
            RecordType::Aaaa => 28,
            RecordType::Srv => 33,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Ns => "NS",
            RecordType::Cname => "CNAME",
            RecordType::Soa => "SOA",
            RecordType::Ptr => "PTR",
            RecordType::Mx => "MX",
            RecordType::Txt => "TXT",
            RecordType::Aaaa => "AAAA",
            RecordType::Srv => "SRV",
        }
    }

    /// The type called `name` (any case).
    pub fn from_name(name: &str) -> Option<RecordType> {
        RecordType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }
}

/// Response codes the check tells apart.
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;

    /// The mnemonic of a response code.
    pub fn name(code: u8) -> String {
        match code {
            NOERROR => "NOERROR".into(),
            FORMERR => "FORMERR".into(),
            SERVFAIL => "SERVFAIL".into(),
            NXDOMAIN => "NXDOMAIN".into(),
            NOTIMP => "NOTIMP".into(),
            REFUSED => "REFUSED".into(),
            other => format!("RCODE{other}"),
        }
    }
}

/// The UDP payload size advertised with EDNS(0): the size DNS flag day
/// 2020 settled on, which avoids IP fragmentation.
pub const EDNS_UDP_SIZE: u16 = 1232;

/// A query for `name` and `rtype` with recursion desired and an EDNS(0)
/// OPT record (so larger answers come over UDP).
pub fn encode_query(id: u16, name: &str, rtype: RecordType) -> Result<Vec<u8>, DnsError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00]); // RD
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]); // QD 1, AN 0, NS 0, AR 1
    encode_name(name, &mut out)?;
    out.extend_from_slice(&rtype.code().to_be_bytes());
    out.extend_from_slice(&[0, 1]); // IN
                                    // OPT: root name, type 41, class = UDP size, TTL 0, no options.
    out.extend_from_slice(&[0, 0, 41]);
    out.extend_from_slice(&EDNS_UDP_SIZE.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    Ok(out)
}

fn encode_name(name: &str, out: &mut Vec<u8>) -> Result<(), DnsError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.len() > 253 {
        return Err(DnsError::Name(format!("`{name}` is longer than 253 characters")));
    }
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(DnsError::Name(format!(
                    "`{name}` has an empty label or one longer than 63 characters"
                )));
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    Ok(())
}

/// The name to ask for a PTR record of `text` when it is an address
/// (`192.0.2.1` → `1.2.0.192.in-addr.arpa`); other text as it is.
pub fn reverse_name(text: &str) -> String {
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        Ok(IpAddr::V6(v6)) => {
            let mut name = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            name.push_str("ip6.arpa");
            name
        }
        Err(_) => text.to_string(),
    }
}

/// What a response says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: u16,
    pub rcode: u8,
    /// The answer did not fit: ask again over TCP.
    pub truncated: bool,
    pub answers: Vec<Record>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub rtype: u16,
    pub ttl: u32,
    pub data: RData,
}

/// A record's data, decoded for the types the check asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// NS, CNAME, PTR: a name.
    Name(String),
    Mx {
        preference: u16,
        exchange: String,
    },
    Txt(Vec<String>),
    Soa {
        mname: String,
        rname: String,
        serial: u32,
    },
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Other(Vec<u8>),
}

impl fmt::Display for RData {
    /// The presentation form an operator writes in `expect`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RData::A(a) => write!(f, "{a}"),
            RData::Aaaa(a) => write!(f, "{a}"),
            RData::Name(n) => write!(f, "{n}"),
            RData::Mx { preference, exchange } => write!(f, "{preference} {exchange}"),
            // The strings of one TXT record joined by a space, as `dig` shows them.
            RData::Txt(parts) => write!(f, "{}", parts.join(" ")),
            RData::Soa { mname, rname, serial } => write!(f, "{mname} {rname} {serial}"),
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => write!(f, "{priority} {weight} {port} {target}"),
            RData::Other(bytes) => write!(f, "{} bytes", bytes.len()),
        }
    }
}

/// A cursor over a message.
struct Reader<'a> {
    msg: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DnsError> {
        let end = self.at.checked_add(n).ok_or(DnsError::Truncated)?;
        let bytes = self.msg.get(self.at..end).ok_or(DnsError::Truncated)?;
        self.at = end;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, DnsError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DnsError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A possibly compressed name at the cursor; the cursor moves past it.
    fn name(&mut self) -> Result<String, DnsError> {
        let (name, end) = read_name(self.msg, self.at)?;
        self.at = end;
        Ok(name)
    }
}

/// Reads the name at `start`: the name (lower case, no trailing dot, `.`
/// for the root) and where the bytes after it begin.
fn read_name(msg: &[u8], start: usize) -> Result<(String, usize), DnsError> {
    let mut labels: Vec<String> = Vec::new();
    let mut at = start;
    let mut end = None;
    // Pointers must go strictly backwards: at most as many jumps as bytes.
    let mut limit = start;
    let mut length = 0usize;
    loop {
        let len = *msg.get(at).ok_or(DnsError::Truncated)?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    end.get_or_insert(at + 1);
                    break;
                }
                let label = msg.get(at + 1..at + 1 + usize::from(len)).ok_or(DnsError::Truncated)?;
                length += label.len() + 1;
                if length > 255 {
                    return Err(DnsError::Name("longer than 255 bytes".into()));
                }
                labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                at += 1 + usize::from(len);
            }
            0xc0 => {
                let low = *msg.get(at + 1).ok_or(DnsError::Truncated)?;
                let target = usize::from(len & 0x3f) << 8 | usize::from(low);
                end.get_or_insert(at + 2);
                if target >= limit {
                    return Err(DnsError::Pointer);
                }
                limit = target;
                at = target;
            }
            _ => return Err(DnsError::Name(format!("unknown label type {len:#04x}"))),
        }
    }
    let name = if labels.is_empty() {
        ".".to_string()
    } else {
        labels.join(".")
    };
    Ok((name, end.unwrap_or(at + 1)))
}

/// Reads a response: its header, and the records of its answer section.
pub fn decode_response(msg: &[u8]) -> Result<Response, DnsError> {
    let mut r = Reader { msg, at: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err(DnsError::NotResponse);
    }
    let questions = r.u16()?;
    let answers = r.u16()?;
    r.take(4)?; // authority and additional counts: not read
    for _ in 0..questions {
        r.name()?;
        r.take(4)?;
    }
    let mut records = Vec::with_capacity(usize::from(answers).min(64));
    for _ in 0..answers {
        let name = r.name()?;
        let rtype = r.u16()?;
        let _class = r.u16()?;
        let ttl = r.u32()?;
        let len = usize::from(r.u16()?);
        let start = r.at;
        r.take(len)?;
        let data = decode_rdata(msg, rtype, start, len)?;
        records.push(Record { name, rtype, ttl, data });
    }
    Ok(Response {
        id,
        rcode: (flags & 0x000f) as u8,
        truncated: flags & 0x0200 != 0,
        answers: records,
    })
}

fn decode_rdata(msg: &[u8], rtype: u16, start: usize, len: usize) -> Result<RData, DnsError> {
    let rdata = &msg[start..start + len];
    let mut r = Reader { msg, at: start };
    let data = match rtype {
        1 if len == 4 => RData::A(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])),
        28 if len == 16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(rdata);
            RData::Aaaa(Ipv6Addr::from(b))
        }
        2 | 5 | 12 => RData::Name(r.name()?),
        15 => RData::Mx {
            preference: r.u16()?,
            exchange: r.name()?,
        },
        16 => {
            let mut parts = Vec::new();
            let mut i = 0;
            while i < len {
                let n = usize::from(rdata[i]);
                let part = rdata.get(i + 1..i + 1 + n).ok_or(DnsError::Truncated)?;
                parts.push(String::from_utf8_lossy(part).into_owned());
                i += 1 + n;
            }
            RData::Txt(parts)
        }
        6 => RData::Soa {
            mname: r.name()?,
            rname: r.name()?,
            serial: r.u32()?,
        },
        33 => RData::Srv {
            priority: r.u16()?,
            weight: r.u16()?,
            port: r.u16()?,
            target: r.name()?,
        },
        _ => RData::Other(rdata.to_vec()),
    };
    if r.at > start + len {
        return Err(DnsError::Truncated);
    }
    Ok(data)
}

/// The nameservers of a `resolv.conf`, in order.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .map(|l| l.split(['#', ';']).next().unwrap_or_default())
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            match (words.next(), words.next()) {
                // A link-local IPv6 address may carry a zone (`%eth0`),
                // which std cannot parse; such a server is skipped.
                (Some("nameserver"), Some(addr)) => addr.parse().ok(),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::fixture;

    #[test]
    fn queries_match_what_a_resolver_library_sends() {
        // The query of the fixtures, which unbound answered: the capture
        // encoded it by hand, byte for byte what ductd sends.
        let q = encode_query(0x1234, "web.duct.test", RecordType::A).unwrap();
        assert_eq!(q, fixture("query-web-a.dns"));
        assert_eq!(encode_query(1, "web.duct.test.", RecordType::A).unwrap()[12..], q[12..]);
        let root = encode_query(1, ".", RecordType::Ns).unwrap();
        assert_eq!(&root[12..17], &[0, 0, 2, 0, 1]);
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(encode_query(1, "a..b", RecordType::A).is_err());
        assert!(encode_query(1, &"x".repeat(64), RecordType::A).is_err());
        let long = vec!["abcdefgh"; 40].join(".");
        assert!(encode_query(1, &long, RecordType::A).is_err());
    }

    #[test]
    fn decodes_unbound_answers() {
        let r = decode_response(&fixture("answer-web-a.dns")).unwrap();
        assert_eq!((r.id, r.rcode, r.truncated), (0x1234, rcode::NOERROR, false));
        let values: Vec<String> = r.answers.iter().map(|a| a.data.to_string()).collect();
        assert_eq!(values, ["198.18.0.10", "198.18.0.11"]);
        assert_eq!(r.answers[0].name, "web.duct.test");
        assert_eq!(r.answers[0].ttl, 300);

        let r = decode_response(&fixture("answer-web-aaaa.dns")).unwrap();
        assert_eq!(r.answers[0].data, RData::Aaaa("2001:db8::10".parse().unwrap()));

        let r = decode_response(&fixture("answer-mx.dns")).unwrap();
        assert_eq!(r.answers[0].data.to_string(), "10 mail.duct.test");

        let r = decode_response(&fixture("answer-txt.dns")).unwrap();
        assert_eq!(r.answers[0].data.to_string(), "v=spf1 -all");

        let r = decode_response(&fixture("answer-cname.dns")).unwrap();
        assert_eq!(r.answers[0].data, RData::Name("web.duct.test".into()));

        let r = decode_response(&fixture("answer-srv.dns")).unwrap();
        assert_eq!(r.answers[0].data.to_string(), "0 5 5060 sip.duct.test");

        let r = decode_response(&fixture("answer-soa.dns")).unwrap();
        assert_eq!(r.answers[0].data.to_string(), "ns.duct.test admin.duct.test 2026112701");

        let r = decode_response(&fixture("answer-ns.dns")).unwrap();
        assert_eq!(r.answers[0].data.to_string(), "ns.duct.test");

        let r = decode_response(&fixture("answer-ptr.dns")).unwrap();
        assert_eq!(r.answers[0].data.to_string(), "web.duct.test");
    }

    #[test]
    fn decodes_nxdomain() {
        let r = decode_response(&fixture("answer-nxdomain.dns")).unwrap();
        assert_eq!(r.rcode, rcode::NXDOMAIN);
        assert!(r.answers.is_empty());
        assert_eq!(rcode::name(r.rcode), "NXDOMAIN");
    }

    #[test]
    fn garbage_and_loops_are_errors_not_panics() {
        let good = fixture("answer-mx.dns");
        for cut in 0..good.len() {
            let _ = decode_response(&good[..cut]);
        }
        for flip in 0..good.len() {
            let mut bad = good.clone();
            bad[flip] ^= 0xff;
            let _ = decode_response(&bad);
        }
        // A question whose name points at itself.
        let looped = [0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1];
        assert_eq!(decode_response(&looped), Err(DnsError::Pointer));
        let query = encode_query(7, "web.duct.test", RecordType::A).unwrap();
        assert_eq!(decode_response(&query), Err(DnsError::NotResponse));
        assert_eq!(decode_response(b"garbage"), Err(DnsError::NotResponse));
    }

    #[test]
    fn multi_string_txt_records_show_as_dig_does() {
        let txt = RData::Txt(vec!["v=spf1".into(), "-all".into()]);
        assert_eq!(txt.to_string(), "v=spf1 -all");
    }

    #[test]
    fn record_types_by_name() {
        for t in RecordType::ALL {
            assert_eq!(RecordType::from_name(&t.name().to_lowercase()), Some(t));
        }
        assert_eq!(RecordType::from_name("AXFR"), None);
    }

    #[test]
    fn reverse_names_for_ptr() {
        assert_eq!(reverse_name("198.18.0.10"), "10.0.18.198.in-addr.arpa");
        assert!(reverse_name("2001:db8::1").starts_with("1.0.0.0."));
        assert!(reverse_name("2001:db8::1").ends_with("8.b.d.0.1.0.0.2.ip6.arpa"));
        assert_eq!(reverse_name("web.duct.test"), "web.duct.test");
    }

    #[test]
    fn nameservers_come_from_resolv_conf() {
        let text = String::from_utf8(fixture("resolv.conf")).unwrap();
        let expected: Vec<IpAddr> = vec!["192.0.2.53".parse().unwrap(), "2001:db8::53".parse().unwrap()];
        assert_eq!(nameservers(&text), expected);
    }
}
