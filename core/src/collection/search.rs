//! Reads: get, search (one query or a batch) on a snapshot, count, metadata queries.

use rayon::prelude::*;

use super::collection::{Collection, Hit, Point};
use super::state::{sealed_key, sealed_payload, search_sealed, Knobs, State};
use super::write::PointRef;
use crate::error::{Error, Result};
use crate::filter::cache::KeyedFilter;
use crate::filter::expr::Filter;
use crate::filter::key::KEY_FIELD;
use crate::filter::value::{Payload, Value};
use crate::index::topk::TopK;
use crate::index::GivenKnobs;
use crate::interrupt;
use crate::types::{IdType, IndexConfig, SearchParams};

/// The points at `locs` of `st`, their keys split from their payloads.
pub(super) fn points_at(st: &State, locs: Vec<super::state::Location>) -> Result<Vec<Point>> {
    locs.into_iter()
        .map(|loc| {
            let (id, vector, payload) = st.point_at(loc)?;
            let (key, payload) = split_key(payload);
            Ok(Point {
                id,
                key,
                vector,
                payload,
            })
        })
        .collect()
}

/// A stored payload split into the point's string key (string-id collections) and the
/// payload its caller sees.
pub(super) fn split_key(mut p: Payload) -> (Option<String>, Payload) {
    match p.remove(KEY_FIELD) {
        Some(Value::Str(k)) => (Some(k), p),
        _ => (None, p),
    }
}

/// Queries per thread from which an exact batch search uses matrix products.
const GEMM_MIN_QUERIES: usize = 16;
/// Most queries per matrix-product chunk (their products with a block of rows stay in
/// cache).
const GEMM_MAX_QUERIES: usize = 256;

impl Collection {
    /// The point with this id, if it exists.
    ///
    /// ```
    /// # use trovedb::{CollectionConfig, Database, DbOptions, Metric, SearchParams};
    /// # let dir = tempfile::tempdir()?;
    /// # let db = Database::open(dir.path(), DbOptions::default())?;
    /// # let c = db.create_collection("c", &CollectionConfig::new(2, Metric::L2))?;
    /// c.upsert(&[3], &[1.0, 2.0], &[])?;
    /// assert_eq!(c.get(3)?.map(|p| p.vector), Some(vec![1.0, 2.0]));
    /// assert!(c.get(4)?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, id: u64) -> Result<Option<Point>> {
        self.check_read()?;
        Ok(self.state.read().get(id)?.map(|(vector, payload)| {
            let (key, payload) = split_key(payload);
            Point {
                id,
                key,
                vector,
                payload,
            }
        }))
    }

    /// Whether the collection is keyed by strings (hits and points then carry their key).
    pub(super) fn keyed(&self) -> bool {
        self.config.id_type == IdType::Str
    }

    /// Validate query `row` of a batch (0 for a single query); returns it normalised for
    /// cosine collections. Errors name the query row, not a point id.
    pub(super) fn prepare_query<'a>(
        &self,
        q: &'a [f32],
        buf: &'a mut Vec<f32>,
        k: usize,
        row: usize,
    ) -> Result<&'a [f32]> {
        if k == 0 {
            return Err(Error::invalid("k", "k must be at least 1"));
        }
        self.prepare_vector(PointRef::Int(0), q, buf)
            .map_err(|e| match e {
                Error::NonFiniteValue { index, .. } => Error::NonFiniteQuery { query: row, index },
                Error::InvalidArgument {
                    name: "vectors", ..
                } => Error::invalid(
                    "query",
                    format!("query {row} has zero length; cosine distance is undefined"),
                ),
                other => other,
            })
    }

    /// The knobs of a query: its own parameters or the collection's defaults. A knob the
    /// collection's index kind does not read, or 0, is an error.
    pub(super) fn resolve_knobs(&self, params: &SearchParams, k: usize) -> Result<Knobs> {
        let spec = &self.spec;
        let applies = spec.knob_names();
        let check = |name: &'static str, v: Option<usize>| -> Result<Option<usize>> {
            match v {
                Some(0) => Err(Error::invalid(name, format!("{name} must be at least 1"))),
                Some(_) if !applies.contains(&name) => Err(Error::invalid(
                    name,
                    format!(
                        "`{name}` does not apply to this collection's index ({})",
                        spec.name()
                    ),
                )),
                v => Ok(v),
            }
        };
        let given = GivenKnobs {
            ef: check("ef", params.ef)?,
            nprobe: check("nprobe", params.nprobe)?,
            refine: check("refine", params.refine)?,
            probes: check("probes", params.probes)?,
        };
        let rescore = match (params.rescore, self.config.quantization.rescore()) {
            (Some(0), _) => return Err(Error::invalid("rescore", "rescore must be at least 1")),
            (Some(r), _) if r > crate::types::MAX_RESCORE => {
                return Err(Error::invalid(
                    "rescore",
                    format!(
                        "rescore must be at most {}, got {r}",
                        crate::types::MAX_RESCORE
                    ),
                ))
            }
            (Some(_), None) => return Err(Error::invalid(
                "rescore",
                "`rescore` applies to quantised collections only (this one has quantization none)",
            )),
            (given, default) => given.or(default).unwrap_or(1),
        };
        let mut knobs = Knobs {
            k,
            ef: given.ef.unwrap_or(k).max(k),
            nprobe: given.nprobe.unwrap_or(1),
            refine: given.refine.unwrap_or(1),
            probes: given.probes.unwrap_or(1),
            rescore,
            scan_row_cost: 1.0,
        };
        spec.knobs(&given, &mut knobs);
        // A query that gives a beam narrower than `rescore * k` and no `rescore` of its own
        // asks for a cheap search: the collection's `rescore` is cut to what the beam holds
        // (at least 1), rather than widening the beam to `rescore * k` (which made every `ef`
        // below it the same search). Measured on text-minilm-dev (ten sq8 segments grown into
        // one, single thread): ef 10 / 16 / 24 answered recall@10 0.833 / 0.903 / 0.946 at
        // 58.0k / 44.8k / 33.0k QPS, where each was 0.962 at ~29-31k before.
        if params.rescore.is_none() && given.ef.is_some() {
            knobs.rescore = knobs.rescore.min((knobs.ef / k.max(1)).max(1));
        }
        Ok(knobs)
    }

    /// Hits from `(id, distance)` pairs found on `st`, with their payloads when asked for
    /// and their keys in a string-id collection.
    pub(super) fn to_hits(
        &self,
        st: &State,
        found: Vec<(u64, f32)>,
        params: &SearchParams,
    ) -> Result<Vec<Hit>> {
        let keyed = self.keyed();
        found
            .into_iter()
            .map(|(id, distance)| {
                let (key, payload) = if params.include_payload {
                    let (key, p) = split_key(st.payload_of(id)?);
                    (key, Some(p))
                } else if keyed {
                    (st.key_of(id)?, None)
                } else {
                    (None, None)
                };
                Ok(Hit {
                    id,
                    key,
                    distance,
                    payload,
                })
            })
            .collect()
    }

    /// The `k` nearest points to `query`, nearest first. Fewer than `k` are returned when
    /// the collection holds fewer live points. Exact for `flat`; for `hnsw`, approximate
    /// with beam width `params.ef` (default: the collection's `ef_search`).
    pub fn search(&self, query: &[f32], k: usize, params: &SearchParams) -> Result<Vec<Hit>> {
        self.check_read()?;
        let params = &*self.bind_params(params)?;
        let mut buf = Vec::new();
        let q = self.prepare_query(query, &mut buf, k, 0)?;
        let knobs = self.resolve_knobs(params, k)?;
        let mut hits = self.search_snapshot(q, 1, &knobs, params)?;
        Ok(hits.pop().unwrap_or_default())
    }

    /// Search `nq` prepared queries (`nq * dim` floats; in parallel when more than one).
    /// The in-memory segments are searched under the state lock, and a snapshot of the
    /// sealed segments (their readers and deletion bitsets, shared) is taken under the same
    /// lock; the sealed segments are then searched on that snapshot with the lock released,
    /// so a long search holds off no writer, and a segment replaced meanwhile stays mapped
    /// (its file is removed when the last snapshot holding it is dropped).
    pub(super) fn search_snapshot(
        &self,
        queries: &[f32],
        nq: usize,
        knobs: &Knobs,
        params: &SearchParams,
    ) -> Result<Vec<Vec<Hit>>> {
        let dim = self.config.dim;
        let keyed = self.keyed();
        let filter = params.filter.as_ref().map(KeyedFilter::new);
        let filter = filter.as_ref();
        let search_unsealed = |st: &State, q: &[f32]| -> Result<Vec<(u64, f32)>> {
            let mut top = TopK::new(knobs.k);
            st.search_unsealed(q, knobs, &self.visited, filter, &mut top)?;
            Ok(top.into_sorted())
        };
        let (sealed, ctx, partial, payloads, keys) = {
            let st = self.state.read();
            let partial: Vec<Vec<(u64, f32)>> = if nq == 1 {
                vec![search_unsealed(&st, queries)?]
            } else {
                queries
                    .par_chunks(dim)
                    .map(|q| search_unsealed(&st, q))
                    .collect::<Result<_>>()?
            };
            // Payloads (or keys) of in-memory hits are read now; sealed ones from the
            // snapshot.
            let mut payloads = std::collections::HashMap::new();
            let mut keys = std::collections::HashMap::new();
            if params.include_payload {
                for (id, _) in partial.iter().flatten() {
                    payloads.insert(*id, st.payload_of(*id)?);
                }
            } else if keyed {
                for (id, _) in partial.iter().flatten() {
                    keys.insert(*id, st.key_of(*id)?);
                }
            }
            (st.sealed_snapshot(), st.ctx(), partial, payloads, keys)
        };
        let stop = interrupt::current();
        let finish = |q: &[f32], part: &Vec<(u64, f32)>| -> Result<Vec<(u64, f32)>> {
            if interrupt::is_set(stop.as_ref()) {
                return Err(Error::Interrupted {
                    operation: "search",
                });
            }
            let mut top = TopK::new(knobs.k);
            for (id, d) in part {
                top.push(*d, *id);
            }
            if nq == 1 && params.parallel_segments && sealed.len() > 1 {
                // Each segment into its own top-k on the search pool, then merged: the same
                // k nearest as the serial loop (ties broken by id either way).
                let parts: Vec<Vec<(u64, f32)>> = crate::background::search(|| {
                    sealed
                        .par_iter()
                        .map(|s| {
                            let mut t = TopK::new(knobs.k);
                            let one = std::slice::from_ref(s);
                            search_sealed(ctx, one, q, knobs, &self.visited, filter, &mut t)?;
                            Ok(t.into_sorted())
                        })
                        .collect::<Result<_>>()
                })?;
                for (id, d) in parts.into_iter().flatten() {
                    top.push(d, id);
                }
                return Ok(top.into_sorted());
            }
            search_sealed(ctx, &sealed, q, knobs, &self.visited, filter, &mut top)?;
            Ok(top.into_sorted())
        };
        let found: Vec<Vec<(u64, f32)>> = if nq == 1 {
            vec![finish(queries, &partial[0])?]
        } else {
            queries
                .par_chunks(dim)
                .zip(partial.par_iter())
                .map(|(q, part)| finish(q, part))
                .collect::<Result<_>>()?
        };
        found
            .into_iter()
            .map(|f| {
                f.into_iter()
                    .map(|(id, distance)| {
                        let (key, payload) = if params.include_payload {
                            // Two queries of a batch can hit the same in-memory row: the
                            // payload is cloned, not taken.
                            let p = match payloads.get(&id) {
                                Some(p) => p.clone(),
                                None => sealed_payload(&sealed, id)?.unwrap_or_default(),
                            };
                            let (key, p) = split_key(p);
                            (key, Some(p))
                        } else if keyed {
                            let key = match keys.get(&id) {
                                Some(k) => k.clone(),
                                None => sealed_key(&sealed, id)?,
                            };
                            (key, None)
                        } else {
                            (None, None)
                        };
                        Ok(Hit {
                            id,
                            key,
                            distance,
                            payload,
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// Search many queries (row-major, `nq * dim` floats) in parallel over rayon. Same
    /// results as calling [`Collection::search`] per query. Flat collections scan blocks of
    /// queries per pass over the vectors.
    ///
    /// ```
    /// # use trovedb::{CollectionConfig, Database, DbOptions, Metric, SearchParams};
    /// # let dir = tempfile::tempdir()?;
    /// # let db = Database::open(dir.path(), DbOptions::default())?;
    /// # let c = db.create_collection("c", &CollectionConfig::new(2, Metric::L2))?;
    /// c.upsert(&[1, 2, 3], &[0.0, 0.0, 5.0, 5.0, 9.0, 9.0], &[])?;
    /// // Two queries, row-major: one list of hits per query.
    /// let hits = c.search_batch(&[0.1, 0.0, 8.0, 8.0], 1, &SearchParams::default())?;
    /// assert_eq!((hits[0][0].id, hits[1][0].id), (1, 3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn search_batch(
        &self,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
    ) -> Result<Vec<Vec<Hit>>> {
        self.check_read()?;
        if k == 0 {
            return Err(Error::invalid("k", "k must be at least 1"));
        }
        let params = &*self.bind_params(params)?;
        let knobs = self.resolve_knobs(params, k)?;
        let dim = self.config.dim;
        if !queries.len().is_multiple_of(dim) {
            return Err(Error::invalid(
                "queries",
                format!(
                    "{} floats are not a whole number of dim-{dim} queries",
                    queries.len()
                ),
            ));
        }
        let nq = queries.len() / dim;
        let mut prepared = Vec::with_capacity(queries.len());
        let mut buf = Vec::new();
        for (row, q) in queries.chunks_exact(dim).enumerate() {
            prepared.extend_from_slice(self.prepare_query(q, &mut buf, k, row)?);
        }
        // A quantised flat collection answers each query on its codes (as `search` does),
        // not by the float32 matrix products below.
        if self.config.index != IndexConfig::Flat
            || params.filter.is_some()
            || self.config.quantization != crate::types::Quantization::None
        {
            // The pool's threads do not see this thread's interrupt flag: hand it over.
            let stop = interrupt::current();
            return crate::background::search(|| match stop {
                Some(s) => interrupt::interruptible(s, || {
                    self.search_snapshot(&prepared, nq, &knobs, params)
                }),
                None => self.search_snapshot(&prepared, nq, &knobs, params),
            });
        }
        // Exact unfiltered search of a flat collection: blocks of queries per pass over the
        // vectors, under the state lock.
        let st = self.state.read();
        let stop = interrupt::current();
        let found: Vec<Vec<(u64, f32)>> = crate::background::search(|| {
            let threads = rayon::current_num_threads().max(1);
            // Enough chunks to keep every thread busy. From GEMM_MIN_QUERIES queries per
            // thread on, matrix products (at most GEMM_MAX_QUERIES queries each); below,
            // blocks of QUERY_BLOCK queries per pass.
            let gemm = nq >= GEMM_MIN_QUERIES * threads;
            let per = if gemm {
                nq.div_ceil(threads).clamp(1, GEMM_MAX_QUERIES)
            } else {
                nq.div_ceil(threads)
                    .clamp(1, crate::index::flat::QUERY_BLOCK)
            };
            prepared
                .par_chunks(per * dim)
                .map(|chunk| {
                    if interrupt::is_set(stop.as_ref()) {
                        return Err(Error::Interrupted {
                            operation: "search",
                        });
                    }
                    if gemm {
                        return Ok(st.search_flat_gemm(chunk, k));
                    }
                    let qs: Vec<&[f32]> = chunk.chunks_exact(dim).collect();
                    Ok(st.search_flat_block(&qs, k))
                })
                .collect::<Result<Vec<_>>>()
                .map(|blocks| blocks.into_iter().flatten().collect())
        })?;
        found
            .into_iter()
            .map(|f| self.to_hits(&st, f, params))
            .collect()
    }

    /// Search many queries (row-major, `nq * dim` floats), each with its own parameters
    /// (its own filter, say): `params` holds one entry per query. In parallel over rayon;
    /// the same results as calling [`Collection::search`] per query.
    pub fn search_each(
        &self,
        queries: &[f32],
        k: usize,
        params: &[SearchParams],
    ) -> Result<Vec<Vec<Hit>>> {
        self.check_read()?;
        let dim = self.config.dim;
        if !queries.len().is_multiple_of(dim) || queries.len() / dim != params.len() {
            return Err(Error::invalid(
                "params",
                format!(
                    "{} floats and {} parameter sets: give one dim-{dim} query per set",
                    queries.len(),
                    params.len()
                ),
            ));
        }
        // Checked up front so that errors name the query row.
        let mut buf = Vec::new();
        for (row, q) in queries.chunks_exact(dim).enumerate() {
            self.prepare_query(q, &mut buf, k, row)?;
        }
        let stop = interrupt::current();
        crate::background::search(|| {
            queries
                .par_chunks(dim)
                .zip(params.par_iter())
                .map(|(q, p)| match &stop {
                    Some(s) => interrupt::interruptible(s.clone(), || self.search(q, k, p)),
                    None => self.search(q, k, p),
                })
                .collect()
        })
    }

    /// Number of live points whose payload matches `filter` (an empty `Filter::And` matches
    /// every point).
    pub fn count(&self, filter: &Filter) -> Result<usize> {
        self.check_read()?;
        let filter = &*self.bind_filter(filter)?;
        let st = self.state.read();
        match filter {
            Filter::And(all) if all.is_empty() => Ok(st.len()),
            _ => st.count(filter),
        }
    }

    /// Up to `limit` live points whose payload matches `filter` (a metadata-only query),
    /// in storage order.
    pub fn get_where(&self, filter: &Filter, limit: usize) -> Result<Vec<Point>> {
        self.check_read()?;
        let filter = &*self.bind_filter(filter)?;
        let st = self.state.read();
        points_at(&st, st.matching(filter, limit)?)
    }
}
