#!/usr/bin/env python3
"""Retrieval for a RAG app with LangChain and trovedb, offline.

Indexes 2,000 public-domain passages (data/pd-texts-2k) into a trovedb-backed LangChain
vector store with string ids and metadata, then retrieves by similarity with a metadata
filter, by maximal marginal relevance, by keywords and by hybrid search, and reopens the
store from its directory. The embedding is a small bag-of-words hashing model so that the
example runs without a network or a model download; swap in any LangChain `Embeddings`
(OpenAIEmbeddings, HuggingFaceEmbeddings, ...) for real use.

    pip install "trovedb[langchain]"   # or: pip install langchain-core
    python3 bindings/python/examples/langchain_rag.py
"""

import json
import pathlib
import re
import tempfile
import zlib

import numpy as np
from langchain_core.embeddings import Embeddings

from trovedb.langchain import TroveVectorStore

DATA = pathlib.Path(__file__).resolve().parents[3] / "data" / "pd-texts-2k" / "texts.jsonl"


class HashingEmbeddings(Embeddings):
    """Words hashed into 256 signed buckets, L2-normalised: texts sharing words are near."""

    def _one(self, text: str) -> list[float]:
        v = np.zeros(256)
        for w in re.findall(r"[a-z]+", text.lower()):
            h = zlib.crc32(w.encode())
            v[h % 256] += 1.0 if (h >> 16) & 1 else -1.0
        n = np.linalg.norm(v)
        return (v / n if n else v + 1 / 16).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._one(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._one(text)


def main() -> None:
    rows = [json.loads(line) for line in open(DATA)]
    texts = [r["text"] for r in rows]
    metas = [{"source": r["source"], "n": i} for i, r in enumerate(rows)]
    ids = [f"{r['source']}#{i}" for i, r in enumerate(rows)]
    with tempfile.TemporaryDirectory() as path:
        store = TroveVectorStore.from_texts(
            texts, HashingEmbeddings(), metas, ids=ids, path=path, collection_name="passages", text_search=True
        )
        question = "the LORD is my shepherd"
        print(f"similarity, kjv only: {question!r}")
        for doc, dist in store.similarity_search_with_score(question, k=3, filter={"source": "kjv"}):
            print(f"  {doc.id:10} {dist:.3f}  {doc.page_content[:80]}")
        print("mmr (diverse):")
        for doc in store.as_retriever(search_type="mmr", search_kwargs={"k": 3, "fetch_k": 20}).invoke(question):
            print(f"  {doc.id:10} {doc.page_content[:80]}")
        for mode in ("keyword", "hybrid"):
            print(f"{mode}: 'hacker jargon'")
            for doc in store.similarity_search("hacker jargon", k=3, search_mode=mode):
                print(f"  {doc.id:10} [{doc.metadata['source']}] {doc.page_content[:70]}")
        store.delete([ids[0]])
        store.close()
        again = TroveVectorStore(embedding=HashingEmbeddings(), path=path, collection_name="passages")
        print(f"reopened: {len(again.collection)} documents; {ids[1]} -> {again.get_by_ids([ids[1]])[0].page_content[:50]!r}")
        again.close()


if __name__ == "__main__":
    main()
