"""The model-5 GPT: shapes, causality, dropout states, loss and sampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from optbench_tasks.model5.gpt import GPT, GPTConfig

V = 50257


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(block_size=16, n_layer=2, n_head=2, n_embd=32)
    return GPT(GPTConfig(**{**cfg, **kw}))


def tokens(b=3, t=16, seed=1) -> torch.Tensor:
    return torch.randint(0, V, (b, t), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_tied_head():
    m = tiny()
    x = tokens(3, 16)
    assert m(x).shape == (3, 16, V)
    assert m(x, last_only=True).shape == (3, 1, V)
    assert m(x[:, :5]).shape == (3, 5, V)  # shorter than block_size is fine
    assert m.lm_head.weight is m.transformer.wte.weight
    # tied weight counted once; position embedding left out by default
    n_all = sum(p.numel() for p in m.parameters())
    assert m.num_params(non_embedding=False) == n_all
    assert m.num_params() == n_all - 16 * 32
    with pytest.raises(ValueError, match="block_size"):
        m(tokens(1, 17))


def test_logits_are_raw_not_log_softmax():
    m = tiny()
    logits = m(tokens(2, 8))
    # log-probabilities would exponentiate to sum 1 over the vocabulary
    assert not torch.allclose(logits.exp().sum(-1), torch.ones(2, 8), atol=1e-3)


def test_last_only_matches_full_forward():
    m = tiny().eval()
    x = tokens(2, 16)
    torch.testing.assert_close(m(x, last_only=True)[:, -1], m(x)[:, -1], rtol=1e-5, atol=1e-5)


def test_causal_masking_future_tokens_do_not_change_past_logits():
    m = tiny().eval()
    x = tokens(2, 16)
    y = x.clone()
    y[:, 10:] = (y[:, 10:] + 123) % V  # change every token from position 10 on
    a, b = m(x), m(y)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=1e-5)
    assert not torch.allclose(a[:, 10:], b[:, 10:], atol=1e-3)


def test_dropout_active_in_train_mode():
    m = tiny(dropout=0.2).train()
    x = tokens(2, 16)
    assert not torch.allclose(m(x), m(x))


SITES = ["embedding", "attention", "attention_projection", "mlp"]


def only_site(m: GPT, site: str, p: float = 0.5) -> GPT:
    """Switch off every dropout of ``m`` except the one at ``site``."""
    for mod in m.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    for block in m.transformer.h:
        block.attn.dropout = 0.0
    if site == "embedding":
        m.transformer.drop.p = p
    for block in m.transformer.h:
        if site == "attention":
            block.attn.dropout = p
        elif site == "attention_projection":
            block.attn.resid_dropout.p = p
        elif site == "mlp":
            block.mlp.dropout.p = p
    return m


@pytest.mark.parametrize("site", SITES)
def test_each_of_the_four_dropout_sites_is_on_in_train_and_off_in_eval(site):
    """The course's four places; attention dropout goes through SDPA's dropout_p,
    which eval() cannot reach, so the model must gate it on self.training."""
    m = only_site(tiny(dropout=0.5), site)
    x = tokens(2, 16)
    m.train()
    assert not torch.allclose(m(x), m(x))
    m.eval()
    torch.testing.assert_close(m(x), m(x), rtol=0, atol=0)


def test_eval_mode_is_deterministic_and_equals_dropout_free_model():
    dropped = tiny(dropout=0.3).eval()
    plain = tiny(dropout=0.0).eval()
    plain.load_state_dict(dropped.state_dict())
    x = tokens(2, 16)
    out = dropped(x)
    torch.testing.assert_close(out, dropped(x), rtol=0, atol=0)
    torch.testing.assert_close(out, plain(x), rtol=0, atol=0)


def test_loss_is_mean_negative_log_softmax_of_targets():
    m = tiny()
    x, y = tokens(3, 16, seed=2), tokens(3, 16, seed=3)
    logits = m(x)
    manual = -F.log_softmax(logits, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1).mean()
    torch.testing.assert_close(m.loss(x, y), manual, rtol=1e-5, atol=1e-5)
    # an untrained GPT-2-initialised model is close to uniform over the vocabulary
    assert abs(m.loss(x, y).item() - math.log(V)) < 0.5


def test_final_token_loss_scores_only_the_last_position():
    m = tiny().eval()
    x, y = tokens(3, 16, seed=2), tokens(3, 16, seed=3)
    last = m(x)[:, -1]
    manual = -F.log_softmax(last, dim=-1).gather(-1, y[:, -1:]).mean()
    got = m.loss(x, y, final_token_only=True)
    torch.testing.assert_close(got, manual, rtol=1e-5, atol=1e-5)
    # targets before the last position do not matter
    y2 = y.clone()
    y2[:, :-1] = 0
    torch.testing.assert_close(m.loss(x, y2, final_token_only=True), got, rtol=0, atol=0)
    assert not torch.allclose(m.loss(x, y2), m.loss(x, y))


def test_logit_scale_divides_logits_by_sqrt_width():
    scaled = tiny(logit_scale=True).eval()
    plain = tiny().eval()
    plain.load_state_dict(scaled.state_dict())
    x = tokens(2, 8)
    torch.testing.assert_close(scaled(x), plain(x) / math.sqrt(32), rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_parameter():
    m = tiny(dropout=0.1)
    m.loss(tokens(2, 16), tokens(2, 16, seed=5)).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_generate_appends_tokens_within_vocab_and_crops_context():
    m = tiny().eval()
    prompt = tokens(2, 12)
    out = m.generate(prompt, 10, generator=torch.Generator().manual_seed(0))  # runs past block_size 16
    assert out.shape == (2, 22)
    assert torch.equal(out[:, :12], prompt)
    assert out.min() >= 0 and out.max() < V


def test_generate_is_seeded_and_top_k_restricts_choices():
    m = tiny().eval()
    prompt = tokens(1, 4)
    a = m.generate(prompt, 5, generator=torch.Generator().manual_seed(7))
    b = m.generate(prompt, 5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    top1 = m(prompt, last_only=True)[0, -1].argmax()
    for seed in range(5):
        out = m.generate(prompt, 1, top_k=1, generator=torch.Generator().manual_seed(seed))
        assert out[0, -1] == top1
    assert m.generate(prompt, 1, temperature=0)[0, -1] == top1


def test_lower_temperature_concentrates_sampling():
    """softmax(z / T): lower T, lower entropy, and samples pile onto the likeliest tokens."""
    m = tiny().eval()
    with torch.no_grad():
        # sharpen the untrained model's near-uniform output so the effect is visible with few samples
        m.lm_head.weight.mul_(40)
    prompt = tokens(1, 4)
    logits = m(prompt, last_only=True)[0, -1]

    def entropy(t):
        p = F.softmax(logits / t, dim=-1)
        return -(p * p.clamp_min(1e-30).log()).sum().item()

    h = [entropy(t) for t in (0.5, 1.0, 2.0)]
    assert h[0] < h[1] < h[2]

    n = 400
    batch = prompt.expand(n, -1)
    top = set(torch.topk(logits, 10).indices.tolist())

    def sampled(t):
        out = m.generate(batch, 1, temperature=t, generator=torch.Generator().manual_seed(0))[:, -1]
        return len(set(out.tolist())), sum(int(i) in top for i in out.tolist()) / n

    distinct_cold, top_share_cold = sampled(0.3)
    distinct_hot, top_share_hot = sampled(3.0)
    assert distinct_cold < distinct_hot
    assert top_share_cold > top_share_hot


def test_flops_per_token_follows_nanogpt_estimate():
    m = tiny()
    n = m.num_params()
    assert m.flops_per_token(16) == 6 * n + 12 * 2 * 32 * 16
    # final-token loss runs the vocabulary projection on one position in T
    head = V * 32
    assert m.flops_per_token(16, final_token_only=True) == pytest.approx(6 * (n - head + head / 16) + 12 * 2 * 32 * 16)


def test_config_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.0)
