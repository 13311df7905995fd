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

def open(
    path: Union[str, os.PathLike[str]],
    durability: str = "always",
    seal_threshold_rows: int = 100000,
    background_compaction: bool = True,
    compaction_min_segments: int = 4,
    compaction_max_deleted_fraction: float = 0.3,
    compaction_max_merged_rows: int = 0,
) -> Database: ...

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
        **index_params: float,
    ) -> Collection: ...
    def get_collection(self, name: str) -> Collection: ...
    def list_collections(self) -> list[str]: ...
    def open_all(self) -> dict[str, Optional[TroveError]]: ...
    def drop_collection(self, name: str) -> None: ...
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
        query: _Vectors,
        k: int = 10,
        filter: Optional[Mapping[str, Any]] = None,
        include_payload: bool = False,
        **search_params: Any,
    ) -> Any: ...
    def flush(self) -> None: ...
    def compact(self) -> int: ...
    def wait_idle(self) -> None: ...
    def verify(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def __len__(self) -> int: ...
