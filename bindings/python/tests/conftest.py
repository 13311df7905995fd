import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
DATA = REPO / "data" / "minilm-3k"


def read_fvecs(path: pathlib.Path) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.int32)
    dim = int(raw[0])
    return raw.reshape(-1, dim + 1)[:, 1:].view(np.float32).copy()


@pytest.fixture(scope="session")
def minilm() -> tuple[np.ndarray, np.ndarray]:
    return read_fvecs(DATA / "base.fvecs"), read_fvecs(DATA / "query.fvecs")


def require(module: str) -> None:
    """Skip the calling test module when an optional framework is not installed, unless
    TROVEDB_REQUIRE_INTEGRATIONS=1 (as in CI), where a missing framework is a failure."""
    import importlib
    import os

    if os.environ.get("TROVEDB_REQUIRE_INTEGRATIONS") == "1":
        importlib.import_module(module)
    else:
        pytest.importorskip(module)
