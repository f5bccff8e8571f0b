//! The subset of CBOR (RFC 8949) that SenML packs need: writing unsigned
//! and negative integers, floats, text, arrays and maps of known length,
//! null; reading any well-formed item (tags and byte strings are read and
//! passed over, indefinite lengths accepted), with a nesting limit and no
//! allocation beyond what the input holds.
//!
//! Written here rather than taken as a crate: the encoder is forty lines,
//! and a SenML pack needs none of what general CBOR crates add (serde
//! derive, big numbers, dates). Floats are written as Python's cbor2
//! writes them, which is what Duct sends: eight bytes, except NaN and the
//! infinities as half floats.

/// A decoded CBOR item.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i128),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Bool(bool),
    Null,
    Undefined,
}

/// Why bytes are not one CBOR item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("CBOR ends early")]
    Truncated,
    #[error("CBOR item malformed at byte {0}")]
    Malformed(usize),
    #[error("CBOR text is not UTF-8")]
    NotUtf8,
    #[error("CBOR nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("{0} bytes after the CBOR item")]
    Trailing(usize),
}

const MAX_DEPTH: usize = 32;

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= u8::MAX as u64 {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= u16::MAX as u64 {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u32::MAX as u64 {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

pub fn int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        head(out, 0, v as u64);
    } else {
        head(out, 1, !(v as u64));
    }
}

pub fn float(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(&[0xf9, 0x7e, 0x00]);
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 {
            &[0xf9, 0x7c, 0x00]
        } else {
            &[0xf9, 0xfc, 0x00]
        });
    } else {
        out.push(0xfb);
        out.extend_from_slice(&v.to_bits().to_be_bytes());
    }
}

pub fn text(out: &mut Vec<u8>, s: &str) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub fn array(out: &mut Vec<u8>, len: usize) {
    head(out, 4, len as u64);
}

pub fn map(out: &mut Vec<u8>, len: usize) {
    head(out, 5, len as u64);
}

pub fn null(out: &mut Vec<u8>) {
    out.push(0xf6);
}

/// Reads exactly one item from `data`.
pub fn decode(data: &[u8]) -> Result<Value, Error> {
    let mut r = Reader { data, pos: 0 };
    let v = r.item(0)?;
    match data.len() - r.pos {
        0 => Ok(v),
        n => Err(Error::Trailing(n)),
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

/// A length, or none for an indefinite one.
type Len = Option<u64>;

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(Error::Truncated)?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    /// The argument of an initial byte's low five bits.
    fn argument(&mut self, info: u8) -> Result<Len, Error> {
        Ok(Some(match info {
            0..=23 => info.into(),
            24 => self.byte()?.into(),
            25 => u16::from_be_bytes(self.take(2)?.try_into().unwrap_or_default()).into(),
            26 => u32::from_be_bytes(self.take(4)?.try_into().unwrap_or_default()).into(),
            27 => u64::from_be_bytes(self.take(8)?.try_into().unwrap_or_default()),
            31 => return Ok(None),
            _ => return Err(Error::Malformed(self.pos - 1)),
        }))
    }

    /// A count of items that cannot be more than the bytes left (each
    /// item takes one at least): no allocation from a forged length.
    fn count(&self, n: u64) -> Result<usize, Error> {
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.data.len() - self.pos)
            .ok_or(Error::Truncated)
    }

    fn is_break(&mut self) -> Result<bool, Error> {
        if *self.data.get(self.pos).ok_or(Error::Truncated)? == 0xff {
            self.pos += 1;
            return Ok(true);
        }
        Ok(false)
    }

    fn string(&mut self, major: u8, len: Len) -> Result<Vec<u8>, Error> {
        match len {
            Some(n) => Ok(self.take(self.count(n)?)?.to_vec()),
            None => {
                let mut all = Vec::new();
                while !self.is_break()? {
                    let start = self.pos;
                    let b = self.byte()?;
                    if b >> 5 != major || b & 31 == 31 {
                        return Err(Error::Malformed(start));
                    }
                    let len = self.argument(b & 31)?;
                    all.extend(self.string(major, len)?);
                }
                Ok(all)
            }
        }
    }

    fn item(&mut self, depth: usize) -> Result<Value, Error> {
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        let start = self.pos;
        let b = self.byte()?;
        let (major, info) = (b >> 5, b & 31);
        if major == 7 {
            return self.simple(info, start);
        }
        let arg = self.argument(info)?;
        Ok(match (major, arg) {
            (0, Some(n)) => Value::Int(n.into()),
            (1, Some(n)) => Value::Int(-1 - i128::from(n)),
            (2, len) => Value::Bytes(self.string(2, len)?),
            (3, len) => Value::Text(String::from_utf8(self.string(3, len)?).map_err(|_| Error::NotUtf8)?),
            (4, len) => {
                let mut items = Vec::new();
                match len {
                    Some(n) => {
                        for _ in 0..self.count(n)? {
                            items.push(self.item(depth + 1)?);
                        }
                    }
                    None => {
                        while !self.is_break()? {
                            items.push(self.item(depth + 1)?);
                        }
                    }
                }
                Value::Array(items)
            }
            (5, len) => {
                let mut pairs = Vec::new();
                match len {
                    Some(n) => {
                        for _ in 0..self.count(n)? {
                            pairs.push((self.item(depth + 1)?, self.item(depth + 1)?));
                        }
                    }
                    None => {
                        while !self.is_break()? {
                            pairs.push((self.item(depth + 1)?, self.item(depth + 1)?));
                        }
                    }
                }
                Value::Map(pairs)
            }
            // A tag: its content stands for it.
            (6, Some(_)) => self.item(depth + 1)?,
            _ => return Err(Error::Malformed(start)),
        })
    }

    fn simple(&mut self, info: u8, start: usize) -> Result<Value, Error> {
        Ok(match info {
            20 => Value::Bool(false),
            21 => Value::Bool(true),
            22 => Value::Null,
            23 => Value::Undefined,
            24 => {
                self.byte()?;
                Value::Undefined
            }
            25 => Value::Float(half(u16::from_be_bytes(self.take(2)?.try_into().unwrap_or_default()))),
            26 => Value::Float(f32::from_be_bytes(self.take(4)?.try_into().unwrap_or_default()).into()),
            27 => Value::Float(f64::from_be_bytes(self.take(8)?.try_into().unwrap_or_default())),
            0..=19 => Value::Undefined,
            _ => return Err(Error::Malformed(start)),
        })
    }
}

/// An IEEE 754 half float's value.
fn half(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = (bits >> 10) & 0x1f;
    let mant = f64::from(bits & 0x3ff);
    sign * match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + mant / 1024.0) * 2f64.powi(i32::from(e) - 15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn items_are_written_as_cbor2_writes_them() {
        let mut out = Vec::new();
        int(&mut out, -5);
        int(&mut out, 1000);
        float(&mut out, 1.5);
        float(&mut out, f64::NAN);
        float(&mut out, f64::NEG_INFINITY);
        text(&mut out, "é");
        null(&mut out);
        assert_eq!(hex(&out), "241903e8fb3ff8000000000000f97e00f9fc0062c3a9f6");
    }

    #[test]
    fn what_is_written_reads_back() {
        let mut out = Vec::new();
        array(&mut out, 2);
        map(&mut out, 1);
        text(&mut out, "v");
        float(&mut out, -0.25);
        int(&mut out, i64::MIN);
        assert_eq!(
            decode(&out).unwrap(),
            Value::Array(vec![
                Value::Map(vec![(Value::Text("v".into()), Value::Float(-0.25))]),
                Value::Int(i64::MIN.into()),
            ])
        );
    }

    #[test]
    fn other_encoders_forms_are_read() {
        // Indefinite array of a half float 1.0, a tagged (1) integer, an
        // indefinite text "ab" in two chunks, a float32 0.5.
        let data = [
            0x9f, 0xf9, 0x3c, 0x00, 0xc1, 0x01, 0x7f, 0x61, b'a', 0x61, b'b', 0xff, 0xfa, 0x3f, 0, 0, 0, 0xff,
        ];
        assert_eq!(
            decode(&data).unwrap(),
            Value::Array(vec![
                Value::Float(1.0),
                Value::Int(1),
                Value::Text("ab".into()),
                Value::Float(0.5)
            ])
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic_or_an_allocation() {
        assert_eq!(
            decode(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(Error::Truncated)
        );
        assert_eq!(decode(&[0x62, b'a']), Err(Error::Truncated));
        assert_eq!(decode(&[0x61, 0xff]), Err(Error::NotUtf8));
        assert_eq!(decode(&[0x01, 0x02]), Err(Error::Trailing(1)));
        assert_eq!(decode(&[0x1c]), Err(Error::Malformed(0)));
        assert_eq!(decode(&[0x81; 100]), Err(Error::TooDeep));
        assert_eq!(decode(&[]), Err(Error::Truncated));
    }
}
