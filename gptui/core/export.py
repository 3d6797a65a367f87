"""Export a run for other tools: a Hugging Face `transformers` folder that `GPT2LMHeadModel` loads.

Our model is GPT-2's architecture as nanoGPT writes it, so the export is mostly renaming: GPT-2 keeps its
projections in `Conv1D` layers, which store the transpose of an `nn.Linear` weight; it always has biases, so a run
trained with bias=False gets zeros (exactly what no bias computes); and its output layer is tied to the token
embedding as ours is. The folder is written with json, safetensors and the `tokenizers` library: `transformers`
is needed only to load it, never here. torch loads when an export starts, not on import.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gptui.core.errors import DamagedRun, GptuiError, InputError
from gptui.core.fsio import file_mode, folder_mode
from gptui.core.runs import CONFIG, TOKENIZER, WEIGHTS, Run, require_sound
from gptui.core.tokenizer import CHAR_FORMAT

FORMATS = {"hf": "Hugging Face transformers folder (GPT2LMHeadModel)"}

# Settings with values GPT-2 cannot express, and the value it can. A run whose config.json lacks one of them
# was trained before the setting existed, with this value. (An untied output head, tie_embeddings=false, is not
# here: GPT2LMHeadModel has one with tie_word_embeddings false.)
GPT2_COMPATIBLE: dict[str, Any] = {
    "pos_embedding": "learned",
    "norm": "layernorm",
    "qk_norm": False,
    "mlp": "gelu",
    "logit_softcap": 0,
}

LAYER_NORM_EPS = 1e-5  # model.LayerNorm's
CHAR_PATTERN = r"[\s\S]"  # one pre-token per character, newlines and spaces included

# the files of an export, in the order they are written
HF_CONFIG = "config.json"
HF_GENERATION = "generation_config.json"
HF_WEIGHTS = "model.safetensors"
HF_TOKENIZER = "tokenizer.json"
HF_TOKENIZER_CONFIG = "tokenizer_config.json"


def gpt2_incompatible(settings: dict[str, Any]) -> list[str]:
    """`name=value` for every setting of a run whose value GPT-2 cannot express (empty when it can)."""
    return [f"{name}={_show(settings[name])}" for name, compatible in GPT2_COMPATIBLE.items()
            if name in settings and not _same(settings[name], compatible)]


def export_run(run: Run, out: Path, format: str = "hf") -> Path:
    """Write `run`'s best weights and tokenizer to the new (or empty) folder `out` in `format`; return it.

    The folder appears whole or not at all: it is written beside `out` under a temporary name, then renamed.
    Raises InputError (unknown format, `out` not empty, no weights yet, settings the format cannot express) or
    DamagedRun before anything is written."""
    if format not in FORMATS:
        raise InputError(f"unknown export format {format!r} (choose {', '.join(FORMATS)})")
    out = Path(out).expanduser().absolute()
    _check_target(out)
    if out.resolve().parent == run.path.parent.resolve():
        raise InputError(f"{out} would sit among the runs in {run.path.parent}: export somewhere else")
    require_sound(run)
    if not run.file(WEIGHTS).is_file():
        raise InputError(f"run {run.id} has no saved weights yet (a run has them once it has trained a step and been evaluated or stopped)")
    try:
        saved = run.read_config()
        settings = saved["settings"]
        tokenizer_text = run.file(TOKENIZER).read_text(encoding="utf-8")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DamagedRun(f"run {run.id} could not be read: {str(exc).splitlines()[0][:200]}") from None
    refused = gpt2_incompatible(settings)
    if refused:
        needed = ", ".join(f"{name}={_show(GPT2_COMPATIBLE[name.split('=')[0]])}" for name in refused)
        raise InputError(f"run {run.id} uses settings GPT-2 cannot express: {', '.join(refused)} "
                         f"(a Hugging Face export needs {needed})")
    from gptui.core.config import ConfigError, config_from_dict

    try:
        config = config_from_dict(settings)
    except ConfigError as exc:
        raise DamagedRun(f"run {run.id} has invalid settings in {CONFIG}: {exc}") from None
    tensors = _gpt2_tensors(run, config)
    wte = tensors["transformer.wte.weight"]
    files: dict[str, str] = {
        HF_CONFIG: _json(gpt2_config(config, wte.shape[0], str(wte.dtype))),
        HF_GENERATION: _json(generation_config()),
        HF_TOKENIZER: hf_tokenizer_json(tokenizer_text),
        HF_TOKENIZER_CONFIG: _json(tokenizer_config(config)),
    }
    return _write_folder(out, files, tensors)


def gpt2_config(config, vocab_size: int, dtype: str = "torch.float32") -> dict[str, Any]:
    """transformers' GPT2Config for a model with our `config`, as the dict its config.json holds."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": int(vocab_size),
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
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02,
        "scale_attn_weights": True,  # 1/sqrt(head size), as scaled_dot_product_attention does
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": _tied(config),
        "use_cache": True,
        # no special tokens: generation runs to its length, as ours does
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "dtype": dtype.removeprefix("torch."),
    }


def generation_config() -> dict[str, Any]:
    # no end-of-text token: generation runs for the length it is given (keep prompt + new tokens within
    # n_positions, the run's block_size; GPT-2 has no position embedding past it)
    return {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}


def tokenizer_config(config) -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": config.block_size,
        # decode must give back exactly what encode was given (no " ." -> "." clean-up)
        "clean_up_tokenization_spaces": False,
        "bos_token": None,
        "eos_token": None,
        "unk_token": None,
        "pad_token": None,
    }


def hf_tokenizer_json(text: str) -> str:
    """A run's tokenizer.json as a `tokenizers` file with the same ids.

    BPE runs already have one (byte-level BPE, our split pattern, a byte-level decoder): it is kept as it is.
    A char run's is a word-level model over its characters behind a pre-tokenizer that makes every character
    its own word, and a decoder that joins tokens with nothing between them; a character the run never saw
    cannot be encoded (as with ours)."""
    data = json.loads(text)
    if not (isinstance(data, dict) and data.get("type") == CHAR_FORMAT):
        return text
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HfTokenizer

    chars = data.get("chars")
    if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
        raise DamagedRun("the char tokenizer has a malformed character list")
    hf = HfTokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(chars)}, unk_token=None))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(CHAR_PATTERN), behavior="isolated")
    hf.decoder = decoders.Fuse()
    return hf.to_str()


def _gpt2_tensors(run: Run, config) -> dict[str, Any]:
    """Our weights under GPT-2's names and layout; every tensor of the file is placed, or the export stops."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        ours = load_file(str(run.file(WEIGHTS)))
    except (OSError, SafetensorError) as exc:
        raise DamagedRun(f"run {run.id}: {WEIGHTS} is unreadable: {str(exc).splitlines()[0][:200]}") from None
    left = dict(ours)

    def take(name: str) -> torch.Tensor:
        if name not in left:
            raise DamagedRun(f"run {run.id}: {WEIGHTS} has no {name}")
        return left.pop(name)

    def bias(name: str, size: int, like: torch.Tensor) -> torch.Tensor:
        return left.pop(name) if name in left else torch.zeros(size, dtype=like.dtype)

    if _tied(config):
        # tied embeddings are stored once, under either name
        wte = left.pop("transformer.wte.weight", None)
        head = left.pop("lm_head.weight", None)
        if wte is None and head is None:
            raise DamagedRun(f"run {run.id}: {WEIGHTS} has no token embedding")
        out = {"transformer.wte.weight": wte if wte is not None else head}
    else:
        wte = take("transformer.wte.weight")
        out = {"transformer.wte.weight": wte, "lm_head.weight": take("lm_head.weight")}
    out["transformer.wpe.weight"] = take("transformer.wpe.weight")
    d = config.n_embd
    for i in range(config.n_layer):
        p = f"transformer.h.{i}."
        for norm in ("ln_1", "ln_2"):
            weight = take(p + norm + ".weight")
            out[p + norm + ".weight"] = weight
            out[p + norm + ".bias"] = bias(p + norm + ".bias", d, weight)
        # Conv1D stores (in, out): the transpose of nn.Linear's (out, in)
        for layer in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            weight = take(p + layer + ".weight")
            out[p + layer + ".weight"] = weight.t().contiguous()
            out[p + layer + ".bias"] = bias(p + layer + ".bias", weight.shape[0], weight)
    weight = take("transformer.ln_f.weight")
    out["transformer.ln_f.weight"] = weight
    out["transformer.ln_f.bias"] = bias("transformer.ln_f.bias", d, weight)
    if left:
        raise InputError(f"run {run.id} has weights GPT-2 has no place for: {', '.join(sorted(left)[:5])}")
    vocab = out["transformer.wte.weight"].shape[0]
    expected = {"transformer.wte.weight": (vocab, d), "lm_head.weight": (vocab, d),
                "transformer.wpe.weight": (config.block_size, d),
                "transformer.h.0.mlp.c_fc.weight": (d, config.mlp_ratio * d)}
    for name, shape in expected.items():
        if name in out and tuple(out[name].shape) != shape:
            raise DamagedRun(f"run {run.id}: {name} is {tuple(out[name].shape)}, its settings say {shape}")
    return out


def _tied(config) -> bool:
    return bool(getattr(config, "tie_embeddings", True))


def export_target_problem(out: Path) -> str | None:
    """Why `out` cannot receive an export (it is a file, or a folder that is not empty), or None. Cheap and
    torch-free: a path prompt can ask it before the export starts."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        return f"{out} is a file, not a folder: export into a new or empty folder"
    if out.is_dir() and any(out.iterdir()):
        return f"{out} is not empty: export into a new or empty folder"
    return None


def _check_target(out: Path) -> None:
    problem = export_target_problem(out)
    if problem:
        raise InputError(problem)


def _write_folder(out: Path, files: dict[str, str], tensors: dict[str, Any]) -> Path:
    """Write the export beside `out` under a temporary name, then rename it. A failure names `out`, never the
    temporary folder the person did not ask for."""
    try:
        return _write_beside(out, files, tensors)
    except OSError as exc:
        raise GptuiError(f"cannot write the export to {out}: {exc.strerror or exc}") from None


def _write_beside(out: Path, files: dict[str, str], tensors: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, folder_mode())  # mkdtemp makes 0700; an export is shared as far as the umask allows
        save_file(tensors, str(tmp / HF_WEIGHTS), metadata={"format": "pt"})
        os.chmod(tmp / HF_WEIGHTS, file_mode())  # safetensors makes its file 0600
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        _check_target(out)  # something may have appeared there meanwhile
        if out.is_dir():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _same(value: Any, compatible: Any) -> bool:
    if isinstance(compatible, bool):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return bool(value) == compatible
        return value is compatible or str(value).strip().lower() == str(compatible).lower()
    if isinstance(compatible, (int, float)):
        try:
            return float(value) == compatible
        except (TypeError, ValueError):
            return False
    return str(value).strip().lower() == str(compatible).lower()


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
