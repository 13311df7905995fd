//! String ids (the `_str` forms of upsert, get, delete) and the data operations a
//! retrieval app reaches for: payload updates, paging with a cursor, search by a stored
//! point.

use std::collections::HashMap;

use super::collection::{Collection, Hit, Point};
use super::search::points_at;
use super::state::State;
use super::write::PointRef;
use crate::error::{Error, Result};
use crate::filter::expr::{Filter, IdMatch};
use crate::filter::key::{str_id, KEY_FIELD, MAX_STR_ID_BYTES};
use crate::filter::value::{validate_payload, Payload, Value};
use crate::storage::wal::record::{encode_upsert, KIND_UPSERT};
use crate::storage::wal::MAX_RECORD_BYTES;
use crate::types::{IdType, SearchParams};

/// How [`Collection::update_payload`] combines a patch with the stored payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadUpdate {
    /// The patch's fields are set (added or overwritten); the other stored fields stay.
    #[default]
    Merge,
    /// The payload becomes the patch.
    Replace,
}

/// A page of [`Collection::scroll`]: the points, and the cursor of the next page (`None`
/// when this page is the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Up to `limit` points in id order.
    pub points: Vec<Point>,
    /// Pass as `after` to get the next page; `None` once the collection (or the filter) is
    /// exhausted.
    pub next: Option<u64>,
}

/// Check a batch of string ids and return their 64-bit ids. Errors name the position.
fn ids_of_keys(keys: &[&str]) -> Result<Vec<u64>> {
    let mut seen: HashMap<u64, &str> = HashMap::with_capacity(keys.len());
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            if k.is_empty() {
                return Err(Error::invalid(
                    "ids",
                    format!("id at position {i} is an empty string"),
                ));
            }
            if k.len() > MAX_STR_ID_BYTES {
                return Err(Error::invalid(
                    "ids",
                    format!(
                        "id at position {i} is {} bytes; string ids are at most \
                         {MAX_STR_ID_BYTES} bytes",
                        k.len()
                    ),
                ));
            }
            let id = str_id(k);
            if let Some(prev) = seen.insert(id, k) {
                if prev != *k {
                    return Err(Error::IdCollision {
                        key: (*k).to_owned(),
                        stored: prev.to_owned(),
                    });
                }
            }
            Ok(id)
        })
        .collect()
}

impl Collection {
    /// Insert or replace points keyed by strings (a collection created with
    /// [`IdType::Str`]). Otherwise as [`Collection::upsert`]: `vectors` holds
    /// `keys.len() * dim` floats, `payloads` is empty or one per key, a repeated key keeps
    /// its last occurrence, and on any error nothing is written. Keys are 1 to
    /// [`MAX_STR_ID_BYTES`] bytes; a key whose 64-bit id equals that of a different stored
    /// key is refused with [`Error::IdCollision`].
    pub fn upsert_str<S: AsRef<str>>(
        &self,
        keys: &[S],
        vectors: &[f32],
        payloads: &[Payload],
    ) -> Result<()> {
        self.expect_id_type(IdType::Str, "upsert")?;
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        let ids = ids_of_keys(&keys)?;
        if !payloads.is_empty() && payloads.len() != keys.len() {
            return Err(Error::invalid(
                "payloads",
                format!("{} payloads for {} ids", payloads.len(), keys.len()),
            ));
        }
        payloads.iter().try_for_each(validate_payload)?;
        let keyed: Vec<Payload> = if keys.is_empty() {
            payloads.to_vec()
        } else {
            keys.iter()
                .enumerate()
                .map(|(i, k)| {
                    let mut p = payloads.get(i).cloned().unwrap_or_default();
                    p.insert(KEY_FIELD.to_owned(), Value::Str((*k).to_owned()));
                    p
                })
                .collect()
        };
        self.upsert_impl(&ids, vectors, &keyed, Some(&keys))
    }

    /// The point with this string id, if it exists.
    pub fn get_str(&self, key: &str) -> Result<Option<Point>> {
        self.expect_id_type(IdType::Str, "get")?;
        Ok(self
            .get(str_id(key))?
            .filter(|p| p.key.as_deref() == Some(key)))
    }

    /// Delete points by string id. Returns how many existed; unknown ids are ignored.
    pub fn delete_str<S: AsRef<str>>(&self, keys: &[S]) -> Result<usize> {
        self.expect_id_type(IdType::Str, "delete")?;
        self.check_open()?;
        let ws = self.writer("delete")?;
        let present = {
            let st = self.state.read();
            let mut out = Vec::with_capacity(keys.len());
            let mut seen = std::collections::HashSet::with_capacity(keys.len());
            for k in keys {
                let (k, id) = (k.as_ref(), str_id(k.as_ref()));
                if st.key_of(id)?.as_deref() == Some(k) && seen.insert(id) {
                    out.push(id);
                }
            }
            out
        };
        self.delete_locked(ws, &present)
    }

    /// Change the payloads of existing points, leaving their vectors as they are:
    /// `patches` holds one payload for every id, or a single one for all of them. With
    /// [`PayloadUpdate::Merge`] the patch's fields are set and the others kept; with
    /// [`PayloadUpdate::Replace`] the payload becomes the patch. Atomic and durable like an
    /// upsert (one log record); if any id does not exist ([`Error::PointNotFound`]) or a
    /// payload is refused, nothing changes. A repeated id takes its patches in order.
    ///
    /// ```
    /// # use trovedb::{CollectionConfig, Database, DbOptions, Metric, SearchParams};
    /// # let dir = tempfile::tempdir()?;
    /// # let db = Database::open(dir.path(), DbOptions::default())?;
    /// # let c = db.create_collection("c", &CollectionConfig::new(2, Metric::L2))?;
    /// use trovedb::{Payload, PayloadUpdate, Value};
    /// let tag = |v: &str| Payload::from([("status".to_string(), Value::Str(v.into()))]);
    /// c.upsert(&[1, 2], &[0.0, 0.0, 1.0, 1.0], &[tag("draft"), tag("draft")])?;
    /// c.update_payload(&[1, 2], &[tag("published")], PayloadUpdate::Merge)?;
    /// assert_eq!(c.get(2)?.unwrap().payload, tag("published"));
    /// // A missing id changes nothing.
    /// assert!(c.update_payload(&[1, 99], &[tag("x")], PayloadUpdate::Merge).is_err());
    /// assert_eq!(c.get(1)?.unwrap().payload, tag("published"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update_payload(
        &self,
        ids: &[u64],
        patches: &[Payload],
        mode: PayloadUpdate,
    ) -> Result<()> {
        self.check_open()?;
        let ws = self.writer("update_payload")?;
        let points: Vec<PointRef<'_>> = ids.iter().map(|id| PointRef::Int(*id)).collect();
        self.update_locked(ws, ids, &points, patches, mode)
    }

    /// [`Collection::update_payload`] by string id.
    pub fn update_payload_str<S: AsRef<str>>(
        &self,
        keys: &[S],
        patches: &[Payload],
        mode: PayloadUpdate,
    ) -> Result<()> {
        self.expect_id_type(IdType::Str, "update_payload")?;
        self.check_open()?;
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        let ids: Vec<u64> = keys.iter().map(|k| str_id(k)).collect();
        let points: Vec<PointRef<'_>> = keys.iter().map(|k| PointRef::Str(k)).collect();
        let ws = self.writer("update_payload")?;
        self.update_locked(ws, &ids, &points, patches, mode)
    }

    fn update_locked(
        &self,
        ws: parking_lot::MutexGuard<'_, super::collection::WriteState>,
        ids: &[u64],
        points: &[PointRef<'_>],
        patches: &[Payload],
        mode: PayloadUpdate,
    ) -> Result<()> {
        let n = ids.len();
        if n == 0 {
            return if patches.len() <= 1 {
                Ok(())
            } else {
                Err(Error::invalid("ids", "no ids given for a non-empty batch"))
            };
        }
        if patches.len() != 1 && patches.len() != n {
            return Err(Error::invalid(
                "payloads",
                format!(
                    "{} patches for {n} ids (give one per id, or one for all)",
                    patches.len()
                ),
            ));
        }
        patches.iter().try_for_each(validate_payload)?;
        let dim = self.config.dim;
        // The stored vectors and payloads, updated in order (a repeated id sees its
        // earlier patches). Read under the writer lock: nothing else writes meanwhile.
        let mut current: HashMap<u64, (Vec<f32>, Payload)> = HashMap::new();
        {
            let st: parking_lot::RwLockReadGuard<'_, State> = self.state.read();
            for (i, (id, point)) in ids.iter().zip(points).enumerate() {
                if !current.contains_key(id) {
                    let found = st.get(*id)?.filter(|(_, p)| match point {
                        PointRef::Str(k) => {
                            matches!(p.get(KEY_FIELD), Some(Value::Str(s)) if s == k)
                        }
                        PointRef::Int(_) => true,
                    });
                    let Some(found) = found else {
                        return Err(Error::PointNotFound {
                            id: point.to_string(),
                            position: i,
                        });
                    };
                    current.insert(*id, found);
                }
                let patch = &patches[if patches.len() == 1 { 0 } else { i }];
                let Some((_, stored)) = current.get_mut(id) else {
                    continue;
                };
                if mode == PayloadUpdate::Replace {
                    let key = stored.remove(KEY_FIELD);
                    stored.clear();
                    if let Some(key) = key {
                        stored.insert(KEY_FIELD.to_owned(), key);
                    }
                }
                for (f, v) in patch {
                    stored.insert(f.clone(), v.clone());
                }
            }
        }
        // One row per distinct id, in first-appearance order, carrying its final payload.
        let mut order: Vec<u64> = Vec::with_capacity(current.len());
        let mut refs: Vec<PointRef<'_>> = Vec::with_capacity(current.len());
        let mut seen = std::collections::HashSet::with_capacity(current.len());
        for (id, point) in ids.iter().zip(points) {
            if seen.insert(*id) {
                order.push(*id);
                refs.push(*point);
            }
        }
        let mut vectors = Vec::with_capacity(order.len() * dim);
        let mut payloads = Vec::with_capacity(order.len());
        for (id, point) in order.iter().zip(&refs) {
            let Some((v, p)) = current.remove(id) else {
                continue;
            };
            let mut user = p.clone();
            user.remove(KEY_FIELD);
            validate_payload(&user)?;
            if let Some(t) = &self.text {
                t.validate(*point, &p)?;
            }
            vectors.extend_from_slice(&v);
            payloads.push(p);
        }
        // The stored vectors go back as they are (already normalised for cosine).
        let mut body = Vec::new();
        encode_upsert(&mut body, dim, &order, &vectors, &payloads);
        if body.len() > MAX_RECORD_BYTES {
            return Err(Error::invalid(
                "batch",
                format!(
                    "update encodes to {} bytes; split it below {MAX_RECORD_BYTES}",
                    body.len()
                ),
            ));
        }
        self.log_and_apply_locked(ws, KIND_UPSERT, &body, |st| {
            st.upsert_rows(&order, &vectors, payloads.into_iter())
        })
    }

    /// One page of the live points matching `filter` (every point when `None`), in id
    /// order, starting after the id `after` (from the start when `None`): the cursor of
    /// the next page is the last id of this one. Paging is stable: a point that exists from
    /// the first page to the last is returned exactly once, whatever is written meanwhile;
    /// a point written or deleted during the scroll may or may not be seen. In a string-id
    /// collection the order is that of the 64-bit ids (arbitrary, but fixed).
    ///
    /// ```
    /// # use trovedb::{CollectionConfig, Database, DbOptions, Metric, SearchParams};
    /// # let dir = tempfile::tempdir()?;
    /// # let db = Database::open(dir.path(), DbOptions::default())?;
    /// # let c = db.create_collection("c", &CollectionConfig::new(2, Metric::L2))?;
    /// let ids: Vec<u64> = (0..250).collect();
    /// c.upsert(&ids, &vec![0.5; 500], &[])?;
    /// let (mut after, mut seen) = (None, 0);
    /// loop {
    ///     let page = c.scroll(None, after, 100)?;
    ///     seen += page.points.len();
    ///     match page.next {
    ///         Some(next) => after = Some(next),
    ///         None => break,
    ///     }
    /// }
    /// assert_eq!(seen, 250);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn scroll(
        &self,
        filter: Option<&Filter>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page> {
        self.check_read()?;
        if limit == 0 {
            return Err(Error::invalid("limit", "limit must be at least 1"));
        }
        let bound = match filter {
            Some(f) => Some(self.bind_filter(f)?),
            None => None,
        };
        let st = self.state.read();
        let points = points_at(&st, st.page(bound.as_deref(), after, limit)?)?;
        let next = if points.len() == limit {
            points.last().map(|p| p.id)
        } else {
            None
        };
        Ok(Page { points, next })
    }

    /// The `k` nearest points to the stored point `id` ("more like this"), the point itself
    /// left out; `params.filter` applies as usual. [`Error::PointNotFound`] if there is no
    /// such point.
    pub fn search_by_id(&self, id: u64, k: usize, params: &SearchParams) -> Result<Vec<Hit>> {
        let point = self.get(id)?.ok_or_else(|| Error::PointNotFound {
            id: id.to_string(),
            position: 0,
        })?;
        let me = match &point.key {
            Some(k) => IdMatch::keys([k.clone()]),
            None => IdMatch::ints([id]),
        };
        self.search_excluding(&point.vector, me, k, params)
    }

    /// [`Collection::search_by_id`] by string id.
    pub fn search_by_str_id(&self, key: &str, k: usize, params: &SearchParams) -> Result<Vec<Hit>> {
        let point = self.get_str(key)?.ok_or_else(|| Error::PointNotFound {
            id: format!("{key:?}"),
            position: 0,
        })?;
        self.search_excluding(&point.vector, IdMatch::keys([key]), k, params)
    }

    fn search_excluding(
        &self,
        vector: &[f32],
        me: IdMatch,
        k: usize,
        params: &SearchParams,
    ) -> Result<Vec<Hit>> {
        let not_me = Filter::Not(Box::new(Filter::Id(me)));
        let filter = match &params.filter {
            Some(f) => Filter::And(vec![f.clone(), not_me]),
            None => not_me,
        };
        let params = params.clone().with_filter(filter);
        self.search(vector, k, &params)
    }
}
