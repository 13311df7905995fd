//! Little-endian encoders and a bounds-checked decoder for record bodies and payloads.
//! Decoding never panics: every read is checked and reports the offset of the bad byte.

use crate::filter::value::{Payload, Value, MAX_KEY_BYTES, MAX_PAYLOAD_BYTES};

/// Where and why a decode failed, relative to the start of the decoded slice.
#[derive(Debug)]
pub(crate) struct DecodeError {
    pub offset: usize,
    pub reason: String,
}

pub(crate) type DecodeResult<T> = Result<T, DecodeError>;

/// A cursor over a byte slice.
pub(crate) struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn err<T>(&self, reason: impl Into<String>) -> DecodeResult<T> {
        Err(DecodeError {
            offset: self.pos,
            reason: reason.into(),
        })
    }

    pub fn bytes(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        if n > self.remaining() {
            return self.err(format!("needs {n} bytes, {} left", self.remaining()));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u32(&mut self) -> DecodeResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> DecodeResult<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub fn f64(&mut self) -> DecodeResult<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// `n` little-endian f32s appended to `out`.
    pub fn f32s_into(&mut self, n: usize, out: &mut Vec<f32>) -> DecodeResult<()> {
        let Some(len) = n.checked_mul(4) else {
            return self.err("vector length overflows");
        };
        let raw = self.bytes(len)?;
        out.extend(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        Ok(())
    }

    pub fn str(&mut self, max: usize) -> DecodeResult<&'a str> {
        let start = self.pos;
        let n = self.u32()? as usize;
        if n > max {
            self.pos = start;
            return self.err(format!("string of {n} bytes exceeds the limit of {max}"));
        }
        let b = self.bytes(n)?;
        std::str::from_utf8(b).or_else(|_| {
            self.pos = start;
            self.err("string is not UTF-8")
        })
    }
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}
pub(crate) fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

const TAG_NULL: u8 = 0;
const TAG_BOOL: u8 = 1;
const TAG_INT: u8 = 2;
const TAG_FLOAT: u8 = 3;
const TAG_STR: u8 = 4;
const TAG_TAGS: u8 = 5;

/// Append the encoding of `p`: `count u32`, then per field `key str, tag u8, value`.
pub(crate) fn encode_payload(out: &mut Vec<u8>, p: &Payload) {
    put_u32(out, p.len() as u32);
    for (k, v) in p {
        put_str(out, k);
        match v {
            Value::Null => out.push(TAG_NULL),
            Value::Bool(b) => {
                out.push(TAG_BOOL);
                out.push(u8::from(*b));
            }
            Value::Int(i) => {
                out.push(TAG_INT);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Value::Float(f) => {
                out.push(TAG_FLOAT);
                out.extend_from_slice(&f.to_le_bytes());
            }
            Value::Str(s) => {
                out.push(TAG_STR);
                put_str(out, s);
            }
            Value::Tags(t) => {
                out.push(TAG_TAGS);
                put_u32(out, t.len() as u32);
                for s in t {
                    put_str(out, s);
                }
            }
        }
    }
}

/// Decode one payload written by [`encode_payload`].
/// The string key of an encoded payload (its first field when that field has the empty name
/// and holds a string; see `filter::key`), without decoding the rest.
pub(crate) fn decode_payload_key<'a>(d: &mut Decoder<'a>) -> DecodeResult<Option<&'a str>> {
    if d.u32()? == 0 {
        return Ok(None);
    }
    if !d.str(MAX_KEY_BYTES)?.is_empty() {
        return Ok(None);
    }
    if d.u8()? != TAG_STR {
        return Ok(None);
    }
    d.str(MAX_PAYLOAD_BYTES).map(Some)
}

pub(crate) fn decode_payload(d: &mut Decoder<'_>) -> DecodeResult<Payload> {
    let count = d.u32()? as usize;
    // Every field needs at least 5 bytes (key length + tag): bounds the loop on garbage.
    if count > d.remaining() / 5 {
        return d.err(format!("payload claims {count} fields"));
    }
    let mut p = Payload::new();
    for _ in 0..count {
        let key = d.str(MAX_KEY_BYTES)?.to_owned();
        let v = match d.u8()? {
            TAG_NULL => Value::Null,
            TAG_BOOL => match d.u8()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return d.err(format!("bad bool byte {b}")),
            },
            TAG_INT => Value::Int(d.i64()?),
            TAG_FLOAT => Value::Float(d.f64()?),
            TAG_STR => Value::Str(d.str(MAX_PAYLOAD_BYTES)?.to_owned()),
            TAG_TAGS => {
                let n = d.u32()? as usize;
                if n > d.remaining() / 4 {
                    return d.err(format!("tag list claims {n} entries"));
                }
                let mut t = Vec::with_capacity(n);
                for _ in 0..n {
                    t.push(d.str(MAX_PAYLOAD_BYTES)?.to_owned());
                }
                Value::Tags(t)
            }
            tag => return d.err(format!("unknown value tag {tag}")),
        };
        if p.insert(key, v).is_some() {
            return d.err("duplicate payload field");
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validated_size_equals_encoded_size_limit() {
        use crate::filter::value::validate_payload;
        let mut p = Payload::new();
        // 4 (count) + 4 + 1 (key "s") + 1 (tag) + 4 (len) + n
        let n = MAX_PAYLOAD_BYTES - 14;
        p.insert("s".into(), Value::Str("x".repeat(n)));
        validate_payload(&p).unwrap();
        let mut buf = Vec::new();
        encode_payload(&mut buf, &p);
        assert_eq!(buf.len(), MAX_PAYLOAD_BYTES);
        assert_eq!(decode_payload(&mut Decoder::new(&buf)).unwrap(), p);
        p.insert("s".into(), Value::Str("x".repeat(n + 1)));
        assert!(validate_payload(&p).is_err());
        p.insert("s".into(), Value::Tags(vec!["y".repeat(n / 2); 3]));
        assert!(validate_payload(&p).is_err());
    }

    #[test]
    fn payload_round_trip_and_truncation() {
        let mut p = Payload::new();
        p.insert("a".into(), Value::Null);
        p.insert("b".into(), Value::Bool(true));
        p.insert("c".into(), Value::Int(-7));
        p.insert("d".into(), Value::Float(2.5));
        p.insert("é ключ".into(), Value::Str("héllo".into()));
        p.insert("t".into(), Value::Tags(vec!["x".into(), String::new()]));
        let mut buf = Vec::new();
        encode_payload(&mut buf, &p);
        let got = decode_payload(&mut Decoder::new(&buf)).expect("decodes");
        assert_eq!(got, p);
        for cut in 0..buf.len() {
            assert!(
                decode_payload(&mut Decoder::new(&buf[..cut])).is_err(),
                "cut {cut}"
            );
        }
    }
}
