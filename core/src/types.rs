//! Small shared types: the metric, index configuration, id newtypes.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How distances between vectors are measured. Smaller is always nearer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Metric {
    /// Squared Euclidean distance.
    L2,
    /// `1 - cos(a, b)`. Vectors are stored unit-normalised.
    Cosine,
    /// `-dot(a, b)`.
    Dot,
}

impl Metric {
    /// The metric's lower-case name, as accepted by [`Metric::parse`].
    pub fn name(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
        }
    }

    /// Parse `l2`, `cosine` or `dot` (also `euclidean`, `ip`).
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "l2" | "euclidean" => Ok(Metric::L2),
            "cosine" | "cos" => Ok(Metric::Cosine),
            "dot" | "ip" | "inner_product" => Ok(Metric::Dot),
            other => Err(Error::invalid(
                "metric",
                format!("unknown metric `{other}`; expected l2, cosine or dot"),
            )),
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Metric::L2 => 1,
            Metric::Cosine => 2,
            Metric::Dot => 3,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Metric::L2),
            2 => Some(Metric::Cosine),
            3 => Some(Metric::Dot),
            _ => None,
        }
    }
}

/// Which index a collection builds over its sealed segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum IndexConfig {
    /// Exact search by a full scan (SIMD). Always correct; the oracle for every other index.
    Flat,
}

impl IndexConfig {
    /// The index kind's name.
    pub fn name(&self) -> &'static str {
        match self {
            IndexConfig::Flat => "flat",
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
            other => Err(Error::invalid(
                "index",
                format!("unknown index kind `{other}`; this build supports: flat"),
            )),
        }
    }
}

/// A collection's fixed shape, chosen at creation and checked at every open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionConfig {
    /// Number of components in every vector.
    pub dim: usize,
    /// The distance metric.
    pub metric: Metric,
    /// The index built over sealed segments.
    pub index: IndexConfig,
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
        Ok(())
    }
}

/// Per-query search parameters. Index-specific knobs are added here as indexes land.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SearchParams {
    /// Return each hit's payload too.
    pub include_payload: bool,
}

impl SearchParams {
    /// Also return each hit's payload.
    #[must_use]
    pub fn with_payload(mut self, yes: bool) -> Self {
        self.include_payload = yes;
        self
    }
}
