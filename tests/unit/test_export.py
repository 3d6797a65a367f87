"""Export to a Hugging Face `transformers` folder: the run's recipe picks the class (GPT-2, Qwen3, Llama, NanoChat),
and what `AutoModelForCausalLM` and `AutoTokenizer` load from the folder gives our logits (fp32, atol 1e-4), our
greedy text (50 tokens) and our token ids, for every combination of recipe settings some class computes, char and
BPE, tied and untied, with every weight nudged by noise so that a wrong transpose, sign or gain cannot hide. Every
other combination is refused in one line naming the settings in the way and a recipe that exports; bad targets are
refused before anything is written, and a failed write leaves nothing behind.

Loading with transformers never downloads anything (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model

from gptui.core.config import Config, apply_overrides, check, config_from_dict, preset_config
from gptui.core.errors import DamagedRun, GptuiError, InputError
from gptui.core.export import CLASSES, export_run, hf_class_for, refuse_unexportable, run_hf_class
from gptui.core.export.classes import GPT2, LLAMA, NANOCHAT, QWEN3
from gptui.core.generate import generate_text, load_model
from gptui.core.model import GPT, ModelConfig
from gptui.core.runs import STATE, TOKENIZER, WEIGHTS, Run, RunStore
from gptui.core.sampling import SamplingSettings
from gptui.core.tokenizer import load_tokenizer
from gptui.core.trainer import TrainJob
from gptui.core.workspace import Workspace

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

PROMPT = "All: speak,\n First"  # 19 characters: with 50 new tokens, inside block_size 72
NEW_TOKENS = 50
EXPORT_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                "tokenizer_config.json"}
# the settings that shape the computation, and the values each can take
RECIPE_CHOICES = {
    "pos_embedding": ("learned", "rope"), "norm": ("layernorm", "rmsnorm"), "qk_norm": (False, True),
    "mlp": ("gelu", "relu2", "swiglu"), "tie_embeddings": (True, False), "logit_softcap": (0.0, 15.0),
    "bias": (False, True), "embed_norm": (False, True),
}
ALL_RECIPES = [dict(zip(RECIPE_CHOICES, values, strict=True)) for values in itertools.product(*RECIPE_CHOICES.values())]


def exportable(recipe: dict) -> bool:
    try:
        hf_class_for(dataclasses.replace(Config(), **recipe))
    except InputError:
        return False
    return True


EXPORTABLE = [r for r in ALL_RECIPES if exportable(r)]
REFUSED = [r for r in ALL_RECIPES if not exportable(r)]


def recipe_id(recipe: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in recipe.items())


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


def nudge(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    """Give every weight (gains and biases too) a large random nudge: a briefly trained model writes one letter
    over and over, which would make "the same greedy text" a weak check. The export must be exact for any weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def scrambled(run: Run) -> Run:
    loaded = load_model(run, "cpu", "float32")
    nudge(loaded.model)
    save_model(loaded.model, str(run.file(WEIGHTS)))
    return run


def copy_of(run: Run, workspace: Workspace, name: str | None = None) -> Run:
    dest = workspace.models / (name or run.id)
    shutil.copytree(run.path, dest)
    return Run(dest)


def with_recipe(template: Run, workspace: Workspace, recipe: dict, name: str, **shape) -> Run:
    """A copy of `template` (its tokenizer) whose settings are `recipe` at a small shape, with random weights:
    what a run trained with that recipe holds, without the training."""
    run = copy_of(template, workspace, name)
    saved = run.read_config()
    settings = {**saved["settings"], "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 72, "mlp_ratio": 4,
                **recipe, **shape}
    saved["settings"] = settings
    run.write_config(saved)
    config = config_from_dict(settings)
    torch.manual_seed(len(name))
    model = GPT(ModelConfig.from_config(config, load_tokenizer(run.file(TOKENIZER)).vocab_size))
    nudge(model, seed=len(name))
    save_model(model, str(run.file(WEIGHTS)))
    return run


def assert_matches_transformers(run: Run, out, transformers, expected_class: str | None = None,
                                new_tokens: int = NEW_TOKENS) -> None:
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    if expected_class:
        assert type(hf_model).__name__ == expected_class
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

    settings = SamplingSettings(max_new_tokens=new_tokens, temperature=0.0, seed=0)
    ours_text = generate_text(loaded, PROMPT, settings)
    generated = hf_model.generate(x, do_sample=False, max_new_tokens=new_tokens)
    theirs_text = hf_tok.decode(generated[0, len(ids):], skip_special_tokens=True)
    assert theirs_text == ours_text
    assert len(set(ours_text)) > 1, f"one letter over and over proves little: {ours_text!r}"
    # and the logits along the whole continuation, up to the last of its 50+ positions
    with torch.no_grad():
        torch.testing.assert_close(hf_model(generated).logits, loaded.model(generated, generated)[0],
                                   atol=1e-4, rtol=0)


# --- every recipe some class computes, against transformers ---------------------------------------------------


def test_the_recipe_grid_has_exportable_and_refused_combinations():
    by_class = {cls.name: sum(hf_class_for(dataclasses.replace(Config(), **r)) is cls for r in EXPORTABLE)
                for cls in CLASSES}
    # GPT-2: bias x tie; Qwen3: tie; Llama: bias x tie; NanoChat: relu2/gelu x tie x soft-cap
    assert by_class == {"GPT2LMHeadModel": 4, "Qwen3ForCausalLM": 2, "LlamaForCausalLM": 4,
                        "NanoChatForCausalLM": 8}
    assert len(REFUSED) == len(ALL_RECIPES) - 18


@pytest.mark.parametrize("recipe", EXPORTABLE, ids=recipe_id)
def test_every_exportable_recipe_gives_our_logits_and_greedy_text(recipe, trained_run, workspace, tmp_path,
                                                                 transformers):
    run = with_recipe(trained_run, workspace, recipe, "recipe")
    cls = hf_class_for(dataclasses.replace(Config(), **recipe))
    out = export_run(run, tmp_path / "hf")
    assert {p.name for p in out.iterdir()} == EXPORT_FILES
    assert_matches_transformers(run, out, transformers, cls.name)
    # tied stays tied (one matrix in the file) except for NanoChat, whose head takes the final norm's gain
    tensors = load_file(str(out / "model.safetensors"))
    assert ("lm_head.weight" not in tensors) == (recipe["tie_embeddings"] and cls is not NANOCHAT)


@pytest.mark.parametrize("cls", [QWEN3, LLAMA, NANOCHAT], ids=lambda c: c.name)
def test_a_bpe_run_exports_to_each_rotary_class(cls, bpe_run, workspace, tmp_path, transformers):
    recipe = {name: values[0] for name, values in cls.needs.items()}
    run = with_recipe(bpe_run, workspace, {**recipe, "tie_embeddings": False}, f"bpe-{cls.model_type}")
    out = export_run(run, tmp_path / "hf")
    assert_matches_transformers(run, out, transformers, cls.name)


def test_the_qk_norm_scale_and_the_rotation_sign_are_needed(trained_run, workspace, tmp_path, transformers):
    """Without the rows' scale (eps) or sign (rotation), Qwen3 would give other logits: the mapping's facts
    are what the tests above check, not something any weights would pass."""
    run = with_recipe(trained_run, workspace, {name: v[0] for name, v in QWEN3.needs.items()}, "qwen3")
    out = export_run(run, tmp_path / "hf")
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    loaded = load_model(run, "cpu", "float32")
    x = torch.tensor([loaded.tokenizer.encode(PROMPT)])
    with torch.no_grad():
        ours = loaded.model(x, x)[0]
        torch.testing.assert_close(model(x).logits, ours, atol=1e-4, rtol=0)
        q = model.model.layers[0].self_attn.q_proj.weight
        half = q.shape[0] // 4  # head size / 2 (two heads)
        q[half:2 * half].neg_()  # undo the sign of head 0's second half
        assert not torch.allclose(model(x).logits, ours, atol=1e-2)


# --- presets ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["tiny", "tiny-classic", "gpu", "lecture", "seed"])
def test_every_preset_trains_exports_and_gives_our_logits_and_text(preset, tmp_path, make_corpus_text, transformers):
    """Each preset's recipe, at a tiny shape, trained a few steps, then nudged (so the text is not one letter)."""
    ws = Workspace(tmp_path / "ws").ensure()
    (ws.inputs / "tiny.txt").write_text(make_corpus_text(), encoding="utf-8")
    base = preset_config(preset)
    shape = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 72, "batch_size": 2, "max_iters": 3,
             "warmup_iters": 1, "eval_interval": 3, "eval_iters": 1, "sample_interval": 0, "max_minutes": 0.0,
             "device": "cpu", "dtype": "float32", "vocab_size": min(base.vocab_size, 300)}
    config = check(dataclasses.replace(base, **shape))
    assert TrainJob(ws, "tiny", config, name=preset).run().status == "completed"
    (run,) = RunStore(ws).runs()
    cls = run_hf_class(run)
    scrambled(run)
    out = export_run(run, tmp_path / "hf")
    assert_matches_transformers(run, out, transformers, cls.name)


@pytest.mark.parametrize(("preset", "expected"), [("tiny", QWEN3), ("gpu", QWEN3), ("tiny-classic", GPT2),
                                                  ("lecture", GPT2), ("seed", GPT2)])
def test_each_preset_exports_to_the_class_the_readme_names(preset, expected):
    assert hf_class_for(preset_config(preset)) is expected


# --- refusals -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", REFUSED[::7], ids=recipe_id)
def test_a_recipe_no_class_computes_is_refused_with_the_nearest_that_exports(recipe, run_copy):
    # from the settings alone: a config.json edited to another recipe no longer fits the weights, which is damage
    # (tests/cli/test_export_cli.py refuses a shape-keeping recipe through `gptui export`, nothing written)
    settings = {**run_copy.read_config()["settings"], **recipe}
    with pytest.raises(InputError) as caught:
        refuse_unexportable(run_copy.id, config_from_dict(settings))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"run {run_copy.id} cannot be exported: ")


def test_every_refusal_names_the_settings_in_the_way_and_a_fix_that_exports():
    for recipe in REFUSED:
        config = dataclasses.replace(Config(), **recipe)
        with pytest.raises(InputError) as caught:
            hf_class_for(config)
        message = str(caught.value)
        have, need = message.split(" is in the way): the nearest that exports, ")
        cls_name, fix = need.split(", needs ")
        fixes = dict(item.split("=") for item in fix.split(", "))
        for name, value in fixes.items():
            shown = str(getattr(config, name)).lower() if isinstance(getattr(config, name), bool) else None
            assert f"{name}=" in have and value != shown
        changed = apply_overrides(config, fixes)
        assert hf_class_for(changed).name == cls_name, message


def test_the_refusal_reads_right():
    """tiny's recipe with ReLU² and a soft-cap but no embedding norm: one setting away from NanoChat, two from
    Qwen3."""
    config = dataclasses.replace(preset_config("tiny"), mlp="relu2", logit_softcap=15.0, embed_norm=False)
    with pytest.raises(InputError) as caught:
        hf_class_for(config)
    assert str(caught.value) == ("no transformers class computes this recipe exactly (embed_norm=false is in the "
                                 "way): the nearest that exports, NanoChatForCausalLM, needs embed_norm=true")
    classic = dataclasses.replace(Config(), pos_embedding="rope")
    with pytest.raises(InputError, match=r"\(pos_embedding=rope is in the way\): the nearest that exports, "
                                         r"GPT2LMHeadModel, needs pos_embedding=learned$"):
        hf_class_for(classic)


def test_runs_older_than_a_setting_count_as_its_default(run_copy, tmp_path):
    """A run whose config.json predates the recipe settings was trained with their defaults: GPT-2."""
    config = run_copy.read_config()
    for name in RECIPE_CHOICES:
        config["settings"].pop(name, None)
    run_copy.write_config(config)
    assert run_hf_class(run_copy) is GPT2
    assert {p.name for p in export_run(run_copy, tmp_path / "hf").iterdir()} == EXPORT_FILES


def test_a_run_of_todays_tiny_recipe_without_embed_norm_is_refused(run_copy):
    """A run trained with the tiny preset before embed_norm existed (ReLU², soft-cap, no embedding norm)."""
    settings = {**run_copy.read_config()["settings"], "pos_embedding": "rope", "norm": "rmsnorm", "qk_norm": True,
                "mlp": "relu2", "tie_embeddings": False, "logit_softcap": 15.0}
    settings.pop("embed_norm", None)
    with pytest.raises(InputError, match="NanoChatForCausalLM, needs embed_norm=true$"):
        refuse_unexportable(run_copy.id, config_from_dict(settings))


# --- the end-of-text token ------------------------------------------------------------------------------------


def bpe_with_end_of_text(bpe_json: str) -> str:
    """The run's BPE tokenizer with `<|endoftext|>` added as a special token after the trained vocabulary."""
    from tokenizers import AddedToken, Tokenizer

    hf = Tokenizer.from_str(bpe_json)
    hf.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    return hf.to_str()


def test_a_bpe_end_of_text_token_is_the_eos_and_generation_stops_there(bpe_run, workspace, tmp_path,
                                                                       transformers):
    run = copy_of(bpe_run, workspace, "eot")
    text = bpe_with_end_of_text(run.file(TOKENIZER).read_text(encoding="utf-8"))
    run.file(TOKENIZER).write_text(text, encoding="utf-8")
    eot = json.loads(text)["added_tokens"][-1]["id"]
    run = with_recipe(copy_of(run, workspace, "eot-src"), workspace,
                      {name: v[0] for name, v in QWEN3.needs.items()}, "eot-qwen3", tie_embeddings=False)
    assert load_tokenizer(run.file(TOKENIZER)).vocab_size == eot + 1
    out = export_run(run, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == eot
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == eot
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tok.eos_token == "<|endoftext|>" and hf_tok.eos_token_id == eot
    assert eot not in hf_tok("a <|endoftext|> b")["input_ids"]  # the text is text, as ours encodes it
    assert hf_tok.decode([*hf_tok("All")["input_ids"], eot], skip_special_tokens=True) == "All"

    # make the end-of-text token the likeliest after the third new token: transformers stops there
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    x = torch.tensor([hf_tok(PROMPT)["input_ids"]])
    free = hf_model.generate(x, do_sample=False, max_new_tokens=3)
    with torch.no_grad():
        hf_model.lm_head.weight[eot] = hf_model.model.norm(hf_model.model(free).last_hidden_state)[0, -1] * 100
    stopped = hf_model.generate(x, do_sample=False, max_new_tokens=20)
    assert stopped.shape[1] <= free.shape[1] + 1 and stopped[0, -1].item() == eot


def test_a_char_tokenizer_with_an_end_of_text_id_exports_it_as_a_special_token(transformers, tmp_path):
    from gptui.core.export import end_of_text_id, hf_tokenizer_json

    chars = list(" \nabc:")
    text = json.dumps({"type": "gptui-char", "version": 2, "chars": chars, "eot": True})
    assert end_of_text_id(text) == len(chars)
    (tmp_path / "tokenizer.json").write_text(hf_tokenizer_json(text), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
         "clean_up_tokenization_spaces": False}), encoding="utf-8")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert tok.eos_token_id == len(chars)
    assert tok("ab c\n")["input_ids"] == [2, 3, 0, 4, 1]
    assert tok.decode([2, len(chars), 3], skip_special_tokens=True) == "ab"
    assert end_of_text_id(json.dumps({"type": "gptui-char", "version": 1, "chars": chars})) is None


def test_a_tokenizer_without_an_end_of_text_token_exports_no_eos(run_copy, tmp_path):
    # a run trained before the end-of-text token existed: the same vocabulary size, every id a character
    saved = json.loads(run_copy.file(TOKENIZER).read_text(encoding="utf-8"))
    assert saved["type"] == "gptui-char" and saved["eot"]
    old = {"type": "gptui-char", "chars": [*saved["chars"], "\x00"]}
    run_copy.file(TOKENIZER).write_text(json.dumps(old), encoding="utf-8")
    out = export_run(run_copy, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["eos_token_id"] is None
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] is None
    assert json.loads((out / "tokenizer_config.json").read_text())["eos_token"] is None


# --- what transformers loads: the trained runs ----------------------------------------------------------------


def test_a_char_run_loads_in_transformers_with_our_logits_and_text(run_copy, tmp_path, transformers):
    run = scrambled(run_copy)
    out = export_run(run, tmp_path / "hf")
    assert {p.name for p in out.iterdir()} == EXPORT_FILES
    assert_matches_transformers(run, out, transformers, "GPT2LMHeadModel", new_tokens=12)


def test_a_bpe_run_with_biases_and_an_untied_head_loads_with_our_logits_and_text(bpe_run, workspace, tmp_path,
                                                                                 transformers):
    run = scrambled(copy_of(bpe_run, workspace))
    out = export_run(run, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    assert_matches_transformers(run, out, transformers, "GPT2LMHeadModel", new_tokens=12)


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
    # the trained run's char tokenizer has the end-of-text id, after its characters
    assert config["bos_token_id"] is None and config["eos_token_id"] == config["vocab_size"] - 1
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


def test_the_rotary_configs_name_rope_and_eps_as_llama_cpp_and_transformers_read_them(trained_run, workspace,
                                                                                       tmp_path):
    for cls in (QWEN3, LLAMA):
        run = with_recipe(trained_run, workspace, {n: v[0] for n, v in cls.needs.items()}, cls.model_type)
        config = json.loads((export_run(run, tmp_path / cls.model_type) / "config.json").read_text())
        assert config["architectures"] == [cls.name]
        assert config["rope_theta"] == 10000.0
        assert config["rope_parameters"] == {"rope_type": "default", "rope_theta": 10000.0}
        assert config["rms_norm_eps"] == 1e-5 and config["hidden_act"] == "silu"
        assert config["head_dim"] == 16 and config["num_key_value_heads"] == config["num_attention_heads"] == 2
        assert config["intermediate_size"] == 88  # SwiGLU: 2/3 of 4 x 32, rounded up to 8


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


def test_weights_the_class_has_no_place_for_are_refused(run_copy, tmp_path):
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
