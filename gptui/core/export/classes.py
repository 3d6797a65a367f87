"""Which stock transformers class computes a recipe, its config.json, and our weights in its names and layout.

Four classes between them compute exactly every recipe that a `transformers` user can load without
`trust_remote_code`, up to rearranging weights:
- `GPT2LMHeadModel`: the classic recipe (learned positions, LayerNorm, exact GELU), biases or not, tied or not;
- `Qwen3ForCausalLM`: rotary positions, RMSNorm, QK-norm, SwiGLU, no biases, no soft-cap;
- `LlamaForCausalLM`: the same without QK-norm, biases allowed (`attention_bias`, `mlp_bias`);
- `NanoChatForCausalLM`: rotary positions, RMSNorm without gains (also on the token embedding: `embed_norm`),
  QK-norm, ReLU² or GELU, no biases, any soft-cap.
llama.cpp's `convert_hf_to_gguf.py` reads GPT-2, Llama and Qwen3 folders, not NanoChat's.

What makes the mappings exact (each is checked with logits in tests/unit/test_export.py):
- Our rotation pairs channel i of a head with channel i + D/2 and turns it the opposite way from Llama's and
  Qwen3's `rotate_half`. Negating the second half of every head's query and key rows turns our rotation into
  theirs with the second half negated, which leaves every query-key product, so every score, unchanged.
  NanoChat's `rotate_half` is ours.
- Our QK-norm is a weightless RMS norm with float32's machine epsilon; theirs use the model's `rms_norm_eps`
  (1e-5, what our block norms use). The norm of s·q with eps equals the norm of q with eps / s², so scaling the
  query and key rows by s = sqrt(1e-5 / float32 eps) gives our normalised queries and keys exactly.
- A weightless RMS norm of a head commutes with the rotation (a rotation keeps the RMS), so NanoChat's norm after
  the rotation is ours before it.
- A norm's gain folds into the Linear that reads its output (W·diag(g)): NanoChat's norms have no gain.
torch is imported only inside the functions that build tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gptui.core.config import SETTINGS_BY_NAME
from gptui.core.errors import DamagedRun, InputError

NORM_EPS = 1e-5  # model.LayerNorm's and model.RMSNorm's, and the embedding norm's
QK_NORM_EPS = 2.0**-23  # F.rms_norm's default: float32's machine epsilon
ROPE_THETA = 10000.0  # model.Rotary's base


@dataclass(frozen=True)
class HfClass:
    """A transformers class and the recipes it computes: `needs` maps a setting to the values it can take, the first
    being the one a refusal suggests; settings not named may take any value. Only settings declared `export` in
    SETTINGS may be named, so the declaration says which settings decide whether a run exports."""

    name: str
    model_type: str
    needs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    llama_cpp: bool = False  # convert_hf_to_gguf.py reads it

    def __post_init__(self) -> None:
        undeclared = [name for name in self.needs if not SETTINGS_BY_NAME[name].export]
        if undeclared:
            raise ValueError(f"{self.name} constrains {', '.join(undeclared)}, not declared export in SETTINGS")

    def in_the_way(self, config) -> list[str]:
        """The settings of `config` whose values this class cannot compute (empty when it computes the recipe)."""
        return [name for name, values in self.needs.items() if getattr(config, name) not in values]


GPT2 = HfClass("GPT2LMHeadModel", "gpt2", {
    "pos_embedding": ("learned",), "norm": ("layernorm",), "qk_norm": (False,), "mlp": ("gelu",),
    "logit_softcap": (0.0,), "embed_norm": (False,),
}, llama_cpp=True)
QWEN3 = HfClass("Qwen3ForCausalLM", "qwen3", {
    "pos_embedding": ("rope",), "norm": ("rmsnorm",), "qk_norm": (True,), "mlp": ("swiglu",),
    "logit_softcap": (0.0,), "embed_norm": (False,), "bias": (False,),  # Qwen3's MLP has no biases
}, llama_cpp=True)
LLAMA = HfClass("LlamaForCausalLM", "llama", {
    "pos_embedding": ("rope",), "norm": ("rmsnorm",), "qk_norm": (False,), "mlp": ("swiglu",),
    "logit_softcap": (0.0,), "embed_norm": (False,),
}, llama_cpp=True)
NANOCHAT = HfClass("NanoChatForCausalLM", "nanochat", {
    "pos_embedding": ("rope",), "norm": ("rmsnorm",), "qk_norm": (True,), "mlp": ("relu2", "gelu"),
    "embed_norm": (True,), "bias": (False,),  # NanoChat's MLP has no biases
})
# in the order a refusal prefers them when two are equally near
CLASSES: tuple[HfClass, ...] = (GPT2, QWEN3, LLAMA, NANOCHAT)


def hf_class_for(config) -> HfClass:
    """The class that computes `config`'s recipe, or InputError naming the settings in the way and the nearest
    recipe that exports."""
    for cls in CLASSES:
        if not cls.in_the_way(config):
            return cls
    nearest = min(CLASSES, key=lambda c: len(c.in_the_way(config)))  # min keeps the first of equals
    names = nearest.in_the_way(config)
    have = ", ".join(f"{name}={show(getattr(config, name))}" for name in names)
    need = ", ".join(f"{name}={show(nearest.needs[name][0])}" for name in names)
    raise InputError(f"no transformers class computes this recipe exactly ({have} is in the way): "
                     f"the nearest that exports, {nearest.name}, needs {need}")


def show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- config.json ------------------------------------------------------------------------------------------------


def hf_config(cls: HfClass, config, vocab_size: int, dtype: str, eos_id: int | None) -> dict[str, Any]:
    """transformers' config for a model with our `config` in class `cls`, as the dict its config.json holds."""
    common = {
        "architectures": [cls.name],
        "model_type": cls.model_type,
        "vocab_size": int(vocab_size),
        "tie_word_embeddings": _exported_tied(cls, config),
        "use_cache": True,
        "initializer_range": 0.02,
        "bos_token_id": None,
        "eos_token_id": eos_id,
        "pad_token_id": None,
        "dtype": dtype.removeprefix("torch."),
    }
    if cls is GPT2:
        return {**common, **_gpt2_config(config)}
    head_dim = config.n_embd // config.n_head
    out = {
        **common,
        "hidden_size": config.n_embd,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_head,
        "head_dim": head_dim,
        "intermediate_size": _mlp_hidden(config),
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": NORM_EPS,
        # both spellings: transformers 5 reads rope_parameters, older readers (llama.cpp's converter) rope_theta
        "rope_theta": ROPE_THETA,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
        "attention_bias": bool(config.bias),
        "attention_dropout": config.dropout,
    }
    if cls is NANOCHAT:
        out["hidden_act"] = config.mlp  # "relu2" and "gelu" (exact, erf) name the same functions there
        out["final_logit_softcapping"] = config.logit_softcap or None
    else:
        out["hidden_act"] = "silu"
    if cls is LLAMA:
        out["mlp_bias"] = bool(config.bias)
        out["pretraining_tp"] = 1
    if cls is QWEN3:
        out["use_sliding_window"] = False
        out["sliding_window"] = None
        out["max_window_layers"] = config.n_layer
    return out


def _gpt2_config(config) -> dict[str, Any]:
    return {
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.mlp_ratio * config.n_embd,
        # ours is nn.GELU() (exact, erf); GPT-2's default "gelu_new" is the tanh approximation
        "activation_function": "gelu",
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": NORM_EPS,
        "scale_attn_weights": True,  # 1/sqrt(head size), as scaled_dot_product_attention does
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
    }


def _mlp_hidden(config) -> int:
    from gptui.core.config import mlp_hidden

    return mlp_hidden(config.mlp, config.mlp_ratio, config.n_embd)


def _exported_tied(cls: HfClass, config) -> bool:
    # NanoChat's final norm has no gain, so ours folds into the head, which then differs from the embedding
    return bool(config.tie_embeddings) and cls is not NANOCHAT


# --- weights ----------------------------------------------------------------------------------------------------


class Weights:
    """A run's saved tensors, taken one by one: every tensor must find a place, or the export stops."""

    def __init__(self, tensors: dict[str, Any], run_id: str, file: str):
        self.left = dict(tensors)
        self.run_id, self.file = run_id, file

    def take(self, name: str):
        if name not in self.left:
            raise DamagedRun(f"run {self.run_id}: {self.file} has no {name}")
        return self.left.pop(name)

    def maybe(self, name: str):
        return self.left.pop(name, None)

    def embedding_and_head(self, config):
        """The token embedding and the output head (None when tied: stored once, under either name)."""
        if not config.tie_embeddings:
            return self.take("transformer.wte.weight"), self.take("lm_head.weight")
        wte = self.maybe("transformer.wte.weight")
        head = self.maybe("lm_head.weight")
        if wte is None and head is None:
            raise DamagedRun(f"run {self.run_id}: {self.file} has no token embedding")
        return (wte if wte is not None else head), None

    def all_placed(self, cls: HfClass) -> None:
        if self.left:
            raise InputError(f"run {self.run_id} has weights {cls.name} has no place for: "
                             f"{', '.join(sorted(self.left)[:5])}")


def hf_tensors(cls: HfClass, weights: Weights, config) -> dict[str, Any]:
    """Our weights under `cls`'s names and layout."""
    out = _gpt2_tensors(weights, config) if cls is GPT2 else _rotary_tensors(cls, weights, config)
    weights.all_placed(cls)
    d = config.n_embd
    embedding = "transformer.wte.weight" if cls is GPT2 else "model.embed_tokens.weight"
    vocab = out[embedding].shape[0]
    expected = {embedding: (vocab, d), "lm_head.weight": (vocab, d), "transformer.wpe.weight": (config.block_size, d),
                "transformer.h.0.mlp.c_fc.weight": (d, config.mlp_ratio * d),
                "model.layers.0.self_attn.q_proj.weight": (d, d)}
    for name, shape in expected.items():
        if name in out and tuple(out[name].shape) != shape:
            raise DamagedRun(f"run {weights.run_id}: {name} is {tuple(out[name].shape)}, its settings say {shape}")
    return out


def _gpt2_tensors(w: Weights, config) -> dict[str, Any]:
    import torch

    def bias(name: str, size: int, like: torch.Tensor) -> torch.Tensor:
        # GPT-2 always has biases: zeros compute exactly what none does
        found = w.maybe(name)
        return found if found is not None else torch.zeros(size, dtype=like.dtype)

    wte, head = w.embedding_and_head(config)
    out = {"transformer.wte.weight": wte}
    if head is not None:
        out["lm_head.weight"] = head
    out["transformer.wpe.weight"] = w.take("transformer.wpe.weight")
    d = config.n_embd
    for i in range(config.n_layer):
        p = f"transformer.h.{i}."
        for norm in ("ln_1", "ln_2"):
            weight = w.take(p + norm + ".weight")
            out[p + norm + ".weight"] = weight
            out[p + norm + ".bias"] = bias(p + norm + ".bias", d, weight)
        # Conv1D stores (in, out): the transpose of nn.Linear's (out, in)
        for layer in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            weight = w.take(p + layer + ".weight")
            out[p + layer + ".weight"] = weight.t().contiguous()
            out[p + layer + ".bias"] = bias(p + layer + ".bias", weight.shape[0], weight)
    weight = w.take("transformer.ln_f.weight")
    out["transformer.ln_f.weight"] = weight
    out["transformer.ln_f.bias"] = bias("transformer.ln_f.bias", d, weight)
    return out


def _rotary_tensors(cls: HfClass, w: Weights, config) -> dict[str, Any]:
    import torch

    d, heads = config.n_embd, config.n_head
    head_dim = d // heads
    gains = cls is not NANOCHAT  # else each norm's gain folds into the Linear that reads it
    # per query/key row: the QK-norm eps scale, and the sign that turns our rotation into rotate_half's
    row_scale = torch.ones(heads, 2, head_dim // 2, dtype=torch.float64)
    if config.qk_norm:
        row_scale *= (NORM_EPS / QK_NORM_EPS) ** 0.5
    if cls is not NANOCHAT:
        row_scale[:, 1] *= -1
    row_scale = row_scale.reshape(d)

    def scaled(t: torch.Tensor, scale: torch.Tensor, dim: int = 0) -> torch.Tensor:
        shape = [1] * t.dim()
        shape[dim] = -1
        return (t.double() * scale.view(shape)).to(t.dtype)

    wte, head = w.embedding_and_head(config)
    out = {"model.embed_tokens.weight": wte}
    for i in range(config.n_layer):
        p, q = f"transformer.h.{i}.", f"model.layers.{i}."
        ln_1, ln_2 = w.take(p + "ln_1.weight"), w.take(p + "ln_2.weight")
        if gains:
            out[q + "input_layernorm.weight"] = ln_1
            out[q + "post_attention_layernorm.weight"] = ln_2
        attn = w.take(p + "attn.c_attn.weight")
        if not gains:
            attn = scaled(attn, ln_1, dim=1)
        attn_bias = w.maybe(p + "attn.c_attn.bias")
        names = ("q_proj", "k_proj", "v_proj")
        for j, (name, weight) in enumerate(zip(names, attn.split(d), strict=True)):
            bias = attn_bias.split(d)[j] if attn_bias is not None else None
            if name != "v_proj":
                weight = scaled(weight, row_scale)
                bias = scaled(bias, row_scale) if bias is not None else None
            out[q + f"self_attn.{name}.weight"] = weight.contiguous()
            if bias is not None:
                out[q + f"self_attn.{name}.bias"] = bias.contiguous()
        _linear(out, w, p + "attn.c_proj", q + "self_attn.o_proj")
        if cls is QWEN3:  # its QK-norm has a gain: ours is 1
            out[q + "self_attn.q_norm.weight"] = torch.ones(head_dim, dtype=attn.dtype)
            out[q + "self_attn.k_norm.weight"] = torch.ones(head_dim, dtype=attn.dtype)
        fc = w.take(p + "mlp.c_fc.weight")
        fc_bias = w.maybe(p + "mlp.c_fc.bias")
        if cls is NANOCHAT:
            out[q + "mlp.fc1.weight"] = scaled(fc, ln_2, dim=1)
            _linear(out, w, p + "mlp.c_proj", q + "mlp.fc2")
        else:
            # our c_fc holds SwiGLU's gate, then its value
            gate, up = fc.chunk(2)
            out[q + "mlp.gate_proj.weight"], out[q + "mlp.up_proj.weight"] = gate.contiguous(), up.contiguous()
            if fc_bias is not None:
                gate, up = fc_bias.chunk(2)
                out[q + "mlp.gate_proj.bias"], out[q + "mlp.up_proj.bias"] = gate.contiguous(), up.contiguous()
            _linear(out, w, p + "mlp.c_proj", q + "mlp.down_proj")
    ln_f = w.take("transformer.ln_f.weight")
    if gains:
        out["model.norm.weight"] = ln_f
        if head is not None:
            out["lm_head.weight"] = head
    else:
        out["lm_head.weight"] = scaled(head if head is not None else wte, ln_f, dim=1)
    return out


def _linear(out: dict[str, Any], w: Weights, ours: str, theirs: str) -> None:
    out[theirs + ".weight"] = w.take(ours + ".weight")
    bias = w.maybe(ours + ".bias")
    if bias is not None:
        out[theirs + ".bias"] = bias
