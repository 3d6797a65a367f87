"""Every hyperparameter, declared once.

A `Setting` carries the type, default, allowed range, help text and form group of one hyperparameter. The
typed `Config` dataclass, the presets, `--set KEY=VALUE` parsing, validation, `config.json` and the TUI form
are all derived from `SETTINGS`, so adding a knob means adding one line here.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from gptui.core.errors import InputError

GROUPS = {
    "model": "Model",
    "data": "Data and tokenizer",
    "optim": "Optimisation",
    "schedule": "Schedule and evaluation",
    "hardware": "Hardware",
    "track": "Tracking",
}

MAX_UINT16_VOCAB = 65536  # tokens are stored as uint16 up to this vocabulary size, uint32 above
MAX_VOCAB = 1 << 20


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    group: str
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    min_exclusive: bool = False
    # its categories (KINDS), each checked against what the code does in tests/unit/test_config.py
    resumable: bool = False  # may change when a run resumes: schedule, evaluation, hardware, tracking
    shape: bool = False  # gives the weights their shapes or what they compute; a fine-tune keeps it
    tokenizer: bool = False  # decides the tokens a corpus is cut into (a prepared cache's key); a fine-tune keeps it
    export: bool = False  # an export class constrains its value (gptui.core.export.classes)

    def parse(self, raw: Any) -> Any:
        """Turn a string (or JSON value) into this setting's type, or raise ValueError with a readable reason."""
        if self.type is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{self.name} must be true or false, not {raw!r}")
        if self.type is int:
            if isinstance(raw, bool):
                raise ValueError(f"{self.name} must be a whole number, not {_echo(raw)}")
            if isinstance(raw, int):
                return raw
            if isinstance(raw, float) and raw.is_integer():
                return int(raw)
            text = str(raw).strip().replace("_", "")
            if _HUGE_WHOLE.fullmatch(text):  # a whole number past any range (and past int()'s digit limit)
                raise ValueError(f"{self.name} must be {self.range_words}, not {_echo(raw)}")
            try:
                return int(text)
            except ValueError:
                try:
                    value = float(text)
                except (ValueError, OverflowError):
                    value = math.nan
                if value.is_integer():
                    return int(value)
                if math.isinf(value) and _FINITE_LOOKING.fullmatch(text):  # "1e999": a number past any range
                    raise ValueError(f"{self.name} must be {self.range_words}, not {_echo(raw)}") from None
                raise ValueError(f"{self.name} must be a whole number, not {_echo(raw)}") from None
        if self.type is float:
            if isinstance(raw, bool):
                raise ValueError(f"{self.name} must be a number, not {_echo(raw)}")
            try:
                value = float(str(raw).strip()) if not isinstance(raw, (int, float)) else float(raw)
            except (ValueError, OverflowError):
                raise ValueError(f"{self.name} must be a number, not {_echo(raw)}") from None
            if math.isinf(value) and _FINITE_LOOKING.fullmatch(str(raw).strip()):
                # digits that overflow a float are a number out of range, not "not finite"
                raise ValueError(f"{self.name} must be {self.range_words}, not {_echo(raw)}")
            if not math.isfinite(value):
                raise ValueError(f"{self.name} must be a finite number, not {_echo(raw)}")
            return value
        text = str(raw).strip()
        if self.choices and text not in self.choices and "," in text:
            # a set of choices in any order and spacing, stored as the declared one ("wandb, tensorboard")
            parts = {p.strip() for p in text.split(",")}
            if parts <= set(self.choices):
                text = ",".join(c for c in self.choices if c in parts)
        if self.choices and text not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}, not {_echo(raw)}")
        return text

    def check(self, value: Any) -> str | None:
        """The reason `value` is out of range, or None when it is fine."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"{self.name} must be a finite number"
        if self.choices is not None and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}"
        if self.min is not None:
            if self.min_exclusive and value <= self.min:
                return f"{self.name} must be greater than {_fmt(self.min)}"
            if not self.min_exclusive and value < self.min:
                return f"{self.name} must be at least {_fmt(self.min)}"
        if self.max is not None and value > self.max:
            return f"{self.name} must be at most {_fmt(self.max)}"
        return None

    @property
    def range_words(self) -> str:
        """The allowed range in words: 'between 1 and 128', 'at least 0', 'a number'."""
        low = None if self.min is None else _fmt(self.min)
        high = None if self.max is None else _fmt(self.max)
        if low is not None and high is not None and not self.min_exclusive:
            return f"between {low} and {high}"
        words = []
        if low is not None:
            words.append(f"greater than {low}" if self.min_exclusive else f"at least {low}")
        if high is not None:
            words.append(f"at most {high}")
        return " and ".join(words) or "a number"

    @property
    def range_text(self) -> str:
        if self.choices:
            return " | ".join(self.choices)
        if self.type is bool:
            return "true | false"
        low = "" if self.min is None else (">" if self.min_exclusive else "≥") + _fmt(self.min)
        high = "" if self.max is None else "≤" + _fmt(self.max)
        return " ".join(p for p in (low, high) if p)


MAX_ECHO = 40  # characters of a bad value an error message repeats
_HUGE_WHOLE = re.compile(r"[+-]?\d{19,}")  # more digits than any setting's range allows
_FINITE_LOOKING = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _echo(raw: Any) -> str:
    """A bad value as an error message repeats it: quoted, and cut short when long (so it stays one line)."""
    text = repr(raw) if not isinstance(raw, str) else repr(raw.strip())
    if len(text) <= MAX_ECHO:
        return text
    return f"{text[:MAX_ECHO - 4]}…{text[0]} ({len(str(raw).strip()):,} characters)"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _s(name, type_, default, group, help_, kinds: str = "", **kw) -> Setting:
    return Setting(name, type_, default, group, help_, **kw, **{kind: True for kind in kinds.split()})


SETTINGS: tuple[Setting, ...] = (
    # model
    _s("n_layer", int, 4, "model", "Transformer blocks stacked in the model.", min=1, max=128, kinds="shape"),
    _s("n_head", int, 4, "model", "Attention heads per block; must divide n_embd.", min=1, max=128,
       kinds="shape"),
    _s("n_embd", int, 192, "model", "Width of the residual stream (embedding size).", min=4, max=16384,
       kinds="shape"),
    _s("block_size", int, 128, "model", "Context length in tokens the model sees at once.", min=2, max=32768,
       kinds="shape"),
    _s("dropout", float, 0.0, "model", "Dropout probability during training (0 turns it off).", min=0.0, max=0.9),
    _s("bias", bool, False, "model", "Use bias terms in Linear and LayerNorm layers.", choices=None,
       kinds="shape export"),
    _s("mlp_ratio", int, 4, "model", "MLP hidden width as a multiple of n_embd (the old fwd_expansion).", min=1, max=16,
       kinds="shape"),
    _s("pos_embedding", str, "learned", "model", "Learned position table (GPT-2) or rope (rotary, even head size).",
       choices=("learned", "rope"), kinds="shape export"),
    _s("norm", str, "layernorm", "model", "layernorm (GPT-2) or rmsnorm (a gain only, no bias).",
       choices=("layernorm", "rmsnorm"), kinds="shape export"),
    _s("qk_norm", bool, False, "model", "Normalise queries and keys (RMS, per head) before attention.",
       kinds="shape export"),
    _s("mlp", str, "gelu", "model", "gelu (GPT-2), relu2 (ReLU²) or swiglu (2/3 as wide, rounded up to 8).",
       choices=("gelu", "relu2", "swiglu"), kinds="shape export"),
    _s("tie_embeddings", bool, True, "model", "Share the token embedding with the output head (GPT-2).",
       kinds="shape"),
    _s("logit_softcap", float, 0.0, "model", "Soft-cap the logits at this value with tanh (0 turns it off).",
       min=0.0, max=1000.0, kinds="shape export"),
    _s("embed_norm", bool, False, "model", "Normalise the token embedding (RMS, no gain) before the first block.",
       kinds="shape export"),
    # data and tokenizer
    _s("tokenizer", str, "bpe", "data", "bpe: byte-level BPE; char: one token per character (the lecture's).",
       choices=("bpe", "char"), kinds="tokenizer"),
    _s("vocab_size", int, 512, "data", "BPE vocabulary size (256 bytes + merges); ignored for char.",
       min=257, max=MAX_VOCAB, kinds="tokenizer"),
    _s("split_pattern", str, "gpt4", "data", "Regex that splits text before BPE merges: GPT-4's or GPT-2's.",
       choices=("gpt4", "gpt2"), kinds="tokenizer"),
    _s("text_field", str, "text", "data", "The field (JSON Lines) or column (Parquet) that holds each document."),
    _s("tokenizer_sample_mb", float, 256.0, "data",
       "Megabytes of the corpus the BPE tokenizer learns from, spread over it (a smaller corpus: all of it).",
       min=1.0, max=1e6, kinds="tokenizer"),
    # optimisation
    _s("batch_size", int, 32, "optim", "Sequences per micro-batch.", min=1, max=8192),
    _s("grad_accum", int, 1, "optim", "Micro-batches accumulated per optimizer step.", min=1, max=1024),
    _s("lr", float, 2e-3, "optim", "Peak learning rate (AdamW).", min=0.0, max=1.0, min_exclusive=True),
    _s("min_lr", float, 1e-4, "optim", "Learning rate reached at the end of the cosine decay.", min=0.0, max=1.0),
    _s("warmup_iters", int, 50, "optim", "Steps of linear warm-up from 0 to lr.", min=0, max=10_000_000),
    _s("weight_decay", float, 0.1, "optim", "AdamW weight decay on matrices (not on biases and norms).",
       min=0.0, max=1.0),
    _s("beta1", float, 0.9, "optim", "AdamW beta1.", min=0.0, max=0.999999),
    _s("beta2", float, 0.99, "optim", "AdamW beta2.", min=0.0, max=0.999999),
    _s("grad_clip", float, 1.0, "optim", "Clip the gradient norm to this (0 turns clipping off).", min=0.0, max=1e6),
    _s("optimizer", str, "adamw", "optim", "adamw, or muon: Muon for the blocks' matrices, AdamW for the rest.",
       choices=("adamw", "muon")),
    _s("muon_lr", float, 0.02, "optim", "Muon's peak learning rate (follows the same warm-up and decay as lr).",
       min=0.0, max=10.0, min_exclusive=True),
    _s("muon_momentum", float, 0.95, "optim", "Muon's momentum (Nesterov).", min=0.0, max=0.999999),
    # schedule and evaluation
    _s("max_iters", int, 1000, "schedule", "Optimizer steps to train for.", min=1, max=100_000_000,
       kinds="resumable"),
    _s("eval_interval", int, 100, "schedule", "Evaluate train and val loss every this many steps.",
       min=1, max=100_000_000, kinds="resumable"),
    _s("eval_iters", int, 20, "schedule", "Batches averaged per evaluation.", min=1, max=100_000,
       kinds="resumable"),
    _s("sample_interval", int, 250, "schedule", "Generate a sample every this many steps (0: never).",
       min=0, max=100_000_000, kinds="resumable"),
    _s("sample_tokens", int, 200, "schedule", "Tokens per training sample.", min=1, max=100_000,
       kinds="resumable"),
    _s("patience", int, 0, "schedule", "Stop after this many evaluations without improvement (0: never).",
       min=0, max=100_000, kinds="resumable"),
    _s("max_minutes", float, 0.0, "schedule", "Stop after this many minutes of training (0: no limit).",
       min=0.0, max=1e7, kinds="resumable"),
    # hardware
    _s("device", str, "auto", "hardware", "auto picks CUDA, then MPS, then CPU.", choices=("auto", "cpu", "cuda", "mps"),
       kinds="resumable"),
    _s("dtype", str, "auto", "hardware", "auto: bfloat16 autocast where the hardware has it, else float32.",
       choices=("auto", "float32", "bfloat16", "float16"), kinds="resumable"),
    _s("compile", bool, False, "hardware", "torch.compile the model (falls back to eager if it fails).",
       kinds="resumable"),
    _s("seed", int, 1337, "hardware", "Random seed for initialisation, batches and dropout.", min=0, max=2**32 - 1),
    # experiment trackers (gptui.core.trackers), on the main process only
    _s("trackers", str, "none", "track", "Also log the run to TensorBoard, W&B or both (W&B offline unless logged in).",
       choices=("none", "tensorboard", "wandb", "tensorboard,wandb"), kinds="resumable"),
    _s("tracker_project", str, "gptui", "track", "W&B project the run is logged to.", kinds="resumable"),
)

TRACKER_PROJECT_FORBIDDEN = '/\\#?%:'  # W&B refuses these in a project name

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
KINDS = ("resumable", "shape", "tokenizer", "export")  # the categories a Setting carries


def settings_in(*kinds: str) -> tuple[str, ...]:
    """The names of the settings in any of these categories (KINDS), in SETTINGS' order."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"no setting category {sorted(unknown)[0]!r} (choose from {', '.join(KINDS)})")
    return tuple(s.name for s in SETTINGS if any(getattr(s, kind) for kind in kinds))


Config = dataclasses.make_dataclass(
    "Config",
    [(s.name, s.type, dataclasses.field(default=s.default)) for s in SETTINGS],
    namespace={"__doc__": "Every hyperparameter of a run (see SETTINGS for types, ranges and help)."},
)


DEFAULT_PRESET = "tiny"  # what a new run starts from when no preset is named
PRESETS: dict[str, dict[str, Any]] = {
    # Learns readable text on a laptop CPU in a few minutes: the modern recipe (rotary positions, RMSNorm, QK-norm,
    # SwiGLU, untied head, Muon) and BPE 8192, sized for 4 minutes on 2 cores. It is exactly Qwen3ForCausalLM, which
    # llama.cpp's converter also reads (issue 16): in 480 steps it reached 2.0721 val bits/byte against 2.0929 for the
    # NanoChat-exact recipe (ReLU², soft-cap 15, the embedding norm) and ran 23% faster. The vocabulary is the biggest
    # lever in 4 minutes (issue 17): with the schedule fitted to the budget, BPE 2048 reached 2.0764, 4096 2.0322,
    # 6144 2.0275 and 8192 2.0076, although its head makes a step 1.7x slower (bench/RESULTS.md, 2026-12-02).
    "tiny": dict(
        pos_embedding="rope", norm="rmsnorm", qk_norm=True, mlp="swiglu", tie_embeddings=False, logit_softcap=0.0,
        optimizer="muon", muon_lr=0.02, vocab_size=8192, max_iters=210, eval_interval=70, sample_interval=70,
    ),
    # The tiny preset as it was before the modern recipe (GPT-2 architecture, AdamW), kept to compare against.
    "tiny-classic": {},
    # Karpathy's gpt.py from the "Let's build GPT" lecture.
    "lecture": dict(
        n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, bias=True, tokenizer="char",
        batch_size=64, lr=3e-4, min_lr=3e-4, warmup_iters=0, weight_decay=0.0, beta2=0.999, grad_clip=0.0,
        max_iters=5000, eval_interval=500, eval_iters=200, sample_interval=500,
    ),
    # One GPU, about a minute: nanoGPT's shakespeare_char shape with tiny's recipe (rotary positions, RMSNorm,
    # QK-norm, SwiGLU, untied head, Muon: Qwen3ForCausalLM when exported); stops at the schedule's end or after a
    # minute.
    "gpu": dict(
        n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, bias=False, tokenizer="char",
        pos_embedding="rope", norm="rmsnorm", qk_norm=True, mlp="swiglu", tie_embeddings=False, logit_softcap=0.0,
        optimizer="muon", muon_lr=0.02, batch_size=64, lr=2e-3, min_lr=2e-4, warmup_iters=100, max_iters=1500,
        eval_interval=250, eval_iters=50, sample_interval=500, max_minutes=1.0,
    ),
    # The old scripts' model.
    "seed": dict(
        n_layer=8, n_head=8, n_embd=1024, block_size=128, dropout=0.2, bias=True, tokenizer="bpe",
        vocab_size=1024, batch_size=64, lr=3e-4, min_lr=5e-6, warmup_iters=100, max_iters=5000,
        eval_interval=250, eval_iters=50, sample_interval=500,
    ),
}


class ConfigError(InputError, ValueError):
    """One or more settings are invalid; `problems` maps setting name to reason."""

    def __init__(self, problems: dict[str, str]):
        self.problems = problems
        super().__init__("; ".join(problems.values()))


def default_config() -> Config:
    return Config()


def preset_config(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError({"preset": f"unknown preset {name!r} (choose from {', '.join(PRESETS)})"})
    return dataclasses.replace(Config(), **PRESETS[name])


def config_to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def validate(config: Config) -> dict[str, str]:
    """All problems with `config` as {setting: reason}; empty when it is valid."""
    problems: dict[str, str] = {}
    for s in SETTINGS:
        value = getattr(config, s.name)
        if s.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, s.type) or (s.type is int and isinstance(value, bool)):
            problems[s.name] = f"{s.name} must be of type {s.type.__name__}, not {type(value).__name__}"
            continue
        reason = s.check(value)
        if reason:
            problems[s.name] = reason
    if not problems.keys() & {"n_embd", "n_head"} and config.n_embd % config.n_head:
        problems["n_head"] = f"n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head})"
    if not problems.keys() & {"lr", "min_lr"} and config.min_lr > config.lr:
        problems["min_lr"] = f"min_lr ({config.min_lr:g}) must not exceed lr ({config.lr:g})"
    head_size = config.n_embd // config.n_head if not problems.keys() & {"n_embd", "n_head"} else 0
    if config.pos_embedding == "rope" and head_size % 2:
        problems["pos_embedding"] = f"rope needs an even head size (n_embd / n_head = {head_size})"
    if "text_field" not in problems and not config.text_field.strip():
        problems["text_field"] = "text_field must name the field or column that holds the text"
    if not problems.keys() & {"warmup_iters", "max_iters"} and config.warmup_iters >= config.max_iters:
        problems["warmup_iters"] = (
            f"warmup_iters ({config.warmup_iters}) must be smaller than max_iters ({config.max_iters})"
        )
    project = config.tracker_project
    bad_project = "tracker_project" not in problems and (
        not 0 < len(project) <= 128 or set(project) & set(TRACKER_PROJECT_FORBIDDEN))
    if bad_project:
        problems["tracker_project"] = (f"tracker_project must be 1 to 128 characters without any of "
                                       f"{' '.join(TRACKER_PROJECT_FORBIDDEN)}")
    return problems


def check(config: Config) -> Config:
    """Return `config` when valid, else raise ConfigError listing every problem."""
    problems = validate(config)
    if problems:
        raise ConfigError(problems)
    return config


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """Parse raw values (strings from `--set` or a form, or JSON values) onto `config`."""
    problems: dict[str, str] = {}
    values: dict[str, Any] = {}
    for key, raw in overrides.items():
        setting = SETTINGS_BY_NAME.get(key)
        if setting is None:
            problems[key] = f"unknown setting {key!r}" + _suggest(key)
            continue
        try:
            values[key] = setting.parse(raw)
        except ValueError as exc:
            problems[key] = str(exc)
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(config, **values)


def parse_assignments(items: list[str]) -> dict[str, str]:
    """`["lr=1e-3", "n_layer=2"]` -> {"lr": "1e-3", "n_layer": "2"}."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError({item: f"expected KEY=VALUE, got {item!r}"})
        out[key.strip()] = value.strip()
    return out


def config_from_dict(data: dict[str, Any]) -> Config:
    """Load settings saved in a config.json, ignoring keys this version does not know."""
    known = {k: v for k, v in data.items() if k in SETTINGS_BY_NAME}
    return check(apply_overrides(Config(), known))


def _suggest(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, SETTINGS_BY_NAME, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


# --- estimates shown live in the form -------------------------------------------------------------------


def effective_vocab(config: Config, char_vocab: int = 96) -> int:
    """The model's vocabulary: a char corpus's characters (guessed), or the BPE vocabulary; and the end-of-text
    token after either."""
    return 1 + (char_vocab if config.tokenizer == "char" else config.vocab_size)


def mlp_hidden(kind: str, ratio: int, n_embd: int) -> int:
    """The MLP's hidden width: ratio x n_embd; for SwiGLU 2/3 of that rounded up to a multiple of 8, so its three
    matrices hold about as many weights as the two of a GELU MLP (as in Llama)."""
    if kind == "swiglu":
        return -(-2 * ratio * n_embd // 24) * 8  # ceil(2/3 * ratio * n_embd / 8) * 8
    return ratio * n_embd


def _hidden_matrix_params(config: Config) -> int:
    d = config.n_embd
    h = mlp_hidden(config.mlp, config.mlp_ratio, d)
    fc = 2 * h if config.mlp == "swiglu" else h
    return config.n_layer * (d * 3 * d + d * d + d * fc + h * d)


def estimate_params(config: Config, vocab_size: int | None = None) -> int:
    """Parameter count of the model `config` describes, exactly (tested against the built model)."""
    v = vocab_size or effective_vocab(config)
    d, L = config.n_embd, config.n_layer
    h = mlp_hidden(config.mlp, config.mlp_ratio, d)
    fc = 2 * h if config.mlp == "swiglu" else h
    b = 1 if config.bias else 0
    norm = d if config.norm == "rmsnorm" else d * (1 + b)
    biases = (3 * d + d + fc + d) * b
    embeddings = v * d * (1 if config.tie_embeddings else 2)
    positions = config.block_size * d if config.pos_embedding == "learned" else 0
    return embeddings + positions + _hidden_matrix_params(config) + L * (2 * norm + biases) + norm


def optimizer_state_elements(config: Config, vocab_size: int | None = None) -> int:
    """Numbers the optimizer keeps: AdamW's two moments per parameter; Muon's one momentum buffer per matrix."""
    params = estimate_params(config, vocab_size)
    muon = _hidden_matrix_params(config) if config.optimizer == "muon" else 0
    return 2 * (params - muon) + muon


def tokens_per_step(config: Config, world_size: int = 1) -> int:
    """Tokens in one optimizer step (the global batch): batch_size x block_size x grad_accum x processes."""
    return config.batch_size * config.block_size * config.grad_accum * world_size


def estimate_memory_bytes(config: Config, vocab_size: int | None = None) -> int:
    """Training memory: weights, gradients and optimizer state in fp32 (exact), plus a rough count of the
    activations one micro-batch keeps."""
    v = vocab_size or effective_vocab(config)
    params = estimate_params(config, v)
    b, t, d, L = config.batch_size, config.block_size, config.n_embd, config.n_layer
    mlp_width = mlp_hidden(config.mlp, config.mlp_ratio, d) * (3 if config.mlp == "swiglu" else 2)
    act_per_layer = b * t * (10 * d + mlp_width)  # kept tensors per block, in elements
    activations = L * act_per_layer + 3 * b * t * v  # + logits, their softmax and gradient
    return 4 * (2 * params + optimizer_state_elements(config, v) + activations)


def flops_per_token(config: Config, vocab_size: int | None = None) -> int:
    """Training FLOPs per token (forward + backward), PaLM appendix B style: 6N + 12·L·T·d."""
    v = vocab_size or effective_vocab(config)
    n = estimate_params(config, v)
    if config.pos_embedding == "learned":
        n -= config.block_size * config.n_embd  # a table lookup, not a matmul
    if not config.tie_embeddings:
        n -= v * config.n_embd  # the input embedding is a lookup; the separate head is the matmul
    return 6 * n + 12 * config.n_layer * config.block_size * config.n_embd
