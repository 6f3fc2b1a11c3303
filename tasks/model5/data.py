"""FineWeb tokens for the model-5 tasks: fetch, tokenize, cache, split, sample.

The course's data: the first 1,000 documents of FineWeb (about 750k GPT-2
tokens), tokenized with the GPT-2 BPE and concatenated with ``<|endoftext|>``
between documents.  Two sources give the documents:

* a local parquet or jsonl file with a ``text`` column (task parameter
  ``data``, else the ``OPTBENCH_FINEWEB`` environment variable);
* the Hugging Face hub, ``HuggingFaceFW/fineweb`` config ``sample-10BT``,
  streamed so that only the first rows are downloaded.

Tokenizing is done once: the token array is cached as a ``.npy`` file in
``$OPTBENCH_CACHE`` (default ``~/.cache/optbench``) under a key made of the
source, the document count and the tokenizer, and memory-mapped afterwards.
Workers of a grid only ever read that cache (``TaskSpec.prepare`` fills it in
the driving process first).

Heavy libraries (numpy is fine; tiktoken, datasets, pyarrow) are imported only
where they are needed: this module is imported by ``optbench list``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from optbench.errors import OptbenchError

HUB_DATASET = "HuggingFaceFW/fineweb"
HUB_CONFIG = "sample-10BT"
HUB_SPLIT = "train"
TOKENIZER = "gpt2"
#: ``<|endoftext|>`` in the GPT-2 vocabulary
EOT = 50256
#: environment variable naming a local copy of the documents
ENV_DATA = "OPTBENCH_FINEWEB"
#: bump when the way tokens are produced changes, so old caches are not reused
PIPELINE_VERSION = 1
#: seconds the hub may take to accept a connection before we call it offline
PROBE_TIMEOUT = 3.0

_TRUE = {"1", "on", "yes", "true"}


def cache_dir() -> Path:
    """Where token arrays are cached: ``$OPTBENCH_CACHE`` or ``~/.cache/optbench``."""
    return Path(os.environ.get("OPTBENCH_CACHE") or Path.home() / ".cache" / "optbench")


# ----------------------------------------------------------------- sources


def _local_source(data: str) -> Path | None:
    path = data or os.environ.get(ENV_DATA, "")
    if not path:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        origin = "--data" if data else ENV_DATA
        raise OptbenchError(f"FineWeb copy {str(p)!r} (from {origin}) is not a file")
    return p.resolve()


#: files up to this size are hashed whole; larger ones by their head and tail
_HASH_WHOLE = 4 << 20
_HASH_PART = 1 << 20


def _content_hash(path: Path, size: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        if size <= _HASH_WHOLE:
            h.update(f.read())
        else:
            h.update(f.read(_HASH_PART))
            f.seek(size - _HASH_PART)
            h.update(f.read(_HASH_PART))
    return h.hexdigest()


def _source_id(local: Path | None) -> dict:
    """What identifies the documents, without tokenizing them.

    A local file: its path, size and modification time, as make does, plus a
    hash of its content (all of it up to 4 MiB, else the first and last MiB).
    The hash catches a same-size rewrite within the file system's timestamp
    granularity and a copy that kept the old mtime; reading 2 MiB keeps it
    cheap for a multi-GB FineWeb shard.
    """
    if local is None:
        return {"hub": HUB_DATASET, "config": HUB_CONFIG, "split": HUB_SPLIT}
    st = local.stat()
    return {
        "file": str(local),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "blake2b": _content_hash(local, st.st_size),
    }


def cache_path(data: str = "", n_docs: int = 1000, tokenizer: str = TOKENIZER) -> Path:
    """The cache file that holds the tokens of this source, document count and tokenizer."""
    key = {
        "source": _source_id(_local_source(data)),
        "n_docs": int(n_docs),
        "tokenizer": tokenizer,
        "pipeline": PIPELINE_VERSION,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "tokens" / f"fineweb-{digest}.npy"


def _limit(texts: Iterable[str], n_docs: int) -> Iterator[str]:
    for i, text in enumerate(texts):
        if n_docs > 0 and i >= n_docs:
            return
        yield text


def read_local_texts(path: Path, n_docs: int) -> list[str]:
    """The first ``n_docs`` (all if ``n_docs <= 0``) ``text`` values of a parquet or jsonl file."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        if "text" not in pf.schema_arrow.names:
            raise OptbenchError(f"{path} has no 'text' column (columns: {', '.join(pf.schema_arrow.names)})")

        def rows() -> Iterator[str]:
            # Read batch by batch so a multi-GB FineWeb shard is not loaded to take 1,000 rows.
            for batch in pf.iter_batches(columns=["text"], batch_size=1024):
                yield from batch.column(0).to_pylist()

        return list(_limit(rows(), n_docs))

    if name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz")):
        import gzip

        opener = gzip.open if name.endswith(".gz") else open

        def rows() -> Iterator[str]:
            with opener(path, "rt", encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        yield json.loads(line)["text"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise OptbenchError(
                            f"{path}:{lineno} is not a JSON object with a 'text' field "
                            "(expected one document per line)"
                        ) from None

        return list(_limit(rows(), n_docs))

    raise OptbenchError(f"{path}: unknown format; give a .parquet or .jsonl file with a 'text' column")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _hub_reachable(timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to the hub (or the HTTPS proxy) opens within ``timeout``.

    The connection runs in a daemon thread because name resolution has no
    timeout of its own and can block for far longer than a grid should wait.
    """
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return False
    ok = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


def _no_data_error(task: str, why: str) -> OptbenchError:
    return OptbenchError(
        f"{task}: FineWeb is not reachable ({why}) and no local copy was given; "
        f"pass --data PATH (parquet/jsonl with a 'text' column) or set {ENV_DATA}, "
        f"or run once with internet to fill the cache in {cache_dir() / 'tokens'}"
    )


def stream_hub_texts(n_docs: int, task: str = "fineweb-model5") -> list[str]:
    """The first ``n_docs`` FineWeb documents, streamed from the hub."""
    if n_docs <= 0:
        raise OptbenchError(f"{task}: n_docs must be positive when streaming FineWeb (the hub copy has ~10B tokens)")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if _env_true(var):
            raise _no_data_error(task, f"{var} is set")
    if not _hub_reachable():
        raise _no_data_error(task, "no connection to the Hugging Face hub")
    try:
        import datasets

        ds = datasets.load_dataset(HUB_DATASET, name=HUB_CONFIG, split=HUB_SPLIT, streaming=True)
        return [row["text"] for row in ds.take(n_docs)]
    except Exception as e:  # any network/auth/format failure ends the same way for the user
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise _no_data_error(task, f"{type(e).__name__}: {first}"[:200]) from e


# -------------------------------------------------------------- tokenizing


def get_encoding(name: str = TOKENIZER):
    """The tiktoken encoding, with a one-line error when its BPE files cannot be had."""
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # tiktoken downloads the BPE files on first use
        raise OptbenchError(
            f"tiktoken cannot load the {name!r} BPE ({type(e).__name__}); with no internet, "
            "set TIKTOKEN_CACHE_DIR to a folder holding its cached files (e.g. ../shared/data/tiktoken)"
        ) from e


def tokenize(texts: list[str], name: str = TOKENIZER) -> np.ndarray:
    """Token ids of ``texts`` joined by ``<|endoftext|>``, as uint16.

    ``encode_ordinary`` treats special-token text inside a document as plain
    text, so a document cannot inject a separator; the separator is added here
    by id.
    """
    enc = get_encoding(name)
    if enc.n_vocab > np.iinfo(np.uint16).max + 1:
        raise OptbenchError(f"tokenizer {name!r} has {enc.n_vocab} tokens; uint16 storage holds 65536")
    eot = enc.eot_token
    docs = enc.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)
    total = sum(len(d) for d in docs) + max(len(docs) - 1, 0)
    out = np.empty(total, dtype=np.uint16)
    pos = 0
    for i, d in enumerate(docs):
        if i:
            out[pos] = eot
            pos += 1
        out[pos : pos + len(d)] = d
        pos += len(d)
    return out


def _save_atomic(path: Path, tokens: np.ndarray, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same-directory temp files + os.replace: a reader sees the old file or the
    # complete new one, never a torn write, even with two processes racing.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, tokens)
    os.replace(tmp, path)
    meta_path = path.with_suffix(".json")
    tmp = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, meta_path)


def load_tokens(data: str = "", n_docs: int = 1000, task: str = "fineweb-model5") -> np.ndarray:
    """The token array (uint16, memory-mapped) of the first ``n_docs`` documents.

    ``data`` is a local parquet/jsonl path; empty means ``$OPTBENCH_FINEWEB``,
    else the hub.  The first call tokenizes and caches; later calls map the
    cache.  Raises :class:`OptbenchError` (one line) when there is no way to
    get the documents.
    """
    local = _local_source(data)
    path = cache_path(data, n_docs)
    if path.exists():
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError):
            pass  # unreadable cache (disk full, foreign file): rebuild it below
    texts = read_local_texts(local, n_docs) if local else stream_hub_texts(n_docs, task)
    if not texts:
        raise OptbenchError(f"{task}: {local or HUB_DATASET} holds no documents")
    tokens = tokenize(texts)
    meta = {
        "source": _source_id(local),
        "n_docs": int(n_docs),
        "docs_read": len(texts),
        "tokens": int(tokens.size),
        "tokenizer": TOKENIZER,
        "pipeline": PIPELINE_VERSION,
    }
    _save_atomic(path, tokens, meta)
    return np.load(path, mmap_mode="r")


def split_tokens(tokens: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out): the held-out split is the last ``val_fraction`` of the tokens.

    A contiguous tail rather than random windows, so that no held-out window
    overlaps a training one.
    """
    n_val = int(len(tokens) * val_fraction)
    return tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]


# ---------------------------------------------------------------- sampling


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    # One fancy-indexing gather of (batch, seq_len + 1) tokens; x and y are views of it.
    rows = torch.from_numpy(tokens[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64))
    return rows[:, :-1], rows[:, 1:]


class RandomSampler:
    """Batches of windows at uniformly random offsets, as in the course.

    Windows may overlap and some tokens are never seen; the offsets come from
    a ``torch.Generator`` seeded with ``seed``, so a seed fixes the stream.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int) -> None:
        if len(tokens) < seq_len + 1:
            raise OptbenchError(f"{len(tokens)} tokens cannot fill one window of {seq_len + 1}")
        self.tokens, self.batch_size, self.seq_len = tokens, batch_size, seq_len
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(self.tokens) - self.seq_len, (self.batch_size,), generator=self.generator)
        return _windows(self.tokens, starts.numpy(), self.seq_len)


class EpochSampler:
    """Every token once per epoch: non-overlapping windows in a seeded random order.

    Window ``i`` predicts tokens ``i*seq_len + 1 .. (i+1)*seq_len``, so the
    windows tile the array and each token is a target exactly once per epoch.
    The window order is a fresh permutation every epoch; a batch may straddle
    two epochs, so none is dropped or padded.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int) -> None:
        self.n_windows = (len(tokens) - 1) // seq_len
        if self.n_windows < 1:
            raise OptbenchError(f"{len(tokens)} tokens cannot fill one window of {seq_len + 1}")
        self.tokens, self.batch_size, self.seq_len = tokens, batch_size, seq_len
        self.generator = torch.Generator().manual_seed(seed)
        self._order = np.empty(0, dtype=np.int64)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self._order) < self.batch_size:
            perm = torch.randperm(self.n_windows, generator=self.generator).numpy()
            self._order = np.concatenate([self._order, perm])
        take, self._order = self._order[: self.batch_size], self._order[self.batch_size :]
        return _windows(self.tokens, take * self.seq_len, self.seq_len)


SAMPLERS = {"random": RandomSampler, "epoch": EpochSampler}


def make_sampler(kind: str, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int):
    try:
        cls = SAMPLERS[kind]
    except KeyError:
        raise OptbenchError(f"unknown sampler {kind!r}; known: {', '.join(SAMPLERS)}") from None
    return cls(tokens, batch_size, seq_len, seed)


def eval_batches(tokens: np.ndarray, batch_size: int, seq_len: int, n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed held-out set: the first ``n_batches`` batches of consecutive
    non-overlapping windows (fewer if the split is short).

    The same for every seed and optimizer, so held-out losses are compared on
    identical text.
    """
    n_windows = min((len(tokens) - 1) // seq_len, n_batches * batch_size)
    if n_windows < 1:
        raise OptbenchError(f"the held-out split ({len(tokens)} tokens) cannot fill one window of {seq_len + 1}")
    starts = np.arange(n_windows) * seq_len
    return [_windows(tokens, starts[i : i + batch_size], seq_len) for i in range(0, n_windows, batch_size)]
