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
    s.write(&format!("wal-{first:020}.log"), bytes)?;
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

/// Valid files of every kind, written by this build: for each of flat/hnsw/ivf_pq/lsh, a
/// collection of 1,200 points with payloads, sealed, with deletions and a WAL tail.
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
    ] {
        let cfg = CollectionConfig {
            index,
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
