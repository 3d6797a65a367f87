"""The categories each setting carries in its one declaration (resumable, shape, tokenizer, export), checked
against what the code does with the setting: a resume takes it or refuses it, the model it builds changes or not,
the tokenizer it prepares changes or not, an export class constrains it or not."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gptui.core import events as ev
from gptui.core.config import KINDS, SETTINGS, SETTINGS_BY_NAME, Config, settings_in, validate
from gptui.core.data import TokenizerSpec
from gptui.core.errors import InputError
from gptui.core.export.classes import CLASSES, HfClass
from gptui.core.finetune import KEPT_SETTINGS, FineTuneSource, fine_tune_config
from gptui.core.model import GPT, ModelConfig
from gptui.core.runs import Run
from gptui.core.trainer import TrainJob

HUGE_CORPUS = 10**13  # bytes: past any tokenizer sample, so the sample's size is part of the cache key


def another_value(config: Config, name: str):
    """A value of setting `name` other than `config`'s that keeps `config` valid."""
    s = SETTINGS_BY_NAME[name]
    current = getattr(config, name)
    if s.type is bool:
        candidates = [not current]
    elif s.choices:
        candidates = [c for c in s.choices if c != current]
    elif s.type is str:
        candidates = [current + "x"]
    else:
        numbers = [2, 1, current * 2, current + 1, current - 1, s.min, s.max]
        candidates = [s.type(n) for n in numbers if n is not None]
    for value in candidates:
        if value != current and not validate(dataclasses.replace(config, **{name: value})):
            return value
    raise AssertionError(f"no other valid value of {name} found")


def test_every_category_is_declared_and_asked_for_by_name():
    assert all(isinstance(getattr(s, kind), bool) for s in SETTINGS for kind in KINDS)
    assert settings_in("shape", "tokenizer") == KEPT_SETTINGS
    with pytest.raises(ValueError, match="no setting category 'shapes'"):
        settings_in("shapes")


# --- resumable: a resume takes every resumable setting and refuses every other --------------------------------

RESUMED = {"max_iters": 22, "eval_interval": 1, "eval_iters": 1, "sample_interval": 1, "sample_tokens": 3,
           "patience": 5, "device": "auto", "dtype": "auto", "compile": True, "trackers": "tensorboard",
           "tracker_project": "resumed"}


def test_a_resume_runs_with_every_resumable_setting_changed(run_copy, workspace, corpus, monkeypatch):
    """`max_minutes` is changed by a second resume: a time budget refits max_iters (see test_budget_schedule)."""
    assert set(RESUMED) | {"max_minutes"} == set(settings_in("resumable"))
    monkeypatch.setattr(torch, "compile", lambda model, **kw: model)  # compiling takes long; taking it is the point
    events: list = []
    finished = TrainJob(workspace, None, None, resume=run_copy.id, overrides={k: str(v) for k, v in RESUMED.items()},
                        on_event=events.append).run()
    assert finished.status == "completed" and finished.step == 22
    (started,) = [e for e in events if isinstance(e, ev.Started)]
    assert {k: started.settings[k] for k in RESUMED} == RESUMED
    assert run_copy.file("tensorboard").is_dir()

    events.clear()
    TrainJob(workspace, None, None, resume=run_copy.id, overrides={"max_minutes": "0.01"},
             on_event=events.append).run()
    (started,) = [e for e in events if isinstance(e, ev.Started)]
    assert started.settings["max_minutes"] == 0.01


def test_a_resume_refuses_every_other_setting_by_name(run_copy, workspace, corpus):
    config = Config(**run_copy.read_config()["settings"])
    state = run_copy.read_state()
    fixed = [s.name for s in SETTINGS if not s.resumable]
    assert fixed
    for name in fixed:
        change = {name: str(another_value(config, name))}
        with pytest.raises(InputError, match=f"cannot change {name} when resuming"):
            TrainJob(workspace, None, None, resume=run_copy.id, overrides=change).run()
    assert run_copy.read_state() == state, "a refused resume leaves the run as it was"


# --- shape: the settings that change the model (its parameters or what it computes with them) -----------------


def changes_the_model(base: Config, changed: Config) -> bool:
    """Whether `changed` builds a model with other parameters, or one that computes other logits with the same."""
    a, b = (GPT(ModelConfig.from_config(c, vocab_size=40)).eval() for c in (base, changed))
    if [(n, p.shape) for n, p in a.named_parameters()] != [(n, p.shape) for n, p in b.named_parameters()]:
        return True
    try:
        b.load_state_dict(a.state_dict())
    except RuntimeError:  # a buffer of another shape (the rotary tables)
        return True
    x = torch.randint(0, 40, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return not torch.equal(a(x)[0], b(x)[0])


@pytest.mark.parametrize("name", [s.name for s in SETTINGS])
def test_shape_settings_are_exactly_those_that_change_the_model(name, tiny_config):
    changed = dataclasses.replace(tiny_config, **{name: another_value(tiny_config, name)})
    assert changes_the_model(tiny_config, changed) == SETTINGS_BY_NAME[name].shape


# --- tokenizer: the settings that change the tokens a corpus is cut into ------------------------------------


def test_tokenizer_settings_are_exactly_those_that_change_the_prepared_tokens():
    base = Config()  # byte-level BPE, where every tokenizer setting counts
    key = TokenizerSpec.from_config(base).key(HUGE_CORPUS)
    for s in SETTINGS:
        changed = dataclasses.replace(base, **{s.name: another_value(base, s.name)})
        assert (TokenizerSpec.from_config(changed).key(HUGE_CORPUS) != key) == s.tokenizer, s.name


# --- a fine-tune keeps the shape and tokenizer settings of the run it starts from ----------------------------


def test_a_fine_tune_refuses_exactly_the_shape_and_tokenizer_settings(tiny_config, tmp_path):
    source = FineTuneSource(Run(tmp_path / "source"), tiny_config, "{}", 20, 2.0)
    for s in SETTINGS:
        value = another_value(tiny_config, s.name)
        if s.shape or s.tokenizer:
            with pytest.raises(InputError, match=f"cannot change {s.name} when fine-tuning run source"):
                fine_tune_config(source, overrides={s.name: value})
        else:
            assert getattr(fine_tune_config(source, overrides={s.name: value}), s.name) == value


# --- export: the settings an export class constrains ----------------------------------------------------------


def test_export_settings_are_exactly_those_the_export_classes_constrain():
    constrained = {name for cls in CLASSES for name in cls.needs}
    assert constrained == set(settings_in("export"))


def test_an_export_class_cannot_constrain_an_undeclared_setting():
    with pytest.raises(ValueError, match="Odd constrains lr, not declared export"):
        HfClass("Odd", "odd", {"pos_embedding": ("rope",), "lr": (1e-3,)})
