"""A GPT in one readable file, in the manner of nanoGPT's model.py, with a KV cache for generation.

References: Karpathy's "Let's build GPT" lecture and nanoGPT; GPT-2 (pre-LayerNorm, weight tying,
scaled residual init); PyTorch's fused scaled_dot_product_attention. The defaults are that model exactly; the
options are the changes modded-nanogpt and nanochat made popular: rotary position embeddings (RoFormer), RMSNorm,
QK-norm, ReLU² and SwiGLU MLPs, an untied output head, tanh soft-capping of the logits (Gemma 2), and the Muon
optimizer for the hidden matrices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from gptui.core.config import mlp_hidden


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
    pos_embedding: str = "learned"  # learned | rope
    norm: str = "layernorm"  # layernorm | rmsnorm
    qk_norm: bool = False
    mlp: str = "gelu"  # gelu | relu2 | swiglu
    tie_embeddings: bool = True
    logit_softcap: float = 0.0  # 0: off
    embed_norm: bool = False

    @classmethod
    def from_config(cls, config, vocab_size: int) -> ModelConfig:
        return cls(vocab_size=vocab_size, **{f: getattr(config, f) for f in cls.__dataclass_fields__
                                             if f != "vocab_size"})


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's cannot switch the bias off alone)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class RMSNorm(nn.Module):
    """RMSNorm: scale by the root mean square, with a gain and never a bias (Zhang & Sennrich 2019)."""

    def __init__(self, ndim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))

    def forward(self, x):
        return F.rms_norm(x, self.weight.shape, self.weight, 1e-5)


def make_norm(config: ModelConfig) -> nn.Module:
    return RMSNorm(config.n_embd) if config.norm == "rmsnorm" else LayerNorm(config.n_embd, bias=config.bias)


class Rotary(nn.Module):
    """Rotary position embeddings (Su et al. 2021): each pair of query/key channels is rotated by an angle that
    grows with the position, so attention scores depend on relative position. cos/sin are tables, not weights."""

    def __init__(self, head_dim: int, block_size: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def at(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin at `positions` (a range for a sequence, or a decode step's 0-d position): (T, D/2).

        index_select, because indexing with a 0-d tensor (`cos[position]`) reads the position back to the host
        (`.item()`), which breaks the decode step's CUDA graph capture."""
        positions = positions.view(-1)
        return self.cos.index_select(0, positions), self.sin.index_select(0, positions)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) (or a decode step's (B, H, D)) by angles (T, D/2): the first half of the channels
    pairs with the second."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


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
        # the mask as every head's row of attention scores (a view: it follows the mask)
        self.mask_rows = self.mask.view(1, 1, block_size).expand(batch * n_head, 1, block_size)

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
        self.qk_norm = config.qk_norm

    def forward(self, x, cache: KVCache | None = None, layer: int = 0, rope=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.qk_norm:  # unit-RMS queries and keys keep attention logits bounded (nanochat, modded-nanogpt)
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
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
        else:
            # prefill from an empty cache: plain causal attention over the prompt, keys and values kept
            cache.k[layer][:, :, :T] = k
            cache.v[layer][:, :, :T] = v
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def decode(self, x, cache: KVCache, layer: int, rope=None):
        """One new token per sequence (x: B x 1 x C), for inference: write its key and value at the cache's
        device-side position, then attend over the whole preallocated cache with the step's mask of filled slots,
        so every step has the same shapes. The attention is written out (scores with the mask added in one
        baddbmm, softmax, weighted sum): for one query that is faster than the fused kernels on a CPU."""
        B, _, C = x.size()
        H, D = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).view(B, 3, H, D).unbind(1)  # each B x H x D
        if self.qk_norm:
            q, k = F.rms_norm(q, (D,)), F.rms_norm(k, (D,))
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        keys, values = cache.k[layer], cache.v[layer]  # B x H x block x D, maybe wider than x (see GPT.new_cache)
        keys.index_copy_(2, cache.position.view(1), k.unsqueeze(2).to(keys.dtype))
        values.index_copy_(2, cache.position.view(1), v.unsqueeze(2).to(keys.dtype))
        keys, values = keys.view(B * H, -1, D), values.view(B * H, -1, D)
        scores = torch.baddbmm(cache.mask_rows, q.reshape(B * H, 1, D).to(keys.dtype), keys.transpose(1, 2),
                               alpha=1.0 / math.sqrt(D))
        y = torch.bmm(scores.softmax(-1), values)  # B*H x 1 x D: the same memory as B x 1 x C
        return self.c_proj(y.view(B, 1, C).to(x.dtype))


class MLP(nn.Module):
    """GELU (GPT-2), ReLU² (Primer; modded-nanogpt) or SwiGLU (Shazeer 2020; Llama), whose c_fc holds the gate
    and the value side by side."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = mlp_hidden(config.mlp, config.mlp_ratio, config.n_embd)
        self.kind = config.mlp
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden if self.kind == "swiglu" else hidden, bias=config.bias)
        if self.kind == "gelu":
            self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.c_fc(x)
        if self.kind == "gelu":
            h = self.gelu(h)
        elif self.kind == "relu2":
            h = F.relu(h).square()
        else:
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, cache: KVCache | None = None, layer: int = 0, rope=None):
        # pre-norm residual block, as in GPT-2
        x = x + self.attn(self.ln_1(x), cache, layer, rope)
        return x + self.mlp(self.ln_2(x))

    def decode(self, x, cache: KVCache, layer: int, rope=None):
        x = x + self.attn.decode(self.ln_1(x), cache, layer, rope)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        modules = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if config.pos_embedding == "learned":
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        modules.update(
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=make_norm(config),
        )
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # weight tying: the output projection reuses the token embedding (Press & Wolf 2017)
            self.transformer.wte.weight = self.lm_head.weight
        self.rotary = Rotary(config.n_embd // config.n_head, config.block_size) if config.pos_embedding == "rope" else None
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
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def _embed(self, idx, positions):
        """Token embeddings, plus learned position embeddings; or the rotary angles for attention to apply."""
        x = self.transformer.wte(idx)
        if self.config.embed_norm:  # a weightless RMS norm of the token embedding, as nanochat has
            x = F.rms_norm(x, (x.size(-1),), eps=1e-5)
        if self.rotary is not None:
            return x, self.rotary.at(positions)
        return x + self.transformer.wpe(positions), None

    def _head(self, x):
        logits = self.lm_head(self.transformer.ln_f(x))
        cap = self.config.logit_softcap
        if cap:  # tanh soft-capping keeps logits within (-cap, cap) smoothly (Gemma 2, modded-nanogpt)
            logits = cap * torch.tanh(logits / cap)
        return logits

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
        x, rope = self._embed(idx, torch.arange(0, T, dtype=torch.long, device=idx.device))
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i, rope)
        if cache is not None:
            cache.pos = T
            cache.position.fill_(T)
        if targets is not None:
            logits = self._head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
            return logits, loss
        # inference: only the last position's logits are needed
        return self._head(x[:, [-1], :]), None

    def decode(self, idx, cache: KVCache):
        """One token per sequence (idx: B x 1) at the cache's device-side position, which it advances.

        Touches no Python-side state and has the same shapes at every position, so it can be captured once as a
        CUDA graph and replayed; the caller keeps `cache.pos` (it must be below block_size)."""
        # an additive mask, made once per step for all layers (a boolean one is converted in every layer)
        torch.le(cache.slots, cache.position, out=cache.filled)
        torch.where(cache.filled, cache.mask_values[0], cache.mask_values[1], out=cache.mask)
        x, rope = self._embed(idx, cache.position)
        for i, block in enumerate(self.transformer.h):
            x = block.decode(x, cache, i, rope)
        cache.position.add_(1)
        return self._head(x)

    def new_cache(self, batch: int = 1) -> KVCache:
        c = self.config
        # the cache takes the weights' precision, except bfloat16 on a CPU: there one query's attention over the
        # cache is ~2x slower in bf16 than in fp32 (77 against 36 µs a layer), and the cache is small beside the
        # weights
        dtype = torch.float32 if self.device.type == "cpu" and self.dtype == torch.bfloat16 else self.dtype
        return KVCache(c.n_layer, batch, c.n_head, c.block_size, c.n_embd // c.n_head, self.device, dtype)

    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' precision (the token embedding's: the Linear layers may be packed for inference)."""
        return self.transformer.wte.weight.dtype

    def hidden_matrices(self) -> list[nn.Parameter]:
        """The 2-D weights inside the blocks: what Muon optimizes (never embeddings, the head, gains or biases)."""
        return [p for p in self.transformer.h.parameters() if p.dim() == 2 and p.requires_grad]

    def configure_optimizer(self, weight_decay: float, lr: float, betas: tuple[float, float], device_type: str,
                            optimizer: str = "adamw", muon_lr: float = 0.02, muon_momentum: float = 0.95):
        """AdamW over everything, or (optimizer="muon") PyTorch's Muon over the hidden matrices and AdamW over the
        rest, as modded-nanogpt and nanochat split them. Muon's groups carry `lr_scale` (muon_lr / lr), so one
        schedule drives both: a group's lr is the scheduled lr times its lr_scale."""
        params = [p for p in self.parameters() if p.requires_grad]
        hidden = {id(p) for p in self.hidden_matrices()} if optimizer == "muon" else set()
        rest = [p for p in params if id(p) not in hidden]
        # decay matrices (2-D weights and embeddings); never biases or norm gains
        groups = [
            {"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
        ]
        extra = {"fused": True} if device_type == "cuda" else {"foreach": True}
        adamw = torch.optim.AdamW(groups, lr=lr, betas=betas, **extra)
        if not hidden:
            return adamw
        # no weight decay on Muon's matrices, as in modded-nanogpt and nanochat
        muon = torch.optim.Muon([{"params": self.hidden_matrices(), "lr_scale": muon_lr / lr}], lr=muon_lr,
                                weight_decay=0.0, momentum=muon_momentum)
        return CombinedOptimizer([adamw, muon])


class CombinedOptimizer:
    """Several torch optimizers stepped, zeroed, saved and restored as one."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> dict:
        return {k: v for o in self.optimizers for k, v in o.state.items()}

    def step(self, closure=None):
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("optimizers")
        if not isinstance(saved, list) or len(saved) != len(self.optimizers):
            raise ValueError("the checkpoint's optimizer state does not match this optimizer")
        for o, s in zip(self.optimizers, saved, strict=True):
            o.load_state_dict(s)
