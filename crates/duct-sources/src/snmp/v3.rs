//! SNMPv3 with the user-based security model (RFC 3414), authPriv only:
//! HMAC-SHA-96 authentication and AES-128-CFB privacy (RFC 3826).
//!
//! The agent's engine (its id, boots and time) is discovered with an
//! unauthenticated request the agent answers with a Report, then kept per
//! source; a `notInTimeWindow` Report refreshes it and the request is sent
//! again once. Keys are localised to the engine (RFC 3414 A.2) once per
//! engine id.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, KeyInit};
use ring::{digest, hmac};

use super::ber::{self, decode_pdu, encode_pdu, integer_tlv, tlv, DecodeError, Oid, Pdu, Reader, RequestKind};
use super::client;
use super::SnmpError;

const SEQUENCE: u8 = 0x30;
const OCTETS: u8 = 0x04;
const AUTH_LEN: usize = 12;
/// usmStatsNotInTimeWindows.0
const NOT_IN_TIME_WINDOW: [u32; 11] = [1, 3, 6, 1, 6, 3, 15, 1, 1, 2, 0];

/// A v3 user's credentials and what was learnt of the agent's engine.
#[derive(Debug)]
pub struct User {
    pub name: Vec<u8>,
    auth_password: Vec<u8>,
    priv_password: Vec<u8>,
    engine: Mutex<Option<Engine>>,
}

#[derive(Debug, Clone)]
struct Engine {
    id: Vec<u8>,
    boots: i64,
    time: i64,
    /// When `time` was read, to advance it.
    at: Instant,
    auth_key: Vec<u8>,
    priv_key: Vec<u8>,
}

impl User {
    pub fn new(name: &str, auth_password: &str, priv_password: &str) -> Result<User, String> {
        if auth_password.len() < 8 || priv_password.len() < 8 {
            return Err("SNMPv3 passwords must have at least 8 characters (RFC 3414)".into());
        }
        Ok(User {
            name: name.as_bytes().to_vec(),
            auth_password: auth_password.as_bytes().to_vec(),
            priv_password: priv_password.as_bytes().to_vec(),
            engine: Mutex::new(None),
        })
    }

    fn engine(&self) -> Option<Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn learn(&self, id: Vec<u8>, boots: i64, time: i64) {
        let mut e = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        let (auth_key, priv_key) = match e.as_ref() {
            Some(old) if old.id == id => (old.auth_key.clone(), old.priv_key.clone()),
            _ => (localize(&self.auth_password, &id), localize(&self.priv_password, &id)),
        };
        *e = Some(Engine {
            id,
            boots,
            time,
            at: Instant::now(),
            auth_key,
            priv_key,
        });
    }
}

/// RFC 3414 A.2.2: the password stretched to 1 MiB and hashed, then
/// localised to the engine id (SHA-1).
pub fn localize(password: &[u8], engine_id: &[u8]) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    let mut block = [0u8; 64];
    let mut i = 0usize;
    for _ in 0..(1_048_576 / 64) {
        for b in block.iter_mut() {
            *b = password[i % password.len()];
            i += 1;
        }
        ctx.update(&block);
    }
    let ku = ctx.finish();
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(ku.as_ref());
    ctx.update(engine_id);
    ctx.update(ku.as_ref());
    ctx.finish().as_ref().to_vec()
}

/// AES-128-CFB over `data` (RFC 3826): IV = boots, time, salt.
fn aes_cfb(key: &[u8], iv: [u8; 16], data: &[u8], encrypt: bool) -> Vec<u8> {
    let cipher = aes::Aes128::new(GenericArray::from_slice(&key[..16]));
    let mut feedback = GenericArray::clone_from_slice(&iv);
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.chunks(16) {
        cipher.encrypt_block(&mut feedback);
        let produced: Vec<u8> = chunk.iter().zip(feedback.iter()).map(|(d, k)| d ^ k).collect();
        let cipher_text = if encrypt { &produced[..] } else { chunk };
        let mut next = feedback;
        next[..cipher_text.len()].copy_from_slice(cipher_text);
        feedback = next;
        out.extend_from_slice(&produced);
    }
    out
}

fn iv(boots: i64, time: i64, salt: &[u8; 8]) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..4].copy_from_slice(&(boots as u32).to_be_bytes());
    iv[4..8].copy_from_slice(&(time as u32).to_be_bytes());
    iv[8..].copy_from_slice(salt);
    iv
}

fn salt() -> [u8; 8] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    (seed ^ NEXT.fetch_add(1, Ordering::Relaxed).rotate_left(32)).to_be_bytes()
}

/// A v3 message: `flags` 0x04 (discovery, no security) or 0x07 (authPriv).
fn message(user: &User, id: i32, engine: Option<&Engine>, scoped_pdu: &[u8]) -> Vec<u8> {
    let (flags, engine_id, boots, time) = match engine {
        Some(e) => {
            let time = e.time + e.at.elapsed().as_secs() as i64;
            (0x07u8, e.id.clone(), e.boots, time)
        }
        None => (0x04, Vec::new(), 0, 0),
    };
    let mut global = integer_tlv(id.into());
    global.extend(integer_tlv(ber::MAX_MESSAGE_BYTES as i64));
    global.extend(tlv(OCTETS, &[flags]));
    global.extend(integer_tlv(3));
    let (data, priv_params) = match engine {
        Some(e) => {
            let s = salt();
            (
                tlv(OCTETS, &aes_cfb(&e.priv_key, iv(boots, time, &s), scoped_pdu, true)),
                s.to_vec(),
            )
        }
        None => (scoped_pdu.to_vec(), Vec::new()),
    };
    let name = if engine.is_some() {
        user.name.clone()
    } else {
        Vec::new()
    };
    let auth_placeholder = if engine.is_some() {
        vec![0u8; AUTH_LEN]
    } else {
        Vec::new()
    };
    let usm = |auth: &[u8]| {
        let mut p = tlv(OCTETS, &engine_id);
        p.extend(integer_tlv(boots));
        p.extend(integer_tlv(time));
        p.extend(tlv(OCTETS, &name));
        p.extend(tlv(OCTETS, auth));
        p.extend(tlv(OCTETS, &priv_params));
        tlv(SEQUENCE, &p)
    };
    let build = |auth: &[u8]| {
        let mut body = integer_tlv(3);
        body.extend(tlv(SEQUENCE, &global));
        body.extend(tlv(OCTETS, &usm(auth)));
        body.extend_from_slice(&data);
        tlv(SEQUENCE, &body)
    };
    let whole = build(&auth_placeholder);
    match engine {
        Some(e) => {
            let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &e.auth_key);
            let tag = hmac::sign(&key, &whole);
            build(&tag.as_ref()[..AUTH_LEN])
        }
        None => whole,
    }
}

fn scoped(engine_id: &[u8], pdu: &[u8]) -> Vec<u8> {
    let mut s = tlv(OCTETS, engine_id);
    s.extend(tlv(OCTETS, b""));
    s.extend_from_slice(pdu);
    tlv(SEQUENCE, &s)
}

/// What an answer held.
struct Answer {
    engine_id: Vec<u8>,
    boots: i64,
    time: i64,
    pdu: Pdu,
}

/// The msgID of a v3 datagram, to route it.
pub fn peek_request_id(bytes: &[u8]) -> Option<i32> {
    let mut outer = Reader::new(bytes);
    let mut r = Reader::new(outer.expect(SEQUENCE, "").ok()?);
    if r.integer("").ok()? != 3 {
        return None;
    }
    let mut g = Reader::new(r.expect(SEQUENCE, "").ok()?);
    i32::try_from(g.integer("").ok()?).ok()
}

fn decode(bytes: &[u8], engine: Option<&Engine>) -> Result<Answer, DecodeError> {
    let err = |s: &str| DecodeError(s.to_string());
    let mut outer = Reader::new(bytes);
    let mut r = Reader::new(outer.expect(SEQUENCE, "the message")?);
    if r.integer("the version")? != 3 {
        return Err(err("not an SNMPv3 message"));
    }
    let mut g = Reader::new(r.expect(SEQUENCE, "the global data")?);
    g.integer("msgID")?;
    g.integer("msgMaxSize")?;
    let flags = *g.octets("msgFlags")?.first().ok_or_else(|| err("empty msgFlags"))?;
    let mut usm = Reader::new(r.octets("the security parameters")?);
    let mut p = Reader::new(usm.expect(SEQUENCE, "the USM parameters")?);
    let engine_id = p.octets("the engine id")?.to_vec();
    let boots = p.integer("the engine boots")?;
    let time = p.integer("the engine time")?;
    p.octets("the user name")?;
    let auth = p.octets("the authentication parameters")?.to_vec();
    let salt = p.octets("the privacy parameters")?.to_vec();
    if flags & 0x01 != 0 {
        let e = engine.ok_or_else(|| err("an authenticated answer before discovery"))?;
        if auth.len() != AUTH_LEN {
            return Err(err("authentication parameters of the wrong size"));
        }
        // Check the HMAC over the message with the parameters zeroed.
        let mut zeroed = bytes.to_vec();
        let at = find(&zeroed, &auth).ok_or_else(|| err("authentication parameters not found"))?;
        zeroed[at..at + AUTH_LEN].fill(0);
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &e.auth_key);
        let tag = hmac::sign(&key, &zeroed);
        if tag.as_ref()[..AUTH_LEN] != auth[..] {
            return Err(err("the answer's authentication does not match (wrong auth password?)"));
        }
    }
    let scoped_pdu = if flags & 0x02 != 0 {
        let e = engine.ok_or_else(|| err("an encrypted answer before discovery"))?;
        let s: [u8; 8] = salt
            .as_slice()
            .try_into()
            .map_err(|_| err("privacy parameters of the wrong size"))?;
        let enc = r.octets("the encrypted PDU")?;
        aes_cfb(&e.priv_key, iv(boots, time, &s), enc, false)
    } else {
        let (tag, content) = r.next_tlv()?;
        if tag != SEQUENCE {
            return Err(err("the scoped PDU is not a SEQUENCE"));
        }
        tlv(SEQUENCE, content)
    };
    let mut sp = Reader::new(&scoped_pdu);
    let mut s = Reader::new(
        sp.expect(SEQUENCE, "the scoped PDU")
            .map_err(|_| err("cannot decrypt the answer (wrong privacy password?)"))?,
    );
    s.octets("the context engine id")?;
    s.octets("the context name")?;
    let (tag, content) = s.next_tlv()?;
    let pdu = decode_pdu(&tlv(tag, content))?;
    Ok(Answer {
        engine_id,
        boots,
        time,
        pdu,
    })
}

/// Fuzz entry point (docs/fuzzing.md): an answer decoded as at discovery
/// and as after it, with a fixed engine's keys, so that the encrypted path
/// is reached too.
#[doc(hidden)]
pub fn fuzz_decode(bytes: &[u8]) {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    let engine = ENGINE.get_or_init(|| Engine {
        id: b"fuzz".to_vec(),
        boots: 1,
        time: 1,
        at: Instant::now(),
        auth_key: localize(b"fuzz-auth-password", b"fuzz"),
        priv_key: localize(b"fuzz-priv-password", b"fuzz"),
    });
    let _ = peek_request_id(bytes);
    let _ = decode(bytes, None);
    let _ = decode(bytes, Some(engine));
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One authPriv request and its Response, discovering the engine first
/// when needed.
pub(crate) async fn request(
    user: &User,
    addr: SocketAddr,
    kind: RequestKind,
    oids: &[Oid],
    timeout: Duration,
    retries: u32,
) -> Result<Pdu, SnmpError> {
    let garbage = |e: DecodeError| SnmpError::Garbage(addr, e.0);
    for attempt in 0..2 {
        let engine = match user.engine() {
            Some(e) => e,
            None => {
                let id = client::next_request_id();
                let pdu = encode_pdu(RequestKind::Get, id, &[]).map_err(|e| SnmpError::Garbage(addr, e))?;
                let m = message(user, id, None, &scoped(b"", &pdu));
                let bytes = client::exchange(addr, id, m, timeout, retries).await?;
                let a = decode(&bytes, None).map_err(garbage)?;
                if a.engine_id.is_empty() {
                    return Err(SnmpError::Garbage(addr, "the agent gave no engine id".into()));
                }
                user.learn(a.engine_id, a.boots, a.time);
                user.engine()
                    .ok_or_else(|| SnmpError::Garbage(addr, "no engine".into()))?
            }
        };
        let id = client::next_request_id();
        let pdu = encode_pdu(kind, id, oids).map_err(|e| SnmpError::Garbage(addr, e))?;
        let m = message(user, id, Some(&engine), &scoped(&engine.id, &pdu));
        let bytes = client::exchange(addr, id, m, timeout, retries).await?;
        let a = decode(&bytes, Some(&engine)).map_err(garbage)?;
        if a.pdu.tag == ber::REPORT {
            let what = a.pdu.varbinds.first().map(|(o, _)| o.clone()).unwrap_or_default();
            if what.0 == NOT_IN_TIME_WINDOW && attempt == 0 {
                user.learn(a.engine_id, a.boots, a.time);
                continue;
            }
            return Err(SnmpError::Garbage(
                addr,
                format!("the agent refused the request: {}", report_name(&what)),
            ));
        }
        return Ok(a.pdu);
    }
    Err(SnmpError::Garbage(
        addr,
        "the agent's clock keeps moving out of the time window".into(),
    ))
}

fn report_name(oid: &Oid) -> String {
    let names = [
        (1, "usmStatsUnsupportedSecLevels"),
        (2, "usmStatsNotInTimeWindows"),
        (3, "usmStatsUnknownUserNames (no such user)"),
        (4, "usmStatsUnknownEngineIDs"),
        (5, "usmStatsWrongDigests (wrong auth password)"),
        (6, "usmStatsDecryptionErrors (wrong privacy password)"),
    ];
    match oid.0.as_slice() {
        [1, 3, 6, 1, 6, 3, 15, 1, 1, n, 0] => names
            .iter()
            .find(|(i, _)| i == n)
            .map(|(_, s)| s.to_string())
            .unwrap_or_else(|| oid.to_string()),
        _ => oid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_localised_as_rfc_3414_says() {
        // RFC 3414 A.3.2: "maplesyrup", engine id 00..02, SHA.
        let engine = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let k = localize(b"maplesyrup", &engine);
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "6695febc9288e36282235fc7151f128497b38f3f");
    }

    #[test]
    fn cfb_round_trips_and_is_not_the_identity() {
        let key = [7u8; 16];
        let iv = iv(3, 1000, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let data: Vec<u8> = (0..45).collect();
        let enc = aes_cfb(&key, iv, &data, true);
        assert_ne!(enc, data);
        assert_eq!(aes_cfb(&key, iv, &enc, false), data);
    }
}
