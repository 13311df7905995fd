//! The BM25 full-text index of one text field in one segment.
//!
//! - [`MemText`]: the in-memory form, grown row by row in the appendable segment, and the
//!   builder a sealed segment's sections are encoded from ([`MemText::encode`]).
//! - [`TextParts`] / [`TextView`]: the sealed form, validated at open and read straight
//!   from the map: a sorted term dictionary, per term a run of posting blocks of up to
//!   [`BLOCK`] rows (row deltas and term frequencies as LEB128 varints) with per-block
//!   metadata (last row, byte offset, the largest term frequency and the shortest document
//!   in the block, which bound the block's BM25 score for any collection statistics), and
//!   the exact token count of every row.
//! - [`search`]: top-k by BM25 over many segments with collection-wide statistics, pruned
//!   with MaxScore (lists whose summed upper bounds cannot beat the k-th score only confirm
//!   candidates, skipping whole blocks by their last row).
//!
//! Score of a document `d` for the query's distinct terms `t` (Lucene's BM25, as `bm25s`'s
//! `lucene` method):
//! `sum_t idf(t) * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))`,
//! `idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))`, where `N`, `df` and `avgdl` count
//! the live documents that hold the field, over every segment. Layout in FORMAT.md §3.4.

use std::collections::HashMap;
use std::ops::Range;

use super::topk::TopK;
use super::{SectionError, Sections};

/// Directory kind code of a BM25 text index.
pub(crate) const TEXT_KIND: u8 = 16;
/// Most rows per posting block.
pub(crate) const BLOCK: usize = 128;
/// Token count stored for a row without the field.
pub(crate) const ABSENT: u32 = u32::MAX;

const TAG_HEAD: u16 = 1;
const TAG_DOC_LENS: u16 = 2;
const TAG_TERM_OFFSETS: u16 = 3;
const TAG_TERM_BYTES: u16 = 4;
const TAG_TERMS: u16 = 5;
const TAG_BLOCKS: u16 = 6;
const TAG_POSTINGS: u16 = 7;
const TEXT_FORMAT: u32 = 1;

/// BM25 parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bm25 {
    pub k1: f32,
    pub b: f32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct TextHead {
    format: u32,
    reserved: u32,
    rows: u64,
    /// Rows holding the field.
    docs: u64,
    /// Tokens over those rows.
    tokens: u64,
    terms: u64,
    blocks: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct TermEntry {
    block_start: u64,
    block_count: u32,
    df: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BlockMeta {
    /// Byte offset of the block in the postings section.
    offset: u64,
    last_row: u32,
    count: u32,
    max_tf: u32,
    min_len: u32,
}

// ---------------------------------------------------------------------------------------
// In memory

/// The text index of one field over in-memory rows (appendable segment, or a segment being
/// written).
#[derive(Debug, Default, Clone)]
pub(crate) struct MemText {
    terms: HashMap<Box<str>, u32>,
    /// Per term: (row, tf), rows ascending.
    postings: Vec<Vec<(u32, u32)>>,
    /// Per term: the largest tf and the shortest document among its postings.
    bounds: Vec<(u32, u32)>,
    /// Per row: its token count, or [`ABSENT`].
    doc_len: Vec<u32>,
    docs: u64,
    tokens: u64,
}

impl MemText {
    /// Append the next row: `terms` is its analysed text (`None`: the row lacks the field).
    pub(crate) fn push(&mut self, terms: Option<&[String]>) {
        let row = self.doc_len.len() as u32;
        let Some(terms) = terms else {
            self.doc_len.push(ABSENT);
            return;
        };
        let len = terms.len().min(ABSENT as usize - 1) as u32;
        self.doc_len.push(len);
        self.docs += 1;
        self.tokens += u64::from(len);
        let mut tf: HashMap<&str, u32> = HashMap::with_capacity(terms.len());
        for t in terms {
            *tf.entry(t.as_str()).or_insert(0) += 1;
        }
        for (t, n) in tf {
            let id = self.term_id(t);
            self.postings[id].push((row, n));
            let b = &mut self.bounds[id];
            *b = (b.0.max(n), b.1.min(len));
        }
    }

    fn lookup(&self, term: &str) -> Option<usize> {
        self.terms.get(term).map(|i| *i as usize)
    }

    fn term_id(&mut self, t: &str) -> usize {
        if let Some(id) = self.terms.get(t) {
            return *id as usize;
        }
        let id = self.postings.len();
        self.terms.insert(t.into(), id as u32);
        self.postings.push(Vec::new());
        self.bounds.push((0, u32::MAX));
        id
    }

    /// Append the rows `keep` (ascending) of `src`, in that order, without analysing their
    /// text again: a seal keeps the appendable segment's live rows, a merge the inputs' live
    /// rows one input after another.
    pub(crate) fn extend_from(
        &mut self,
        src: &TextSource<'_>,
        keep: &[usize],
    ) -> Result<(), usize> {
        let base = self.doc_len.len() as u32;
        let lens = src.doc_lens();
        let mut new_of = vec![u32::MAX; lens.len()];
        for (i, &r) in keep.iter().enumerate() {
            new_of[r] = base + i as u32;
            let l = lens[r];
            self.doc_len.push(l);
            if l != ABSENT {
                self.docs += 1;
                self.tokens += u64::from(l);
            }
        }
        let add = |me: &mut MemText, term: &str, c: &mut Cursor<'_>| -> Result<(), usize> {
            let mut id = None;
            while c.doc != END {
                let row = new_of[c.doc as usize];
                if row != u32::MAX {
                    let t = *id.get_or_insert_with(|| me.term_id(term));
                    me.postings[t].push((row, c.tf));
                    let len = me.doc_len[row as usize];
                    let b = &mut me.bounds[t];
                    *b = (b.0.max(c.tf), b.1.min(len));
                }
                c.next()?;
            }
            Ok(())
        };
        match src {
            TextSource::Mem(m) => {
                for term in m.terms.keys() {
                    add(self, term, &mut src.cursor(term)?)?;
                }
            }
            TextSource::Sealed(v) => {
                for i in 0..v.terms.len() {
                    // Validated UTF-8 at open.
                    let term = std::str::from_utf8(v.term(i)).map_err(|_| 0usize)?;
                    add(self, term, &mut src.cursor(term)?)?;
                }
            }
        }
        Ok(())
    }

    /// The sections of the sealed form: (tag, bytes).
    pub(crate) fn encode(&self) -> Vec<(u16, Vec<u8>)> {
        let mut order: Vec<(&str, usize)> = self
            .terms
            .iter()
            .map(|(t, i)| (&**t, *i as usize))
            .collect();
        order.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut offsets: Vec<u32> = Vec::with_capacity(order.len() + 1);
        let mut bytes = Vec::new();
        let mut entries = Vec::with_capacity(order.len());
        let mut blocks: Vec<BlockMeta> = Vec::new();
        let mut post = Vec::new();
        for (term, id) in &order {
            offsets.push(bytes.len() as u32);
            bytes.extend_from_slice(term.as_bytes());
            let list = &self.postings[*id];
            let start = blocks.len() as u64;
            let mut prev: Option<u32> = None;
            for chunk in list.chunks(BLOCK) {
                let offset = post.len() as u64;
                let (mut max_tf, mut min_len) = (0, u32::MAX);
                for (row, tf) in chunk {
                    // Rows ascend strictly within a list: a delta is at least one past the
                    // previous row (the first from zero).
                    let delta = match prev {
                        Some(p) => row - p - 1,
                        None => *row,
                    };
                    put_varint(&mut post, delta);
                    prev = Some(*row);
                    max_tf = max_tf.max(*tf);
                    min_len = min_len.min(self.doc_len[*row as usize]);
                }
                for (_, tf) in chunk {
                    put_varint(&mut post, tf - 1);
                }
                blocks.push(BlockMeta {
                    offset,
                    last_row: chunk.last().map_or(0, |e| e.0),
                    count: chunk.len() as u32,
                    max_tf,
                    min_len,
                });
            }
            entries.push(TermEntry {
                block_start: start,
                block_count: (blocks.len() as u64 - start) as u32,
                df: list.len() as u32,
            });
        }
        offsets.push(bytes.len() as u32);
        let head = TextHead {
            format: TEXT_FORMAT,
            reserved: 0,
            rows: self.doc_len.len() as u64,
            docs: self.docs,
            tokens: self.tokens,
            terms: entries.len() as u64,
            blocks: blocks.len() as u64,
        };
        vec![
            (TAG_HEAD, bytemuck::bytes_of(&head).to_vec()),
            (TAG_DOC_LENS, bytemuck::cast_slice(&self.doc_len).to_vec()),
            (TAG_TERM_OFFSETS, bytemuck::cast_slice(&offsets).to_vec()),
            (TAG_TERM_BYTES, bytes),
            (TAG_TERMS, bytemuck::cast_slice(&entries).to_vec()),
            (TAG_BLOCKS, bytemuck::cast_slice(&blocks).to_vec()),
            (TAG_POSTINGS, post),
        ]
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Read a varint at `*at`; `None` if it runs past the end or overflows 32 bits.
#[inline]
fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u32> {
    let mut v: u32 = 0;
    for shift in (0..35).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        let part = u32::from(b & 0x7f);
        if shift == 28 && part > 0x0f {
            return None;
        }
        v |= part << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Sealed

/// Where the sections of a sealed text index lie in the segment's map, validated at open.
#[derive(Debug, Clone)]
pub(crate) struct TextParts {
    doc_lens: Range<usize>,
    term_offsets: Range<usize>,
    term_bytes: Range<usize>,
    terms: Range<usize>,
    blocks: Range<usize>,
    postings: Range<usize>,
    docs: u64,
    tokens: u64,
}

fn err(offset: usize, reason: impl Into<String>) -> SectionError {
    SectionError {
        offset,
        reason: reason.into(),
    }
}

impl TextParts {
    /// Validate the sections (their checksums were verified by the caller): sizes agree
    /// with the head, the dictionary is sorted UTF-8 inside its bytes, every term's blocks
    /// are in range and ascend, every block lies inside the postings and counts at most
    /// [`BLOCK`] rows that sum to the term's document frequency, the head's totals equal
    /// the document lengths. Posting bytes are decoded (and checked) when read.
    pub(crate) fn open(s: &Sections<'_>, rows: usize) -> Result<TextParts, SectionError> {
        let map = s.bytes;
        let head_r = s.get(TAG_HEAD, std::mem::size_of::<TextHead>(), Some(1))?;
        let head: TextHead = bytemuck::pod_read_unaligned(&map[head_r.clone()]);
        if head.format != TEXT_FORMAT || head.reserved != 0 {
            return Err(err(
                head_r.start,
                format!("text index format {} unknown", head.format),
            ));
        }
        if head.rows != rows as u64 {
            return Err(err(
                head_r.start + 8,
                format!("text index of {} rows in a segment of {rows}", head.rows),
            ));
        }
        let terms =
            usize::try_from(head.terms).map_err(|_| err(head_r.start + 32, "term count"))?;
        let nblocks =
            usize::try_from(head.blocks).map_err(|_| err(head_r.start + 40, "block count"))?;
        let doc_lens = s.get(TAG_DOC_LENS, 4, Some(rows))?;
        let term_offsets = s.get(TAG_TERM_OFFSETS, 4, terms.checked_add(1))?;
        let term_bytes = s.get(TAG_TERM_BYTES, 1, None)?;
        let terms_r = s.get(TAG_TERMS, std::mem::size_of::<TermEntry>(), Some(terms))?;
        let blocks_r = s.get(TAG_BLOCKS, std::mem::size_of::<BlockMeta>(), Some(nblocks))?;
        let postings = s.get(TAG_POSTINGS, 1, None)?;
        let lens: &[u32] = bytemuck::cast_slice(&map[doc_lens.clone()]);
        let (mut docs, mut tokens) = (0u64, 0u64);
        for l in lens {
            if *l != ABSENT {
                docs += 1;
                tokens += u64::from(*l);
            }
        }
        if docs != head.docs || tokens != head.tokens {
            return Err(err(
                head_r.start + 16,
                "document and token totals disagree with the document lengths",
            ));
        }
        let offs: &[u32] = bytemuck::cast_slice(&map[term_offsets.clone()]);
        let bytes = &map[term_bytes.clone()];
        if offs.first().is_some_and(|o| *o != 0)
            || offs.last().map(|o| *o as usize) != Some(bytes.len())
        {
            return Err(err(
                term_offsets.start,
                "term offsets do not span the term bytes",
            ));
        }
        let mut prev: Option<&[u8]> = None;
        for i in 0..terms {
            let (a, b) = (offs[i] as usize, offs[i + 1] as usize);
            if a >= b || b > bytes.len() {
                return Err(err(term_offsets.start + 4 * i, "term offsets out of order"));
            }
            let t = &bytes[a..b];
            if std::str::from_utf8(t).is_err() || prev.is_some_and(|p| p >= t) {
                return Err(err(
                    term_bytes.start + a,
                    format!("term {i} is not valid UTF-8 in ascending order"),
                ));
            }
            prev = Some(t);
        }
        let entries: &[TermEntry] = bytemuck::cast_slice(&map[terms_r.clone()]);
        let blocks: &[BlockMeta] = bytemuck::cast_slice(&map[blocks_r.clone()]);
        let mut next_block = 0u64;
        let mut last_offset = 0u64;
        for (i, e) in entries.iter().enumerate() {
            let at = terms_r.start + i * std::mem::size_of::<TermEntry>();
            if e.block_start != next_block || e.block_count == 0 {
                return Err(err(at, format!("term {i} has a bad block range")));
            }
            let end = e.block_start + u64::from(e.block_count);
            if end > nblocks as u64 {
                return Err(err(at, format!("term {i} has blocks past the end")));
            }
            let mut count = 0u64;
            let mut last: Option<u32> = None;
            for (j, b) in blocks[e.block_start as usize..end as usize]
                .iter()
                .enumerate()
            {
                let bat = blocks_r.start
                    + (e.block_start as usize + j) * std::mem::size_of::<BlockMeta>();
                let ok = b.count >= 1
                    && b.count as usize <= BLOCK
                    && (b.last_row as usize) < rows
                    && last.is_none_or(|l| b.last_row > l)
                    && b.offset >= last_offset
                    && b.offset <= postings.len() as u64
                    && b.max_tf >= 1;
                if !ok {
                    return Err(err(bat, format!("block {j} of term {i} is inconsistent")));
                }
                last = Some(b.last_row);
                last_offset = b.offset;
                count += u64::from(b.count);
            }
            if count != u64::from(e.df) {
                return Err(err(
                    at,
                    format!("term {i}: blocks hold {count} rows, df is {}", e.df),
                ));
            }
            next_block = end;
        }
        if next_block != nblocks as u64 {
            return Err(err(blocks_r.start, "blocks not owned by any term"));
        }
        Ok(TextParts {
            doc_lens,
            term_offsets,
            term_bytes,
            terms: terms_r,
            blocks: blocks_r,
            postings,
            docs,
            tokens,
        })
    }

    pub(crate) fn view<'a>(&self, map: &'a [u8]) -> TextView<'a> {
        TextView {
            doc_lens: bytemuck::cast_slice(&map[self.doc_lens.clone()]),
            term_offsets: bytemuck::cast_slice(&map[self.term_offsets.clone()]),
            term_bytes: &map[self.term_bytes.clone()],
            terms: bytemuck::cast_slice(&map[self.terms.clone()]),
            blocks: bytemuck::cast_slice(&map[self.blocks.clone()]),
            postings: &map[self.postings.clone()],
            postings_at: self.postings.start,
            docs: self.docs,
            tokens: self.tokens,
        }
    }

    /// Bytes of the sections.
    pub(crate) fn bytes(&self) -> usize {
        [
            &self.doc_lens,
            &self.term_offsets,
            &self.term_bytes,
            &self.terms,
            &self.blocks,
            &self.postings,
        ]
        .iter()
        .map(|r| r.len())
        .sum::<usize>()
            + std::mem::size_of::<TextHead>()
    }
}

/// A sealed text index, read from the map.
#[derive(Clone, Copy)]
pub(crate) struct TextView<'a> {
    doc_lens: &'a [u32],
    term_offsets: &'a [u32],
    term_bytes: &'a [u8],
    terms: &'a [TermEntry],
    blocks: &'a [BlockMeta],
    postings: &'a [u8],
    /// Where the postings section starts in the file (for error offsets).
    postings_at: usize,
    docs: u64,
    tokens: u64,
}

impl<'a> TextView<'a> {
    fn term(&self, i: usize) -> &'a [u8] {
        &self.term_bytes[self.term_offsets[i] as usize..self.term_offsets[i + 1] as usize]
    }

    fn lookup(&self, term: &str) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.terms.len());
        while lo < hi {
            let mid = usize::midpoint(lo, hi);
            match self.term(mid).cmp(term.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Decode every posting block (what `verify()` adds to the checksums): the offset of
    /// the first damaged block, if any.
    pub(crate) fn decode_all(&self) -> Result<(), usize> {
        let (mut docs, mut tfs) = ([0u32; BLOCK], [0u32; BLOCK]);
        for i in 0..self.terms.len() {
            let blocks = self.blocks_of(i);
            for bi in 0..blocks.len() {
                self.decode(blocks, bi, &mut docs, &mut tfs)?;
            }
        }
        Ok(())
    }

    fn blocks_of(&self, i: usize) -> &'a [BlockMeta] {
        let e = self.terms[i];
        &self.blocks[e.block_start as usize..e.block_start as usize + e.block_count as usize]
    }

    /// Decode block `bi` (of `blocks`, whose previous block ended at `base`) into `docs`
    /// and `tfs`.
    fn decode(
        &self,
        blocks: &[BlockMeta],
        bi: usize,
        docs: &mut [u32; BLOCK],
        tfs: &mut [u32; BLOCK],
    ) -> Result<usize, usize> {
        let b = blocks[bi];
        let start = b.offset as usize;
        let n = b.count as usize;
        let mut at = start;
        let bytes = self.postings;
        let mut prev: Option<u32> = if bi == 0 {
            None
        } else {
            Some(blocks[bi - 1].last_row)
        };
        let bad = |at: usize| self.postings_at + at;
        for d in docs.iter_mut().take(n) {
            let delta = get_varint(bytes, &mut at).ok_or(bad(at))?;
            let row = match prev {
                Some(p) => p.checked_add(1).and_then(|x| x.checked_add(delta)),
                None => Some(delta),
            }
            .ok_or(bad(at))?;
            *d = row;
            prev = Some(row);
        }
        for t in tfs.iter_mut().take(n) {
            let v = get_varint(bytes, &mut at).ok_or(bad(at))?;
            *t = v.checked_add(1).ok_or(bad(at))?;
        }
        if prev != Some(b.last_row) || docs[..n].iter().any(|d| *d as usize >= self.doc_lens.len())
        {
            return Err(bad(start));
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------
// Searching

/// One segment's text index for one field, whatever its state.
#[derive(Clone, Copy)]
pub(crate) enum TextSource<'a> {
    Mem(&'a MemText),
    Sealed(TextView<'a>),
}

impl<'a> TextSource<'a> {
    pub(crate) fn doc_lens(&self) -> &'a [u32] {
        match self {
            TextSource::Mem(m) => &m.doc_len,
            TextSource::Sealed(v) => v.doc_lens,
        }
    }

    /// Documents and tokens of the live rows (`dead`: the rows that are not).
    pub(crate) fn live_totals(&self, dead: impl Iterator<Item = usize>) -> (u64, u64) {
        let (mut docs, mut tokens) = match self {
            TextSource::Mem(m) => (m.docs, m.tokens),
            TextSource::Sealed(v) => (v.docs, v.tokens),
        };
        let lens = self.doc_lens();
        for r in dead {
            match lens.get(r) {
                Some(&l) if l != ABSENT => {
                    docs -= 1;
                    tokens -= u64::from(l);
                }
                _ => {}
            }
        }
        (docs, tokens)
    }

    /// Live documents holding `term`; `dead` tells a row that is not live (`None`: all
    /// are).
    pub(crate) fn live_df(
        &self,
        term: &str,
        dead: Option<&dyn Fn(usize) -> bool>,
    ) -> Result<u64, usize> {
        match (self, dead) {
            (TextSource::Mem(m), None) => {
                Ok(m.lookup(term).map_or(0, |i| m.postings[i].len() as u64))
            }
            (TextSource::Sealed(v), None) => {
                Ok(v.lookup(term).map_or(0, |i| u64::from(v.terms[i].df)))
            }
            (_, Some(dead)) => {
                let mut c = self.cursor(term)?;
                let mut n = 0;
                while c.doc != END {
                    n += u64::from(!dead(c.doc as usize));
                    c.next()?;
                }
                Ok(n)
            }
        }
    }

    /// A cursor over the postings of `term`, on its first row (exhausted if absent).
    pub(crate) fn cursor(&self, term: &str) -> Result<Cursor<'a>, usize> {
        let mut c = Cursor {
            src: CursorSrc::Empty,
            doc: END,
            tf: 0,
            i: 0,
            n: 0,
            docs: [0; BLOCK],
            tfs: [0; BLOCK],
        };
        match *self {
            TextSource::Mem(m) => {
                if let Some(i) = m.lookup(term) {
                    c.src = CursorSrc::Mem(&m.postings[i]);
                    c.n = m.postings[i].len();
                    c.load_mem();
                }
            }
            TextSource::Sealed(v) => {
                if let Some(i) = v.lookup(term) {
                    c.src = CursorSrc::Blocks {
                        view: v,
                        blocks: v.blocks_of(i),
                        bi: 0,
                    };
                    c.load_block(0)?;
                }
            }
        }
        Ok(c)
    }

    /// Per block of `term`'s postings (one block for an in-memory list): the largest tf
    /// and the shortest document, which bound the BM25 score of every posting in it.
    fn bounds(&self, term: &str) -> Vec<(u32, u32)> {
        match self {
            TextSource::Mem(m) => m.lookup(term).map(|i| m.bounds[i]).into_iter().collect(),
            TextSource::Sealed(v) => v
                .lookup(term)
                .map(|i| {
                    v.blocks_of(i)
                        .iter()
                        .map(|b| (b.max_tf, b.min_len))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

const END: u32 = u32::MAX;

enum CursorSrc<'a> {
    Empty,
    Mem(&'a [(u32, u32)]),
    Blocks {
        view: TextView<'a>,
        blocks: &'a [BlockMeta],
        bi: usize,
    },
}

/// A position in a posting list: the current row (`END` when exhausted) and its tf.
pub(crate) struct Cursor<'a> {
    src: CursorSrc<'a>,
    pub doc: u32,
    pub tf: u32,
    /// Index within the in-memory list or the decoded block.
    i: usize,
    /// Entries in the in-memory list or the decoded block.
    n: usize,
    docs: [u32; BLOCK],
    tfs: [u32; BLOCK],
}

impl Cursor<'_> {
    fn load_mem(&mut self) {
        if let CursorSrc::Mem(list) = self.src {
            match list.get(self.i) {
                Some(&(r, tf)) => {
                    self.doc = r;
                    self.tf = tf;
                }
                None => self.doc = END,
            }
        }
    }

    /// Decode block `bi` and stand on its first row.
    fn load_block(&mut self, bi: usize) -> Result<(), usize> {
        let CursorSrc::Blocks { view, blocks, .. } = self.src else {
            return Ok(());
        };
        if bi >= blocks.len() {
            self.doc = END;
            return Ok(());
        }
        self.n = view.decode(blocks, bi, &mut self.docs, &mut self.tfs)?;
        if let CursorSrc::Blocks { bi: b, .. } = &mut self.src {
            *b = bi;
        }
        self.i = 0;
        self.doc = self.docs[0];
        self.tf = self.tfs[0];
        Ok(())
    }

    /// Move to the next posting.
    pub(crate) fn next(&mut self) -> Result<(), usize> {
        match self.src {
            CursorSrc::Empty => Ok(()),
            CursorSrc::Mem(_) => {
                self.i += 1;
                self.load_mem();
                Ok(())
            }
            CursorSrc::Blocks { bi, .. } => {
                self.i += 1;
                if self.i < self.n {
                    self.doc = self.docs[self.i];
                    self.tf = self.tfs[self.i];
                    Ok(())
                } else {
                    self.load_block(bi + 1)
                }
            }
        }
    }

    /// Move to the first posting at or after `target`, skipping whole blocks whose last
    /// row is before it.
    pub(crate) fn advance(&mut self, target: u32) -> Result<(), usize> {
        if self.doc >= target {
            return Ok(());
        }
        match self.src {
            CursorSrc::Empty => Ok(()),
            CursorSrc::Mem(list) => {
                // Gallop from the current position.
                let rest = &list[self.i..];
                let mut step = 1;
                while step < rest.len() && rest[step].0 < target {
                    step *= 2;
                }
                let hi = step.min(rest.len());
                let lo = step / 2;
                let off = rest[lo..hi].partition_point(|e| e.0 < target);
                self.i += lo + off;
                self.load_mem();
                Ok(())
            }
            CursorSrc::Blocks { blocks, bi, .. } => {
                if blocks[bi].last_row < target {
                    let skip = blocks[bi + 1..].partition_point(|b| b.last_row < target);
                    self.load_block(bi + 1 + skip)?;
                    if self.doc == END {
                        return Ok(());
                    }
                }
                let off = self.docs[self.i..self.n].partition_point(|d| *d < target);
                self.i += off;
                // The block's last row is at or past `target`, so `i < n`.
                self.doc = self.docs[self.i];
                self.tf = self.tfs[self.i];
                Ok(())
            }
        }
    }
}

impl TextSource<'_> {
    /// Rows (live or not) whose text holds every one of `terms`, ascending (none when
    /// `terms` is empty): a leapfrog intersection of the posting lists.
    pub(crate) fn rows_with_all(&self, terms: &[String]) -> Result<Vec<u32>, usize> {
        let mut out = Vec::new();
        if terms.is_empty() {
            return Ok(out);
        }
        let mut cs = terms
            .iter()
            .map(|t| self.cursor(t))
            .collect::<Result<Vec<_>, _>>()?;
        loop {
            let mut target = cs[0].doc;
            if target == END {
                return Ok(out);
            }
            let mut agreed = true;
            for c in &mut cs {
                c.advance(target)?;
                if c.doc == END {
                    return Ok(out);
                }
                if c.doc > target {
                    target = c.doc;
                    agreed = false;
                    break;
                }
            }
            if agreed {
                out.push(target);
                cs[0].next()?;
            } else {
                cs[0].advance(target)?;
            }
        }
    }
}

/// One query term as scored: its field (index into the sources of a segment), the term,
/// its idf, and the field's average document length.
#[derive(Debug, Clone)]
pub(crate) struct QueryTerm {
    pub field: usize,
    pub term: String,
    pub idf: f32,
    pub avgdl: f32,
}

/// `ln(1 + (N - df + 0.5) / (df + 0.5))`.
pub(crate) fn idf(docs: u64, df: u64) -> f32 {
    let (n, df) = (docs as f64, df as f64);
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln() as f32
}

/// The BM25 weight of one term in one document.
#[inline]
pub(crate) fn weight(p: Bm25, idf: f32, avgdl: f32, tf: u32, len: u32) -> f32 {
    let tf = tf as f32;
    let norm = p.k1 * (1.0 - p.b + p.b * len as f32 / avgdl);
    idf * tf / (tf + norm)
}

/// Add the top `top.k` documents of one segment to `top` (as `(-score, id)`, so the shared
/// top-k keeps the highest scores). `sources[f]` is the segment's index of field `f`,
/// `allowed(row)` says whether a row may be returned (live and passing the filter).
/// Errors are the byte offset of damaged postings within the segment file.
pub(crate) fn search(
    p: Bm25,
    terms: &[QueryTerm],
    sources: &[TextSource<'_>],
    allowed: &dyn Fn(usize) -> bool,
    id_of: &dyn Fn(usize) -> u64,
    top: &mut TopK,
) -> Result<(), usize> {
    struct Live<'c> {
        /// Index into `terms` (scores are summed in query-term order, so a document's score
        /// does not depend on the order lists are visited).
        q: usize,
        c: Cursor<'c>,
        ub: f32,
        lens: &'c [u32],
    }
    let mut lists: Vec<Live<'_>> = Vec::new();
    for (q, t) in terms.iter().enumerate() {
        let Some(src) = sources.get(t.field) else {
            continue;
        };
        let c = src.cursor(&t.term)?;
        if c.doc == END {
            continue;
        }
        let ub = src
            .bounds(&t.term)
            .iter()
            .map(|(tf, len)| weight(p, t.idf, t.avgdl, *tf, *len))
            .fold(0.0f32, f32::max);
        // Rounding: a bound a hair above every real weight keeps pruning safe.
        lists.push(Live {
            q,
            c,
            ub: ub * (1.0 + 1e-5) + 1e-7,
            lens: src.doc_lens(),
        });
    }
    if lists.is_empty() {
        return Ok(());
    }
    lists.sort_by(|a, b| a.ub.total_cmp(&b.ub));
    // prefix[i]: the sum of the bounds of lists 0..=i.
    let mut prefix = Vec::with_capacity(lists.len());
    let mut acc = 0.0f32;
    for l in &lists {
        acc += l.ub;
        prefix.push(acc);
    }
    let mut contrib = vec![0.0f32; terms.len()];
    // The weight of the posting `l` stands on, which is in document `doc`.
    let weight_at = |l: &Live<'_>, doc: u32| {
        weight(
            p,
            terms[l.q].idf,
            terms[l.q].avgdl,
            l.c.tf,
            l.lens[doc as usize],
        )
    };
    let theta = |top: &TopK| -top.threshold();
    // Lists 0..first_essential cannot make a document enter alone.
    let mut first_essential = 0;
    let update_essential = |fe: &mut usize, th: f32| {
        while *fe < prefix.len() && prefix[*fe] < th {
            *fe += 1;
        }
    };
    update_essential(&mut first_essential, theta(top));
    while first_essential < lists.len() {
        let doc = lists[first_essential..]
            .iter()
            .map(|l| l.c.doc)
            .min()
            .unwrap_or(END);
        if doc == END {
            break;
        }
        if !allowed(doc as usize) {
            for l in &mut lists[first_essential..] {
                if l.c.doc == doc {
                    l.c.next()?;
                }
            }
            continue;
        }
        contrib.fill(0.0);
        let mut score = 0.0f32;
        for l in &mut lists[first_essential..] {
            if l.c.doc == doc {
                let w = weight_at(l, doc);
                contrib[l.q] = w;
                score += w;
                l.c.next()?;
            }
        }
        let th = theta(top);
        let mut pruned = false;
        for i in (0..first_essential).rev() {
            if score + prefix[i] < th {
                pruned = true;
                break;
            }
            let l = &mut lists[i];
            l.c.advance(doc)?;
            if l.c.doc == doc {
                let w = weight_at(l, doc);
                contrib[l.q] = w;
                score += w;
            }
        }
        if pruned {
            continue;
        }
        // The exact score, summed in query-term order.
        let exact: f32 = contrib.iter().sum();
        top.push(-exact, id_of(doc as usize));
        update_essential(&mut first_essential, theta(top));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(docs: &[&str]) -> MemText {
        let mut m = MemText::default();
        for d in docs {
            if d.is_empty() {
                m.push(None);
            } else {
                let terms: Vec<String> = d.split(' ').map(str::to_owned).collect();
                m.push(Some(&terms));
            }
        }
        m
    }

    /// The sections laid out 64-byte aligned in one buffer, as a segment would.
    fn layout(m: &MemText) -> (Vec<u8>, Vec<(u16, Range<usize>)>) {
        let mut bytes = Vec::new();
        let mut entries = Vec::new();
        for (tag, b) in m.encode() {
            while bytes.len() % 64 != 0 {
                bytes.push(0);
            }
            entries.push((tag, bytes.len()..bytes.len() + b.len()));
            bytes.extend_from_slice(&b);
        }
        (bytes, entries)
    }

    fn sealed_of(m: &MemText) -> (Vec<u8>, TextParts) {
        let (bytes, entries) = layout(m);
        let s = Sections {
            bytes: &bytes,
            entries,
        };
        let parts = TextParts::open(&s, m.doc_len.len()).unwrap();
        (bytes, parts)
    }

    #[test]
    fn sealed_cursors_read_back_what_was_written_and_skip_blocks() {
        let docs: Vec<String> = (0..1000)
            .map(|i| {
                if i % 3 == 0 {
                    format!("a b{}", i % 7)
                } else {
                    "a a c".to_owned()
                }
            })
            .collect();
        let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
        let m = mem(&refs);
        let (bytes, parts) = sealed_of(&m);
        let v = TextSource::Sealed(parts.view(&bytes));
        let mm = TextSource::Mem(&m);
        for term in ["a", "c", "b0", "b6", "zz"] {
            let (mut x, mut y) = (v.cursor(term).unwrap(), mm.cursor(term).unwrap());
            while x.doc != END || y.doc != END {
                assert_eq!((x.doc, x.tf), (y.doc, y.tf), "{term}");
                x.next().unwrap();
                y.next().unwrap();
            }
            for target in [0u32, 5, 130, 131, 500, 999, 1000] {
                let (mut x, mut y) = (v.cursor(term).unwrap(), mm.cursor(term).unwrap());
                x.advance(target).unwrap();
                y.advance(target).unwrap();
                assert_eq!(x.doc, y.doc, "{term} advance {target}");
            }
        }
        assert_eq!(v.live_df("c", None).unwrap(), 666);
        let odd = |r: usize| r % 2 == 1;
        assert_eq!(
            v.live_df("c", Some(&odd)).unwrap(),
            mm.live_df("c", Some(&odd)).unwrap()
        );
        assert_eq!(
            v.live_totals(std::iter::empty()),
            mm.live_totals(std::iter::empty())
        );
        assert_eq!(
            v.live_totals((1..1000).step_by(2)),
            mm.live_totals((1..1000).step_by(2))
        );
    }

    #[test]
    fn damaged_sections_are_refused() {
        let m = mem(&["x y", "y z", "", "z z z"]);
        let (bytes, e) = layout(&m);
        // Flip each byte of the metadata sections: open refuses it or the index still
        // answers consistently (a change that keeps every invariant is not damage it can
        // see; the segment's checksums catch those).
        for (tag, r) in &e {
            if *tag == TAG_POSTINGS {
                continue;
            }
            for i in r.clone() {
                let mut b = bytes.clone();
                b[i] ^= 0x55;
                let s = Sections {
                    bytes: &b,
                    entries: e.clone(),
                };
                if let Ok(p) = TextParts::open(&s, 4) {
                    let v = TextSource::Sealed(p.view(&b));
                    for t in ["x", "y", "z"] {
                        if let Ok(mut c) = v.cursor(t) {
                            while c.doc != END {
                                assert!((c.doc as usize) < 4);
                                if c.next().is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        }
        let s = Sections {
            bytes: &bytes,
            entries: e,
        };
        assert!(TextParts::open(&s, 5).is_err(), "row count mismatch");
    }
}
