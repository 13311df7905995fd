//! Small shared types: the metric, index configuration, id newtypes.

use crate::error::{Error, Result};

pub use crate::distance::Metric;
use crate::index::hnsw::kind::HnswSpec;
use crate::index::hnsw::HnswParams;
use crate::index::ivfpq::kind::IvfPqSpec;
use crate::index::ivfpq::IvfPqParams;
use crate::index::lsh::kind::LshSpec;
use crate::index::lsh::LshParams;
use crate::index::registry::IndexSpec;
use crate::text::AnalyzerConfig;

/// Parsing of metric names with the crate's error type (the enum itself lives in
/// `distance`, which depends on nothing).
impl Metric {
    /// Parse `l2`, `cosine` or `dot` (also `euclidean`, `ip`).
    pub fn parse(s: &str) -> Result<Self> {
        Metric::from_name(s).ok_or_else(|| {
            Error::invalid(
                "metric",
                format!(
                    "unknown metric `{}`; expected l2, cosine or dot",
                    s.to_ascii_lowercase()
                ),
            )
        })
    }
}

/// Which index a collection builds over its sealed segments.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum IndexConfig {
    /// Exact search by a full scan (SIMD). Always correct; the oracle for every other index.
    Flat,
    /// Hierarchical navigable small-world graph, built when a segment is sealed and
    /// incrementally in the appendable segment.
    Hnsw {
        /// Links per node on upper layers (layer 0 keeps `2 * m`). Default 16.
        m: usize,
        /// Beam width while building. Default 200.
        ef_construction: usize,
        /// Default beam width while searching (override per query with `ef`). Default 64.
        ef_search: usize,
        /// Seed of the level draw (a build on one thread is deterministic for a seed).
        seed: u64,
    },
    /// Inverted file with product-quantised residuals, exact re-ranking from the stored
    /// vectors. Trained per segment when it is sealed; segments of at most 1,024 rows are
    /// scanned exactly.
    IvfPq {
        /// Coarse centroids per segment; 0 = `2 * sqrt(rows)`. Lowered so every list
        /// averages at least 32 rows.
        nlist: usize,
        /// Sub-quantisers (one byte of code each); must divide `dim`. 0 = the largest
        /// divisor of `dim` not above `dim / 4` (codes at most 1/16 of float32).
        pq_m: usize,
        /// Default number of lists probed per query (override per query).
        nprobe: usize,
        /// Default re-ranking factor: the best `refine * k` codes are re-ranked exactly.
        refine: usize,
        /// Seed of the k-means sampling and seeding.
        seed: u64,
    },
    /// Multi-probe locality-sensitive hashing (SimHash for cosine/dot, E2LSH for l2) with
    /// exact re-ranking of the candidates. Segments of at most 1,024 rows are scanned.
    Lsh {
        /// Hash tables.
        tables: usize,
        /// Hash functions per table; 0 = chosen from the segment size.
        bits: usize,
        /// Default buckets read per table per query, the query's own included.
        probes: usize,
        /// Seed of the hash functions.
        seed: u64,
    },
}

/// Quantised copies of the vectors that sealed segments of a `flat` or `hnsw` collection
/// are searched on, re-scored exactly from the float32 vectors (README "Memory").
///
/// The HNSW graph is walked, and a flat segment scanned, on the codes; the best
/// `rescore * k` candidates are then ranked by their exact distances, so the distances a
/// search returns are always exact. The codes of a segment are trained on its own rows
/// when it is sealed or merged. The in-memory (unsealed) rows, and segments of at most 1,024
/// rows, are searched in float32.
///
/// ```
/// # use trovedb::{CollectionConfig, Database, DbOptions, IndexConfig, Metric, Quantization, SearchParams};
/// # let dir = tempfile::tempdir()?;
/// let db = Database::open(dir.path(), DbOptions::default())?;
/// let config = CollectionConfig {
///     index: IndexConfig::hnsw(),
///     quantization: Quantization::parse("sq8")?, // rescore 3 by default
///     ..CollectionConfig::new(2, Metric::L2)
/// };
/// let c = db.create_collection("c", &config)?;
/// let ids: Vec<u64> = (0..2000).collect();
/// let vectors: Vec<f32> = ids.iter().flat_map(|i| [*i as f32, 1.0]).collect();
/// c.upsert(&ids, &vectors, &[])?;
/// c.flush()?; // one sealed segment, searched on its codes
/// let hits = c.search(&[700.2, 1.0], 2, &SearchParams::default().with_rescore(4))?;
/// assert_eq!(hits[0].id, 700);
/// assert!((hits[0].distance - 0.04).abs() < 1e-3); // exact, re-scored from the float32 rows
/// assert_eq!(c.stats()?.segments[0].quantization, "sq8");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Quantization {
    /// The default: resolved when the collection is created, to [`Quantization::Sq8`] (with
    /// its default `rescore`) for an `hnsw` collection of at least [`AUTO_SQ8_MIN_DIM`]
    /// components, and to [`Quantization::None`] otherwise. A collection's stored config
    /// ([`crate::Collection::config`]) holds what it resolved to, never `Auto`.
    #[default]
    Auto,
    /// Float32 vectors only.
    None,
    /// One byte per component (per-component ranges trained per segment): a quarter of the
    /// float32 bytes.
    Sq8 {
        /// Default re-scoring factor (override per query): the best `rescore * k`
        /// candidates by their codes are re-ranked exactly. Default 3.
        rescore: usize,
    },
    /// One bit per component (the sign about the segment's mean, with a per-row scale):
    /// 1/32 of the float32 bytes; needs a larger `rescore`.
    Binary {
        /// Default re-scoring factor. Default 10.
        rescore: usize,
    },
}

/// Fewest components for which [`Quantization::Auto`] gives an `hnsw` collection sq8 codes.
/// Measured through the Python API (ingest in batches of 1,000, then search one query at a
/// time, recall@10 0.95): on text-minilm-dev (20k x 384) sq8 answered 1.5-2.1x hnswlib where
/// float32 answered 1.1-1.3x; on 200k x 128 l2 sq8 gave 1.74x against float32's 1.48x, within
/// this machine's noise, for slower ingest. Below this width the float rows are cheap enough.
pub const AUTO_SQ8_MIN_DIM: usize = 256;

/// Default `rescore` of [`Quantization::Sq8`].
pub const SQ8_DEFAULT_RESCORE: usize = 3;
/// Default `rescore` of [`Quantization::Binary`].
pub const BINARY_DEFAULT_RESCORE: usize = 10;
/// Largest `rescore`.
pub const MAX_RESCORE: usize = 1000;

impl Quantization {
    /// `"auto"`, `"none"`, `"sq8"` or `"binary"`.
    pub fn name(&self) -> &'static str {
        match self {
            Quantization::Auto => "auto",
            Quantization::None => "none",
            Quantization::Sq8 { .. } => "sq8",
            Quantization::Binary { .. } => "binary",
        }
    }

    /// Parse a name (`"auto"`, `"none"`, `"sq8"`, `"binary"`), with the kind's default
    /// `rescore`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "auto" => Ok(Quantization::Auto),
            "none" => Ok(Quantization::None),
            "sq8" => Ok(Quantization::Sq8 {
                rescore: SQ8_DEFAULT_RESCORE,
            }),
            "binary" => Ok(Quantization::Binary {
                rescore: BINARY_DEFAULT_RESCORE,
            }),
            other => Err(Error::invalid(
                "quantization",
                format!("expected \"auto\", \"none\", \"sq8\" or \"binary\", got {other:?}"),
            )),
        }
    }

    /// What [`Quantization::Auto`] means for a collection with this `index` and `dim`
    /// (other kinds are returned as they are).
    ///
    /// ```
    /// use trovedb::{IndexConfig, Quantization};
    /// let auto = Quantization::default();
    /// assert_eq!(auto, Quantization::Auto);
    /// assert_eq!(auto.resolve(&IndexConfig::hnsw(), 384).name(), "sq8");
    /// assert_eq!(auto.resolve(&IndexConfig::hnsw(), 128), Quantization::None);
    /// assert_eq!(auto.resolve(&IndexConfig::Flat, 384), Quantization::None);
    /// assert_eq!(Quantization::None.resolve(&IndexConfig::hnsw(), 384), Quantization::None);
    /// ```
    #[must_use]
    pub fn resolve(self, index: &IndexConfig, dim: usize) -> Self {
        match self {
            Quantization::Auto
                if matches!(index, IndexConfig::Hnsw { .. }) && dim >= AUTO_SQ8_MIN_DIM =>
            {
                Quantization::Sq8 {
                    rescore: SQ8_DEFAULT_RESCORE,
                }
            }
            Quantization::Auto => Quantization::None,
            other => other,
        }
    }

    /// The default re-scoring factor (`None` without quantisation, and for `Auto`).
    pub fn rescore(&self) -> Option<usize> {
        match *self {
            Quantization::Auto | Quantization::None => None,
            Quantization::Sq8 { rescore } | Quantization::Binary { rescore } => Some(rescore),
        }
    }

    /// The same kind with another default `rescore` (no-op for `None` and `Auto`: resolve
    /// `Auto` first).
    #[must_use]
    pub fn with_rescore(self, r: usize) -> Self {
        match self {
            Quantization::Auto | Quantization::None => self,
            Quantization::Sq8 { .. } => Quantization::Sq8 { rescore: r },
            Quantization::Binary { .. } => Quantization::Binary { rescore: r },
        }
    }

    pub(crate) fn kind(&self) -> Option<crate::index::quant::QuantKind> {
        match self {
            Quantization::Auto | Quantization::None => None,
            Quantization::Sq8 { .. } => Some(crate::index::quant::QuantKind::Sq8),
            Quantization::Binary { .. } => Some(crate::index::quant::QuantKind::Binary),
        }
    }
}

// The defaults belong to each index kind (`index` does not depend on `types`).
pub use crate::index::hnsw::{
    HNSW_DEFAULT_EF_CONSTRUCTION, HNSW_DEFAULT_EF_SEARCH, HNSW_DEFAULT_M, HNSW_DEFAULT_SEED,
};
pub use crate::index::ivfpq::{IVF_DEFAULT_NPROBE, IVF_DEFAULT_REFINE};
pub use crate::index::lsh::{LSH_DEFAULT_PROBES, LSH_DEFAULT_REFINE, LSH_DEFAULT_TABLES};

fn int_param(name: &'static str, v: f64, range: std::ops::RangeInclusive<u64>) -> Result<u64> {
    if v.fract() != 0.0 || v < *range.start() as f64 || v > *range.end() as f64 {
        return Err(Error::invalid(
            name,
            format!(
                "must be an integer in {}..={}, got {v}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(v as u64)
}

impl IndexConfig {
    /// The index kind's parameters as the engine's index registry takes them.
    pub(crate) fn spec(&self) -> IndexSpec {
        match *self {
            IndexConfig::Flat => IndexSpec::Flat,
            IndexConfig::Hnsw {
                m,
                ef_construction,
                ef_search,
                seed,
            } => IndexSpec::Hnsw(HnswSpec {
                params: HnswParams {
                    m,
                    ef_construction,
                    seed,
                },
                ef_search,
            }),
            IndexConfig::IvfPq {
                nlist,
                pq_m,
                nprobe,
                refine,
                seed,
            } => IndexSpec::IvfPq(IvfPqSpec {
                params: IvfPqParams { nlist, pq_m, seed },
                nprobe,
                refine,
            }),
            IndexConfig::Lsh {
                tables,
                bits,
                probes,
                seed,
            } => IndexSpec::Lsh(LshSpec {
                params: LshParams { tables, bits, seed },
                probes,
            }),
        }
    }

    /// The parameters by the names [`IndexConfig::from_name`] takes, so that
    /// `from_name(c.name(), &c.params())` gives `c` back (empty for flat).
    ///
    /// ```
    /// use trovedb::IndexConfig;
    /// let c = IndexConfig::from_name("hnsw", &[("m".into(), 32.0)])?;
    /// assert_eq!(c.params()[0], ("m".to_string(), 32.0));
    /// assert_eq!(IndexConfig::from_name(c.name(), &c.params())?, c);
    /// # Ok::<(), trovedb::Error>(())
    /// ```
    pub fn params(&self) -> Vec<(String, f64)> {
        let named = |p: &[(&str, u64)]| -> Vec<(String, f64)> {
            p.iter().map(|&(k, v)| (k.to_owned(), v as f64)).collect()
        };
        match *self {
            IndexConfig::Flat => Vec::new(),
            IndexConfig::Hnsw {
                m,
                ef_construction,
                ef_search,
                seed,
            } => named(&[
                ("m", m as u64),
                ("ef_construction", ef_construction as u64),
                ("ef_search", ef_search as u64),
                ("seed", seed),
            ]),
            IndexConfig::IvfPq {
                nlist,
                pq_m,
                nprobe,
                refine,
                seed,
            } => named(&[
                ("nlist", nlist as u64),
                ("pq_m", pq_m as u64),
                ("nprobe", nprobe as u64),
                ("refine", refine as u64),
                ("seed", seed),
            ]),
            IndexConfig::Lsh {
                tables,
                bits,
                probes,
                seed,
            } => named(&[
                ("tables", tables as u64),
                ("bits", bits as u64),
                ("probes", probes as u64),
                ("seed", seed),
            ]),
        }
    }

    /// The index kind's name.
    pub fn name(&self) -> &'static str {
        match self {
            IndexConfig::Flat => "flat",
            IndexConfig::Hnsw { .. } => "hnsw",
            IndexConfig::IvfPq { .. } => "ivf_pq",
            IndexConfig::Lsh { .. } => "lsh",
        }
    }

    /// IVF-PQ with the default parameters.
    pub fn ivf_pq() -> Self {
        IndexConfig::IvfPq {
            nlist: 0,
            pq_m: 0,
            nprobe: IVF_DEFAULT_NPROBE,
            refine: IVF_DEFAULT_REFINE,
            seed: HNSW_DEFAULT_SEED,
        }
    }

    /// LSH with the default parameters.
    pub fn lsh() -> Self {
        IndexConfig::Lsh {
            tables: LSH_DEFAULT_TABLES,
            bits: 0,
            probes: LSH_DEFAULT_PROBES,
            seed: HNSW_DEFAULT_SEED,
        }
    }

    /// HNSW with the default parameters.
    pub fn hnsw() -> Self {
        IndexConfig::Hnsw {
            m: HNSW_DEFAULT_M,
            ef_construction: HNSW_DEFAULT_EF_CONSTRUCTION,
            ef_search: HNSW_DEFAULT_EF_SEARCH,
            seed: HNSW_DEFAULT_SEED,
        }
    }

    /// Build an index config from a kind name and `key=value` parameters.
    pub fn from_name(kind: &str, params: &[(String, f64)]) -> Result<Self> {
        match kind.to_ascii_lowercase().as_str() {
            "flat" => {
                if let Some((k, _)) = params.first() {
                    return Err(Error::invalid(
                        "index_params",
                        format!("the flat index takes no parameters, got `{k}`"),
                    ));
                }
                Ok(IndexConfig::Flat)
            }
            "hnsw" => {
                let (mut m, mut ef_construction, mut ef_search, mut seed) = (
                    HNSW_DEFAULT_M,
                    HNSW_DEFAULT_EF_CONSTRUCTION,
                    HNSW_DEFAULT_EF_SEARCH,
                    HNSW_DEFAULT_SEED,
                );
                for (k, v) in params {
                    match k.as_str() {
                        "m" => m = int_param("m", *v, 2..=256)? as usize,
                        "ef_construction" => {
                            ef_construction = int_param("ef_construction", *v, 1..=4096)? as usize;
                        }
                        "ef_search" | "ef" => ef_search = int_param("ef_search", *v, 1..=65_536)? as usize,
                        "seed" => seed = int_param("seed", *v, 0..=(1 << 53))?,
                        other => {
                            return Err(Error::invalid(
                                "index_params",
                                format!("unknown hnsw parameter `{other}`; expected m, ef_construction, ef_search, seed"),
                            ))
                        }
                    }
                }
                Ok(IndexConfig::Hnsw {
                    m,
                    ef_construction,
                    ef_search,
                    seed,
                })
            }
            "ivf_pq" | "ivfpq" => {
                let IndexConfig::IvfPq {
                    mut nlist,
                    mut pq_m,
                    mut nprobe,
                    mut refine,
                    mut seed,
                } = IndexConfig::ivf_pq()
                else {
                    unreachable!("ivf_pq() is IvfPq")
                };
                for (k, v) in params {
                    match k.as_str() {
                        "nlist" => nlist = int_param("nlist", *v, 0..=65_536)? as usize,
                        "pq_m" => pq_m = int_param("pq_m", *v, 0..=(MAX_DIM as u64))? as usize,
                        "nprobe" => nprobe = int_param("nprobe", *v, 1..=65_536)? as usize,
                        "refine" => refine = int_param("refine", *v, 1..=1024)? as usize,
                        "seed" => seed = int_param("seed", *v, 0..=(1 << 53))?,
                        other => {
                            return Err(Error::invalid(
                                "index_params",
                                format!("unknown ivf_pq parameter `{other}`; expected nlist, pq_m, nprobe, refine, seed"),
                            ))
                        }
                    }
                }
                Ok(IndexConfig::IvfPq {
                    nlist,
                    pq_m,
                    nprobe,
                    refine,
                    seed,
                })
            }
            "lsh" => {
                let IndexConfig::Lsh {
                    mut tables,
                    mut bits,
                    mut probes,
                    mut seed,
                } = IndexConfig::lsh()
                else {
                    unreachable!("lsh() is Lsh")
                };
                for (k, v) in params {
                    match k.as_str() {
                        "tables" => tables = int_param("tables", *v, 1..=256)? as usize,
                        "bits" => bits = int_param("bits", *v, 0..=64)? as usize,
                        "probes" => probes = int_param("probes", *v, 1..=4096)? as usize,
                        "seed" => seed = int_param("seed", *v, 0..=(1 << 53))?,
                        other => {
                            return Err(Error::invalid(
                                "index_params",
                                format!("unknown lsh parameter `{other}`; expected tables, bits, probes, seed"),
                            ))
                        }
                    }
                }
                Ok(IndexConfig::Lsh {
                    tables,
                    bits,
                    probes,
                    seed,
                })
            }
            other => Err(Error::invalid(
                "index",
                format!(
                    "unknown index kind `{other}`; this build supports: flat, hnsw, ivf_pq, lsh"
                ),
            )),
        }
    }
}

/// A collection's fixed shape, chosen at creation and checked at every open.
///
/// Not serialised as it is: the manifest stores its own versioned record
/// (`storage::manifest::ConfigRecord`), so fields here can change without breaking files.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionConfig {
    /// Number of components in every vector.
    pub dim: usize,
    /// The distance metric.
    pub metric: Metric,
    /// The index built over sealed segments.
    pub index: IndexConfig,
    /// Payload fields kept in the payload index for filters; `None` (the default) indexes
    /// every field. Filters on other fields still work: they are evaluated by reading the
    /// payloads of the segment (slower, no extra memory).
    pub indexed_fields: Option<Vec<String>>,
    /// Payload string fields that also feed a BM25 full-text index (`None`: no text index).
    pub text: Option<TextConfig>,
    /// What keys the points: unsigned integers (the default) or strings.
    pub id_type: IdType,
    /// Quantised vectors for `flat` and `hnsw` (default [`Quantization::Auto`]: sq8 for an
    /// `hnsw` collection of at least [`AUTO_SQ8_MIN_DIM`] components, none otherwise).
    pub quantization: Quantization,
}

/// What keys a collection's points.
///
/// In a [`IdType::Str`] collection every point is keyed by a string (a UUID, a path,
/// `doc#chunk`) given to [`crate::Collection::upsert_str`] and friends. The engine still
/// works on 64-bit ids: a string's id is [`crate::str_id`] of it (a fixed 64-bit hash), and
/// the string itself is stored with the point, so two different strings can never take
/// each other's place: an upsert whose string hashes to the id of a different stored string
/// is refused with [`crate::Error::IdCollision`] (at 10 million keys the chance that any
/// two collide is about 3 in a million).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdType {
    /// `u64` ids (`u64::MAX` is reserved).
    #[default]
    Int,
    /// String ids of 1 to [`crate::MAX_STR_ID_BYTES`] bytes.
    Str,
}

impl IdType {
    /// The name used in configs and messages: `"int"` or `"str"`.
    pub fn name(self) -> &'static str {
        match self {
            IdType::Int => "int",
            IdType::Str => "str",
        }
    }

    /// Parse `"int"` / `"str"`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "int" | "u64" => Ok(IdType::Int),
            "str" | "string" => Ok(IdType::Str),
            other => Err(Error::invalid(
                "id_type",
                format!("expected \"int\" or \"str\", got {other:?}"),
            )),
        }
    }
}

/// Full-text search over payload string fields: which fields, how their text is analysed,
/// and the BM25 parameters. Fixed at creation like the rest of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// The payload fields indexed (each a string where present; 1 to 16 of them).
    pub fields: Vec<String>,
    /// Segmentation, folding, stop words and stemming (see [`crate::text`]).
    pub analyzer: AnalyzerConfig,
    /// BM25 term-frequency saturation. Default 1.2.
    pub k1: f32,
    /// BM25 length normalisation (0: none, 1: full). Default 0.75.
    pub b: f32,
}

/// Most text fields a collection indexes.
pub const MAX_TEXT_FIELDS: usize = 16;

impl TextConfig {
    /// Index `fields` with the default analyzer (English) and BM25 parameters.
    pub fn new<S: Into<String>>(fields: impl IntoIterator<Item = S>) -> Self {
        TextConfig {
            fields: fields.into_iter().map(Into::into).collect(),
            analyzer: AnalyzerConfig::default(),
            k1: 1.2,
            b: 0.75,
        }
    }

    /// Check the config is usable.
    pub fn validate(&self) -> Result<()> {
        if self.fields.is_empty() || self.fields.len() > MAX_TEXT_FIELDS {
            return Err(Error::invalid(
                "text_fields",
                format!(
                    "name 1 to {MAX_TEXT_FIELDS} fields, got {}",
                    self.fields.len()
                ),
            ));
        }
        for (i, f) in self.fields.iter().enumerate() {
            if f.is_empty() || f.len() > crate::filter::value::MAX_KEY_BYTES {
                return Err(Error::invalid(
                    "text_fields",
                    format!(
                        "field names must be 1..={} bytes, got `{f}`",
                        crate::filter::value::MAX_KEY_BYTES
                    ),
                ));
            }
            if self.fields[..i].contains(f) {
                return Err(Error::invalid(
                    "text_fields",
                    format!("field `{f}` is named twice"),
                ));
            }
        }
        if !crate::text::is_language(&self.analyzer.language) {
            return Err(Error::invalid(
                "language",
                format!(
                    "unknown language `{}`; expected one of {}",
                    self.analyzer.language,
                    crate::text::language_names().join(", ")
                ),
            ));
        }
        if !(self.k1.is_finite() && (0.0..=10.0).contains(&self.k1)) {
            return Err(Error::invalid(
                "k1",
                format!("must be in 0..=10, got {}", self.k1),
            ));
        }
        if !(self.b.is_finite() && (0.0..=1.0).contains(&self.b)) {
            return Err(Error::invalid(
                "b",
                format!("must be in 0..=1, got {}", self.b),
            ));
        }
        if let crate::text::StopWords::List(words) = &self.analyzer.stopwords {
            if let Some(w) = words.iter().find(|w| w.len() > crate::text::MAX_TERM_BYTES) {
                return Err(Error::invalid(
                    "stopwords",
                    format!(
                        "stop words are at most {} bytes, got `{w}`",
                        crate::text::MAX_TERM_BYTES
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Largest supported dimension. Bounds allocations made from on-disk headers.
pub const MAX_DIM: usize = 65_536;

impl CollectionConfig {
    /// A config with the flat index.
    pub fn new(dim: usize, metric: Metric) -> Self {
        CollectionConfig {
            dim,
            metric,
            index: IndexConfig::Flat,
            indexed_fields: None,
            text: None,
            id_type: IdType::Int,
            quantization: Quantization::Auto,
        }
    }

    /// This config with [`Quantization::Auto`] resolved (what a collection created with it
    /// stores).
    #[must_use]
    pub fn resolved(&self) -> CollectionConfig {
        CollectionConfig {
            quantization: self.quantization.resolve(&self.index, self.dim),
            ..self.clone()
        }
    }

    /// Check the config is usable.
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 || self.dim > MAX_DIM {
            return Err(Error::invalid(
                "dim",
                format!("must be in 1..={MAX_DIM}, got {}", self.dim),
            ));
        }
        if let Some(fields) = &self.indexed_fields {
            if let Some(bad) = fields
                .iter()
                .find(|f| f.is_empty() || f.len() > crate::filter::value::MAX_KEY_BYTES)
            {
                return Err(Error::invalid(
                    "indexed_fields",
                    format!(
                        "field names must be 1..={} bytes, got `{bad}`",
                        crate::filter::value::MAX_KEY_BYTES
                    ),
                ));
            }
        }
        if let Some(t) = &self.text {
            t.validate()?;
        }
        if let Some(r) = self.quantization.rescore() {
            if !matches!(self.index, IndexConfig::Flat | IndexConfig::Hnsw { .. }) {
                return Err(Error::invalid(
                    "quantization",
                    format!(
                        "applies to the flat and hnsw indexes, not {} (ivf_pq stores product-quantised codes already)",
                        self.index.spec().name()
                    ),
                ));
            }
            if !(1..=MAX_RESCORE).contains(&r) {
                return Err(Error::invalid(
                    "rescore",
                    format!("must be in 1..={MAX_RESCORE}, got {r}"),
                ));
            }
        }
        self.index
            .spec()
            .validate(self.dim)
            .map_err(|(name, reason)| Error::invalid(name, reason))
    }
}

/// How a hybrid search combines its vector and keyword rankings.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Fusion {
    /// Reciprocal rank fusion: a point scores `sum 1 / (k + rank)` over the rankings that
    /// hold it (rank 1 is the best); `k = 60` is the usual choice.
    Rrf {
        /// The rank offset (larger: flatter).
        k: f32,
    },
    /// Score blend: every candidate of either branch is scored by both (its exact distance
    /// to the query vector, its BM25 score — 0 without a query term), each score is min-max
    /// normalised over all candidates (the best 1, the worst 0; vector scores are minus
    /// distances), and the fused score is `alpha * vector + (1 - alpha) * keyword`. The
    /// default, with `alpha = 0.5`: unlike rank fusion it keeps how far ahead a branch's
    /// best candidates are, and a candidate only one branch found is not penalised for the
    /// other's cut-off (measured in README "Hybrid search").
    Weighted {
        /// Weight of the vector ranking, in `0..=1`.
        alpha: f32,
    },
}

impl Default for Fusion {
    fn default() -> Self {
        Fusion::Weighted { alpha: 0.5 }
    }
}

impl Fusion {
    /// Check the parameters.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Fusion::Rrf { k } if !(k.is_finite() && k >= 0.0) => Err(Error::invalid(
                "rrf_k",
                format!("must be a finite number >= 0, got {k}"),
            )),
            Fusion::Weighted { alpha } if !(alpha.is_finite() && (0.0..=1.0).contains(&alpha)) => {
                Err(Error::invalid(
                    "alpha",
                    format!("must be in 0..=1, got {alpha}"),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Per-query search parameters. Index-specific knobs are added here as indexes land.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SearchParams {
    /// Return each hit's payload too.
    pub include_payload: bool,
    /// HNSW beam width for this query (default: the collection's `ef_search`). Must be
    /// at least 1; `k` is used when larger. In a quantised collection the beam is at least
    /// `rescore * k`, except that a query giving `ef` without `rescore` has the collection's
    /// `rescore` cut to `max(1, ef / k)`: a narrow beam is then a cheaper, less exact search.
    pub ef: Option<usize>,
    /// Only points whose payload matches are returned (see [`crate::Filter`]).
    pub filter: Option<crate::filter::expr::Filter>,
    /// IVF-PQ lists probed (default: the collection's `nprobe`).
    pub nprobe: Option<usize>,
    /// IVF-PQ re-ranking factor (default: the collection's `refine`).
    pub refine: Option<usize>,
    /// LSH buckets read per table (default: the collection's `probes`).
    pub probes: Option<usize>,
    /// Quantised collections: the best `rescore * k` candidates by their codes are re-ranked
    /// exactly (default: the collection's `rescore`, cut to `max(1, ef / k)` when the query
    /// gives `ef`). At most [`MAX_RESCORE`].
    pub rescore: Option<usize>,
    /// Search the sealed segments of a single query in parallel (on the search pool) for
    /// lower latency; the results are the same as searching them one after another.
    /// Batch searches are parallel across queries already and ignore it. Default false.
    pub parallel_segments: bool,
    /// Hybrid search: candidates each branch fetches before fusion (default
    /// `max(k, 50)`; at least `k` is used).
    pub hybrid_candidates: Option<usize>,
    /// Hybrid search: how the two rankings are combined (default: score blend, alpha 0.5).
    pub fusion: Fusion,
    /// Keyword search: BM25 statistics to score with instead of this collection's own
    /// (the sum of [`crate::Collection::text_stats`] over the shards of a collection split
    /// across databases, so every shard scores as if it held all of them).
    pub text_stats: Option<std::sync::Arc<TextStats>>,
}

/// The BM25 statistics of one keyword query over a collection's live documents: what a
/// score depends on besides the document itself. [`crate::Collection::text_stats`]
/// computes them; statistics of several collections (shards) add up with
/// [`TextStats::add`]; [`SearchParams::with_text_stats`] scores with them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextStats {
    /// The query's terms after analysis, in query order (duplicates removed).
    pub terms: Vec<String>,
    /// Per text field, in the collection's order: (live documents, their total tokens).
    pub fields: Vec<(u64, u64)>,
    /// Live documents holding each term, field-major: `df[f * terms.len() + t]`.
    pub df: Vec<u64>,
}

impl TextStats {
    /// Add the statistics of another collection (another shard) for the same query.
    pub fn add(&mut self, other: &TextStats) -> Result<()> {
        if other.terms != self.terms || other.fields.len() != self.fields.len() {
            return Err(Error::invalid(
                "text_stats",
                format!(
                    "statistics of terms {:?} over {} field(s) cannot be added to those of {:?} \
                     over {}",
                    other.terms,
                    other.fields.len(),
                    self.terms,
                    self.fields.len()
                ),
            ));
        }
        for (a, b) in self.fields.iter_mut().zip(&other.fields) {
            a.0 += b.0;
            a.1 += b.1;
        }
        for (a, b) in self.df.iter_mut().zip(&other.df) {
            *a += b;
        }
        Ok(())
    }
}

impl SearchParams {
    /// Score keyword queries with these statistics (see [`TextStats`]).
    #[must_use]
    pub fn with_text_stats(mut self, stats: TextStats) -> Self {
        self.text_stats = Some(std::sync::Arc::new(stats));
        self
    }

    /// Also return each hit's payload.
    #[must_use]
    pub fn with_payload(mut self, yes: bool) -> Self {
        self.include_payload = yes;
        self
    }

    /// Return only points matching `filter`.
    #[must_use]
    pub fn with_filter(mut self, filter: crate::filter::expr::Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Set the HNSW beam width.
    #[must_use]
    pub fn with_ef(mut self, ef: usize) -> Self {
        self.ef = Some(ef);
        self
    }

    /// Set the IVF-PQ lists probed.
    #[must_use]
    pub fn with_nprobe(mut self, nprobe: usize) -> Self {
        self.nprobe = Some(nprobe);
        self
    }

    /// Set the IVF-PQ re-ranking factor.
    #[must_use]
    pub fn with_refine(mut self, refine: usize) -> Self {
        self.refine = Some(refine);
        self
    }

    /// Search the sealed segments of a single query in parallel (see the field).
    #[must_use]
    pub fn with_parallel_segments(mut self, yes: bool) -> Self {
        self.parallel_segments = yes;
        self
    }

    /// Set the candidates each branch of a hybrid search fetches.
    #[must_use]
    pub fn with_hybrid_candidates(mut self, n: usize) -> Self {
        self.hybrid_candidates = Some(n);
        self
    }

    /// Set how a hybrid search fuses its two rankings.
    #[must_use]
    pub fn with_fusion(mut self, fusion: Fusion) -> Self {
        self.fusion = fusion;
        self
    }

    /// Set the LSH buckets read per table.
    #[must_use]
    pub fn with_probes(mut self, probes: usize) -> Self {
        self.probes = Some(probes);
        self
    }

    /// Set the re-scoring factor of a quantised collection.
    #[must_use]
    pub fn with_rescore(mut self, rescore: usize) -> Self {
        self.rescore = Some(rescore);
        self
    }
}
