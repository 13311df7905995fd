#!/usr/bin/env python3
"""The app surface's costs, measured through the public Python API (issue #16).

1. String ids against integer ids on the same data: a default HNSW collection (cosine)
   ingested in batches of 1,000 with payloads (durability "always"), `wait_idle()`, then
   single-thread search over an `ef` sweep, recall@10 against the exact ground truth. The
   string ids are the dataset's own document ids (`kjv:Romans:3:14`, ...); the integer ids
   are the row numbers. Two graphs built from the same rows differ (the build is parallel)
   and so does their speed, by up to ~20% here: `--copies` collections of each kind are
   built, measured in alternation (same process, same machine state), best of `--repeat`
   per collection, and the mean over the copies reported with its range.
2. With `--langchain`: the overhead of LangChain's `similarity_search_by_vector` (through
   `trovedb.langchain.TroveVectorStore`) over a direct `Collection.search` on the same
   collection, per call.

    python3 benches/appsurface.py --dataset ../shared/data/text-minilm-dev [--langchain]
"""

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

import trovedb


def read_vecs(path: pathlib.Path, dtype) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.int32)
    dim = int(raw[0])
    return raw.reshape(-1, dim + 1)[:, 1:].view(dtype).copy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, type=pathlib.Path)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--efs", default="16,32,64,128")
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--langchain", action="store_true")
    a = ap.parse_args()

    base = read_vecs(a.dataset / "base.fvecs", np.float32)
    queries = read_vecs(a.dataset / "query.fvecs", np.float32)
    gt = read_vecs(a.dataset / "groundtruth.ivecs", np.int32)[:, : a.k]
    meta = [json.loads(line) for line in open(a.dataset / "metadata.jsonl")]
    doc_ids = [m["doc_id"] for m in meta]
    assert len(set(doc_ids)) == len(doc_ids), "document ids must be unique"
    row_of = {d: i for i, d in enumerate(doc_ids)}
    payloads = [{"text": m["text"], "source": m["source"]} for m in meta]
    n, dim = base.shape
    efs = [int(x) for x in a.efs.split(",")]
    print(f"{a.dataset.name}: {n} x {dim}, {len(queries)} queries, k={a.k}")

    with tempfile.TemporaryDirectory() as tmp:
        db = trovedb.open(tmp)
        cols = {}
        for copy in range(a.copies):
            for kind in ("int", "str"):
                c = db.create_collection(f"{kind}{copy}", dim=dim, metric="cosine", index="hnsw", id_type=kind)
                t = time.perf_counter()
                for s in range(0, n, 1000):
                    ids = list(range(s, min(n, s + 1000))) if kind == "int" else doc_ids[s : s + 1000]
                    c.upsert(ids, base[s : s + 1000], payloads[s : s + 1000])
                acked = time.perf_counter() - t
                c.wait_idle()
                conv = time.perf_counter() - t
                cols[(kind, copy)] = c
                print(f"  ingest {kind:>3} ids (copy {copy}): {n / acked:6.0f} vectors/s acknowledged, "
                      f"{n / conv:6.0f} converged ({len(c.stats()['segments'])} segments)")

        def once(key, ef, include_payload):
            c = cols[key]
            out = []
            t = time.perf_counter()
            for q in queries:
                out.append(c.search(q, k=a.k, ef=ef, include_payload=include_payload).ids)
            qps = len(queries) / (time.perf_counter() - t)
            if key[0] == "str":
                out = [[row_of[x] for x in r] for r in out]
            hit = sum(len(set(int(x) for x in r) & set(g.tolist())) for r, g in zip(out, gt))
            return hit / (a.k * len(queries)), qps

        def pair(ef, include_payload=False):
            """Per kind: mean recall, mean of each copy's best QPS, and the range of those."""
            best = {key: (0.0, 0.0) for key in cols}
            for _ in range(a.repeat):
                for key in cols:
                    r, q = once(key, ef, include_payload)
                    best[key] = (r, max(best[key][1], q))
            out = {}
            for kind in ("int", "str"):
                rs = [best[(kind, i)][0] for i in range(a.copies)]
                qs = [best[(kind, i)][1] for i in range(a.copies)]
                out[kind] = (float(np.mean(rs)), float(np.mean(qs)), min(qs), max(qs))
            return out["int"], out["str"]

        print(f"  single-thread search, {a.copies} collections of each kind, best of {a.repeat} "
              f"alternating rounds each (recall@{a.k}, mean QPS [range]):")
        for ef in efs:
            (ri, qi, li, hi), (rs, qs, ls, hs) = pair(ef)
            print(f"    ef {ef:4d}: int {ri:.3f} @ {qi:6.0f} [{li:.0f}-{hi:.0f}]   "
                  f"str {rs:.3f} @ {qs:6.0f} [{ls:.0f}-{hs:.0f}]   str/int {qs / qi:.2f}x")
        (_, qi, li, hi), (_, qs, ls, hs) = pair(64, True)
        print(f"    ef   64 with payloads: int {qi:6.0f} [{li:.0f}-{hi:.0f}]   str {qs:6.0f} [{ls:.0f}-{hs:.0f}]   "
              f"str/int {qs / qi:.2f}x")

        if a.langchain:
            from trovedb.langchain import TroveVectorStore

            class Fixed:
                """An embedding that is never called: the benchmark searches by vector."""

                def embed_documents(self, texts):
                    raise AssertionError("not used")

                def embed_query(self, text):
                    raise AssertionError("not used")

            direct = cols[("str", 0)]
            store = TroveVectorStore(collection=direct, embedding=Fixed(), text_field="text")
            qs = [q.tolist() for q in queries]
            for label, fn in (
                ("Collection.search(include_payload=True)", lambda q: direct.search(q, k=4, include_payload=True)),
                ("TroveVectorStore.similarity_search_by_vector", lambda q: store.similarity_search_by_vector(q, k=4)),
            ):
                best = 0.0
                for _ in range(a.repeat):
                    t = time.perf_counter()
                    for q in qs:
                        fn(q)
                    best = max(best, len(qs) / (time.perf_counter() - t))
                print(f"  k=4, ef default: {label:<48} {1e6 / best:7.1f} us/call ({best:.0f} QPS)")
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
