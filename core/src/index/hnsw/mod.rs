//! Hierarchical navigable small-world graphs (Malkov & Yashunin): a multi-layer graph
//! built in parallel with per-node locks ([`build::GraphBuilder`]), frozen into fixed-width
//! adjacency arrays stored in the segment file and searched straight from the map
//! ([`graph::GraphView`]).

pub(crate) mod build;
pub(crate) mod graph;
pub(crate) mod search;
pub(crate) mod visited;

/// Build parameters of a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HnswParams {
    /// Links per node on upper layers; layer 0 keeps up to `2 * m`.
    pub m: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
    /// Seed of the level draw.
    pub seed: u64,
}

impl HnswParams {
    pub(crate) fn m0(&self) -> usize {
        2 * self.m
    }

    pub(crate) fn max_links(&self, level: usize) -> usize {
        if level == 0 {
            self.m0()
        } else {
            self.m
        }
    }

    /// The level of `node`: floor(-ln(U) / ln(m)) for a U drawn from (seed, node), capped.
    pub(crate) fn level_of(&self, node: u64) -> usize {
        let mut z = self.seed ^ node.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let ml = 1.0 / (self.m.max(2) as f64).ln();
        ((-u.ln() * ml).floor() as usize).min(MAX_LEVEL)
    }
}

/// Highest layer index.
pub(crate) const MAX_LEVEL: usize = 15;
