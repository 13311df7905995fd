#!/usr/bin/env python3
"""Retrieval for a RAG app with LlamaIndex and trovedb, offline.

Builds a `VectorStoreIndex` over 2,000 public-domain passages (data/pd-texts-2k) stored in a
trovedb collection, retrieves with metadata filters, hybrid (BM25 + vector) and MMR query
modes, deletes a source document by `ref_doc_id`, and reopens the index from its directory.
The embedding is a small bag-of-words hashing model so that the example runs without a
network; use any LlamaIndex embedding model for real use.

    pip install "trovedb[llama-index]"   # or: pip install llama-index-core
    python3 bindings/python/examples/llama_index_rag.py
"""

import json
import pathlib
import re
import tempfile
import zlib

import numpy as np
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from trovedb.llama_index import TroveVectorStore

DATA = pathlib.Path(__file__).resolve().parents[3] / "data" / "pd-texts-2k" / "texts.jsonl"


class HashingEmbedding(BaseEmbedding):
    """Words hashed into 256 signed buckets: texts sharing words are near."""

    def _one(self, text: str) -> list[float]:
        v = np.zeros(256)
        for w in re.findall(r"[a-z]+", text.lower()):
            h = zlib.crc32(w.encode())
            v[h % 256] += 1.0 if (h >> 16) & 1 else -1.0
        n = np.linalg.norm(v)
        return (v / n if n else v + 1 / 16).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._one(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._one(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._one(text)


def main() -> None:
    rows = [json.loads(line) for line in open(DATA)]
    # One document per 20 passages of a source, so documents split into several nodes.
    by_source: dict[str, list[str]] = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r["text"])
    docs = [
        Document(text="\n".join(texts[s : s + 20]), id_=f"{source}-{s // 20}",
                 metadata={"source": source, "part": s // 20})
        for source, texts in by_source.items()
        for s in range(0, len(texts), 20)
    ]
    embed = HashingEmbedding()
    with tempfile.TemporaryDirectory() as path:
        store = TroveVectorStore(path=path, collection_name="passages", text_search=True)
        index = VectorStoreIndex.from_documents(
            docs,
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embed,
            # A whitespace tokenizer keeps the splitter offline (its default downloads one).
            transformations=[SentenceSplitter(chunk_size=128, chunk_overlap=0, tokenizer=str.split)],
        )
        print(f"{len(store.client)} nodes from {len(docs)} documents")
        question = "the LORD is my shepherd"
        not_kjv = MetadataFilters(filters=[MetadataFilter(key="source", value="kjv", operator=FilterOperator.NE)])
        for label, retriever in (
            ("vector", index.as_retriever(similarity_top_k=3)),
            ("vector, not kjv", index.as_retriever(similarity_top_k=3, filters=not_kjv)),
            ("hybrid", index.as_retriever(similarity_top_k=3, vector_store_query_mode="hybrid", alpha=0.5)),
            ("mmr", index.as_retriever(similarity_top_k=3, vector_store_query_mode="mmr")),
        ):
            print(f"{label}: {question!r}")
            for hit in retriever.retrieve(question):
                print(f"  {hit.node.ref_doc_id:10} {hit.score:7.3f}  {hit.node.get_content()[:70]!r}")
        index.delete_ref_doc("kjv-0")
        left = len(store.client)
        store.close()
        again = VectorStoreIndex.from_vector_store(TroveVectorStore(path=path, collection_name="passages"),
                                                   embed_model=embed)
        print(f"after deleting kjv-0 and reopening: {left} nodes; top hit "
              f"{again.as_retriever(similarity_top_k=1).retrieve(question)[0].node.ref_doc_id}")


if __name__ == "__main__":
    main()
