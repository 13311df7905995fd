"""What a retrieval app reaches for first: get-or-create, empty batches, numpy values in
payloads and filters, errors that name the query row."""

import numpy as np
import pytest

import trovedb


def test_get_or_create_collection_returns_the_same_collection_or_names_the_difference(tmp_path):
    db = trovedb.open(tmp_path)
    c = db.get_or_create_collection("docs", dim=4, metric="cosine", index="hnsw", text_fields=["t"])
    c.upsert([1], [[1, 2, 3, 4]], [{"t": "hello"}])
    again = db.get_or_create_collection("docs", dim=4, metric="cosine", index="hnsw", text_fields=["t"])
    assert again.count() == 1
    with pytest.raises(ValueError, match=r"dim 4 \(asked 8\)"):
        db.get_or_create_collection("docs", dim=8, metric="cosine", index="hnsw", text_fields=["t"])
    with pytest.raises(ValueError, match="metric cosine"):
        db.get_or_create_collection("docs", dim=4, metric="l2", index="hnsw", text_fields=["t"])
    with pytest.raises(ValueError, match="text"):
        db.get_or_create_collection("docs", dim=4, metric="cosine", index="hnsw")
    assert db.get_collection("docs").count() == 1
    db.close()
    db = trovedb.open(tmp_path)  # and after a reopen
    assert db.get_or_create_collection("docs", dim=4, metric="cosine", index="hnsw",
                                       text_fields=["t"]).count() == 1
    db.close()


def test_an_empty_batch_is_a_no_op_and_count_needs_no_filter(tmp_path):
    db = trovedb.open(tmp_path)
    c = db.create_collection("c", dim=3)
    c.upsert([], [])
    c.upsert([], np.zeros((0, 3), np.float32))
    assert c.count() == 0
    c.upsert([7], [[1, 2, 3]])
    assert c.count() == 1
    db.close()


def test_numpy_scalars_are_plain_values_in_payloads_and_filters(tmp_path):
    db = trovedb.open(tmp_path)
    c = db.create_collection("c", dim=2)
    c.upsert(
        [1, 2],
        [[1, 0], [0, 1]],
        [
            {"n": np.int64(3), "ok": np.bool_(True), "x": np.float32(0.5), "s": np.str_("a")},
            {"n": np.int32(4), "ok": np.bool_(False), "x": np.float64(1.5), "s": "b"},
        ],
    )
    p = c.get(1)["payload"]
    assert p == {"n": 3, "ok": True, "x": 0.5, "s": "a"}
    assert type(p["n"]) is int and type(p["ok"]) is bool
    assert c.count({"n": np.int64(3)}) == 1
    assert c.count({"n": {"$in": [np.int64(3), np.int32(4)]}}) == 2
    assert c.count({"ok": np.bool_(False)}) == 1
    with pytest.raises(TypeError, match="filter value of type"):
        c.count({"n": object()})
    with pytest.raises(TypeError, match="item 0 is float 0.0"):
        c.upsert([3], [[1, 1]], [{"bad": np.zeros(3)}])
    # A numpy array of strings is a list of tags.
    c.upsert([3], [[1, 1]], [{"tags": np.array(["x", "y"])}])
    assert c.get(3)["payload"] == {"tags": ["x", "y"]}
    assert len(c) == 3
    db.close()


def test_a_bad_query_row_is_named(tmp_path):
    db = trovedb.open(tmp_path)
    c = db.create_collection("c", dim=3, metric="cosine")
    c.upsert([1], [[1, 2, 3]])
    q = np.ones((3, 3), np.float32)
    q[2, 1] = np.nan
    with pytest.raises(ValueError, match="query 2 has a non-finite value at component 1"):
        c.search(q, k=1)
    q[2] = 0
    with pytest.raises(ValueError, match="query 2 has zero length"):
        c.search(q, k=1)
    with pytest.raises(ValueError, match="got -1"):
        c.search(q[0], k=-1)
    db.close()
