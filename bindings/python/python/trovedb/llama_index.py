"""LlamaIndex integration: `TroveVectorStore`, a `BasePydanticVectorStore` over a trovedb
collection keyed by strings (the node ids).

    pip install "trovedb[llama-index]"

    from llama_index.core import StorageContext, VectorStoreIndex
    from trovedb.llama_index import TroveVectorStore
    store = TroveVectorStore(path="./vectors", collection_name="docs")
    index = VectorStoreIndex.from_documents(
        documents, storage_context=StorageContext.from_defaults(vector_store=store)
    )
    index.as_retriever(similarity_top_k=4, filters=MetadataFilters(...)).retrieve("question")

A node is a point: its id is the node id, its vector the node's embedding, and its payload
holds the node's text (`text_field`, default "text"), the metadata values trovedb stores
natively (str, int, float, bool, None, lists of str: filters reach these), `ref_doc_id`,
and the node itself as JSON (`_node_content`, LlamaIndex's own serialisation) from which
nodes are rebuilt exactly. `MetadataFilters` become trovedb filters: every `FilterOperator`
(`text_match` is a token match on the text field, which needs `text_search=True`; `is_empty`
is missing or null — an empty list does not count as empty) and AND / OR / NOT, nested.
Query modes: default (vector), `mmr`, `text_search` / `sparse` (BM25) and `hybrid` (BM25
fused with the vector, `alpha` weighting the vector side), the last two with
`text_search=True` at creation. This module imports `llama_index.core`; `import trovedb`
never does.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence

import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

import trovedb
from trovedb._integration import Target, native, one

_BATCH = 512
_RESERVED = ("_node_content", "_node_type", "ref_doc_id", "doc_id", "document_id")


def _condition(f: MetadataFilter, text_field: str) -> dict:
    """One `MetadataFilter` as a trovedb filter."""
    key, value, op = f.key, f.value, f.operator
    if op == FilterOperator.EQ:
        return {key: value}
    if op == FilterOperator.NE:
        return {key: {"$ne": value}}
    if op in (FilterOperator.GT, FilterOperator.GTE, FilterOperator.LT, FilterOperator.LTE):
        return {key: {{">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte"}[op.value]: value}}
    if op in (FilterOperator.IN, FilterOperator.ANY):
        # On a list field, equality is membership: any of the values.
        return {key: {"$in": list(value if isinstance(value, list) else [value])}}
    if op == FilterOperator.NIN:
        return {key: {"$nin": list(value if isinstance(value, list) else [value])}}
    if op == FilterOperator.ALL:
        return {"$and": [{key: v} for v in (value if isinstance(value, list) else [value])]}
    if op == FilterOperator.CONTAINS:
        return {key: value}
    if op in (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE):
        if key != text_field:
            raise ValueError(
                f"{op.value} filters work on the node text ({text_field!r}, a BM25 token match), "
                f"not on metadata field {key!r}"
            )
        return {key: {"$match": str(value)}}
    if op == FilterOperator.IS_EMPTY:
        return {"$or": [{key: {"$exists": False}}, {key: None}, {key: ""}]}
    raise ValueError(f"unsupported filter operator {op!r}")


def to_trovedb_filter(filters: MetadataFilters, text_field: str = "text") -> dict:
    """`MetadataFilters` (nested, with AND / OR / NOT) as a trovedb (Mongo-style) filter."""
    parts = [
        to_trovedb_filter(f, text_field) if isinstance(f, MetadataFilters) else _condition(f, text_field)
        for f in filters.filters
    ]
    cond = filters.condition or FilterCondition.AND
    if cond == FilterCondition.AND:
        return {"$and": parts}
    if cond == FilterCondition.OR:
        return {"$or": parts}
    if cond == FilterCondition.NOT:
        # LlamaIndex's NOT: none of the filters holds.
        return {"$not": {"$or": parts}}
    raise ValueError(f"unsupported filter condition {cond!r}")


class TroveVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store backed by a trovedb collection keyed by node ids.

    Give `path` (a database directory the store opens and closes) or an open `database`,
    and a `collection_name`; or an existing string-keyed `collection`. The collection is
    created on the first `add` (its dimension is the embeddings') with `metric`, `index`,
    `index_params`, and a BM25 index over the node text when `text_search=True`.
    """

    stores_text: bool = True
    flat_metadata: bool = False

    _target: Any = PrivateAttr(default=None)
    _index: str = PrivateAttr(default="hnsw")
    _index_params: dict = PrivateAttr(default_factory=dict)
    _text_field: str = PrivateAttr(default="text")
    _text_search: bool = PrivateAttr(default=False)

    def __init__(
        self,
        path: Optional[str | os.PathLike[str]] = None,
        collection_name: str = "llama_index",
        *,
        database: Optional[trovedb.Database] = None,
        collection: Optional[trovedb.Collection] = None,
        metric: str = "cosine",
        index: str = "hnsw",
        text_field: str = "text",
        text_search: bool = False,
        **index_params: Any,
    ) -> None:
        super().__init__(stores_text=True)
        if text_field in _RESERVED or not text_field:
            raise ValueError(f"text_field cannot be {text_field!r}")
        self._text_field = text_field
        self._text_search = text_search
        self._index = index
        self._index_params = dict(index_params)
        self._target = Target("node", path, collection_name, database, collection, metric)

    @classmethod
    def class_name(cls) -> str:
        return "TroveVectorStore"

    @property
    def client(self) -> Any:
        """The trovedb collection (None until the first `add` creates it)."""
        return self._target.collection

    @property
    def _collection(self) -> Optional[trovedb.Collection]:
        return self._target.collection

    def close(self) -> None:
        """Close the database if the store opened it (from `path`)."""
        self._target.close()

    # -- writes -----------------------------------------------------------------------

    def _payload(self, node: BaseNode) -> dict:
        meta = node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata)
        if self._text_field in node.metadata:
            raise ValueError(
                f"metadata key {self._text_field!r} is reserved by this store for the node text "
                "(choose another text_field)"
            )
        p = {k: v for k, v in meta.items() if native(v)}
        p[self._text_field] = node.get_content(metadata_mode=MetadataMode.NONE)
        return p

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        """Upsert nodes (each needs its embedding); returns their ids."""
        nodes = list(nodes)
        if not nodes:
            return []
        ids = [n.node_id for n in nodes]
        vectors = np.asarray([n.get_embedding() for n in nodes], dtype=np.float32)
        payloads = [self._payload(n) for n in nodes]
        c = self._target.create(vectors.shape[1], self._index, self._text_field if self._text_search else None,
                                self._index_params)
        for s in range(0, len(nodes), _BATCH):
            c.upsert(ids[s : s + _BATCH], vectors[s : s + _BATCH], payloads[s : s + _BATCH])
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document `ref_doc_id`."""
        if self._collection is not None:
            self._collection.delete(filter={"ref_doc_id": ref_doc_id})

    def delete_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes with these ids and/or matching `filters` (both: either set
        narrows the other)."""
        c = self._collection
        if c is None or (node_ids is None and filters is None):
            return
        parts = []
        if node_ids is not None:
            parts.append({"$id": {"$in": list(node_ids)}})
        if filters is not None:
            parts.append(to_trovedb_filter(filters, self._text_field))
        c.delete(filter={"$and": parts})

    def clear(self) -> None:
        """Delete every node."""
        if self._collection is not None:
            self._collection.delete(filter={})

    # -- reads ------------------------------------------------------------------------

    def _node(self, payload: dict) -> BaseNode:
        text = payload.get(self._text_field)
        return metadata_dict_to_node(payload, text=text if isinstance(text, str) else None)

    def get_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
    ) -> List[BaseNode]:
        """The nodes with these ids (that exist, in order) and/or matching `filters`."""
        c = self._collection
        if c is None:
            return []
        if node_ids is not None and filters is None:
            return [self._node(p["payload"]) for p in c.get(list(node_ids), include_vector=False) if p is not None]
        flt: dict = to_trovedb_filter(filters, self._text_field) if filters is not None else {}
        if node_ids is not None:
            flt = {"$and": [flt, {"$id": {"$in": list(node_ids)}}]}
        out: List[BaseNode] = []
        cursor = None
        while True:
            page, cursor = c.scroll(filter=flt, limit=1000, cursor=cursor)
            out += [self._node(p["payload"]) for p in page]
            if cursor is None:
                return out

    def _similarity(self, distance: float) -> float:
        if self._target.metric == "cosine":
            return 1.0 - distance
        return -distance

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        c = self._collection
        if c is None:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        parts = []
        if query.filters is not None:
            parts.append(to_trovedb_filter(query.filters, self._text_field))
        if query.node_ids:
            parts.append({"$id": {"$in": list(query.node_ids)}})
        if query.doc_ids:
            parts.append({"ref_doc_id": {"$in": list(query.doc_ids)}})
        flt = {"$and": parts} if parts else None
        k = query.similarity_top_k
        mode = query.mode
        if mode in (VectorStoreQueryMode.TEXT_SEARCH, VectorStoreQueryMode.SPARSE):
            if not query.query_str:
                raise ValueError(f"query mode {mode.value!r} needs query_str")
            res = one(c.search(text=query.query_str, k=query.sparse_top_k or k, filter=flt, include_payload=True))
            sims = [float(s) for s in res.scores]
        elif mode == VectorStoreQueryMode.HYBRID:
            if not query.query_str or query.query_embedding is None:
                raise ValueError("hybrid queries need query_str and query_embedding")
            alpha = 0.5 if query.alpha is None else query.alpha
            res = one(c.search(
                np.asarray(query.query_embedding, dtype=np.float32),
                text=query.query_str,
                k=query.hybrid_top_k or k,
                filter=flt,
                include_payload=True,
                alpha=alpha,
            ))
            sims = [float(s) for s in res.scores]
        elif mode == VectorStoreQueryMode.MMR:
            return self._mmr(query, flt, **kwargs)
        elif mode == VectorStoreQueryMode.DEFAULT:
            if query.query_embedding is None:
                raise ValueError("a default (vector) query needs query_embedding")
            res = one(c.search(
                np.asarray(query.query_embedding, dtype=np.float32), k=k, filter=flt, include_payload=True
            ))
            sims = [self._similarity(float(d)) for d in res.distances]
        else:
            raise ValueError(f"query mode {mode.value!r} is not supported by trovedb")
        nodes = [self._node(h.payload or {}) for h in res]
        return VectorStoreQueryResult(nodes=nodes, similarities=sims, ids=[str(h.id) for h in res])

    def _mmr(self, query: VectorStoreQuery, flt: Optional[dict], **kwargs: Any) -> VectorStoreQueryResult:
        from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings

        c = self._collection
        assert c is not None
        if query.query_embedding is None:
            raise ValueError("an mmr query needs query_embedding")
        k = query.similarity_top_k
        fetch_k = int(kwargs.get("mmr_prefetch_k") or max(4 * k, 20))
        q = np.asarray(query.query_embedding, dtype=np.float32)
        res = one(c.search(q, k=fetch_k, filter=flt, include_payload=True))
        if len(res) == 0:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        hits = list(res)
        points = c.get([str(h.id) for h in hits], include_vector=True)
        # A point deleted since the search is left out.
        kept = [(h, p) for h, p in zip(hits, points) if p is not None]
        sims, picked = get_top_k_mmr_embeddings(
            query.query_embedding,
            [p["vector"].tolist() for _, p in kept],
            similarity_top_k=k,
            embedding_ids=list(range(len(kept))),
            mmr_threshold=query.mmr_threshold,
        )
        nodes = [self._node(kept[i][0].payload or {}) for i in picked]
        return VectorStoreQueryResult(
            nodes=nodes, similarities=list(sims), ids=[str(kept[i][0].id) for i in picked]
        )
