//! Entry points for fuzzing (feature `fuzzing`; not a stable API). Each takes arbitrary bytes
//! as the content of one file kind and runs the same code a database runs on open. Whatever
//! the bytes, each must return `Ok` or a typed [`Error`] — never panic, hang, or allocate
//! beyond what the bytes justify. Used by the cargo-fuzz targets in `fuzz/` and by the
//! stable mutation test `tests/tests/fuzz_smoke.rs`; [`seed_corpus`] makes valid files of
//! every kind to start from.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::collection::{Database, DbOptions};
use crate::error::{Error, Result};
use crate::filter::expr::Filter;
use crate::storage::segment::reader::SegmentReader;
use crate::storage::{deletes, manifest::Manifest, wal};
use crate::types::{CollectionConfig, IndexConfig, Metric};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "trovedb-fuzz-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        Ok(Scratch(p))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))?;
        Ok(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replay `bytes` as the only WAL file (named after the first LSN in its header, so the
/// rest of the file gets checked); returns the records applied.
pub fn wal_replay(bytes: &[u8]) -> Result<u64> {
    let s = Scratch::new()?;
    let first = bytes
        .get(16..24)
        .map_or(1, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        .clamp(1, u64::MAX / 2);
    s.write(&wal::file_name(first), bytes)?;
    let mut n = 0;
    wal::replay::replay(&s.0, first - 1, |_, _| {
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

/// Open `bytes` as a segment file of a `dim`-wide collection, verify every checksum, then
/// read every id, vector and payload and walk the index structures.
pub fn segment_open(bytes: &[u8], dim: usize, metric: Metric) -> Result<usize> {
    let s = Scratch::new()?;
    let p = s.write("seg-0000000001.seg", bytes)?;
    let r = SegmentReader::open(&p, dim, metric)?;
    r.verify()?;
    let mut touched = 0;
    for row in 0..r.rows() {
        touched += r.vector(row).len();
        let _ = r.ids()[row];
        r.payload(row)?;
    }
    if let Some(ix) = r.persisted_payload_index() {
        ix?;
    }
    Ok(touched + r.index().bytes())
}

/// [`segment_open`] with the shape read from the header itself (dim at offset 16, metric
/// code at 10), so that a fuzzer reaches past the shape check.
pub fn segment_open_any(bytes: &[u8]) -> Result<usize> {
    let dim = bytes
        .get(16..20)
        .map_or(1, |b| {
            u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as usize
        })
        .clamp(1, 4096);
    let metric = bytes
        .get(10)
        .and_then(|c| Metric::from_code(*c))
        .unwrap_or(Metric::L2);
    segment_open(bytes, dim, metric)
}

/// Load `bytes` as a collection's MANIFEST.
pub fn manifest_open(bytes: &[u8]) -> Result<usize> {
    let s = Scratch::new()?;
    s.write(crate::storage::manifest::FILE_NAME, bytes)?;
    Ok(Manifest::load(&s.0)?.segments.len())
}

/// Read `bytes` as the deletion file of segment 1 with `rows` rows.
pub fn deletes_open(bytes: &[u8], rows: usize) -> Result<usize> {
    let s = Scratch::new()?;
    let p = s.write("seg-0000000001-1.del", bytes)?;
    Ok(deletes::read_file(&p, 1, rows)?.count_ones())
}

/// Parse `bytes` as a JSON filter (after UTF-8 validation).
pub fn filter_parse(bytes: &[u8]) -> Result<Filter> {
    let s = std::str::from_utf8(bytes).map_err(|_| Error::invalid("filter", "not UTF-8"))?;
    Filter::from_json_str(s)
}

/// A seed file for one target.
#[derive(Debug, Clone)]
pub struct Seed {
    /// `wal`, `segment`, `manifest` or `deletes`.
    pub target: &'static str,
    /// Collection dimension (segments), row count (deletion files), else 0.
    pub dim_or_rows: usize,
    /// The collection metric (segments).
    pub metric: Metric,
    /// File content.
    pub bytes: Vec<u8>,
}

/// Valid files of every kind, written by this build: for each of flat/hnsw/ivf_pq/lsh and a
/// flat collection with a text field, a collection of 1,200 points with payloads, sealed,
/// with deletions and a WAL tail.
pub fn seed_corpus() -> Result<Vec<Seed>> {
    let s = Scratch::new()?;
    let db = Database::open(&s.0, DbOptions::default().seal_threshold_rows(usize::MAX))?;
    let mut out = Vec::new();
    let dim = 8;
    for (name, index, metric) in [
        ("flat", IndexConfig::Flat, Metric::L2),
        ("hnsw", IndexConfig::hnsw(), Metric::Cosine),
        ("ivf", IndexConfig::ivf_pq(), Metric::L2),
        ("lsh", IndexConfig::lsh(), Metric::Cosine),
        ("text", IndexConfig::Flat, Metric::L2),
    ] {
        let cfg = CollectionConfig {
            index,
            text: (name == "text").then(|| crate::TextConfig::new(["body"])),
            ..CollectionConfig::new(dim, metric)
        };
        let c = db.create_collection(name, &cfg)?;
        let n = 1200u64;
        let ids: Vec<u64> = (0..n).collect();
        let vectors: Vec<f32> = (0..n as usize * dim)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 + 0.01)
            .collect();
        let payloads: Vec<crate::Payload> = ids
            .iter()
            .map(|i| {
                let mut p = crate::Payload::new();
                p.insert("i".into(), crate::Value::Int(*i as i64));
                p.insert("s".into(), crate::Value::Str(format!("v{}", i % 5)));
                p.insert(
                    "t".into(),
                    crate::Value::Tags(vec!["a".into(), format!("b{}", i % 3)]),
                );
                let words = ["river", "stone", "light", "code", "night", "東京都"];
                let body: Vec<&str> = (0..=(i % 7))
                    .map(|j| words[((i * 31 + j * 7) % 6) as usize])
                    .collect();
                p.insert("body".into(), crate::Value::Str(body.join(" ")));
                p
            })
            .collect();
        c.upsert(&ids, &vectors, &payloads)?;
        c.flush()?;
        c.delete(&[3, 5, 8, 13])?;
        c.flush()?;
        c.upsert(&ids[..20], &vectors[..20 * dim], &payloads[..20])?;
        c.delete(&[21, 34])?;
        let dir = s.0.join("collections").join(name);
        for e in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let p = e.map_err(|e| Error::io(&dir, e))?.path();
            if p.is_dir() {
                continue;
            }
            let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            let (target, dim_or_rows) = match p.extension().and_then(|x| x.to_str()) {
                Some("seg") => ("segment", dim),
                Some("del") => ("deletes", n as usize),
                _ if p.file_name().is_some_and(|f| f == "MANIFEST") => ("manifest", 0),
                _ => continue,
            };
            out.push(Seed {
                target,
                dim_or_rows,
                metric,
                bytes,
            });
        }
        let wal_dir = dir.join("wal");
        for (_, p) in wal::replay::list_files(&wal_dir)? {
            out.push(Seed {
                target: "wal",
                dim_or_rows: 0,
                metric,
                bytes: std::fs::read(&p).map_err(|e| Error::io(&p, e))?,
            });
        }
    }
    db.close()?;
    Ok(out)
}

/// Recompute every checksum of a file of kind `target` (`wal`, `segment` v3, `manifest`,
/// `deletes`) after it was mutated, so that the mutation reaches the parsers behind the
/// checksums instead of being refused at the first one. Sizes and offsets are taken from
/// the (mutated) bytes as they are; whatever does not fit is left alone.
pub fn fix_checksums(target: &str, b: &mut [u8]) {
    match target {
        "wal" => fix_wal(b),
        "segment" => fix_segment(b),
        "manifest" | "deletes" => fix_frame(b),
        _ => {}
    }
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(x) = b.get_mut(at..at + 4) {
        x.copy_from_slice(&v.to_le_bytes());
    }
}

fn fix_wal(b: &mut [u8]) {
    use wal::{RECORD_HEADER_BYTES, WAL_HEADER_BYTES};
    if b.len() < WAL_HEADER_BYTES {
        return;
    }
    let crc = crc32fast::hash(&b[..24]);
    put_u32(b, 24, crc);
    let seed = le_u32(b, 12).unwrap_or(0);
    let mut pos = WAL_HEADER_BYTES;
    while pos + RECORD_HEADER_BYTES <= b.len() {
        let (Some(len), Some(lsn)) = (le_u32(b, pos), le_u64(b, pos + 8)) else {
            return;
        };
        let kind = b[pos + 16];
        let start = pos + RECORD_HEADER_BYTES;
        let Some(end) = start.checked_add(len as usize).filter(|e| *e <= b.len()) else {
            return;
        };
        let crc = wal::record_crc(seed, lsn, kind, &b[start..end]);
        put_u32(b, pos + 4, crc);
        pos = end;
    }
}

fn fix_segment(b: &mut [u8]) {
    use crate::storage::segment::layout::{
        header_page_crc, DirSection, SegmentHeaderV3, FOOTER_BYTES, HEADER_PAGE_BYTES,
        HEADER_V3_CRC_OFFSET,
    };
    if b.len() < HEADER_PAGE_BYTES + FOOTER_BYTES || u16::from_le_bytes([b[8], b[9]]) != 3 {
        return;
    }
    let h: SegmentHeaderV3 =
        bytemuck::pod_read_unaligned(&b[..std::mem::size_of::<SegmentHeaderV3>()]);
    let n = b.len();
    let within = |off: u64, len: u64| {
        let s = usize::try_from(off).ok()?;
        let e = s.checked_add(usize::try_from(len).ok()?)?;
        (e <= n).then_some(s..e)
    };
    if let Some(dir) = within(h.dir_offset, h.dir_len) {
        let entry = std::mem::size_of::<DirSection>();
        let first = (h.index_count as usize).saturating_mul(16);
        for i in 0..h.section_count as usize {
            let at = dir.start + first.saturating_add(i.saturating_mul(entry));
            if at.saturating_add(entry) > dir.end {
                break;
            }
            let e: DirSection = bytemuck::pod_read_unaligned(&b[at..at + entry]);
            if let Some(r) = within(e.offset, e.len_bytes) {
                let crc = crc32fast::hash(&b[r]);
                put_u32(b, at + std::mem::offset_of!(DirSection, crc), crc);
            }
        }
        let crc = crc32fast::hash(&b[dir]);
        put_u32(b, std::mem::offset_of!(SegmentHeaderV3, dir_crc), crc);
    }
    let crc = header_page_crc(b);
    put_u32(b, HEADER_V3_CRC_OFFSET, crc);
    let foot = b.len() - FOOTER_BYTES;
    put_u32(b, foot + 8, crc);
}

fn fix_frame(b: &mut [u8]) {
    use crate::storage::fsutil::{FRAME_FOOTER as FOOTER, FRAME_HEADER as HEADER};
    if b.len() < HEADER + FOOTER {
        return;
    }
    let foot = b.len() - FOOTER;
    let body_len = (foot - HEADER) as u64;
    let crc = crc32fast::hash(&b[..foot]);
    b[foot..foot + 8].copy_from_slice(&body_len.to_le_bytes());
    put_u32(b, foot + 8, crc);
}

/// For cargo-fuzz: the first byte picks a file kind, the rest is a file of that kind whose
/// checksums are recomputed before it is opened ([`fix_checksums`]).
pub fn checksummed(data: &[u8]) -> Result<()> {
    let Some((&pick, rest)) = data.split_first() else {
        return Ok(());
    };
    let mut b = rest.to_vec();
    match pick % 4 {
        0 => {
            fix_checksums("wal", &mut b);
            wal_replay(&b).map(drop)
        }
        1 => {
            fix_checksums("segment", &mut b);
            segment_open_any(&b).map(drop)
        }
        2 => {
            fix_checksums("manifest", &mut b);
            manifest_open(&b).map(drop)
        }
        _ => {
            fix_checksums("deletes", &mut b);
            deletes_open(&b, 1200).map(drop)
        }
    }
}

/// Run the target a seed belongs to on `bytes`.
pub fn run(seed: &Seed, bytes: &[u8]) -> Result<()> {
    match seed.target {
        "wal" => wal_replay(bytes).map(drop),
        "segment" => segment_open(bytes, seed.dim_or_rows, seed.metric).map(drop),
        "manifest" => manifest_open(bytes).map(drop),
        "deletes" => deletes_open(bytes, seed.dim_or_rows).map(drop),
        _ => filter_parse(bytes).map(drop),
    }
}

/// Interpret `bytes` as a sequence of operations — upsert, delete, exact search, filtered
/// count, get, flush, compact, reopen — on a flat collection that seals every 8 rows, and
/// check every answer against an in-memory model (brute-force search). Panics on any
/// disagreement or unexpected error: that is what a fuzzer should report.
pub fn ops(bytes: &[u8]) {
    use std::collections::BTreeMap;
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! { panic!("ops: {what}: {e}") };
    let Ok(s) = Scratch::new() else { return };
    let opts = || {
        DbOptions::default()
            .seal_threshold_rows(8)
            .durability(crate::Durability::Off)
    };
    let cfg = CollectionConfig::new(4, Metric::L2);
    let mut db = Database::open(&s.0, opts()).unwrap_or_else(|e| fail("open", &e));
    let mut c = db
        .create_collection("c", &cfg)
        .unwrap_or_else(|e| fail("create", &e));
    let mut model: BTreeMap<u64, ([f32; 4], i64)> = BTreeMap::new();
    let mut it = bytes.iter().copied();
    let mut next = move || it.next();
    let mut steps = 0;
    while let Some(op) = next() {
        steps += 1;
        if steps > 64 {
            break;
        }
        match op % 8 {
            0 => {
                let n = 1 + usize::from(next().unwrap_or(0) % 4);
                let mut ids = Vec::new();
                let mut vectors = Vec::new();
                let mut payloads = Vec::new();
                for _ in 0..n {
                    let id = u64::from(next().unwrap_or(0) % 32);
                    let v: [f32; 4] =
                        std::array::from_fn(|_| f32::from(next().unwrap_or(0) % 16) - 8.0);
                    let k = i64::from(next().unwrap_or(0) % 4);
                    let mut p = crate::Payload::new();
                    p.insert("k".into(), crate::Value::Int(k));
                    ids.push(id);
                    vectors.extend_from_slice(&v);
                    payloads.push(p);
                    model.insert(id, (v, k)); // last duplicate wins, as documented
                }
                c.upsert(&ids, &vectors, &payloads)
                    .unwrap_or_else(|e| fail("upsert", &e));
            }
            1 => {
                let id = u64::from(next().unwrap_or(0) % 32);
                let n = c.delete(&[id]).unwrap_or_else(|e| fail("delete", &e));
                assert_eq!(
                    n,
                    usize::from(model.remove(&id).is_some()),
                    "ops: delete count"
                );
            }
            2 => {
                let q: [f32; 4] =
                    std::array::from_fn(|_| f32::from(next().unwrap_or(0) % 16) - 8.0);
                let k = 1 + usize::from(next().unwrap_or(0) % 5);
                let hits = c
                    .search(&q, k, &crate::SearchParams::default())
                    .unwrap_or_else(|e| fail("search", &e));
                let mut want: Vec<(f32, u64)> = model
                    .iter()
                    .map(|(id, (v, _))| {
                        (v.iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum(), *id)
                    })
                    .collect();
                want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                want.truncate(k);
                let got: Vec<(f32, u64)> = hits.iter().map(|h| (h.distance, h.id)).collect();
                assert_eq!(got, want, "ops: exact search disagrees with the model");
            }
            3 => {
                let k = i64::from(next().unwrap_or(0) % 4);
                let f = Filter::Eq("k".into(), crate::Value::Int(k));
                let n = c.count(&f).unwrap_or_else(|e| fail("count", &e));
                assert_eq!(
                    n,
                    model.values().filter(|(_, x)| *x == k).count(),
                    "ops: count"
                );
            }
            4 => {
                let id = u64::from(next().unwrap_or(0) % 32);
                let got = c.get(id).unwrap_or_else(|e| fail("get", &e));
                assert_eq!(
                    got.map(|p| p.vector),
                    model.get(&id).map(|(v, _)| v.to_vec()),
                    "ops: get {id}"
                );
            }
            5 => c.flush().unwrap_or_else(|e| fail("flush", &e)),
            6 => {
                c.compact().unwrap_or_else(|e| fail("compact", &e));
            }
            _ => {
                drop(c);
                db.close().unwrap_or_else(|e| fail("close", &e));
                db = Database::open(&s.0, opts()).unwrap_or_else(|e| fail("reopen", &e));
                c = db
                    .collection("c")
                    .unwrap_or_else(|e| fail("collection", &e));
            }
        }
        assert_eq!(c.len(), model.len(), "ops: len");
    }
    let _ = db.close();
}
