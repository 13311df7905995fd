#!/usr/bin/env python3
"""Keyword (BM25) and hybrid search: quality on labelled queries, speed on the full corpus.

Quality (`--dataset`, a text-hybrid-dev directory): trovedb through its public Python API
with default options (upsert in batches of 1,000, `wait_idle()`), searched dense only (HNSW),
BM25 only, hybrid RRF (default) and hybrid weighted (alpha 0.5), next to the same retrievals
computed exactly in the same run: brute-force dense, `bm25s` (Lucene BM25, k1 1.2, b 0.75) on
the tokens of `trovedb.analyze`, and the two fusions of those exact lists. nDCG@10 and
recall@10 per query set and their mean.

Speed (`--corpus`, a JSON-lines file from ../shared/tools/text_corpus.py): BM25 top-10
single-thread QPS over every query text of the dataset, against `tantivy` (en_stem, default
OR query) and `bm25s`; index build time and bytes. With `--dataset` too: hybrid latency
against dense only at the same `ef`.

    python3 benches/hybrid.py --dataset ../shared/data/text-hybrid-dev
    python3 benches/hybrid.py --dataset ../shared/data/text-hybrid-dev \
        --corpus bench-out/cache/corpus.jsonl --speed-only
"""

import argparse
import json
import math
import os
import pathlib
import re
import shutil
import sys
import tempfile
import time

import numpy as np

import trovedb

SETS = ("sense", "lookup", "quote")


def read_fvecs(path: pathlib.Path) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.int32)
    dim = int(raw[0])
    return raw.reshape(-1, dim + 1)[:, 1:].view(np.float32).copy()


def ndcg10(ranked: list[int], relevant: set[int]) -> float:
    dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return dcg / ideal if ideal else 0.0


def recall10(ranked: list[int], relevant: set[int]) -> float:
    return len(set(ranked[:10]) & relevant) / len(relevant) if relevant else 0.0


def rrf(lists: list[list[int]], k: int, rk: float = 60.0) -> list[int]:
    s: dict[int, float] = {}
    for lst in lists:
        for r, d in enumerate(lst):
            s[d] = s.get(d, 0.0) + 1.0 / (rk + r + 1)
    return [d for d, _ in sorted(s.items(), key=lambda e: (-e[1], e[0]))[:k]]


def weighted(cands: list[int], sim: np.ndarray, score: np.ndarray, k: int, alpha: float) -> list[int]:
    """Every candidate scored by both retrievers (`sim`, `score`: over all passages), each
    min-max normalised over the candidates, blended `alpha : 1 - alpha` (trovedb's default)."""
    if not cands:
        return []
    u = np.array(sorted(set(cands)))

    def mm(v: np.ndarray) -> np.ndarray:
        lo, hi = v.min(), v.max()
        return (v - lo) / (hi - lo) if hi > lo else np.ones_like(v)

    f = alpha * mm(sim[u]) + (1 - alpha) * mm(score[u])
    return [int(u[j]) for j in np.lexsort((u, -f))[:k]]


def load_dataset(root: pathlib.Path):
    base = read_fvecs(root / "base.fvecs")
    texts = [json.loads(line)["text"] for line in (root / "metadata.jsonl").read_text().splitlines()]
    sets = {}
    for name in SETS:
        qv = read_fvecs(root / f"{name}_query.fvecs")
        qs = [json.loads(line) for line in (root / f"{name}_queries.jsonl").read_text().splitlines()]
        sets[name] = (qv, [q["text"] for q in qs], [set(q["relevant"]) for q in qs])
    return base, texts, sets


def ingest(db, name: str, texts: list[str], vectors: np.ndarray, dim: int, metric: str, index: str):
    c = db.create_collection(name, dim=dim, metric=metric, index=index, text_fields=["text"])
    t0 = time.perf_counter()
    for a in range(0, len(texts), 1000):
        b = min(a + 1000, len(texts))
        c.upsert(np.arange(a, b, dtype=np.uint64), vectors[a:b], [{"text": t} for t in texts[a:b]])
    ack = time.perf_counter() - t0
    c.wait_idle()
    return c, ack, time.perf_counter() - t0


def quality(args) -> None:
    import bm25s

    base, texts, sets = load_dataset(args.dataset)
    n = len(texts)
    nc = args.candidates
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="hybrid-", dir=args.tmp))
    try:
        db = trovedb.open(tmp / "db")
        c, ack, total = ingest(db, "docs", texts, base, base.shape[1], "cosine", "hnsw")
        print(f"ingest {n} passages (dense + BM25, default path): {ack:.1f} s acknowledged, "
              f"{total:.1f} s to idle, {len(c.stats()['segments'])} segments")
        t0 = time.perf_counter()
        r = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
        r.index([trovedb.analyze(t) for t in texts], show_progress=False)
        print(f"bm25s index on trovedb.analyze tokens: {time.perf_counter() - t0:.1f} s")
        unit = base / np.linalg.norm(base, axis=1, keepdims=True)
        rows = []
        means: dict[str, list[tuple[float, float]]] = {}
        agree = [0, 0]
        for name, (qv, qt, rel) in sets.items():
            qn = qv / np.linalg.norm(qv, axis=1, keepdims=True)
            sims = qn @ unit.T
            res: dict[str, list[list[int]]] = {m: [] for m in (
                "dense exact", "dense hnsw", "bm25s", "bm25 trovedb",
                "rrf exact", "rrf trovedb", "weighted exact", "weighted trovedb (default)")}
            for i in range(len(qt)):
                top = np.argsort(-sims[i])[:nc]
                dense_exact = [(int(d), float(sims[i, d])) for d in top]
                ids = c.search(qv[i], k=nc, ef=max(nc, 64)).ids
                res["dense exact"].append([d for d, _ in dense_exact])
                res["dense hnsw"].append([int(x) for x in ids])
                toks = [t for t in dict.fromkeys(trovedb.analyze(qt[i])) if t in r.vocab_dict]
                if toks:
                    s = r.get_scores(toks)
                    order = [int(d) for d in np.argsort(-s, kind="stable")[:nc] if s[d] > 0]
                    kw_exact = [(d, float(s[d])) for d in order]
                else:
                    s = np.zeros(n)
                    kw_exact = []
                res["bm25s"].append([d for d, _ in kw_exact])
                kw = [int(x) for x in c.search(text=qt[i], k=nc).ids]
                res["bm25 trovedb"].append(kw)
                agree[0] += kw[:10] == res["bm25s"][-1][:10]
                agree[1] += 1
                res["rrf exact"].append(rrf([res["dense exact"][-1], res["bm25s"][-1]], 10))
                hids = c.search(qv[i], text=qt[i], k=10, fusion="rrf", hybrid_candidates=nc).ids
                res["rrf trovedb"].append([int(x) for x in hids])
                cands = [d for d, _ in dense_exact] + [d for d, _ in kw_exact]
                res["weighted exact"].append(weighted(cands, sims[i], s, 10, 0.5))
                wids = c.search(qv[i], text=qt[i], k=10, hybrid_candidates=nc).ids  # the default
                res["weighted trovedb (default)"].append([int(x) for x in wids])
            for m, lists in res.items():
                nd = float(np.mean([ndcg10(l, rl) for l, rl in zip(lists, rel)]))
                rc = float(np.mean([recall10(l, rl) for l, rl in zip(lists, rel)]))
                means.setdefault(m, []).append((nd, rc))
                rows.append((m, name, nd, rc))
        print(f"\nBM25 top-10 identical to bm25s on {agree[0]}/{agree[1]} queries")
        print(f"\nnDCG@10 / recall@10 (candidates per branch {nc}; 'dense hnsw' at ef {max(nc, 64)}, "
              f"the hybrid vector branch at its default ef {max(64, 2 * nc)})")
        print(f"| retrieval | {' | '.join(SETS)} | mean |")
        print("| --- |" + " --- |" * (len(SETS) + 1))
        for m in means:
            cells = [f"{nd:.3f} / {rc:.3f}" for (mm, _, nd, rc) in rows if mm == m]
            mean_nd = np.mean([x[0] for x in means[m]])
            mean_rc = np.mean([x[1] for x in means[m]])
            print(f"| {m} | {' | '.join(cells)} | {mean_nd:.3f} / {mean_rc:.3f} |")
        if args.json:
            json.dump({"rows": rows}, open(args.json, "w"), indent=1)
        if args.check:
            mean = {m: float(np.mean([x[0] for x in v])) for m, v in means.items()}
            best_single = max(mean["dense exact"], mean["bm25s"])
            best_fusion = max(mean["rrf exact"], mean["weighted exact"])
            default = mean["weighted trovedb (default)"]
            assert agree[0] >= 0.99 * agree[1], f"BM25 top-10 differs from bm25s on {agree[1] - agree[0]} queries"
            assert default >= best_single, f"default hybrid {default:.3f} < best single {best_single:.3f}"
            assert default >= best_fusion - 0.01, f"default hybrid {default:.3f} vs exact fusion {best_fusion:.3f}"
            print(f"check: BM25 = bm25s on {agree[0]}/{agree[1]}; default hybrid nDCG@10 {default:.3f} "
                  f">= best single {best_single:.3f}, within 0.01 of best exact fusion {best_fusion:.3f}")
        if args.lancedb:
            lance_quality(base, texts, sets)
        if args.corpus is None:
            latency(c, sets)
        db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def lance_quality(base: np.ndarray, texts: list[str], sets) -> None:
    """LanceDB side by side: its native FTS index (English, stemming, stop words) and its
    hybrid search (default RRF reranker) over an exact vector scan of the same unit vectors."""
    import lancedb
    import pyarrow as pa

    tmp = tempfile.mkdtemp(prefix="lance-")
    try:
        unit = (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float32)
        db = lancedb.connect(tmp)
        t0 = time.perf_counter()
        t = db.create_table("docs", pa.table({
            "id": pa.array(np.arange(len(texts))),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(unit.ravel()), unit.shape[1]),
            "text": texts}))
        t.create_fts_index("text", use_tantivy=False, language="English", stem=True,
                           remove_stop_words=True)
        print(f"\nLanceDB {lancedb.__version__}: table + FTS index {time.perf_counter() - t0:.1f} s")
        print("| LanceDB | " + " | ".join(SETS) + " | mean | ms/query |")
        print("| --- |" + " --- |" * (len(SETS) + 2))
        for label in ("fts", "hybrid (RRF)"):
            cells, nds, spent, nq = [], [], 0.0, 0
            for name, (qv, qt, rel) in sets.items():
                qn = (qv / np.linalg.norm(qv, axis=1, keepdims=True)).astype(np.float32)
                ranked = []
                for i in range(len(qt)):
                    q = re.sub(r"[^\w\s]", " ", qt[i])
                    t1 = time.perf_counter()
                    try:
                        if label == "fts":
                            r = t.search(q, query_type="fts").limit(10).select(["id"]).to_arrow()
                        else:
                            r = (t.search(query_type="hybrid").vector(qn[i]).text(q)
                                 .limit(10).select(["id"]).to_arrow())
                        ranked.append([int(x) for x in r.column("id").to_pylist()])
                    except Exception:  # an empty query after cleaning
                        ranked.append([])
                    spent += time.perf_counter() - t1
                    nq += 1
                nd = float(np.mean([ndcg10(l, rl) for l, rl in zip(ranked, rel)]))
                rc = float(np.mean([recall10(l, rl) for l, rl in zip(ranked, rel)]))
                cells.append(f"{nd:.3f} / {rc:.3f}")
                nds.append(nd)
            print(f"| {label} | {' | '.join(cells)} | {np.mean(nds):.3f} | {spent / nq * 1e3:.2f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def latency(c, sets) -> None:
    """Hybrid against dense only at the same ef (single thread, per query)."""
    qv = np.concatenate([s[0] for s in sets.values()])
    qt = sum((s[1] for s in sets.values()), [])
    for ef in (64, 128):
        for label, fn in (
            ("dense", lambda i: c.search(qv[i], k=10, ef=ef)),
            ("bm25", lambda i: c.search(text=qt[i], k=10)),
            ("hybrid (default fusion)", lambda i: c.search(qv[i], text=qt[i], k=10, ef=ef)),
        ):
            for i in range(50):
                fn(i)
            t0 = time.perf_counter()
            for i in range(len(qt)):
                fn(i)
            dt = (time.perf_counter() - t0) / len(qt)
            print(f"latency ef={ef} {label}: {dt * 1e3:.3f} ms/query ({1 / dt:,.0f} QPS)")


def dir_bytes(p: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def speed(args) -> None:
    import bm25s
    import tantivy

    texts = [json.loads(line)["text"] for line in open(args.corpus)]
    queries = []
    if args.dataset:
        for name in SETS:
            queries += [json.loads(line)["text"] for line in
                        (args.dataset / f"{name}_queries.jsonl").read_text().splitlines()]
    else:
        rng = np.random.default_rng(0)
        for i in rng.choice(len(texts), 900, replace=False):
            w = texts[i].split()
            queries.append(" ".join(w[:5]))
    n = len(texts)
    print(f"\ncorpus: {n} passages, {len(queries)} queries")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="hybrid-speed-", dir=args.tmp))
    try:
        # trovedb: a keyword-only collection (a one-float placeholder vector per row).
        db = trovedb.open(tmp / "trove", seal_threshold_rows=args.seal_threshold_rows)
        zeros = np.zeros((n, 1), np.float32)
        c, ack, total = ingest(db, "docs", texts, zeros, 1, "l2", "flat")
        st = c.stats()
        tbytes = sum(s["text_bytes"] for s in st["segments"])
        print(f"trovedb build: {ack:.1f} s acknowledged, {total:.1f} s to idle (durable, "
              f"{len(st['segments'])} segments); text index {tbytes / 1e6:.1f} MB, "
              f"collection {st['bytes_on_disk'] / 1e6:.1f} MB (payloads hold the text)")
        if args.compact:
            t0 = time.perf_counter()
            c.compact()
            print(f"trovedb compact: {time.perf_counter() - t0:.1f} s, "
                  f"{len(c.stats()['segments'])} segment(s)")
        # tantivy: its en_stem analyzer (no stop words), and the same with its English stop
        # words; text not stored (trovedb keeps it in the payload), so bytes are the index's.
        searchers = {}
        for label, stop in (("tantivy en_stem", False), ("tantivy en_stem+stop", True)):
            t0 = time.perf_counter()
            sb = tantivy.SchemaBuilder()
            sb.add_text_field("text", stored=False, tokenizer_name="custom" if stop else "en_stem")
            schema = sb.build()
            path = tmp / label.replace(" ", "_").replace("+", "_")
            path.mkdir()
            index = tantivy.Index(schema, path=str(path))
            if stop:
                index.register_tokenizer("custom", tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
                                         .filter(tantivy.Filter.remove_long(40))
                                         .filter(tantivy.Filter.lowercase())
                                         .filter(tantivy.Filter.stopword("english"))
                                         .filter(tantivy.Filter.stemmer("english")).build())
            w = index.writer(heap_size=256_000_000, num_threads=2)
            for t in texts:
                w.add_document(tantivy.Document(text=t))
            w.commit()
            w.wait_merging_threads()
            index.reload()
            print(f"{label} build: {time.perf_counter() - t0:.1f} s (2 threads, one commit), "
                  f"index {dir_bytes(path) / 1e6:.1f} MB")
            searchers[label] = (index, index.searcher())
        # bm25s
        t0 = time.perf_counter()
        r = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
        r.index([trovedb.analyze(t) for t in texts], show_progress=False)
        print(f"bm25s build (with trovedb.analyze): {time.perf_counter() - t0:.1f} s")

        clean = [re.sub(r"[^\w\s]", " ", q) for q in queries]
        parsed = {}
        for label, (index, _) in searchers.items():
            parsed[label] = []
            for q in clean:
                try:
                    parsed[label].append(index.parse_query(q, ["text"]))
                except ValueError:
                    parsed[label].append(None)

        def run(label, fn, reps=3):
            for i in range(min(50, len(queries))):
                fn(i)
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                for i in range(len(queries)):
                    fn(i)
                best = min(best, time.perf_counter() - t0)
            qps = len(queries) / best
            print(f"{label}: {qps:,.0f} QPS")
            return qps

        toks = [[t for t in dict.fromkeys(trovedb.analyze(q)) if t in r.vocab_dict] for q in queries]
        q_t = run("trovedb BM25 top-10", lambda i: c.search(text=queries[i], k=10))
        q_v = {}
        for label, (_, searcher) in searchers.items():
            pl = parsed[label]
            q_v[label] = run(f"{label} top-10",
                             lambda i, pl=pl, searcher=searcher: pl[i] is not None and searcher.search(pl[i], 10))
        q_b = run("bm25s top-10", lambda i: toks[i] and r.retrieve([toks[i]], k=10, n_threads=1,
                                                                   show_progress=False), reps=1)
        for label, v in q_v.items():
            print(f"trovedb / {label} = {q_t / v:.2f}x")
        print(f"trovedb / bm25s = {q_t / q_b:.2f}x")
        db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", type=pathlib.Path)
    ap.add_argument("--corpus", type=pathlib.Path)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--seal-threshold-rows", type=int, default=100_000)
    ap.add_argument("--compact", action="store_true", help="also time compact() before searching")
    ap.add_argument("--speed-only", action="store_true",
                    help="with --dataset and --corpus: only the speed part (queries from the dataset)")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--json")
    ap.add_argument("--lancedb", action="store_true", help="also measure LanceDB FTS and hybrid")
    ap.add_argument("--check", action="store_true",
                    help="fail unless BM25 equals bm25s and the default hybrid meets its quality target")
    args = ap.parse_args()
    if args.dataset is None and args.corpus is None:
        ap.error("give --dataset, --corpus or both")
    os.environ.setdefault("RAYON_NUM_THREADS", str(os.cpu_count()))
    if args.dataset and not args.speed_only:
        quality(args)
    if args.corpus:
        speed(args)


if __name__ == "__main__":
    sys.exit(main())
