"""trovedb: an embedded vector database.

One directory on disk, no server: crash-safe writes through a write-ahead log,
memory-mapped immutable segments, exact and approximate nearest-neighbour search.

    import trovedb
    with trovedb.open("./vectors") as db:
        docs = db.create_collection("docs", dim=384, metric="cosine")
        docs.upsert(ids, vectors, payloads)
        for hit in docs.search(query, k=10, include_payload=True):
            print(hit.id, hit.distance, hit.payload)
"""

from trovedb._core import (
    BatchResult,
    ClosedError,
    Collection,
    CollectionExistsError,
    CollectionNotFoundError,
    CorruptionError,
    Database,
    Hit,
    IdCollisionError,
    IncompatibleFormatError,
    InheritedHandleError,
    ReadOnlyError,
    LockedError,
    PoisonedError,
    SearchResult,
    StorageIOError,
    TroveError,
    __version__,
    analyze,
    open,
    repair,
)

#: The id that pads the (nq, k) arrays of a BatchResult where a query has fewer than k hits.
PAD_ID = 2**64 - 1

__all__ = [
    "PAD_ID",
    "BatchResult",
    "ClosedError",
    "Collection",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "CorruptionError",
    "Database",
    "Hit",
    "IdCollisionError",
    "IncompatibleFormatError",
    "InheritedHandleError",
    "ReadOnlyError",
    "LockedError",
    "PoisonedError",
    "SearchResult",
    "StorageIOError",
    "TroveError",
    "__version__",
    "analyze",
    "open",
    "repair",
]
