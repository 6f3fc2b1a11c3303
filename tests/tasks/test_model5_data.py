"""The model-5 data pipeline: real tokenizing of local files, the cache, the
offline error, the samplers and the task built on them."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiktoken
import torch
from optbench_tasks import model5
from optbench_tasks.model5 import data
from optbench_tasks.model5.data import EOT, EpochSampler, RandomSampler, eval_batches, load_tokens, split_tokens

from optbench.errors import OptbenchError


@pytest.fixture(scope="module")
def enc():
    return tiktoken.get_encoding("gpt2")


def expected_tokens(enc, texts):
    out = []
    for i, t in enumerate(texts):
        if i:
            out.append(EOT)
        out.extend(enc.encode_ordinary(t))
    return np.array(out, dtype=np.uint16)


def test_tiktoken_cache_is_the_real_gpt2_bpe(enc):
    assert enc.n_vocab == 50257
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert enc.eot_token == EOT


def test_jsonl_is_tokenized_and_joined_with_endoftext(tmp_path, cache, enc):
    texts = ["Hello world", "The <|endoftext|> marker inside a document is plain text.", "Third."]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t, "url": "x"}) + "\n" for t in texts) + "\n")
    toks = load_tokens(str(path), n_docs=1000)
    assert toks.dtype == np.uint16
    np.testing.assert_array_equal(toks, expected_tokens(enc, texts))
    assert list(toks[:2]) == [15496, 995]
    assert int((toks == EOT).sum()) == 2  # separators only: the text in doc 2 is not a special token


def test_parquet_first_n_docs(tmp_path, cache, enc, docs):
    texts = docs(50)
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": list(range(50)), "text": texts}), path, row_group_size=16)
    toks = load_tokens(str(path), n_docs=20)
    np.testing.assert_array_equal(toks, expected_tokens(enc, texts[:20]))
    # n_docs is part of the cache key: asking for all documents tokenizes again
    assert len(load_tokens(str(path), n_docs=0)) == len(expected_tokens(enc, texts))


def test_env_var_names_the_local_copy(tmp_path, cache, monkeypatch, enc):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"text": "Hello world"}) + "\n")
    monkeypatch.setenv("OPTBENCH_FINEWEB", str(path))
    assert list(load_tokens("", n_docs=10)) == [15496, 995]


def test_bad_local_files_are_one_line_errors(tmp_path, cache):
    no_text = tmp_path / "no_text.parquet"
    pq.write_table(pa.table({"content": ["a", "b"]}), no_text)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "fine"}\nnot json\n')
    csv = tmp_path / "docs.csv"
    csv.write_text("text\nhello\n")
    cases = [
        (no_text, "no 'text' column"),
        (bad_json, "bad.jsonl:2"),
        (csv, "unknown format"),
        (tmp_path / "missing.jsonl", "is not a file"),
    ]
    for path, needle in cases:
        with pytest.raises(OptbenchError, match=needle) as exc:
            load_tokens(str(path), n_docs=10)
        assert "\n" not in str(exc.value)


def test_cache_miss_then_hit_without_tokenizing(corpus, cache, monkeypatch):
    calls = []
    real = data.tokenize
    monkeypatch.setattr(data, "tokenize", lambda texts, *a, **k: calls.append(len(texts)) or real(texts, *a, **k))
    first = load_tokens(str(corpus), n_docs=1000)
    assert calls == [300]
    cached = data.cache_path(str(corpus), 1000)
    assert cached.is_file() and cached.parent.parent == cache
    assert json.loads(cached.with_suffix(".json").read_text())["tokens"] == len(first)
    assert not [p for p in cached.parent.iterdir() if p.name.endswith(".tmp")]  # atomic: no leftovers

    def boom(*a, **k):
        raise AssertionError("a cache hit must not tokenize")

    monkeypatch.setattr(data, "tokenize", boom)
    again = load_tokens(str(corpus), n_docs=1000)
    assert isinstance(again, np.memmap)  # mapped, not read
    np.testing.assert_array_equal(again, first)


def test_cache_key_follows_file_content(tmp_path, cache, docs, enc):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs(5, seed=0)))
    a = load_tokens(str(path), n_docs=1000)
    key_a = data.cache_path(str(path), 1000)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs(5, seed=1)))
    key_b = data.cache_path(str(path), 1000)
    assert key_a != key_b
    b = load_tokens(str(path), n_docs=1000)
    np.testing.assert_array_equal(b, expected_tokens(enc, docs(5, seed=1)))
    assert not np.array_equal(a, b)
    assert data.cache_path(str(path), 999) != key_b  # document count is in the key too

    # same size, written within the same timestamp tick: the content hash tells them apart
    text = path.read_text()
    st = path.stat()
    path.write_text(text.replace("Document 0.", "Document 9.", 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert data.cache_path(str(path), 1000) != key_b
    assert load_tokens(str(path), n_docs=1000)[:3].tolist() == enc.encode_ordinary("Document 9.")[:3]


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_offline_without_copy_or_cache_is_a_one_line_error(cache, monkeypatch, var):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv(var, "1")
    with pytest.raises(OptbenchError) as exc:
        load_tokens("", n_docs=1000)
    msg = str(exc.value)
    assert "\n" not in msg
    assert var in msg and "--data" in msg and "OPTBENCH_FINEWEB" in msg and str(cache) in msg


def test_unreachable_hub_fails_fast(cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    t0 = time.perf_counter()
    with pytest.raises(OptbenchError, match="no connection to the Hugging Face hub") as exc:
        load_tokens("", n_docs=1000)
    # the probe gives up after PROBE_TIMEOUT; the hub client's own retries would take minutes
    assert time.perf_counter() - t0 < data.PROBE_TIMEOUT + 10
    assert "\n" not in str(exc.value)


def test_hub_tokens_cached_once_are_used_offline(cache, monkeypatch, docs, enc):
    texts = docs(10)
    monkeypatch.setattr(data, "stream_hub_texts", lambda n, task="": texts[:n])  # "online" once
    first = load_tokens("", n_docs=10)
    np.testing.assert_array_equal(first, expected_tokens(enc, texts))

    def offline(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(data, "stream_hub_texts", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    np.testing.assert_array_equal(load_tokens("", n_docs=10), first)


def test_prepare_reports_offline_as_optbench_error(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = {s.name: s for s in model5.optbench_tasks()}["fineweb-model5"]
    with pytest.raises(OptbenchError, match=r"^fineweb-model5: FineWeb is not reachable"):
        spec.prepare(**spec.defaults)


def test_split_holds_out_the_last_tenth():
    toks = np.arange(1000, dtype=np.uint16)
    train, val = split_tokens(toks)
    assert len(val) == 100 and val[0] == 900 and train[-1] == 899


def test_random_sampler_is_seeded_and_shifts_targets():
    toks = np.arange(5000, dtype=np.uint16)

    def batches(seed, n=3):
        s = RandomSampler(toks, batch_size=4, seq_len=16, seed=seed)
        return [s.next_batch() for _ in range(n)]

    a, b, c = batches(0), batches(0), batches(1)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    x, y = a[0]
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)  # targets are the next tokens
    assert int(x.max()) < 5000


def test_epoch_sampler_covers_every_window_once_per_epoch():
    toks = np.arange(16 * 30 + 1, dtype=np.uint16)  # exactly 30 windows of 16
    s = EpochSampler(toks, batch_size=4, seq_len=16, seed=3)
    assert s.n_windows == 30
    epochs = []
    seen = []
    for _ in range(15):  # 60 windows = two epochs; batches straddle the boundary
        x, y = s.next_batch()
        assert torch.equal(y, x + 1)
        seen.extend((x[:, 0] // 16).tolist())
    epochs = [seen[:30], seen[30:]]
    for ep in epochs:
        assert sorted(ep) == list(range(30))
    assert epochs[0] != epochs[1]  # reshuffled
    # every token is a target exactly once per epoch
    targets = [int(t) for i in epochs[0] for t in range(i * 16 + 1, i * 16 + 17)]
    assert sorted(targets) == list(range(1, 481))
    again = EpochSampler(toks, batch_size=4, seq_len=16, seed=3)
    assert torch.equal(again.next_batch()[0], EpochSampler(toks, 4, 16, 3).next_batch()[0])


def test_eval_batches_are_fixed_consecutive_windows():
    toks = np.arange(16 * 10 + 1, dtype=np.uint16)
    batches = eval_batches(toks, batch_size=4, seq_len=16, n_batches=2)
    assert len(batches) == 2
    starts = torch.cat([x[:, 0] for x, _ in batches]).tolist()
    assert starts == [0, 16, 32, 48, 64, 80, 96, 112]
    short = eval_batches(toks, batch_size=4, seq_len=16, n_batches=5)  # only 10 windows exist
    assert sum(len(x) for x, _ in short) == 10


# ---------------------------------------------------------------- the task


def spec(name="fineweb-model5"):
    return {s.name: s for s in model5.optbench_tasks()}[name]


def test_task_specs_are_declared_for_the_grid():
    fw, dr = spec("fineweb-model5"), spec("dropout-model5")
    assert fw.target_metric == dr.target_metric == "val_loss"
    assert fw.defaults["dropout"] == 0.0 and dr.defaults["dropout"] > 0
    assert fw.eval_every > 0 and fw.steps > 0 and fw.version
    assert {"size", "data", "n_docs", "sampler", "final_token_loss", "logit_scale", "eval_batches"} <= set(fw.defaults)


def test_build_gives_a_seeded_problem(corpus, cache):
    s = spec("dropout-model5")
    params = {**s.defaults, "size": "tiny", "data": str(corpus)}
    s.prepare(**params)

    def curve(seed):
        p = s.build(seed=seed, device="cpu", **params)
        first = [t.detach().clone() for t in p.params]
        losses = [p.loss(i).item() for i in range(3)]
        return first, losses, p

    w0, l0, p = curve(0)
    w1, l1, _ = curve(0)
    w2, l2, _ = curve(1)
    assert all(torch.equal(a, b) for a, b in zip(w0, w1)) and l0 == l1  # same seed: same init, batches, dropout
    assert not all(torch.equal(a, b) for a, b in zip(w0, w2)) and l0 != l2
    assert all(abs(v - np.log(50257)) < 1.0 for v in l0)
    assert p.tokens_per_micro == 4 * 32
    model = p.modules[0]
    assert p.flops_per_micro == model.flops_per_token(32) * 4 * 32
    model.eval()
    v1, v2 = p.evaluate(), p.evaluate()
    assert set(v1) == {"val_loss"} and v1 == v2  # fixed held-out set, dropout off


def test_overrides_and_bad_parameters(corpus, cache):
    s = spec()
    p = s.build(seed=0, device="cpu", **{**s.defaults, "size": "tiny", "data": str(corpus), "n_layer": 2,
                                        "batch_size": 3, "sampler": "epoch", "final_token_loss": True})
    model = p.modules[0]
    assert len(model.transformer.h) == 2 and p.tokens_per_micro == 3 * 32
    assert p.flops_per_micro == model.flops_per_token(32, final_token_only=True) * 3 * 32
    assert np.isfinite(p.loss(0).item())
    bad = [({"size": "tinny"}, "did you mean 'tiny'"), ({"sampler": "shuffle"}, "unknown sampler"),
           ({"n_embd": 33}, "divisible"), ({"seq_len": 100000}, "too few")]
    for override, needle in bad:
        with pytest.raises(OptbenchError, match=needle):
            s.prepare(**{**s.defaults, "size": "tiny", "data": str(corpus), **override})
    with pytest.raises(OptbenchError, match="unknown parameter 'n_layers'"):
        s.build(seed=0, device="cpu", size="tiny", data=str(corpus), n_layers=2)
