//! The distance metric. Defined here, beside the kernels that compute it, so that
//! `distance` depends on nothing else in the crate; `types` re-exports it.

/// How distances between vectors are measured. Smaller is always nearer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// The metric's lower-case name, as accepted by `Metric::parse`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
        }
    }

    /// The metric a name denotes: `l2`, `cosine` or `dot` (also `euclidean`, `cos`, `ip`,
    /// `inner_product`), any case.
    pub(crate) fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "l2" | "euclidean" => Some(Metric::L2),
            "cosine" | "cos" => Some(Metric::Cosine),
            "dot" | "ip" | "inner_product" => Some(Metric::Dot),
            _ => None,
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
