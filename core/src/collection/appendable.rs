//! The appendable segment: the rows written since the last seal, in memory.

use std::collections::HashMap;

use crate::filter::bitset::Bitset;
use crate::filter::value::Payload;

#[derive(Debug)]
pub(crate) struct AppendableSegment {
    dim: usize,
    pub(crate) vectors: Vec<f32>,
    pub(crate) ids: Vec<u64>,
    pub(crate) payloads: Vec<Payload>,
    pub(crate) deleted: Bitset,
    by_id: HashMap<u64, usize>,
}

impl AppendableSegment {
    pub(crate) fn new(dim: usize) -> Self {
        AppendableSegment {
            dim,
            vectors: Vec::new(),
            ids: Vec::new(),
            payloads: Vec::new(),
            deleted: Bitset::new(0),
            by_id: HashMap::new(),
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.ids.len()
    }

    pub(crate) fn live_count(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn find(&self, id: u64) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    pub(crate) fn vector(&self, row: usize) -> &[f32] {
        &self.vectors[row * self.dim..(row + 1) * self.dim]
    }

    /// Append a row for `id`. The caller has removed any older live row of `id`.
    pub(crate) fn push(&mut self, id: u64, vector: &[f32], payload: Payload) {
        let row = self.ids.len();
        self.vectors.extend_from_slice(vector);
        self.ids.push(id);
        self.payloads.push(payload);
        self.deleted.grow(row + 1);
        self.by_id.insert(id, row);
    }

    /// Delete the live row of `id`, if any.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        match self.by_id.remove(&id) {
            Some(row) => {
                self.deleted.insert(row);
                true
            }
            None => false,
        }
    }

    /// Live rows in row order.
    pub(crate) fn live_rows(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.rows()).filter(|r| !self.deleted.get(*r))
    }
}
