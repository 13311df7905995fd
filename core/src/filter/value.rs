//! The JSON-like payload stored beside each vector.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One payload value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Value {
    /// JSON null.
    Null,
    /// true / false.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A finite 64-bit float.
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// A list of strings (tags).
    Tags(Vec<String>),
}

/// A point's payload: field name to value, kept in key order.
pub type Payload = BTreeMap<String, Value>;

/// Longest field name, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest encoded payload of one point, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// The name of a value's type, for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Str(_) => "string",
        Value::Tags(_) => "list of strings",
    }
}

/// Bytes of a value in the storage encoding (tag included).
fn encoded_len(v: &Value) -> usize {
    1 + match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Int(_) | Value::Float(_) => 8,
        Value::Str(s) => 4 + s.len(),
        Value::Tags(t) => 4 + t.iter().map(|s| 4 + s.len()).sum::<usize>(),
    }
}

/// Check a payload can be stored: key sizes, finite floats, total encoded size at most
/// [`MAX_PAYLOAD_BYTES`] (larger payloads could not be read back).
pub fn validate_payload(p: &Payload) -> Result<()> {
    let total: usize = 4 + p
        .iter()
        .map(|(k, v)| 4 + k.len() + encoded_len(v))
        .sum::<usize>();
    if total > MAX_PAYLOAD_BYTES {
        return Err(Error::invalid(
            "payload",
            format!("payload encodes to {total} bytes; the limit is {MAX_PAYLOAD_BYTES}"),
        ));
    }
    for (k, v) in p {
        if k.is_empty() || k.len() > MAX_KEY_BYTES {
            return Err(Error::invalid(
                "payload",
                format!(
                    "field names must be 1..={MAX_KEY_BYTES} bytes, got {} bytes",
                    k.len()
                ),
            ));
        }
        if let Value::Float(f) = v {
            if !f.is_finite() {
                return Err(Error::invalid(
                    "payload",
                    format!("field `{k}` holds a non-finite float"),
                ));
            }
        }
    }
    Ok(())
}

/// Convert a `serde_json::Value` object into a payload. Nested objects and mixed lists
/// are refused: the payload model is flat (README, "Filters").
pub fn payload_from_json(v: &serde_json::Value) -> Result<Payload> {
    let serde_json::Value::Object(map) = v else {
        return Err(Error::invalid("payload", "a payload must be a JSON object"));
    };
    let mut out = Payload::new();
    for (k, v) in map {
        out.insert(k.clone(), value_from_json(k, v)?);
    }
    validate_payload(&out)?;
    Ok(out)
}

fn value_from_json(key: &str, v: &serde_json::Value) -> Result<Value> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else {
                Value::Float(n.as_f64().ok_or_else(|| {
                    Error::invalid("payload", format!("field `{key}`: number out of range"))
                })?)
            }
        }
        J::String(s) => Value::Str(s.clone()),
        J::Array(items) => Value::Tags(
            items
                .iter()
                .map(|i| {
                    i.as_str().map(str::to_owned).ok_or_else(|| {
                        Error::invalid(
                            "payload",
                            format!("field `{key}`: lists may hold only strings"),
                        )
                    })
                })
                .collect::<Result<_>>()?,
        ),
        J::Object(_) => {
            return Err(Error::invalid(
                "payload",
                format!("field `{key}`: nested objects are not supported"),
            ))
        }
    })
}

/// Convert a payload to a `serde_json::Value` object.
pub fn payload_to_json(p: &Payload) -> serde_json::Value {
    serde_json::to_value(p).unwrap_or(serde_json::Value::Null)
}
