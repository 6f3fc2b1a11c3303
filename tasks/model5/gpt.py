"""Model 5: a GPT-2 style decoder-only language model, small enough for a CPU.

This is the model of the course's "model 5" lessons, written to follow
nanoGPT's ``model.py`` line by line where the two agree:

* token + learned position embeddings, dropout on their sum;
* ``n_layer`` pre-LayerNorm blocks: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``;
* causal self-attention through ``F.scaled_dot_product_attention`` (the fused
  kernel, also on CPU), with attention dropout only while ``self.training``:
  SDPA is a function, not a module, so ``model.eval()`` cannot switch its
  ``dropout_p`` off -- the course's point in "Fine Dropout in Model 5";
* dropout after the attention projection and after the MLP, before each
  residual add (the four places of the course);
* a 4x GELU MLP and a final LayerNorm;
* an output head tied to the token embedding (GPT-2, Press & Wolf 2017).

The model returns raw logits, not log-softmax: temperature sampling needs the
logits (``softmax(z / T)`` cannot be recovered from ``log_softmax(z)``, course
notes "Should you output logits or log-softmax(logits)"), and
``F.cross_entropy`` applies the log-softmax itself.  Optional: the course's
scaling of the logits by ``1 / sqrt(n_embd)``.

References
----------
* A. Karpathy, nanoGPT, ``model.py`` and ``estimate_mfu``
  (https://github.com/karpathy/nanoGPT).
* A. Radford et al., "Language Models are Unsupervised Multitask Learners"
  (GPT-2), 2019.
* A. Vaswani et al., "Attention Is All You Need", 2017.
* N. Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from
  Overfitting", JMLR 2014.
* Course notes, ``../shared/seeds/001_*.md`` (dropout in model 5, FineWeb data,
  temperature) and ``002_*.md`` (logits vs log-softmax).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

#: GPT-2 BPE vocabulary; the last id (50256) is ``<|endoftext|>``
GPT2_VOCAB_SIZE = 50257


@dataclass
class GPTConfig:
    vocab_size: int = GPT2_VOCAB_SIZE
    #: longest context the position embedding covers
    block_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    #: one rate for all four dropout sites; 0.0 switches them all off
    dropout: float = 0.0
    #: biases in Linear and LayerNorm layers, as in GPT-2
    bias: bool = True
    #: divide the logits by sqrt(n_embd), as in the course
    logit_scale: bool = False

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        # q, k and v of all heads in one matmul: one large GEMM beats three small ones on CPU
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        # SDPA applies dropout_p whatever the module's mode, so eval() alone
        # would leave attention dropout on: gate it on self.training.
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: one (vocab, n_embd) matrix embeds tokens and scores them.
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer) so the
        # residual stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ forward

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final-LayerNorm hidden states ``(B, T, n_embd)`` of token ids ``(B, T)``."""
        T = idx.size(1)
        if T > self.config.block_size:
            raise ValueError(f"sequence of length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.transformer.ln_f(x)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Raw logits of hidden states ``h`` (any leading shape)."""
        if self.config.logit_scale:
            # Scaling the (.., n_embd) input instead of the (.., vocab) output
            # gives the same logits for 1/200th of the multiplications.
            h = h * (1.0 / math.sqrt(self.config.n_embd))
        return self.lm_head(h)

    def forward(self, idx: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Raw logits ``(B, T, vocab)``; ``(B, 1, vocab)`` with ``last_only``.

        ``last_only`` skips the vocabulary projection of all but the last
        position, which is most of the work of a small GPT (the head has
        ``vocab * n_embd`` weights against ``12 * n_layer * n_embd**2`` in the
        blocks).
        """
        h = self.hidden(idx)
        if last_only:
            h = h[:, -1:, :]
        return self.head(h)

    def loss(self, idx: torch.Tensor, targets: torch.Tensor, final_token_only: bool = False) -> torch.Tensor:
        """Mean next-token cross-entropy of ``idx`` against ``targets`` (both ``(B, T)``).

        ``final_token_only`` scores only the last position of every sequence
        (part 2 of the course): one prediction per sequence, with the full
        context behind it.
        """
        if final_token_only:
            logits = self(idx, last_only=True)
            return F.cross_entropy(logits[:, -1, :], targets[:, -1])
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))

    # ------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to the prompts ``idx`` ``(B, T)``.

        Each token is drawn from ``softmax(logits / temperature)`` of the last
        position, restricted to the ``top_k`` most likely tokens if given;
        ``temperature=0`` picks the most likely token.  The context is cropped
        to ``block_size``.  Call ``model.eval()`` first unless you want dropout
        in the samples.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size :]
            logits = self(context, last_only=True)[:, -1, :]
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                next_id = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat((idx, next_id), dim=1)
        return idx

    # ------------------------------------------------------------------ sizes

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; the tied token embedding is counted once.

        With ``non_embedding`` (nanoGPT's convention) the position embedding
        is left out; the token embedding stays in, because as the output head
        it does real matmul work.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None, final_token_only: bool = False) -> float:
        """Forward + backward FLOPs per input token, after nanoGPT's ``estimate_mfu``.

        ``6 N`` (2 for the forward matmul, 4 for the two backward ones, per
        weight) plus ``12 L C T`` for the attention scores and weighted sum
        (counted over the full T x T square, as nanoGPT and the PaLM paper do).
        With ``final_token_only`` the head runs on one position in ``seq_len``.
        """
        cfg = self.config
        T = seq_len or cfg.block_size
        n = self.num_params()
        head = cfg.vocab_size * cfg.n_embd
        if final_token_only:
            n = n - head + head / T
        return 6.0 * n + 12.0 * cfg.n_layer * cfg.n_embd * T
