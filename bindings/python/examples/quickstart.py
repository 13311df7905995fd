"""trovedb quick start: real sentence embeddings in, nearest neighbours out.

Loads the 3,000-passage slice of text-minilm-dev shipped in data/minilm-3k (384-d
all-MiniLM-L6-v2 embeddings with their texts and metadata), stores it in a trovedb
database, searches it with 100 held-out queries, reopens the database to show the hits
survive, and reports recall against exact brute-force search and the query latency.
"""

import json
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np

import trovedb

REPO = pathlib.Path(__file__).resolve().parents[3]
DATA = REPO / "data" / "minilm-3k"


def read_fvecs(path: pathlib.Path) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.int32)
    dim = int(raw[0])
    return raw.reshape(-1, dim + 1)[:, 1:].view(np.float32).copy()


def main() -> int:
    base = read_fvecs(DATA / "base.fvecs")
    queries = read_fvecs(DATA / "query.fvecs")
    meta = [json.loads(line) for line in (DATA / "metadata.jsonl").open()]
    qtext = [json.loads(line)["text"] for line in (DATA / "queries.jsonl").open()]
    payloads = [{k: m[k] for k in ("text", "source", "category", "year")} for m in meta]
    print(f"loaded {len(base)} passages x {base.shape[1]}-d and {len(queries)} queries from {DATA}")

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="trovedb-quickstart-"))
    path = workdir / "vectors"
    k = 10
    try:
        with trovedb.open(path) as db:
            docs = db.create_collection("docs", dim=base.shape[1], metric="cosine", index="flat",
                                        text_fields=["text"])  # + a BM25 index of the texts
            t0 = time.perf_counter()
            docs.upsert(np.arange(len(base), dtype=np.uint64), base, payloads)
            docs.flush()  # seal to a memory-mapped segment file
            print(f"upserted {len(docs)} points in {time.perf_counter() - t0:.3f}s (durable, sealed)")

            lat = []
            results = []
            for q in queries:
                t = time.perf_counter()
                hits = docs.search(q, k=k)
                lat.append(time.perf_counter() - t)
                results.append(hits.ids)
            results = np.stack(results)
            print(f"\nquery: {qtext[0]!r}")
            for hit in docs.search(queries[0], k=3, include_payload=True):
                p = hit.payload
                print(f"  {hit.id:5d}  dist={hit.distance:.4f}  [{p['source']}] {p['text'][:90]}")
            # The same question by keywords, then both fused (README "Hybrid search").
            for label, kw in (("keyword", {}), ("hybrid", {"query": queries[0]})):
                print(f"{label}:")
                for hit in docs.search(text=qtext[0], k=3, include_payload=True, **kw):
                    p = hit.payload
                    print(f"  {hit.id:5d}  score={hit.score:.4f}  [{p['source']}] {p['text'][:90]}")

        with trovedb.open(path) as db:  # reopen: the segment is mapped, nothing is rebuilt
            again = db.get_collection("docs").search(queries, k=k).ids
        same = bool(np.array_equal(results, again))
        print(f"\nreopened: {'same hits for all queries' if same else 'HITS DIFFER'}")

        b = base.astype(np.float64)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        exact = np.argsort(-(queries.astype(np.float64) @ b.T), axis=1, kind="stable")[:, :k]
        recall = np.mean([len(set(r.tolist()) & set(e.tolist())) / k for r, e in zip(results, exact)])
        lat_ms = np.array(lat) * 1e3
        print(f"recall@{k} vs exact search: {recall:.3f}")
        print(
            f"latency per query: p50 {np.percentile(lat_ms, 50):.3f} ms, "
            f"p99 {np.percentile(lat_ms, 99):.3f} ms ({1e3 / lat_ms.mean():.0f} QPS, one thread)"
        )
        return 0 if same and recall >= 0.99 else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
