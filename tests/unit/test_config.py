"""Settings: declarations, parsing, every validation rule, presets, and the live estimates the form shows."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gptui.core.config import (
    PRESETS,
    SETTINGS,
    SETTINGS_BY_NAME,
    Config,
    ConfigError,
    apply_overrides,
    check,
    config_from_dict,
    config_to_dict,
    default_config,
    estimate_memory_bytes,
    estimate_params,
    parse_assignments,
    preset_config,
    validate,
)

PRODUCT_NAMES = (
    "n_layer n_head n_embd block_size dropout bias mlp_ratio tokenizer vocab_size split_pattern "
    "batch_size grad_accum lr min_lr warmup_iters weight_decay beta1 beta2 grad_clip "
    "max_iters eval_interval eval_iters sample_interval sample_tokens patience max_minutes "
    "device dtype compile seed"
).split()


def test_every_product_setting_is_declared_once():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    assert set(PRODUCT_NAMES) <= set(names)
    for s in SETTINGS:
        assert s.help and s.group
        assert isinstance(s.default, s.type) and not (s.type is int and isinstance(s.default, bool))
    assert set(config_to_dict(default_config())) == set(names)


def test_defaults_are_valid():
    assert validate(default_config()) == {}


# --- ranges ------------------------------------------------------------------------------------------------------


def _base() -> Config:
    """A config with room on every side, so one setting at a time can go out of range."""
    return dataclasses.replace(default_config(), max_iters=1000, warmup_iters=10)


RANGED = [s for s in SETTINGS if s.min is not None or s.max is not None]


def _just_outside(s, low: bool):
    if s.type is int:
        return int(s.min) - 1 if low else int(s.max) + 1
    if low:
        return s.min if s.min_exclusive else s.min - 1e-3
    return s.max * 1.5 if s.max else 1e-3


def _edge(s, low: bool):
    value = s.min if low else s.max
    if low and s.min_exclusive:
        value = s.min + 1e-6
    return int(value) if s.type is int else float(value)


@pytest.mark.parametrize("s", [s for s in RANGED if s.min is not None], ids=lambda s: s.name)
def test_below_min_refused(s):
    config = dataclasses.replace(_base(), **{s.name: _just_outside(s, low=True)})
    problems = validate(config)
    assert s.name in problems
    assert s.name in problems[s.name]
    with pytest.raises(ConfigError) as info:
        check(config)
    assert info.value.problems[s.name] == problems[s.name]


@pytest.mark.parametrize("s", [s for s in RANGED if s.max is not None], ids=lambda s: s.name)
def test_above_max_refused(s):
    config = dataclasses.replace(_base(), **{s.name: _just_outside(s, low=False)})
    problems = validate(config)
    assert s.name in problems
    assert "at most" in problems[s.name]


def _independent_edge_config(s, low: bool) -> Config:
    """The setting at its edge, with the settings tied to it by cross-field rules moved out of the way."""
    base = _base()
    value = _edge(s, low)
    extra = {}
    if s.name == "n_head":
        extra["n_embd"] = 128 * 4 if not low else base.n_embd
    if s.name == "n_embd":
        extra["n_head"] = 1 if low else 4
    if s.name == "lr":
        extra["min_lr"] = 0.0
    if s.name == "min_lr":
        extra["lr"] = 1.0
    if s.name == "warmup_iters":
        extra["max_iters"] = value + 1 if value + 1 <= 100_000_000 else value
    if s.name == "max_iters":
        extra["warmup_iters"] = 0
    return dataclasses.replace(base, **{s.name: value}, **extra)


@pytest.mark.parametrize("s", RANGED, ids=lambda s: s.name)
def test_edges_accepted(s):
    if s.min is not None:
        assert s.name not in validate(_independent_edge_config(s, low=True))
    if s.max is not None:
        assert s.name not in validate(_independent_edge_config(s, low=False))


@pytest.mark.parametrize("s", [s for s in SETTINGS if s.choices], ids=lambda s: s.name)
def test_choices(s):
    for choice in s.choices:
        assert getattr(apply_overrides(_base(), {s.name: choice}), s.name) == choice
    with pytest.raises(ConfigError) as info:
        apply_overrides(_base(), {s.name: "bogus"})
    message = info.value.problems[s.name]
    assert "bogus" in message and all(c in message for c in s.choices)
    # a bad value set directly on the dataclass is caught by validate too
    assert s.name in validate(dataclasses.replace(_base(), **{s.name: "bogus"}))


def test_lr_zero_refused_min_lr_zero_accepted():
    assert "lr" in validate(dataclasses.replace(_base(), lr=0.0, min_lr=0.0))
    assert "greater than 0" in validate(dataclasses.replace(_base(), lr=0.0, min_lr=0.0))["lr"]
    assert validate(dataclasses.replace(_base(), min_lr=0.0)) == {}


# --- parsing -----------------------------------------------------------------------------------------------------

INTS = [s.name for s in SETTINGS if s.type is int]
FLOATS = [s.name for s in SETTINGS if s.type is float]
BOOLS = [s.name for s in SETTINGS if s.type is bool]


@pytest.mark.parametrize("name", INTS)
@pytest.mark.parametrize("raw", ["abc", "1.5", "", "nan", "inf", "1e400x", "0x10", True])
def test_int_settings_refuse_non_integers(name, raw):
    with pytest.raises(ConfigError) as info:
        apply_overrides(_base(), {name: raw})
    assert name in info.value.problems
    assert "whole number" in info.value.problems[name]


@pytest.mark.parametrize("raw,value", [("2", 2), (" 3 ", 3), ("4.0", 4), ("1e3", 1000), ("1_000", 1000),
                                       (8, 8), (16.0, 16)])
def test_int_parsing_accepts_whole_numbers(raw, value):
    assert apply_overrides(_base(), {"max_iters": raw}).max_iters == value


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("raw", ["abc", "nan", "inf", "-inf", "NaN", "", float("nan"), float("inf"), False])
def test_float_settings_refuse_non_finite_and_text(name, raw):
    with pytest.raises(ConfigError) as info:
        apply_overrides(_base(), {name: raw})
    assert name in info.value.problems


@pytest.mark.parametrize("raw,value", [("3e-4", 3e-4), ("0.1", 0.1), (1, 1.0), (" 0.5 ", 0.5)])
def test_float_parsing(raw, value):
    config = apply_overrides(_base(), {"dropout": raw})
    assert config.dropout == value and isinstance(config.dropout, float)


@pytest.mark.parametrize("name", BOOLS)
def test_bool_parsing(name):
    for raw in ("true", "True", "yes", "on", "1", True):
        assert getattr(apply_overrides(_base(), {name: raw}), name) is True
    for raw in ("false", "FALSE", "no", "off", "0", False):
        assert getattr(apply_overrides(_base(), {name: raw}), name) is False
    for raw in ("maybe", "2", "", "tru"):
        with pytest.raises(ConfigError, match="true or false"):
            apply_overrides(_base(), {name: raw})


def test_wrong_types_set_directly_are_reported():
    config = dataclasses.replace(_base(), n_layer="4", dropout="x", bias=1, seed=True)
    problems = validate(config)
    assert {"n_layer", "dropout", "bias", "seed"} <= set(problems)
    assert "type" in problems["n_layer"]
    # an int where a float is expected is fine
    assert validate(dataclasses.replace(_base(), lr=1, min_lr=0)) == {}


def test_several_problems_reported_at_once():
    with pytest.raises(ConfigError) as info:
        apply_overrides(_base(), {"n_layer": "abc", "lr": "x", "nosuch": "1"})
    assert set(info.value.problems) == {"n_layer", "lr", "nosuch"}
    assert "n_layer" in str(info.value) and "nosuch" in str(info.value)


# --- cross-field rules -------------------------------------------------------------------------------------------


def test_n_embd_divisible_by_n_head():
    problems = validate(dataclasses.replace(_base(), n_embd=100, n_head=3))
    assert set(problems) == {"n_head"}
    assert "100" in problems["n_head"] and "3" in problems["n_head"] and "divisible" in problems["n_head"]
    assert validate(dataclasses.replace(_base(), n_embd=96, n_head=3)) == {}


def test_min_lr_not_above_lr():
    problems = validate(dataclasses.replace(_base(), lr=1e-4, min_lr=1e-3))
    assert set(problems) == {"min_lr"}
    assert validate(dataclasses.replace(_base(), lr=1e-3, min_lr=1e-3)) == {}


def test_warmup_below_max_iters():
    problems = validate(dataclasses.replace(_base(), warmup_iters=100, max_iters=100))
    assert set(problems) == {"warmup_iters"}
    assert "100" in problems["warmup_iters"]
    assert validate(dataclasses.replace(_base(), warmup_iters=99, max_iters=100)) == {}
    assert validate(dataclasses.replace(_base(), warmup_iters=0, max_iters=1)) == {}


def test_cross_field_rules_skip_fields_already_invalid():
    problems = validate(dataclasses.replace(_base(), n_head=0))
    assert set(problems) == {"n_head"}  # no ZeroDivisionError, one message


def test_unknown_key_suggests_the_closest_setting():
    with pytest.raises(ConfigError) as info:
        apply_overrides(_base(), {"n_layers": "2"})
    assert "unknown setting 'n_layers'" in info.value.problems["n_layers"]
    assert "did you mean n_layer?" in info.value.problems["n_layers"]
    with pytest.raises(ConfigError) as info:
        apply_overrides(_base(), {"learning_rate_xyz": "2"})
    assert "did you mean" not in info.value.problems["learning_rate_xyz"]


# --- presets -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_valid(name):
    assert validate(preset_config(name)) == {}
    for key in PRESETS[name]:
        assert key in SETTINGS_BY_NAME


def test_expected_presets_exist():
    assert {"tiny", "lecture", "seed"} <= set(PRESETS)


def test_lecture_preset_values():
    c = preset_config("lecture")
    assert (c.n_layer, c.n_head, c.n_embd) == (6, 6, 384)
    assert (c.block_size, c.batch_size, c.dropout) == (256, 64, 0.2)
    assert c.tokenizer == "char"
    assert c.lr == 3e-4


def test_seed_preset_values():
    c = preset_config("seed")
    assert (c.n_layer, c.n_head, c.n_embd) == (8, 8, 1024)
    assert (c.block_size, c.batch_size, c.dropout) == (128, 64, 0.2)
    assert (c.tokenizer, c.vocab_size) == ("bpe", 1024)
    assert (c.lr, c.min_lr, c.max_iters) == (3e-4, 5e-6, 5000)


def test_tiny_preset_is_small():
    c = preset_config("tiny")
    assert estimate_params(c) < 5_000_000


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        preset_config("huge")


def test_presets_do_not_share_state():
    a = preset_config("lecture")
    b = dataclasses.replace(a, n_layer=1)
    assert preset_config("lecture").n_layer == 6 and b.n_layer == 1


# --- assignments and config.json -------------------------------------------------------------------------------


def test_parse_assignments():
    assert parse_assignments(["lr=1e-3", " n_layer = 2 ", "stop=a=b", "name="]) == {
        "lr": "1e-3", "n_layer": "2", "stop": "a=b", "name": "",
    }
    assert parse_assignments([]) == {}
    for bad in (["lr"], ["=3"], [" =3"]):
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            parse_assignments(bad)


def test_apply_overrides_leaves_the_original_alone():
    base = _base()
    changed = apply_overrides(base, {"n_layer": "2"})
    assert changed.n_layer == 2 and base.n_layer != 2


@pytest.mark.parametrize("name", list(PRESETS))
def test_config_dict_round_trip(name):
    config = apply_overrides(preset_config(name), {"seed": "7", "compile": "true"})
    data = config_to_dict(config)
    assert config_from_dict(data) == config
    assert config_from_dict(json.loads(json.dumps(data))) == config


def test_config_from_dict_ignores_unknown_keys_and_validates():
    data = config_to_dict(_base()) | {"from_a_future_version": 1}
    assert config_from_dict(data) == _base()
    with pytest.raises(ConfigError):
        config_from_dict(config_to_dict(_base()) | {"n_head": 7})
    # missing keys take their defaults
    assert config_from_dict({"n_layer": 2}).n_layer == 2


# --- estimates ---------------------------------------------------------------------------------------------------

ESTIMATE_CASES = [
    dict(),
    dict(bias=True),
    dict(mlp_ratio=1),
    dict(mlp_ratio=3, bias=True),
    dict(n_layer=3, n_head=3, n_embd=48, block_size=17),
    dict(n_layer=2, n_head=1, n_embd=8, block_size=2, bias=True, mlp_ratio=16),
    dict(n_layer=1, n_head=4, n_embd=64, block_size=256, tokenizer="bpe", vocab_size=1000),
]


@pytest.mark.parametrize("overrides", ESTIMATE_CASES, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "base")
@pytest.mark.parametrize("vocab", [None, 65, 300])
def test_estimate_params_equals_real_model(overrides, vocab):
    from gptui.core.model import GPT, ModelConfig

    base = dict(n_layer=2, n_head=2, n_embd=32, block_size=64, tokenizer="char")
    config = check(dataclasses.replace(default_config(), **(base | overrides)))
    estimate = estimate_params(config, vocab)
    # a trained tokenizer has the end-of-text token after its vocabulary (or its characters)
    real_vocab = vocab or 1 + (config.vocab_size if config.tokenizer == "bpe" else 96)
    model = GPT(ModelConfig.from_config(config, real_vocab))
    assert estimate == model.num_params()


@pytest.mark.parametrize("name", ["tiny", "lecture"])
def test_estimate_params_of_presets(name):
    from gptui.core.model import GPT, ModelConfig

    config = preset_config(name)
    model = GPT(ModelConfig.from_config(config, 65))
    assert estimate_params(config, 65) == model.num_params()


def test_estimate_memory_positive_and_grows():
    base = _base()
    m1 = estimate_memory_bytes(base)
    assert m1 > 4 * 4 * estimate_params(base)  # at least weights, grads and two Adam moments in fp32
    m2 = estimate_memory_bytes(dataclasses.replace(base, batch_size=base.batch_size * 2))
    m3 = estimate_memory_bytes(dataclasses.replace(base, block_size=base.block_size * 2))
    m4 = estimate_memory_bytes(dataclasses.replace(base, n_layer=base.n_layer + 2))
    assert m2 > m1 and m3 > m1 and m4 > m1
    assert estimate_memory_bytes(base, 5000) > estimate_memory_bytes(base, 300)


@pytest.mark.parametrize("name", ["lr", "dropout", "max_minutes", "weight_decay"])
def test_validate_refuses_non_finite_floats_set_directly(name):
    config = dataclasses.replace(_base(), **{name: float("nan")})
    assert name in validate(config)


def test_huge_integer_for_a_float_setting_is_a_config_error():
    with pytest.raises(ConfigError):
        apply_overrides(_base(), {"lr": 10**400})
