"""Sharded collections on Ray: one embedded trovedb database per shard, each owned by a Ray
actor, searched scatter–gather; bulk ingest from Ray Data.

    import ray, trovedb.ray as tr
    ray.init()                                   # or ray.init(address="auto") on a cluster
    c = tr.create_collection("/data/vec", "docs", num_shards=4, dim=384, metric="cosine",
                             index="hnsw")
    c.upsert(ids, vectors, payloads)
    hits = c.search(query, k=10, filter={"lang": "en"})
    ds.write_datasink(tr.TroveDatasink("/data/vec", "docs"))   # a Ray Dataset
    out = tr.read_collection("/data/vec", "docs")                # back to a Dataset

Layout: ``root/<name>/shards.json`` (the shard map: format version, number of shards, the
routing function, the collection's configuration and the node each shard lives on) and
``root/<name>/shard-<i>/`` (a trovedb database holding collection ``name``). Every node
must see ``root`` at the same path; each shard's directory lives on the disk of the node it
was placed on, and its actor is always scheduled there. A lost node makes its shards
unavailable (calls fail naming them) until the node, or its disk mounted on a new node at
the same address, returns.

Routing: an integer id goes to shard ``splitmix64(id) % num_shards``; a string id to
``blake2b-64(utf-8 bytes) % num_shards`` (both fixed by the shard map's ``routing``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

import trovedb

try:
    import ray
except ImportError:  # pragma: no cover - exercised only without Ray
    raise ImportError(
        "trovedb.ray needs Ray: pip install 'trovedb[ray]' (or 'ray[data]>=2.9')"
    ) from None

__all__ = [
    "ShardError",
    "ShardedCollection",
    "ShardedResult",
    "TroveDatasink",
    "create_collection",
    "open_collection",
    "read_collection",
]

MAP_FILE = "shards.json"
FORMAT_VERSION = 1
ROUTING = "splitmix64-mod/blake2b64-mod"
NAMESPACE = "trovedb"
_MASK = (1 << 64) - 1


class ShardError(trovedb.TroveError):
    """A shard failed a call (or is unavailable): the message names the shard, its
    directory and node, and the cause. Writes to the other shards of the same call may
    have been applied; every write is idempotent, so repeating the call is safe."""


# ---------------------------------------------------------------------------------------
# Routing


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(_MASK)
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(_MASK)
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(_MASK)
    return z ^ (z >> np.uint64(31))


def shard_of(ids: Union[Sequence[Any], np.ndarray], num_shards: int) -> np.ndarray:
    """The shard of each id (an array of shard numbers), by the shard map's routing."""
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu":
        if ids.dtype.kind == "i" and (ids < 0).any():
            raise ValueError("ids must be non-negative integers")
        with np.errstate(over="ignore"):
            return (_splitmix64(ids.astype(np.uint64)) % np.uint64(num_shards)).astype(np.int64)
    out = np.empty(len(ids), dtype=np.int64)
    ints: list[int] = []
    at: list[int] = []
    for i, x in enumerate(ids):
        if isinstance(x, str):
            h = hashlib.blake2b(x.encode("utf-8"), digest_size=8).digest()
            out[i] = int.from_bytes(h, "little") % num_shards
        elif isinstance(x, (int, np.integer)) and not isinstance(x, bool):
            if x < 0:
                raise ValueError(f"id at position {i} is negative: {x}")
            ints.append(int(x))
            at.append(i)
        else:
            raise TypeError(f"id at position {i} must be an int or a str, got {type(x).__name__}")
    if ints:
        with np.errstate(over="ignore"):
            out[at] = (_splitmix64(np.array(ints, dtype=np.uint64)) % np.uint64(num_shards)).astype(
                np.int64
            )
    return out


# ---------------------------------------------------------------------------------------
# The shard actor


def _part(r: Any, include_payload: bool) -> tuple[Any, np.ndarray, Optional[list]]:
    """A shard's answer to one query as the handle merges it: (ids, distances, payloads)."""
    ids = r.ids
    return (
        list(ids) if isinstance(ids, list) else np.asarray(ids),
        np.asarray(r.distances),
        r.payloads if include_payload else None,
    )


class _Shard:
    """Owns one shard's database. Runs inside a Ray actor; every method is idempotent so
    Ray may retry it after a restart (the log replays every acknowledged write)."""

    def __init__(self, path: str, name: str, config: dict[str, Any], open_options: dict[str, Any]):
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.db = trovedb.open(path, **open_options)
        cfg = dict(config)
        params = cfg.pop("index_params", {}) or {}
        self.c = self.db.get_or_create_collection(name, **cfg, **params)

    def where(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "path": self.path,
        }

    def upsert(self, ids: Any, vectors: np.ndarray, payloads: Optional[list]) -> int:
        self.c.upsert(ids, vectors, payloads)
        return len(vectors)

    def delete(self, ids: Any, filter: Any) -> int:
        if ids is not None:
            return self.c.delete(ids)
        return self.c.delete(filter=filter)

    def get(self, ids: Any, include_vector: bool) -> list:
        return self.c.get(ids, include_vector=include_vector)

    def count(self, filter: Any) -> int:
        return self.c.count(filter) if filter is not None else len(self.c)

    def text_stats(self, texts: list[str]) -> list[dict[str, Any]]:
        return [self.c.text_stats(t) for t in texts]

    def search(
        self,
        queries: Optional[np.ndarray],
        texts: Optional[list[str]],
        k: int,
        filter: Any,
        include_payload: bool,
        params: dict[str, Any],
        stats: Optional[list[dict[str, Any]]] = None,
    ) -> list[tuple[Any, np.ndarray, Optional[list]]]:
        """Top-k per query (a vector, or a text scored with the given collection-wide
        statistics): (ids, distances, payloads or None)."""
        out = []
        n = len(queries) if queries is not None else len(texts or [])
        for i in range(n):
            kw = dict(k=k, filter=filter, include_payload=include_payload, **params)
            if queries is not None:
                r = self.c.search(queries[i].tolist(), **kw)
            else:
                if stats is not None:
                    kw["text_stats"] = stats[i]
                r = self.c.search(text=(texts or [])[i], **kw)
            out.append(_part(r, include_payload))
        return out

    def hybrid(
        self,
        queries: np.ndarray,
        texts: list[str],
        k: int,
        filter: Any,
        include_payload: bool,
        candidates: Optional[int],
        params: dict[str, Any],
        stats: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Per query, both rankings and every local candidate's two scores (keyword scores
        with the collection-wide statistics), unfused."""
        return [
            self.c.hybrid_candidates(
                queries[i], texts[i], k=k, filter=filter, include_payload=include_payload,
                hybrid_candidates=candidates, text_stats=stats[i], **params,
            )
            for i in range(len(texts))
        ]

    def search_batch(
        self, queries: np.ndarray, k: int, filter: Any, include_payload: bool, params: dict[str, Any]
    ) -> list[tuple[Any, np.ndarray, Optional[list]]]:
        res = self.c.search_batch(queries, k=k, filter=filter, include_payload=include_payload, **params)
        return [_part(r, include_payload) for r in res]

    def flush(self) -> None:
        self.c.flush()

    def compact(self) -> int:
        return self.c.compact()

    def wait_idle(self) -> None:
        self.c.wait_idle()

    def stats(self) -> dict[str, Any]:
        return self.c.stats()

    def scroll(self, filter: Any, limit: int, cursor: Optional[int], include_vector: bool) -> tuple:
        return self.c.scroll(filter, limit=limit, cursor=cursor, include_vector=include_vector)

    @ray.method(num_returns=2)  # type: ignore[misc]
    def export_page(
        self, filter: Any, limit: int, cursor: Optional[int], include_vector: bool, schema: Any
    ) -> tuple[Any, Optional[int]]:
        """One page of points as an Arrow table (stays in the object store) and the next
        cursor (the only part the driver reads)."""
        import pyarrow as pa  # type: ignore[import-untyped,import-not-found,unused-ignore]

        pts, nxt = self.c.scroll(filter, limit=limit, cursor=cursor, include_vector=include_vector)
        rows: dict[str, list] = {"id": [p["id"] for p in pts]}
        if include_vector:
            rows["vector"] = [np.asarray(p["vector"], dtype=np.float32) for p in pts]
        rows["payload"] = [json.dumps(p.get("payload") or {}) for p in pts]
        return pa.Table.from_pydict(rows, schema=schema), nxt

    def close(self) -> None:
        self.db.close()


_ShardActor = ray.remote(_Shard)


# ---------------------------------------------------------------------------------------
# The shard map


def _map_path(root: Union[str, os.PathLike[str]], name: str) -> pathlib.Path:
    return pathlib.Path(root) / name / MAP_FILE


def _write_map(path: pathlib.Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_map(root: Union[str, os.PathLike[str]], name: str) -> dict[str, Any]:
    path = _map_path(root, name)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise trovedb.CollectionNotFoundError(
            f"no sharded collection `{name}` under {root} ({path} does not exist)"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise trovedb.CorruptionError(f"{path}: unreadable shard map: {e}") from None
    if doc.get("format_version") != FORMAT_VERSION:
        raise trovedb.IncompatibleFormatError(
            f"{path}: shard map format {doc.get('format_version')}, this build reads {FORMAT_VERSION}"
        )
    if doc.get("routing") != ROUTING:
        raise trovedb.IncompatibleFormatError(f"{path}: unknown routing {doc.get('routing')!r}")
    n = doc.get("num_shards")
    if not isinstance(n, int) or n < 1 or len(doc.get("shards", [])) != n:
        raise trovedb.CorruptionError(f"{path}: num_shards {n!r} does not match its shard list")
    for i, s in enumerate(doc["shards"]):
        d = pathlib.Path(root) / name / s["dir"]
        if s.get("index") != i:
            raise trovedb.CorruptionError(f"{path}: shard {i} is listed as {s.get('index')}")
        if not d.is_dir() and s.get("node_ip") == _local_ip():
            raise ShardError(f"shard {i} of `{name}`: its directory {d} is missing")
    return doc


def _local_ip() -> str:
    try:
        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - outside a Ray session
        return ""


def _alive_nodes() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


# ---------------------------------------------------------------------------------------
# Results


@dataclass
class ShardedHit:
    """One hit of a sharded search."""

    id: Any
    distance: float
    payload: Optional[dict[str, Any]] = None

    @property
    def score(self) -> float:
        """Higher is better: minus the distance (for keyword search, the BM25 score)."""
        return -self.distance


@dataclass
class ShardedResult:
    """The merged top-k of one query, best first."""

    ids: list[Any]
    distances: np.ndarray
    payloads: Optional[list[Optional[dict[str, Any]]]] = None
    hits: list[ShardedHit] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[ShardedHit]:
        return iter(self.hits)

    def __getitem__(self, i: int) -> ShardedHit:
        return self.hits[i]


def _merge(
    parts: list[tuple[Any, np.ndarray, Optional[list]]], k: int, include_payload: bool
) -> ShardedResult:
    """Exact global top-k of per-shard top-k lists (ties: the smaller integer id; string
    ids: the earlier shard)."""
    ids: list[Any] = []
    dists: list[np.ndarray] = []
    pays: list[Optional[dict[str, Any]]] = []
    for sid, d, p in parts:
        ids.extend(sid.tolist() if isinstance(sid, np.ndarray) else sid)
        dists.append(np.asarray(d, dtype=np.float32))
        if include_payload:
            pays.extend(p or [None] * len(d))
    d = np.concatenate(dists) if dists else np.zeros(0, dtype=np.float32)
    if ids and not isinstance(ids[0], str):
        # Ties broken by the smaller id, as within one collection.
        order = np.lexsort((np.asarray(ids, dtype=np.uint64), d))[:k]
    else:
        order = np.argsort(d, kind="stable")[:k]
    out_ids = [ids[i] for i in order]
    out_d = d[order]
    out_p = [pays[i] for i in order] if include_payload else None
    hits = [
        ShardedHit(out_ids[j], float(out_d[j]), out_p[j] if out_p is not None else None)
        for j in range(len(order))
    ]
    return ShardedResult(out_ids, out_d, out_p, hits)


def _sum_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Collection-wide BM25 statistics: the shards' `text_stats` added up."""
    out = {"terms": list(parts[0]["terms"]), "fields": [list(f) for f in parts[0]["fields"]],
           "df": list(parts[0]["df"])}
    for p in parts[1:]:
        if p["terms"] != out["terms"] or len(p["fields"]) != len(out["fields"]):
            raise ShardError(
                f"the shards analyse the query differently ({p['terms']} vs {out['terms']}): "
                "their text configurations differ"
            )
        for a, b in zip(out["fields"], p["fields"]):
            a[0] += b[0]
            a[1] += b[1]
        out["df"] = [a + b for a, b in zip(out["df"], p["df"])]
    return out


def _fuse(
    fusion: str,
    alpha: float,
    rrf_k: float,
    dense: list[Any],
    keyword: list[Any],
    both: list[Any],
    k: int,
) -> list[tuple[Any, float]]:
    """The engine's fusion (core `collection/text.rs`, `fuse`), step for step in the same
    float64 arithmetic, over the collection-wide candidates: rank fusion over the two
    rankings, or the min-max blend over every candidate's two scores. Best first (ties:
    the smaller id)."""
    score: dict[Any, float] = {}
    if fusion == "rrf":
        rk = float(np.float32(rrf_k))
        for ranking in (dense, keyword):
            for rank, c in enumerate(ranking):
                score[c[0]] = score.get(c[0], 0.0) + 1.0 / (rk + rank + 1.0)
    else:
        a = float(np.float32(alpha))

        def norm(v: list[float]) -> list[float]:
            lo, hi = min(v, default=0.0), max(v, default=0.0)
            return [(x - lo) / (hi - lo) if hi > lo else 1.0 for x in v]

        dn = norm([-float(c[1]) for c in both])
        kn = norm([float(c[2]) for c in both])
        for c, d, t in zip(both, dn, kn):
            score[c[0]] = a * d + (1.0 - a) * t
    return sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


# ---------------------------------------------------------------------------------------
# The handle


class ShardedCollection:
    """A collection split over ``num_shards`` Ray actors; methods mirror
    :class:`trovedb.Collection`. Build with :func:`create_collection` or
    :func:`open_collection`."""

    def __init__(self, root: str, name: str, doc: dict[str, Any], actors: list[Any]):
        self.root = root
        self.name = name
        self._doc = doc
        self._actors = actors
        self.num_shards = int(doc["num_shards"])
        self.config: dict[str, Any] = doc["config"]
        self.dim = int(self.config["dim"])
        self.id_type: str = self.config.get("id_type", "int")
        self._closed = False

    # -- plumbing ----------------------------------------------------------------------

    def _describe(self, i: int) -> str:
        s = self._doc["shards"][i]
        return f"shard {i} of `{self.name}` ({pathlib.Path(self.root) / self.name / s['dir']}, node {s.get('node_ip') or '?'})"

    def _gather(self, refs: list[Any], shards: list[int]) -> list[Any]:
        """ray.get each call; a failure names its shard."""
        if self._closed:
            raise trovedb.ClosedError(f"sharded collection `{self.name}` is closed")
        out = []
        first_error: Optional[BaseException] = None
        for ref, i in zip(refs, shards):
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayActorError as e:
                first_error = first_error or ShardError(f"{self._describe(i)} is unavailable: {e}")
                out.append(None)
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if getattr(e, "cause", None) is not None else e
                if isinstance(cause, (ValueError, TypeError, KeyError)) and first_error is None:
                    first_error = cause
                else:
                    first_error = first_error or ShardError(
                        f"{self._describe(i)} failed: {type(cause).__name__}: {cause}"
                    )
                out.append(None)
        if first_error is not None:
            raise first_error
        return out

    def _all(self, method: str, *args: Any) -> list[Any]:
        refs = [getattr(a, method).remote(*args) for a in self._actors]
        return self._gather(refs, list(range(self.num_shards)))

    def _check_vectors(self, vectors: Any, n: int) -> np.ndarray:
        v = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if v.ndim == 1 and n == 1:
            v = v[None, :]
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape ({n}, {self.dim}); got {v.shape}")
        if len(v) != n:
            raise ValueError(f"{n} ids but {len(v)} vectors")
        return v

    def _ids(self, ids: Any) -> tuple[Any, int]:
        if isinstance(ids, np.ndarray):
            if self.id_type == "str":
                raise TypeError(f"collection `{self.name}` has string ids; got an integer array")
            return ids.astype(np.uint64) if ids.dtype.kind in "iu" else ids, len(ids)
        if isinstance(ids, (str, int, np.integer)):
            ids = [ids]
        ids = list(ids)
        for i, x in enumerate(ids):
            want = str if self.id_type == "str" else (int, np.integer)
            if not isinstance(x, want) or isinstance(x, bool):
                raise TypeError(
                    f"id at position {i}: collection `{self.name}` has {self.id_type} ids, got {x!r}"
                )
        return ids, len(ids)

    @staticmethod
    def _take(ids: Any, idx: np.ndarray) -> Any:
        if isinstance(ids, np.ndarray):
            return ids[idx]
        return [ids[i] for i in idx]

    # -- writes ------------------------------------------------------------------------

    def upsert(
        self,
        ids: Any,
        vectors: Any,
        payloads: Optional[Sequence[Optional[dict[str, Any]]]] = None,
    ) -> None:
        """Insert or replace points, each on its shard; returns once every shard involved
        has acknowledged durably. Shapes are checked before anything is sent."""
        ids, n = self._ids(ids)
        v = self._check_vectors(vectors, n)
        if payloads is not None and len(payloads) != n:
            raise ValueError(f"{n} ids but {len(payloads)} payloads")
        if n == 0:
            return
        where = shard_of(ids, self.num_shards)
        refs, shards = [], []
        for s in range(self.num_shards):
            idx = np.nonzero(where == s)[0]
            if len(idx) == 0:
                continue
            pay = [payloads[int(i)] for i in idx] if payloads is not None else None
            refs.append(self._actors[s].upsert.remote(self._take(ids, idx), v[idx], pay))
            shards.append(s)
        self._gather(refs, shards)

    def delete(self, ids: Any = None, *, filter: Optional[dict[str, Any]] = None) -> int:
        """Delete points by id (each on its shard) or by filter (on every shard); returns
        how many were deleted."""
        if (ids is None) == (filter is None):
            raise ValueError("give ids or filter")
        if filter is not None:
            return sum(self._all("delete", None, filter))
        ids, n = self._ids(ids)
        where = shard_of(ids, self.num_shards)
        refs, shards = [], []
        for s in range(self.num_shards):
            idx = np.nonzero(where == s)[0]
            if len(idx):
                refs.append(self._actors[s].delete.remote(self._take(ids, idx), None))
                shards.append(s)
        return sum(self._gather(refs, shards))

    # -- reads -------------------------------------------------------------------------

    def get(self, ids: Any, *, include_vector: bool = True) -> Any:
        """The points with these ids, in the order given (None where missing); one id
        gives one point or None."""
        single = isinstance(ids, (str, int, np.integer))
        ids, n = self._ids(ids)
        where = shard_of(ids, self.num_shards)
        out: list[Any] = [None] * n
        refs, shards, idxs = [], [], []
        for s in range(self.num_shards):
            idx = np.nonzero(where == s)[0]
            if len(idx):
                refs.append(self._actors[s].get.remote(self._take(ids, idx), include_vector))
                shards.append(s)
                idxs.append(idx)
        for idx, pts in zip(idxs, self._gather(refs, shards)):
            for j, p in zip(idx, pts):
                out[j] = p
        return out[0] if single else out

    def count(self, filter: Optional[dict[str, Any]] = None) -> int:
        """Live points (matching `filter`), over every shard."""
        return sum(self._all("count", filter))

    def __len__(self) -> int:
        return self.count()

    def search(
        self,
        query: Any = None,
        k: int = 10,
        filter: Optional[dict[str, Any]] = None,
        include_payload: bool = False,
        *,
        text: Union[str, Sequence[str], None] = None,
        fusion: str = "weighted",
        alpha: float = 0.5,
        rrf_k: float = 60.0,
        hybrid_candidates: Optional[int] = None,
        **search_params: Any,
    ) -> Union[ShardedResult, list[ShardedResult]]:
        """Nearest neighbours of one query (a list of floats or a 1-d array: one result)
        or of a batch (a 2-d array: one result per row), over every shard in parallel: each
        shard returns its top `k` under `filter`, the handle keeps the exact global top
        `k`. Index knobs (`ef`, `nprobe`, ...) are passed to every shard. `text=` is
        keyword search (BM25 with the statistics of the whole collection, gathered from
        the shards first; a list of texts is a batch); a vector and a text together is
        hybrid search: every shard returns its two rankings and each candidate's two
        scores, the handle keeps the collection-wide top candidates of each ranking and
        fuses them as one collection would (`fusion`, `alpha`, `rrf_k`,
        `hybrid_candidates` as in `Collection.search`)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        if text is not None and query is not None:
            return self._search_hybrid(
                query, text, k, filter, include_payload, fusion, alpha, rrf_k,
                hybrid_candidates, search_params,
            )
        if text is not None:
            return self._search_text(text, k, filter, include_payload, search_params)
        if query is None:
            raise ValueError("give a query vector (or a 2-d array of them)")
        q = np.asarray(query, dtype=np.float32)
        single = q.ndim == 1
        if single:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query must have shape ({self.dim},) or (nq, {self.dim}); got {q.shape}")
        q = np.ascontiguousarray(q)
        if single:
            refs = [
                a.search.remote(q, None, k, filter, include_payload, search_params)
                for a in self._actors
            ]
        else:
            refs = [
                a.search_batch.remote(q, k, filter, include_payload, search_params)
                for a in self._actors
            ]
        per_shard = self._gather(refs, list(range(self.num_shards)))
        results = [
            _merge([per_shard[s][i] for s in range(self.num_shards)], k, include_payload)
            for i in range(len(q))
        ]
        return results[0] if single else results

    def text_stats(self, text: str) -> dict[str, Any]:
        """The BM25 statistics of `text` over every shard's live documents, summed."""
        return _sum_stats([r[0] for r in self._all("text_stats", [text])])

    def _search_text(
        self,
        text: Union[str, Sequence[str]],
        k: int,
        filter: Any,
        include_payload: bool,
        params: dict[str, Any],
    ) -> Union[ShardedResult, list[ShardedResult]]:
        """Keyword search: the collection-wide statistics of each text (one call per shard
        for the batch), then every shard scores with them, so a shard's scores are those
        one collection holding every document would give; the top k are merged."""
        single = isinstance(text, str)
        texts = [text] if isinstance(text, str) else list(text)
        per_shard_stats = self._all("text_stats", texts)
        stats = [_sum_stats([ps[i] for ps in per_shard_stats]) for i in range(len(texts))]
        refs = [
            a.search.remote(None, texts, k, filter, include_payload, params, stats)
            for a in self._actors
        ]
        per_shard = self._gather(refs, list(range(self.num_shards)))
        results = [
            _merge([per_shard[s][i] for s in range(self.num_shards)], k, include_payload)
            for i in range(len(texts))
        ]
        return results[0] if single else results

    def _search_hybrid(
        self,
        query: Any,
        text: Union[str, Sequence[str]],
        k: int,
        filter: Any,
        include_payload: bool,
        fusion: str,
        alpha: float,
        rrf_k: float,
        candidates: Optional[int],
        params: dict[str, Any],
    ) -> Union[ShardedResult, list[ShardedResult]]:
        if fusion not in ("weighted", "rrf"):
            raise ValueError(f'fusion must be "rrf" or "weighted", got {fusion!r}')
        if candidates is not None and candidates < 1:
            raise ValueError(f"hybrid_candidates must be at least 1, got {candidates}")
        q = np.asarray(query, dtype=np.float32)
        single = q.ndim == 1
        texts = [text] if isinstance(text, str) else list(text)
        if single:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query must have shape ({self.dim},) or (nq, {self.dim}); got {q.shape}")
        if len(texts) != len(q):
            raise ValueError(f"a hybrid search takes one text per query vector: {len(q)} and {len(texts)}")
        n = max(candidates, k) if candidates is not None else max(k, 50)
        per_shard_stats = self._all("text_stats", texts)
        stats = [_sum_stats([ps[i] for ps in per_shard_stats]) for i in range(len(texts))]
        refs = [
            a.hybrid.remote(np.ascontiguousarray(q), texts, k, filter, include_payload, candidates,
                            params, stats)
            for a in self._actors
        ]
        per_shard = self._gather(refs, list(range(self.num_shards)))
        results = []
        for i in range(len(texts)):
            parts = [per_shard[s][i] for s in range(self.num_shards)]
            # Ties broken by id, as the engine's rankings do.
            dense = sorted((c for p in parts for c in p["dense"]), key=lambda c: (c[1], c[0]))[:n]
            keyword = sorted((c for p in parts for c in p["keyword"]), key=lambda c: (-c[1], c[0]))[:n]
            keep = {c[0] for c in dense} | {c[0] for c in keyword}
            both = [c for p in parts for c in p["both"] if c[0] in keep]
            fused = _fuse(fusion, alpha, rrf_k, dense, keyword, both, k)
            pays: dict[Any, Any] = {}
            for p in parts:
                pays.update(p["payloads"])
            ids = [f[0] for f in fused]
            dists = np.asarray([-np.float32(f[1]) for f in fused], dtype=np.float32)
            payloads = [pays.get(x, {}) for x in ids] if include_payload else None
            hits = [
                ShardedHit(x, float(dists[j]), payloads[j] if payloads is not None else None)
                for j, x in enumerate(ids)
            ]
            results.append(ShardedResult(ids, dists, payloads, hits))
        return results[0] if single else results

    def scroll_all(
        self, filter: Optional[dict[str, Any]] = None, *, include_vector: bool = True, page: int = 1024
    ) -> Iterator[dict[str, Any]]:
        """Every live point (matching `filter`), shard by shard."""
        for s, a in enumerate(self._actors):
            cursor = None
            while True:
                pts, cursor = self._gather([a.scroll.remote(filter, page, cursor, include_vector)], [s])[0]
                yield from pts
                if cursor is None:
                    break

    # -- maintenance -------------------------------------------------------------------

    def flush(self) -> None:
        """Seal every shard's appendable segment."""
        self._all("flush")

    def compact(self) -> None:
        """Merge each shard into one segment."""
        self._all("compact")

    def wait_idle(self) -> None:
        """Wait until every shard's background work is done."""
        self._all("wait_idle")

    def stats(self) -> dict[str, Any]:
        """Totals and each shard's `stats()`, with where it runs."""
        per = self._all("stats")
        where = self._all("where")
        return {
            "rows": sum(p["rows"] for p in per),
            "segments": sum(len(p["segments"]) for p in per),
            "bytes_on_disk": sum(p["bytes_on_disk"] for p in per),
            "shards": [dict(p, **w, shard=i) for i, (p, w) in enumerate(zip(per, where))],
        }

    def actors(self) -> list[Any]:
        """The shard actors (shard i at position i)."""
        return list(self._actors)

    def close(self) -> None:
        """Close every shard's database and stop its actor (their locks are released)."""
        if self._closed:
            return
        try:
            self._all("close")
        finally:
            for a in self._actors:
                ray.kill(a, no_restart=True)
            self._closed = True

    def __enter__(self) -> "ShardedCollection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# Creating and opening


def _actor_name(root: str, name: str, i: int) -> str:
    return f"{os.path.abspath(root)}::{name}::shard-{i}"


def _start(
    root: str,
    name: str,
    doc: dict[str, Any],
    open_options: dict[str, Any],
    max_restarts: int,
    shard_cpus: float,
) -> list[Any]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = _alive_nodes()
    actors = []
    for i, s in enumerate(doc["shards"]):
        on = [n for n in nodes if n["NodeManagerAddress"] == s["node_ip"]]
        if not on:
            raise ShardError(
                f"shard {i} of `{name}` lives on node {s['node_ip']}, which is not in the "
                f"cluster: it is unavailable until that node (or its disk) returns"
            )
        # Several nodes at one address (a simulated cluster): keep the recorded one if it
        # is alive, else any (they share the disk).
        node = next((n for n in on if n["NodeID"] == s.get("node_id")), on[0])
        actors.append(
            _ShardActor.options(
                name=_actor_name(root, name, i),
                namespace=NAMESPACE,
                get_if_exists=True,
                max_restarts=max_restarts,
                max_task_retries=3,
                num_cpus=shard_cpus,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            ).remote(
                str(pathlib.Path(root) / name / s["dir"]), name, doc["config"], open_options
            )
        )
    return actors


def _ensure_ray() -> None:
    if not ray.is_initialized():
        ray.init()


def create_collection(
    root: Union[str, os.PathLike[str]],
    name: str,
    num_shards: int,
    dim: int,
    metric: str = "cosine",
    index: str = "flat",
    *,
    id_type: str = "int",
    indexed_fields: Optional[Sequence[str]] = None,
    text_fields: Optional[Sequence[str]] = None,
    language: str = "english",
    stem: bool = True,
    stopwords: Any = None,
    bm25_k1: float = 1.2,
    bm25_b: float = 0.75,
    open_options: Optional[dict[str, Any]] = None,
    max_restarts: int = -1,
    shard_cpus: float = 0,
    **index_params: Any,
) -> ShardedCollection:
    """Create a sharded collection under `root` (refused if one exists) and start its shard
    actors, spread over the cluster's nodes (round-robin in node order). `open_options` go
    to each shard's `trovedb.open` (durability, seal_threshold_rows, ...); `max_restarts`
    (default: unlimited) and `shard_cpus` (CPUs reserved per shard actor, default 0) set
    the actors' Ray options."""
    _ensure_ray()
    if not isinstance(num_shards, int) or not 1 <= num_shards <= 4096:
        raise ValueError(f"num_shards must be an integer from 1 to 4096; got {num_shards!r}")
    if id_type not in ("int", "str"):
        raise ValueError(f'id_type must be "int" or "str"; got {id_type!r}')
    root = os.path.abspath(root)
    path = _map_path(root, name)
    if path.exists():
        raise trovedb.CollectionExistsError(f"sharded collection `{name}` exists under {root}")
    # Check the configuration once, here, before any shard exists.
    probe_dir = pathlib.Path(root) / name / ".probe"
    probe_dir.parent.mkdir(parents=True, exist_ok=True)
    with trovedb.open(probe_dir) as probe_db:
        probe = probe_db.create_collection(
            name, dim=dim, metric=metric, index=index, id_type=id_type,
            indexed_fields=list(indexed_fields) if indexed_fields is not None else None,
            text_fields=list(text_fields) if text_fields is not None else None,
            language=language, stem=stem, stopwords=stopwords, bm25_k1=bm25_k1, bm25_b=bm25_b,
            **index_params,
        )
        config = probe.config
    shutil.rmtree(probe_dir, ignore_errors=True)
    nodes = sorted(_alive_nodes(), key=lambda n: n["NodeID"])
    doc = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "num_shards": num_shards,
        "routing": ROUTING,
        "config": config,
        "open_options": open_options or {},
        "shards": [
            {
                "index": i,
                "dir": f"shard-{i}",
                "node_ip": nodes[i % len(nodes)]["NodeManagerAddress"],
                "node_id": nodes[i % len(nodes)]["NodeID"],
            }
            for i in range(num_shards)
        ],
        "created": time.time(),
    }
    actors = _start(root, name, doc, open_options or {}, max_restarts, shard_cpus)
    c = ShardedCollection(root, name, doc, actors)
    c._all("where")  # every shard opened its database
    _write_map(path, doc)
    return c


def open_collection(
    root: Union[str, os.PathLike[str]],
    name: str,
    *,
    max_restarts: int = -1,
    shard_cpus: float = 0,
) -> ShardedCollection:
    """Open a sharded collection: read and check its shard map, start (or reuse, in this
    Ray namespace) its shard actors on the nodes their directories live on."""
    _ensure_ray()
    root = os.path.abspath(root)
    doc = _read_map(root, name)
    actors = _start(root, name, doc, doc.get("open_options") or {}, max_restarts, shard_cpus)
    c = ShardedCollection(root, name, doc, actors)
    c._all("where")
    return c


# ---------------------------------------------------------------------------------------
# Ray Data


def _block_rows(block: Any, id_column: str, vector_column: str, payload_columns: Optional[Sequence[str]]):
    """(ids, vectors, payloads or None) of a Ray Data block (an Arrow table or pandas)."""
    import pyarrow as pa  # type: ignore[import-untyped,import-not-found,unused-ignore]

    if not isinstance(block, pa.Table):
        block = pa.Table.from_pandas(block, preserve_index=False)
    names = block.column_names
    for col in (id_column, vector_column):
        if col not in names:
            raise ValueError(f"the dataset has no `{col}` column (columns: {names})")
    ids_col = block.column(id_column)
    if pa.types.is_integer(ids_col.type):
        ids: Any = ids_col.to_numpy().astype(np.uint64)
    else:
        ids = ids_col.to_pylist()
    vcol = block.column(vector_column).combine_chunks()
    if pa.types.is_fixed_size_list(vcol.type) or pa.types.is_list(vcol.type) or pa.types.is_large_list(vcol.type):
        flat = vcol.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        vectors = flat.reshape(len(vcol), -1) if len(vcol) else flat.reshape(0, 0)
    else:  # a tensor extension column
        vectors = np.asarray(vcol.to_numpy(zero_copy_only=False), dtype=np.float32)
        vectors = vectors.reshape(len(vcol), -1)
    cols = payload_columns if payload_columns is not None else [
        c for c in names if c not in (id_column, vector_column)
    ]
    payloads = None
    if cols:
        data = {c: block.column(c).to_pylist() for c in cols}
        payloads = [
            {c: data[c][i] for c in cols if data[c][i] is not None} for i in range(block.num_rows)
        ]
    return ids, vectors, payloads


class TroveDatasink(ray.data.Datasink):
    """Write a Ray Dataset into a sharded collection (created first with
    :func:`create_collection`): `ds.write_datasink(TroveDatasink(root, name))`. Each write
    task routes its rows to the shards and waits for each batch's acknowledgement before
    sending the next (back-pressure). Columns: `id_column`, `vector_column` (a list or
    fixed-size-list of floats, or a tensor column), the payload from `payload_columns`
    (default: every other column; nulls are left out)."""

    def __init__(
        self,
        root: Union[str, os.PathLike[str]],
        name: str,
        *,
        id_column: str = "id",
        vector_column: str = "vector",
        payload_columns: Optional[Sequence[str]] = None,
        batch_size: int = 1000,
    ):
        self.root = os.path.abspath(root)
        self.name = name
        self.id_column = id_column
        self.vector_column = vector_column
        self.payload_columns = list(payload_columns) if payload_columns is not None else None
        self.batch_size = batch_size
        self.rows_written = 0

    def on_write_start(self, schema: Any = None) -> None:
        # The shard actors exist (started here if this driver has not opened it yet); the
        # write tasks, on any node, find them by name with the map carried from here.
        self._doc = open_collection(self.root, self.name)._doc

    def write(self, blocks: Iterable[Any], ctx: Any) -> int:
        doc = self._doc
        actors = [
            ray.get_actor(_actor_name(self.root, self.name, i), namespace=NAMESPACE)
            for i in range(doc["num_shards"])
        ]
        c = ShardedCollection(self.root, self.name, doc, actors)
        n = 0
        for block in blocks:
            ids, vectors, payloads = _block_rows(
                block, self.id_column, self.vector_column, self.payload_columns
            )
            for s in range(0, len(vectors), self.batch_size):
                e = s + self.batch_size
                c.upsert(
                    ids[s:e],
                    vectors[s:e],
                    payloads[s:e] if payloads is not None else None,
                )
            n += len(vectors)
        return n

    def on_write_complete(self, write_result: Any) -> None:
        returns = getattr(write_result, "write_returns", write_result)
        self.rows_written = int(sum(r for r in returns if r is not None))

    def get_name(self) -> str:
        return "TroveShards"


def read_collection(
    root: Union[str, os.PathLike[str]],
    name: str,
    *,
    filter: Optional[dict[str, Any]] = None,
    include_vector: bool = True,
    page: int = 4096,
) -> Any:
    """The collection's live points (matching `filter`) as a Ray Dataset with columns `id`,
    `vector` (when asked) and `payload` (the payload as JSON text), read by the shard
    actors page by page."""
    import pyarrow as pa  # type: ignore[import-untyped,import-not-found,unused-ignore]

    c = open_collection(root, name)
    id_type = pa.string() if c.id_type == "str" else pa.uint64()
    fields = [pa.field("id", id_type)]
    if include_vector:
        fields.append(pa.field("vector", pa.list_(pa.float32(), c.dim)))
    fields.append(pa.field("payload", pa.string()))
    schema = pa.schema(fields)
    tables = []
    for s, a in enumerate(c.actors()):
        cursor = None
        while True:
            table_ref, cursor_ref = a.export_page.remote(filter, page, cursor, include_vector, schema)
            cursor = c._gather([cursor_ref], [s])[0]
            tables.append(table_ref)
            if cursor is None:
                break
    return ray.data.from_arrow_refs(tables)
