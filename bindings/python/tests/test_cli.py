"""The `trovedb` command line on real databases: every command's JSON output is checked
against the Python API or brute force, a damaged database makes `verify` fail, bad input
is refused with exit code 2 and changes nothing."""

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import trovedb
from conftest import require

DIM = 16


def run(*args, check_code=0):
    """Run `python -m trovedb ARGS` in a fresh process; returns (stdout, stderr)."""
    p = subprocess.run(
        [sys.executable, "-m", "trovedb", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == check_code, (p.returncode, p.stdout, p.stderr)
    return p.stdout, p.stderr


def run_json(*args, check_code=0):
    out, _ = run(*args, "--json", check_code=check_code)
    return json.loads(out)


@pytest.fixture()
def data():
    rng = np.random.default_rng(11)
    vecs = rng.standard_normal((1200, DIM)).astype(np.float32)
    payloads = [
        {"text": f"note {i} about {'cats' if i % 3 else 'dogs'} and {'rain' if i % 5 else 'sun'}",
         "n": i, "tag": ["a", "b", "c"][i % 3]}
        for i in range(len(vecs))
    ]
    return vecs, payloads


@pytest.fixture()
def db_path(tmp_path, data):
    """A database with an l2 flat collection (int ids, several segments, deletions) and a
    cosine hnsw collection with string ids and a text field."""
    vecs, payloads = data
    path = tmp_path / "db"
    with trovedb.open(path, seal_threshold_rows=400, background_compaction=False) as db:
        flat = db.create_collection("flat", dim=DIM, metric="l2", index="flat")
        for s in range(0, 1200, 300):
            flat.upsert(np.arange(s, s + 300), vecs[s : s + 300], payloads[s : s + 300])
        flat.delete([3, 4, 5])
        docs = db.create_collection(
            "docs", dim=DIM, metric="cosine", index="hnsw", id_type="str", text_fields=["text"]
        )
        docs.upsert([f"d{i}" for i in range(500)], vecs[:500], payloads[:500])
        db.get_collection("flat").flush()
    return path


def test_console_script_is_installed():
    exe = shutil.which("trovedb")
    assert exe is not None, "the wheel installs a `trovedb` console script"
    p = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == f"trovedb {trovedb.__version__}"


def test_info_and_inspect_match_the_api(db_path):
    doc = run_json("info", db_path)
    assert doc["path"] == str(db_path.resolve())
    by = {c["name"]: c for c in doc["collections"]}
    assert set(by) == {"flat", "docs"} and doc["unreadable"] == {}
    with trovedb.open(db_path, read_only=True) as db:
        for name, c in by.items():
            col = db.get_collection(name)
            s = col.stats()
            assert c["rows"] == len(col) == s["rows"]
            assert c["segments"] == len(s["segments"])
            assert c["config"] == col.config
            assert c["bytes"] == s["bytes_on_disk"]
            assert c["manifest_version"] == s["manifest_version"]
            assert c["segment_versions"] == sorted({g["format_version"] for g in s["segments"]})
    assert by["flat"]["rows"] == 1197 and by["flat"]["segments"] >= 2
    assert by["docs"]["config"]["text_fields"] == ["text"]
    assert by["docs"]["config"]["id_type"] == "str"
    # Text collections and string ids need manifest format 2; a plain one stays at 1.
    assert by["docs"]["manifest_version"] == 2 and by["flat"]["manifest_version"] == 1
    assert doc["rows"] == 1197 + 500

    ins = run_json("inspect", db_path, "flat")
    assert ins["config"]["index"] == "flat" and ins["config"]["metric"] == "l2"
    segs = ins["stats"]["segments"]
    assert len(segs) >= 2 and sum(g["rows"] for g in segs) + ins["stats"]["appendable_rows"] == 1200
    assert sum(g["deleted"] for g in segs) == 3
    assert all(list(db_path.rglob(g["file"])) for g in segs)
    assert ins["stats"]["wal_files"] >= 1 and ins["stats"]["read_only"] is True
    # The human-readable forms run and name what they show.
    out, _ = run("info", db_path)
    assert "flat" in out and "docs" in out and "1,697 rows" in out
    out, _ = run("inspect", db_path, "docs")
    assert "language=english" in out and "hnsw" in out


def segment_files(db_path, collection):
    return sorted(p for p in db_path.rglob("*.seg") if collection in p.parts)


def test_verify_intact_then_damaged_then_repair(db_path, data):
    vecs, _ = data
    doc = run_json("verify", db_path)
    assert doc["intact"] is True and {c["name"] for c in doc["collections"]} == {"flat", "docs"}
    # Flip one byte of a stored vector (row 500's, in the second segment of `flat`).
    target = vecs[500].tobytes()
    for f in segment_files(db_path, "flat"):
        raw = bytearray(f.read_bytes())
        at = raw.find(target)
        if at >= 0:
            raw[at + 5] ^= 0x40
            f.write_bytes(bytes(raw))
            damaged = f
            break
    else:
        pytest.fail("row 500's vector was not found in any segment file")
    doc = run_json("verify", db_path, check_code=1)
    assert doc["intact"] is False
    res = {c["name"]: c for c in doc["collections"]}
    assert res["docs"]["ok"] is True
    assert res["flat"]["ok"] is False and damaged.name in res["flat"]["error"]
    out, _ = run("verify", db_path, check_code=1)
    assert "DAMAGED" in out
    # Only the intact collection: exit 0.
    assert run_json("verify", db_path, "docs")["intact"] is True

    # A damaged manifest: the collection cannot be opened at all.
    man = next(p for p in db_path.rglob("MANIFEST*") if "docs" in p.parts)
    original = man.read_bytes()
    raw = bytearray(original)
    raw[len(raw) // 2] ^= 0xFF
    man.write_bytes(bytes(raw))
    doc = run_json("verify", db_path, check_code=1)
    res = {c["name"]: c for c in doc["collections"]}
    assert res["docs"]["ok"] is False and "Corruption" in res["docs"]["error"]
    info = run_json("info", db_path, check_code=1)
    assert "docs" in info["unreadable"]
    man.write_bytes(original)

    rep = run_json("repair", db_path)
    assert rep["ok"] is True
    assert rep["collections"]["flat"]["dropped_segments"], rep
    assert run_json("verify", db_path)["intact"] is True


def brute_force(vecs, live, q, k):
    d = ((vecs[live] - q) ** 2).sum(axis=1)
    order = np.argsort(d, kind="stable")[:k]
    return [int(live[i]) for i in order], d[order]


def test_search_matches_brute_force_and_the_api(db_path, data, tmp_path):
    vecs, payloads = data
    live = np.array([i for i in range(1200) if i not in (3, 4, 5)])
    q = vecs[77] + 0.05
    np.save(tmp_path / "q.npy", q)
    hits = run_json("search", db_path, "flat", "--vector-file", tmp_path / "q.npy", "-k", 7)
    ids, dists = brute_force(vecs, live, q, 7)
    assert [h["id"] for h in hits] == ids
    np.testing.assert_allclose([h["distance"] for h in hits], dists, rtol=1e-4, atol=1e-5)
    assert hits[0]["payload"] == payloads[ids[0]]

    # A filter, and a query given inline.
    flt = {"tag": "b", "n": {"$gte": 600}}
    hits = run_json(
        "search", db_path, "flat", "--vector", json.dumps(q.tolist()), "-k", 5, "--filter",
        json.dumps(flt),
    )
    fl = np.array([i for i in live if payloads[i]["tag"] == "b" and i >= 600])
    assert [h["id"] for h in hits] == brute_force(vecs, fl, q, 5)[0]

    # Several queries from an .fvecs file: one result list per query.
    qs = vecs[[10, 20]] + 0.01
    with open(tmp_path / "qs.fvecs", "wb") as f:
        for row in qs:
            np.int32(DIM).tofile(f)
            row.astype(np.float32).tofile(f)
    many = run_json("search", db_path, "flat", "--vector-file", tmp_path / "qs.fvecs", "-k", 3)
    assert [[h["id"] for h in r] for r in many] == [brute_force(vecs, live, x, 3)[0] for x in qs]

    # Keyword, hybrid and more-like-this answers equal the Python API's.
    with trovedb.open(db_path, read_only=True) as db:
        docs = db.get_collection("docs")
        want = docs.search(text="dogs sun", k=5, include_payload=True).to_list()
        assert run_json("search", db_path, "docs", "--text", "dogs sun", "-k", 5) == want
        want = docs.search(id="d9", k=4, include_payload=True).to_list()
        assert run_json("search", db_path, "docs", "--id", "d9", "-k", 4) == want
        assert "d9" not in [h["id"] for h in want]
        want = docs.search(vecs[3].tolist(), text="rain", k=4, ef=128).to_list()
        got = run_json(
            "search", db_path, "docs", "--vector", json.dumps(vecs[3].tolist()), "--text",
            "rain", "-k", 4, "--ef", 128, "--no-payload",
        )
        assert got == want
    out, _ = run("search", db_path, "docs", "--text", "dogs", "-k", 2)
    assert "score" in out and "rank" in out


def read_all(path, name):
    with trovedb.open(path, read_only=True) as db:
        c = db.get_collection(name)
        pts, cur = [], None
        while True:
            page, cur = c.scroll(limit=500, cursor=cur, include_vector=True)
            pts += page
            if cur is None:
                break
        return {p["id"]: (np.asarray(p["vector"]), p["payload"]) for p in pts}, c.config


def test_import_formats_and_export_round_trips(tmp_path, data, db_path):
    vecs, payloads = data
    # .npy with ids from a file; .fvecs with consecutive ids from --first-id.
    np.save(tmp_path / "v.npy", vecs[:300])
    np.save(tmp_path / "ids.npy", np.arange(1000, 1300, dtype=np.uint64))
    r = run_json("import", tmp_path / "new", "vec", tmp_path / "v.npy", "--ids", tmp_path / "ids.npy",
                 "--metric", "l2", "--index", "flat", "--batch-size", 64)
    assert r["created"] is True and r["rows_written"] == 300 and r["rows_in_collection"] == 300
    with open(tmp_path / "v.fvecs", "wb") as f:
        for row in vecs[300:400]:
            np.int32(DIM).tofile(f)
            row.tofile(f)
    run_json("import", tmp_path / "new", "vec", tmp_path / "v.fvecs", "--first-id", 5000)
    got, cfg = read_all(tmp_path / "new", "vec")
    assert cfg["metric"] == "l2" and cfg["index"] == "flat" and len(got) == 400
    for i in range(300):
        assert np.array_equal(got[1000 + i][0], vecs[i])
    for i in range(100):
        assert np.array_equal(got[5000 + i][0], vecs[300 + i])

    # Export as JSON lines, import into a new database: the same points, bit for bit.
    run_json("export", db_path, "docs", tmp_path / "docs.jsonl")
    lines = (tmp_path / "docs.jsonl").read_text().splitlines()
    assert len(lines) == 500
    r = run_json("import", tmp_path / "copy", "docs", tmp_path / "docs.jsonl", "--text-field", "text",
                 "--index", "hnsw")
    assert r["rows_written"] == 500
    a, cfg_a = read_all(db_path, "docs")
    b, cfg_b = read_all(tmp_path / "copy", "docs")
    assert cfg_b["id_type"] == "str" and cfg_b["text_fields"] == ["text"]
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k][0], b[k][0]) and a[k][1] == b[k][1]
    # Keyword search works on what was imported.
    hits = run_json("search", tmp_path / "copy", "docs", "--text", "dogs", "-k", 3)
    assert all("dogs" in h["payload"]["text"] for h in hits)

    # Export with a filter, without vectors, to stdout.
    out, _ = run("export", db_path, "flat", "-", "--filter", '{"n": {"$lt": 10}}', "--no-vectors")
    recs = [json.loads(x) for x in out.splitlines()]
    assert [r["id"] for r in recs] == [0, 1, 2, 6, 7, 8, 9]
    assert all("vector" not in r and r["payload"] == payloads[r["id"]] for r in recs)


def test_parquet_round_trip(tmp_path, db_path):
    require("pyarrow")
    run_json("export", db_path, "flat", tmp_path / "flat.parquet")
    r = run_json("import", tmp_path / "pq", "flat", tmp_path / "flat.parquet", "--metric", "l2",
                 "--index", "flat")
    assert r["rows_written"] == 1197
    a, _ = read_all(db_path, "flat")
    b, _ = read_all(tmp_path / "pq", "flat")
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k][0], b[k][0]) and a[k][1] == b[k][1]
    # A Parquet file from a pipeline: id, vector and plain columns (payload fields).
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.table({
        "id": pa.array(["x", "y"]),
        "vector": pa.array([[1.0, 0.0], [0.0, 1.0]], type=pa.list_(pa.float32())),
        "source": pa.array(["a.txt", "b.txt"]),
    })
    pq.write_table(t, tmp_path / "pipe.parquet")
    run_json("import", tmp_path / "pipe", "p", tmp_path / "pipe.parquet")
    got, cfg = read_all(tmp_path / "pipe", "p")
    assert cfg["id_type"] == "str" and got["y"][1] == {"source": "b.txt"}


def test_bad_input_is_refused_and_changes_nothing(tmp_path, db_path, data):
    vecs, _ = data
    good = [json.dumps({"id": i, "vector": vecs[i].tolist()}) for i in range(8)]
    # Line 5 is malformed: nothing is imported, the collection is not even created.
    bad = good[:4] + ['{"id": 4, "vector": [1, 2'] + good[5:]
    (tmp_path / "bad.jsonl").write_text("\n".join(bad) + "\n")
    _, err = run("import", db_path, "fresh", tmp_path / "bad.jsonl", check_code=2)
    assert "bad.jsonl:5" in err and "not valid JSON" in err
    # A vector of the wrong length on line 3.
    bad = good[:2] + [json.dumps({"id": 2, "vector": [1.0, 2.0]})] + good[3:]
    (tmp_path / "bad.jsonl").write_text("\n".join(bad) + "\n")
    _, err = run("import", db_path, "fresh", tmp_path / "bad.jsonl", check_code=2)
    assert "row 3" in err and "2 numbers" in err
    # Into an existing collection of another dimension.
    np.save(tmp_path / "w.npy", np.ones((4, DIM + 1), dtype=np.float32))
    _, err = run("import", db_path, "flat", tmp_path / "w.npy", check_code=2)
    assert f"dim {DIM}" in err and "nothing imported" in err
    with trovedb.open(db_path, read_only=True) as db:
        assert "fresh" not in db.list_collections()
        assert len(db.get_collection("flat")) == 1197
    # A filter that is not JSON, one the engine refuses, a missing collection or database.
    _, err = run("search", db_path, "flat", "--vector", "[1]", "--filter", "{nope", check_code=2)
    assert "--filter is not valid JSON" in err
    _, err = run("search", db_path, "flat", "--vector", json.dumps([0.0] * DIM), "--filter",
                 '{"n": {"$regex": "x"}}', check_code=2)
    assert "$regex" in err
    _, err = run("search", db_path, "flat", "--vector", "[1, 2]", check_code=2)
    assert "(16,)" in err
    _, err = run("inspect", db_path, "nope", check_code=3)
    assert "nope" in err
    _, err = run("info", tmp_path / "missing", check_code=3)
    assert "missing" in err
    _, err = run("search", db_path, "flat", check_code=2)  # no query at all
    # Usage errors from argparse.
    run("frobnicate", db_path, check_code=2)


def test_backup_and_compact(tmp_path, db_path):
    rep = run_json("backup", db_path, tmp_path / "bk")
    assert sorted(rep["collections"]) == ["docs", "flat"] and rep["bytes"] > 0
    a, _ = read_all(db_path, "flat")
    b, _ = read_all(tmp_path / "bk", "flat")
    assert a.keys() == b.keys() and all(np.array_equal(a[k][0], b[k][0]) for k in a)
    assert run_json("verify", tmp_path / "bk")["intact"] is True
    # A destination that is not empty is refused.
    _, err = run("backup", db_path, tmp_path / "bk", check_code=2)
    assert "not an empty directory" in err

    # compact needs the writer's lock: refused while another handle writes.
    with trovedb.open(db_path):
        _, err = run("compact", db_path, check_code=3)
        assert "LockedError" in err
        # Reading commands work beside the writer.
        assert run_json("verify", db_path)["intact"] is True
    rep = run_json("compact", db_path, "flat")
    assert rep["collections"][0]["segments_before"] >= 2
    assert rep["collections"][0]["segments_after"] == 1
    c, _ = read_all(db_path, "flat")
    assert c.keys() == a.keys()
