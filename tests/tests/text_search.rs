//! Keyword (BM25) and hybrid search: scores equal an f64 BM25 oracle over the same tokens
//! (collection-wide statistics over the live documents), whatever the segmentation (many
//! segments, compacted, reopened), with deletions, updates and filters; edge cases of the
//! text itself; damaged text indexes refused; fusion recomputed from the two branches.

use std::collections::{BTreeMap, HashMap, HashSet};

use trovedb::text::Analyzer;
use trovedb::{
    CollectionConfig, CompactionPolicy, Database, DbOptions, Error, Filter, Fusion, IndexConfig,
    Metric, Payload, SearchParams, TextConfig, Value,
};
use trovedb_tests::Rng;

const DIM: usize = 8;

/// A word list with a skewed (Zipf-like) draw, so some terms are common and some rare.
fn word(rng: &mut Rng) -> String {
    let r = rng.f32().powi(3);
    let i = (r * 400.0) as usize;
    let stems = [
        "river", "stone", "light", "code", "server", "garden", "quick", "night",
    ];
    format!("{}{}", stems[i % stems.len()], i / stems.len())
}

fn doc(rng: &mut Rng) -> Option<String> {
    if rng.below(20) == 0 {
        return None; // the field is missing
    }
    let n = rng.below(30) as usize;
    Some((0..n).map(|_| word(rng)).collect::<Vec<_>>().join(" "))
}

/// The live documents: id -> (text, group).
type Docs = BTreeMap<u64, (Option<String>, i64)>;

/// Exact BM25 (f64) of every live document for `query`, best first (ties by id).
fn oracle(a: &Analyzer, docs: &Docs, query: &str, pass: &dyn Fn(i64) -> bool) -> Vec<(u64, f64)> {
    let (k1, b) = (1.2f64, 0.75f64);
    let toks: BTreeMap<u64, Vec<String>> = docs
        .iter()
        .filter_map(|(id, (t, _))| t.as_ref().map(|t| (*id, a.terms(t))))
        .collect();
    let n = toks.len() as f64;
    let avgdl = toks.values().map(|t| t.len() as f64).sum::<f64>() / n;
    let mut seen = HashSet::new();
    let q: Vec<String> = a
        .terms(query)
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect();
    let df: HashMap<&str, f64> = q
        .iter()
        .map(|t| {
            (
                t.as_str(),
                toks.values().filter(|d| d.contains(t)).count() as f64,
            )
        })
        .collect();
    let mut out: Vec<(u64, f64)> = toks
        .iter()
        .filter(|(id, _)| pass(docs[id].1))
        .filter_map(|(id, d)| {
            let mut s = 0.0;
            let mut hit = false;
            for t in &q {
                let tf = d.iter().filter(|x| *x == t).count() as f64;
                if tf > 0.0 {
                    hit = true;
                    let idf = (1.0 + (n - df[t.as_str()] + 0.5) / (df[t.as_str()] + 0.5)).ln();
                    s += idf * tf / (tf + k1 * (1.0 - b + b * d.len() as f64 / avgdl));
                }
            }
            hit.then_some((*id, s))
        })
        .collect();
    out.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    out
}

/// `got` (hits with distance = -score) equals the oracle's top-k: same scores (f32 against
/// f64), same ids except where the oracle's scores tie within rounding.
fn assert_matches(got: &[trovedb::Hit], want: &[(u64, f64)], k: usize, what: &str) {
    let want = &want[..want.len().min(k)];
    assert_eq!(got.len(), want.len(), "{what}: result count");
    for (i, (h, (id, s))) in got.iter().zip(want).enumerate() {
        let score = -f64::from(h.distance);
        assert!(
            (score - s).abs() <= 1e-4 * s.abs().max(1.0),
            "{what}: rank {i}: score {score} vs oracle {s}"
        );
        if h.id != *id {
            // Only a tie (within rounding) may reorder.
            let other = want.iter().find(|w| w.0 == h.id).map(|w| w.1);
            assert!(
                other.is_some_and(|o| (o - s).abs() <= 1e-4 * s.abs().max(1.0)),
                "{what}: rank {i}: id {} where the oracle has {id} (score {s})",
                h.id
            );
        }
    }
}

fn text_config() -> CollectionConfig {
    CollectionConfig {
        index: IndexConfig::hnsw(),
        text: Some(TextConfig::new(["text"])),
        ..CollectionConfig::new(DIM, Metric::Cosine)
    }
}

fn payload(text: Option<&String>, group: i64) -> Payload {
    let mut p = Payload::new();
    if let Some(t) = text {
        p.insert("text".into(), Value::Str(t.clone()));
    }
    p.insert("group".into(), Value::Int(group));
    p
}

fn queries(rng: &mut Rng) -> Vec<String> {
    let mut q: Vec<String> = (0..40)
        .map(|_| {
            let n = 1 + rng.below(4) as usize;
            (0..n).map(|_| word(rng)).collect::<Vec<_>>().join(" ")
        })
        .collect();
    q.push("river0 river0 stone1".into()); // a repeated word counts once
    q.push("nosuchword".into());
    q.push("the of and".into()); // only stop words
    q
}

fn check_all(c: &trovedb::Collection, a: &Analyzer, docs: &Docs, qs: &[String], what: &str) {
    for (i, q) in qs.iter().enumerate() {
        let k = [1, 10, 50][i % 3];
        let got = c.search_text(q, k, &SearchParams::default()).unwrap();
        assert_matches(
            &got,
            &oracle(a, docs, q, &|_| true),
            k,
            &format!("{what} `{q}`"),
        );
        let f = Filter::from_json_str(r#"{"group": {"$lt": 3}}"#).unwrap();
        let got = c
            .search_text(q, 10, &SearchParams::default().with_filter(f))
            .unwrap();
        let want = oracle(a, docs, q, &|g| g < 3);
        assert_matches(&got, &want, 10, &format!("{what} filtered `{q}`"));
    }
}

#[test]
fn bm25_equals_an_exact_oracle_across_segments_compaction_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || {
        DbOptions::default()
            .seal_threshold_rows(400)
            .compaction(CompactionPolicy::off())
    };
    let db = Database::open(dir.path(), opts()).unwrap();
    let c = db.create_collection("t", &text_config()).unwrap();
    let a = Analyzer::new(&trovedb::text::AnalyzerConfig::default());
    let mut rng = Rng::new(7);
    let mut docs = Docs::new();
    let n = 4000u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let mut vs = Vec::new();
        let mut ps = Vec::new();
        for id in chunk {
            let t = doc(&mut rng);
            let g = rng.below(10) as i64;
            vs.extend(rng.vector(DIM));
            ps.push(payload(t.as_ref(), g));
            docs.insert(*id, (t, g));
        }
        c.upsert(chunk, &vs, &ps).unwrap();
    }
    // Deletions and rewrites reach sealed, frozen and appendable rows alike.
    let gone: Vec<u64> = (0..n).filter(|i| i % 7 == 3).collect();
    c.delete(&gone).unwrap();
    for id in &gone {
        docs.remove(id);
    }
    let rewrite: Vec<u64> = (0..n).filter(|i| i % 11 == 5 && i % 7 != 3).collect();
    let mut vs = Vec::new();
    let mut ps = Vec::new();
    for id in &rewrite {
        let t = doc(&mut rng);
        vs.extend(rng.vector(DIM));
        ps.push(payload(t.as_ref(), 1));
        docs.insert(*id, (t, 1));
    }
    c.upsert(&rewrite, &vs, &ps).unwrap();
    let segments = c.stats().unwrap().segments.len();
    assert!(segments >= 5, "{segments} segments");
    let qs = queries(&mut rng);
    check_all(&c, &a, &docs, &qs, "many segments");
    c.compact().unwrap();
    assert!(c.stats().unwrap().segments.len() <= 2);
    check_all(&c, &a, &docs, &qs, "compacted");
    drop(c);
    db.close().unwrap();
    let db = Database::open(dir.path(), opts()).unwrap();
    let c = db.collection("t").unwrap();
    check_all(&c, &a, &docs, &qs, "reopened");
    // Deleted documents are never returned, even for their own words.
    for id in gone.iter().take(50) {
        let p = c.get(*id).unwrap();
        assert!(p.is_none());
    }
}

#[test]
fn text_edge_cases_are_indexed_or_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let c = db.create_collection("t", &text_config()).unwrap();
    let big = "lorem ipsum dolor ".repeat(58_000) + "needle";
    assert!(big.len() > 1_000_000);
    let texts: Vec<Option<&str>> = vec![
        Some(""),
        None,
        Some(&big),
        Some("東京都に行く"),
        Some("Москва — столица России"),
        Some("ภาษาไทยง่ายนิดเดียว"),
        Some("clam chowder from New England"),
        Some("🙂🙂🙂 \u{0} \u{202e}"),
    ];
    let ids: Vec<u64> = (1..=texts.len() as u64).collect();
    let vs: Vec<f32> = (0..texts.len() * DIM)
        .map(|i| (i % 5) as f32 + 1.0)
        .collect();
    let ps: Vec<Payload> = texts
        .iter()
        .map(|t| payload(t.map(str::to_owned).as_ref(), 0))
        .collect();
    c.upsert(&ids, &vs, &ps).unwrap();
    let top = |q: &str| -> Vec<u64> {
        c.search_text(q, 5, &SearchParams::default())
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect()
    };
    for round in 0..2 {
        assert_eq!(top("needle"), vec![3], "round {round}");
        assert_eq!(top("京都"), vec![4]);
        assert_eq!(top("москва"), vec![5]);
        assert_eq!(top("ภาษาไทย"), vec![6]);
        assert_eq!(top("Clam CHOWDERS"), vec![7]);
        assert!(top("unknownword").is_empty());
        assert!(top("").is_empty());
        assert!(top("🙂").is_empty());
        c.flush().unwrap(); // the same answers from a sealed segment
    }
    // A text field holding a number is refused, naming the point and the field.
    let mut bad = Payload::new();
    bad.insert("text".into(), Value::Int(5));
    let before = c.len();
    match c.upsert(&[99], &[1.0; DIM], &[bad]) {
        Err(Error::InvalidArgument { reason, .. }) => {
            assert!(
                reason.contains("point 99") && reason.contains("`text`"),
                "{reason}"
            );
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert_eq!(c.len(), before);
    assert!(matches!(
        c.search_text("x", 0, &SearchParams::default()),
        Err(Error::InvalidArgument { name: "k", .. })
    ));
    // A collection without text fields says how to get them.
    let plain = db
        .create_collection("plain", &CollectionConfig::new(DIM, Metric::L2))
        .unwrap();
    match plain.search_text("x", 3, &SearchParams::default()) {
        Err(Error::InvalidArgument { reason, .. }) => assert!(reason.contains("text_fields")),
        other => panic!("{other:?}"),
    }
    // Bad configs are refused at creation.
    for (cfg, name) in [
        (TextConfig::new(Vec::<String>::new()), "text_fields"),
        (TextConfig::new(["a", "a"]), "text_fields"),
        (
            TextConfig {
                k1: -1.0,
                ..TextConfig::new(["a"])
            },
            "k1",
        ),
        (
            TextConfig {
                analyzer: trovedb::text::AnalyzerConfig {
                    language: "klingon".into(),
                    ..Default::default()
                },
                ..TextConfig::new(["a"])
            },
            "language",
        ),
    ] {
        let cfg = CollectionConfig {
            text: Some(cfg),
            ..CollectionConfig::new(DIM, Metric::L2)
        };
        match db.create_collection("bad", &cfg) {
            Err(Error::InvalidArgument { name: got, .. }) => assert_eq!(got, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn a_damaged_text_index_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(dir.path(), DbOptions::default()).unwrap();
        let c = db.create_collection("t", &text_config()).unwrap();
        let ps: Vec<Payload> = (0..50)
            .map(|i| payload(Some(&format!("qqxyz word{i}")), 0))
            .collect();
        let ids: Vec<u64> = (0..50).collect();
        c.upsert(&ids, &vec![0.5; 50 * DIM], &ps).unwrap();
        c.flush().unwrap();
        db.close().unwrap();
    }
    let seg = std::fs::read_dir(dir.path().join("collections/t"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment file");
    let mut bytes = std::fs::read(&seg).unwrap();
    // The term dictionary is written after the payloads: the last "qqxyz" is the term.
    let at = bytes
        .windows(5)
        .rposition(|w| w == b"qqxyz")
        .expect("the term");
    bytes[at] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    match db.collection("t") {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(file, seg);
            assert!(offset > 0);
        }
        other => panic!("expected Corruption, got {other:?}"),
    }
}

#[test]
fn hybrid_search_fuses_the_two_branches_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), DbOptions::default().seal_threshold_rows(300)).unwrap();
    let c = db.create_collection("t", &text_config()).unwrap();
    let a = Analyzer::new(&trovedb::text::AnalyzerConfig::default());
    let mut rng = Rng::new(3);
    let ids: Vec<u64> = (0..1000).collect();
    let mut vs = Vec::new();
    let mut ps = Vec::new();
    let mut docs = Docs::new();
    for id in &ids {
        vs.extend(rng.vector(DIM));
        let (t, g) = (doc(&mut rng), rng.below(4) as i64);
        ps.push(payload(t.as_ref(), g));
        docs.insert(*id, (t, g));
    }
    c.upsert(&ids, &vs, &ps).unwrap();
    let unit = |v: &[f32]| -> Vec<f64> {
        let n = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        v.iter().map(|x| f64::from(*x) / n).collect()
    };
    for i in 0..20 {
        let q = rng.vector(DIM);
        let text = format!("{} {}", word(&mut rng), word(&mut rng));
        let n = 30;
        let base = SearchParams::default()
            .with_hybrid_candidates(n)
            .with_ef(200);
        let filtered = i % 2 == 0;
        let base = if filtered {
            base.with_filter(Filter::from_json_str(r#"{"group": 1}"#).unwrap())
        } else {
            base
        };
        let dense = c.search(&q, n, &base).unwrap();
        let keyword = c.search_text(&text, n, &base).unwrap();
        // Exact scores of any point: cosine distance and BM25 (0 without a query term).
        let bm25: HashMap<u64, f64> = oracle(&a, &docs, &text, &|_| true).into_iter().collect();
        let qn = unit(&q);
        let dist = |id: u64| -> f64 {
            let v = unit(&vs[id as usize * DIM..(id as usize + 1) * DIM]);
            1.0 - v.iter().zip(&qn).map(|(x, y)| x * y).sum::<f64>()
        };
        for fusion in [Fusion::Rrf { k: 60.0 }, Fusion::Weighted { alpha: 0.3 }] {
            let params = base.clone().with_fusion(fusion);
            let got = c.search_hybrid(&q, &text, 10, &params).unwrap();
            let mut want: HashMap<u64, f64> = HashMap::new();
            if let Fusion::Weighted { alpha } = fusion {
                // Every candidate of either branch scored by both, each min-max normalised
                // over the candidates.
                let cands: Vec<u64> = dense.iter().chain(&keyword).map(|h| h.id).collect();
                let sim: Vec<f64> = cands.iter().map(|id| -dist(*id)).collect();
                let kw: Vec<f64> = cands
                    .iter()
                    .map(|id| bm25.get(id).copied().unwrap_or(0.0))
                    .collect();
                let mm = |v: &[f64]| -> Vec<f64> {
                    let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, x| {
                        (a.0.min(*x), a.1.max(*x))
                    });
                    v.iter()
                        .map(|x| if hi > lo { (x - lo) / (hi - lo) } else { 1.0 })
                        .collect()
                };
                let (sn, kn) = (mm(&sim), mm(&kw));
                for (j, id) in cands.iter().enumerate() {
                    want.insert(
                        *id,
                        f64::from(alpha) * sn[j] + (1.0 - f64::from(alpha)) * kn[j],
                    );
                }
            } else {
                for list in [&dense, &keyword] {
                    for (r, h) in list.iter().enumerate() {
                        *want.entry(h.id).or_insert(0.0) += 1.0 / (61.0 + r as f64);
                    }
                }
            }
            let mut want: Vec<(u64, f64)> = want.into_iter().collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            want.truncate(10);
            let got: Vec<(u64, f64)> = got.iter().map(|h| (h.id, -f64::from(h.distance))).collect();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g.1 - w.1).abs() < 1e-4, "{fusion:?}: {got:?} vs {want:?}");
            }
            if filtered {
                for (id, _) in &got {
                    assert_eq!(docs[id].1, 1);
                }
            }
        }
    }
}

/// What a case of the naive evaluator expects of a document.
type Want<'w> = Box<dyn Fn(&(Option<String>, i64)) -> bool + 'w>;

#[test]
fn match_filter_agrees_with_a_naive_evaluator() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions::default()
        .seal_threshold_rows(300)
        .compaction(CompactionPolicy::off());
    let db = Database::open(dir.path(), opts).unwrap();
    let c = db.create_collection("t", &text_config()).unwrap();
    let a = Analyzer::new(&trovedb::text::AnalyzerConfig::default());
    let mut rng = Rng::new(11);
    let mut docs = Docs::new();
    for chunk in (0..1500u64).collect::<Vec<_>>().chunks(100) {
        let mut vs = Vec::new();
        let mut ps = Vec::new();
        for id in chunk {
            let t = doc(&mut rng);
            let g = rng.below(5) as i64;
            vs.extend(rng.vector(DIM));
            ps.push(payload(t.as_ref(), g));
            docs.insert(*id, (t, g));
        }
        c.upsert(chunk, &vs, &ps).unwrap();
    }
    let gone: Vec<u64> = (0..1500).filter(|i| i % 9 == 4).collect();
    c.delete(&gone).unwrap();
    for id in &gone {
        docs.remove(id);
    }
    // Naive: every distinct term of the query appears among the document's terms.
    let naive = |text: &Option<String>, q: &str| -> bool {
        let want: HashSet<String> = a.terms(q).into_iter().collect();
        let Some(t) = text else { return false };
        let have: HashSet<String> = a.terms(t).into_iter().collect();
        !want.is_empty() && want.is_subset(&have)
    };
    for i in 0..40 {
        let n = 1 + rng.below(3) as usize;
        let q = (0..n).map(|_| word(&mut rng)).collect::<Vec<_>>().join(" ");
        let q = if i % 5 == 0 {
            format!("The {}", q.to_uppercase())
        } else {
            q
        };
        let qj = serde_json::to_string(&q).unwrap();
        let cases: Vec<(String, Want<'_>)> = vec![
            (
                format!(r#"{{"text": {{"$match": {qj}}}}}"#),
                Box::new(|d: &(Option<String>, i64)| naive(&d.0, &q)),
            ),
            (
                format!(
                    r#"{{"$and": [{{"text": {{"$match": {qj}}}}}, {{"group": {{"$lt": 2}}}}]}}"#
                ),
                Box::new(|d: &(Option<String>, i64)| naive(&d.0, &q) && d.1 < 2),
            ),
            (
                format!(r#"{{"$or": [{{"text": {{"$match": {qj}}}}}, {{"group": 4}}]}}"#),
                Box::new(|d: &(Option<String>, i64)| naive(&d.0, &q) || d.1 == 4),
            ),
            (
                format!(r#"{{"$not": {{"text": {{"$match": {qj}}}}}}}"#),
                Box::new(|d: &(Option<String>, i64)| !naive(&d.0, &q)),
            ),
        ];
        for (json, want) in &cases {
            let f = Filter::from_json_str(json).unwrap();
            let expect: Vec<u64> = docs
                .iter()
                .filter(|(_, d)| want(d))
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(c.count(&f).unwrap(), expect.len(), "{json}");
            let mut got: Vec<u64> = c
                .get_where(&f, usize::MAX)
                .unwrap()
                .iter()
                .map(|p| p.id)
                .collect();
            got.sort_unstable();
            assert_eq!(got, expect, "{json}");
        }
    }
    // The operator works in searches too, and refuses a field that is not a text field.
    let f = Filter::from_json_str(r#"{"text": {"$match": "river0"}}"#).unwrap();
    let hits = c
        .search(
            &[1.0; DIM],
            20,
            &SearchParams::default().with_filter(f.clone()),
        )
        .unwrap();
    assert!(!hits.is_empty());
    for h in &hits {
        assert!(naive(&docs[&h.id].0, "river0"));
    }
    let bad = Filter::from_json_str(r#"{"group": {"$match": "x"}}"#).unwrap();
    match c.count(&bad) {
        Err(Error::InvalidArgument { reason, .. }) => {
            assert!(reason.contains("text field"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let removed = c.delete_where(&f).unwrap();
    assert!(removed > 0);
    assert_eq!(c.count(&f).unwrap(), 0);
}

/// A collection split over three databases (shards): each shard searched with the summed
/// statistics of all three gives the scores of the f64 oracle over every document, so the
/// merged top k equals one collection's; statistics of another query are refused.
#[test]
fn summed_text_stats_make_shards_score_like_one_collection() {
    let dir = tempfile::tempdir().unwrap();
    let a = Analyzer::new(&trovedb::text::AnalyzerConfig::default());
    let shards: Vec<_> = (0..3)
        .map(|i| {
            let db = Database::open(
                dir.path().join(format!("s{i}")),
                DbOptions::default().seal_threshold_rows(300),
            )
            .unwrap();
            let c = db.create_collection("c", &text_config()).unwrap();
            (db, c)
        })
        .collect();
    let mut rng = Rng::new(77);
    let mut docs = Docs::new();
    for id in 0..1500u64 {
        let text = doc(&mut rng);
        let group = rng.below(6) as i64;
        let v = rng.vector(DIM);
        shards[(id % 3) as usize]
            .1
            .upsert(&[id], &v, &[payload(text.as_ref(), group)])
            .unwrap();
        docs.insert(id, (text, group));
    }
    // Deletions count: the statistics are of live documents.
    for id in (0..1500u64).step_by(7) {
        shards[(id % 3) as usize].1.delete(&[id]).unwrap();
        docs.remove(&id);
    }
    for q in queries(&mut Rng::new(5)) {
        let mut stats = shards[0].1.text_stats(&q).unwrap();
        for (_, c) in &shards[1..] {
            stats.add(&c.text_stats(&q).unwrap()).unwrap();
        }
        let p = SearchParams::default().with_text_stats(stats);
        let mut merged: Vec<trovedb::Hit> = shards
            .iter()
            .flat_map(|(_, c)| c.search_text(&q, 10, &p).unwrap())
            .collect();
        merged.sort_by(|x, y| x.distance.total_cmp(&y.distance).then(x.id.cmp(&y.id)));
        merged.truncate(10);
        assert_matches(
            &merged,
            &oracle(&a, &docs, &q, &|_| true),
            10,
            &format!("sharded `{q}`"),
        );
    }
    // Statistics computed for another text are refused, naming both term lists.
    let stats = shards[0].1.text_stats("river0 stone1").unwrap();
    let e = shards[1]
        .1
        .search_text(
            "garden2",
            5,
            &SearchParams::default().with_text_stats(stats.clone()),
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(e.to_string().contains("garden2"), "{e}");
    let mut other = shards[1].1.text_stats("garden2").unwrap();
    assert!(other.add(&stats).is_err());
}
