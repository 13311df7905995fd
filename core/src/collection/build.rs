//! Building a sealed segment: its index (through the index registry, or the appendable
//! segment's live graph) and its file.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::appendable::{AppendableSegment, ChainBase};
use super::state::indexed_fields;
use crate::distance::Kernels;
use crate::error::{Error, Result};
use crate::filter::payload_index::PayloadIndex;
use crate::filter::value::Payload;
use crate::index::hnsw::build::{GraphBuilder, VectorSet};
use crate::index::registry::BuiltIndex;
use crate::index::text::{MemText, TextSource};
use crate::index::BuildInput;
use crate::storage::segment;
use crate::storage::segment::reader::SegmentReader;
use crate::storage::segment::writer::{write_segment, SegmentData};
use crate::types::CollectionConfig;

/// A segment built in the background from a frozen appendable segment, not yet published.
pub(super) struct SealBuild {
    pub(super) id: u64,
    pub(super) reader: SegmentReader,
    pub(super) index: PayloadIndex,
    /// The base segment whose rows it holds first (a chain seal), which it replaces.
    pub(super) replaces: Option<ChainBase>,
}

/// Build and write the sealed segment of a frozen appendable segment (background thread).
/// With `base` (the reader of the segment `a` grows on, see [`chain_base`]) it is a chain
/// seal: the segment holds the base's rows, then `a`'s own, indexed by `a`'s graph as it is,
/// and replaces the base when published. Otherwise it holds `a`'s own live rows.
pub(super) fn build_sealed(
    dir: &Path,
    config: &CollectionConfig,
    kernels: &'static Kernels,
    a: &AppendableSegment,
    base: Option<&SegmentReader>,
    id: u64,
    stop: &AtomicBool,
) -> Result<SealBuild> {
    if let (Some(b), Some(reader), Some(g)) = (a.base, base, a.graph.as_ref()) {
        return build_chained(dir, config, kernels, a, b, reader, g, id);
    }
    let rows: Vec<usize> = a.live_rows().collect();
    let ids: Vec<u64> = rows.iter().map(|r| a.ids[*r]).collect();
    let mut vectors = crate::background::AnonF32::with_capacity(rows.len() * config.dim)
        .map_err(|e| Error::io(dir, e))?;
    for r in &rows {
        vectors.extend_from_slice(a.vector(*r));
    }
    let payloads: Vec<&Payload> = rows.iter().map(|r| &a.payloads[*r]).collect();
    // The appendable segment's text indexes, restricted to its live rows (no text is
    // analysed again).
    let mut text = Vec::with_capacity(a.text.len());
    for m in &a.text {
        let mut t = MemText::default();
        t.extend_from(&TextSource::Mem(m), &rows)
            .map_err(|_| Error::invalid("text", "in-memory text index out of step"))?;
        text.push(t);
    }
    let built = crate::background::build(|| {
        build_index_with(config, kernels, a, rows.len(), &vectors, stop)
    });
    // A stopped build is incomplete: nothing is written.
    if stop.load(std::sync::atomic::Ordering::Acquire) {
        return Err(Error::Interrupted { operation: "flush" });
    }
    write_sealed(
        dir,
        config,
        id,
        &ids,
        &vectors,
        &payloads,
        &built,
        Some(text),
    )
}

/// The reader of the segment `a` grows on, when sealing `a` writes the base's rows again
/// with its own (a chain seal): `a` has a base, that segment is among `sealed` with the
/// expected rows, `a` seals whole (a graph over every row, none of its own rows deleted) and
/// has rows of its own. Otherwise `a` is sealed as its own live rows.
pub(super) fn chain_base<'a>(
    a: &AppendableSegment,
    sealed: impl IntoIterator<Item = (u64, &'a Arc<SegmentReader>)>,
) -> Option<Arc<SegmentReader>> {
    let b = a.base?;
    if !a.seals_whole() || a.own_rows() == 0 {
        return None;
    }
    sealed
        .into_iter()
        .find(|(id, r)| *id == b.id && r.rows() == b.rows)
        .map(|(_, r)| Arc::clone(r))
}

/// The rows `data` of a collection configured as `config`, as a graph build reads them.
pub(super) fn vector_set<'a>(
    config: &CollectionConfig,
    kernels: &'a Kernels,
    data: &'a [f32],
) -> VectorSet<'a> {
    VectorSet {
        data,
        dim: config.dim,
        kernels,
        metric: config.metric,
    }
}

/// A chain seal (see [`build_sealed`]): the base's ids, payloads and text index read from its
/// file, the vectors and graph of `a` (whose first rows are the base's).
#[allow(
    clippy::too_many_arguments,
    reason = "the parts of one chain seal, passed through from build_sealed"
)]
fn build_chained(
    dir: &Path,
    config: &CollectionConfig,
    kernels: &Kernels,
    a: &AppendableSegment,
    b: ChainBase,
    reader: &SegmentReader,
    g: &GraphBuilder,
    id: u64,
) -> Result<SealBuild> {
    let rows = a.rows();
    let mut ids = Vec::with_capacity(rows);
    ids.extend_from_slice(&reader.ids()[..b.rows]);
    ids.extend_from_slice(&a.ids[b.rows..]);
    let owned = (0..b.rows)
        .map(|r| reader.payload(r))
        .collect::<Result<Vec<Payload>>>()?;
    let payloads: Vec<&Payload> = owned.iter().chain(&a.payloads[b.rows..]).collect();
    let mut text = Vec::with_capacity(a.text.len());
    let fields = config.text.iter().flat_map(|t| t.fields.iter());
    let (base_rows, own): (Vec<usize>, Vec<usize>) =
        ((0..b.rows).collect(), (b.rows..rows).collect());
    for (field, m) in fields.zip(&a.text) {
        let mut t = MemText::default();
        extend_text_from_sealed(&mut t, reader, field, &base_rows)?;
        t.extend_from(&TextSource::Mem(m), &own)
            .map_err(|_| Error::invalid("text", "in-memory text index out of step"))?;
        text.push(t);
    }
    let built = BuiltIndex::Hnsw(g.freeze_linked(&vector_set(config, kernels, &a.vectors)));
    let mut done = write_sealed(
        dir,
        config,
        id,
        &ids,
        &a.vectors,
        &payloads,
        &built,
        Some(text),
    )?;
    done.replaces = Some(b);
    Ok(done)
}

/// Append the text index postings of `rows` of the sealed segment `r`'s field `field` to
/// `m` (renumbered from `m`'s next row): merges and chain seals carry analysed text over
/// this way instead of analysing it again.
pub(super) fn extend_text_from_sealed(
    m: &mut MemText,
    r: &SegmentReader,
    field: &str,
    rows: &[usize],
) -> Result<()> {
    let src = r.text(field).map(TextSource::Sealed).ok_or_else(|| {
        Error::corruption(
            r.path(),
            0,
            format!("segment lacks the text index of field `{field}`"),
        )
    })?;
    m.extend_from(&src, rows)
        .map_err(|off| Error::corruption(r.path(), off as u64, "damaged text index postings"))
}

/// Write segment `id` holding these rows and their index (with the payload index built from
/// `payloads`, and the text indexes `text`, or built from `payloads` when `None`), durably,
/// and open it.
#[allow(clippy::too_many_arguments, reason = "the parts of one segment")]
pub(super) fn write_sealed(
    dir: &Path,
    config: &CollectionConfig,
    id: u64,
    ids: &[u64],
    vectors: &[f32],
    payloads: &[&Payload],
    built: &BuiltIndex,
    text: Option<Vec<MemText>>,
) -> Result<SealBuild> {
    let mut index = PayloadIndex::new(indexed_fields(config));
    for p in payloads {
        index.add(p);
    }
    let text = match (&config.text, text) {
        (Some(_), Some(t)) => t,
        (Some(t), None) => super::text::TextIndexing::new(t).build(payloads),
        (None, _) => Vec::new(),
    };
    let text_fields: Vec<(&str, &crate::index::text::MemText)> = config
        .text
        .iter()
        .flat_map(|t| t.fields.iter().map(String::as_str))
        .zip(text.iter())
        .collect();
    // On the build pool: rayon's global pool is never started in the host process (a forked
    // child would inherit it without its threads and wait on it forever).
    let quant = config.quantization.kind().map(|k| {
        crate::background::build(|| {
            crate::index::quant::encode(k, config.metric, vectors, config.dim)
        })
    });
    let name = segment::file_name(id);
    write_segment(
        dir,
        &name,
        &SegmentData {
            segment_id: id,
            metric: config.metric,
            dim: config.dim,
            ids,
            vectors,
            payloads,
            index: built,
            payload_index: Some(&index),
            text: &text_fields,
            quant: quant.as_ref(),
        },
    )?;
    let reader = SegmentReader::open(&dir.join(&name), config.dim, config.metric)?;
    Ok(SealBuild {
        id,
        reader,
        index,
        replaces: None,
    })
}

/// Build the index of a segment about to be sealed from the appendable `a`, whose live rows
/// are `vectors` (`live` of them). An HNSW build gives up early once `stop` is set (the
/// caller then discards the result).
pub(super) fn build_index_with(
    config: &CollectionConfig,
    kernels: &'static Kernels,
    a: &AppendableSegment,
    live: usize,
    vectors: &[f32],
    stop: &AtomicBool,
) -> BuiltIndex {
    // The appendable graph is reused when no row was deleted (rows map one to one);
    // otherwise the index is built afresh over the live rows (in parallel).
    if let Some(g) = &a.graph {
        if a.deleted.count_ones() == 0 && g.len_nodes() == live {
            return BuiltIndex::Hnsw(g.freeze_linked(&vector_set(config, kernels, vectors)));
        }
    }
    config.index.spec().build(&BuildInput {
        vectors,
        dim: config.dim,
        metric: config.metric,
        kernels,
        stop,
    })
}
