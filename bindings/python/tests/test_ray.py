"""trovedb.ray on a local Ray cluster: sharded search equals one collection (flat: the same
ids and distances; hnsw: recall within 0.01 on the dev set), Ray Data ingest and export,
a shard actor killed in the middle of an ingest, reopening in a new driver, and a
simulated two-node cluster."""

import json
import pathlib
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from conftest import REPO, read_fvecs, require

require("ray")

import ray  # noqa: E402

import trovedb  # noqa: E402
import trovedb.ray as tr  # noqa: E402

DIM = 16
DEV = REPO.parent / "shared" / "data" / "text-minilm-dev"


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def points(n, seed=1, dim=DIM):
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    pays = [{"g": i % 7, "tag": ["red", "blue", "green"][i % 3], "i": i} for i in range(n)]
    return vecs, pays


def single(tmp_path, vecs, pays, ids, **cfg):
    db = trovedb.open(tmp_path / "single")
    c = db.create_collection("c", **cfg)
    for s in range(0, len(vecs), 500):
        c.upsert(ids[s : s + 500], vecs[s : s + 500], pays[s : s + 500])
    return db, c


def same(sharded_res, single_res):
    assert list(sharded_res.ids) == list(single_res.ids)
    assert np.array_equal(np.asarray(sharded_res.distances), np.asarray(single_res.distances))


@pytest.mark.parametrize("id_type", ["int", "str"])
def test_flat_sharded_equals_one_collection(tmp_path, id_type):
    vecs, pays = points(3000)
    ids = list(range(3000)) if id_type == "int" else [f"doc-{i}" for i in range(3000)]
    db, one = single(tmp_path, vecs, pays, ids, dim=DIM, metric="l2", index="flat", id_type=id_type)
    c = tr.create_collection(tmp_path / "root", "c", 3, DIM, "l2", "flat", id_type=id_type)
    for s in range(0, 3000, 700):
        c.upsert(ids[s : s + 700], vecs[s : s + 700], pays[s : s + 700])
    assert len(c) == 3000
    # Every shard holds a share.
    rows = [sh["rows"] for sh in c.stats()["shards"]]
    assert sum(rows) == 3000 and min(rows) > 700, rows

    rng = np.random.default_rng(9)
    qs = rng.standard_normal((20, DIM)).astype(np.float32)
    flt = {"g": {"$in": [1, 2]}, "tag": {"$ne": "red"}}
    for q in qs[:8]:
        same(c.search(q, k=10), one.search(q.tolist(), k=10))
        got = c.search(q, k=7, filter=flt, include_payload=True)
        want = one.search(q.tolist(), k=7, filter=flt, include_payload=True)
        same(got, want)
        assert got.payloads == want.payloads
    # A batch: one merged result per query.
    batch = c.search(qs, k=5, filter=flt)
    want = one.search_batch(qs, k=5, filter=flt)
    for got_r, want_r in zip(batch, want):
        same(got_r, want_r)

    # get keeps the order given; count, delete by id and by filter agree with one collection.
    probe = [ids[5], ids[2999], ids[17]]
    got = c.get(probe)
    assert [g["id"] for g in got] == probe and np.array_equal(got[1]["vector"], vecs[2999])
    assert c.count({"g": 3}) == one.count({"g": 3})
    assert c.delete(ids[:100]) == one.delete(ids[:100]) == 100
    assert c.delete(filter={"tag": "green"}) == one.delete(filter={"tag": "green"})
    assert len(c) == len(one)
    same(c.search(qs[0], k=10), one.search(qs[0].tolist(), k=10))
    c.close()
    db.close()


def test_bad_input_changes_nothing_and_errors_name_the_problem(tmp_path):
    c = tr.create_collection(tmp_path, "c", 2, DIM, "l2")
    vecs, _ = points(10)
    with pytest.raises(ValueError, match=r"shape \(10, 16\)"):
        c.upsert(list(range(10)), vecs[:, :8])
    with pytest.raises(ValueError, match="10 ids but 9 payloads"):
        c.upsert(list(range(10)), vecs, [{}] * 9)
    with pytest.raises(TypeError, match="position 3"):
        c.upsert([0, 1, 2, "x", 4, 5, 6, 7, 8, 9], vecs)
    # A payload the engine refuses on one shard: the error is the engine's own.
    with pytest.raises(TypeError, match="nested objects are not supported"):
        c.upsert([1], vecs[:1], [{"nested": {"a": 1}}])
    assert len(c) == 0
    with pytest.raises(ValueError, match="text"):
        c.search(vecs[0], text="hello")  # hybrid without text fields
    with pytest.raises(ValueError, match="text"):
        c.search(text="hello")  # no text fields in this collection
    with pytest.raises(trovedb.CollectionExistsError):
        tr.create_collection(tmp_path, "c", 2, DIM, "l2")
    with pytest.raises(trovedb.CollectionNotFoundError):
        tr.open_collection(tmp_path, "nope")
    c.close()
    # A shard map from another format is refused.
    m = tmp_path / "c" / "shards.json"
    doc = json.loads(m.read_text())
    doc["format_version"] = 99
    m.write_text(json.dumps(doc))
    with pytest.raises(trovedb.IncompatibleFormatError, match="format 99"):
        tr.open_collection(tmp_path, "c")


def groups(ids, dists):
    """score -> set of ids, without the group of the worst score."""
    out = {}
    for i, d in zip(ids, np.asarray(dists).tolist()):
        out.setdefault(d, set()).add(i)
    if out:
        out.pop(max(out))
    return out


def test_keyword_search_across_shards_scores_like_one_collection(tmp_path):
    rng = np.random.default_rng(13)
    words = "red green blue fox hen owl river stone cloud ember frost maple quartz".split()
    texts = [" ".join(rng.choice(words, size=rng.integers(2, 12))) for _ in range(1500)]
    vecs, pays = points(1500, seed=13)
    for p, t in zip(pays, texts):
        p["text"] = t
    ids = [f"d{i}" for i in range(1500)]
    cfg = dict(dim=DIM, metric="cosine", index="flat", id_type="str", text_fields=["text"])
    db, one = single(tmp_path, vecs, pays, ids, **cfg)
    c = tr.create_collection(tmp_path / "root", "c", 3, DIM, "cosine", id_type="str",
                             text_fields=["text"])
    c.upsert(ids, vecs, pays)
    # Deletions change the statistics: both sides lose the same documents.
    c.delete(ids[:200])
    one.delete(ids[:200])
    stats = c.text_stats("fox river")
    assert stats == one.text_stats("fox river")
    queries = ["fox", "red fox river", "quartz ember frost", "owl", "nothing-here"]
    for q, flt in [(q, None) for q in queries] + [("fox hen", {"g": {"$lt": 3}})]:
        got = c.search(text=q, k=15, filter=flt, include_payload=True)
        want = one.search(text=q, k=15, filter=flt, include_payload=True)
        # The same scores, bit for bit; among equal scores the order may differ.
        assert np.array_equal(got.distances, -np.asarray(want.scores)), q
        # The same ids at every score above the last one (where a tie may be cut apart).
        assert groups(got.ids, got.distances) == groups(list(want.ids), -np.asarray(want.scores)), q
        assert {h.id: h.payload for h in got}.keys() <= set(ids[200:])
    batch = c.search(text=queries[:3], k=5)
    assert [r.distances.tolist() for r in batch] == [
        (-np.asarray(one.search(text=q, k=5).scores)).tolist() for q in queries[:3]
    ]
    c.close()
    db.close()


def test_hybrid_search_across_shards_fuses_like_one_collection(tmp_path):
    rng = np.random.default_rng(21)
    words = "red green blue fox hen owl river stone cloud ember frost maple quartz".split()
    vecs, pays = points(2000, seed=21)
    for p in pays:
        p["text"] = " ".join(rng.choice(words, size=rng.integers(2, 12)))
    ids = list(range(2000))
    db, one = single(tmp_path, vecs, pays, ids, dim=DIM, metric="cosine", index="flat",
                     text_fields=["text"])
    c = tr.create_collection(tmp_path / "root", "c", 3, DIM, "cosine", text_fields=["text"])
    c.upsert(ids, vecs, pays)
    c.delete(list(range(0, 2000, 9)))
    one.delete(list(range(0, 2000, 9)))
    qv = rng.standard_normal((6, DIM)).astype(np.float32)
    texts = ["fox river", "quartz", "owl hen stone", "maple ember frost cloud", "red", "nothing"]
    for fusion in ("weighted", "rrf"):
        for q, t in zip(qv, texts):
            for flt in (None, {"g": {"$gte": 2}}):
                kw = dict(k=10, filter=flt, fusion=fusion, hybrid_candidates=30, include_payload=True)
                got = c.search(q, text=t, **kw)
                want = one.search(q.tolist(), text=t, **kw)
                assert np.array_equal(got.distances, -np.asarray(want.scores)), (fusion, t, flt)
                assert groups(got.ids, got.distances) == groups(list(want.ids), -np.asarray(want.scores))
                assert all(h.payload == pays[h.id] for h in got)
    # A batch: one text per query vector.
    batch = c.search(qv[:3], text=texts[:3], k=5, alpha=0.3)
    for q, t, r in zip(qv[:3], texts[:3], batch):
        want = one.search(q.tolist(), text=t, k=5, alpha=0.3)
        assert np.array_equal(r.distances, -np.asarray(want.scores))
    c.close()
    db.close()


def recall(found, gt, k=10):
    return float(np.mean([len(set(f[:k]) & set(g[:k])) / k for f, g in zip(found, gt)]))


@pytest.mark.skipif(not DEV.is_dir(), reason="../shared/data/text-minilm-dev not present")
def test_hnsw_sharded_recall_matches_one_collection(tmp_path):
    base = read_fvecs(DEV / "base.fvecs")
    queries = read_fvecs(DEV / "query.fvecs")[:200]
    raw = np.fromfile(DEV / "groundtruth.ivecs", dtype=np.int32)
    gt = raw.reshape(-1, raw[0] + 1)[:200, 1:]
    ids = np.arange(len(base), dtype=np.uint64)
    db = trovedb.open(tmp_path / "single", seal_threshold_rows=len(base) + 1)
    one = db.create_collection("c", dim=384, metric="cosine", index="hnsw")
    for s in range(0, len(base), 5000):
        one.upsert(ids[s : s + 5000], base[s : s + 5000])
    one.flush()
    c = tr.create_collection(
        tmp_path / "root", "c", 4, 384, "cosine", "hnsw",
        open_options={"seal_threshold_rows": len(base) + 1},
    )
    for s in range(0, len(base), 5000):
        c.upsert(ids[s : s + 5000], base[s : s + 5000])
    c.flush()
    r_one = recall([list(r.ids) for r in one.search_batch(queries, k=10)], gt)
    r_sh = recall([r.ids for r in c.search(queries, k=10)], gt)
    print(f"recall@10 at the default ef: one collection {r_one:.4f}, 4 shards {r_sh:.4f}")
    assert r_sh >= r_one - 0.01
    c.close()
    db.close()


def test_datasink_ingest_and_read_back(tmp_path):
    import pyarrow as pa

    vecs, pays = points(4000, seed=3)
    table = pa.table(
        {
            "id": pa.array(np.arange(4000, dtype=np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), DIM),
            "tag": pa.array([p["tag"] for p in pays]),
            "g": pa.array([p["g"] for p in pays]),
        }
    )
    ds = ray.data.from_arrow(table).repartition(8)
    c = tr.create_collection(tmp_path, "docs", 3, DIM, "l2")
    sink = tr.TroveDatasink(tmp_path, "docs", batch_size=300)
    ds.write_datasink(sink)
    assert sink.rows_written == 4000
    assert len(c) == 4000
    got = c.get(list(range(4000)))
    assert all(g is not None for g in got)
    assert all(np.array_equal(g["vector"], vecs[i]) for i, g in enumerate(got))
    assert got[11]["payload"] == {"tag": pays[11]["tag"], "g": pays[11]["g"]}
    assert c.count({"tag": "blue"}) == sum(p["tag"] == "blue" for p in pays)

    out = tr.read_collection(tmp_path, "docs").take_all()
    assert sorted(r["id"] for r in out) == list(range(4000))
    by = {r["id"]: r for r in out}
    assert np.array_equal(np.asarray(by[7]["vector"], dtype=np.float32), vecs[7])
    assert json.loads(by[7]["payload"]) == {"tag": pays[7]["tag"], "g": pays[7]["g"]}
    n = tr.read_collection(tmp_path, "docs", filter={"g": 0}, include_vector=False).count()
    assert n == sum(p["g"] == 0 for p in pays)
    c.close()


@pytest.mark.skipif(not DEV.is_dir(), reason="../shared/data/text-minilm-dev not present")
def test_datasink_ingests_the_dev_set_and_every_point_is_found(tmp_path):
    import pyarrow as pa

    base = read_fvecs(DEV / "base.fvecs")
    meta = [json.loads(line) for line in (DEV / "metadata.jsonl").read_text().splitlines()]
    table = pa.table(
        {
            "id": pa.array([m["doc_id"] for m in meta]),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(base.reshape(-1)), 384),
            "source": pa.array([m["source"] for m in meta]),
            "year": pa.array([m["year"] for m in meta]),
        }
    )
    c = tr.create_collection(tmp_path, "dev", 4, 384, "cosine", "flat", id_type="str")
    sink = tr.TroveDatasink(tmp_path, "dev")
    ray.data.from_arrow(table).repartition(8).write_datasink(sink)
    assert sink.rows_written == len(base) == len(c)
    got = c.get([m["doc_id"] for m in meta])
    assert all(g is not None for g in got)
    assert all(
        np.array_equal(g["vector"], base[i]) and g["payload"] == {"source": meta[i]["source"], "year": meta[i]["year"]}
        for i, g in enumerate(got)
    )
    assert c.count({"source": "kjv"}) == sum(m["source"] == "kjv" for m in meta)
    # Each point is its own nearest neighbour.
    for i in (0, 777, 19_999):
        assert c.search(base[i], k=1).ids == [meta[i]["doc_id"]]
    c.close()


def test_a_shard_killed_mid_ingest_keeps_every_acknowledged_write(tmp_path):
    vecs, pays = points(6000, seed=5)
    c = tr.create_collection(tmp_path, "c", 2, DIM, "l2")
    acked = []
    failures = []
    killed = threading.Event()

    def ingest():
        for s in range(0, 6000, 200):
            while True:
                try:
                    c.upsert(list(range(s, s + 200)), vecs[s : s + 200], pays[s : s + 200])
                    acked.append(s)
                    break
                except tr.ShardError as e:  # a clear failure: the batch is sent again
                    failures.append(str(e))

    t = threading.Thread(target=ingest)
    t.start()
    while len(acked) < 8:
        pass
    victim = c.actors()[0]
    pid_before = ray.get(victim.where.remote())["pid"]
    ray.kill(victim, no_restart=False)
    killed.set()
    t.join(timeout=300)
    assert not t.is_alive()
    assert ray.get(victim.where.remote())["pid"] != pid_before, "the actor restarted"
    assert all("shard 0" in f for f in failures), failures
    assert len(acked) == 30
    got = c.get(list(range(6000)))
    missing = [i for i, g in enumerate(got) if g is None]
    assert not missing, f"{len(missing)} acknowledged points lost, first {missing[:5]}"
    assert all(np.array_equal(g["vector"], vecs[i]) for i, g in enumerate(got))
    q = vecs[123]
    assert c.search(q, k=1).ids == [123]
    print(f"kill mid-ingest: {len(failures)} batch(es) failed clearly and were resent")
    c.close()


DRIVER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import ray
    import trovedb.ray as tr
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    c = tr.open_collection(sys.argv[1], "c")
    qs = np.load(sys.argv[2])
    res = c.search(qs, k=10, filter={"g": {"$lt": 4}})
    print(json.dumps([[list(map(int, r.ids)), r.distances.tolist()] for r in res]))
    c.close()
    """
)


def test_reopen_from_root_in_a_new_driver(tmp_path):
    vecs, pays = points(2000, seed=7)
    c = tr.create_collection(tmp_path / "root", "c", 3, DIM, "cosine", "hnsw")
    c.upsert(np.arange(2000), vecs, pays)
    qs = np.random.default_rng(2).standard_normal((10, DIM)).astype(np.float32)
    want = [[list(map(int, r.ids)), r.distances.tolist()] for r in c.search(qs, k=10, filter={"g": {"$lt": 4}})]
    c.close()
    np.save(tmp_path / "q.npy", qs)
    p = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path / "root"), str(tmp_path / "q.npy")],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got == want


CLUSTER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import ray
    from ray.cluster_utils import Cluster
    import trovedb, trovedb.ray as tr
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    root = sys.argv[1]
    rng = np.random.default_rng(4)
    vecs = rng.standard_normal((1500, 16)).astype(np.float32)
    c = tr.create_collection(root, "c", 4, 16, "l2", "flat")
    c.upsert(np.arange(1500), vecs)
    nodes = [s["node_id"] for s in c.stats()["shards"]]
    db = trovedb.open(root + "/single")
    one = db.create_collection("c", dim=16, metric="l2")
    one.upsert(np.arange(1500), vecs)
    qs = rng.standard_normal((10, 16)).astype(np.float32)
    equal = all(
        list(map(int, a.ids)) == list(map(int, b.ids)) and np.array_equal(a.distances, b.distances)
        for a, b in zip(c.search(qs, k=10), one.search_batch(qs, k=10))
    )
    c.close()
    print(json.dumps({"nodes": len(set(nodes)), "equal": equal}))
    ray.shutdown()
    cluster.shutdown()
    """
)


def test_two_simulated_nodes(tmp_path):
    p = subprocess.run(
        [sys.executable, "-c", CLUSTER, str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got == {"nodes": 2, "equal": True}
