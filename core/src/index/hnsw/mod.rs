//! Hierarchical navigable small-world graphs (Malkov & Yashunin): a multi-layer graph
//! built in parallel with per-node locks ([`build::GraphBuilder`]), frozen into fixed-width
//! adjacency arrays stored in the segment file and searched straight from the map
//! ([`graph::GraphView`]).

pub(crate) mod build;
pub(crate) mod graph;
pub(crate) mod kind;
pub(crate) mod search;
pub(crate) mod visited;

/// Defaults of the HNSW parameters.
pub const HNSW_DEFAULT_M: usize = 16;
/// Default `ef_construction`.
pub const HNSW_DEFAULT_EF_CONSTRUCTION: usize = 200;
/// Default `ef_search`.
pub const HNSW_DEFAULT_EF_SEARCH: usize = 64;
/// Default seed of the level draw.
pub const HNSW_DEFAULT_SEED: u64 = 0x7472_6f76_6564;

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

#[cfg(test)]
mod tests {
    #[test]
    fn a_row_count_from_a_file_that_overflows_is_refused() {
        // rows = 2^64 - 1: rows + 1 wraps to 0 = offsets.len(); refused, not wrapped.
        let meta = [2, 4, 0, 0, 0, u64::MAX, 0, 0];
        assert!(super::graph::GraphView::new(&meta, &[], &[], &[]).is_err());
    }

    use std::sync::atomic::AtomicBool;

    use super::build::{link_unreachable, GraphBuilder, VectorSet};
    use super::graph::{FrozenGraph, Graph, GraphView};
    use super::search::{search, Expand, Scratch};
    use super::visited::VisitedPool;
    use super::HnswParams;
    use crate::distance::Kernels;
    use crate::distance::Metric;
    use crate::index::quant::BuildCodes;

    /// Clustered data (20 fixed centres plus noise, like real embeddings); `seed` picks
    /// the noise, so base and queries share the centres.
    pub(super) fn data(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let lcg = |s: &mut u64| {
            *s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((*s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let mut cs = 12_345u64;
        let centres: Vec<f32> = (0..20 * dim).map(|_| lcg(&mut cs) * 4.0).collect();
        let mut s = seed;
        let mut next = move || lcg(&mut s);
        (0..n)
            .flat_map(|i| {
                let c = i % 20;
                (0..dim)
                    .map(|j| centres[c * dim + j] + next())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// `base` (row-major, `dim` wide) under L2 with the best kernels.
    fn l2_set(base: &[f32], dim: usize) -> VectorSet<'_> {
        VectorSet {
            data: base,
            dim,
            kernels: Kernels::best(),
            metric: Metric::L2,
        }
    }

    fn params() -> HnswParams {
        HnswParams {
            m: 16,
            ef_construction: 200,
            seed: 7,
        }
    }

    fn recall(
        g: &dyn Graph,
        vs: &VectorSet<'_>,
        queries: &[f32],
        allow: &dyn Fn(u32) -> bool,
        expand: Expand,
    ) -> f64 {
        let pool = VisitedPool::default();
        let mut scratch = Scratch::default();
        let (dim, n) = (vs.dim, vs.data.len() / vs.dim);
        let mut hits = 0;
        let mut total = 0;
        for q in queries.chunks_exact(dim) {
            let dist = |i: u32| vs.kernels.distance(vs.metric, q, vs.row(i));
            let mut exact: Vec<(f32, u32)> = (0..n as u32)
                .filter(|i| allow(*i))
                .map(|i| (dist(i), i))
                .collect();
            exact.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut visited = pool.take(n);
            let got = search(
                g,
                &dist,
                &|_| {},
                10,
                64,
                &|i| allow(i),
                expand,
                &mut visited,
                &mut scratch,
            );
            assert!(
                got.iter().all(|c| allow(c.id)),
                "a disallowed node was returned"
            );
            let truth: Vec<u32> = exact.iter().take(10).map(|x| x.1).collect();
            hits += got.iter().filter(|c| truth.contains(&c.id)).count();
            total += truth.len();
        }
        hits as f64 / total as f64
    }

    /// Nodes not reachable on layer 0 from the entry point of `g`; panics on a malformed list
    /// (a count past `m0`, a neighbour out of range, a link to itself or a repeated one).
    fn unreachable(g: &FrozenGraph) -> usize {
        let (m0, rows, entry) = (g.meta[1] as usize, g.meta[5] as usize, g.meta[3] as usize);
        let w = 1 + m0;
        let list = |n: usize| {
            let c = g.l0[n * w] as usize;
            assert!(c <= m0, "node {n}: {c} links");
            let l = &g.l0[n * w + 1..n * w + 1 + c];
            for (i, &x) in l.iter().enumerate() {
                assert!(
                    (x as usize) < rows && x as usize != n,
                    "node {n} links to {x}"
                );
                assert!(!l[..i].contains(&x), "node {n} links twice to {x}");
            }
            l
        };
        let mut seen = vec![false; rows];
        let mut stack = vec![entry];
        seen[entry] = true;
        while let Some(n) = stack.pop() {
            for &x in list(n) {
                if !seen[x as usize] {
                    seen[x as usize] = true;
                    stack.push(x as usize);
                }
            }
        }
        for n in 0..rows {
            list(n);
        }
        seen.iter().filter(|s| !**s).count()
    }

    #[test]
    fn nodes_nothing_links_to_get_a_link_from_a_reachable_node() {
        // 0 -> 1 -> ... -> 19 and 19 -> 0; nodes 20..40 link to 0 but nothing links to
        // them. With m0 = 4 the nearest reachable nodes' lists fill up, so later nodes take
        // the place of a link whose target has another one.
        let dim = 8;
        let base = data(40, dim, 1);
        let vs = l2_set(&base, dim);
        let links: Vec<Vec<Vec<u32>>> = (0..40u32)
            .map(|i| vec![if i < 20 { vec![(i + 1) % 20] } else { vec![0] }])
            .collect();
        let p = HnswParams {
            m: 2,
            ef_construction: 8,
            seed: 1,
        };
        let mut g = FrozenGraph::from_links(&p, Some((0, 0)), &links);
        assert_eq!(unreachable(&g), 20);
        let linked = link_unreachable(&mut g, &vs);
        assert!(linked >= 20, "{linked} links for 20 stranded nodes");
        assert_eq!(unreachable(&g), 0);
        // Repairing a graph with nothing stranded changes nothing.
        let before = g.clone();
        assert_eq!(link_unreachable(&mut g, &vs), 0);
        assert_eq!(g, before);
    }

    #[test]
    fn a_graph_linked_whole_finds_every_row_with_a_beam_as_wide_as_itself() {
        // A sparse graph (m 4) over clustered rows strands some nodes: no beam finds them.
        let (dim, n) = (16, 3000);
        let base = data(n, dim, 3);
        let vs = l2_set(&base, dim);
        let p = HnswParams {
            m: 4,
            ef_construction: 16,
            seed: 5,
        };
        let b = GraphBuilder::build(p, &vs);
        let stranded = unreachable(&b.freeze());
        let g = b.freeze_linked(&vs);
        println!("{stranded} of {n} nodes unreachable before the repair");
        assert!(
            stranded > 0,
            "the build stranded no node: the test checks nothing"
        );
        assert_eq!(unreachable(&g), 0);
        let view = g.view();
        let pool = VisitedPool::default();
        let mut scratch = Scratch::default();
        for r in 0..n as u32 {
            let q = vs.row(r);
            let dist = |i: u32| vs.kernels.distance(vs.metric, q, vs.row(i));
            let mut visited = pool.take(n);
            let got = search(
                &view,
                &dist,
                &|_| {},
                1,
                n,
                &|_| true,
                Expand::Through,
                &mut visited,
                &mut scratch,
            );
            assert!(
                got.first().is_some_and(|c| c.id == r || c.d == 0.0),
                "row {r} not found: {got:?}"
            );
        }
    }

    /// An incremental build over every row of `vs` as upserts link them: `first` rows, then
    /// `batch` at a time; `exact` keeps the insertion beam on the float rows.
    fn build_in_batches(
        vs: &VectorSet<'_>,
        first: usize,
        batch: usize,
        exact: bool,
    ) -> GraphBuilder {
        let n = vs.data.len() / vs.dim;
        let mut b = if exact {
            GraphBuilder::new_exact(params())
        } else {
            GraphBuilder::new_coded_from(params(), BuildCodes::TRAIN_ROWS)
        };
        let mut from = 0;
        while from < n {
            let to = (from + if from == 0 { first } else { batch }).min(n);
            b.add_nodes(to - from, vs);
            b.insert_range(from, to, vs);
            if from == 0 && !exact {
                assert_eq!(b.coded_rows(), to, "the first rows were not coded");
            }
            from = to;
        }
        b
    }

    /// Build `base` in batches (`first` rows, then `batch` at a time) with codes and
    /// exactly; check the codes covered every row and both graphs' recall@10 at ef 64
    /// (at least 0.95, within `tolerance` of each other).
    fn codes_match_exact(
        base: &[f32],
        queries: &[f32],
        first: usize,
        batch: usize,
        tolerance: f64,
    ) {
        codes_match_exact_dim(base, queries, 128, first, batch, tolerance);
    }

    /// [`codes_match_exact`] for rows of `dim` components.
    fn codes_match_exact_dim(
        base: &[f32],
        queries: &[f32],
        dim: usize,
        first: usize,
        batch: usize,
        tolerance: f64,
    ) {
        let vs = l2_set(base, dim);
        let coded = build_in_batches(&vs, first, batch, false);
        let n = base.len() / dim;
        assert_eq!(
            coded.coded_rows(),
            n,
            "the insertion beam did not score codes"
        );
        let exact = build_in_batches(&vs, first, batch, true);
        assert_eq!(exact.coded_rows(), 0);
        let all =
            |g: &GraphBuilder| recall(&g.freeze().view(), &vs, queries, &|_| true, Expand::Through);
        let (r_coded, r_exact) = (all(&coded), all(&exact));
        println!("recall@10 at ef 64: codes {r_coded}, exact {r_exact}");
        assert!(r_coded >= 0.95, "recall with codes {r_coded}");
        assert!(
            (r_coded - r_exact).abs() <= tolerance,
            "codes {r_coded} vs exact {r_exact}"
        );
    }

    #[test]
    fn a_build_scoring_codes_links_as_well_as_an_exact_one() {
        let base = data(4000, 128, 1);
        // Just under 2 MiB of rows: a collection codes only larger graphs
        // (`codes_from_rows`); the test codes this one.
        assert_eq!(
            GraphBuilder::build(params(), &l2_set(&base, 128)).coded_rows(),
            0
        );
        codes_match_exact(&base, &data(100, 128, 2), 4000, 4000, 0.01);
    }

    /// From 256 components the build codes take 4 bits a component (sq8 below): such a build
    /// links as well as an exact one too, on rows whose width is not a whole number of
    /// 64-component blocks (the codes' padding is scored as zero).
    #[test]
    fn a_build_scoring_4_bit_codes_links_as_well_as_an_exact_one() {
        let dim = 300;
        let base = data(2000, dim, 3);
        codes_match_exact_dim(&base, &data(100, dim, 4), dim, 2000, 2000, 0.01);
    }

    #[test]
    fn build_codes_follow_rows_that_drift_out_of_the_trained_range() {
        // The first 1,500 rows train the codes; the next 2,500 arrive 200 at a time (as
        // upserts link them), far outside the trained range: their components would all
        // clamp to the top code if the range were never trained again (measured: recall
        // 0.917 then, against 0.995 with the retraining).
        let far = |v: Vec<f32>| v.into_iter().map(|x| x + 20.0).collect::<Vec<_>>();
        let mut base = data(1500, 128, 1);
        base.extend(far(data(2500, 128, 3)));
        let mut queries = data(50, 128, 2);
        queries.extend(far(data(50, 128, 4)));
        codes_match_exact(&base, &queries, 1500, 200, 0.02);
    }

    #[test]
    fn recall_frozen_equals_builder_and_filters_hold() {
        let dim = 24;
        let base = data(3000, dim, 1);
        let queries = data(50, dim, 99);
        let k = Kernels::best();
        let mut unit = base.clone();
        for v in unit.chunks_exact_mut(dim) {
            crate::distance::normalize(v);
        }
        // Dot on unnormalised data (maximum inner product) is not a metric and graph
        // indexes do poorly on it; cosine is tested on unit vectors as collections store them.
        for (metric, data) in [(Metric::L2, &base), (Metric::Cosine, &unit)] {
            let vs = VectorSet {
                data,
                dim,
                kernels: k,
                metric,
            };
            let b = GraphBuilder::build(params(), &vs);
            let frozen = b.freeze();
            let view = frozen.view();
            let r = recall(&view, &vs, &queries, &|_| true, Expand::Through);
            assert!(r >= 0.95, "{metric:?} recall {r}");
            let rb = recall(&b, &vs, &queries, &|_| true, Expand::Through);
            assert!((rb - r).abs() < 1e-12);
            for expand in [Expand::Through, Expand::TwoHop] {
                let r_odd = recall(&view, &vs, &queries, &|i| i % 3 != 0, expand);
                assert!(
                    r_odd >= 0.9,
                    "{metric:?} {expand:?} filtered recall {r_odd}"
                );
                // A 5% pass rate: two-hop expansion keeps the allowed subgraph connected.
                let r5 = recall(&view, &vs, &queries, &|i| i % 20 == 7, expand);
                println!("{metric:?} {expand:?}: 5% filter recall {r5}");
                if expand == Expand::TwoHop {
                    assert!(r5 >= 0.9, "{metric:?} two-hop 5% recall {r5}");
                }
            }
        }
    }

    #[test]
    fn a_full_two_hop_beam_does_not_walk_through_rejected_nodes() {
        // A 5% filter spread evenly: every region has passing nodes within two hops, so once
        // the beam holds `ef` passing nodes the search scores passing nodes only; rejected
        // ones are scored on the way down (upper layers) and while the beam is short and its
        // two-hop neighbourhood spent. Before, a full beam whose two-hop neighbourhood was all
        // visited walked through rejected neighbours (95% of the graph): here ~1,500-2,300
        // rejected scores per query instead of ~60-100, and at 1M x 128 5x the time of ef 64
        // at ef 96 (README "Filtered HNSW search").
        let (dim, n) = (16, 60_000);
        let base = data(n, dim, 3);
        let queries = data(40, dim, 77);
        let vs = l2_set(&base, dim);
        let frozen = GraphBuilder::build(params(), &vs).freeze();
        let g = frozen.view();
        // `data` puts row i in cluster i % 20: hash the row so the filter is uncorrelated.
        let allow = |i: u32| (u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 20 == 7;
        let pool = VisitedPool::default();
        let mut scratch = Scratch::default();
        let per_query = queries.len() / dim;
        let run = |ef: usize, scratch: &mut Scratch| {
            let (mut rejected, mut hits) = (0usize, 0usize);
            for q in queries.chunks_exact(dim) {
                let scored_rejected = std::cell::Cell::new(0usize);
                let dist = |i: u32| {
                    if !allow(i) {
                        scored_rejected.set(scored_rejected.get() + 1);
                    }
                    vs.kernels.distance(vs.metric, q, vs.row(i))
                };
                let mut visited = pool.take(n);
                let got = search(
                    &g,
                    &dist,
                    &|_| {},
                    10,
                    ef,
                    &allow,
                    Expand::TwoHop,
                    &mut visited,
                    scratch,
                );
                pool.give(visited);
                let mut exact: Vec<(f32, u32)> = (0..n as u32)
                    .filter(|i| allow(*i))
                    .map(|i| (vs.kernels.distance(vs.metric, q, vs.row(i)), i))
                    .collect();
                exact.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                hits += exact[..10]
                    .iter()
                    .filter(|e| got.iter().any(|c| c.id == e.1))
                    .count();
                rejected += scored_rejected.get();
            }
            (rejected, hits as f64 / (10 * per_query) as f64)
        };
        for ef in [32, 128] {
            let (rejected, r) = run(ef, &mut scratch);
            let rejected = rejected / per_query;
            println!("two-hop 5%, ef {ef}: recall {r}, rejected nodes scored per query {rejected}");
            assert!(r >= 0.95, "ef {ef}: recall {r}");
            // The descent and a short beam's first steps: well under a beam's worth more.
            assert!(
                rejected <= ef + 64,
                "ef {ef}: {rejected} rejected nodes scored per query"
            );
        }
    }

    #[test]
    fn a_merge_into_a_reused_graph_links_as_well_as_a_fresh_build() {
        // A merge: the graph of rows 0..2000 is reused and rows 2000..6000 are inserted into
        // it; recall against brute force stays within 0.02 of one graph built over all rows.
        let (dim, n, have) = (24, 6000, 2000);
        let all = data(n, dim, 11);
        let queries = data(60, dim, 98);
        let vs = VectorSet {
            data: &all,
            dim,
            kernels: Kernels::best(),
            metric: Metric::L2,
        };
        let first = VectorSet {
            data: &all[..have * dim],
            ..vs
        };
        let base = GraphBuilder::build(params(), &first).freeze();
        let mut b = GraphBuilder::from_view(params(), &base.view(), n).unwrap();
        b.add_nodes(n - have, &vs);
        b.insert_range_merge_or_stop(have, n, &vs, &AtomicBool::new(false));
        let merged = b.freeze();
        let fresh = GraphBuilder::build(params(), &vs).freeze();
        let r_fresh = recall(&fresh.view(), &vs, &queries, &|_| true, Expand::Through);
        let r_merged = recall(&merged.view(), &vs, &queries, &|_| true, Expand::Through);
        println!("merged recall {r_merged} vs a fresh build {r_fresh}");
        assert!(r_merged >= 0.95, "merged recall {r_merged}");
        assert!(
            r_merged >= r_fresh - 0.02,
            "merged recall {r_merged} vs a fresh build {r_fresh}"
        );
        // Every row is reachable: each is found when searched for itself.
        let view = merged.view();
        let pool = VisitedPool::default();
        let mut scratch = Scratch::default();
        let lost = (0..n as u32)
            .filter(|&i| {
                let dist = |j: u32| vs.between(i, j);
                let mut visited = pool.take(n);
                let got = search(
                    &view,
                    &dist,
                    &|_| {},
                    1,
                    64,
                    &|_| true,
                    Expand::Through,
                    &mut visited,
                    &mut scratch,
                );
                got.first().is_none_or(|c| c.d > 0.0)
            })
            .count();
        assert!(lost * 200 < n, "{lost} rows not found by their own vector");
    }

    #[test]
    fn one_thread_build_is_deterministic_for_a_seed() {
        let dim = 8;
        let base = data(1500, dim, 3);
        let vs = VectorSet {
            data: &base,
            dim,
            kernels: Kernels::best(),
            metric: Metric::L2,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let a = pool.install(|| GraphBuilder::build(params(), &vs).freeze());
        let b = pool.install(|| GraphBuilder::build(params(), &vs).freeze());
        assert_eq!(a, b);
        let c = pool.install(|| {
            GraphBuilder::build(
                HnswParams {
                    seed: 8,
                    ..params()
                },
                &vs,
            )
            .freeze()
        });
        assert_ne!(a, c);
    }

    #[test]
    fn malformed_frozen_graphs_are_refused() {
        let dim = 4;
        let base = data(300, dim, 5);
        let vs = l2_set(&base, dim);
        let f = GraphBuilder::build(params(), &vs).freeze();
        let ok =
            |meta: &[u64; 8], offs: &[u32]| GraphView::new(meta, &f.l0, offs, &f.upper).is_ok();
        assert!(ok(&f.meta, &f.offsets));
        let mut m = f.meta;
        m[0] = 1;
        assert!(!ok(&m, &f.offsets));
        let mut m = f.meta;
        m[3] = 300;
        assert!(!ok(&m, &f.offsets));
        let mut m = f.meta;
        m[4] = 99;
        assert!(!ok(&m, &f.offsets));
        let mut o = f.offsets.clone();
        o[1] = u32::MAX;
        assert!(!ok(&f.meta, &o));
        // A neighbour id out of range is skipped at search time, not followed.
        let mut l0 = f.l0.clone();
        l0[1] = 1_000_000;
        let v = GraphView::new(&f.meta, &l0, &f.offsets, &f.upper).unwrap();
        let mut out = Vec::new();
        v.neighbors(0, 0, &mut out);
        assert!(out.iter().all(|x| *x < 300));
    }
}
