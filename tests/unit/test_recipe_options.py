"""The modern-recipe options (rotary positions, RMSNorm, QK-norm, ReLU²/SwiGLU, untied head, logit soft-capping,
Muon): each trains, decodes exactly with the KV cache, counts its parameters and optimizer state exactly, resumes
bit for bit; the defaults are still the old model; old run folders still load."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from gptui.core import events as ev
from gptui.core.config import (
    ConfigError,
    apply_overrides,
    check,
    estimate_params,
    mlp_hidden,
    optimizer_state_elements,
    preset_config,
)
from gptui.core.generate import Decoder, generate_text, load_model
from gptui.core.model import GPT, CombinedOptimizer, ModelConfig, apply_rotary
from gptui.core.runs import RunStore
from gptui.core.sampling import SamplingSettings
from gptui.core.trainer import TrainJob

OPTIONS = [
    {},
    {"pos_embedding": "rope"},
    {"norm": "rmsnorm"},
    {"qk_norm": True},
    {"mlp": "relu2"},
    {"mlp": "swiglu"},
    {"tie_embeddings": False},
    {"logit_softcap": 15.0},
    {"pos_embedding": "rope", "norm": "rmsnorm", "qk_norm": True, "mlp": "swiglu", "tie_embeddings": False,
     "logit_softcap": 30.0},
    {"pos_embedding": "rope", "norm": "rmsnorm", "mlp": "relu2", "bias": True, "mlp_ratio": 3},
    {"embed_norm": True},
    {"pos_embedding": "rope", "norm": "rmsnorm", "qk_norm": True, "mlp": "relu2", "tie_embeddings": False,
     "logit_softcap": 15.0, "embed_norm": True},
]
IDS = ["defaults", "rope", "rmsnorm", "qk_norm", "relu2", "swiglu", "untied", "softcap", "all", "rope-bias",
       "embed_norm", "nanochat"]


def config_with(options: dict, **more):
    base = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, bias=False, mlp_ratio=4, tokenizer="char",
                max_iters=10, warmup_iters=2)
    return check(apply_overrides(preset_config("tiny-classic"), {**base, **options, **more}))


def model_for(config, vocab: int = 50) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig.from_config(config, vocab))


@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_forward_backward_and_exact_parameter_count(options):
    config = config_with(options)
    model = model_for(config).train()
    x = torch.randint(0, 50, (3, 16))
    logits, loss = model(x, x)
    assert logits.shape == (3, 16, 50) and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert estimate_params(config, 50) == model.num_params()


@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
@torch.no_grad()
def test_cached_decoding_equals_recompute_past_refills(options):
    model = model_for(config_with(options)).eval()
    block = model.config.block_size
    seq = torch.randint(0, 50, (2, 50), generator=torch.Generator().manual_seed(1))
    decoder = Decoder(model, batch=2, graphs=False)
    start = 0
    logits = decoder.prefill(seq[:, :3])
    for n in range(3, 50):
        torch.testing.assert_close(logits, model(seq[:, start:n])[0][:, -1], atol=1e-5, rtol=1e-5)
        if decoder.full:
            start = n + 1 - block // 2
            logits = decoder.prefill(seq[:, start : n + 1])
        else:
            logits = decoder.step(seq[:, n])


def test_defaults_are_the_old_model_bit_for_bit():
    """Parameters drawn from the same seed and the loss on a fixed batch, as the model before these options gave
    them (figures taken from that version of model.py)."""
    for bias, param_sum, loss in ((False, 79.07395379115746, 3.7028417587280273),
                                  (True, 78.68781479393533, 3.730424165725708)):
        torch.manual_seed(7)
        model = GPT(ModelConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, bias=bias))
        assert [n for n, _ in model.named_parameters()][:2] == ["transformer.wte.weight", "transformer.wpe.weight"]
        with torch.no_grad():
            assert float(sum(p.double().sum() for p in model.parameters())) == pytest.approx(param_sum, abs=1e-12)
            x = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(1))
            assert float(model(x, x)[1]) == pytest.approx(loss, abs=1e-5)


def test_rope_has_no_position_table_and_scores_depend_on_relative_position():
    model = model_for(config_with({"pos_embedding": "rope"}))
    assert "wpe" not in model.transformer
    assert not any("cos" in k or "sin" in k for k in model.state_dict()), "rotary tables are not weights"
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    rotary = model.rotary

    def score(m, n):
        return float((apply_rotary(q, *rotary.at(torch.tensor(m))) * apply_rotary(k, *rotary.at(torch.tensor(n)))).sum())

    assert score(5, 2) == pytest.approx(score(12, 9), abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)
    assert torch.allclose(apply_rotary(q, *rotary.at(torch.tensor(0))), q), "position 0 is not rotated"


def test_softcap_bounds_the_logits():
    x = torch.randint(0, 50, (2, 16))
    for cap, bounded in ((0.0, False), (2.0, True)):
        model = model_for(config_with({"logit_softcap": cap, "tie_embeddings": False}))
        with torch.no_grad():
            model.lm_head.weight.mul_(1000)
            logits = model(x, x)[0]
        assert (logits.abs().max() <= 2.0) == bounded


def test_embed_norm_gives_the_first_block_unit_rms_token_embeddings_and_adds_no_weight():
    plain, normed = config_with({}, pos_embedding="rope"), config_with({"embed_norm": True}, pos_embedding="rope")
    model = model_for(normed)
    assert model.num_params() == model_for(plain).num_params() == estimate_params(normed, 50)
    seen = []
    model.transformer.h[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model.transformer.wte.weight.mul_(7.0)  # far from unit RMS
        model(torch.randint(0, 50, (2, 16)))
    rms = seen[0].pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-3, rtol=0)


def test_untied_head_is_its_own_weight():
    model = model_for(config_with({"tie_embeddings": False}))
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()
    tied = model_for(config_with({}))
    assert tied.lm_head.weight is tied.transformer.wte.weight


def test_swiglu_width_is_two_thirds_rounded_up_to_8():
    assert mlp_hidden("swiglu", 4, 192) == 512
    assert mlp_hidden("swiglu", 1, 32) == 24
    assert mlp_hidden("swiglu", 4, 4) == 16
    assert mlp_hidden("gelu", 4, 192) == mlp_hidden("relu2", 4, 192) == 768
    model = model_for(config_with({"mlp": "swiglu"}))
    assert model.transformer.h[0].mlp.c_fc.weight.shape == (2 * mlp_hidden("swiglu", 4, 16), 16)


def test_rope_needs_an_even_head_size():
    with pytest.raises(ConfigError) as err:
        config_with({"pos_embedding": "rope", "n_embd": 18, "n_head": 2})
    assert "even head size" in err.value.problems["pos_embedding"]
    config_with({"pos_embedding": "learned", "n_embd": 18, "n_head": 2})


@pytest.mark.parametrize("key,value", [("mlp", "geglu"), ("norm", "batchnorm"), ("pos_embedding", "alibi"),
                                       ("optimizer", "sgd"), ("logit_softcap", "-1"), ("muon_lr", "0")])
def test_bad_option_values_are_refused(key, value):
    with pytest.raises(ConfigError) as err:
        check(apply_overrides(preset_config("tiny-classic"), {key: value}))
    assert key in err.value.problems


# --- Muon ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"tie_embeddings": False, "bias": True, "mlp": "swiglu"}])
def test_muon_takes_the_hidden_matrices_and_adamw_the_rest(options):
    config = config_with({**options, "optimizer": "muon"})
    model = model_for(config)
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), "cpu", "muon", 0.05, 0.9)
    assert isinstance(opt, CombinedOptimizer)
    adamw, muon = opt.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    in_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    assert not in_muon & in_adamw
    assert in_muon | in_adamw == {id(p) for p in model.parameters()}
    names = {id(p): n for n, p in model.named_parameters()}
    muon_names = {names[i] for i in in_muon}
    assert all(p.dim() == 2 for g in muon.param_groups for p in g["params"])
    assert not any(n.startswith(("transformer.wte", "transformer.wpe", "lm_head")) for n in muon_names)
    assert all(".attn." in n or ".mlp." in n for n in muon_names)
    assert muon.param_groups[0]["lr"] == 0.05 and muon.param_groups[0]["momentum"] == 0.9
    assert muon.param_groups[0]["lr_scale"] == pytest.approx(50.0)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_optimizer_state_estimate_is_exact(optimizer):
    config = config_with({"optimizer": optimizer, "mlp": "swiglu", "tie_embeddings": False})
    model = model_for(config)
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), "cpu", optimizer, 0.02, 0.95)
    x = torch.randint(0, 50, (2, 16))
    model(x, x)[1].backward()
    opt.step()
    kept = sum(v.numel() for state in opt.state.values() for k, v in state.items()
               if isinstance(v, torch.Tensor) and k != "step")
    assert kept == optimizer_state_elements(config, 50)


def test_muon_run_resumes_bit_for_bit(workspace, corpus, tiny_config):
    config = dataclasses.replace(tiny_config, optimizer="muon", pos_embedding="rope", norm="rmsnorm",
                                 mlp="relu2", qk_norm=True, sample_interval=5)
    whole = TrainJob(workspace, "tiny", config, name="whole").run()
    assert whole.status == "completed" and whole.step == 20
    job = None

    def stop_at_10(e):
        if isinstance(e, ev.Eval) and e.step >= 10:
            job.stop()

    job = TrainJob(workspace, "tiny", config, name="parted", on_event=stop_at_10)
    stopped = job.run()
    assert stopped.status == "stopped" and stopped.step == 10
    resumed = TrainJob(workspace, None, None, resume=stopped.run_id).run()
    assert resumed.status == "completed" and resumed.step == 20
    store = RunStore(workspace)
    a = torch.load(store.resolve(whole.run_id).file("checkpoint.pt"), weights_only=True)
    b = torch.load(store.resolve(stopped.run_id).file("checkpoint.pt"), weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    muon_a, muon_b = a["optimizer"]["optimizers"][1]["state"], b["optimizer"]["optimizers"][1]["state"]
    assert muon_a and all(torch.equal(muon_a[i]["momentum_buffer"], muon_b[i]["momentum_buffer"]) for i in muon_a)
    assert resumed.best_val_loss == whole.best_val_loss


def test_a_run_saved_before_these_options_still_loads_and_generates(trained_run, run_copy):
    config_file = run_copy.file("config.json")
    saved = json.loads(config_file.read_text())
    new_keys = {"pos_embedding", "norm", "qk_norm", "mlp", "tie_embeddings", "logit_softcap", "optimizer",
                "muon_lr", "muon_momentum"}
    assert new_keys <= saved["settings"].keys()
    saved["settings"] = {k: v for k, v in saved["settings"].items() if k not in new_keys}
    config_file.write_text(json.dumps(saved))
    old = load_model(run_copy, "cpu")
    assert old.model.config.pos_embedding == "learned" and old.model.config.tie_embeddings
    settings = SamplingSettings(max_new_tokens=20, seed=3)
    assert generate_text(old, "A", settings) == generate_text(load_model(trained_run, "cpu"), "A", settings)


def test_each_option_trains_and_generates_end_to_end(workspace, corpus, tiny_config):
    config = dataclasses.replace(tiny_config, pos_embedding="rope", norm="rmsnorm", qk_norm=True, mlp="swiglu",
                                 tie_embeddings=False, logit_softcap=20.0, optimizer="muon", max_iters=12,
                                 eval_interval=6, sample_interval=6)
    finished = TrainJob(workspace, "tiny", config).run()
    assert finished.status == "completed" and finished.best_val_loss is not None
    run = RunStore(workspace).resolve(finished.run_id)
    assert run.read_config()["settings"]["optimizer"] == "muon"
    assert run.read_config()["params"] == load_model(run, "cpu").model.num_params()
    assert len(generate_text(load_model(run, "cpu"), "a", SamplingSettings(max_new_tokens=15, seed=1))) > 0
