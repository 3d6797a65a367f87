"""Fine-tuning (`TrainJob(init_from=RUN)`): a new run starts from RUN's best weights and encodes a new corpus with
RUN's tokenizer (cached under that tokenizer's own key); the model shape is RUN's and changing it is refused; the
optimizer and schedule start afresh; config.json records init_from; what cannot be fine-tuned is refused before a
run folder exists."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from gptui.core import events as ev
from gptui.core.config import preset_config
from gptui.core.data import cache_dir, sha256_file, tokenizer_key
from gptui.core.errors import CorpusError, InputError, RunNotFound
from gptui.core.finetune import KEPT_SETTINGS, fine_tune_config, fine_tune_source
from gptui.core.runs import RunStore
from gptui.core.trainer import TrainJob

# a learning rate too small to move fp32 weights, so what the run saves is what it started from
FROZEN = {"lr": "1e-12", "min_lr": "0", "weight_decay": "0", "warmup_iters": "0", "max_iters": "2",
          "eval_interval": "2", "sample_interval": "0"}


@pytest.fixture
def other(workspace, make_corpus_text):
    """inputs/other.txt: the tiny corpus's lines in reverse order (the same characters, another text)."""
    path = workspace.inputs / "other.txt"
    path.write_text("\n".join(reversed(make_corpus_text().splitlines())) + "\n", encoding="utf-8")
    return path


def new_runs(ws, source) -> list:
    return [r for r in RunStore(ws).runs() if r.id != source.id]


def test_a_fine_tune_starts_from_the_source_weights_with_a_fresh_optimizer(workspace, run_copy, other):
    events: list = []
    finished = TrainJob(workspace, "other", None, init_from=run_copy.id[:12], overrides=FROZEN,
                        on_event=events.append).run()
    assert finished.status == "completed" and finished.step == 2
    (run,) = new_runs(workspace, run_copy)
    assert run.id == finished.run_id and "other" in run.id

    before, after = load_file(str(run_copy.file("model.safetensors"))), load_file(str(run.file("model.safetensors")))
    assert before.keys() == after.keys()
    for key in before:
        assert torch.allclose(before[key], after[key], atol=1e-6, rtol=0), key

    config = run.read_config()
    source_settings = run_copy.read_config()["settings"]
    assert config["init_from"] == run_copy.id
    assert config["corpus"] == "other" and config["corpus_sha256"] == sha256_file(other)
    assert all(config["settings"][k] == source_settings[k] for k in KEPT_SETTINGS)
    assert config["settings"]["lr"] == 1e-12 and config["settings"]["max_iters"] == 2
    assert run.file("tokenizer.json").read_bytes() == run_copy.file("tokenizer.json").read_bytes()

    # the schedule and the optimizer start at step 0: a fresh warm-up, no moments carried over
    assert events[[type(e) for e in events].index(ev.Started)].start_step == 0
    checkpoint = torch.load(run.file("checkpoint.pt"), map_location="cpu", weights_only=True)
    assert checkpoint["step"] == 2
    assert all(s["step"] == 2 for s in checkpoint["optimizer"]["state"].values() if "step" in s)
    assert [m["step"] for m in run.metrics() if m["type"] == "eval"] == [2]

    log = run.file("train.log").read_text(encoding="utf-8")
    assert f"fine-tuning: starts from run {run_copy.id}'s best weights (step 20" in log
    assert f"tokenizer: run {run_copy.id}'s (not trained)" in log
    assert "the optimizer and the schedule start afresh at step 0" in log
    # the source run is untouched
    assert run_copy.read_state()["status"] == "completed"


def test_a_fine_tune_learns_the_new_text_faster_than_a_fresh_start(workspace, run_copy, other, tiny_config):
    steps = {"max_iters": "10", "eval_interval": "10", "sample_interval": "0", "warmup_iters": "2"}
    tuned = TrainJob(workspace, "other", None, init_from=run_copy.id, overrides=steps).run()
    fresh = TrainJob(workspace, "other", dataclasses.replace(tiny_config, max_iters=10, eval_interval=10,
                                                             sample_interval=0)).run()
    assert tuned.best_val_loss < fresh.best_val_loss - 0.2


def test_the_new_corpus_is_cached_under_the_source_tokenizers_key(workspace, run_copy, other):
    TrainJob(workspace, "other", None, init_from=run_copy.id, overrides=FROZEN).run()
    key = tokenizer_key(run_copy.file("tokenizer.json").read_text(encoding="utf-8"))
    folder = cache_dir(workspace.cache, sha256_file(other), key)
    assert (folder / "meta.json").is_file() and (folder / "tokens.bin").is_file()
    assert "-tok" in folder.name

    again = TrainJob(workspace, "other", None, init_from=run_copy.id, overrides=FROZEN).run()
    log = RunStore(workspace).resolve(again.run_id).file("train.log").read_text(encoding="utf-8")
    assert "served from cache" in log


def test_a_stopped_fine_tune_resumes_with_its_tokenizer(workspace, run_copy, other):
    job = None

    def stop_at_eval(e):
        if isinstance(e, ev.Eval) and e.step == 5:
            job.stop()

    job = TrainJob(workspace, "other", None, init_from=run_copy.id, on_event=stop_at_eval,
                   overrides={"max_iters": "10", "eval_interval": "5", "sample_interval": "0"})
    stopped = job.run()
    assert stopped.status == "stopped" and stopped.step == 5
    resumed = TrainJob(workspace, None, None, resume=stopped.run_id).run()
    assert resumed.status == "completed" and resumed.step == 10
    run = RunStore(workspace).resolve(stopped.run_id)
    assert run.read_config()["init_from"] == run_copy.id
    log = run.file("train.log").read_text(encoding="utf-8")
    assert log.count("served from cache") == 1, "the resume finds the fine-tune's own cache entry"


def test_dropout_and_the_schedule_may_change(workspace, run_copy, other):
    finished = TrainJob(workspace, "other", None, init_from=run_copy.id,
                        overrides={**FROZEN, "dropout": "0.1", "batch_size": "2", "seed": "7"}).run()
    settings = RunStore(workspace).resolve(finished.run_id).read_config()["settings"]
    assert settings["dropout"] == 0.1 and settings["batch_size"] == 2 and settings["seed"] == 7


@pytest.mark.parametrize("overrides,names", [
    ({"n_layer": "2"}, "n_layer"),
    ({"n_embd": "64", "n_head": "4"}, "n_head, n_embd"),
    ({"tokenizer": "bpe"}, "tokenizer"),
    ({"pos_embedding": "rope", "tie_embeddings": "false"}, "pos_embedding, tie_embeddings"),
])
def test_changing_the_model_shape_is_refused_by_name(workspace, run_copy, other, overrides, names):
    with pytest.raises(InputError, match=f"cannot change {names} when fine-tuning run {run_copy.id}") as info:
        TrainJob(workspace, "other", None, init_from=run_copy.id, overrides=overrides).run()
    assert info.value.exit_code == 2
    assert new_runs(workspace, run_copy) == []


def test_a_config_of_another_shape_is_refused(workspace, run_copy, other, tiny_config):
    """The TUI hands a whole config: it must keep the source's shape too."""
    with pytest.raises(InputError, match="cannot change n_embd"):
        TrainJob(workspace, "other", dataclasses.replace(tiny_config, n_embd=64), init_from=run_copy.id).run()
    assert new_runs(workspace, run_copy) == []


def test_restating_the_shape_in_another_spelling_is_no_change(workspace, run_copy, other):
    finished = TrainJob(workspace, "other", None, init_from=run_copy.id,
                        overrides={**FROZEN, "n_layer": "1.0", "bias": "no"}).run()
    assert finished.status == "completed"


def test_a_char_tokenizer_lacking_characters_is_refused_naming_them(workspace, run_copy):
    (workspace.inputs / "accents.txt").write_text("First Citizen: café über straße ¿qué?\n" * 50, encoding="utf-8")
    with pytest.raises(CorpusError) as info:
        TrainJob(workspace, "accents", None, init_from=run_copy.id).run()
    message = str(info.value)
    assert info.value.exit_code == 2
    assert f"run {run_copy.id}'s char tokenizer cannot encode accents.txt" in message
    for c in "éüß¿q":
        assert repr(c) in message, c
    assert new_runs(workspace, run_copy) == []
    assert not list(workspace.cache.glob("*-tok*")), "nothing cached for a text it cannot encode"


def test_the_list_of_missing_characters_is_capped(workspace, run_copy):
    (workspace.inputs / "greek.txt").write_text("αβγδεζηθικλμνξοπρστυφχψω\n" * 50, encoding="utf-8")
    with pytest.raises(CorpusError, match=r"it lacks 24 characters \(.*and 12 more\)"):
        TrainJob(workspace, "greek", None, init_from=run_copy.id).run()


def test_a_bpe_source_encodes_any_text(workspace, corpus, tiny_config):
    bpe = dataclasses.replace(tiny_config, tokenizer="bpe", vocab_size=300, max_iters=4, eval_interval=4,
                              sample_interval=0)
    source = TrainJob(workspace, "tiny", bpe).run()
    (workspace.inputs / "accents.txt").write_text("Première: café über straße, ¿qué? 東京\n" * 60, encoding="utf-8")
    tuned = TrainJob(workspace, "accents", None, init_from=source.run_id, overrides=FROZEN).run()
    assert tuned.status == "completed"
    run = RunStore(workspace).resolve(tuned.run_id)
    assert run.read_config()["vocab_size"] == 301  # 300 + the end-of-text token


def test_a_source_without_weights_is_refused(workspace, corpus, other, tiny_config):
    job = None

    def stop_at_start(e):
        if isinstance(e, ev.Started):
            job.stop()

    job = TrainJob(workspace, "tiny", tiny_config, on_event=stop_at_start)
    never = job.run()
    assert never.status == "stopped" and never.step == 0
    with pytest.raises(InputError, match=f"run {never.run_id} has no saved weights to fine-tune from"):
        TrainJob(workspace, "other", None, init_from=never.run_id).run()
    assert len(RunStore(workspace).runs()) == 1


def test_an_unknown_source_is_refused(workspace, other):
    with pytest.raises(RunNotFound, match="nosuch"):
        TrainJob(workspace, "other", None, init_from="nosuch").run()


def test_resume_and_init_from_together_are_refused(workspace, run_copy, other):
    with pytest.raises(InputError, match="either resumed or fine-tuned"):
        TrainJob(workspace, "other", None, resume=run_copy.id, init_from=run_copy.id).run()
    assert run_copy.read_state()["status"] == "completed"


def test_a_damaged_source_is_refused(workspace, run_copy, other):
    from gptui.core.errors import DamagedRun

    weights = run_copy.file("model.safetensors")
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(DamagedRun, match="model.safetensors"):
        TrainJob(workspace, "other", None, init_from=run_copy.id).run()
    assert new_runs(workspace, run_copy) == []


def test_fine_tune_settings_come_from_the_source_or_a_preset_with_the_source_shape(run_copy):
    source = fine_tune_source(run_copy)
    own = fine_tune_config(source)
    assert own == source.config
    lecture = preset_config("lecture")
    mixed = fine_tune_config(source, lecture, {"max_iters": "7"})
    assert all(getattr(mixed, k) == getattr(source.config, k) for k in KEPT_SETTINGS)
    assert mixed.lr == lecture.lr and mixed.dropout == lecture.dropout and mixed.max_iters == 7
    with pytest.raises(InputError, match="cannot change block_size"):
        fine_tune_config(source, lecture, {"block_size": "64"})


def test_config_json_of_the_fine_tune_is_valid_json_with_init_from(workspace, run_copy, other):
    finished = TrainJob(workspace, "other", None, init_from=run_copy.id, overrides=FROZEN).run()
    data = json.loads(RunStore(workspace).resolve(finished.run_id).file("config.json").read_text(encoding="utf-8"))
    assert data["init_from"] == run_copy.id
    assert RunStore(workspace).info(RunStore(workspace).resolve(finished.run_id)).damaged is None
