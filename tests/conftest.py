"""Shared test set-up: offline, with the tokenizer cache from ../shared, and a
private optbench cache so tests never read or pollute the user's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Set before anything imports tiktoken or datasets, so no test reaches for the network.
if (SHARED / "data" / "tiktoken").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "data" / "tiktoken"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("optbench-cache")
    old = os.environ.get("OPTBENCH_CACHE")
    os.environ["OPTBENCH_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("OPTBENCH_CACHE", None)
    else:
        os.environ["OPTBENCH_CACHE"] = old


@pytest.fixture(scope="session")
def reg():
    """The registry of installed plugins (built-ins included), built once."""
    from optbench import registry

    return registry.load()
