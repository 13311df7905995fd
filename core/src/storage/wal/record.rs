//! WAL record bodies: an upsert batch or a delete batch.

use crate::filter::codec::{
    decode_payload, encode_payload, put_f32s, put_u32, put_u64, DecodeResult, Decoder,
};
use crate::filter::value::Payload;

pub(crate) const KIND_UPSERT: u8 = 1;
pub(crate) const KIND_DELETE: u8 = 2;

/// One point as carried in an upsert record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PointRecord {
    pub id: u64,
    pub vector: Vec<f32>,
    pub payload: Payload,
}

/// A decoded record body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WalOp {
    Upsert {
        dim: usize,
        points: Vec<PointRecord>,
    },
    Delete {
        ids: Vec<u64>,
    },
}

/// Encode an upsert body: `count u32, dim u32, count x (id u64, f32 x dim, payload)`.
/// `vectors` holds `ids.len() * dim` floats; `payloads` is empty or one per id.
pub(crate) fn encode_upsert(
    out: &mut Vec<u8>,
    dim: usize,
    ids: &[u64],
    vectors: &[f32],
    payloads: &[Payload],
) {
    put_u32(out, ids.len() as u32);
    put_u32(out, dim as u32);
    let empty = Payload::new();
    for (i, id) in ids.iter().enumerate() {
        put_u64(out, *id);
        put_f32s(out, &vectors[i * dim..(i + 1) * dim]);
        encode_payload(out, payloads.get(i).unwrap_or(&empty));
    }
}

/// Encode a delete body: `count u32, count x id u64`.
pub(crate) fn encode_delete(out: &mut Vec<u8>, ids: &[u64]) {
    put_u32(out, ids.len() as u32);
    for id in ids {
        put_u64(out, *id);
    }
}

pub(crate) fn decode(kind: u8, body: &[u8]) -> DecodeResult<WalOp> {
    let mut d = Decoder::new(body);
    let op = match kind {
        KIND_UPSERT => {
            let count = d.u32()? as usize;
            let dim = d.u32()? as usize;
            if dim == 0 || dim > crate::types::MAX_DIM {
                return d.err(format!("bad dimension {dim}"));
            }
            if count > d.remaining() / (8 + 4 * dim + 4) {
                return d.err(format!("record claims {count} points"));
            }
            let mut points = Vec::with_capacity(count);
            for _ in 0..count {
                let id = d.u64()?;
                let mut vector = Vec::with_capacity(dim);
                d.f32s_into(dim, &mut vector)?;
                let payload = decode_payload(&mut d)?;
                points.push(PointRecord {
                    id,
                    vector,
                    payload,
                });
            }
            WalOp::Upsert { dim, points }
        }
        KIND_DELETE => {
            let count = d.u32()? as usize;
            if count > d.remaining() / 8 {
                return d.err(format!("record claims {count} ids"));
            }
            let ids = (0..count).map(|_| d.u64()).collect::<DecodeResult<_>>()?;
            WalOp::Delete { ids }
        }
        k => return d.err(format!("unknown record kind {k}")),
    };
    if d.remaining() != 0 {
        return d.err("trailing bytes after the record body");
    }
    Ok(op)
}
