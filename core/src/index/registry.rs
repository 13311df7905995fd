//! The index kinds and static dispatch over them: one enum per stage (parameters, built
//! index, validated parts, view), each generated from the list in `kinds!` below, so that a
//! call is one `match` and the search body stays generic over the row filter.
//!
//! Adding an index kind: implement [`VectorIndex`] in the kind's own file, add one line to
//! the `kinds!` invocation, and give it a public `IndexConfig` variant (`types.rs`) and its
//! knobs in the Python knob table.

use super::hnsw::graph::GraphView;
use super::hnsw::kind::Hnsw;
use super::ivfpq::kind::IvfPq;
use super::lsh::kind::Lsh;
use super::{
    BuildInput, GivenKnobs, Knobs, Query, SectionError, Sections, SegmentRows, VectorIndex,
};

/// Name of the index-less kind (exact scans).
pub(crate) const FLAT_NAME: &str = "flat";
/// Header code of the index-less kind.
pub(crate) const FLAT_CODE: u8 = 1;

/// What a segment reader needs to know of a kind before it can open its sections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KindInfo {
    pub legacy_base: u32,
    pub section_count: u16,
    pub checked_at_open: &'static [u16],
}

macro_rules! kinds {
    ($($variant:ident => $kind:ty),* $(,)?) => {
        /// An index kind's parameters (`Flat`: no index, exact scans).
        #[derive(Debug, Clone, PartialEq)]
        pub(crate) enum IndexSpec {
            Flat,
            $($variant(<$kind as VectorIndex>::Spec),)*
        }

        /// An index built for a segment about to be written.
        pub(crate) enum BuiltIndex {
            Flat,
            $($variant(<$kind as VectorIndex>::Built),)*
        }

        /// Where a validated index lies in a segment's bytes.
        #[derive(Debug, Clone)]
        pub(crate) enum IndexParts {
            Flat,
            $($variant(<$kind as VectorIndex>::Parts),)*
        }

        /// A segment's index, borrowed from its bytes.
        #[derive(Debug, Clone, Copy)]
        pub(crate) enum IndexView<'a> {
            Flat,
            $($variant(<$kind as VectorIndex>::View<'a>),)*
        }

        /// The kind stored under header code `code`, if this build knows it.
        pub(crate) fn kind_info(code: u8) -> Option<KindInfo> {
            match code {
                FLAT_CODE => Some(KindInfo {
                    legacy_base: 0,
                    section_count: 0,
                    checked_at_open: &[],
                }),
                $(<$kind>::CODE => Some(KindInfo {
                    legacy_base: <$kind>::LEGACY_BASE,
                    section_count: <$kind>::SECTION_COUNT,
                    checked_at_open: <$kind>::CHECKED_AT_OPEN,
                }),)*
                _ => None,
            }
        }

        impl IndexSpec {
            /// The kind's name.
            pub(crate) fn name(&self) -> &'static str {
                match self {
                    IndexSpec::Flat => FLAT_NAME,
                    $(IndexSpec::$variant(_) => <$kind>::NAME,)*
                }
            }

            /// Check the parameters for a collection of dimension `dim` (at create and open).
            pub(crate) fn validate(&self, dim: usize) -> Result<(), (&'static str, String)> {
                match self {
                    IndexSpec::Flat => Ok(()),
                    $(IndexSpec::$variant(s) => <$kind>::validate(s, dim),)*
                }
            }

            /// The search knobs this kind reads.
            pub(crate) fn knob_names(&self) -> &'static [&'static str] {
                match self {
                    IndexSpec::Flat => &[],
                    $(IndexSpec::$variant(_) => <$kind>::KNOBS,)*
                }
            }

            /// Fill this kind's knobs from the query's or the defaults.
            pub(crate) fn knobs(&self, given: &GivenKnobs, knobs: &mut Knobs) {
                match self {
                    IndexSpec::Flat => {}
                    $(IndexSpec::$variant(s) => <$kind>::knobs(s, given, knobs),)*
                }
            }

            /// Build the index over `input` (`Flat` when the kind declines: too few rows).
            pub(crate) fn build(&self, input: &BuildInput<'_>) -> BuiltIndex {
                match self {
                    IndexSpec::Flat => BuiltIndex::Flat,
                    $(IndexSpec::$variant(s) => {
                        <$kind>::build(s, input).map_or(BuiltIndex::Flat, BuiltIndex::$variant)
                    })*
                }
            }
        }

        impl BuiltIndex {
            /// Header code of the kind.
            pub(crate) fn code(&self) -> u8 {
                match self {
                    BuiltIndex::Flat => FLAT_CODE,
                    $(BuiltIndex::$variant(_) => <$kind>::CODE,)*
                }
            }

            /// The sections to write, by the kind's tags.
            pub(crate) fn sections(&self) -> Vec<(u16, &[u8])> {
                match self {
                    BuiltIndex::Flat => Vec::new(),
                    $(BuiltIndex::$variant(b) => <$kind>::sections(b),)*
                }
            }
        }

        impl IndexParts {
            /// Validate the sections of an index of header code `code` in a segment of
            /// `rows` x `dim`.
            pub(crate) fn open(
                code: u8,
                s: &Sections<'_>,
                rows: usize,
                dim: usize,
            ) -> Result<IndexParts, SectionError> {
                match code {
                    FLAT_CODE => Ok(IndexParts::Flat),
                    $(<$kind>::CODE => <$kind>::open(s, rows, dim).map(IndexParts::$variant),)*
                    other => Err(SectionError {
                        offset: 0,
                        reason: format!("unknown index kind {other}"),
                    }),
                }
            }

            /// A view over the bytes the parts were validated in.
            pub(crate) fn view<'a>(&'a self, bytes: &'a [u8]) -> IndexView<'a> {
                match self {
                    IndexParts::Flat => IndexView::Flat,
                    $(IndexParts::$variant(p) => IndexView::$variant(<$kind>::view(p, bytes)),)*
                }
            }
        }

        impl IndexView<'_> {
            /// Name for `stats()`.
            pub(crate) fn name(&self) -> &'static str {
                match self {
                    IndexView::Flat => FLAT_NAME,
                    $(IndexView::$variant(_) => <$kind>::NAME,)*
                }
            }

            /// Bytes of index structures in the file.
            pub(crate) fn bytes(&self) -> usize {
                match self {
                    IndexView::Flat => 0,
                    $(IndexView::$variant(v) => <$kind>::bytes(v),)*
                }
            }

            /// The parameters the index was built with, for `stats()`.
            pub(crate) fn detail(&self) -> String {
                match self {
                    IndexView::Flat => String::new(),
                    $(IndexView::$variant(v) => <$kind>::detail(v),)*
                }
            }

            /// Whether scanning `passing` of `rows` exactly beats a filtered index search.
            pub(crate) fn prefer_scan(&self, passing: usize, rows: usize, knobs: &Knobs) -> bool {
                match self {
                    IndexView::Flat => true,
                    $(IndexView::$variant(v) => <$kind>::prefer_scan(v, passing, rows, knobs),)*
                }
            }

            /// Search the index; every allowed row found goes to `push(row, distance)`. The
            /// index-less kind scores every allowed row.
            pub(crate) fn search<A: Fn(usize) -> bool, P: FnMut(u32, f32)>(
                &self,
                seg: &SegmentRows<'_>,
                q: &Query<'_>,
                allow: &A,
                mut push: P,
            ) {
                match self {
                    IndexView::Flat => {
                        for r in (0..seg.rows()).filter(|r| allow(*r)) {
                            push(r as u32, seg.distance(q.vector, r));
                        }
                    }
                    $(IndexView::$variant(v) => <$kind>::search(v, seg, q, allow, push),)*
                }
            }
        }
    };
}

kinds! {
    Hnsw => Hnsw,
    IvfPq => IvfPq,
    Lsh => Lsh,
}

impl<'a> IndexView<'a> {
    /// The graph of an HNSW segment (a merge copies it instead of rebuilding).
    pub(crate) fn as_graph(&self) -> Option<GraphView<'a>> {
        match self {
            IndexView::Hnsw(g) => Some(*g),
            _ => None,
        }
    }
}
