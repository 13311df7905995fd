"""trovedb.llama_index.TroveVectorStore under LlamaIndex: an index built from documents,
retrieved with every filter operator and condition, documents deleted by ref_doc_id, the
query modes, reopened from the same path. Offline: a hashing embedding, a whitespace
tokenizer for the splitter."""

import hashlib
import zlib

import numpy as np
import pytest

from conftest import require

require("llama_index.core")

from llama_index.core import Document, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

import trovedb  # noqa: E402
from trovedb.llama_index import TroveVectorStore  # noqa: E402

DIM = 32


class HashEmbedding(BaseEmbedding):
    """Bag of hashed words: texts sharing words are near. Deterministic, offline."""

    def _vec(self, text: str) -> list[float]:
        v = np.zeros(DIM)
        for w in text.lower().split():
            h = zlib.crc32(w.strip(".,:;!?").encode())
            v[h % DIM] += 1.0 if (h >> 8) & 1 else -1.0
        v[int(hashlib.md5(text.encode()).hexdigest(), 16) % DIM] += 0.01
        return v.tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vec(text)


WORDS = "river mountain forest desert ocean city village castle bridge harbor".split()


def corpus():
    docs = []
    for d in range(12):
        sentences = [f"The {WORDS[(d + s) % 10]} near the {WORDS[(d * 3 + s) % 10]} is old {s}." for s in range(12)]
        docs.append(Document(
            text=" ".join(sentences),
            id_=f"doc-{d}",
            metadata={"year": 2000 + d, "kind": "even" if d % 2 == 0 else "odd",
                      "tags": [WORDS[d % 10], "all"], "title": f"Document {d}", "nested": {"d": d}},
        ))
    return docs


def build(tmp_path, **kw):
    store = TroveVectorStore(path=tmp_path / "db", collection_name="li", index="flat", **kw)
    index = VectorStoreIndex.from_documents(
        corpus(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=HashEmbedding(),
        transformations=[SentenceSplitter(chunk_size=24, chunk_overlap=0, tokenizer=str.split)],
    )
    return store, index


def exact(store, query, got, k, keep=lambda payload: True):
    """`got` (node ids) is an exact top-k of the stored vectors passing `keep`: the same
    count, and at every rank the oracle's distance (only ties may reorder)."""
    want = brute(store, query, 10**9, keep, with_dist=True)
    dist = dict((i, d) for d, i in want)
    assert len(got) == min(k, len(want))
    for r, i in enumerate(got):
        assert i in dist, f"{i} does not pass the filter"
        assert abs(dist[i] - want[r][0]) < 1e-6, (r, i)


def brute(store, query, k, keep=lambda payload: True, with_dist=False):
    """Exact cosine top-k over the stored vectors and payloads (the oracle)."""
    c = store.client
    pts, cursor = [], None
    while True:
        page, cursor = c.scroll(limit=500, cursor=cursor, include_vector=True)
        pts += page
        if cursor is None:
            break
    q = np.asarray(HashEmbedding()._vec(query))
    scored = []
    for p in pts:
        if keep(p["payload"]):
            v = p["vector"].astype(np.float64)
            scored.append((1 - v @ q / (np.linalg.norm(v) * np.linalg.norm(q)), p["id"]))
    top = sorted(scored)[:k]
    return top if with_dist else [i for _, i in top]


def test_index_from_documents_filters_delete_and_reopen(tmp_path):
    store, index = build(tmp_path)
    c = store.client
    assert c.id_type == "str" and len(c) > 24  # several chunks per document
    q = "old river near the castle"
    got = index.as_retriever(similarity_top_k=5).retrieve(q)
    exact(store, q, [n.node.node_id for n in got], 5)
    assert all(n.node.ref_doc_id.startswith("doc-") for n in got)
    assert got[0].node.metadata["nested"] == {"d": int(got[0].node.ref_doc_id[4:])}

    def check(filters, keep):
        r = index.as_retriever(similarity_top_k=6, filters=filters).retrieve(q)
        exact(store, q, [n.node.node_id for n in r], 6, keep)

    F, O = MetadataFilter, FilterOperator
    check(MetadataFilters(filters=[F(key="kind", value="odd")]), lambda p: p["kind"] == "odd")
    check(MetadataFilters(filters=[F(key="year", value=2005, operator=O.GT),
                                   F(key="year", value=2009, operator=O.LTE)]),
          lambda p: 2005 < p["year"] <= 2009)
    check(MetadataFilters(filters=[F(key="year", value=2003, operator=O.LT)]), lambda p: p["year"] < 2003)
    check(MetadataFilters(filters=[F(key="year", value=2003, operator=O.GTE)]), lambda p: p["year"] >= 2003)
    check(MetadataFilters(filters=[F(key="kind", value="odd", operator=O.NE)]), lambda p: p["kind"] != "odd")
    check(MetadataFilters(filters=[F(key="year", value=[2001, 2004], operator=O.IN)]),
          lambda p: p["year"] in (2001, 2004))
    check(MetadataFilters(filters=[F(key="year", value=[2001, 2004], operator=O.NIN)]),
          lambda p: p["year"] not in (2001, 2004))
    check(MetadataFilters(filters=[F(key="tags", value=["river", "ocean"], operator=O.ANY)]),
          lambda p: bool({"river", "ocean"} & set(p["tags"])))
    check(MetadataFilters(filters=[F(key="tags", value=["river", "all"], operator=O.ALL)]),
          lambda p: {"river", "all"} <= set(p["tags"]))
    check(MetadataFilters(filters=[F(key="tags", value="forest", operator=O.CONTAINS)]),
          lambda p: "forest" in p["tags"])
    check(MetadataFilters(filters=[F(key="missing", value=None, operator=O.IS_EMPTY)]), lambda p: True)
    check(MetadataFilters(filters=[F(key="kind", value=None, operator=O.IS_EMPTY)]), lambda p: False)
    check(MetadataFilters(filters=[F(key="kind", value="odd"), F(key="year", value=2000)],
                          condition=FilterCondition.OR),
          lambda p: p["kind"] == "odd" or p["year"] == 2000)
    check(MetadataFilters(filters=[F(key="kind", value="odd"), F(key="year", value=2000)],
                          condition=FilterCondition.NOT),
          lambda p: not (p["kind"] == "odd" or p["year"] == 2000))
    check(MetadataFilters(filters=[
        F(key="kind", value="even"),
        MetadataFilters(filters=[F(key="year", value=2002), F(key="year", value=2010)],
                        condition=FilterCondition.OR)]),
        lambda p: p["kind"] == "even" and p["year"] in (2002, 2010))
    with pytest.raises(ValueError, match="text_match"):
        index.as_retriever(filters=MetadataFilters(
            filters=[F(key="title", value="Doc", operator=O.TEXT_MATCH)])).retrieve(q)

    # Delete a source document: all its chunks go.
    before = len(c)
    n3 = c.count({"ref_doc_id": "doc-3"})
    assert n3 > 1
    index.delete_ref_doc("doc-3")
    assert len(c) == before - n3 and c.count({"ref_doc_id": "doc-3"}) == 0
    # get_nodes / delete_nodes by id and by filter.
    some = [n.node.node_id for n in got[:2] if n.node.ref_doc_id != "doc-3"]
    assert [n.node_id for n in store.get_nodes(node_ids=some)] == some
    odd = store.get_nodes(filters=MetadataFilters(filters=[F(key="kind", value="odd")]))
    assert odd and all(n.metadata["kind"] == "odd" for n in odd) and len(odd) == c.count({"kind": "odd"})
    store.delete_nodes(node_ids=some[:1])
    assert store.get_nodes(node_ids=some[:1]) == []
    store.delete_nodes(filters=MetadataFilters(filters=[F(key="year", value=2011)]))
    assert c.count({"year": 2011}) == 0
    remaining = len(c)
    store.close()

    # Reopened from the same path: the same nodes, retrievable.
    store = TroveVectorStore(path=tmp_path / "db", collection_name="li")
    assert len(store.client) == remaining
    index = VectorStoreIndex.from_vector_store(store, embed_model=HashEmbedding())
    got = index.as_retriever(similarity_top_k=5).retrieve(q)
    exact(store, q, [n.node.node_id for n in got], 5)
    store.clear()
    assert len(store.client) == 0
    store.close()


def test_query_modes_text_hybrid_and_mmr(tmp_path):
    store, index = build(tmp_path, text_search=True)
    emb = HashEmbedding()
    q = "castle harbor"
    qv = emb.get_query_embedding(q)
    text = store.query(VectorStoreQuery(query_str=q, similarity_top_k=5, mode=VectorStoreQueryMode.TEXT_SEARCH))
    assert len(text.nodes) == 5 and all(
        "castle" in n.get_content().lower() or "harbor" in n.get_content().lower() for n in text.nodes)
    assert text.similarities == sorted(text.similarities, reverse=True)
    hyb = store.query(VectorStoreQuery(query_str=q, query_embedding=qv, similarity_top_k=5,
                                       mode=VectorStoreQueryMode.HYBRID, alpha=1.0))
    vec = store.query(VectorStoreQuery(query_embedding=qv, similarity_top_k=5))
    assert hyb.ids[0] == vec.ids[0]  # alpha=1 is the vector ranking's head
    mmr = store.query(VectorStoreQuery(query_embedding=qv, similarity_top_k=4, mode=VectorStoreQueryMode.MMR,
                                       mmr_threshold=0.5))
    assert len(set(mmr.ids)) == 4 and mmr.ids[0] == vec.ids[0]
    r = index.as_retriever(similarity_top_k=3, vector_store_query_mode="hybrid", alpha=0.5).retrieve(q)
    assert len(r) == 3
    # A token match on the node text ($match).
    got = store.query(VectorStoreQuery(query_embedding=qv, similarity_top_k=50, filters=MetadataFilters(
        filters=[MetadataFilter(key="text", value="desert", operator=FilterOperator.TEXT_MATCH)])))
    assert got.nodes and all("desert" in n.get_content().lower() for n in got.nodes)
    assert len(got.nodes) == sum("desert" in n.get_content().lower() for n in store.get_nodes(filters=MetadataFilters(filters=[])))
    store.close()
    db = trovedb.open(tmp_path / "ints")
    with pytest.raises(ValueError, match="keyed by integers"):
        TroveVectorStore(collection=db.create_collection("c", dim=2))
    db.close()
