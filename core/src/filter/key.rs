//! String ids: the 64-bit id of a string key, and where the key is kept.
//!
//! A collection created with string ids works on 64-bit ids like any other; the id of a key
//! is [`str_id`] of it, and the key itself is stored in the point's payload under the field
//! with the empty name ([`KEY_FIELD`]), which user payloads cannot use (field names are 1 to
//! 256 bytes). The empty name sorts first, so the key is the first field of the encoded
//! payload and is read without decoding the rest. Everything that carries payloads — the log,
//! segments, merges, compaction — carries the key with no format of its own (FORMAT.md,
//! "String ids").

/// The payload field that holds a point's string key.
pub const KEY_FIELD: &str = "";

/// Longest string id, in bytes (UTF-8).
pub const MAX_STR_ID_BYTES: usize = 1024;

#[cfg(feature = "testing")]
thread_local! {
    /// Test hook: keep only this many low bits of string ids on this thread (64: all), so
    /// tests can meet colliding keys (see `testing::narrow_str_ids`).
    pub(crate) static NARROW_BITS: std::cell::Cell<u32> = const { std::cell::Cell::new(64) };
}

const K0: u64 = 0x9E37_79B9_7F4A_7C15;
const K1: u64 = 0xD6E8_FEB8_6659_FD93;

/// A bijective 64-bit mixer (the finaliser of SplitMix64).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 64-bit id of a string key. Stable across versions and platforms (FORMAT.md gives the
/// algorithm): the state starts from the byte length, each 8-byte little-endian word of the
/// key (the last one zero-padded) is mixed in, and the result is never `u64::MAX` (the
/// reserved id) — that value maps to `u64::MAX - 1`.
///
/// ```
/// // Fixed forever (FORMAT.md): the same key gives the same id in every process and version.
/// assert_eq!(trovedb::str_id("doc#1"), trovedb::str_id("doc#1"));
/// assert_ne!(trovedb::str_id("doc#1"), trovedb::str_id("doc#2"));
/// ```
pub fn str_id(key: &str) -> u64 {
    let bytes = key.as_bytes();
    let mut h = mix((bytes.len() as u64).wrapping_mul(K0) ^ K1);
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = mix(h ^ u64::from_le_bytes(w)).wrapping_add(K0);
    }
    let id = mix(h ^ K1);
    #[cfg(feature = "testing")]
    let id = NARROW_BITS.with(|b| match b.get() {
        bits @ 1..=63 => id & ((1u64 << bits) - 1),
        _ => id,
    });
    if id == u64::MAX {
        u64::MAX - 1
    } else {
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_pinned() {
        // The id of a key is part of the file format: changing the function would make
        // every stored string id unreachable. These values come from a separate Python
        // transcription of the algorithm in FORMAT.md.
        let pinned = [
            ("", 0xe384_d349_b2de_2ad7),
            ("doc-1#0", 0x59d5_0188_4f04_358a),
            (
                "550e8400-e29b-41d4-a716-446655440000",
                0xc1b4_78e5_3412_0cf5,
            ),
            ("héllo wörld/path/to/file.txt#12", 0xb6b3_ff7e_3a76_97af),
        ];
        for (k, want) in pinned {
            assert_eq!(str_id(k), want);
        }
    }

    #[test]
    fn no_collisions_among_typical_keys() {
        let mut seen = std::collections::HashSet::new();
        for d in 0..20_000 {
            for c in 0..10 {
                assert!(seen.insert(str_id(&format!("doc-{d}#{c}"))));
            }
        }
        // Keys that differ only by zero bytes at the end, or by length, differ.
        assert_ne!(str_id("a"), str_id("a\0"));
        assert_ne!(str_id(""), str_id("\0"));
        assert_ne!(str_id("abcdefgh"), str_id("abcdefgh\0"));
    }
}
