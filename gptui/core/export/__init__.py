"""Export a run for other tools: a Hugging Face `transformers` folder that a stock class loads with our logits.

The run's settings pick the class (see `classes`): the classic recipe becomes `GPT2LMHeadModel`, the modern ones
`Qwen3ForCausalLM`, `LlamaForCausalLM` or `NanoChatForCausalLM`; a recipe none computes exactly is refused before
anything is written, naming the settings in the way and the nearest recipe that exports. The folder is written
with json, safetensors and the `tokenizers` library: `transformers` is needed only to load it, never here. torch
loads when an export starts, not on import.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gptui.core.errors import DamagedRun, GptuiError, InputError
from gptui.core.export.classes import CLASSES, HfClass, Weights, hf_class_for, hf_config, hf_tensors
from gptui.core.fsio import file_mode, folder_mode
from gptui.core.runs import CONFIG, TOKENIZER, WEIGHTS, Run, require_sound
from gptui.core.tokenizer import CHAR_FORMAT

__all__ = ["CLASSES", "FORMATS", "HfClass", "export_run", "export_target_problem", "hf_class_for",
           "hf_tokenizer_json", "run_hf_class", "exported_class"]

FORMATS = {"hf": "Hugging Face transformers folder"}

CHAR_PATTERN = r"[\s\S]"  # one pre-token per character, newlines and spaces included
END_OF_TEXT = "<|endoftext|>"  # the end-of-text token's text in BPE and char tokenizers

# the files of an export, in the order they are written
HF_CONFIG = "config.json"
HF_GENERATION = "generation_config.json"
HF_WEIGHTS = "model.safetensors"
HF_TOKENIZER = "tokenizer.json"
HF_TOKENIZER_CONFIG = "tokenizer_config.json"


def export_run(run: Run, out: Path, format: str = "hf") -> Path:
    """Write `run`'s best weights and tokenizer to the new (or empty) folder `out` in `format`; return it.

    The folder appears whole or not at all: it is written beside `out` under a temporary name, then renamed.
    Raises InputError (unknown format, `out` not empty, no weights yet, a recipe no class computes) or
    DamagedRun before anything is written."""
    if format not in FORMATS:
        raise InputError(f"unknown export format {format!r} (choose {', '.join(FORMATS)})")
    out = Path(out).expanduser().absolute()
    _check_target(out)
    if out.resolve().parent == run.path.parent.resolve():
        raise InputError(f"{out} would sit among the runs in {run.path.parent}: export somewhere else")
    config, cls = _read_run(run)
    if not run.file(WEIGHTS).is_file():
        raise InputError(f"run {run.id} has no saved weights yet (a run has them once it has trained a step and "
                         "been evaluated or stopped)")
    try:
        tokenizer_text = run.file(TOKENIZER).read_text(encoding="utf-8")
    except OSError as exc:
        raise DamagedRun(f"run {run.id} could not be read: {str(exc).splitlines()[0][:200]}") from None
    tensors = hf_tensors(cls, Weights(_load_weights(run), run.id, WEIGHTS), config)
    embedding = tensors["transformer.wte.weight" if "transformer.wte.weight" in tensors else "model.embed_tokens.weight"]
    eos_id = end_of_text_id(tokenizer_text)
    files: dict[str, str] = {
        HF_CONFIG: _json(hf_config(cls, config, embedding.shape[0], str(embedding.dtype), eos_id)),
        HF_GENERATION: _json(generation_config(eos_id)),
        HF_TOKENIZER: hf_tokenizer_json(tokenizer_text),
        HF_TOKENIZER_CONFIG: _json(tokenizer_config(config, eos_id is not None)),
    }
    return _write_folder(out, files, tensors)


def exported_class(folder: Path) -> str:
    """The transformers class an export folder holds, read from its config.json (what export_run wrote)."""
    return json.loads((Path(folder) / HF_CONFIG).read_text(encoding="utf-8"))["architectures"][0]


def run_hf_class(run: Run) -> HfClass:
    """The transformers class `run` exports as (torch-free); InputError when none computes its recipe."""
    return _read_run(run)[1]


def _read_run(run: Run):
    """The run's settings and the class they export as. The run's files are checked first, as every command
    checks them (a damaged run: DamagedRun, exit 1); then a recipe no class computes is refused (InputError)."""
    from gptui.core.config import ConfigError, config_from_dict

    require_sound(run)
    try:
        # a setting missing from an old run's config.json takes its default: what the run was trained with
        config = config_from_dict(run.read_config()["settings"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
        raise DamagedRun(f"run {run.id} has unreadable settings in {CONFIG}: {str(exc).splitlines()[0][:200]}") \
            from None
    return config, refuse_unexportable(run.id, config)


def refuse_unexportable(run_id: str, config) -> HfClass:
    """The class `config` exports as, or InputError naming the settings in the way and the nearest recipe."""
    try:
        return hf_class_for(config)
    except InputError as exc:
        raise InputError(f"run {run_id} cannot be exported: {exc}") from None


def _load_weights(run: Run) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(run.file(WEIGHTS)))
    except (OSError, SafetensorError) as exc:
        raise DamagedRun(f"run {run.id}: {WEIGHTS} is unreadable: {str(exc).splitlines()[0][:200]}") from None


def end_of_text_id(tokenizer_text: str) -> int | None:
    """The id of the tokenizer's end-of-text token, or None (tokenizers saved before it existed have none).

    A BPE tokenizer.json lists it among its `added_tokens`; a char tokenizer with `"eot": true` reserves the id
    after its characters."""
    try:
        data = json.loads(tokenizer_text)
    except ValueError:
        raise DamagedRun("the tokenizer is not valid JSON") from None
    if not isinstance(data, dict):
        raise DamagedRun("the tokenizer is malformed")
    if data.get("type") == CHAR_FORMAT:
        chars = data.get("chars")
        return len(chars) if data.get("eot") is True and isinstance(chars, list) else None
    for token in data.get("added_tokens") or []:
        if isinstance(token, dict) and token.get("content") == END_OF_TEXT and isinstance(token.get("id"), int):
            return token["id"]
    return None


def generation_config(eos_id: int | None) -> dict[str, Any]:
    # generation stops at the end-of-text token where the tokenizer has one, else runs for the length it is
    # given (keep prompt + new tokens within the run's block_size: the model was never trained past it)
    return {"bos_token_id": None, "eos_token_id": eos_id, "pad_token_id": None}


def tokenizer_config(config, has_eos: bool) -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": config.block_size,
        # decode must give back exactly what encode was given (no " ." -> "." clean-up)
        "clean_up_tokenization_spaces": False,
        "bos_token": None,
        "eos_token": END_OF_TEXT if has_eos else None,
        # the text "<|endoftext|>" in a prompt is ordinary text, as our tokenizers encode it, never the token
        "split_special_tokens": True,
        "unk_token": None,
        "pad_token": None,
    }


def hf_tokenizer_json(text: str) -> str:
    """A run's tokenizer.json as a `tokenizers` file with the same ids.

    BPE runs already have one (byte-level BPE, our split pattern, a byte-level decoder, the end-of-text token
    among its added tokens): it is kept as it is. A char run's is a word-level model over its characters behind a
    pre-tokenizer that makes every character its own word, and a decoder that joins tokens with nothing between
    them; its end-of-text token, if it has one, is a special token with the id after the characters. A character
    the run never saw cannot be encoded (as with ours)."""
    data = json.loads(text)
    if not (isinstance(data, dict) and data.get("type") == CHAR_FORMAT):
        return text
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HfTokenizer

    chars = data.get("chars")
    if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
        raise DamagedRun("the char tokenizer has a malformed character list")
    hf = HfTokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(chars)}, unk_token=None))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(CHAR_PATTERN), behavior="isolated")
    hf.decoder = decoders.Fuse()
    if end_of_text_id(text) is not None:
        hf.add_special_tokens([AddedToken(END_OF_TEXT, special=True, normalized=False)])
    return hf.to_str()


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


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
