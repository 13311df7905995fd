"""A hypothesis state machine: random upserts, deletes, flushes and reopens against a
dict model; every step checks gets, the length and exact search."""

import shutil
import tempfile

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import trovedb

DIM = 4
ids_st = st.lists(st.integers(0, 30), min_size=1, max_size=6)


class Model(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.db = trovedb.open(self.dir, seal_threshold_rows=8)
        self.c = self.db.create_collection("m", dim=DIM, metric="l2")
        self.model: dict[int, tuple[np.ndarray, dict]] = {}

    @rule(ids=ids_st, seed=st.integers(0, 2**32 - 1))
    def upsert(self, ids, seed):
        vecs = np.random.default_rng(seed).standard_normal((len(ids), DIM)).astype(np.float32)
        pays = [{"seed": seed, "j": j} for j in range(len(ids))]
        self.c.upsert(ids, vecs, pays)
        for j, i in enumerate(ids):
            self.model[i] = (vecs[j], pays[j])

    @rule(ids=ids_st)
    def delete(self, ids):
        expected = len({i for i in ids if i in self.model})
        assert self.c.delete(ids) == expected
        for i in ids:
            self.model.pop(i, None)

    @rule(bound=st.integers(0, 2**32))
    def count_and_search_with_filter(self, bound):
        flt = {"seed": {"$lt": bound}}
        passing = {i: v for i, (v, p) in self.model.items() if p["seed"] < bound}
        assert self.c.count(filter=flt) == len(passing)
        ids = self.c.search(np.zeros(DIM, dtype=np.float32), k=3, filter=flt).ids
        got = ids.tolist()
        want = sorted(passing, key=lambda i: (float((passing[i].astype(np.float64) ** 2).sum()), i))[:3]
        assert got == want

    @rule()
    def flush(self):
        self.c.flush()

    @rule()
    def reopen(self):
        self.db.close()
        self.db = trovedb.open(self.dir, seal_threshold_rows=8)
        self.c = self.db.get_collection("m")

    @invariant()
    def matches_model(self):
        assert len(self.c) == len(self.model)
        for i, (v, p) in self.model.items():
            got = self.c.get(i)
            np.testing.assert_array_equal(got["vector"], v)
            assert got["payload"] == p
        if self.model:
            q = np.ones(DIM, dtype=np.float32)
            k = min(3, len(self.model))
            res = self.c.search(q, k=k)
            ids, dists = res.ids, res.distances
            want = sorted(((float(((v - q) ** 2).sum()), i) for i, (v, _) in self.model.items()))[:k]
            np.testing.assert_allclose(dists, [d for d, _ in want], rtol=1e-5, atol=1e-5)

    def teardown(self):
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)


TestModel = Model.TestCase
TestModel.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
