//! Keyword (BM25) and hybrid search: the text fields of a collection, analysed on write
//! into each segment's text index, searched with collection-wide statistics, and fused
//! with vector search.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use super::collection::{Collection, Hit};
use super::search::split_key;
use super::segment::Segment;
use super::state::{sealed_payload, SealedSegment};
use super::write::PointRef;
use crate::error::{Error, Result};
use crate::filter::bitset::Bitset;
use crate::filter::cache::KeyedFilter;
use crate::filter::expr::Filter;
use crate::filter::value::{Payload, Value};
use crate::index::text::{self, Bm25, MemText, QueryTerm, TextSource};
use crate::index::topk::TopK;
use crate::text::Analyzer;
use crate::types::{Fusion, IndexConfig, SearchParams, TextConfig, TextStats};

/// A collection's text fields with their analyzer (shared by its segments).
#[derive(Debug)]
pub(crate) struct TextIndexing {
    pub fields: Vec<String>,
    pub analyzer: Arc<Analyzer>,
    pub bm25: Bm25,
}

impl TextIndexing {
    pub(crate) fn new(c: &TextConfig) -> TextIndexing {
        TextIndexing {
            fields: c.fields.clone(),
            analyzer: Arc::new(Analyzer::new(&c.analyzer)),
            bm25: Bm25 { k1: c.k1, b: c.b },
        }
    }

    /// The terms of field `f` of `payload` (`None` when it has no string there).
    fn field_terms(&self, payload: &Payload, f: usize) -> Option<Vec<String>> {
        match payload.get(&self.fields[f]) {
            Some(Value::Str(s)) => Some(self.analyzer.terms(s)),
            _ => None,
        }
    }

    /// Add the next row's text to `text` (one index per field).
    pub(crate) fn add_row(&self, text: &mut [MemText], payload: &Payload) {
        for (f, m) in text.iter_mut().enumerate() {
            m.push(self.field_terms(payload, f).as_deref());
        }
    }

    /// The text indexes of rows with these payloads (analysed in parallel on the build
    /// pool).
    pub(crate) fn build(&self, payloads: &[&Payload]) -> Vec<MemText> {
        (0..self.fields.len())
            .map(|f| {
                let terms: Vec<Option<Vec<String>>> = crate::background::build(|| {
                    payloads
                        .par_iter()
                        .map(|p| self.field_terms(p, f))
                        .collect()
                });
                let mut m = MemText::default();
                for t in &terms {
                    m.push(t.as_deref());
                }
                m
            })
            .collect()
    }

    /// Refuse a payload whose text field holds something other than a string or null.
    pub(crate) fn validate(&self, id: PointRef<'_>, payload: &Payload) -> Result<()> {
        for f in &self.fields {
            match payload.get(f) {
                None | Some(Value::Str(_) | Value::Null) => {}
                Some(v) => {
                    return Err(Error::invalid(
                        "payloads",
                        format!(
                            "point {id}: text field `{f}` must be a string (or null), got {}",
                            crate::filter::value::type_name(v)
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The distinct terms of a query, in order of first appearance.
    pub(crate) fn query_terms(&self, text: &str) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.analyzer
            .terms(text)
            .into_iter()
            .filter(|t| seen.insert(t.clone()))
            .collect()
    }
}

/// The rows of a `rows`-row segment whose field `field` holds all `terms`, as a bitset
/// (`src`: the segment's text index of that field, if it has one). A damaged posting list
/// is recorded in `err` (the caller reports it) and matches nothing.
pub(crate) fn match_rows(
    src: Option<TextSource<'_>>,
    terms: &[String],
    rows: usize,
    path: Option<&std::path::Path>,
    err: &RefCell<Option<Error>>,
) -> Bitset {
    let mut b = Bitset::new(rows);
    let Some(src) = src else { return b };
    match src.rows_with_all(terms) {
        Ok(found) => b.insert_all(found.iter().filter(|r| (**r as usize) < rows)),
        Err(off) => *err.borrow_mut() = Some(damaged(path.map(std::path::Path::to_path_buf), off)),
    }
    b
}

/// The text index of field `f` (named `name`) of a segment.
fn source<'a>(seg: Segment<'a>, f: usize, name: &str) -> Result<TextSource<'a>> {
    let missing = || {
        Error::invalid(
            "text",
            format!("a segment holds no text index for field `{name}`"),
        )
    };
    match seg {
        Segment::Appendable(a) => a.text.get(f).map(TextSource::Mem).ok_or_else(missing),
        Segment::Frozen(fz) => fz.seg.text.get(f).map(TextSource::Mem).ok_or_else(missing),
        Segment::Sealed(s) => s.reader.text(name).map(TextSource::Sealed).ok_or_else(|| {
            Error::corruption(
                s.reader.path(),
                0,
                format!("segment lacks the text index of field `{name}`"),
            )
        }),
    }
}

/// Collection-wide statistics of a query over `segments`: per field (docs, tokens), per
/// (field, term) the live document frequency.
fn gather(
    ti: &TextIndexing,
    terms: &[String],
    segments: &[Segment<'_>],
    totals: &mut [(u64, u64)],
    dfs: &mut [u64],
) -> Result<()> {
    for seg in segments {
        let dead = seg.dead();
        let is_dead = |r: usize| dead.get(r);
        let check: Option<&dyn Fn(usize) -> bool> = if dead.count_ones() == 0 {
            None
        } else {
            Some(&is_dead)
        };
        for (f, name) in ti.fields.iter().enumerate() {
            let src = source(*seg, f, name)?;
            let (d, t) = src.live_totals(dead.iter_ones());
            totals[f].0 += d;
            totals[f].1 += t;
            for (i, term) in terms.iter().enumerate() {
                dfs[f * terms.len() + i] += src
                    .live_df(term, check)
                    .map_err(|off| damaged(sealed_path(*seg), off))?;
            }
        }
    }
    Ok(())
}

/// Statistics given with a query must be for its terms and the collection's fields.
fn check_stats(given: &TextStats, terms: &[String], fields: usize) -> Result<()> {
    if given.terms != terms
        || given.fields.len() != fields
        || given.df.len() != fields * terms.len()
    {
        return Err(Error::invalid(
            "text_stats",
            format!(
                "the statistics are for terms {:?} over {} field(s) ({} document frequencies); \
                 this query analyses to {:?} over {} field(s): compute them with text_stats \
                 for the same text",
                given.terms,
                given.fields.len(),
                given.df.len(),
                terms,
                fields
            ),
        ));
    }
    Ok(())
}

fn damaged(path: Option<std::path::PathBuf>, off: usize) -> Error {
    Error::corruption(
        path.unwrap_or_default(),
        off as u64,
        "damaged text index postings",
    )
}

fn sealed_path(seg: Segment<'_>) -> Option<std::path::PathBuf> {
    match seg {
        Segment::Sealed(s) => Some(s.reader.path().to_path_buf()),
        _ => None,
    }
}

/// Score one segment into `top`.
fn score_segment(
    ti: &TextIndexing,
    qterms: &[QueryTerm],
    seg: Segment<'_>,
    filter: Option<&KeyedFilter<'_>>,
    top: &mut TopK,
) -> Result<()> {
    let sources = ti
        .fields
        .iter()
        .enumerate()
        .map(|(f, name)| source(seg, f, name))
        .collect::<Result<Vec<_>>>()?;
    let ids = seg.ids();
    let id_of = |r: usize| ids[r];
    let res = if let Some(f) = filter {
        let pass = seg.passing(f)?;
        if pass.count_ones() == 0 {
            return Ok(());
        }
        text::search(ti.bm25, qterms, &sources, &|r| pass.get(r), &id_of, top)
    } else {
        let dead = seg.dead();
        text::search(ti.bm25, qterms, &sources, &|r| !dead.get(r), &id_of, top)
    };
    res.map_err(|off| damaged(sealed_path(seg), off))
}

/// Results of a keyword search: `(id, -score)` best first, payloads when asked, and the
/// scores of the extra ids asked for (`None`: no longer live).
pub(super) struct Ranked {
    pub found: Vec<(u64, f32)>,
    pub payloads: Vec<Option<Payload>>,
    pub extra: Vec<Option<f32>>,
}

/// The BM25 scores of rows `rows` (ascending) of one segment (0 for a row holding no query
/// term): one cursor per query term walks the rows in order, and a row's weights are summed
/// in query-term order like [`text::search`] does.
fn row_scores(
    ti: &TextIndexing,
    qterms: &[QueryTerm],
    seg: Segment<'_>,
    rows: &[usize],
) -> Result<Vec<f32>> {
    let mut scores = vec![0.0f32; rows.len()];
    for t in qterms {
        let src = source(seg, t.field, &ti.fields[t.field])?;
        let lens = src.doc_lens();
        let mut c = src
            .cursor(&t.term)
            .map_err(|off| damaged(sealed_path(seg), off))?;
        for (i, row) in rows.iter().enumerate() {
            c.advance(*row as u32)
                .map_err(|off| damaged(sealed_path(seg), off))?;
            if c.doc == *row as u32 {
                scores[i] += text::weight(ti.bm25, t.idf, t.avgdl, c.tf, lens[*row]);
            }
        }
    }
    Ok(scores)
}

impl Collection {
    /// `filter` with every `$match` bound to the collection's analyzer; a `$match` on a
    /// field that is not a text field is refused.
    pub(super) fn bind_filter<'f>(&self, filter: &'f Filter) -> Result<Cow<'f, Filter>> {
        let mut ids = Vec::new();
        filter.id_matches(&mut ids);
        for m in &ids {
            match (self.keyed(), m.int_ids().first(), m.str_ids().first()) {
                (true, Some(i), _) => {
                    return Err(Error::invalid(
                        "filter",
                        format!(
                            "at `$id`: {i} is an integer, but collection `{}` is keyed by \
                             strings",
                            self.name()
                        ),
                    ))
                }
                (false, _, Some(k)) => {
                    return Err(Error::invalid(
                        "filter",
                        format!(
                            "at `$id`: {k:?} is a string, but collection `{}` is keyed by \
                             integers",
                            self.name()
                        ),
                    ))
                }
                _ => {}
            }
        }
        if !filter.has_match() {
            return Ok(Cow::Borrowed(filter));
        }
        let fields = self
            .text
            .as_ref()
            .map(|t| t.fields.clone())
            .unwrap_or_default();
        filter
            .bind_matches(&|field, m| match &self.text {
                Some(t) if t.fields.iter().any(|f| f == field) => {
                    Ok(m.bind(Arc::clone(&t.analyzer)))
                }
                _ => Err(Error::invalid(
                    "filter",
                    format!(
                        "at `{field}`: $match needs a text field; the collection's text fields \
                         are {fields:?} (create it with text_fields=[...])"
                    ),
                )),
            })
            .map(Cow::Owned)
    }

    /// `params` with its filter bound (see [`Collection::bind_filter`]).
    pub(super) fn bind_params<'p>(
        &self,
        params: &'p SearchParams,
    ) -> Result<Cow<'p, SearchParams>> {
        match &params.filter {
            Some(f) => match self.bind_filter(f)? {
                Cow::Borrowed(_) => Ok(Cow::Borrowed(params)),
                Cow::Owned(bound) => {
                    let mut p = params.clone();
                    p.filter = Some(bound);
                    Ok(Cow::Owned(p))
                }
            },
            None => Ok(Cow::Borrowed(params)),
        }
    }

    pub(super) fn text_indexing(&self) -> Result<&TextIndexing> {
        self.text.as_deref().ok_or_else(|| {
            Error::invalid(
                "text",
                format!(
                    "collection `{}` has no text fields; create it with text fields \
                     (text_fields=[...] in Python, CollectionConfig::text in Rust)",
                    self.name
                ),
            )
        })
    }

    /// The `k` best documents for `text` by BM25, as `(id, -score)`.
    pub(super) fn text_ranked(
        &self,
        text: &str,
        k: usize,
        params: &SearchParams,
        extra: &[u64],
    ) -> Result<Ranked> {
        let ti = self.text_indexing()?;
        let params = &*self.bind_params(params)?;
        // A string-id collection's hits carry their key, which lives in the payload.
        let want_payloads = params.include_payload || self.keyed();
        let terms = ti.query_terms(text);
        let mut top = TopK::new(k);
        if terms.is_empty() {
            // No term: every score is 0 (for the extra points still there).
            let st = self.state.read();
            return Ok(Ranked {
                found: Vec::new(),
                payloads: Vec::new(),
                extra: extra.iter().map(|id| st.locate(*id).map(|_| 0.0)).collect(),
            });
        }
        let filter = params.filter.as_ref().map(KeyedFilter::new);
        let filter = filter.as_ref();
        let nf = ti.fields.len();
        let (sealed, mut in_memory_payloads, qterms, extra_scores) = {
            let st = self.state.read();
            let sealed: Vec<SealedSegment> = st.sealed_snapshot();
            let mut segs: Vec<Segment<'_>> = sealed.iter().map(Segment::Sealed).collect();
            let unsealed: Vec<Segment<'_>> = st
                .segments()
                .filter(|(at, _)| !matches!(at, super::segment::SegmentAt::Sealed(_)))
                .map(|(_, s)| s)
                .collect();
            segs.extend(unsealed.iter().copied());
            let (totals, dfs) = if let Some(given) = &params.text_stats {
                check_stats(given, &terms, nf)?;
                (given.fields.clone(), given.df.clone())
            } else {
                let mut totals = vec![(0u64, 0u64); nf];
                let mut dfs = vec![0u64; nf * terms.len()];
                gather(ti, &terms, &segs, &mut totals, &mut dfs)?;
                (totals, dfs)
            };
            let mut qterms = Vec::new();
            for (f, (docs, tokens)) in totals.iter().enumerate() {
                if *docs == 0 {
                    continue;
                }
                let avgdl = (*tokens as f64 / *docs as f64).max(1e-9) as f32;
                for (i, term) in terms.iter().enumerate() {
                    let df = dfs[f * terms.len() + i];
                    if df > 0 {
                        qterms.push(QueryTerm {
                            field: f,
                            term: term.clone(),
                            idf: text::idf(*docs, df),
                            avgdl,
                        });
                    }
                }
            }
            for seg in &unsealed {
                score_segment(ti, &qterms, *seg, filter, &mut top)?;
            }
            // Grouped by segment, rows ascending, so each term's cursor moves forward only.
            let mut extra_scores: Vec<Option<f32>> = vec![None; extra.len()];
            let mut at: Vec<(super::segment::SegmentAt, usize, usize)> = extra
                .iter()
                .enumerate()
                .filter_map(|(i, id)| st.locate(*id).map(|loc| (loc.seg, loc.row, i)))
                .collect();
            at.sort_unstable_by_key(|(seg, row, _)| (*seg, *row));
            for group in at.chunk_by(|a, b| a.0 == b.0) {
                let Some(seg) = st.segment(group[0].0) else {
                    continue;
                };
                let rows: Vec<usize> = group.iter().map(|g| g.1).collect();
                for (g, score) in group.iter().zip(row_scores(ti, &qterms, seg, &rows)?) {
                    extra_scores[g.2] = Some(score);
                }
            }
            let mut payloads = HashMap::new();
            if want_payloads {
                for id in top.ids() {
                    if let Some(loc) = st.locate(id) {
                        if !matches!(loc.seg, super::segment::SegmentAt::Sealed(_)) {
                            payloads.insert(id, st.payload_of(id)?);
                        }
                    }
                }
            }
            (sealed, payloads, qterms, extra_scores)
        };
        for s in &sealed {
            score_segment(ti, &qterms, Segment::Sealed(s), filter, &mut top)?;
        }
        let found = top.into_sorted();
        let payloads = if want_payloads {
            found
                .iter()
                .map(|(id, _)| match in_memory_payloads.remove(id) {
                    Some(p) => Ok(Some(p)),
                    None => Ok(Some(sealed_payload(&sealed, *id)?.unwrap_or_default())),
                })
                .collect::<Result<_>>()?
        } else {
            vec![None; found.len()]
        };
        Ok(Ranked {
            found,
            payloads,
            extra: extra_scores,
        })
    }

    /// The BM25 statistics of the keyword query `text` over this collection's live
    /// documents (those matching no filter: statistics are always collection-wide). Sum
    /// them over the shards of a collection split across databases ([`TextStats::add`])
    /// and search each shard with [`SearchParams::with_text_stats`]: every shard then
    /// scores exactly as one collection holding all the documents would.
    ///
    /// ```
    /// use trovedb::{CollectionConfig, Database, DbOptions, Metric, Payload, SearchParams, TextConfig, Value};
    /// let dir = tempfile::tempdir()?;
    /// let db = Database::open(dir.path(), DbOptions::default())?;
    /// let config = CollectionConfig { text: Some(TextConfig::new(["t"])), ..CollectionConfig::new(1, Metric::L2) };
    /// let (a, b) = (db.create_collection("a", &config)?, db.create_collection("b", &config)?);
    /// let doc = |t: &str| Payload::from([("t".to_string(), Value::Str(t.into()))]);
    /// a.upsert(&[1, 2], &[0.0, 0.0], &[doc("red fox"), doc("red hen")])?;
    /// b.upsert(&[3], &[0.0], &[doc("blue fox")])?;
    /// let mut stats = a.text_stats("fox")?;
    /// stats.add(&b.text_stats("fox")?)?;
    /// assert_eq!((stats.fields[0].0, stats.df[0]), (3, 2)); // 3 documents, 2 hold "fox"
    /// let p = SearchParams::default().with_text_stats(stats);
    /// let (ha, hb) = (a.search_text("fox", 1, &p)?, b.search_text("fox", 1, &p)?);
    /// assert_eq!(ha[0].distance, hb[0].distance); // same length, same statistics
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn text_stats(&self, text: &str) -> Result<TextStats> {
        self.check_read()?;
        let ti = self.text_indexing()?;
        let terms = ti.query_terms(text);
        let nf = ti.fields.len();
        let mut fields = vec![(0u64, 0u64); nf];
        let mut df = vec![0u64; nf * terms.len()];
        {
            let st = self.state.read();
            let sealed: Vec<SealedSegment> = st.sealed_snapshot();
            let mut segs: Vec<Segment<'_>> = sealed.iter().map(Segment::Sealed).collect();
            segs.extend(
                st.segments()
                    .filter(|(at, _)| !matches!(at, super::segment::SegmentAt::Sealed(_)))
                    .map(|(_, s)| s),
            );
            gather(ti, &terms, &segs, &mut fields, &mut df)?;
        }
        Ok(TextStats { terms, fields, df })
    }

    /// The distance from the prepared query `q` to each of `ids` (`None`: not live).
    fn distances_of(&self, q: &[f32], ids: &[u64]) -> Vec<Option<f32>> {
        let st = self.state.read();
        ids.iter()
            .map(|id| {
                let loc = st.locate(*id)?;
                let seg = st.segment(loc.seg)?;
                Some(
                    self.kernels
                        .distance(self.config.metric, q, seg.vector(loc.row)),
                )
            })
            .collect()
    }

    /// The `k` best points for the keyword query `text` by BM25 (see README "Hybrid
    /// search"), under `params.filter`. Each hit's `distance` is minus its BM25 score
    /// (smaller is better, like every search); an empty result when no live document
    /// holds a query term.
    pub fn search_text(&self, text: &str, k: usize, params: &SearchParams) -> Result<Vec<Hit>> {
        self.check_read()?;
        if k == 0 {
            return Err(Error::invalid("k", "k must be at least 1"));
        }
        let r = self.text_ranked(text, k, params, &[])?;
        Ok(r.found
            .into_iter()
            .zip(r.payloads)
            .map(|((id, distance), payload)| {
                let (key, payload) = split_key(payload.unwrap_or_default());
                Hit {
                    id,
                    key,
                    distance,
                    payload: params.include_payload.then_some(payload),
                }
            })
            .collect())
    }

    /// The two rankings of a hybrid search before fusion (see
    /// [`HybridCandidates`]): what [`Collection::search_hybrid`] fuses, for a caller that
    /// fuses the candidates of several collections itself (the shards of a collection split
    /// across databases, searched with the same `params` — including
    /// [`SearchParams::with_text_stats`] — then fused over the union as one collection
    /// would). `k` sets the number of candidates as in `search_hybrid`.
    pub fn hybrid_candidates(
        &self,
        query: &[f32],
        text: &str,
        k: usize,
        params: &SearchParams,
    ) -> Result<HybridCandidates> {
        self.check_read()?;
        if k == 0 {
            return Err(Error::invalid("k", "k must be at least 1"));
        }
        self.text_indexing()?;
        let n = match params.hybrid_candidates {
            Some(0) => return Err(Error::invalid("hybrid_candidates", "must be at least 1")),
            Some(n) => n.max(k),
            None => k.max(DEFAULT_HYBRID_CANDIDATES),
        };
        params.fusion.validate()?;
        let mut dense_params = params.clone();
        if let (None, IndexConfig::Hnsw { ef_search, .. }) = (params.ef, &self.config.index) {
            dense_params.ef = Some((*ef_search).max(2 * n));
        }
        let dense = self.search(query, n, &dense_params)?;
        let dense_ids: Vec<u64> = dense.iter().map(|h| h.id).collect();
        // The keyword branch also scores the vector branch's candidates ...
        let keyword = self.text_ranked(text, n, params, &dense_ids)?;
        // Each candidate's key (string-id collections) and payload (when asked for).
        let mut payloads: HashMap<u64, (Option<String>, Option<Payload>)> = HashMap::new();
        let dense_ranked: Vec<(u64, f32)> = dense
            .into_iter()
            .map(|h| {
                payloads.insert(h.id, (h.key, h.payload));
                (h.id, h.distance)
            })
            .collect();
        let keyword_only: Vec<u64> = keyword
            .found
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !payloads.contains_key(id))
            .collect();
        for ((id, _), p) in keyword.found.iter().zip(keyword.payloads) {
            payloads.entry(*id).or_insert_with(|| {
                let (key, p) = split_key(p.unwrap_or_default());
                (key, params.include_payload.then_some(p))
            });
        }
        // ... and the vector branch the keyword branch's: every candidate gets both scores.
        let mut buf = Vec::new();
        let q = self.prepare_query(query, &mut buf, k, 0)?;
        let mut both: Vec<Candidate> = Vec::new();
        for ((id, d), s) in dense_ranked.iter().zip(&keyword.extra) {
            if let Some(s) = s {
                both.push(Candidate {
                    id: *id,
                    distance: *d,
                    score: *s,
                });
            }
        }
        let kw_score: HashMap<u64, f32> = keyword.found.iter().map(|(id, d)| (*id, -d)).collect();
        for (id, d) in keyword_only.iter().zip(self.distances_of(q, &keyword_only)) {
            if let (Some(d), Some(s)) = (d, kw_score.get(id)) {
                both.push(Candidate {
                    id: *id,
                    distance: d,
                    score: *s,
                });
            }
        }
        Ok(HybridCandidates {
            dense: dense_ranked,
            keyword: keyword.found.iter().map(|(id, d)| (*id, -d)).collect(),
            both: both.iter().map(|c| (c.id, c.distance, c.score)).collect(),
            payloads,
        })
    }

    /// Hybrid search: the vector query and the keyword query under the same filter, each
    /// fetching `params.hybrid_candidates` (default `max(k, 50)`) candidates, fused by
    /// `params.fusion` (a min-max score blend with alpha 0.5 by default). Each hit's
    /// `distance` is minus its fused score. Without an explicit `ef`, an HNSW collection's
    /// vector branch searches with `max(ef_search, 2 * candidates)`, so that its
    /// candidates are as good as its top-k would be.
    pub fn search_hybrid(
        &self,
        query: &[f32],
        text: &str,
        k: usize,
        params: &SearchParams,
    ) -> Result<Vec<Hit>> {
        let HybridCandidates {
            dense,
            keyword,
            both,
            mut payloads,
        } = self.hybrid_candidates(query, text, k, params)?;
        let keyword_found: Vec<(u64, f32)> = keyword.iter().map(|(id, s)| (*id, -s)).collect();
        let both: Vec<Candidate> = both
            .into_iter()
            .map(|(id, distance, score)| Candidate {
                id,
                distance,
                score,
            })
            .collect();
        let fused = fuse(params.fusion, &dense, &keyword_found, &both, k);
        Ok(fused
            .into_iter()
            .map(|(id, score)| {
                let (key, payload) = payloads.remove(&id).unwrap_or_default();
                Hit {
                    id,
                    key,
                    distance: -score,
                    payload,
                }
            })
            .collect())
    }
}

/// The two rankings of a hybrid search and every candidate's pair of scores
/// ([`Collection::hybrid_candidates`]).
#[derive(Debug, Clone, Default)]
pub struct HybridCandidates {
    /// The vector branch: `(id, distance)`, best first.
    pub dense: Vec<(u64, f32)>,
    /// The keyword branch: `(id, BM25 score)`, best first.
    pub keyword: Vec<(u64, f32)>,
    /// Every live candidate of either branch with both scores: `(id, distance, score)`
    /// (score 0 where it holds no query term).
    pub both: Vec<(u64, f32, f32)>,
    /// Each candidate's key (string-id collections) and payload (when asked for).
    pub payloads: HashMap<u64, (Option<String>, Option<Payload>)>,
}

/// Candidates each branch of a hybrid search fetches by default (at least `k`).
pub const DEFAULT_HYBRID_CANDIDATES: usize = 50;

/// A candidate of a hybrid search with both of its scores.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub id: u64,
    pub distance: f32,
    pub score: f32,
}

/// Fuse the two ranked lists (`(id, distance)`, best first; a keyword list's distance is
/// minus its score; rank fusion reads these) or the candidates with both scores (the blend
/// reads these) into the `k` best `(id, fused score)`, highest first (ties by smaller id).
pub(crate) fn fuse(
    fusion: Fusion,
    dense: &[(u64, f32)],
    keyword: &[(u64, f32)],
    both: &[Candidate],
    k: usize,
) -> Vec<(u64, f32)> {
    let mut score: HashMap<u64, f64> = HashMap::new();
    match fusion {
        Fusion::Rrf { k: rk } => {
            for list in [dense, keyword] {
                for (rank, (id, _)) in list.iter().enumerate() {
                    *score.entry(*id).or_insert(0.0) += 1.0 / (f64::from(rk) + rank as f64 + 1.0);
                }
            }
        }
        Fusion::Weighted { alpha } => {
            // Min-max over all candidates, per branch: the best is 1, the worst 0 (all 1 when
            // they tie). Vector similarity is minus the distance.
            let norm = |v: &dyn Fn(&Candidate) -> f64| -> Vec<f64> {
                let (lo, hi) = both
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |a, c| {
                        (a.0.min(v(c)), a.1.max(v(c)))
                    });
                both.iter()
                    .map(|c| {
                        if hi > lo {
                            (v(c) - lo) / (hi - lo)
                        } else {
                            1.0
                        }
                    })
                    .collect()
            };
            let dn = norm(&|c| -f64::from(c.distance));
            let kn = norm(&|c| f64::from(c.score));
            let a = f64::from(alpha);
            for (i, c) in both.iter().enumerate() {
                score.insert(c.id, a * dn[i] + (1.0 - a) * kn[i]);
            }
        }
    }
    let mut all: Vec<(u64, f64)> = score.into_iter().collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all.into_iter().map(|(id, s)| (id, s as f32)).collect()
}
