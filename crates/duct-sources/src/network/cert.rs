//! When an X.509 certificate expires: a walk over just enough DER to reach
//! `tbsCertificate.validity.notAfter` (RFC 5280 §4.1).
//!
//! The HTTP and TCP checks report days until the server's certificate
//! expires. rustls hands over the certificate as DER and keeps its parsed
//! form private; a general X.509 parser (x509-parser and its nom, asn1-rs,
//! time and OID-registry dependencies) would be the largest crate in the
//! tree for one field, so this reads the field itself: a dozen lines of
//! tag-length-value walking, tested on certificates made by OpenSSL.

/// What is wrong with a certificate's DER.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("the certificate ends early")]
    Truncated,
    #[error("expected {expected} in the certificate, found tag {found:#04x}")]
    Unexpected { expected: &'static str, found: u8 },
    #[error("bad time `{0}` in the certificate")]
    Time(String),
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// One DER element: its tag and content, and what follows it.
fn element(der: &[u8]) -> Result<(u8, &[u8], &[u8]), CertError> {
    let (&tag, rest) = der.split_first().ok_or(CertError::Truncated)?;
    let (&first, rest) = rest.split_first().ok_or(CertError::Truncated)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(CertError::Truncated);
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(CertError::Truncated);
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The element at the front of `der`, which must carry `tag`.
fn expect<'a>(der: &'a [u8], tag: u8, what: &'static str) -> Result<(&'a [u8], &'a [u8]), CertError> {
    let (found, content, rest) = element(der)?;
    if found != tag {
        return Err(CertError::Unexpected { expected: what, found });
    }
    Ok((content, rest))
}

/// The certificate's `notAfter`, in seconds since the epoch.
pub fn not_after(der: &[u8]) -> Result<i64, CertError> {
    let (certificate, _) = expect(der, SEQUENCE, "the certificate")?;
    let (tbs, _) = expect(certificate, SEQUENCE, "tbsCertificate")?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.2;
    }
    rest = expect(rest, INTEGER, "the serial number")?.1;
    rest = expect(rest, SEQUENCE, "the signature algorithm")?.1;
    rest = expect(rest, SEQUENCE, "the issuer")?.1;
    let (validity, _) = expect(rest, SEQUENCE, "the validity")?;
    let (_, _, after) = element(validity)?;
    let (tag, time, _) = element(after)?;
    parse_time(tag, time)
}

/// Days from `now` (seconds since the epoch) until `not_after`; negative
/// once expired.
pub fn days_left(not_after: i64, now: f64) -> f64 {
    (not_after as f64 - now) / 86_400.0
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`), as RFC 5280 requires them: in UTC, with seconds.
fn parse_time(tag: u8, text: &[u8]) -> Result<i64, CertError> {
    let bad = || CertError::Time(String::from_utf8_lossy(text).into_owned());
    let digits = match (tag, text.split_last()) {
        (UTC_TIME | GENERALIZED_TIME, Some((b'Z', digits))) => digits,
        (UTC_TIME | GENERALIZED_TIME, _) => return Err(bad()),
        (found, _) => {
            return Err(CertError::Unexpected {
                expected: "a time",
                found,
            })
        }
    };
    let number = |range: std::ops::Range<usize>| -> Result<i64, CertError> {
        let part = digits.get(range).ok_or_else(bad)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(part.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
    };
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = number(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (GENERALIZED_TIME, 14) => (number(0..4)?, 4),
        _ => return Err(bad()),
    };
    let (month, day) = (number(rest..rest + 2)?, number(rest + 2..rest + 4)?);
    let (hour, minute, second) = (
        number(rest + 4..rest + 6)?,
        number(rest + 6..rest + 8)?,
        number(rest + 8..rest + 10)?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    Ok(duct_core::civil::days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::fixture;

    /// The DER inside a PEM file.
    fn der(name: &str) -> Vec<u8> {
        let pem = String::from_utf8(fixture(name)).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        decode_base64(&b64)
    }

    fn decode_base64(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in text.bytes().filter(|&c| c != b'=') {
            let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }

    #[test]
    fn reads_not_after_of_openssl_certificates() {
        // `openssl x509 -enddate`: notAfter=Nov 27 13:33:02 2027 GMT
        assert_eq!(not_after(&der("cert-utctime.pem")), Ok(1_827_322_382));
        // notAfter=Nov  3 13:33:02 2126 GMT: past 2049, a GeneralizedTime.
        assert_eq!(not_after(&der("cert-generalizedtime.pem")), Ok(4_949_386_382));
        // A v1 certificate has no version field (Jun 15 13:33:02 2027 GMT).
        assert_eq!(not_after(&der("cert-v1.pem")), Ok(1_813_066_382));
    }

    #[test]
    fn days_left_counts_from_now() {
        assert_eq!(days_left(86_400 * 10, 0.0), 10.0);
        assert_eq!(days_left(0, 43_200.0), -0.5);
    }

    #[test]
    fn refuses_what_is_not_a_certificate() {
        assert_eq!(not_after(&[]), Err(CertError::Truncated));
        let octets = [0x04, 0x01, 0x00];
        assert_eq!(
            not_after(&octets),
            Err(CertError::Unexpected {
                expected: "the certificate",
                found: 0x04
            })
        );
        let full = der("cert-utctime.pem");
        for cut in [1, 10, 100, 200] {
            assert!(not_after(&full[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn times_follow_rfc_5280() {
        assert_eq!(parse_time(UTC_TIME, b"700101000000Z"), Ok(0));
        assert_eq!(parse_time(UTC_TIME, b"491231235959Z"), Ok(2_524_607_999));
        assert_eq!(parse_time(GENERALIZED_TIME, b"20000229120000Z"), Ok(951_825_600));
        assert!(parse_time(UTC_TIME, b"700101000000").is_err(), "no zone");
        assert!(parse_time(UTC_TIME, b"701301000000Z").is_err(), "month 13");
        assert!(parse_time(GENERALIZED_TIME, b"700101000000Z").is_err(), "short year");
        assert!(parse_time(0x0c, b"700101000000Z").is_err(), "not a time type");
    }
}
