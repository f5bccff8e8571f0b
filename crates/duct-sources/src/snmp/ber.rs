//! SNMP v1 and v2c messages in BER (X.690, the subset RFC 1157 and RFC
//! 3416 use): pure functions from a request to bytes and from bytes to a
//! response, unit-tested on datagrams captured from net-snmp's snmpd
//! (`tests/fixtures/snmp/`).
//!
//! The decoder reads untrusted datagrams: it never panics, never reads
//! past a length it was given, refuses indefinite and over-long lengths,
//! and bounds the nesting it follows to what an SNMP message has.

use std::fmt;

/// The largest message ductd sends or reads (a UDP datagram's payload).
pub const MAX_MESSAGE_BYTES: usize = 65_507;

/// An object identifier, as its arcs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Oid(pub Vec<u32>);

impl Oid {
    /// Parses dotted text (`1.3.6.1.2.1.2.2.1.2`, a leading dot allowed).
    pub fn parse(text: &str) -> Result<Oid, String> {
        let t = text.trim().trim_start_matches('.');
        let arcs: Result<Vec<u32>, _> = t.split('.').map(str::parse::<u32>).collect();
        match arcs {
            Ok(a) if a.len() >= 2 && a[0] <= 2 && (a[0] == 2 || a[1] < 40) => Ok(Oid(a)),
            _ => Err(format!("`{text}` is not an object identifier")),
        }
    }

    /// Whether `self` lies under `prefix` (strictly below it).
    pub fn is_under(&self, prefix: &Oid) -> bool {
        self.0.len() > prefix.0.len() && self.0.starts_with(&prefix.0)
    }

    /// The arcs after `prefix`, if `self` lies under it.
    pub fn suffix(&self, prefix: &Oid) -> Option<&[u32]> {
        self.is_under(prefix).then(|| &self.0[prefix.0.len()..])
    }

    /// `self` with `arcs` appended.
    pub fn child(&self, arcs: &[u32]) -> Oid {
        let mut v = self.0.clone();
        v.extend_from_slice(arcs);
        Oid(v)
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// A variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Integer(i64),
    OctetString(Vec<u8>),
    Null,
    Oid(Oid),
    IpAddress([u8; 4]),
    Counter32(u32),
    Gauge32(u32),
    TimeTicks(u32),
    Opaque(Vec<u8>),
    Counter64(u64),
    /// v2c exceptions (RFC 3416 §3): the agent has no such object, no such
    /// instance of it, or the walk went past the end of the MIB.
    NoSuchObject,
    NoSuchInstance,
    EndOfMibView,
}

impl Value {
    /// An exception rather than a value.
    pub fn is_exception(&self) -> bool {
        matches!(self, Value::NoSuchObject | Value::NoSuchInstance | Value::EndOfMibView)
    }

    /// The value as a number, for the numeric types.
    pub fn as_i128(&self) -> Option<i128> {
        match *self {
            Value::Integer(v) => Some(v.into()),
            Value::Counter32(v) | Value::Gauge32(v) | Value::TimeTicks(v) => Some(v.into()),
            Value::Counter64(v) => Some(v.into()),
            _ => None,
        }
    }

    /// The text of an OCTET STRING (lossy UTF-8), or the value written out.
    pub fn text(&self) -> String {
        match self {
            Value::OctetString(b) => String::from_utf8_lossy(b).into_owned(),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Integer(v) => write!(f, "INTEGER {v}"),
            Value::OctetString(b) => write!(f, "STRING {:?}", String::from_utf8_lossy(b)),
            Value::Null => f.write_str("NULL"),
            Value::Oid(o) => write!(f, "OID {o}"),
            Value::IpAddress([a, b, c, d]) => write!(f, "IpAddress {a}.{b}.{c}.{d}"),
            Value::Counter32(v) => write!(f, "Counter32 {v}"),
            Value::Gauge32(v) => write!(f, "Gauge32 {v}"),
            Value::TimeTicks(v) => write!(f, "TimeTicks {v}"),
            Value::Opaque(b) => write!(f, "Opaque ({} bytes)", b.len()),
            Value::Counter64(v) => write!(f, "Counter64 {v}"),
            Value::NoSuchObject => f.write_str("noSuchObject"),
            Value::NoSuchInstance => f.write_str("noSuchInstance"),
            Value::EndOfMibView => f.write_str("endOfMibView"),
        }
    }
}

/// Protocol version on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2c,
}

impl Version {
    fn code(self) -> i64 {
        match self {
            Version::V1 => 0,
            Version::V2c => 1,
        }
    }
}

/// What a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Get,
    GetNext,
    /// v2c only: `non_repeaters` first variables once, then up to
    /// `max_repetitions` successors of each of the others.
    GetBulk {
        non_repeaters: u32,
        max_repetitions: u32,
    },
}

/// A PDU read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    /// The PDU's tag (0xa2 for a Response).
    pub tag: u8,
    pub request_id: i32,
    pub error_status: i64,
    pub error_index: i64,
    pub varbinds: Vec<(Oid, Value)>,
}

/// A whole v1/v2c message read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub version: Version,
    pub community: Vec<u8>,
    pub pdu: Pdu,
}

mod tag {
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    pub const IP_ADDRESS: u8 = 0x40;
    pub const COUNTER32: u8 = 0x41;
    pub const GAUGE32: u8 = 0x42;
    pub const TIMETICKS: u8 = 0x43;
    pub const OPAQUE: u8 = 0x44;
    pub const COUNTER64: u8 = 0x46;
    pub const NO_SUCH_OBJECT: u8 = 0x80;
    pub const NO_SUCH_INSTANCE: u8 = 0x81;
    pub const END_OF_MIB_VIEW: u8 = 0x82;
    pub const GET: u8 = 0xa0;
    pub const GET_NEXT: u8 = 0xa1;
    pub const RESPONSE: u8 = 0xa2;
    pub const GET_BULK: u8 = 0xa5;
    pub const REPORT: u8 = 0xa8;
}

/// The tag of a Response PDU.
pub const RESPONSE: u8 = tag::RESPONSE;

/// RFC 3416 error-status names.
pub fn error_name(status: i64) -> String {
    const NAMES: [&str; 19] = [
        "noError",
        "tooBig",
        "noSuchName",
        "badValue",
        "readOnly",
        "genErr",
        "noAccess",
        "wrongType",
        "wrongLength",
        "wrongEncoding",
        "wrongValue",
        "noCreation",
        "inconsistentValue",
        "resourceUnavailable",
        "commitFailed",
        "undoFailed",
        "authorizationError",
        "notWritable",
        "inconsistentName",
    ];
    usize::try_from(status)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("error-status {status}"))
}

// ---------------------------------------------------------------- encoding

fn put_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn put_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    put_length(out, content.len());
    out.extend_from_slice(content);
}

/// Two's complement, shortest form.
fn integer_bytes(v: i64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

/// An unsigned value as a non-negative INTEGER-like content.
fn unsigned_bytes(v: u64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    let mut out = Vec::with_capacity(9);
    if bytes[skip] & 0x80 != 0 {
        out.push(0);
    }
    out.extend_from_slice(&bytes[skip..]);
    out
}

fn oid_bytes(oid: &Oid) -> Result<Vec<u8>, String> {
    let a = &oid.0;
    if a.len() < 2 || a[0] > 2 || (a[0] < 2 && a[1] >= 40) {
        return Err(format!("`{oid}` is not an object identifier"));
    }
    let mut out = Vec::with_capacity(a.len() + 4);
    let first = u64::from(a[0]) * 40 + u64::from(a[1]);
    put_arc(&mut out, first);
    for &arc in &a[2..] {
        put_arc(&mut out, arc.into());
    }
    Ok(out)
}

fn put_arc(out: &mut Vec<u8>, v: u64) {
    let mut groups = [0u8; 10];
    let mut n = 0;
    let mut v = v;
    loop {
        groups[n] = (v & 0x7f) as u8;
        n += 1;
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        out.push(groups[i] | if i > 0 { 0x80 } else { 0 });
    }
}

fn value_tlv(out: &mut Vec<u8>, value: &Value) -> Result<(), String> {
    match value {
        Value::Integer(v) => put_tlv(out, tag::INTEGER, &integer_bytes(*v)),
        Value::OctetString(b) => put_tlv(out, tag::OCTET_STRING, b),
        Value::Null => put_tlv(out, tag::NULL, &[]),
        Value::Oid(o) => put_tlv(out, tag::OID, &oid_bytes(o)?),
        Value::IpAddress(a) => put_tlv(out, tag::IP_ADDRESS, a),
        Value::Counter32(v) => put_tlv(out, tag::COUNTER32, &unsigned_bytes((*v).into())),
        Value::Gauge32(v) => put_tlv(out, tag::GAUGE32, &unsigned_bytes((*v).into())),
        Value::TimeTicks(v) => put_tlv(out, tag::TIMETICKS, &unsigned_bytes((*v).into())),
        Value::Opaque(b) => put_tlv(out, tag::OPAQUE, b),
        Value::Counter64(v) => put_tlv(out, tag::COUNTER64, &unsigned_bytes(*v)),
        Value::NoSuchObject => put_tlv(out, tag::NO_SUCH_OBJECT, &[]),
        Value::NoSuchInstance => put_tlv(out, tag::NO_SUCH_INSTANCE, &[]),
        Value::EndOfMibView => put_tlv(out, tag::END_OF_MIB_VIEW, &[]),
    }
    Ok(())
}

/// The varbind list of a request: each OID with a NULL value.
fn varbind_list(oids: &[Oid]) -> Result<Vec<u8>, String> {
    let mut list = Vec::new();
    for oid in oids {
        let mut vb = Vec::new();
        put_tlv(&mut vb, tag::OID, &oid_bytes(oid)?);
        value_tlv(&mut vb, &Value::Null)?;
        put_tlv(&mut list, tag::SEQUENCE, &vb);
    }
    Ok(list)
}

/// The PDU of a request (also used inside SNMPv3's scoped PDU).
pub fn encode_pdu(kind: RequestKind, request_id: i32, oids: &[Oid]) -> Result<Vec<u8>, String> {
    let (pdu_tag, second, third) = match kind {
        RequestKind::Get => (tag::GET, 0, 0),
        RequestKind::GetNext => (tag::GET_NEXT, 0, 0),
        RequestKind::GetBulk {
            non_repeaters,
            max_repetitions,
        } => (tag::GET_BULK, i64::from(non_repeaters), i64::from(max_repetitions)),
    };
    let mut body = Vec::new();
    put_tlv(&mut body, tag::INTEGER, &integer_bytes(request_id.into()));
    put_tlv(&mut body, tag::INTEGER, &integer_bytes(second));
    put_tlv(&mut body, tag::INTEGER, &integer_bytes(third));
    put_tlv(&mut body, tag::SEQUENCE, &varbind_list(oids)?);
    let mut pdu = Vec::with_capacity(body.len() + 4);
    put_tlv(&mut pdu, pdu_tag, &body);
    Ok(pdu)
}

/// A whole v1/v2c request message. GetBulk is refused in v1.
pub fn encode_request(
    version: Version,
    community: &[u8],
    kind: RequestKind,
    request_id: i32,
    oids: &[Oid],
) -> Result<Vec<u8>, String> {
    if version == Version::V1 && matches!(kind, RequestKind::GetBulk { .. }) {
        return Err("SNMPv1 has no GetBulk".into());
    }
    let mut body = Vec::new();
    put_tlv(&mut body, tag::INTEGER, &integer_bytes(version.code()));
    put_tlv(&mut body, tag::OCTET_STRING, community);
    body.extend_from_slice(&encode_pdu(kind, request_id, oids)?);
    let mut out = Vec::with_capacity(body.len() + 4);
    put_tlv(&mut out, tag::SEQUENCE, &body);
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(format!("a request of {} bytes does not fit in a datagram", out.len()));
    }
    Ok(out)
}

/// Writes one TLV (for SNMPv3's headers).
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 4);
    put_tlv(&mut out, tag, content);
    out
}

/// An INTEGER TLV.
pub fn integer_tlv(v: i64) -> Vec<u8> {
    tlv(tag::INTEGER, &integer_bytes(v))
}

// ---------------------------------------------------------------- decoding

/// Why a datagram is not an SNMP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn bad<T>(what: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(what.into()))
}

/// A cursor over BER bytes.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The next TLV: its tag and content.
    pub fn next_tlv(&mut self) -> Result<(u8, &'a [u8]), DecodeError> {
        let [tag, first, rest @ ..] = self.bytes else {
            return bad("truncated: a value's header is cut short");
        };
        if tag & 0x1f == 0x1f {
            return bad(format!("multi-byte tag {tag:#04x} is not used by SNMP"));
        }
        let (len, rest) = if first & 0x80 == 0 {
            (usize::from(*first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 {
                return bad("indefinite length is not allowed");
            }
            if n > 4 || rest.len() < n {
                return bad("truncated or over-long length");
            }
            let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return bad(format!("truncated: a value of {len} bytes with {} left", rest.len()));
        }
        let (content, after) = rest.split_at(len);
        self.bytes = after;
        Ok((*tag, content))
    }

    /// The next TLV, which must have `want` as its tag.
    pub fn expect(&mut self, want: u8, what: &str) -> Result<&'a [u8], DecodeError> {
        let (tag, content) = self.next_tlv()?;
        if tag != want {
            return bad(format!("{what}: tag {tag:#04x} where {want:#04x} was expected"));
        }
        Ok(content)
    }

    pub fn integer(&mut self, what: &str) -> Result<i64, DecodeError> {
        let content = self.expect(tag::INTEGER, what)?;
        decode_integer(content).ok_or_else(|| DecodeError(format!("{what}: not an INTEGER of at most 8 bytes")))
    }

    pub fn octets(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        self.expect(tag::OCTET_STRING, what)
    }
}

fn decode_integer(content: &[u8]) -> Option<i64> {
    if content.is_empty() || content.len() > 8 {
        return None;
    }
    let sign = if content[0] & 0x80 != 0 { -1i64 } else { 0 };
    Some(content.iter().fold(sign, |acc, b| (acc << 8) | i64::from(*b)))
}

/// An unsigned value of at most `bits` bits (one leading zero byte
/// allowed; some agents send Counter32 values as negative INTEGERs, which
/// are read as their 32-bit pattern).
fn decode_unsigned(content: &[u8], bits: u32) -> Option<u64> {
    let max_bytes = (bits / 8) as usize;
    let content = match content {
        [0, rest @ ..] if !rest.is_empty() => rest,
        c => c,
    };
    if content.is_empty() || content.len() > max_bytes {
        return None;
    }
    Some(content.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

fn decode_oid(content: &[u8]) -> Option<Oid> {
    if content.is_empty() || content.len() > 1024 {
        return None;
    }
    let mut arcs = Vec::with_capacity(content.len() + 1);
    let mut acc: u64 = 0;
    let mut first = true;
    for (i, b) in content.iter().enumerate() {
        if acc == 0 && *b == 0x80 {
            return None; // non-minimal arc
        }
        acc = (acc << 7) | u64::from(b & 0x7f);
        if acc > u64::from(u32::MAX) + 80 {
            return None;
        }
        if b & 0x80 == 0 {
            if first {
                let (a, b) = match acc {
                    0..=39 => (0, acc),
                    40..=79 => (1, acc - 40),
                    _ => (2, acc - 80),
                };
                arcs.push(a as u32);
                arcs.push(u32::try_from(b).ok()?);
                first = false;
            } else {
                arcs.push(u32::try_from(acc).ok()?);
            }
            acc = 0;
        } else if i == content.len() - 1 {
            return None; // the last arc is cut short
        }
    }
    Some(Oid(arcs))
}

fn decode_value(tag: u8, content: &[u8]) -> Result<Value, DecodeError> {
    let number =
        |bits| decode_unsigned(content, bits).ok_or_else(|| DecodeError(format!("tag {tag:#04x}: bad number")));
    Ok(match tag {
        tag::INTEGER => {
            Value::Integer(decode_integer(content).ok_or_else(|| DecodeError("INTEGER of more than 8 bytes".into()))?)
        }
        tag::OCTET_STRING => Value::OctetString(content.to_vec()),
        tag::NULL => Value::Null,
        tag::OID => Value::Oid(decode_oid(content).ok_or_else(|| DecodeError("malformed OBJECT IDENTIFIER".into()))?),
        tag::IP_ADDRESS => match <[u8; 4]>::try_from(content) {
            Ok(a) => Value::IpAddress(a),
            Err(_) => return bad(format!("IpAddress of {} bytes", content.len())),
        },
        tag::COUNTER32 => Value::Counter32(number(32)? as u32),
        tag::GAUGE32 => Value::Gauge32(number(32)? as u32),
        tag::TIMETICKS => Value::TimeTicks(number(32)? as u32),
        tag::OPAQUE => Value::Opaque(content.to_vec()),
        tag::COUNTER64 => Value::Counter64(number(64)?),
        tag::NO_SUCH_OBJECT => Value::NoSuchObject,
        tag::NO_SUCH_INSTANCE => Value::NoSuchInstance,
        tag::END_OF_MIB_VIEW => Value::EndOfMibView,
        other => return bad(format!("unknown value type {other:#04x}")),
    })
}

/// Reads a PDU (the PDU's own TLV).
pub fn decode_pdu(bytes: &[u8]) -> Result<Pdu, DecodeError> {
    let mut r = Reader::new(bytes);
    let (pdu_tag, body) = r.next_tlv()?;
    if !(0xa0..=0xa8).contains(&pdu_tag) {
        return bad(format!("tag {pdu_tag:#04x} is not an SNMP PDU"));
    }
    if pdu_tag == 0xa4 {
        return bad("an SNMPv1 Trap is not a response");
    }
    let mut b = Reader::new(body);
    let request_id = b.integer("request-id")?;
    let request_id = i32::try_from(request_id).map_err(|_| DecodeError("request-id out of range".into()))?;
    let error_status = b.integer("error-status")?;
    let error_index = b.integer("error-index")?;
    let mut list = Reader::new(b.expect(tag::SEQUENCE, "the variable bindings")?);
    let mut varbinds = Vec::new();
    while !list.is_empty() {
        let mut vb = Reader::new(list.expect(tag::SEQUENCE, "a variable binding")?);
        let name = vb.expect(tag::OID, "a variable's name")?;
        let name = decode_oid(name).ok_or_else(|| DecodeError("malformed variable name".into()))?;
        let (vtag, content) = vb.next_tlv()?;
        varbinds.push((name, decode_value(vtag, content)?));
    }
    Ok(Pdu {
        tag: pdu_tag,
        request_id,
        error_status,
        error_index,
        varbinds,
    })
}

/// Reads a whole v1/v2c message.
pub fn decode_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut outer = Reader::new(bytes);
    let mut r = Reader::new(outer.expect(tag::SEQUENCE, "the message")?);
    let version = match r.integer("the version")? {
        0 => Version::V1,
        1 => Version::V2c,
        3 => return bad("an SNMPv3 message where v1/v2c was expected"),
        v => return bad(format!("unknown SNMP version {v}")),
    };
    let community = r.octets("the community")?.to_vec();
    let pdu = decode_pdu(r.bytes)?;
    Ok(Message {
        version,
        community,
        pdu,
    })
}

/// The version code and request-id of a datagram, read without decoding
/// its variables (to route an answer to its waiter). `None` when the
/// datagram is not a v1/v2c message.
pub fn peek_request_id(bytes: &[u8]) -> Option<i32> {
    let mut outer = Reader::new(bytes);
    let mut r = Reader::new(outer.expect(tag::SEQUENCE, "").ok()?);
    match r.integer("").ok()? {
        0 | 1 => {}
        _ => return None,
    }
    r.octets("").ok()?;
    let (_, body) = r.next_tlv().ok()?;
    let id = Reader::new(body).integer("").ok()?;
    i32::try_from(id).ok()
}

#[doc(hidden)]
pub const REPORT: u8 = tag::REPORT;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;

    fn oid(s: &str) -> Oid {
        Oid::parse(s).unwrap()
    }

    fn fx(name: &str) -> Vec<u8> {
        fixture("snmp", name)
    }

    #[test]
    fn requests_are_encoded_byte_for_byte_as_net_snmp_does() {
        // The captured requests were sent by snmpget/snmpgetnext/snmpbulkget;
        // the same request ids and variables give the same bytes.
        let get = decode_message(&fx("v2c-get-request.bin")).unwrap();
        assert_eq!(get.pdu.tag, tag::GET);
        let oids: Vec<Oid> = get.pdu.varbinds.iter().map(|(o, _)| o.clone()).collect();
        assert_eq!(oids, [oid("1.3.6.1.2.1.1.3.0"), oid("1.3.6.1.2.1.2.2.1.2.1")]);
        assert!(get.pdu.varbinds.iter().all(|(_, v)| *v == Value::Null));
        let ours = encode_request(Version::V2c, b"ductpub", RequestKind::Get, get.pdu.request_id, &oids).unwrap();
        assert_eq!(ours, fx("v2c-get-request.bin"));

        let bulk = decode_message(&fx("v2c-getbulk-request.bin")).unwrap();
        assert_eq!((bulk.pdu.error_status, bulk.pdu.error_index), (0, 4));
        let oids: Vec<Oid> = bulk.pdu.varbinds.iter().map(|(o, _)| o.clone()).collect();
        let kind = RequestKind::GetBulk {
            non_repeaters: 0,
            max_repetitions: 4,
        };
        let ours = encode_request(Version::V2c, b"ductpub", kind, bulk.pdu.request_id, &oids).unwrap();
        assert_eq!(ours, fx("v2c-getbulk-request.bin"));

        let next = decode_message(&fx("v1-getnext-request.bin")).unwrap();
        assert_eq!(next.version, Version::V1);
        let oids: Vec<Oid> = next.pdu.varbinds.iter().map(|(o, _)| o.clone()).collect();
        let ours = encode_request(
            Version::V1,
            b"ductpub",
            RequestKind::GetNext,
            next.pdu.request_id,
            &oids,
        )
        .unwrap();
        assert_eq!(ours, fx("v1-getnext-request.bin"));
        assert!(encode_request(Version::V1, b"x", kind, 1, &oids).is_err());
    }

    #[test]
    fn a_get_response_holds_timeticks_and_a_string() {
        let m = decode_message(&fx("v2c-get-response.bin")).unwrap();
        assert_eq!(m.version, Version::V2c);
        assert_eq!(m.community, b"ductpub");
        assert_eq!(m.pdu.tag, RESPONSE);
        assert_eq!(peek_request_id(&fx("v2c-get-response.bin")), Some(m.pdu.request_id));
        // snmpget printed: Timeticks: (1214), STRING: "lo".
        assert_eq!(
            m.pdu.varbinds,
            [
                (oid("1.3.6.1.2.1.1.3.0"), Value::TimeTicks(1214)),
                (oid("1.3.6.1.2.1.2.2.1.2.1"), Value::OctetString(b"lo".to_vec())),
            ]
        );
    }

    #[test]
    fn a_bulk_response_holds_counters_of_both_sizes() {
        let m = decode_message(&fx("v2c-getbulk-response.bin")).unwrap();
        assert_eq!(m.pdu.varbinds.len(), 16);
        // snmpbulkget printed these for the first and the last row.
        assert_eq!(m.pdu.varbinds[0].1, Value::OctetString(b"lo".to_vec()));
        assert_eq!(
            m.pdu.varbinds[1],
            (oid("1.3.6.1.2.1.2.2.1.10.1"), Value::Counter32(2_595_227_370))
        );
        assert_eq!(
            m.pdu.varbinds[2],
            (oid("1.3.6.1.2.1.31.1.1.1.6.1"), Value::Counter64(2_595_227_370))
        );
        assert_eq!(m.pdu.varbinds[3].1, Value::Integer(24));
        assert_eq!(m.pdu.varbinds[12].1, Value::OctetString(b"eth0".to_vec()));
        assert_eq!(m.pdu.varbinds[13].1, Value::Counter32(521_005_188));
        assert_eq!(m.pdu.varbinds[14].1, Value::Counter64(521_005_188));
    }

    #[test]
    fn exceptions_addresses_and_v1_errors_are_read() {
        let m = decode_message(&fx("v2c-getnext-ipaddress-response.bin")).unwrap();
        assert_eq!(
            m.pdu.varbinds,
            [(oid("1.3.6.1.2.1.4.20.1.1.127.0.0.1"), Value::IpAddress([127, 0, 0, 1]))]
        );
        let m = decode_message(&fx("v2c-get-nosuch-response.bin")).unwrap();
        let values: Vec<&Value> = m.pdu.varbinds.iter().map(|(_, v)| v).collect();
        assert_eq!(values, [&Value::NoSuchInstance, &Value::NoSuchObject]);
        let m = decode_message(&fx("v2c-getnext-endofmibview-response.bin")).unwrap();
        assert_eq!(m.pdu.varbinds[0].1, Value::EndOfMibView);

        let m = decode_message(&fx("v1-getnext-response.bin")).unwrap();
        assert_eq!(m.version, Version::V1);
        assert_eq!(
            m.pdu.varbinds,
            [(oid("1.3.6.1.2.1.2.2.1.16.1"), Value::Counter32(2_595_227_370))]
        );
        let m = decode_message(&fx("v1-get-nosuchname-response.bin")).unwrap();
        assert_eq!(
            (error_name(m.pdu.error_status).as_str(), m.pdu.error_index),
            ("noSuchName", 1)
        );
    }

    #[test]
    fn values_round_trip() {
        let values = [
            Value::Integer(0),
            Value::Integer(-1),
            Value::Integer(128),
            Value::Integer(i64::MIN),
            Value::Integer(i64::MAX),
            Value::OctetString(vec![0; 300]),
            Value::Null,
            Value::Oid(oid("2.999.4294967295")),
            Value::IpAddress([10, 0, 0, 1]),
            Value::Counter32(u32::MAX),
            Value::Gauge32(0x80),
            Value::TimeTicks(1),
            Value::Counter64(u64::MAX),
            Value::Counter64(0),
            Value::NoSuchObject,
            Value::EndOfMibView,
        ];
        for v in values {
            let mut out = Vec::new();
            value_tlv(&mut out, &v).unwrap();
            let (t, c) = Reader::new(&out).next_tlv().unwrap();
            assert_eq!(decode_value(t, c).unwrap(), v, "{out:02x?}");
        }
        assert_eq!(Oid::parse(".1.3.6.1").unwrap().to_string(), "1.3.6.1");
        assert!(Oid::parse("1.40").is_err());
        assert!(Oid::parse("1.3.x").is_err());
    }

    #[test]
    fn malformed_datagrams_are_errors_not_panics() {
        // Every prefix and every single-byte change of every capture: the
        // decoder answers (Ok or Err) without panicking.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/snmp");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("bin") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            for n in 0..bytes.len() {
                assert!(decode_message(&bytes[..n]).is_err(), "{} cut at {n}", path.display());
                let _ = peek_request_id(&bytes[..n]);
            }
            for i in 0..bytes.len() {
                for x in [0x00, 0x7f, 0x80, 0xff, bytes[i] ^ 0x01] {
                    let mut m = bytes.clone();
                    m[i] = x;
                    let _ = decode_message(&m);
                    let _ = peek_request_id(&m);
                }
            }
        }
        assert!(decode_message(&[0x30, 0x80, 0, 0])
            .unwrap_err()
            .0
            .contains("indefinite"));
        assert!(decode_message(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
    }
}
