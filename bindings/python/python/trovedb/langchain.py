"""LangChain integration: `TroveVectorStore`, a `langchain_core` `VectorStore` over a
trovedb collection keyed by strings.

    pip install "trovedb[langchain]"

    from trovedb.langchain import TroveVectorStore
    store = TroveVectorStore(embedding=my_embeddings, path="./vectors", collection_name="docs")
    store.add_texts(["..."], metadatas=[{"source": "a"}], ids=["doc-1#0"])
    store.similarity_search("question", k=4, filter={"source": "a"})
    retriever = store.as_retriever(search_type="mmr", search_kwargs={"k": 4})

Documents are points: the id is the document id (a string; a UUID when none is given), the
vector is the embedding of `page_content`, and the payload holds `page_content` under
`text_field` (default "page_content") beside the metadata. Metadata values trovedb stores
natively (str, int, float, bool, None, lists of str) are payload fields, so Mongo-style
filters (`{"source": "a", "year": {"$gte": 2020}}`) reach them; other JSON values (nested
objects, lists of numbers) are kept as JSON in the payload field `_lc_json` and restored on
read, so metadata round-trips either way (filters cannot see inside those).

With `text_search=True` (at creation) the page content also feeds trovedb's BM25 index, and
`search_mode="hybrid"` or `"keyword"` (per store or per call) retrieves by fused
vector+keyword or keyword scores. This module imports `langchain_core`; `import trovedb`
never does.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

import trovedb
from trovedb._integration import Target, native, one

#: Payload field holding the metadata values that are not native payload values, as JSON.
JSON_FIELD = "_lc_json"
_MODES = ("vector", "hybrid", "keyword")
#: Points written per upsert call (each call is one durable log record).
BATCH = 512


def _plain(v: Any) -> Any:
    """numpy scalars as the Python values they hold."""
    if type(v).__module__ == "numpy" and hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return v.item()
    return v


class TroveVectorStore(VectorStore):
    """A LangChain `VectorStore` backed by a trovedb collection keyed by strings.

    Give either `path` (a database directory, opened and closed by the store) or an open
    `database`, and a `collection_name`; or an existing string-keyed `collection`. The
    collection is created on the first write (its dimension is the embedding's) with
    `metric`, `index` and `index_params` (`m`, `ef_search`, ...), and `text_search=True`
    adds a BM25 index over the page content. `search_mode` is the default retrieval:
    "vector" (embeddings), "hybrid" (embeddings fused with BM25) or "keyword" (BM25 only).
    """

    def __init__(
        self,
        embedding: Embeddings,
        path: Optional[str | os.PathLike[str]] = None,
        collection_name: str = "langchain",
        *,
        database: Optional[trovedb.Database] = None,
        collection: Optional[trovedb.Collection] = None,
        metric: str = "cosine",
        index: str = "hnsw",
        text_field: str = "page_content",
        text_search: bool = False,
        search_mode: str = "vector",
        **index_params: Any,
    ) -> None:
        if search_mode not in _MODES:
            raise ValueError(f"search_mode must be one of {_MODES}, got {search_mode!r}")
        if text_field == JSON_FIELD or not text_field:
            raise ValueError(f"text_field cannot be {text_field!r}")
        self._embedding = embedding
        self._text_field = text_field
        self._text_search = text_search
        self._mode = search_mode
        self._index = index
        self._index_params = index_params
        self._target = Target("LangChain document", path, collection_name, database, collection, metric)

    # -- plumbing ---------------------------------------------------------------------

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @property
    def collection(self) -> Optional[trovedb.Collection]:
        """The trovedb collection (None until the first write creates it)."""
        return self._target.collection

    @property
    def _collection(self) -> Optional[trovedb.Collection]:
        return self._target.collection

    @property
    def _metric(self) -> str:
        return self._target.metric

    def close(self) -> None:
        """Close the database if the store opened it (from `path`)."""
        self._target.close()

    def _create(self, dim: int) -> trovedb.Collection:
        text = self._text_field if self._text_search else None
        return self._target.create(dim, self._index, text, self._index_params)

    def _payload(self, text: str, metadata: Optional[dict]) -> dict:
        p: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for k, v in (metadata or {}).items():
            if not isinstance(k, str):
                raise TypeError(f"metadata keys must be str, got {k!r}")
            if k in (self._text_field, JSON_FIELD):
                raise ValueError(
                    f"metadata key {k!r} is reserved by this store (the page content is stored as "
                    f"{self._text_field!r}; choose another text_field to use that key)"
                )
            v = _plain(v)
            if native(v):
                p[k] = v
            else:
                extra[k] = v
        if extra:
            try:
                p[JSON_FIELD] = json.dumps(extra)
            except (TypeError, ValueError) as e:
                raise TypeError(f"metadata values must be JSON-serialisable: {e}") from None
        p[self._text_field] = text
        return p

    def _document(self, id_: str, payload: dict) -> Document:
        payload = dict(payload)
        text = payload.pop(self._text_field, "")
        extra = payload.pop(JSON_FIELD, None)
        if extra is not None:
            payload.update(json.loads(extra))
        return Document(id=id_, page_content=text if isinstance(text, str) else "", metadata=payload)

    # -- writes -----------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Optional[list[dict[str, Any]]] = None,
        *,
        ids: Optional[list[str]] = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed `texts` and upsert them (a document with an existing id is replaced).
        Returns the ids (a new UUID for each text given without one)."""
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"{len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        if not texts:
            return []
        # `add_documents` passes Document.id per text, None where a document has none.
        given: list[Optional[str]] = list(ids) if ids is not None else [None] * len(texts)
        out = [str(i) if i is not None else str(uuid.uuid4()) for i in given]
        metas: list[Optional[dict]] = list(metadatas) if metadatas is not None else [None] * len(texts)
        payloads = [self._payload(t, metas[i]) for i, t in enumerate(texts)]
        vectors = np.asarray(self._embedding.embed_documents(texts), dtype=np.float32)
        c = self._create(vectors.shape[1])
        for s in range(0, len(texts), BATCH):
            c.upsert(out[s : s + BATCH], vectors[s : s + BATCH], payloads[s : s + BATCH])
        return out

    def delete(self, ids: Optional[list[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Delete documents by id (unknown ids are ignored); with no ids, every document."""
        c = self._collection
        if c is None:
            return True
        if ids is None:
            c.delete(filter={})
        else:
            c.delete(list(ids))
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents with these ids that exist, in the order given."""
        c = self._collection
        if c is None or not ids:
            return []
        got = c.get(list(ids), include_vector=False)
        return [self._document(p["id"], p["payload"]) for p in got if p is not None]

    # -- reads ------------------------------------------------------------------------

    def _search(
        self,
        query: Optional[str],
        vector: Optional[Sequence[float]],
        k: int,
        filter: Optional[dict],
        mode: Optional[str],
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Documents with their trovedb value: a distance for vector search (smaller is
        nearer), a score for keyword and hybrid search (higher is better)."""
        c = self._collection
        if c is None:
            return []
        mode = mode or self._mode
        if mode not in _MODES:
            raise ValueError(f"search_mode must be one of {_MODES}, got {mode!r}")
        if mode != "vector" and query is None:
            raise ValueError(f"search_mode {mode!r} needs the query text, not just a vector")
        if mode == "keyword":
            res = one(c.search(text=query, k=k, filter=filter, include_payload=True, **kwargs))
        else:
            if vector is None:
                assert query is not None
                vector = self._embedding.embed_query(query)
            q = np.asarray(vector, dtype=np.float32)
            if mode == "hybrid":
                res = one(c.search(q, text=query, k=k, filter=filter, include_payload=True, **kwargs))
            else:
                res = one(c.search(q, k=k, filter=filter, include_payload=True, **kwargs))
        values = res.distances if mode == "vector" else res.scores
        return [(self._document(str(h.id), h.payload or {}), float(v)) for h, v in zip(res, values)]

    def similarity_search(
        self, query: str, k: int = 4, filter: Optional[dict] = None, *, search_mode: Optional[str] = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The `k` documents nearest to `query` (by `search_mode`), best first."""
        return [d for d, _ in self._search(query, None, k, filter, search_mode, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Optional[dict] = None, *, search_mode: Optional[str] = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Documents with the collection's distance (vector search: squared L2, 1 - cosine
        or -dot; smaller is nearer) or score (keyword and hybrid: higher is better)."""
        return self._search(query, None, k, filter, search_mode, **kwargs)

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: Optional[dict] = None, **kwargs: Any
    ) -> list[Document]:
        return [d for d, _ in self._search(None, embedding, k, filter, "vector", **kwargs)]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, filter: Optional[dict] = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        return self._search(None, embedding, k, filter, "vector", **kwargs)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Distances to relevance in [0, 1] (vector search): 1 - distance for cosine,
        1 - sqrt(d)/sqrt(2) for squared L2 between unit vectors, and a logistic of the
        inner product for dot."""
        if self._metric == "cosine":
            return lambda d: 1.0 - d
        if self._metric == "l2":
            return lambda d: 1.0 - math.sqrt(max(d, 0.0)) / math.sqrt(2.0)
        return lambda d: 1.0 / (1.0 + math.exp(d))

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        mode = kwargs.pop("search_mode", None) or self._mode
        filter = kwargs.pop("filter", None)
        found = self._search(query, None, k, filter, mode, **kwargs)
        if mode == "vector":
            fn = self._select_relevance_score_fn()
            return [(d, fn(v)) for d, v in found]
        if not found:
            return []
        # Keyword and hybrid scores, scaled by the best one.
        top = max(v for _, v in found) or 1.0
        return [(d, max(0.0, v / top)) for d, v in found]

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Optional[dict] = None,
        **kwargs: Any,
    ) -> list[Document]:
        """`k` documents chosen by maximal marginal relevance among the `fetch_k` nearest."""
        c = self._collection
        if c is None:
            return []
        q = np.asarray(embedding, dtype=np.float32)
        res = one(c.search(q, k=max(fetch_k, k), filter=filter, include_payload=True, **kwargs))
        if len(res) == 0:
            return []
        hits = list(res)
        points = c.get([str(h.id) for h in hits], include_vector=True)
        # A point deleted since the search is left out.
        kept = [(h, p) for h, p in zip(hits, points) if p is not None]
        vectors = [p["vector"] for _, p in kept]
        picked = maximal_marginal_relevance(q, vectors, lambda_mult=lambda_mult, k=k)
        return [self._document(str(kept[i][0].id), kept[i][0].payload or {}) for i in picked]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Optional[dict] = None,
        **kwargs: Any,
    ) -> list[Document]:
        vector = self._embedding.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(
            vector, k=k, fetch_k=fetch_k, lambda_mult=lambda_mult, filter=filter, **kwargs
        )

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: Optional[list[dict]] = None,
        *,
        ids: Optional[list[str]] = None,
        **kwargs: Any,
    ) -> "TroveVectorStore":
        """A store (arguments as the constructor's, e.g. `path=`) holding `texts`."""
        store = cls(embedding=embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store
