"""A GPT in one readable file, in the manner of nanoGPT's model.py, with a KV cache for generation.

References: Karpathy's "Let's build GPT" lecture and nanoGPT; GPT-2 (pre-LayerNorm, weight tying,
scaled residual init); PyTorch's fused scaled_dot_product_attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class ModelConfig:
    vocab_size: int
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 192
    dropout: float = 0.0
    bias: bool = False
    mlp_ratio: int = 4

    @classmethod
    def from_config(cls, config, vocab_size: int) -> ModelConfig:
        return cls(
            vocab_size=vocab_size, block_size=config.block_size, n_layer=config.n_layer, n_head=config.n_head,
            n_embd=config.n_embd, dropout=config.dropout, bias=config.bias, mlp_ratio=config.mlp_ratio,
        )


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's cannot switch the bias off alone)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class KVCache:
    """Keys and values of every layer, preallocated to block_size.

    `pos` (a Python int) counts the filled positions; `position` holds the same number on the device, so a
    one-token decode step reads and advances it without a host sync and with the same tensor shapes at every
    position (what CUDA graphs and attention backends that plan per shape need)."""

    def __init__(self, n_layer: int, batch: int, n_head: int, block_size: int, head_dim: int, device, dtype):
        shape = (batch, n_head, block_size, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.block_size = block_size
        self.pos = 0
        self.position = torch.zeros((), dtype=torch.long, device=device)
        self.slots = torch.arange(block_size, device=device).view(1, block_size)
        self.filled = torch.zeros(1, block_size, dtype=torch.bool, device=device)  # set per decode step
        self.mask = torch.zeros(1, block_size, dtype=dtype, device=device)  # 0 where filled, -inf elsewhere
        self.mask_values = torch.tensor([0.0, float("-inf")], dtype=dtype, device=device)

    def reset(self) -> None:
        self.pos = 0
        self.position.zero_()


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # query, key and value projections for all heads in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x, cache: KVCache | None = None, layer: int = 0, decode: bool = False):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is None and self.training and self.dropout > 0 and x.device.type == "cpu":
            # PyTorch's fused CPU attention kernel has no dropout, and SDPA's fallback for it is ~1.5x slower
            # than writing it out as in the lecture: scores, causal mask, softmax, dropout, weighted sum
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = F.dropout(att.masked_fill(~causal, float("-inf")).softmax(dim=-1), self.dropout)
            y = att @ v
        elif cache is None:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
            )
        elif not decode:
            # prefill from an empty cache: plain causal attention over the prompt, keys and values kept
            cache.k[layer][:, :, :T] = k
            cache.v[layer][:, :, :T] = v
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        else:
            # one new token: write its key and value at the device-side position, then attend over the whole
            # preallocated cache with a mask of the filled slots; every step has the same shapes
            kept = cache.k[layer].dtype  # may be wider than the weights' (see GPT.new_cache)
            cache.k[layer].index_copy_(2, cache.position.view(1), k.to(kept))
            cache.v[layer].index_copy_(2, cache.position.view(1), v.to(kept))
            y = F.scaled_dot_product_attention(q.to(kept), cache.k[layer], cache.v[layer], attn_mask=cache.mask)
            y = y.to(x.dtype)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = config.mlp_ratio * config.n_embd
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache: KVCache | None = None, layer: int = 0, decode: bool = False):
        # pre-LayerNorm residual block, as in GPT-2
        x = x + self.attn(self.ln_1(x), cache, layer, decode)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: the output projection reuses the token embedding (Press & Wolf 2017)
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2 paper: scale residual projections by 1/sqrt(2 * n_layer) so the residual stream's variance
        # does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None, cache: KVCache | None = None):
        """Logits for every position (training), or for the last one only (no targets). With a cache: a prefill
        of the prompt into an empty cache, then one token at a time (see `decode`)."""
        B, T = idx.size()
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        if cache is not None and start > 0:
            if T != 1:
                raise ValueError("the KV cache takes a prefill from empty, then one token at a time")
            logits = self.decode(idx, cache)
            cache.pos += 1
            return logits, None
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i)
        if cache is not None:
            cache.pos = T
            cache.position.fill_(T)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
            return logits, loss
        # inference: only the last position's logits are needed
        return self.lm_head(x[:, [-1], :]), None

    def decode(self, idx, cache: KVCache):
        """One token per sequence (idx: B x 1) at the cache's device-side position, which it advances.

        Touches no Python-side state and has the same shapes at every position, so it can be captured once as a
        CUDA graph and replayed; the caller keeps `cache.pos` (it must be below block_size)."""
        # an additive mask, made once per step for all layers (a boolean one is converted in every layer)
        torch.le(cache.slots, cache.position, out=cache.filled)
        torch.where(cache.filled, cache.mask_values[0], cache.mask_values[1], out=cache.mask)
        x = self.transformer.wte(idx) + self.transformer.wpe(cache.position)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i, decode=True)
        cache.position.add_(1)
        return self.lm_head(self.transformer.ln_f(x))

    def new_cache(self, batch: int = 1) -> KVCache:
        c = self.config
        w = self.lm_head.weight
        # the cache takes the weights' precision, except bfloat16 on a CPU: there the fused attention kernels are
        # ~5x slower in bf16 than in fp32 for one query over the cache, and the cache is small beside the weights
        dtype = torch.float32 if w.device.type == "cpu" and w.dtype == torch.bfloat16 else w.dtype
        return KVCache(c.n_layer, batch, c.n_head, c.block_size, c.n_embd // c.n_head, w.device, dtype)

    def configure_optimizer(self, weight_decay: float, lr: float, betas: tuple[float, float], device_type: str):
        # decay matrices (2-D weights and embeddings); never biases or LayerNorm gains
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        extra = {"fused": True} if device_type == "cuda" else {"foreach": True}
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **extra)
