"""trovedb: an embedded vector database.

One directory on disk, no server: crash-safe writes through a write-ahead log,
memory-mapped immutable segments, exact and approximate nearest-neighbour search.

    import trovedb
    with trovedb.open("./vectors") as db:
        docs = db.create_collection("docs", dim=384, metric="cosine")
        docs.upsert(ids, vectors, payloads)
        ids, distances = docs.search(query, k=10)
"""

from trovedb._core import (
    ClosedError,
    Collection,
    CollectionExistsError,
    CollectionNotFoundError,
    CorruptionError,
    Database,
    IncompatibleFormatError,
    InheritedHandleError,
    ReadOnlyError,
    LockedError,
    PoisonedError,
    StorageIOError,
    TroveError,
    __version__,
    analyze,
    open,
    repair,
)

#: The id that pads search results when fewer than k points exist.
PAD_ID = 2**64 - 1

__all__ = [
    "PAD_ID",
    "ClosedError",
    "Collection",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "CorruptionError",
    "Database",
    "IncompatibleFormatError",
    "InheritedHandleError",
    "ReadOnlyError",
    "LockedError",
    "PoisonedError",
    "StorageIOError",
    "TroveError",
    "__version__",
    "analyze",
    "open",
    "repair",
]
