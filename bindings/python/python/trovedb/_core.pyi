"""Type stubs for the native module trovedb._core."""

import os
from types import TracebackType
from typing import Any, Mapping, Optional, Sequence, Union, final, overload

import numpy as np
import numpy.typing as npt

from typing_extensions import TypeAlias

__version__: str
__all__ = [
    "Database",
    "Collection",
    "open",
    "TroveError",
    "CorruptionError",
    "LockedError",
    "CollectionNotFoundError",
    "CollectionExistsError",
    "IncompatibleFormatError",
    "StorageIOError",
    "PoisonedError",
    "ClosedError",
    "InheritedHandleError",
    "ReadOnlyError",
    "repair",
    "analyze",
    "__version__",
]

_PayloadValue: TypeAlias = Union[None, bool, int, float, str, Sequence[str]]
_Payload: TypeAlias = Mapping[str, _PayloadValue]
_Ids: TypeAlias = Union[int, Sequence[int], npt.NDArray[np.integer[Any]]]
_Vectors: TypeAlias = Union[npt.NDArray[np.floating[Any]], Sequence[Sequence[float]], Sequence[float]]

class TroveError(Exception): ...
class CorruptionError(TroveError): ...
class LockedError(TroveError): ...
class CollectionNotFoundError(TroveError): ...
class CollectionExistsError(TroveError): ...
class IncompatibleFormatError(TroveError): ...
class StorageIOError(TroveError): ...
class PoisonedError(TroveError): ...
class ClosedError(TroveError): ...
class InheritedHandleError(TroveError): ...
class ReadOnlyError(TroveError): ...

def open(
    path: Union[str, os.PathLike[str]],
    durability: str = "always",
    seal_threshold_rows: int = 100000,
    background_compaction: bool = True,
    compaction_min_segments: int = 4,
    compaction_max_deleted_fraction: float = 0.3,
    compaction_max_merged_rows: int = 0,
    compaction_max_segment_rows: int = 0,
    compaction_quiet_seconds: float = 2.0,
    compaction_seal_idle_seconds: float = 30.0,
    read_only: bool = False,
    tune_allocator: bool = False,
) -> Database: ...

def repair(path: Union[str, os.PathLike[str]]) -> dict[str, dict[str, Any]]: ...
def analyze(
    text: str,
    language: str = "english",
    stem: bool = True,
    stopwords: Union[bool, Sequence[str], None] = None,
) -> list[str]: ...

@final
class Database:
    @property
    def path(self) -> str: ...
    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str = "cosine",
        index: str = "flat",
        indexed_fields: Optional[Sequence[str]] = None,
        text_fields: Optional[Sequence[str]] = None,
        language: str = "english",
        stem: bool = True,
        stopwords: Union[bool, Sequence[str], None] = None,
        bm25_k1: float = 1.2,
        bm25_b: float = 0.75,
        **index_params: float,
    ) -> Collection: ...
    def get_or_create_collection(
        self,
        name: str,
        dim: int,
        metric: str = "cosine",
        index: str = "flat",
        indexed_fields: Optional[Sequence[str]] = None,
        text_fields: Optional[Sequence[str]] = None,
        language: str = "english",
        stem: bool = True,
        stopwords: Union[bool, Sequence[str], None] = None,
        bm25_k1: float = 1.2,
        bm25_b: float = 0.75,
        **index_params: float,
    ) -> Collection: ...
    def get_collection(self, name: str) -> Collection: ...
    def list_collections(self) -> list[str]: ...
    def open_all(self) -> dict[str, Optional[TroveError]]: ...
    def drop_collection(self, name: str) -> None: ...
    def refresh(self) -> None: ...
    @property
    def read_only(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> Database: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class Collection:
    @property
    def name(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def metric(self) -> str: ...
    def upsert(
        self, ids: _Ids, vectors: _Vectors, payloads: Optional[Sequence[Optional[_Payload]]] = None
    ) -> None: ...
    def delete(self, ids: Optional[_Ids] = None, *, filter: Optional[Mapping[str, Any]] = None) -> int: ...
    def count(self, filter: Optional[Mapping[str, Any]] = None) -> int: ...
    @overload
    def get(self, ids: int, *, filter: None = None, limit: int = 100) -> Optional[dict[str, Any]]: ...
    @overload
    def get(
        self,
        ids: Union[Sequence[int], npt.NDArray[np.integer[Any]], None] = None,
        *,
        filter: Optional[Mapping[str, Any]] = None,
        limit: int = 100,
    ) -> list[Optional[dict[str, Any]]]: ...
    def search(
        self,
        query: Optional[_Vectors] = None,
        k: int = 10,
        filter: Optional[Mapping[str, Any]] = None,
        include_payload: bool = False,
        text: Union[str, Sequence[str], None] = None,
        fusion: str = "weighted",
        alpha: float = 0.5,
        rrf_k: float = 60.0,
        hybrid_candidates: Optional[int] = None,
        **search_params: Any,
    ) -> Any: ...
    def flush(self) -> None: ...
    def compact(self) -> int: ...
    def wait_idle(self) -> None: ...
    def verify(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def refresh(self) -> None: ...
    @property
    def read_only(self) -> bool: ...
    def __len__(self) -> int: ...
