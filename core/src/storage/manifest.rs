//! The manifest: the list of live segments, their deletion files, the WAL checkpoint.
//! Stored as `MANIFEST`, a framed JSON body (magic, version, CRC), replaced atomically
//! by `fsutil::write_atomic` (temp file, fsync, rename, fsync directory).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::fsutil::{frame, read, unframe, write_atomic};
use crate::text::{AnalyzerConfig, StopWords};
use crate::types::{CollectionConfig, IdType, IndexConfig, Metric, Quantization, TextConfig};

const MAGIC: &[u8; 8] = b"TROVMAN\0";
/// Format version this build writes.
pub(crate) const MANIFEST_VERSION: u16 = 2;
/// The manifest frame version written for collections without text fields, which builds
/// from before text indexes can still open.
const MANIFEST_VERSION_PLAIN: u16 = 1;
pub(crate) const FILE_NAME: &str = "MANIFEST";

/// A sealed segment as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SegmentMeta {
    pub id: u64,
    pub file: String,
    pub rows: u64,
    /// The current deletion file and how many rows it deletes.
    pub deletes: Option<DeleteMeta>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeleteMeta {
    pub file: String,
    pub count: u64,
}

/// The collection's configuration as the manifest stores it. Versioned with the manifest,
/// apart from the public [`CollectionConfig`], so that renaming a public field or variant
/// never changes what is on disk; converted at load and store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ConfigRecord {
    pub dim: usize,
    pub metric: MetricRecord,
    pub index: IndexRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexed_fields: Option<Vec<String>>,
    /// Text fields (manifest format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextRecord>,
    /// Points are keyed by strings (manifest format 2).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub str_ids: bool,
    /// Quantised vectors (manifest format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantRecord>,
}

/// A quantisation config as stored: `{"kind": "sq8" | "binary", "rescore": n}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum QuantRecord {
    Sq8 { rescore: usize },
    Binary { rescore: usize },
}

/// A text config as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TextRecord {
    pub fields: Vec<String>,
    pub language: String,
    pub stem: bool,
    /// `"language"`, `"none"`, or `{"list": [...]}`.
    pub stopwords: StopRecord,
    pub k1: f32,
    pub b: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StopRecord {
    Language,
    None,
    List(Vec<String>),
}

impl From<&TextConfig> for TextRecord {
    fn from(t: &TextConfig) -> Self {
        TextRecord {
            fields: t.fields.clone(),
            language: t.analyzer.language.clone(),
            stem: t.analyzer.stem,
            stopwords: match &t.analyzer.stopwords {
                StopWords::Language => StopRecord::Language,
                StopWords::None => StopRecord::None,
                StopWords::List(w) => StopRecord::List(w.clone()),
            },
            k1: t.k1,
            b: t.b,
        }
    }
}

impl From<&TextRecord> for TextConfig {
    fn from(r: &TextRecord) -> Self {
        TextConfig {
            fields: r.fields.clone(),
            analyzer: AnalyzerConfig {
                language: r.language.clone(),
                stem: r.stem,
                stopwords: match &r.stopwords {
                    StopRecord::Language => StopWords::Language,
                    StopRecord::None => StopWords::None,
                    StopRecord::List(w) => StopWords::List(w.clone()),
                },
            },
            k1: r.k1,
            b: r.b,
        }
    }
}

/// A metric as stored: its lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MetricRecord {
    L2,
    Cosine,
    Dot,
}

/// An index configuration as stored: `{"kind": "<name>", <parameters>}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum IndexRecord {
    Flat,
    Hnsw {
        m: usize,
        ef_construction: usize,
        ef_search: usize,
        seed: u64,
    },
    IvfPq {
        nlist: usize,
        pq_m: usize,
        nprobe: usize,
        refine: usize,
        seed: u64,
    },
    Lsh {
        tables: usize,
        bits: usize,
        probes: usize,
        seed: u64,
    },
}

impl From<&CollectionConfig> for ConfigRecord {
    fn from(c: &CollectionConfig) -> Self {
        ConfigRecord {
            dim: c.dim,
            metric: match c.metric {
                Metric::L2 => MetricRecord::L2,
                Metric::Cosine => MetricRecord::Cosine,
                Metric::Dot => MetricRecord::Dot,
            },
            index: match c.index {
                IndexConfig::Flat => IndexRecord::Flat,
                IndexConfig::Hnsw {
                    m,
                    ef_construction,
                    ef_search,
                    seed,
                } => IndexRecord::Hnsw {
                    m,
                    ef_construction,
                    ef_search,
                    seed,
                },
                IndexConfig::IvfPq {
                    nlist,
                    pq_m,
                    nprobe,
                    refine,
                    seed,
                } => IndexRecord::IvfPq {
                    nlist,
                    pq_m,
                    nprobe,
                    refine,
                    seed,
                },
                IndexConfig::Lsh {
                    tables,
                    bits,
                    probes,
                    seed,
                } => IndexRecord::Lsh {
                    tables,
                    bits,
                    probes,
                    seed,
                },
            },
            indexed_fields: c.indexed_fields.clone(),
            text: c.text.as_ref().map(TextRecord::from),
            str_ids: c.id_type == IdType::Str,
            quantization: match c.quantization {
                Quantization::Sq8 { rescore } => Some(QuantRecord::Sq8 { rescore }),
                Quantization::Binary { rescore } => Some(QuantRecord::Binary { rescore }),
                _ => None,
            },
        }
    }
}

impl From<&ConfigRecord> for CollectionConfig {
    fn from(r: &ConfigRecord) -> Self {
        CollectionConfig {
            dim: r.dim,
            metric: match r.metric {
                MetricRecord::L2 => Metric::L2,
                MetricRecord::Cosine => Metric::Cosine,
                MetricRecord::Dot => Metric::Dot,
            },
            index: match r.index {
                IndexRecord::Flat => IndexConfig::Flat,
                IndexRecord::Hnsw {
                    m,
                    ef_construction,
                    ef_search,
                    seed,
                } => IndexConfig::Hnsw {
                    m,
                    ef_construction,
                    ef_search,
                    seed,
                },
                IndexRecord::IvfPq {
                    nlist,
                    pq_m,
                    nprobe,
                    refine,
                    seed,
                } => IndexConfig::IvfPq {
                    nlist,
                    pq_m,
                    nprobe,
                    refine,
                    seed,
                },
                IndexRecord::Lsh {
                    tables,
                    bits,
                    probes,
                    seed,
                } => IndexConfig::Lsh {
                    tables,
                    bits,
                    probes,
                    seed,
                },
            },
            indexed_fields: r.indexed_fields.clone(),
            text: r.text.as_ref().map(TextConfig::from),
            id_type: if r.str_ids { IdType::Str } else { IdType::Int },
            quantization: match r.quantization {
                Some(QuantRecord::Sq8 { rescore }) => Quantization::Sq8 { rescore },
                Some(QuantRecord::Binary { rescore }) => Quantization::Binary { rescore },
                None => Quantization::None,
            },
        }
    }
}

/// Whether a collection needs manifest frame version 2: text fields, string ids or
/// quantised vectors, which builds from before version 2 would silently ignore (so they
/// must refuse the file).
fn needs_v2(c: &CollectionConfig) -> bool {
    c.text.is_some() || c.id_type == IdType::Str || c.quantization != Quantization::None
}

/// The manifest as stored (JSON body of the framed file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ManifestRecord {
    format_version: u16,
    config: ConfigRecord,
    checkpoint_lsn: u64,
    next_segment_id: u64,
    segments: Vec<SegmentMeta>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Manifest {
    pub format_version: u16,
    pub config: CollectionConfig,
    /// Every WAL record with an LSN at or below this is reflected in the segments.
    pub checkpoint_lsn: u64,
    pub next_segment_id: u64,
    pub segments: Vec<SegmentMeta>,
}

impl Manifest {
    /// A fresh manifest for `config` (with [`crate::Quantization::Auto`] resolved: a manifest
    /// stores what the collection is).
    pub(crate) fn new(mut config: CollectionConfig) -> Manifest {
        config.quantization = config.quantization.resolve(&config.index, config.dim);
        Manifest {
            format_version: if needs_v2(&config) {
                MANIFEST_VERSION
            } else {
                MANIFEST_VERSION_PLAIN
            },
            config,
            checkpoint_lsn: 0,
            next_segment_id: 1,
            segments: Vec::new(),
        }
    }

    pub(crate) fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(FILE_NAME);
        let bytes = read(&path)?;
        let (_, body) = unframe(
            &path,
            &bytes,
            MAGIC,
            MANIFEST_VERSION_PLAIN,
            MANIFEST_VERSION,
        )?;
        let r: ManifestRecord = serde_json::from_slice(body).map_err(|e| {
            Error::corruption(&path, 16 + e.column() as u64, format!("manifest body: {e}"))
        })?;
        let m = Manifest {
            format_version: r.format_version,
            config: CollectionConfig::from(&r.config),
            checkpoint_lsn: r.checkpoint_lsn,
            next_segment_id: r.next_segment_id,
            segments: r.segments,
        };
        m.config
            .validate()
            .map_err(|e| Error::corruption(&path, 16, format!("manifest config: {e}")))?;
        for s in &m.segments {
            let ok_name = |n: &str| !n.is_empty() && !n.contains(['/', '\\']) && n != "..";
            if !ok_name(&s.file) || s.deletes.as_ref().is_some_and(|d| !ok_name(&d.file)) {
                return Err(Error::corruption(
                    &path,
                    16,
                    "manifest names a file outside the collection",
                ));
            }
        }
        Ok(m)
    }

    pub(crate) fn store(&self, dir: &Path) -> Result<()> {
        let record = ManifestRecord {
            format_version: self.format_version,
            config: ConfigRecord::from(&self.config),
            checkpoint_lsn: self.checkpoint_lsn,
            next_segment_id: self.next_segment_id,
            segments: self.segments.clone(),
        };
        let body = serde_json::to_vec_pretty(&record)
            .map_err(|e| Error::invalid("manifest", e.to_string()))?;
        // A collection with text fields needs a build that reads (and maintains) its text
        // indexes: older builds refuse the newer frame version instead of ignoring them.
        let version = if needs_v2(&self.config) {
            MANIFEST_VERSION
        } else {
            MANIFEST_VERSION_PLAIN
        };
        write_atomic(&dir.join(FILE_NAME), &frame(MAGIC, version, &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of `tests/fixtures/v2/collections/lsh_cos/MANIFEST`, as format v1 of the
    /// manifest spells it: the stored records must keep producing exactly this.
    const FIXTURE_BODY: &str = r#"{
  "format_version": 1,
  "config": {
    "dim": 8,
    "metric": "cosine",
    "index": {
      "kind": "lsh",
      "tables": 32,
      "bits": 0,
      "probes": 32,
      "seed": 128034845123940
    }
  },
  "checkpoint_lsn": 188,
  "next_segment_id": 2,
  "segments": [
    {
      "id": 1,
      "file": "seg-0000000001.seg",
      "rows": 1300,
      "deletes": {
        "file": "seg-0000000001-00000000000000000188.del",
        "count": 93
      }
    }
  ]
}"#;

    #[test]
    fn records_read_and_write_the_fixture_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(
            &path,
            frame(MAGIC, MANIFEST_VERSION_PLAIN, FIXTURE_BODY.as_bytes()),
        )
        .unwrap();
        let m = Manifest::load(dir.path()).unwrap();
        assert_eq!(m.config.metric, Metric::Cosine);
        assert_eq!(
            m.config.index,
            IndexConfig::Lsh {
                tables: 32,
                bits: 0,
                probes: 32,
                seed: 128_034_845_123_940
            }
        );
        assert_eq!(m.checkpoint_lsn, 188);
        assert_eq!(m.segments[0].deletes.as_ref().map(|d| d.count), Some(93));
        std::fs::remove_file(&path).unwrap();
        m.store(dir.path()).unwrap();
        let again = std::fs::read(&path).unwrap();
        assert_eq!(&again[16..again.len() - 24], FIXTURE_BODY.as_bytes());
    }

    #[test]
    fn every_index_kind_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        for index in [
            IndexConfig::Flat,
            IndexConfig::hnsw(),
            IndexConfig::IvfPq {
                nlist: 7,
                pq_m: 2,
                nprobe: 3,
                refine: 4,
                seed: 5,
            },
            IndexConfig::Lsh {
                tables: 9,
                bits: 10,
                probes: 11,
                seed: 12,
            },
        ] {
            for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
                let config = CollectionConfig {
                    index: index.clone(),
                    indexed_fields: Some(vec!["a".into()]),
                    ..CollectionConfig::new(8, metric)
                };
                Manifest::new(config.clone()).store(dir.path()).unwrap();
                // Auto (the default) is stored as what it means: none at 8 dimensions.
                let stored = Manifest::load(dir.path()).unwrap().config;
                assert_eq!(stored.quantization, Quantization::None);
                assert_eq!(stored, config.resolved());
                for quantization in [
                    Quantization::Sq8 { rescore: 4 },
                    Quantization::Binary { rescore: 12 },
                ] {
                    let config = CollectionConfig {
                        quantization,
                        ..config.clone()
                    };
                    Manifest::new(config.clone()).store(dir.path()).unwrap();
                    let loaded = Manifest::load(dir.path());
                    if matches!(index, IndexConfig::Flat | IndexConfig::Hnsw { .. }) {
                        assert_eq!(loaded.unwrap().config, config);
                    } else {
                        // Quantisation of another kind is refused when read, as at create.
                        assert!(matches!(loaded, Err(crate::Error::Corruption { .. })));
                    }
                }
            }
        }
    }
}
