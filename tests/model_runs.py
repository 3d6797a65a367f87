"""Run folders made without training: a model with fixed random weights (scaled up, so its distributions and
attention are far from uniform) saved as a run, for tests that look inside a model. A second or two less than
training one, and any architecture."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import TINY_OVERRIDES, corpus_text


def write_model_run(home: Path, name: str, overrides: dict | None = None, *, tokenizer: str = "char",
                    text: str | None = None, seed: int = 0) -> Path:
    import torch
    from safetensors.torch import save_model

    from gptui.core.config import apply_overrides, check, config_to_dict, preset_config
    from gptui.core.model import GPT, ModelConfig
    from gptui.core.tokenizer import train_tokenizer

    text = corpus_text() if text is None else text
    settings = {**TINY_OVERRIDES, "tokenizer": tokenizer, **(overrides or {})}
    config = check(apply_overrides(preset_config("tiny-classic"), settings))
    tok = train_tokenizer(text, tokenizer, vocab_size=config.vocab_size)
    torch.manual_seed(seed)
    model = GPT(ModelConfig.from_config(config, tok.vocab_size))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0 if p.dim() == 2 else 1.0).add_(torch.randn(p.shape) * 0.1)
    run = Path(home) / "models" / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({
        "settings": config_to_dict(config), "corpus": "tiny", "corpus_sha256": "0" * 64,
        "corpus_bytes": len(text.encode()), "vocab_size": tok.vocab_size, "params": model.num_params(),
        "gptui_version": "0.1.0", "torch_version": torch.__version__, "created": "2024-01-02T03:04:05",
    }))
    (run / "state.json").write_text(json.dumps({"status": "completed", "step": 1, "best_val_loss": 3.0,
                                                "best_val_bpb": 4.0, "duration": 1.0}))
    tok.save(run / "tokenizer.json")
    save_model(model, str(run / "model.safetensors"))
    return run
