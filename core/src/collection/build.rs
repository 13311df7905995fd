//! Building a sealed segment: its index (through the index registry, or the appendable
//! segment's live graph) and its file.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::appendable::AppendableSegment;
use super::state::indexed_fields;
use crate::distance::Kernels;
use crate::error::{Error, Result};
use crate::filter::payload_index::PayloadIndex;
use crate::filter::value::Payload;
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
}

/// Build and write the sealed segment of a frozen appendable segment (background thread).
pub(super) fn build_sealed(
    dir: &Path,
    config: &CollectionConfig,
    kernels: &'static Kernels,
    a: &AppendableSegment,
    id: u64,
    stop: &AtomicBool,
) -> Result<SealBuild> {
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
    Ok(SealBuild { id, reader, index })
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
            return BuiltIndex::Hnsw(g.freeze());
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
