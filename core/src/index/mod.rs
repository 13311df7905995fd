//! Vector indexes. Each index receives vectors as slices (from a map or from memory),
//! never paths; it depends only on `distance` and `types`.

pub(crate) mod flat;
pub(crate) mod hnsw;
pub(crate) mod ivfpq;
pub(crate) mod kmeans;
pub(crate) mod lsh;
pub(crate) mod rng;
pub(crate) mod topk;
