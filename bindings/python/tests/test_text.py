"""Keyword (BM25) and hybrid search from Python.

BM25 scores are checked against bm25s (Lucene's BM25, k1=1.2, b=0.75) fed the tokens of
`trovedb.analyze`, on public-domain passages in the repository, through segments, a compaction
and a reopen; hybrid results are recomputed from the two branches.
"""

import json
import pathlib

import numpy as np
import pytest

import trovedb

REPO = pathlib.Path(__file__).resolve().parents[3]
TEXTS = REPO / "data" / "pd-texts-2k" / "texts.jsonl"
DIM = 16


@pytest.fixture(scope="module")
def passages() -> list[str]:
    return [json.loads(line)["text"] for line in TEXTS.read_text().splitlines()]


def queries(passages: list[str], rng: np.random.Generator) -> list[str]:
    """Spans of passages (some words will be stop words or stems of others) and a few
    single words."""
    out = []
    for i in rng.choice(len(passages), 60, replace=False):
        words = passages[i].split()
        if len(words) < 3:
            continue
        a = int(rng.integers(0, len(words) - 2))
        out.append(" ".join(words[a : a + int(rng.integers(1, 6))]))
    return out + ["light", "hacker kludge", "LORD God", "nosuchwordanywhere", "the of and"]


def bm25s_index(passages: list[str]):
    import bm25s

    docs = [trovedb.analyze(p) for p in passages]
    r = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    r.index(docs, show_progress=False)
    return r, len(docs)


def bm25s_top(index, query: str, k: int) -> list[tuple[int, float]]:
    r, ndocs = index
    q = list(dict.fromkeys(trovedb.analyze(query)))
    known = [t for t in q if t in r.vocab_dict]
    if not known:
        return []
    scores = r.get_scores(known)
    order = sorted((i for i in range(ndocs) if scores[i] > 0), key=lambda i: (-scores[i], i))
    return [(i, float(scores[i])) for i in order[:k]]


def check(c: trovedb.Collection, passages: list[str], qs: list[str], oracle: dict) -> None:
    for q in qs:
        res = c.search(text=q, k=10)
        ids, scores = res.ids, res.scores
        want = oracle[q]
        n = len(want)
        assert len(res) == n, q  # only documents holding a query term, never padding
        np.testing.assert_allclose(scores[:n], [s for _, s in want], rtol=1e-4, err_msg=q)
        for got, (wid, ws) in zip(ids[:n], want):
            if int(got) != wid:  # only ties may reorder
                other = dict(want).get(int(got))
                assert other is not None and abs(other - ws) <= 1e-4 * max(ws, 1), q


def test_bm25_scores_equal_bm25s_through_segments_compaction_and_reopen(tmp_path, passages):
    pytest.importorskip("bm25s")
    rng = np.random.default_rng(5)
    qs = queries(passages, rng)
    index = bm25s_index(passages)
    oracle = {q: bm25s_top(index, q, 10) for q in qs}
    assert sum(1 for v in oracle.values() if v) > 40
    db = trovedb.open(tmp_path, seal_threshold_rows=300, background_compaction=False)
    c = db.create_collection("t", dim=DIM, index="hnsw", text_fields=["text"])
    vectors = rng.standard_normal((len(passages), DIM)).astype(np.float32)
    for a in range(0, len(passages), 250):
        ids = list(range(a, min(a + 250, len(passages))))
        c.upsert(ids, vectors[ids], [{"text": passages[i], "n": i} for i in ids])
    assert len(c.stats()["segments"]) >= 3
    check(c, passages, qs, oracle)
    c.compact()
    check(c, passages, qs, oracle)
    db.close()
    db = trovedb.open(tmp_path, background_compaction=False)
    c = db.get_collection("t")
    check(c, passages, qs, oracle)
    # A batch of texts gives the same rows as one text at a time.
    res = c.search(text=qs[:5], k=10)
    ids, scores = res.ids, res.scores
    assert ids.shape == (5, 10)
    for i, q in enumerate(qs[:5]):
        one = c.search(text=q, k=10)
        assert ids[i, : len(one)].tolist() == one.ids.tolist()
        assert (ids[i, len(one) :] == trovedb.PAD_ID).all()
        np.testing.assert_array_equal(scores[i, : len(one)], one.scores)
    db.close()


def test_keyword_search_filters_deletes_and_payloads(tmp_path, passages):
    db = trovedb.open(tmp_path)
    c = db.create_collection("t", dim=DIM, text_fields=["text"])
    rng = np.random.default_rng(1)
    n = 400
    c.upsert(
        list(range(n)),
        rng.standard_normal((n, DIM)).astype(np.float32),
        [{"text": passages[i], "even": i % 2 == 0} for i in range(n)],
    )
    res = c.search(text="LORD", k=20, filter={"even": True}, include_payload=True)
    assert res.kind == "text" and len(res) > 0
    assert all(h.payload["even"] for h in res)
    assert all("lord" in h.payload["text"].lower() for h in res)
    assert (np.diff(res.scores) <= 0).all()
    assert [h.score for h in res] == res.scores.tolist()
    top = res[0].id
    c.delete([top])
    ids2 = c.search(text="LORD", k=20, filter={"even": True}).ids
    assert top not in ids2.tolist()


def test_hybrid_fuses_dense_and_keyword_rankings(tmp_path, passages):
    db = trovedb.open(tmp_path)
    c = db.create_collection("t", dim=DIM, text_fields=["text"])
    rng = np.random.default_rng(2)
    n = 600
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    c.upsert(list(range(n)), vectors, [{"text": passages[i]} for i in range(n)])
    q = rng.standard_normal(DIM).astype(np.float32)
    text = "the LORD said unto Moses"
    res = c.search(q, k=50)
    d_ids, d_dist = res.ids, res.distances
    res = c.search(text=text, k=50)
    t_ids, t_scores = res.ids, res.scores
    res = c.search(q, text=text, k=10, fusion="rrf")
    ids, fused = res.ids, res.scores
    want: dict[int, float] = {}
    for lst in (d_ids, t_ids):
        for r, i in enumerate(lst):
            want[int(i)] = want.get(int(i), 0.0) + 1.0 / (60 + r + 1)
    best = sorted(want.items(), key=lambda e: (-e[1], e[0]))[:10]
    assert ids.tolist() == [i for i, _ in best]
    np.testing.assert_allclose(fused, [s for _, s in best], rtol=1e-5)
    res = c.search(q, text=text, k=10, fusion="weighted", alpha=0.0)
    ids_w, fused_w = res.ids, res.scores
    # alpha = 0: the keyword ranking alone (normalised), so its order.
    assert ids_w.tolist()[:5] == t_ids.tolist()[:5]
    assert fused_w[0] == pytest.approx(1.0)


def test_text_arguments_are_checked(tmp_path):
    db = trovedb.open(tmp_path)
    plain = db.create_collection("plain", dim=4)
    with pytest.raises(ValueError, match="text_fields"):
        plain.search(text="anything", k=3)
    c = db.create_collection("t", dim=4, text_fields=["body"], language="french", stopwords=False)
    with pytest.raises(ValueError, match="fusion"):
        c.search([1, 2, 3, 4], text="x", fusion="max")
    with pytest.raises(ValueError, match="give a query"):
        c.search(k=3)
    with pytest.raises(ValueError, match="one text per query vector"):
        c.search(np.ones((2, 4), np.float32), text="x")
    with pytest.raises(ValueError, match="body"):
        c.upsert([1], [[1, 2, 3, 4]], [{"body": 12}])
    assert c.count() == 0
    with pytest.raises(ValueError, match="language"):
        db.create_collection("bad", dim=4, text_fields=["x"], language="klingon")
    with pytest.raises(TypeError, match="stopwords"):
        db.create_collection("bad", dim=4, text_fields=["x"], stopwords="the")
    c.upsert([1], [[1, 2, 3, 4]], [{"body": "Les chevaux mangent"}])
    ids = c.search(text="cheval", k=3).ids
    assert ids[0] == 1
    assert trovedb.analyze("Les chevaux", language="french", stopwords=False) == ["le", "cheval"]
    assert trovedb.analyze("The quick foxes") == ["quick", "fox"]
    assert trovedb.analyze("The quick foxes", stem=False, stopwords=["quick"]) == ["the", "foxes"]


def test_a_read_only_handle_answers_keyword_queries_like_the_writer(tmp_path, passages):
    db = trovedb.open(tmp_path, seal_threshold_rows=200)
    c = db.create_collection("t", dim=DIM, text_fields=["text"])
    rng = np.random.default_rng(4)
    n = 500
    c.upsert(list(range(n)), rng.standard_normal((n, DIM)).astype(np.float32),
             [{"text": passages[i]} for i in range(n)])
    rodb = trovedb.open(tmp_path, read_only=True)
    ro = rodb.get_collection("t")
    for q in ("LORD", "hacker", "the children of Israel", "kludge"):
        res = c.search(text=q, k=10)
        w_ids, w_scores = res.ids, res.scores
        res = ro.search(text=q, k=10)
        r_ids, r_scores = res.ids, res.scores
        assert (w_ids == r_ids).all(), q
        np.testing.assert_allclose(w_scores, r_scores, rtol=1e-6)
        assert ro.count({"text": {"$match": q}}) == c.count({"text": {"$match": q}})
    # Later writes (a delete, new text) reach the reader too.
    top = int(c.search(text="LORD", k=1).ids[0])
    c.delete([top])
    c.upsert([n], [np.ones(DIM, np.float32)], [{"text": "zyzzyva zyzzyva"}])
    assert int(ro.search(text="zyzzyva", k=1).ids[0]) == n
    assert top not in ro.search(text="LORD", k=10).ids.tolist()
    rodb.close()
    db.close()
