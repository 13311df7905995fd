"""LangChain's own standard suite (`langchain-tests`, sync and async) against
`trovedb.langchain.TroveVectorStore`, plus what the suite does not cover: filters, MMR,
scores, hybrid and keyword modes, metadata round trips, reopening."""

from collections.abc import Generator

import numpy as np
import pytest

from conftest import require

require("langchain_core")
require("langchain_tests")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests  # noqa: E402

import trovedb  # noqa: E402
from trovedb.langchain import TroveVectorStore  # noqa: E402


class TestTroveStandard(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, tmp_path) -> Generator[VectorStore, None, None]:  # type: ignore[override]
        store = TroveVectorStore(embedding=self.get_embeddings(), path=tmp_path / "db", collection_name="lc")
        try:
            yield store
        finally:
            store.close()


class TestTroveStandardFlat(VectorStoreIntegrationTests):
    """The same suite on an exact (flat) collection with text search on."""

    @pytest.fixture()
    def vectorstore(self, tmp_path) -> Generator[VectorStore, None, None]:  # type: ignore[override]
        store = TroveVectorStore(
            embedding=self.get_embeddings(), path=tmp_path / "db", index="flat", text_search=True
        )
        try:
            yield store
        finally:
            store.close()


class Keyed:
    """A fake embedding with controlled geometry: the vector of a text is given by a table
    (unknown texts embed to a fixed vector)."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = table

    def embed_documents(self, texts):
        return [self.table.get(t, [0.5, 0.5, 0.5]) for t in texts]

    def embed_query(self, text):
        return self.table.get(text, [0.5, 0.5, 0.5])


def test_filters_scores_mmr_and_metadata_round_trip(tmp_path):
    emb = DeterministicFakeEmbedding(size=16)
    texts = [f"passage {i} about {'cats' if i % 2 else 'dogs'}" for i in range(60)]
    metas = [
        {"i": i, "animal": "cat" if i % 2 else "dog", "tags": ["a", f"t{i % 3}"],
         "nested": {"page": i, "span": [i, i + 1]}, "weights": [0.5, i]}
        for i in range(60)
    ]
    store = TroveVectorStore.from_texts(texts, emb, metas, ids=[f"doc-{i}" for i in range(60)],
                                        path=tmp_path / "db", index="flat")
    # Metadata comes back exactly, native values and JSON ones alike.
    got = store.get_by_ids(["doc-7", "missing", "doc-3"])
    assert [d.id for d in got] == ["doc-7", "doc-3"]
    assert got[0].metadata == metas[7] and got[0].page_content == texts[7]
    # Filters reach native metadata fields (Mongo style), exact against brute force.
    q = emb.embed_query("which animal")
    docs = store.similarity_search_by_vector(q, k=5, filter={"animal": "cat", "i": {"$lt": 30}})
    vecs = np.asarray(emb.embed_documents(texts), dtype=np.float64)
    qv = np.asarray(q, dtype=np.float64)
    cos = 1 - vecs @ qv / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(qv))
    want = sorted((i for i in range(60) if i % 2 and i < 30), key=lambda i: cos[i])[:5]
    assert [d.id for d in docs] == [f"doc-{i}" for i in want]
    with_scores = store.similarity_search_with_score("which animal", k=3)
    assert [round(s, 4) for _, s in with_scores] == [round(float(cos[int(d.id[4:])]), 4) for d, _ in with_scores]
    rel = store.similarity_search_with_relevance_scores("which animal", k=3)
    assert all(0 <= s <= 1 for _, s in rel)
    # MMR picks k distinct documents among fetch_k, the first being the nearest.
    mmr = store.max_marginal_relevance_search("which animal", k=4, fetch_k=20)
    assert len({d.id for d in mmr}) == 4 and mmr[0].id == f"doc-{int(np.argmin(cos))}"
    for search_type, kw in (("similarity", {"k": 2}), ("mmr", {"k": 2}),
                            ("similarity_score_threshold", {"k": 2, "score_threshold": 0.0})):
        r = store.as_retriever(search_type=search_type, search_kwargs=kw)
        assert len(r.invoke("which animal")) == 2
    # Reserved keys are refused, nothing written.
    with pytest.raises(ValueError, match="reserved"):
        store.add_texts(["x"], [{"page_content": "no"}])
    assert len(store.collection) == 60
    store.close()
    # Reopened from the same path: the same documents.
    again = TroveVectorStore(embedding=emb, path=tmp_path / "db")
    assert again.get_by_ids(["doc-7"])[0].metadata == metas[7]
    again.delete()
    assert len(again.collection) == 0
    again.close()


def test_keyword_and_hybrid_modes(tmp_path):
    table = {"the cat sat": [1, 0, 0], "a dog barked": [0, 1, 0], "fish swim": [0, 0, 1],
             "pets": [0.9, 0.1, 0.0]}
    store = TroveVectorStore(embedding=Keyed(table), path=tmp_path / "db", index="flat", text_search=True)
    store.add_texts(["the cat sat", "a dog barked", "fish swim"], ids=["c", "d", "f"])
    assert [d.id for d in store.similarity_search("pets", k=2)] == ["c", "d"]
    assert [d.id for d in store.similarity_search("dog", k=3, search_mode="keyword")] == ["d"]
    hyb = store.similarity_search_with_score("dog", k=3, search_mode="hybrid")
    assert hyb[0][0].id == "d" and hyb[0][1] >= hyb[-1][1]
    r = store.as_retriever(search_kwargs={"k": 1, "search_mode": "keyword"})
    assert [d.id for d in r.invoke("swim")] == ["f"]
    with pytest.raises(ValueError, match="search_mode"):
        store.similarity_search("x", search_mode="fuzzy")
    store.close()
    # An integer-keyed collection cannot back the store.
    db = trovedb.open(tmp_path / "ints")
    c = db.create_collection("c", dim=3)
    with pytest.raises(ValueError, match="keyed by integers"):
        TroveVectorStore(embedding=Keyed(table), collection=c)
    db.close()


def test_importing_trovedb_does_not_import_langchain():
    import subprocess
    import sys

    code = "import sys, trovedb; print('langchain_core' in sys.modules, 'llama_index' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
