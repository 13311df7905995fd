"""Type stubs for the native module trovedb._core."""

import os
from types import TracebackType
from typing import Any, Iterator, Mapping, Optional, Sequence, Union, final, overload

import numpy as np
import numpy.typing as npt

from typing_extensions import TypeAlias

__version__: str
__all__ = [
    "Database",
    "Collection",
    "SearchResult",
    "BatchResult",
    "Hit",
    "IdCollisionError",
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
_Id: TypeAlias = Union[int, str]
_Ids: TypeAlias = Union[int, str, Sequence[int], Sequence[str], npt.NDArray[np.integer[Any]], npt.NDArray[np.str_]]
_ManyIds: TypeAlias = Union[Sequence[int], Sequence[str], npt.NDArray[np.integer[Any]], npt.NDArray[np.str_]]
_Filter: TypeAlias = Mapping[str, Any]
_PointDict: TypeAlias = dict[str, Any]
_Vectors: TypeAlias = Union[npt.NDArray[np.floating[Any]], Sequence[Sequence[float]], Sequence[float]]

class TroveError(Exception): ...
class CorruptionError(TroveError): ...
class LockedError(TroveError): ...
class CollectionNotFoundError(TroveError): ...
class CollectionExistsError(TroveError): ...
class IncompatibleFormatError(TroveError): ...
class StorageIOError(TroveError): ...
class IdCollisionError(TroveError): ...
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
        id_type: str = "int",
        quantization: str = "auto",
        rescore: Optional[int] = None,
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
        id_type: str = "int",
        quantization: str = "auto",
        rescore: Optional[int] = None,
        **index_params: float,
    ) -> Collection: ...
    def get_collection(self, name: str) -> Collection: ...
    def list_collections(self) -> list[str]: ...
    def open_all(self) -> dict[str, Optional[TroveError]]: ...
    def drop_collection(self, name: str) -> None: ...
    def refresh(self) -> None: ...
    def backup(self, dest: Union[str, os.PathLike[str]]) -> dict[str, Any]: ...
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
class Hit:
    @property
    def id(self) -> _Id: ...
    @property
    def distance(self) -> float: ...
    @property
    def score(self) -> float: ...
    @property
    def payload(self) -> Optional[dict[str, Any]]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class SearchResult:
    def __len__(self) -> int: ...
    def __getitem__(self, key: int, /) -> Hit: ...
    def __iter__(self) -> Iterator[Hit]: ...
    @property
    def ids(self) -> Union[npt.NDArray[np.uint64], list[str]]: ...
    @property
    def distances(self) -> npt.NDArray[np.float32]: ...
    @property
    def scores(self) -> npt.NDArray[np.float32]: ...
    @property
    def payloads(self) -> list[Optional[dict[str, Any]]]: ...
    @property
    def kind(self) -> str: ...
    def to_list(self) -> list[dict[str, Any]]: ...

@final
class BatchResult:
    def __len__(self) -> int: ...
    def __getitem__(self, key: int, /) -> SearchResult: ...
    def __iter__(self) -> Iterator[SearchResult]: ...
    @property
    def ids(self) -> Union[npt.NDArray[np.uint64], list[list[str]]]: ...
    @property
    def distances(self) -> npt.NDArray[np.float32]: ...
    @property
    def scores(self) -> npt.NDArray[np.float32]: ...
    @property
    def payloads(self) -> list[list[Optional[dict[str, Any]]]]: ...
    def to_list(self) -> list[list[dict[str, Any]]]: ...

@final
class Collection:
    @property
    def name(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def metric(self) -> str: ...
    @property
    def id_type(self) -> str: ...
    @property
    def config(self) -> dict[str, Any]: ...
    def upsert(
        self, ids: _Ids, vectors: _Vectors, payloads: Optional[Sequence[Optional[_Payload]]] = None
    ) -> None: ...
    def update_payload(
        self, ids: _Ids, patch: Union[_Payload, Sequence[_Payload]], *, mode: str = "merge"
    ) -> None: ...
    def delete(self, ids: Optional[_Ids] = None, *, filter: Optional[_Filter] = None) -> int: ...
    def count(self, filter: Optional[_Filter] = None) -> int: ...
    # One id (a str is one string id, not a sequence of them): the point or None.
    @overload
    def get(  # type: ignore[overload-overlap]
        self, ids: _Id, *, filter: None = None, limit: int = 100, include_vector: bool = True
    ) -> Optional[_PointDict]: ...
    @overload
    def get(
        self,
        ids: _ManyIds,
        *,
        filter: None = None,
        limit: int = 100,
        include_vector: bool = True,
    ) -> list[Optional[_PointDict]]: ...
    @overload
    def get(
        self,
        ids: None = None,
        *,
        filter: Optional[_Filter] = None,
        limit: int = 100,
        include_vector: bool = True,
    ) -> list[_PointDict]: ...
    def scroll(
        self,
        filter: Optional[_Filter] = None,
        limit: int = 100,
        cursor: Optional[int] = None,
        *,
        include_vector: bool = False,
    ) -> tuple[list[_PointDict], Optional[int]]: ...
    # One query (a list of floats, a text, or an id): one SearchResult.
    @overload
    def search(  # type: ignore[overload-overlap]
        self,
        query: Optional[Sequence[float]] = None,
        k: int = 10,
        filter: Optional[_Filter] = None,
        include_payload: bool = False,
        text: Optional[str] = None,
        fusion: str = "weighted",
        alpha: float = 0.5,
        rrf_k: float = 60.0,
        hybrid_candidates: Optional[int] = None,
        *,
        id: Optional[_Id] = None,
        exclude_ids: Optional[_Ids] = None,
        **search_params: Any,
    ) -> SearchResult: ...
    # A batch (a list of vectors, or a list of texts): one SearchResult per query.
    @overload
    def search(
        self,
        query: Optional[Sequence[Sequence[float]]] = None,
        k: int = 10,
        filter: Union[_Filter, Sequence[Optional[_Filter]], None] = None,
        include_payload: bool = False,
        text: Optional[Sequence[str]] = None,
        fusion: str = "weighted",
        alpha: float = 0.5,
        rrf_k: float = 60.0,
        hybrid_candidates: Optional[int] = None,
        *,
        id: Optional[_Id] = None,
        exclude_ids: Optional[_Ids] = None,
        **search_params: Any,
    ) -> BatchResult: ...
    # A numpy array: [dim] gives a SearchResult, [nq, dim] a BatchResult (search_batch
    # always returns a BatchResult).
    @overload
    def search(
        self,
        query: npt.NDArray[np.floating[Any]],
        k: int = 10,
        filter: Union[_Filter, Sequence[Optional[_Filter]], None] = None,
        include_payload: bool = False,
        text: Union[str, Sequence[str], None] = None,
        fusion: str = "weighted",
        alpha: float = 0.5,
        rrf_k: float = 60.0,
        hybrid_candidates: Optional[int] = None,
        *,
        id: Optional[_Id] = None,
        exclude_ids: Optional[_Ids] = None,
        **search_params: Any,
    ) -> Union[SearchResult, BatchResult]: ...
    def search_batch(
        self,
        queries: Union[Sequence[Sequence[float]], npt.NDArray[np.floating[Any]]],
        k: int = 10,
        filter: Union[_Filter, Sequence[Optional[_Filter]], None] = None,
        include_payload: bool = False,
        *,
        exclude_ids: Optional[_Ids] = None,
        **search_params: Any,
    ) -> BatchResult: ...
    def flush(self) -> None: ...
    def compact(self) -> int: ...
    def wait_idle(self) -> None: ...
    def verify(self) -> None: ...
    def text_stats(self, text: str) -> dict[str, Any]: ...
    def hybrid_candidates(
        self,
        query: Union[Sequence[float], npt.NDArray[np.float32]],
        text: str,
        k: int = 10,
        filter: Optional[_Filter] = None,
        include_payload: bool = False,
        hybrid_candidates: Optional[int] = None,
        **search_params: Any,
    ) -> dict[str, Any]: ...
    def stats(self) -> dict[str, Any]: ...
    def refresh(self) -> None: ...
    @property
    def read_only(self) -> bool: ...
    def __len__(self) -> int: ...
