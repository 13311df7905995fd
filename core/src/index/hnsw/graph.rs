//! The graph as searched: a trait over the in-memory builder and the frozen, fixed-width
//! adjacency arrays read from a segment file.
//!
//! Frozen layout (FORMAT.md §HNSW), all `u32` unless noted:
//! - meta: `u64 [8]` = m, m0, ef_construction, entry node, max level, rows, seed, 0;
//! - layer 0: `rows × (1 + m0)`: a count, then up to m0 neighbour rows (unused slots 0);
//! - upper offsets: `rows + 1` prefix sums into the upper array; node i has
//!   `(off[i+1] - off[i]) / (1 + m)` upper levels;
//! - upper: per node with level L ≥ 1, L blocks of `(1 + m)` (count, neighbours) for
//!   levels 1..=L.

use super::{HnswParams, MAX_LEVEL};

/// Neighbour access for search.
pub(crate) trait Graph: Sync {
    /// Entry node and top level, or `None` for an empty graph.
    fn entry(&self) -> Option<(u32, usize)>;
    /// Append the neighbours of `node` on `level` to `out` (cleared first).
    fn neighbors(&self, node: u32, level: usize, out: &mut Vec<u32>);
    /// Number of nodes.
    fn len(&self) -> usize;
    /// Hint the CPU to load the layer-0 list of `node` (a search about to expand it).
    fn prefetch_l0(&self, node: u32) {
        let _ = node;
    }
}

/// A frozen graph borrowed from a segment map (or from owned buffers).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GraphView<'a> {
    pub m: usize,
    pub m0: usize,
    entry: u32,
    max_level: usize,
    rows: usize,
    l0: &'a [u32],
    offsets: &'a [u32],
    upper: &'a [u32],
}

/// Owned frozen buffers, as written to a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrozenGraph {
    pub meta: [u64; 8],
    pub l0: Vec<u32>,
    pub offsets: Vec<u32>,
    pub upper: Vec<u32>,
}

impl FrozenGraph {
    #[cfg(test)]
    pub(crate) fn view(&self) -> GraphView<'_> {
        GraphView::new(&self.meta, &self.l0, &self.offsets, &self.upper)
            .expect("a graph frozen by this build is well formed")
    }

    /// Freeze per-node, per-level link lists.
    pub(crate) fn from_links(
        params: &HnswParams,
        entry: Option<(u32, usize)>,
        links: &[Vec<Vec<u32>>],
    ) -> FrozenGraph {
        let (m, m0) = (params.m, params.m0());
        let rows = links.len();
        let mut l0 = vec![0u32; rows * (1 + m0)];
        let mut offsets = Vec::with_capacity(rows + 1);
        let mut upper = Vec::new();
        for (i, levels) in links.iter().enumerate() {
            let slot = &mut l0[i * (1 + m0)..(i + 1) * (1 + m0)];
            let n0 = levels.first().map_or(&[][..], Vec::as_slice);
            let c = n0.len().min(m0);
            slot[0] = c as u32;
            slot[1..=c].copy_from_slice(&n0[..c]);
            offsets.push(upper.len() as u32);
            for lv in levels.iter().skip(1) {
                let c = lv.len().min(m);
                let start = upper.len();
                upper.resize(start + 1 + m, 0);
                upper[start] = c as u32;
                upper[start + 1..start + 1 + c].copy_from_slice(&lv[..c]);
            }
        }
        offsets.push(upper.len() as u32);
        let (e, top) = entry.map_or((0, 0), |(e, l)| (u64::from(e), l as u64));
        let meta = [
            m as u64,
            m0 as u64,
            params.ef_construction as u64,
            e,
            top,
            rows as u64,
            params.seed,
            0,
        ];
        FrozenGraph {
            meta,
            l0,
            offsets,
            upper,
        }
    }
}

impl<'a> GraphView<'a> {
    /// Validate frozen buffers (from disk). O(rows) over the offsets; neighbour ids are
    /// bounds-checked during search instead, so a damaged graph degrades recall, never
    /// memory safety.
    pub(crate) fn new(
        meta: &[u64; 8],
        l0: &'a [u32],
        offsets: &'a [u32],
        upper: &'a [u32],
    ) -> Result<GraphView<'a>, String> {
        let (m, m0) = (meta[0] as usize, meta[1] as usize);
        let (entry, max_level, rows) = (meta[3], meta[4] as usize, meta[5] as usize);
        if !(2..=512).contains(&m) || m0 != 2 * m {
            return Err(format!("bad graph degree m={m} m0={m0}"));
        }
        if max_level > MAX_LEVEL {
            return Err(format!("graph level {max_level} exceeds {MAX_LEVEL}"));
        }
        // Checked: `rows` comes from the file, and a wrapped product could match a short array.
        if Some(l0.len()) != rows.checked_mul(1 + m0) || Some(offsets.len()) != rows.checked_add(1)
        {
            return Err("graph arrays do not match the row count".into());
        }
        if rows > 0 && entry >= rows as u64 {
            return Err(format!("entry node {entry} out of range"));
        }
        let block = 1 + m;
        let mut prev = 0u32;
        for (i, &o) in offsets.iter().enumerate() {
            if o < prev || o as usize > upper.len() {
                return Err(format!("upper-layer offset {i} out of order"));
            }
            if i > 0 {
                let span = (o - prev) as usize;
                if !span.is_multiple_of(block) || span / block > max_level {
                    return Err(format!("node {} has a malformed upper-layer block", i - 1));
                }
            }
            prev = o;
        }
        if offsets.first() != Some(&0) || prev as usize != upper.len() {
            return Err("upper-layer offsets do not cover the upper array".into());
        }
        if rows > 0
            && ((offsets[entry as usize + 1] - offsets[entry as usize]) as usize) / block
                != max_level
        {
            return Err("entry node is not on the top level".into());
        }
        Ok(GraphView {
            m,
            m0,
            entry: entry as u32,
            max_level,
            rows,
            l0,
            offsets,
            upper,
        })
    }

    /// Rebuild a view over buffers that [`GraphView::new`] accepted before (no O(rows)
    /// pass). Bounds are still checked on every access, so misuse cannot be unsound.
    pub(crate) fn trusted(
        meta: &[u64; 8],
        l0: &'a [u32],
        offsets: &'a [u32],
        upper: &'a [u32],
    ) -> GraphView<'a> {
        GraphView {
            m: meta[0] as usize,
            m0: meta[1] as usize,
            entry: meta[3] as u32,
            max_level: meta[4] as usize,
            rows: meta[5] as usize,
            l0,
            offsets,
            upper,
        }
    }

    /// Upper levels of `node` (0 for a node on layer 0 only).
    pub(crate) fn levels(&self, node: u32) -> usize {
        let n = node as usize;
        match (self.offsets.get(n), self.offsets.get(n + 1)) {
            (Some(a), Some(b)) => (b.saturating_sub(*a) as usize) / (1 + self.m),
            _ => 0,
        }
    }

    /// Bytes of the link arrays (for statistics).
    pub(crate) fn bytes(&self) -> usize {
        4 * (self.l0.len() + self.offsets.len() + self.upper.len())
    }
}

impl Graph for GraphView<'_> {
    fn entry(&self) -> Option<(u32, usize)> {
        (self.rows > 0).then_some((self.entry, self.max_level))
    }

    #[inline]
    fn neighbors(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        let n = node as usize;
        let block = if level == 0 {
            let w = 1 + self.m0;
            &self.l0[n * w..(n + 1) * w]
        } else {
            let w = 1 + self.m;
            let start = self.offsets[n] as usize + (level - 1) * w;
            if start + w > self.offsets[n + 1] as usize {
                return;
            }
            &self.upper[start..start + w]
        };
        let c = (block[0] as usize).min(block.len() - 1);
        out.extend(
            block[1..=c]
                .iter()
                .copied()
                .filter(|x| (*x as usize) < self.rows),
        );
    }

    fn len(&self) -> usize {
        self.rows
    }

    #[inline]
    fn prefetch_l0(&self, node: u32) {
        let (n, w) = (node as usize, 1 + self.m0);
        if let Some(list) = self.l0.get(n * w..(n + 1) * w) {
            crate::distance::prefetch_any(list);
        }
    }
}
