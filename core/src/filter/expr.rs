//! Filter expressions over payloads: the typed [`Filter`], its Mongo-style JSON form
//! (`{"lang": "en", "year": {"$gte": 2020}, "$or": [...]}`) and evaluation.
//!
//! Semantics (also in README "Filters"):
//! - `{"f": v}` is `{"f": {"$eq": v}}`; several keys in one object are ANDed.
//! - Numbers compare numerically whether stored as int or float; strings compare by bytes;
//!   booleans support only `$eq`/`$ne`; comparing values of different kinds is false.
//! - A missing field: `$eq`, `$gt`, `$gte`, `$lt`, `$lte`, `$in` are false; `$ne` and `$nin`
//!   are true; `{"f": null}` matches a missing field or an explicit null.
//! - A list-of-strings field matches `$eq`/`$in` when any element matches, `$ne`/`$nin`
//!   when none does; ordering operators are false on lists.
//! - `$exists: true` matches a present field (null included).
//! - `{"f": {"$match": "clam chowder"}}` (text fields only) matches a document whose field
//!   contains every term of the text, analysed like the field (stop words dropped, stems
//!   compared); a text without terms matches nothing.

use std::cmp::Ordering;

use crate::error::{Error, Result};
use std::borrow::Cow;
use std::sync::Arc;

use super::key::KEY_FIELD;
use crate::filter::value::{Payload, Value};
use crate::text::{Analyzer, AnalyzerConfig};

/// A predicate over a point's payload.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Filter {
    /// Field equals value (for lists: contains it).
    Eq(String, Value),
    /// Negation of [`Filter::Eq`].
    Ne(String, Value),
    /// Field greater than value.
    Gt(String, Value),
    /// Field greater than or equal to value.
    Gte(String, Value),
    /// Field less than value.
    Lt(String, Value),
    /// Field less than or equal to value.
    Lte(String, Value),
    /// Field equals one of the values.
    In(String, Vec<Value>),
    /// Negation of [`Filter::In`].
    Nin(String, Vec<Value>),
    /// Field present (true) or absent (false).
    Exists(String, bool),
    /// All must hold (an empty list matches everything).
    And(Vec<Filter>),
    /// Any must hold (an empty list matches nothing).
    Or(Vec<Filter>),
    /// Negation.
    Not(Box<Filter>),
    /// A text field contains every term of the text (`$match`).
    Match(String, TextMatch),
    /// The point's id is one of these (`{"$id": ...}`): integers in a collection keyed by
    /// integers, strings in one keyed by strings.
    Id(IdMatch),
}

/// The operand of `$id`: a set of integer ids and a set of string ids (a collection accepts
/// only the kind it is keyed by).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IdMatch {
    ints: Vec<u64>,
    keys: Vec<String>,
}

impl IdMatch {
    /// Integer ids.
    pub fn ints(ids: impl IntoIterator<Item = u64>) -> Self {
        let mut ints: Vec<u64> = ids.into_iter().collect();
        ints.sort_unstable();
        ints.dedup();
        IdMatch {
            ints,
            keys: Vec::new(),
        }
    }

    /// String ids.
    pub fn keys<S: Into<String>>(keys: impl IntoIterator<Item = S>) -> Self {
        let mut keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        keys.sort_unstable();
        keys.dedup();
        IdMatch {
            ints: Vec::new(),
            keys,
        }
    }

    /// The integer ids, sorted.
    pub fn int_ids(&self) -> &[u64] {
        &self.ints
    }

    /// The string ids, sorted.
    pub fn str_ids(&self) -> &[String] {
        &self.keys
    }

    fn add(&mut self, path: &str, v: &serde_json::Value) -> Result<()> {
        match v {
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(i) => self.ints.push(i),
                None => return Err(bad(path, format!("{n} is not an id (ids are 0..2^64-1)"))),
            },
            serde_json::Value::String(s) => self.keys.push(s.clone()),
            _ => return Err(bad(path, "an id is a non-negative integer or a string")),
        }
        Ok(())
    }

    fn finish(mut self) -> Self {
        self.ints.sort_unstable();
        self.ints.dedup();
        self.keys.sort_unstable();
        self.keys.dedup();
        self
    }

    /// Whether the point with `id` (when known) and payload `p` is selected. A string id is
    /// compared with the key stored in the payload, an integer id with `id`.
    pub(crate) fn selects(&self, id: Option<u64>, p: &Payload) -> bool {
        if let Some(id) = id {
            if self.ints.binary_search(&id).is_ok() {
                return true;
            }
        }
        match p.get(KEY_FIELD) {
            Some(Value::Str(k)) => self.keys.binary_search(k).is_ok(),
            _ => false,
        }
    }

    fn parse(val: &serde_json::Value, path: &str) -> Result<Filter> {
        let mut one = IdMatch::default();
        let serde_json::Value::Object(ops) = val else {
            one.add(path, val)?;
            return Ok(Filter::Id(one.finish()));
        };
        if ops.is_empty() {
            return Err(bad(path, "empty operator object"));
        }
        let mut parts = Vec::with_capacity(ops.len());
        for (op, arg) in ops {
            let here = format!("{path}.{op}");
            let mut m = IdMatch::default();
            match op.as_str() {
                "$eq" | "$ne" => m.add(&here, arg)?,
                "$in" | "$nin" => {
                    let serde_json::Value::Array(items) = arg else {
                        return Err(bad(&here, "expected a list of ids"));
                    };
                    for (i, it) in items.iter().enumerate() {
                        m.add(&format!("{here}[{i}]"), it)?;
                    }
                }
                other => {
                    return Err(bad(
                        &here,
                        format!("`$id` takes $eq, $ne, $in or $nin, not `{other}`"),
                    ))
                }
            }
            let f = Filter::Id(m.finish());
            parts.push(if op == "$ne" || op == "$nin" {
                Filter::Not(Box::new(f))
            } else {
                f
            });
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }
}

/// The operand of `$match`: the text, and once a collection has bound it to its analyzer,
/// the distinct terms of the text.
#[derive(Clone)]
pub struct TextMatch {
    /// The text as given.
    pub text: String,
    terms: Vec<String>,
    analyzer: Option<Arc<Analyzer>>,
}

impl TextMatch {
    /// An unbound operand (a collection binds it to its analyzer before use).
    pub fn new(text: impl Into<String>) -> Self {
        TextMatch {
            text: text.into(),
            terms: Vec::new(),
            analyzer: None,
        }
    }

    /// Bind to `analyzer`: the text's distinct terms are computed once.
    pub(crate) fn bind(&self, analyzer: Arc<Analyzer>) -> TextMatch {
        let mut seen = std::collections::HashSet::new();
        let terms = analyzer
            .terms(&self.text)
            .into_iter()
            .filter(|t| seen.insert(t.clone()))
            .collect();
        TextMatch {
            text: self.text.clone(),
            terms,
            analyzer: Some(analyzer),
        }
    }

    /// The distinct terms (empty until bound).
    pub(crate) fn terms(&self) -> &[String] {
        &self.terms
    }

    fn matches(&self, stored: Option<&Value>) -> bool {
        let Some(Value::Str(doc)) = stored else {
            return false;
        };
        // Unbound (a caller evaluating a parsed filter by hand): the default analyzer.
        let bound = match &self.analyzer {
            Some(_) => Cow::Borrowed(self),
            None => Cow::Owned(self.bind(Arc::new(Analyzer::new(&AnalyzerConfig::default())))),
        };
        let Some(analyzer) = bound.analyzer.as_deref() else {
            return false;
        };
        let terms = &bound.terms;
        if terms.is_empty() {
            return false;
        }
        let mut have = std::collections::HashSet::new();
        analyzer.analyze(doc, |t| {
            have.insert(t.to_owned());
        });
        terms.iter().all(|t| have.contains(t))
    }
}

impl PartialEq for TextMatch {
    fn eq(&self, o: &Self) -> bool {
        self.text == o.text && self.terms == o.terms
    }
}

impl std::fmt::Debug for TextMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The analyzer is left out: its terms say what it did (and this is the filter
        // cache's key).
        f.debug_struct("TextMatch")
            .field("text", &self.text)
            .field("terms", &self.terms)
            .finish_non_exhaustive()
    }
}

/// Deepest nesting accepted when parsing (guards the recursion).
pub const MAX_FILTER_DEPTH: usize = 64;

fn bad(path: &str, reason: impl std::fmt::Display) -> Error {
    Error::invalid("filter", format!("at `{path}`: {reason}"))
}

fn scalar(path: &str, v: &serde_json::Value) -> Result<Value> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| bad(path, "number out of range"))?,
            ),
        },
        J::String(s) => Value::Str(s.clone()),
        J::Array(_) | J::Object(_) => {
            return Err(bad(path, "expected a string, number, bool or null"))
        }
    })
}

fn list(path: &str, v: &serde_json::Value) -> Result<Vec<Value>> {
    match v {
        serde_json::Value::Array(items) => items.iter().map(|i| scalar(path, i)).collect(),
        _ => Err(bad(path, "expected a list of values")),
    }
}

impl Filter {
    /// Parse the JSON form. Errors name the offending path and operator.
    pub fn from_json(v: &serde_json::Value) -> Result<Filter> {
        Self::parse(v, "$", 0)
    }

    /// Parse the JSON form from text.
    ///
    /// ```
    /// use trovedb::Filter;
    /// let f = Filter::from_json_str(
    ///     r#"{"$or": [{"lang": "en"}, {"tags": {"$in": ["docs", "faq"]}}], "year": {"$gte": 2020}}"#,
    /// )?;
    /// # let _ = f;
    /// // A mistake is an error that says where.
    /// let e = Filter::from_json_str(r#"{"year": {"$greater": 3}}"#).unwrap_err();
    /// assert!(e.to_string().contains("$greater"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_json_str(s: &str) -> Result<Filter> {
        let v: serde_json::Value = serde_json::from_str(s)
            .map_err(|e| Error::invalid("filter", format!("not JSON: {e}")))?;
        Self::from_json(&v)
    }

    fn parse(v: &serde_json::Value, path: &str, depth: usize) -> Result<Filter> {
        if depth > MAX_FILTER_DEPTH {
            return Err(bad(path, format!("nested deeper than {MAX_FILTER_DEPTH}")));
        }
        let serde_json::Value::Object(map) = v else {
            return Err(bad(path, "a filter must be an object"));
        };
        let mut parts = Vec::with_capacity(map.len());
        for (key, val) in map {
            let here = format!("{path}.{key}");
            parts.push(match key.as_str() {
                "$and" | "$or" => {
                    let serde_json::Value::Array(items) = val else {
                        return Err(bad(&here, "expected a list of filters"));
                    };
                    let subs = items
                        .iter()
                        .enumerate()
                        .map(|(i, it)| Self::parse(it, &format!("{here}[{i}]"), depth + 1))
                        .collect::<Result<Vec<_>>>()?;
                    if key == "$and" {
                        Filter::And(subs)
                    } else {
                        Filter::Or(subs)
                    }
                }
                "$not" => Filter::Not(Box::new(Self::parse(val, &here, depth + 1)?)),
                "$id" => IdMatch::parse(val, &here)?,
                "" => return Err(bad(&here, "a field name cannot be empty")),
                k if k.starts_with('$') => {
                    return Err(bad(&here, format!("unknown operator `{k}`")))
                }
                field => Self::parse_field(field, val, &here)?,
            });
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }

    fn parse_field(field: &str, val: &serde_json::Value, path: &str) -> Result<Filter> {
        let f = || field.to_owned();
        let serde_json::Value::Object(ops) = val else {
            return Ok(Filter::Eq(f(), scalar(path, val)?));
        };
        if ops.is_empty() {
            return Err(bad(path, "empty operator object"));
        }
        let mut parts = Vec::with_capacity(ops.len());
        for (op, arg) in ops {
            let here = format!("{path}.{op}");
            parts.push(match op.as_str() {
                "$eq" => Filter::Eq(f(), scalar(&here, arg)?),
                "$ne" => Filter::Ne(f(), scalar(&here, arg)?),
                "$gt" => Filter::Gt(f(), scalar(&here, arg)?),
                "$gte" => Filter::Gte(f(), scalar(&here, arg)?),
                "$lt" => Filter::Lt(f(), scalar(&here, arg)?),
                "$lte" => Filter::Lte(f(), scalar(&here, arg)?),
                "$in" => Filter::In(f(), list(&here, arg)?),
                "$nin" => Filter::Nin(f(), list(&here, arg)?),
                "$exists" => match arg {
                    serde_json::Value::Bool(b) => Filter::Exists(f(), *b),
                    _ => return Err(bad(&here, "$exists takes true or false")),
                },
                "$not" => Filter::Not(Box::new(Self::parse_field(field, arg, &here)?)),
                "$match" => match arg {
                    serde_json::Value::String(s) => Filter::Match(f(), TextMatch::new(s.clone())),
                    _ => return Err(bad(&here, "$match takes a string")),
                },
                other if other.starts_with('$') => {
                    return Err(bad(&here, format!("unknown operator `{other}`")))
                }
                other => {
                    return Err(bad(
                        &here,
                        format!("`{other}` is not an operator; nested fields are not supported"),
                    ))
                }
            });
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }

    /// Does `p` satisfy the filter? An `$id` condition on integer ids needs the point's id:
    /// see [`Filter::matches_point`] (here it selects nothing).
    pub fn matches(&self, p: &Payload) -> bool {
        self.eval_point(None, p)
    }

    /// Does the point with `id` and payload `p` satisfy the filter?
    pub fn matches_point(&self, id: u64, p: &Payload) -> bool {
        self.eval_point(Some(id), p)
    }

    fn eval_point(&self, id: Option<u64>, p: &Payload) -> bool {
        match self {
            Filter::Eq(f, v) => eq(p.get(f), v),
            Filter::Ne(f, v) => !eq(p.get(f), v),
            Filter::Gt(f, v) => cmp_is(p.get(f), v, |o| o == Ordering::Greater),
            Filter::Gte(f, v) => cmp_is(p.get(f), v, |o| o != Ordering::Less),
            Filter::Lt(f, v) => cmp_is(p.get(f), v, |o| o == Ordering::Less),
            Filter::Lte(f, v) => cmp_is(p.get(f), v, |o| o != Ordering::Greater),
            Filter::In(f, vs) => vs.iter().any(|v| eq(p.get(f), v)),
            Filter::Nin(f, vs) => !vs.iter().any(|v| eq(p.get(f), v)),
            Filter::Exists(f, want) => p.contains_key(f) == *want,
            Filter::And(fs) => fs.iter().all(|x| x.eval_point(id, p)),
            Filter::Or(fs) => fs.iter().any(|x| x.eval_point(id, p)),
            Filter::Not(x) => !x.eval_point(id, p),
            Filter::Match(f, m) => m.matches(p.get(f)),
            Filter::Id(m) => m.selects(id, p),
        }
    }

    /// Every `$id` operand in the filter.
    pub(crate) fn id_matches<'a>(&'a self, out: &mut Vec<&'a IdMatch>) {
        match self {
            Filter::Id(m) => out.push(m),
            Filter::And(fs) | Filter::Or(fs) => fs.iter().for_each(|x| x.id_matches(out)),
            Filter::Not(x) => x.id_matches(out),
            _ => {}
        }
    }

    /// Whether a `$match` appears anywhere in the filter.
    pub(crate) fn has_match(&self) -> bool {
        match self {
            Filter::Match(..) => true,
            Filter::And(fs) | Filter::Or(fs) => fs.iter().any(Filter::has_match),
            Filter::Not(x) => x.has_match(),
            _ => false,
        }
    }

    /// The filter with every `$match` bound by `bind(field, operand)` (which may refuse
    /// the field).
    pub(crate) fn bind_matches(
        &self,
        bind: &dyn Fn(&str, &TextMatch) -> Result<TextMatch>,
    ) -> Result<Filter> {
        Ok(match self {
            Filter::Match(f, m) => Filter::Match(f.clone(), bind(f, m)?),
            Filter::And(fs) => Filter::And(
                fs.iter()
                    .map(|x| x.bind_matches(bind))
                    .collect::<Result<_>>()?,
            ),
            Filter::Or(fs) => Filter::Or(
                fs.iter()
                    .map(|x| x.bind_matches(bind))
                    .collect::<Result<_>>()?,
            ),
            Filter::Not(x) => Filter::Not(Box::new(x.bind_matches(bind)?)),
            other => other.clone(),
        })
    }
}

/// Equality of a stored value (or absence) with a filter operand.
pub(crate) fn eq(stored: Option<&Value>, want: &Value) -> bool {
    match (stored, want) {
        (None | Some(Value::Null), Value::Null) => true,
        (None, _) => false,
        (Some(Value::Tags(t)), Value::Str(s)) => t.iter().any(|x| x == s),
        (Some(s), w) => scalar_cmp(s, w) == Some(Ordering::Equal),
    }
}

fn cmp_is(stored: Option<&Value>, want: &Value, pred: impl Fn(Ordering) -> bool) -> bool {
    stored.and_then(|s| ordered_cmp(s, want)).is_some_and(pred)
}

/// Ordering for `$gt`-style operators: numbers with numbers, strings with strings.
fn ordered_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => scalar_cmp(a, b),
        _ => None,
    }
}

/// Comparison of two scalars of compatible kinds (None when incomparable).
pub(crate) fn scalar_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Int(x), Value::Float(y)) => cmp_int_float(*x, *y),
        (Value::Float(x), Value::Int(y)) => cmp_int_float(*y, *x).map(Ordering::reverse),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::Str(x), Value::Str(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    }
}

/// Exact comparison of an i64 with an f64 (no rounding of large integers).
fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // i64 range as f64 is [-2^63, 2^63).
    if f >= 9_223_372_036_854_775_808.0 {
        return Some(Ordering::Less);
    }
    if f < -9_223_372_036_854_775_808.0 {
        return Some(Ordering::Greater);
    }
    let t = f.trunc();
    let ti = t as i64;
    Some(i.cmp(&ti).then_with(|| {
        if f > t {
            Ordering::Less
        } else if f < t {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }))
}

#[cfg(test)]
#[allow(
    clippy::needless_pass_by_value,
    reason = "test helpers take json! temporaries"
)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: serde_json::Value) -> Payload {
        crate::filter::value::payload_from_json(&v).unwrap()
    }

    fn f(v: serde_json::Value) -> Filter {
        Filter::from_json(&v).unwrap()
    }

    #[test]
    fn semantics_of_each_operator() {
        let doc = p(
            json!({"lang": "en", "year": 2021, "score": 0.5, "ok": true, "tags": ["a", "b"], "n": null}),
        );
        let yes = |x| assert!(f(x).matches(&doc));
        let no = |x| assert!(!f(x).matches(&doc));
        yes(json!({"lang": "en"}));
        no(json!({"lang": "fr"}));
        yes(json!({"year": {"$gte": 2020, "$lt": 2022}}));
        yes(json!({"year": {"$gt": 2020.5}}));
        yes(json!({"year": 2021.0}));
        no(json!({"year": {"$gt": 2021}}));
        yes(json!({"score": {"$lte": 0.5}}));
        yes(json!({"tags": "a"}));
        yes(json!({"tags": {"$in": ["z", "b"]}}));
        no(json!({"tags": {"$nin": ["b"]}}));
        no(json!({"tags": {"$ne": "a"}}));
        no(json!({"tags": {"$gt": "a"}}));
        yes(json!({"missing": {"$ne": 3}}));
        yes(json!({"missing": {"$nin": [3]}}));
        no(json!({"missing": {"$gt": 3}}));
        yes(json!({"missing": null}));
        yes(json!({"n": null}));
        yes(json!({"n": {"$exists": true}}));
        yes(json!({"missing": {"$exists": false}}));
        no(json!({"lang": {"$gt": 3}}));
        no(json!({"ok": {"$gt": false}}));
        yes(json!({"ok": true}));
        yes(json!({"$or": [{"lang": "fr"}, {"year": 2021}]}));
        no(json!({"$and": [{"lang": "en"}, {"year": 1999}]}));
        yes(json!({"$not": {"lang": "fr"}}));
        yes(json!({"year": {"$not": {"$lt": 2000}}}));
        yes(json!({}));
        no(json!({"$or": []}));
        yes(json!({"lang": {"$gte": "e", "$lt": "f"}}));
    }

    #[test]
    fn int_float_comparison_is_exact() {
        assert_eq!(
            cmp_int_float(i64::MAX, 9.223_372_036_854_776e18),
            Some(Ordering::Less)
        );
        assert_eq!(cmp_int_float(3, 3.0), Some(Ordering::Equal));
        assert_eq!(cmp_int_float(3, 3.5), Some(Ordering::Less));
        assert_eq!(cmp_int_float(-3, -3.5), Some(Ordering::Greater));
        assert_eq!(
            cmp_int_float(1 << 60, (1u64 << 60) as f64),
            Some(Ordering::Equal)
        );
        assert_eq!(
            cmp_int_float((1 << 60) + 1, (1u64 << 60) as f64),
            Some(Ordering::Greater)
        );
    }

    #[test]
    fn malformed_filters_name_the_bad_part() {
        for (bad, part) in [
            (json!({"year": {"$foo": 1}}), "$foo"),
            (json!({"$nor": []}), "$nor"),
            (json!({"year": {"$in": 3}}), "$in"),
            (json!({"year": {"$exists": 1}}), "$exists"),
            (json!({"$or": {"a": 1}}), "$or"),
            (json!({"a": [1, 2]}), "$.a"),
            (json!({"a": {"b": 1}}), "nested"),
            (json!({"a": {}}), "empty"),
            (json!([1]), "object"),
            (json!({"a": {"$gt": {"x": 1}}}), "$gt"),
        ] {
            let e = Filter::from_json(&bad).unwrap_err().to_string();
            assert!(e.contains(part), "{bad}: {e}");
        }
        let mut deep = json!({"a": 1});
        for _ in 0..100 {
            deep = json!({"$not": deep});
        }
        assert!(Filter::from_json(&deep)
            .unwrap_err()
            .to_string()
            .contains("deeper"));
    }
}
