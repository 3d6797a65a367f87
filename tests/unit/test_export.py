"""Export to a Hugging Face `transformers` folder: what `GPT2LMHeadModel` and `AutoTokenizer` load from it gives
our logits (fp32, atol 1e-4), our greedy text and our token ids, for char and BPE runs, with and without biases,
tied and untied; settings GPT-2 cannot express are refused by name; bad targets are refused before anything is
written, and a failed write leaves nothing behind.

Loading with transformers never downloads anything (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model

from gptui.core.config import apply_overrides, check, preset_config
from gptui.core.errors import DamagedRun, GptuiError, InputError
from gptui.core.export import GPT2_COMPATIBLE, export_run, gpt2_incompatible
from gptui.core.generate import generate_text, load_model
from gptui.core.runs import STATE, WEIGHTS, Run, RunStore
from gptui.core.sampling import SamplingSettings
from gptui.core.trainer import TrainJob
from gptui.core.workspace import Workspace

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

PROMPT = "All: speak,\n First"  # 19 characters: with 12 new tokens, inside block_size 32
NEW_TOKENS = 12
EXPORT_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                "tokenizer_config.json"}


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers", reason="transformers is in the dev extra (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory, tiny_overrides, make_corpus_text) -> Run:
    """A tiny BPE run with biases and an untied output head (the other corner from `trained_run`)."""
    ws = Workspace(tmp_path_factory.mktemp("bpe")).ensure()
    (ws.inputs / "tiny.txt").write_text(make_corpus_text(), encoding="utf-8")
    config = check(apply_overrides(preset_config("tiny-classic"), {
        **tiny_overrides, "tokenizer": "bpe", "vocab_size": 300, "bias": True, "tie_embeddings": False,
        "mlp_ratio": 3, "max_iters": 12, "eval_interval": 6, "sample_interval": 0,
    }))
    assert TrainJob(ws, "tiny", config, name="bpe").run().status == "completed"
    (run,) = RunStore(ws).runs()
    return run


def scrambled(run: Run) -> Run:
    """Give every weight (gains and biases too) a large random nudge: a 20-step model writes one letter over and
    over, which would make "the same greedy text" a weak check. The export must be exact for any weights."""
    loaded = load_model(run, "cpu", "float32")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    save_model(loaded.model, str(run.file(WEIGHTS)))
    return run


def copy_of(run: Run, workspace: Workspace) -> Run:
    import shutil

    dest = workspace.models / run.id
    shutil.copytree(run.path, dest)
    return Run(dest)


def assert_matches_transformers(run: Run, out, transformers) -> None:
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert type(hf_model).__name__ == "GPT2LMHeadModel"
    loaded = load_model(run, "cpu", "float32")

    ids = loaded.tokenizer.encode(PROMPT)
    assert hf_tok(PROMPT)["input_ids"] == ids
    assert hf_tok.decode(ids) == PROMPT

    x = torch.tensor([ids])
    with torch.no_grad():
        ours, _ = loaded.model(x, x)  # with targets: the logits at every position
        theirs = hf_model(x).logits
    assert theirs.dtype == torch.float32
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)

    settings = SamplingSettings(max_new_tokens=NEW_TOKENS, temperature=0.0, seed=0)
    ours_text = generate_text(loaded, PROMPT, settings)
    generated = hf_model.generate(x, do_sample=False, max_new_tokens=NEW_TOKENS)
    theirs_text = hf_tok.decode(generated[0, len(ids):])
    assert len(set(ours_text)) > 2, f"a degenerate continuation proves little: {ours_text!r}"
    assert theirs_text == ours_text


# --- what transformers loads ------------------------------------------------------------------------------------


def test_a_char_run_loads_in_transformers_with_our_logits_and_text(run_copy, tmp_path, transformers):
    run = scrambled(run_copy)
    out = export_run(run, tmp_path / "hf")
    assert {p.name for p in out.iterdir()} == EXPORT_FILES
    assert_matches_transformers(run, out, transformers)


def test_a_bpe_run_with_biases_and_an_untied_head_loads_with_our_logits_and_text(bpe_run, workspace, tmp_path,
                                                                                 transformers):
    run = scrambled(copy_of(bpe_run, workspace))
    out = export_run(run, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    assert_matches_transformers(run, out, transformers)


def test_the_weights_as_training_saved_them_give_the_same_logits(trained_run, tmp_path, transformers):
    out = export_run(trained_run, tmp_path / "hf")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    loaded = load_model(trained_run, "cpu", "float32")
    x = torch.tensor([loaded.tokenizer.encode(PROMPT)])
    with torch.no_grad():
        torch.testing.assert_close(hf_model(x).logits, loaded.model(x, x)[0], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def tokenizers(trained_run, bpe_run, tmp_path_factory, transformers):
    """{kind: (ours, the exported one as AutoTokenizer loads it)} for the char and the BPE run."""
    out = {}
    for kind, run in (("char", trained_run), ("bpe", bpe_run)):
        folder = export_run(run, tmp_path_factory.mktemp("tokenizer") / kind)
        out[kind] = (load_model(run, "cpu").tokenizer, transformers.AutoTokenizer.from_pretrained(folder))
    return out


# the char run knows only the corpus's characters (letters, digits 0-6, space, newline, :,.?')
CHAR_TEXTS = ["\n", "\n\n", " ", "  two  spaces ", "Speak, speak.\nAll: know't?", "a\n\n e 4"]
BPE_TEXTS = CHAR_TEXTS + ["tab\there", "café — naïve 😀", "  \n  indented\r\n", "x" * 300]


@pytest.mark.parametrize(("kind", "text"), [("char", t) for t in CHAR_TEXTS] + [("bpe", t) for t in BPE_TEXTS])
def test_the_tokenizer_gives_our_ids_and_round_trips_whitespace_and_punctuation(tokenizers, kind, text):
    ours, theirs = tokenizers[kind]
    ids = theirs(text)["input_ids"]
    assert ids == ours.encode(text)
    assert theirs.decode(ids) == text


# --- the folder itself (no transformers needed) -------------------------------------------------------------------


def test_the_folder_holds_gpt2s_layout_and_settings(trained_run, tmp_path):
    """bias=False becomes zero biases; nn.Linear weights become Conv1D's (transposed); exact GELU, not gelu_new."""
    settings = trained_run.read_config()["settings"]
    out = export_run(trained_run, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["model_type"] == "gpt2"
    assert config["activation_function"] == "gelu"
    assert config["n_positions"] == settings["block_size"]
    assert config["n_inner"] == settings["mlp_ratio"] * settings["n_embd"]
    assert config["layer_norm_epsilon"] == 1e-5
    assert config["scale_attn_by_inverse_layer_idx"] is False and config["reorder_and_upcast_attn"] is False
    assert config["tie_word_embeddings"] is True
    assert config["bos_token_id"] is None and config["eos_token_id"] is None
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tok_config["clean_up_tokenization_spaces"] is False

    ours = load_file(str(trained_run.file(WEIGHTS)))
    theirs = load_file(str(out / "model.safetensors"))
    assert settings["bias"] is False and not any(k.endswith(".bias") for k in ours)
    layer = "transformer.h.0."
    assert torch.equal(theirs[layer + "attn.c_attn.weight"], ours[layer + "attn.c_attn.weight"].t())
    assert torch.equal(theirs[layer + "mlp.c_fc.weight"], ours[layer + "mlp.c_fc.weight"].t())
    assert not theirs[layer + "attn.c_attn.bias"].any() and not theirs["transformer.ln_f.bias"].any()
    assert "lm_head.weight" not in theirs  # tied: GPT-2 reuses the token embedding
    expected = {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"}
    for i in range(settings["n_layer"]):
        for name in ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            expected |= {f"transformer.h.{i}.{name}.weight", f"transformer.h.{i}.{name}.bias"}
    assert set(theirs) == expected


def test_an_empty_existing_folder_is_filled(trained_run, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert export_run(trained_run, out) == out
    assert {p.name for p in out.iterdir()} == EXPORT_FILES


def test_a_folder_that_is_not_empty_is_refused_and_left_alone(trained_run, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export_run(trained_run, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_a_file_in_the_way_is_refused(trained_run, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        export_run(trained_run, tmp_path / "file")


def test_a_folder_among_the_runs_is_refused(run_copy):
    """models/ holds runs only: an export there would be listed as a damaged run."""
    with pytest.raises(InputError, match="among the runs"):
        export_run(run_copy, run_copy.path.parent / "exported")
    assert [p.name for p in run_copy.path.parent.iterdir()] == [run_copy.id]


def test_an_unknown_format_is_refused(trained_run, tmp_path):
    with pytest.raises(InputError, match="unknown export format 'onnx'"):
        export_run(trained_run, tmp_path / "out", "onnx")
    assert not (tmp_path / "out").exists()


def test_a_run_without_weights_is_refused(run_copy, tmp_path):
    run_copy.file(WEIGHTS).unlink()
    state = json.loads(run_copy.file(STATE).read_text())
    run_copy.file(STATE).write_text(json.dumps({**state, "best_val_loss": None, "status": "stopped"}))
    with pytest.raises(InputError, match="no saved weights"):
        export_run(run_copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()


RECIPE_VALUES = {"pos_embedding": "rope", "norm": "rmsnorm", "qk_norm": True, "mlp": "swiglu",
                 "logit_softcap": 30.0}


@pytest.mark.parametrize("name", sorted(GPT2_COMPATIBLE))
def test_a_setting_gpt2_cannot_express_is_refused_by_name(small_workspace, small_config, tmp_path, name):
    # trained with it: a config.json edited to say so would no longer fit the weights (a damaged run)
    config = dataclasses.replace(small_config, **{name: RECIPE_VALUES[name]}, max_iters=4, eval_interval=4)
    run_id = TrainJob(small_workspace, "tiny", check(config)).run().run_id
    run_copy = RunStore(small_workspace).resolve(run_id)
    shown = str(RECIPE_VALUES[name]).lower() if isinstance(RECIPE_VALUES[name], bool) else RECIPE_VALUES[name]
    with pytest.raises(InputError, match=f"cannot express: {name}={shown} ") as caught:
        export_run(run_copy, tmp_path / "out")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_a_run_with_every_modern_option_is_refused_naming_them_all(small_workspace, small_config, tmp_path):
    config = dataclasses.replace(small_config, **RECIPE_VALUES, tie_embeddings=False)
    assert TrainJob(small_workspace, "tiny", check(config), name="modern").run().status == "completed"
    (run,) = RunStore(small_workspace).runs()
    with pytest.raises(InputError) as caught:
        export_run(run, tmp_path / "out")
    message = str(caught.value)
    for fragment in ("pos_embedding=rope", "norm=rmsnorm", "qk_norm=true", "mlp=swiglu", "logit_softcap=30.0"):
        assert fragment in message
    assert "tie_embeddings" not in message  # GPT2LMHeadModel has an untied head
    assert not (tmp_path / "out").exists()


def test_runs_older_than_a_setting_count_as_its_gpt2_value():
    assert gpt2_incompatible({}) == []
    assert gpt2_incompatible({"norm": "layernorm", "qk_norm": False, "logit_softcap": 0.0, "mlp": "gelu",
                              "pos_embedding": "learned", "tie_embeddings": False}) == []
    assert gpt2_incompatible({"logit_softcap": 15, "qk_norm": True}) == ["qk_norm=true", "logit_softcap=15"]


def test_an_old_run_without_the_new_settings_exports(run_copy, tmp_path):
    config = run_copy.read_config()
    for name in (*GPT2_COMPATIBLE, "tie_embeddings"):
        config["settings"].pop(name, None)
    run_copy.write_config(config)
    assert {p.name for p in export_run(run_copy, tmp_path / "hf").iterdir()} == EXPORT_FILES


def test_weights_gpt2_has_no_place_for_are_refused(run_copy, tmp_path):
    weights = load_file(str(run_copy.file(WEIGHTS)))
    weights["transformer.h.0.attn.q_norm.weight"] = torch.ones(16)
    save_file(weights, str(run_copy.file(WEIGHTS)))
    # a tensor its settings do not make: the run is damaged (issue 21), so it is refused before any renaming
    with pytest.raises(DamagedRun, match="model.safetensors does not match config.json"):
        export_run(run_copy, tmp_path / "out")


def test_a_failed_write_leaves_no_folder_behind(trained_run, tmp_path, monkeypatch):
    import safetensors.torch

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(GptuiError, match=f"cannot write the export to {tmp_path / 'out'}: No space left"):
        export_run(trained_run, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_the_export_module_loads_neither_torch_nor_transformers_on_import():
    code = ("import sys, gptui.core.export; "
            "print(sorted(m for m in ('torch', 'transformers', 'textual') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_run_folder_is_left_unchanged(trained_run, tmp_path):
    before = {p.name: p.read_bytes() for p in trained_run.path.iterdir() if p.is_file()}
    export_run(trained_run, tmp_path / "hf")
    assert {p.name: p.read_bytes() for p in trained_run.path.iterdir() if p.is_file()} == before
