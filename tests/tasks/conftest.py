"""Fixtures for the model-5 tests: a small English corpus and a private token cache."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

# ../shared beside the project root holds tiktoken's GPT-2 files (CI clones the
# project elsewhere with shared/ beside it), so tokenizing needs no network.
TIKTOKEN_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tiktoken"
if TIKTOKEN_DIR.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_DIR))

_WORDS = (
    "the model reads a stream of tokens and learns to predict the next one while the optimizer "
    "follows the gradient of the loss on each batch so that held out text becomes less surprising"
).split()


def make_docs(n: int, seed: int = 0) -> list[str]:
    """``n`` short documents of English-like text: enough structure that a tiny GPT learns it fast."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(40, 90))]
        docs.append(f"Document {i}. " + " ".join(words).capitalize() + ".")
    return docs


def write_jsonl(path: Path, docs: list[str]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": len(d), "text": d}) + "\n")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A token cache of this test's own, so cache hits and misses are this test's doing."""
    d = tmp_path / "cache"
    monkeypatch.setenv("OPTBENCH_CACHE", str(d))
    monkeypatch.delenv("OPTBENCH_FINEWEB", raising=False)
    return d


@pytest.fixture
def docs():
    """``docs(n, seed=0)``: the corpus generator, for tests that need the texts themselves."""
    return make_docs


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A 300-document jsonl corpus (~25k GPT-2 tokens)."""
    return write_jsonl(tmp_path / "corpus.jsonl", make_docs(300))
