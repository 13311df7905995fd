"""What the framework adapters (`trovedb.langchain`, `trovedb.llama_index`) share: finding
their string-keyed collection, and which metadata values are stored natively. Imports no
framework."""

from __future__ import annotations

import math
import os
from typing import Any, Optional

import trovedb


def one(res: "trovedb.SearchResult | trovedb.BatchResult") -> trovedb.SearchResult:
    """The result of a one-query search (the adapters never search in batches)."""
    assert isinstance(res, trovedb.SearchResult)
    return res


def native(v: Any) -> bool:
    """Whether a metadata value is stored as a payload value as it is (and filters see it)."""
    if v is None or isinstance(v, (bool, str)):
        return True
    if isinstance(v, int):
        return -(2**63) <= v < 2**63
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, list):
        return all(isinstance(x, str) for x in v)
    return False


class Target:
    """The database and (once it exists) the string-keyed collection an adapter writes to."""

    def __init__(
        self,
        what: str,
        path: Optional[str | os.PathLike[str]],
        name: str,
        database: Optional[trovedb.Database],
        collection: Optional[trovedb.Collection],
        metric: str,
    ) -> None:
        self.owns_db = False
        self.metric = metric
        self.db: Optional[trovedb.Database] = database
        self.collection: Optional[trovedb.Collection] = None
        self.name = name
        if collection is not None:
            self._check(collection, what, 'create it with id_type="str"')
            self.db, self.collection, self.name = database, collection, collection.name
            self.metric = collection.metric
            return
        if database is None:
            if path is None:
                raise ValueError("give path, database or collection")
            database = trovedb.open(path)
            self.owns_db = True
        self.db, self.name, self.collection = database, name, None
        if name in database.list_collections():
            c = database.get_collection(name)
            self._check(c, what, "use another collection_name")
            self.collection, self.metric = c, c.metric

    @staticmethod
    def _check(c: trovedb.Collection, what: str, advice: str) -> None:
        if c.id_type != "str":
            raise ValueError(f"collection `{c.name}` is keyed by integers; {what} ids are strings: {advice}")

    def create(self, dim: int, index: str, text_field: Optional[str], params: dict) -> trovedb.Collection:
        """The collection, created on first use with this dimension and config."""
        if self.collection is None:
            assert self.db is not None
            self.collection = self.db.get_or_create_collection(
                self.name, dim=dim, metric=self.metric, index=index, id_type="str",
                text_fields=[text_field] if text_field else None, **params,
            )
        return self.collection

    def close(self) -> None:
        if self.owns_db and self.db is not None:
            self.db.close()
            self.owns_db = False
