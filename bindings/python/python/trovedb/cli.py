"""The ``trovedb`` command: look inside, check, repair, search, load and copy a database.

Every command takes the database directory first. Output is a human-readable table;
``--json`` prints one JSON document instead (for scripts). Errors go to stderr.

Exit codes:
    0  success
    1  ``verify`` found damage (or ``repair`` left a collection it could not open)
    2  bad usage or bad input (unknown option, unreadable or malformed file, bad filter)
    3  the database could not be used (not a database, locked by a writer, I/O error,
       incompatible format, a collection that does not exist)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional, TextIO

import numpy as np

import trovedb

EXIT_OK = 0
EXIT_DAMAGED = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3


class UsageError(Exception):
    """Bad input from the command line or a file (exit code 2)."""


# ---------------------------------------------------------------------------------------
# Output helpers


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop always returns


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str], out: TextIO) -> None:
    """Print rows as aligned columns (numbers right-aligned)."""
    cells = [[str(h) for h in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [
        all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows)
        and len(rows) > 0
        for i in range(len(header))
    ]
    for j, r in enumerate(cells):
        line = "  ".join(
            c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(r)
        )
        print(line.rstrip(), file=out)
        if j == 0:
            print("  ".join("-" * w for w in widths), file=out)


def _kv(pairs: Sequence[tuple[str, Any]], out: TextIO) -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    for k, v in pairs:
        print(f"{k.ljust(width)}  {v}", file=out)


def _print_json(doc: Any, out: TextIO) -> None:
    json.dump(doc, out, indent=2, sort_keys=False, default=_json_default)
    out.write("\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class _Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: Optional[int], label: str, enabled: Optional[bool] = None):
        self.total = total
        self.label = label
        self.done = 0
        self.start = time.monotonic()
        self.last = 0.0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self.last > 0.1 or self.done == self.total):
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            if self.total:
                frac = min(self.done / self.total, 1.0)
                bar = "#" * int(frac * 30)
                msg = f"{self.label} [{bar:<30}] {self.done:,}/{self.total:,} {rate:,.0f}/s"
            else:
                msg = f"{self.label} {self.done:,} {rate:,.0f}/s"
            sys.stderr.write("\r" + msg)
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ---------------------------------------------------------------------------------------
# Opening


def _open(path: str, *, write: bool = False) -> trovedb.Database:
    p = Path(path)
    if not p.is_dir():
        raise trovedb.StorageIOError(f"{path}: no such directory")
    if write:
        return trovedb.open(path)
    return trovedb.open(path, read_only=True)


def _collection_info(c: trovedb.Collection) -> dict[str, Any]:
    s = c.stats()
    return {
        "name": c.name,
        "config": c.config,
        "rows": s["rows"],
        "segments": len(s["segments"]),
        "appendable_rows": s["appendable_rows"],
        "deleted": s["deleted"],
        "bytes": s["bytes_on_disk"],
        "manifest_version": s["manifest_version"],
        "segment_versions": sorted({seg["format_version"] for seg in s["segments"]}),
        "wal_files": s["wal_files"],
        "wal_bytes": s["wal_bytes"],
    }


# ---------------------------------------------------------------------------------------
# Commands


def cmd_info(args: argparse.Namespace, out: TextIO) -> int:
    with _open(args.path) as db:
        infos = []
        errors = {}
        for name, err in db.open_all().items():
            if err is None:
                infos.append(_collection_info(db.get_collection(name)))
            else:
                errors[name] = f"{type(err).__name__}: {err}"
        doc = {
            "path": str(Path(args.path).resolve()),
            "version": trovedb.__version__,
            "collections": infos,
            "unreadable": errors,
            "rows": sum(i["rows"] for i in infos),
            "bytes": sum(i["bytes"] for i in infos),
        }
    if args.json:
        _print_json(doc, out)
    else:
        print(f"database {doc['path']} (read by trovedb {doc['version']})", file=out)
        rows = []
        for i in infos:
            cfg = i["config"]
            index = cfg["index"]
            if cfg["index_params"]:
                index += " " + ",".join(
                    f"{k}={v}" for k, v in cfg["index_params"].items() if k != "seed"
                )
            rows.append(
                [
                    i["name"],
                    cfg["dim"],
                    cfg["metric"],
                    index,
                    cfg["id_type"],
                    ",".join(cfg["text_fields"] or []) or "-",
                    i["rows"],
                    i["segments"],
                    _human_bytes(i["bytes"]),
                    f"{i['manifest_version']}/"
                    + (",".join(str(v) for v in i["segment_versions"]) or "-"),
                ]
            )
        _table(
            rows,
            ["collection", "dim", "metric", "index", "ids", "text", "rows", "segments",
             "size", "format (manifest/segments)"],
            out,
        )
        print(
            f"{len(infos)} collection(s), {doc['rows']:,} rows, {_human_bytes(doc['bytes'])}",
            file=out,
        )
        for name, e in errors.items():
            print(f"collection {name}: cannot be opened: {e}", file=out)
    return EXIT_DAMAGED if errors else EXIT_OK


def cmd_inspect(args: argparse.Namespace, out: TextIO) -> int:
    with _open(args.path) as db:
        c = db.get_collection(args.collection)
        s = c.stats()
        doc: dict[str, Any] = {"name": c.name, "config": c.config, "stats": s}
    if args.json:
        _print_json(doc, out)
        return EXIT_OK
    cfg = doc["config"]
    print(f"collection {c.name}", file=out)
    _kv(
        [
            ("dim / metric", f"{cfg['dim']} / {cfg['metric']}"),
            ("index", cfg["index"] + (f" {cfg['index_params']}" if cfg["index_params"] else "")),
            ("ids", cfg["id_type"]),
            ("indexed fields", "all" if cfg["indexed_fields"] is None else cfg["indexed_fields"]),
            (
                "text",
                "-"
                if not cfg["text_fields"]
                else f"{cfg['text_fields']} language={cfg['language']} stem={cfg['stem']} "
                f"stopwords={cfg['stopwords']} k1={cfg['bm25_k1']} b={cfg['bm25_b']}",
            ),
            ("rows (live)", f"{s['rows']:,}"),
            ("appendable rows", f"{s['appendable_rows']:,} (in the log, not yet sealed)"),
            ("deleted rows", f"{s['deleted']:,} (still in sealed segments)"),
            ("bytes on disk", _human_bytes(s["bytes_on_disk"])),
            ("manifest format", s["manifest_version"]),
            (
                "log",
                f"{s['wal_files']} file(s), {_human_bytes(s['wal_bytes'])}, last LSN "
                f"{s['last_lsn']}, checkpoint LSN {s['checkpoint_lsn']}",
            ),
            ("torn tail", s["torn_tail"] or "-"),
        ],
        out,
    )
    print("", file=out)
    _table(
        [
            [
                seg["id"],
                seg["file"],
                seg["format_version"],
                seg["rows"],
                seg["deleted"],
                _human_bytes(seg["bytes"]),
                seg["index"],
                _human_bytes(seg["index_bytes"]),
                "-" if seg["quantization"] == "none"
                else f"{seg['quantization']} {_human_bytes(seg['quant_bytes'])}",
                _human_bytes(seg["text_bytes"]),
                seg["index_detail"] or "-",
            ]
            for seg in s["segments"]
        ],
        ["segment", "file", "ver", "rows", "deleted", "size", "index", "index size",
         "codes", "text size", "detail"],
        out,
    )
    bg = s["background"]
    print(
        f"\nbackground (of this read-only handle: none runs here): sealing={bg['sealing']} "
        f"merging={bg['merging'] or '-'} last_error={bg['last_error'] or '-'}",
        file=out,
    )
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    results: dict[str, Optional[str]] = {}
    with _open(args.path) as db:
        opened = db.open_all()
        names = [args.collection] if args.collection else sorted(opened)
        for name in names:
            if name not in opened:
                raise trovedb.CollectionNotFoundError(f"collection `{name}` does not exist")
            err = opened[name]
            if err is None:
                try:
                    db.get_collection(name).verify()
                except trovedb.TroveError as e:
                    err = e
            results[name] = None if err is None else f"{type(err).__name__}: {err}"
    intact = all(r is None for r in results.values())
    if args.json:
        _print_json(
            {
                "intact": intact,
                "collections": [
                    {"name": n, "ok": r is None, "error": r} for n, r in results.items()
                ],
            },
            out,
        )
    else:
        for n, r in results.items():
            print(f"{n}: {'ok' if r is None else 'DAMAGED: ' + r}", file=out)
        print("intact" if intact else "damaged (see above; `trovedb repair` may help)", file=out)
    return EXIT_OK if intact else EXIT_DAMAGED


def cmd_repair(args: argparse.Namespace, out: TextIO) -> int:
    if not Path(args.path).is_dir():
        raise trovedb.StorageIOError(f"{args.path}: no such directory")
    report = trovedb.repair(args.path)
    failed = {n: r["error"] for n, r in report.items() if r.get("error")}
    if args.json:
        _print_json({"collections": report, "ok": not failed}, out)
    else:
        for n, r in report.items():
            did = []
            for d in r.get("dropped_segments") or []:
                did.append(f"dropped segment {d}")
            if r.get("log_cut"):
                did.append(f"cut the log: {r['log_cut']}")
            if r.get("error"):
                did.append(f"still cannot be opened: {r['error']}")
            print(f"{n}: {'; '.join(did) if did else 'nothing to repair'}", file=out)
    return EXIT_DAMAGED if failed else EXIT_OK


def cmd_compact(args: argparse.Namespace, out: TextIO) -> int:
    results = []
    with _open(args.path, write=True) as db:
        names = [args.collection] if args.collection else db.list_collections()
        for name in names:
            c = db.get_collection(name)
            before = c.stats()
            t = time.monotonic()
            c.compact()
            after = c.stats()
            results.append(
                {
                    "name": name,
                    "segments_before": len(before["segments"]),
                    "segments_after": len(after["segments"]),
                    "bytes_before": before["bytes_on_disk"],
                    "bytes_after": after["bytes_on_disk"],
                    "seconds": round(time.monotonic() - t, 3),
                }
            )
    if args.json:
        _print_json({"collections": results}, out)
    else:
        _table(
            [
                [r["name"], r["segments_before"], r["segments_after"],
                 _human_bytes(r["bytes_before"]), _human_bytes(r["bytes_after"]), r["seconds"]]
                for r in results
            ],
            ["collection", "segments before", "after", "size before", "after", "seconds"],
            out,
        )
    return EXIT_OK


def _parse_json_arg(text: Optional[str], what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{what} is not valid JSON: {e}") from e


def _read_vectors(path: str) -> np.ndarray:
    """Vectors from a .npy (1-d: one vector; 2-d: one per row), an .fvecs file, or a JSON
    file holding a list of numbers or a list of lists."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{path}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            a = np.load(p, allow_pickle=False)
        elif suffix == ".fvecs":
            a = _read_fvecs(p)
        elif suffix == ".json":
            a = np.asarray(json.loads(p.read_text()), dtype=np.float32)
        else:
            raise UsageError(f"{path}: expected a .npy, .fvecs or .json file of vectors")
    except (ValueError, OSError) as e:
        raise UsageError(f"{path}: cannot read vectors: {e}") from e
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] == 0:
        raise UsageError(f"{path}: expected vectors (a 1-d or 2-d array), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise UsageError(f"{path}: expected numbers, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _read_fvecs(p: Path) -> np.ndarray:
    raw = np.fromfile(p, dtype=np.int32)
    if raw.size == 0:
        return np.zeros((0, 1), dtype=np.float32)
    d = int(raw[0])
    if d <= 0 or raw.size % (d + 1) != 0:
        raise UsageError(
            f"{p}: not an .fvecs file (first dimension {d}, {raw.size * 4} bytes)"
        )
    rows = raw.reshape(-1, d + 1)
    bad = np.nonzero(rows[:, 0] != d)[0]
    if bad.size:
        raise UsageError(
            f"{p}: vector {int(bad[0])} has dimension {int(rows[bad[0], 0])}, the first has {d}"
        )
    return rows[:, 1:].copy().view(np.float32)


def _parse_id(c: trovedb.Collection, raw: str) -> Any:
    if c.id_type == "str":
        return raw
    try:
        v = int(raw)
    except ValueError:
        raise UsageError(f"--id {raw!r}: collection `{c.name}` has integer ids") from None
    if v < 0:
        raise UsageError(f"--id {raw!r}: ids are non-negative")
    return v


def cmd_search(args: argparse.Namespace, out: TextIO) -> int:
    filt = _parse_json_arg(args.filter, "--filter")
    params: dict[str, Any] = {}
    for key in ("ef", "nprobe", "refine", "probes"):
        v = getattr(args, key)
        if v is not None:
            params[key] = v
    with _open(args.path) as db:
        c = db.get_collection(args.collection)
        kw: dict[str, Any] = dict(k=args.k, filter=filt, include_payload=not args.no_payload, **params)
        if args.vector_file is not None or args.vector is not None:
            q = (
                _read_vectors(args.vector_file)
                if args.vector_file is not None
                else np.asarray(_parse_json_arg(args.vector, "--vector"), dtype=np.float32)
            )
            if q.ndim == 1:
                q = q[None, :]
            results = [c.search(row.tolist(), text=args.text, **kw) for row in q]
        elif args.id is not None:
            results = [c.search(id=_parse_id(c, args.id), **kw)]
        else:
            results = [c.search(text=args.text, **kw)]
    if args.json:
        lists = [r.to_list() for r in results]
        _print_json(lists[0] if len(lists) == 1 else lists, out)
        return EXIT_OK
    for qi, r in enumerate(results):
        if len(results) > 1:
            print(f"query {qi}", file=out)
        higher = r.kind in ("text", "hybrid")
        rows = []
        for rank, h in enumerate(r):
            row = [rank + 1, h.id, round(h.score if higher else h.distance, 6)]
            if not args.no_payload:
                row.append(_truncate(json.dumps(h.payload or {}, ensure_ascii=False)))
            rows.append(row)
        header = ["rank", "id", "score" if higher else "distance"]
        _table(rows, header + ([] if args.no_payload else ["payload"]), out)
    return EXIT_OK


def _truncate(s: str, n: int = 80) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


# --- import ----------------------------------------------------------------------------


def _read_ids_file(path: str, n: int) -> list[Any]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{path}: no such file")
    if p.suffix.lower() == ".npy":
        a = np.load(p, allow_pickle=False)
        ids: list[Any] = a.tolist()
    else:
        ids = [line.rstrip("\n") for line in p.read_text().splitlines() if line.strip()]
        if all(s.isdigit() for s in ids):
            ids = [int(s) for s in ids]
    if len(ids) != n:
        raise UsageError(f"{path}: {len(ids)} ids for {n} vectors")
    return ids


def _jsonl_rows(path: Path, id_field: str, vector_field: str) -> Iterator[tuple[int, Any, list, Optional[dict]]]:
    """(line number, id, vector, payload) per non-blank line; a malformed line is a
    UsageError naming it."""
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line.strip())
            except json.JSONDecodeError as e:
                raise UsageError(f"{path}:{lineno}: not valid JSON: {e}") from None
            yield (lineno, *_split_record(obj, f"{path}:{lineno}", id_field, vector_field))


def _split_record(obj: Any, where: str, id_field: str, vector_field: str) -> tuple[Any, list, Optional[dict]]:
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if id_field not in obj:
        raise UsageError(f"{where}: no `{id_field}` field")
    if vector_field not in obj:
        raise UsageError(f"{where}: no `{vector_field}` field")
    ident = obj[id_field]
    if isinstance(ident, bool) or not isinstance(ident, (int, str)):
        raise UsageError(f"{where}: `{id_field}` must be an integer or a string, got {ident!r}")
    vec = obj[vector_field]
    if isinstance(vec, np.ndarray):
        vec = vec.tolist()
    if not isinstance(vec, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in vec
    ):
        raise UsageError(f"{where}: `{vector_field}` must be a list of numbers")
    if "payload" in obj and len(obj) == 3 and id_field != "payload" and vector_field != "payload":
        payload = obj["payload"]
        if isinstance(payload, str):
            # Parquet exports keep payloads as JSON text.
            try:
                payload = json.loads(payload)
            except json.JSONDecodeError:
                raise UsageError(f"{where}: `payload` is a string but not JSON") from None
        if payload is not None and not isinstance(payload, dict):
            raise UsageError(f"{where}: `payload` must be an object")
    else:
        payload = {k: v for k, v in obj.items() if k not in (id_field, vector_field)}
    return ident, vec, payload or None


def _parquet_rows(path: Path, id_field: str, vector_field: str) -> Iterator[tuple[int, Any, list, Optional[dict]]]:
    pq = _pyarrow_parquet()
    f = pq.ParquetFile(path)
    row = 0
    for batch in f.iter_batches(batch_size=4096):
        for rec in batch.to_pylist():
            row += 1
            yield (row, *_split_record(rec, f"{path} row {row}", id_field, vector_field))


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        raise UsageError(
            "Parquet needs pyarrow: pip install 'trovedb[parquet]' (or pyarrow)"
        ) from None
    return pq


def _records(args: argparse.Namespace) -> tuple[Optional[int], Iterator[tuple[int, Any, list, Optional[dict]]]]:
    """(row count if known, rows) of the import file, each row validated."""
    p = Path(args.file)
    if not p.is_file():
        raise UsageError(f"{args.file}: no such file")
    suffix = p.suffix.lower()
    if suffix in (".npy", ".fvecs"):
        vecs = _read_vectors(args.file)
        n = len(vecs)
        if args.ids:
            ids = _read_ids_file(args.ids, n)
        else:
            ids = list(range(args.first_id, args.first_id + n))
        return n, ((i + 1, ids[i], vecs[i], None) for i in range(n))
    if args.ids:
        raise UsageError("--ids applies to .npy and .fvecs files (JSON lines and Parquet carry ids)")
    if suffix in (".jsonl", ".ndjson"):
        read = _jsonl_rows
    elif suffix == ".parquet":
        read = _parquet_rows
    else:
        raise UsageError(f"{args.file}: expected .npy, .fvecs, .jsonl (.ndjson) or .parquet")
    # Read every row once before writing anything: a malformed row (or a vector whose
    # length differs from the first's, or ids of both kinds) changes nothing.
    n = 0
    dim = None
    kind = None
    for where, ident, vec, _ in read(p, args.id_field, args.vector_field):
        n += 1
        if dim is None:
            dim, kind = len(vec), type(ident)
        elif len(vec) != dim:
            raise UsageError(f"{args.file} row {where}: vector of {len(vec)} numbers, the first has {dim}")
        elif type(ident) is not kind:
            raise UsageError(
                f"{args.file} row {where}: id {ident!r} is a {type(ident).__name__}, the first "
                f"row's is a {kind.__name__ if kind else '?'}"
            )
    return n, read(p, args.id_field, args.vector_field)


def cmd_import(args: argparse.Namespace, out: TextIO) -> int:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    total, rows = _records(args)
    first = None
    if total:
        rows = iter(rows)
        first = next(rows)
    t0 = time.monotonic()
    with _open(args.path, write=True) as db:
        if args.collection in db.list_collections():
            c = db.get_collection(args.collection)
            created = False
            if first is not None and len(first[2]) != c.dim:
                raise UsageError(
                    f"{args.file}: vectors of {len(first[2])} numbers, collection "
                    f"`{c.name}` has dim {c.dim}; nothing imported"
                )
        else:
            if first is None:
                raise UsageError(f"{args.file}: no rows, and collection `{args.collection}` does not exist")
            params: dict[str, Any] = {}
            for kv in args.index_param or []:
                k, _, v = kv.partition("=")
                try:
                    params[k] = int(v)
                except ValueError:
                    raise UsageError(f"--index-param {kv!r}: expected name=integer") from None
            c = db.create_collection(
                args.collection,
                dim=len(first[2]),
                metric=args.metric,
                index=args.index,
                text_fields=args.text_field or None,
                id_type="str" if isinstance(first[1], str) else "int",
                **params,
            )
            created = True
        progress = _Progress(total, f"import {args.collection}", enabled=args.progress)
        written = 0

        def flush(batch: list[tuple[int, Any, Any, Optional[dict]]]) -> None:
            nonlocal written
            ids = [b[1] for b in batch]
            # Every row's length equals the first's (checked by _records), and the first's
            # equals the collection's dimension (checked above).
            vecs = np.asarray([b[2] for b in batch], dtype=np.float32)
            payloads = [b[3] for b in batch] if any(b[3] is not None for b in batch) else None
            where = f"{args.file} rows {batch[0][0]}..{batch[-1][0]}"
            try:
                c.upsert(ids, vecs, payloads)
            except (ValueError, TypeError, trovedb.IdCollisionError) as e:
                raise UsageError(
                    f"{where} refused ({written:,} rows before them were imported): {e}"
                ) from None
            written += len(batch)
            progress.update(len(batch))

        batch: list[tuple[int, Any, Any, Optional[dict]]] = [first] if first is not None else []
        try:
            for rec in rows:
                batch.append(rec)
                if len(batch) >= args.batch_size:
                    flush(batch)
                    batch = []
            if batch:
                flush(batch)
        finally:
            progress.close()
        if args.wait:
            c.wait_idle()
        stats = c.stats()
    seconds = time.monotonic() - t0
    doc = {
        "collection": args.collection,
        "created": created,
        "rows_written": written,
        "rows_in_collection": stats["rows"],
        "segments": len(stats["segments"]),
        "seconds": round(seconds, 3),
        "rows_per_second": round(written / seconds, 1) if seconds > 0 else None,
    }
    if args.json:
        _print_json(doc, out)
    else:
        print(
            f"imported {written:,} rows into `{args.collection}`"
            f"{' (created)' if created else ''} in {seconds:.1f} s "
            f"({doc['rows_per_second'] or 0:,.0f} rows/s); it holds {stats['rows']:,} rows",
            file=out,
        )
    return EXIT_OK


# --- export ----------------------------------------------------------------------------


def _scroll_all(c: trovedb.Collection, filt: Any, with_vectors: bool) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        points, cursor = c.scroll(filt, limit=1024, cursor=cursor, include_vector=with_vectors)
        yield from points
        if cursor is None:
            return


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    filt = _parse_json_arg(args.filter, "--filter")
    fmt = args.format or ("parquet" if str(args.file).lower().endswith(".parquet") else "jsonl")
    if fmt == "parquet" and args.file == "-":
        raise UsageError("Parquet cannot be written to stdout; give a file name")
    n = 0
    with _open(args.path) as db:
        c = db.get_collection(args.collection)
        total = c.count(filt) if filt is not None else len(c)
        progress = _Progress(total, f"export {args.collection}", enabled=args.progress)
        try:
            if fmt == "jsonl":
                sink = sys.stdout if args.file == "-" else open(args.file, "w", encoding="utf-8")
                try:
                    for p in _scroll_all(c, filt, not args.no_vectors):
                        rec: dict[str, Any] = {"id": p["id"]}
                        if not args.no_vectors:
                            rec["vector"] = np.asarray(p["vector"]).tolist()
                        rec["payload"] = p.get("payload") or {}
                        sink.write(json.dumps(rec, ensure_ascii=False) + "\n")
                        n += 1
                        progress.update(1)
                finally:
                    if sink is not sys.stdout:
                        sink.close()
            else:
                n = _export_parquet(c, filt, args, progress)
        finally:
            progress.close()
    if args.file != "-":
        if args.json:
            _print_json({"collection": args.collection, "rows": n, "file": args.file, "format": fmt}, out)
        else:
            print(f"exported {n:,} rows of `{args.collection}` to {args.file} ({fmt})", file=out)
    return EXIT_OK


def _export_parquet(c: trovedb.Collection, filt: Any, args: argparse.Namespace, progress: _Progress) -> int:
    pq = _pyarrow_parquet()
    import pyarrow as pa  # type: ignore[import-untyped,import-not-found,unused-ignore]

    id_type = pa.string() if c.id_type == "str" else pa.uint64()
    fields = [pa.field("id", id_type)]
    if not args.no_vectors:
        fields.append(pa.field("vector", pa.list_(pa.float32(), c.dim)))
    fields.append(pa.field("payload", pa.string()))
    schema = pa.schema(fields)
    n = 0
    with pq.ParquetWriter(args.file, schema) as w:
        chunk: list[dict[str, Any]] = []
        for p in _scroll_all(c, filt, not args.no_vectors):
            rec: dict[str, Any] = {"id": p["id"]}
            if not args.no_vectors:
                rec["vector"] = np.asarray(p["vector"], dtype=np.float32)
            rec["payload"] = json.dumps(p.get("payload") or {}, ensure_ascii=False)
            chunk.append(rec)
            if len(chunk) >= 4096:
                w.write_table(pa.Table.from_pylist(chunk, schema=schema))
                n += len(chunk)
                progress.update(len(chunk))
                chunk = []
        if chunk:
            w.write_table(pa.Table.from_pylist(chunk, schema=schema))
            n += len(chunk)
            progress.update(len(chunk))
    return n


def cmd_backup(args: argparse.Namespace, out: TextIO) -> int:
    t = time.monotonic()
    with _open(args.path) as db:
        report = db.backup(args.dest)
    seconds = time.monotonic() - t
    report = dict(report)
    report["seconds"] = round(seconds, 3)
    report["mb_per_second"] = round(report["bytes"] / 1e6 / seconds, 1) if seconds > 0 else None
    if args.json:
        _print_json(report, out)
    else:
        print(
            f"backed up {len(report['collections'])} collection(s), {report['files']} files, "
            f"{_human_bytes(report['bytes'])} to {args.dest} in {seconds:.2f} s",
            file=out,
        )
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# Argument parsing


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document")

    p = argparse.ArgumentParser(
        prog="trovedb",
        description="Look inside, check, repair, search, load and copy a trovedb database.",
        epilog="Exit codes: 0 success, 1 damage found, 2 bad usage or input, "
        "3 the database could not be used.",
    )
    p.add_argument("--version", action="version", version=f"trovedb {trovedb.__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("info", parents=[common], help="collections, configs, rows, segments, bytes, format versions")
    s.add_argument("path")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("inspect", parents=[common], help="one collection: segments, index details, log, background state")
    s.add_argument("path")
    s.add_argument("collection")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("verify", parents=[common], help="check every checksum; exit code 1 if anything is damaged")
    s.add_argument("path")
    s.add_argument("collection", nargs="?", help="only this collection")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser(
        "repair", parents=[common],
        help="drop damaged segments and cut a damaged log so every collection opens "
        "(needs the database closed elsewhere)",
    )
    s.add_argument("path")
    s.set_defaults(func=cmd_repair)

    s = sub.add_parser("compact", parents=[common], help="merge each collection into one segment (needs the writer's lock)")
    s.add_argument("path")
    s.add_argument("collection", nargs="?", help="only this collection")
    s.set_defaults(func=cmd_compact)

    s = sub.add_parser("search", parents=[common], help="nearest neighbours, keyword or hybrid search")
    s.add_argument("path")
    s.add_argument("collection")
    q = s.add_mutually_exclusive_group()
    q.add_argument("--vector-file", help="query vector(s): .npy (1-d or 2-d), .fvecs or .json")
    q.add_argument("--vector", help="one query vector as a JSON list")
    q.add_argument("--id", help="more like the stored point with this id (itself excluded)")
    s.add_argument("--text", help="keyword query (BM25); with a vector, hybrid search")
    s.add_argument("-k", type=int, default=10, help="hits per query (default 10)")
    s.add_argument("--filter", help='a filter as JSON, e.g. \'{"lang": "en"}\'')
    s.add_argument("--ef", type=int, help="HNSW beam width")
    s.add_argument("--nprobe", type=int, help="IVF-PQ lists probed")
    s.add_argument("--refine", type=int, help="IVF-PQ/LSH re-ranking factor")
    s.add_argument("--probes", type=int, help="LSH buckets per table")
    s.add_argument("--no-payload", action="store_true", help="leave payloads out")
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("import", parents=[common], help="load vectors (.npy/.fvecs), JSON lines or Parquet")
    s.add_argument("path", help="database directory (created if missing)")
    s.add_argument("collection", help="created from the first row if missing")
    s.add_argument("file", help=".npy or .fvecs (vectors), .jsonl/.ndjson or .parquet (id, vector, payload)")
    s.add_argument("--ids", help="ids for a .npy/.fvecs file: .npy of integers, or a text file with one id per line")
    s.add_argument("--first-id", type=int, default=0, help="without --ids: ids first-id, first-id+1, ... (default 0)")
    s.add_argument("--id-field", default="id", help="JSON lines/Parquet: the id field (default id)")
    s.add_argument("--vector-field", default="vector", help="JSON lines/Parquet: the vector field (default vector)")
    s.add_argument("--metric", default="cosine", choices=["cosine", "l2", "dot"], help="for a new collection (default cosine)")
    s.add_argument("--index", default="hnsw", choices=["flat", "hnsw", "ivf_pq", "lsh"], help="for a new collection (default hnsw)")
    s.add_argument("--index-param", action="append", metavar="NAME=INT", help="index parameter for a new collection (repeatable)")
    s.add_argument("--text-field", action="append", help="payload field for keyword search in a new collection (repeatable)")
    s.add_argument("--batch-size", type=int, default=1000, help="rows per upsert (default 1000)")
    s.add_argument("--wait", action="store_true", help="wait for background sealing and merging before returning")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("export", parents=[common], help="write points as JSON lines or Parquet")
    s.add_argument("path")
    s.add_argument("collection")
    s.add_argument("file", help="output file ('-' for stdout, JSON lines only)")
    s.add_argument("--format", choices=["jsonl", "parquet"], help="default: from the file name (jsonl)")
    s.add_argument("--filter", help="only points matching this JSON filter")
    s.add_argument("--no-vectors", action="store_true", help="ids and payloads only")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("backup", parents=[common], help="a consistent copy while writers go on")
    s.add_argument("path")
    s.add_argument("dest", help="a directory that does not exist or is empty")
    s.set_defaults(func=cmd_backup)
    return p


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None) -> int:
    """Run the command line; returns the exit code."""
    out = sys.stdout if out is None else out
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help/--version (0) or a usage error (2)
        return int(e.code or 0)
    if args.command == "import":
        os.makedirs(args.path, exist_ok=True)
    try:
        return int(args.func(args, out))
    except BrokenPipeError:
        # The reader of our output went away (`trovedb search ... | head`): stop quietly,
        # and keep Python's exit-time flush of stdout from complaining again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except UsageError as e:
        print(f"trovedb {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, TypeError) as e:
        # The engine's argument errors (a bad filter, a wrong vector length, ...).
        print(f"trovedb {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyError as e:
        print(f"trovedb {args.command}: not found: {e.args[0] if e.args else e}", file=sys.stderr)
        return EXIT_USAGE
    except trovedb.CorruptionError as e:
        print(f"trovedb {args.command}: damaged: {e}", file=sys.stderr)
        return EXIT_DAMAGED
    except (trovedb.TroveError, OSError) as e:
        print(f"trovedb {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_DATABASE
    except KeyboardInterrupt:
        print(f"trovedb {args.command}: interrupted", file=sys.stderr)
        return 130


def main_exit() -> None:
    """The console script's entry point: exits with :func:`main`'s code."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    main_exit()
