"""gptui's benchmarks against the targets in PRODUCT.md.

    python bench/run.py [--quick | --smoke] [--only NAME ...] [--json FILE]

NAME is one of: train_throughput, kv_cache, generation, train_sample_overhead, tokenizer, prepare,
time_to_quality, tui_first_frame, ddp_scaling (each adds one or more rows). `--prepare-gb G` sets the size of
the corpus `prepare` builds (full run: 1 GB; PRODUCT.md asks for the 4 GB figure too).
Prints a table of rows (name, value, unit, target, ok); `--json` writes the same rows as a list of objects with
exactly those keys. `ok` is true/false for a row with a target and null for an informational row; `value` is
"n/a" when a row could not be measured (its reason is printed under the table).

Every comparison runs both sides in the same process, alternating, several times, and reports the median: the
machine is shared, so absolute numbers drift with load but ratios measured this way hold. Everything written
(workspaces, caches, the generated 100 MB corpus) lives in a temporary folder removed at exit.

`--smoke` runs every group on tiny shapes in seconds and only checks that each row has a value: it exits 1 when a
group fails or a row is n/a, whatever the targets say (tests/bench runs it, so a broken benchmark fails the suite).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))  # the reference implementations next to this file

GROUPS = ("train_throughput", "kv_cache", "generation", "train_sample_overhead", "tokenizer", "prepare",
          "time_to_quality", "tui_first_frame", "ddp_scaling")


@dataclass
class Plan:
    """How much work each group does; --quick keeps every shape and shrinks only repetitions and text."""

    quick: bool
    train_steps: int  # TrainJob steps; the first is a warm-up, each later one is paired with a reference step
    kv_reps: int
    kv_cap_seconds: float | None  # quick mode stops a generation pass after this long (the ratio then understates)
    tok_reps: int  # our tokenizer's repetitions on the full sample
    ref_bpe_chars: int | None  # slice of the sample the pure-Python BPE comparison uses (None: all of it)
    ref_bpe_reps: int
    big_corpus_mb: int  # 0: skip the 100 MB corpus
    time_to_quality: bool
    tui_reps: int
    peak_sizes: tuple[int, ...]
    # --smoke: tiny shapes, so every group runs in seconds; a group that ignores these runs its quick shape
    smoke: bool = False
    model: dict = field(default_factory=dict)  # overrides of every model trained or decoded (smoke: a tiny one)
    decode_tokens: int | None = None  # tokens per decoding pass (None: each group's own)
    tok_chars: int | None = None  # slice of the sample the tokenizer group trains and encodes (None: all of it)
    tok_vocab: int = 1024
    ttq_minutes: float = 4.0  # time_to_quality's budget per recipe
    ddp_steps: int | None = None  # ddp_scaling's steps per run (None: 40 quick, 150 full)
    prepare_mb: float = 16.0  # size of the corpus `gptui prepare` is timed on


QUICK = Plan(True, 4, 1, 75.0, 3, 50_000, 1, 0, False, 3, (2048, 4096))
FULL = Plan(False, 11, 3, None, 5, None, 1, 100, True, 5, (2048, 3072, 4096), prepare_mb=1000.0)
# one block 32 wide, 32 tokens of context, batch 4, char-level: each group's machinery, not its numbers
TINY_MODEL = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4, tokenizer="char")
SMOKE = Plan(True, 3, 1, 5.0, 1, 2_000, 1, 0, True, 1, (128,), smoke=True, model=TINY_MODEL, decode_tokens=8,
             tok_chars=20_000, tok_vocab=300, ttq_minutes=0.02, ddp_steps=3, prepare_mb=2.0)


@dataclass
class Row:
    name: str
    value: float | str
    unit: str
    target: str = ""
    ok: bool | None = None
    note: str = ""

    def as_json(self) -> dict:
        return {"name": self.name, "value": self.value, "unit": self.unit, "target": self.target, "ok": self.ok}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def sample_corpus() -> Path:
    from gptui.core.workspace import SAMPLE_CORPUS

    return ROOT / "gptui" / "data" / SAMPLE_CORPUS


# --- matrix-multiply peak -----------------------------------------------------------------------------------


def matmul_peak(dtype_name: str, sizes: tuple[int, ...], reps: int = 3) -> float:
    """Best FLOP/s of large square matmuls in `dtype_name`: the ceiling the MFU is measured against."""
    import torch

    dtype = getattr(torch, dtype_name)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        a @ b  # warm-up
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


# --- 1. training throughput ---------------------------------------------------------------------------------


def bench_train_throughput(plan: Plan, tmp: Path) -> list[Row]:
    """Our `TrainJob` at the lecture preset, with one step of the lecture's naive model run inside its step
    events: the two alternate step by step in one thread, on the same training split.

    Our step time is the wall time between two consecutive step events of the real trainer (its whole loop:
    sampler, lr, autocast forward, backward, AdamW, bookkeeping; each step emits an event because each takes
    longer than the trainer's 0.5 s report interval); the reference's is one call of the lecture's loop body.
    Our first step is the warm-up (it is not timed); the reference is warmed up on a small batch beforehand.
    """
    import numpy as np
    import torch
    from ref_lecture_gpt import LectureConfig, LectureTrainer

    from gptui.core import events as ev
    from gptui.core.config import apply_overrides, flops_per_token, preset_config
    from gptui.core.data import TokenizerSpec, prepare
    from gptui.core.device import pick_dtype
    from gptui.core.trainer import TrainJob
    from gptui.core.workspace import Workspace

    ws = Workspace(tmp / "throughput").ensure()
    n = plan.train_steps
    # eval_iters=1 and no samples keep the one evaluation at the end short; nothing else differs from the preset
    config = apply_overrides(preset_config("lecture"), {"max_iters": n, "eval_iters": 1, "sample_interval": 0,
                                                        "warmup_iters": 0, **plan.model})
    dtype = pick_dtype(config.dtype, "cpu")
    data = prepare(ws.corpus_path("tinyshakespeare"), TokenizerSpec.from_config(config), ws.cache)
    vocab = data.tokenizer.vocab_size
    ref = LectureTrainer(
        LectureConfig(vocab, config.block_size, config.n_embd, config.n_head, config.n_layer, config.dropout),
        torch.from_numpy(np.asarray(data.train, dtype=np.int64)),
        batch_size=config.batch_size, learning_rate=config.lr,
    )

    # warm the reference up (AdamW state, kernels) on a small batch, so every full-size step it times is warm;
    # our first step is the trainer's own warm-up and falls outside the timed intervals
    ref.batch_size = 8
    ref.step()
    ref.batch_size = config.batch_size
    peaks = [matmul_peak(dtype, plan.peak_sizes)]
    peak_fp32 = matmul_peak("float32", plan.peak_sizes[:1])

    event_in: list[float] = []  # when each step event reached us (end of our step)
    event_out: list[float] = []  # when we handed control back (start of our next step)
    ref_seconds: list[float] = []
    errors: list[str] = []

    def on_event(e) -> None:
        if not isinstance(e, ev.Step):
            return
        event_in.append(time.perf_counter())
        if e.step < n:  # one reference step before each of our steps 2..n
            try:
                t = time.perf_counter()
                ref.step()
                ref_seconds.append(time.perf_counter() - t)
            except Exception as exc:  # the trainer swallows listener errors; keep ours
                errors.append(f"{type(exc).__name__}: {exc}")
        log(f"  train_throughput: our step {e.step}/{n} done"
            + (f"; reference step {ref_seconds[-1]:.2f}s" if e.step < n and ref_seconds else ""))
        event_out.append(time.perf_counter())

    log(f"train_throughput: {n} steps of TrainJob(lecture, {dtype}) alternating with the lecture's model (fp32)")
    with report_every_step(plan.smoke):
        finished = TrainJob(ws, "tinyshakespeare", config, name="bench-throughput", on_event=on_event).run()
    peaks.append(matmul_peak(dtype, plan.peak_sizes))
    peak_fp32 = max(peak_fp32, matmul_peak("float32", plan.peak_sizes[:1]))
    if errors:
        raise RuntimeError(f"reference step failed: {errors[0]}")
    if finished.status != "completed" or len(event_in) != n:
        raise RuntimeError(f"TrainJob ended {finished.status} ({finished.reason}) after {len(event_in)} step events")

    ours = [event_in[i + 1] - event_out[i] for i in range(n - 1)]  # our steps 2..n
    theirs = ref_seconds  # the reference step run just before each of those
    tokens = config.batch_size * config.block_size
    ours_tps = tokens / median(ours)
    ref_tps = tokens / median(theirs)
    ratio = median([r / o for o, r in zip(ours, theirs, strict=True)])
    peak = max(peaks)
    fpt = flops_per_token(config, vocab)
    ref_params = sum(p.numel() for p in ref.model.parameters()) - ref.model.position_embedding_table.weight.numel()
    ref_fpt = 6 * ref_params + 12 * config.n_layer * config.block_size * config.n_embd
    pairs = f"{n - 1} alternating step pairs"
    return [
        Row("train_throughput", round(ours_tps), "tok/s", "", None,
            f"our TrainJob at the lecture preset ({dtype} autocast), median of {n - 1} steps "
            f"(batch {config.batch_size} x block {config.block_size})"),
        Row("train_throughput_ref", round(ref_tps), "tok/s", "", None,
            "lecture gpt.py naive model, fp32, AdamW lr 3e-4 (bench/ref_lecture_gpt.py)"),
        Row("train_throughput_ratio", round(ratio, 2), "x", ">= 1.5", ratio >= 1.5, f"median of {pairs}"),
        Row("matmul_peak", round(peak / 1e12, 3), f"TFLOP/s {dtype}", "", None,
            f"best square matmul {plan.peak_sizes}, measured before and after the training steps"),
        Row("train_mfu", round(100 * fpt * ours_tps / peak, 1), f"% of {dtype} peak", "", None,
            f"{fpt / 1e6:.1f} MFLOP/token (6N + 12LTd)"),
        Row("train_mfu_ref", round(100 * ref_fpt * ref_tps / peak_fp32, 1), "% of fp32 peak", "", None,
            f"fp32 peak {peak_fp32 / 1e12:.3f} TFLOP/s (best of 2048^3 matmuls before and after)"),
    ]


@contextlib.contextmanager
def report_every_step(on: bool):
    """A lecture-size step outlasts the trainer's report interval, so each one sends a step event; a smoke run's
    tiny steps do not, so there the interval is lifted for the run."""
    from gptui.core import trainer

    saved = trainer.REPORT_SECONDS
    trainer.REPORT_SECONDS = 0.0 if on else saved
    try:
        yield
    finally:
        trainer.REPORT_SECONDS = saved


# --- 2. KV cache ---------------------------------------------------------------------------------------------


def lecture_model(dtype_name: str = "float32", overrides: dict | None = None):
    """The lecture preset's model (char vocabulary of the sample, random weights) in `dtype_name`, prepared for
    decoding as `gptui generate` prepares a saved one (`prepare_for_inference`); `overrides` change its shape."""
    import torch

    from gptui.core.config import apply_overrides, preset_config
    from gptui.core.generate import prepare_for_inference
    from gptui.core.model import GPT, ModelConfig

    torch.manual_seed(0)
    config = apply_overrides(preset_config("lecture"), overrides or {})
    return prepare_for_inference(GPT(ModelConfig.from_config(config, 65)), "cpu", dtype_name)


def lockstep(generators: dict, n: int, cap: float | None = None) -> tuple[dict, int]:
    """Advance each generator one item at a time in turn (the order rotates every round) and add up each one's
    time, so load on the shared machine falls on all alike; stop after `n` rounds or `cap` seconds."""
    seconds = dict.fromkeys(generators, 0.0)
    keys = list(generators)
    start = time.perf_counter()
    for i in range(n):
        if cap is not None and time.perf_counter() - start > cap:
            return seconds, i
        for key in keys[i % len(keys):] + keys[: i % len(keys)]:
            t = time.perf_counter()
            next(generators[key])
            seconds[key] += time.perf_counter() - t
    return seconds, n


def bench_kv_cache(plan: Plan, tmp: Path) -> list[Row]:
    """500 tokens from a lecture-size model (random weights), with and without the KV cache, in lockstep (token by
    token, alternating which goes first). The target row compares float32 with float32 (as the target was set);
    a second row does the same at the precision `gptui generate` picks here (--dtype auto), where it differs. Each
    pass gives one ratio of total times; a row is the median over passes."""
    import torch

    from gptui.core.device import pick_inference_dtype
    from gptui.core.generate import sample_ids

    n_tokens = plan.decode_tokens or 500
    auto = pick_inference_dtype("auto", "cpu")
    rows: list[Row] = []
    for dtype in dict.fromkeys(("float32", auto)):
        model = lecture_model(dtype, plan.model)

        def gens(model=model):
            return {c: sample_ids(model, [0], n_tokens, 1.0, 0, 1.0, torch.Generator().manual_seed(1), c)
                    for c in (True, False)}

        lockstep(gens(), min(20, n_tokens))  # warm-up
        log(f"kv_cache: {plan.kv_reps} pass(es) of {n_tokens} tokens with and without the cache in lockstep, "
            f"{dtype}, block {model.config.block_size}")
        cached, full, counts = [], [], []
        for rep in range(plan.kv_reps):
            s, done = lockstep(gens(), n_tokens, plan.kv_cap_seconds)
            cached.append(s[True] / done)
            full.append(s[False] / done)
            counts.append(done)
            log(f"  kv_cache {dtype}: pass {rep + 1}: {done} tokens, cache {s[True]:.2f}s, no cache {s[False]:.2f}s")
        ratio = median([f / c for c, f in zip(cached, full, strict=True)])
        cut = ""
        if min(counts) < n_tokens:
            cut = (f"; quick mode's {plan.kv_cap_seconds:g}s cap stopped a pass at {min(counts)} tokens: the ratio "
                   "over the first tokens (shorter contexts) understates the 500-token one")
        what = (f"{n_tokens} tokens, block {model.config.block_size}, lecture-size model ({dtype}, random weights), "
                f"median of {plan.kv_reps} lockstep pass(es), {torch.get_num_threads()} torch threads{cut}")
        if dtype == "float32":
            rows += [
                Row("kv_cache", round(ratio, 2), "x", ">= 10", ratio >= 10, what),
                Row("kv_cache_tok_s", round(1 / median(cached), 1), "tok/s", "", None, "with the cache, float32"),
                Row("kv_cache_nocache_tok_s", round(1 / median(full), 1), "tok/s", "", None,
                    "recomputing the whole context per token, float32"),
            ]
        else:
            rows += [
                Row(f"kv_cache_{dtype}", round(ratio, 2), "x", "", None, f"{what}; --dtype auto = {dtype}"),
                Row(f"kv_cache_tok_s_{dtype}", round(1 / median(cached), 1), "tok/s", "", None,
                    f"with the cache, {dtype}"),
            ]
    return rows


# --- 2b. generation speed: precision and batch -------------------------------------------------------------


def bench_generation(plan: Plan, tmp: Path) -> list[Row]:
    """Decoding speed of the lecture model with the KV cache: bfloat16 against float32 weights (where this CPU has
    native bf16), and 8 samples in one batch against 1, each pair in lockstep."""
    import torch

    from gptui.core.device import cpu_has_bf16, pick_inference_dtype
    from gptui.core.generate import sample_batch

    n_tokens = plan.decode_tokens or (200 if plan.quick else 500)
    rows: list[Row] = []

    def decode(model, batch: int, seed: int = 1):
        return sample_batch(model, [0], n_tokens, 1.0, 0, 1.0, torch.Generator().manual_seed(seed),
                            num_samples=batch)

    if cpu_has_bf16():
        models = {d: lecture_model(d, plan.model) for d in ("float32", "bfloat16")}
        lockstep({d: decode(m, 1) for d, m in models.items()}, min(20, n_tokens))
        log(f"gen_tok_s: {n_tokens} tokens, float32 and bfloat16 weights in lockstep")
        s, done = lockstep({d: decode(m, 1) for d, m in models.items()}, n_tokens)
        fp32, bf16 = done / s["float32"], done / s["bfloat16"]
        rows += [
            Row("gen_tok_s_fp32", round(fp32, 1), "tok/s", "", None,
                f"lecture model, KV cache, batch 1, {done} tokens from a 1-token prompt"),
            Row("gen_tok_s_bf16", round(bf16, 1), "tok/s", "", None, "the same, weights cast once to bfloat16"),
            Row("gen_bf16_speedup", round(bf16 / fp32, 2), "x", "> 1", bf16 > fp32,
                "bfloat16 against float32 tokens/s, same run"),
        ]
    else:
        rows.append(Row("gen_tok_s_bf16", "n/a", "tok/s", "", None, "this CPU has no native bfloat16"))

    dtype = pick_inference_dtype("auto", "cpu")
    model = lecture_model(dtype, plan.model)
    lockstep({1: decode(model, 1), 8: decode(model, 8)}, min(10, n_tokens))
    log(f"gen_batch: {n_tokens} steps of 1 and of 8 samples in lockstep ({dtype})")
    s, done = lockstep({1: decode(model, 1), 8: decode(model, 8)}, n_tokens)
    one, eight = done / s[1], 8 * done / s[8]
    rows += [
        Row("gen_batch", round(eight / one, 2), "x", "", None,
            f"tokens/s of 8 samples in one batch ({eight:,.0f}) against 1 ({one:,.0f}), lecture model, {dtype}"),
    ]
    rows.append(probabilities_cost(model, tmp, n_tokens, 3 if plan.quick else 5))
    return rows


def probabilities_cost(model, tmp: Path, n_tokens: int, reps: int) -> Row:
    """The Generate tab's probabilities toggle, as the tab does it: a reply streamed through the recording
    decoder and then scored (its prompt in one pass, its tokens from the logits they were sampled from), against
    the same reply streamed with the toggle off; pairs alternate which goes first."""
    from gptui.core.generate import LoadedModel, stream_text
    from gptui.core.inspect import recording, score_exchange
    from gptui.core.runs import Run
    from gptui.core.sampling import SamplingSettings
    from gptui.core.tokenizer import CharTokenizer

    tok = CharTokenizer([chr(33 + i) for i in range(model.config.vocab_size)])
    loaded = LoadedModel(Run(tmp), model, tok, "cpu", str(model.dtype).removeprefix("torch."))
    settings = SamplingSettings(max_new_tokens=n_tokens, temperature=1.0, seed=1)
    prompt = "ABCDEFGH"
    off: list[float] = []
    on: list[float] = []
    for rep in range(reps + 1):  # the first pair warms up
        for scored in ((False, True) if rep % 2 else (True, False)):
            t = time.perf_counter()
            if scored:
                with recording(loaded) as recorder:
                    reply = "".join(stream_text(loaded, prompt, settings))
                score_exchange(model, tok, "", prompt, reply, 8, recorder)
            else:
                "".join(stream_text(loaded, prompt, settings))
            if rep:
                (on if scored else off).append(time.perf_counter() - t)
    plain, shaded = n_tokens / median(off), n_tokens / median(on)
    # each pair's own ratio, then their median: a machine that speeds up or slows down between pairs (this one
    # does) moves both halves of a pair, not the ratio
    cost = 100 * (1 - median([a / b for a, b in zip(off, on, strict=True)]))
    return Row("gen_probs_cost", round(cost, 1), "% tok/s", "< 10", cost < 10,
               f"{n_tokens} tokens streamed and scored ({shaded:,.0f} tok/s) against streamed alone "
               f"({plain:,.0f} tok/s), lecture model ({loaded.dtype}), median of {reps} pairs' ratios")


def bench_train_sample_overhead(plan: Plan, tmp: Path) -> list[Row]:
    """The tiny preset trained on the sample corpus with its own sampling settings; the wall time its samples took
    (as the trainer's Sample events report it) against the whole run's. Quick mode trains up to the first sample,
    the full run the preset's max_iters."""
    from gptui.core import events as ev
    from gptui.core.config import apply_overrides, preset_config
    from gptui.core.trainer import TrainJob
    from gptui.core.workspace import Workspace

    config = preset_config("tiny")
    if plan.smoke:
        config = apply_overrides(config, {**plan.model, "max_iters": 4, "warmup_iters": 1, "sample_interval": 4,
                                          "eval_iters": 1, "sample_tokens": 8})
    elif plan.quick:
        config = apply_overrides(config, {"max_iters": config.sample_interval})
    spent: list[float] = []
    ws = Workspace(tmp / "samples").ensure()
    log(f"train_sample_overhead: tiny preset, {config.max_iters} steps, a sample every {config.sample_interval}")
    t = time.perf_counter()
    finished = TrainJob(ws, "tinyshakespeare", config, name="bench-samples",
                        on_event=lambda e: spent.append(e.seconds) if isinstance(e, ev.Sample) else None).run()
    total = time.perf_counter() - t
    if finished.status != "completed" or not spent:
        raise RuntimeError(f"run ended {finished.status} ({finished.reason}) with {len(spent)} samples")
    share = 100 * sum(spent) / total
    return [
        Row("train_sample_overhead", round(share, 2), "% of run", "< 5", share < 5,
            f"{len(spent)} sample(s) of {config.sample_tokens} tokens took {sum(spent):.2f}s of a "
            f"{total:.0f}s tiny run ({config.max_iters} steps, preset defaults otherwise)"),
    ]


# --- 3. tokenizer --------------------------------------------------------------------------------------------


def bench_tokenizer(plan: Plan, tmp: Path) -> list[Row]:
    from ref_minbpe import PATTERN_SOURCE, RegexTokenizer

    from gptui.core.data import TokenizerSpec, prepare
    from gptui.core.encode import fast_encoder, train_tokenizer_from_documents

    vocab = plan.tok_vocab
    corpus = sample_corpus()
    text = corpus.read_text(encoding="utf-8")
    if plan.tok_chars is not None:
        corpus = tmp / "sample-slice.txt"
        text = text[: plan.tok_chars]
        corpus.parent.mkdir(parents=True, exist_ok=True)
        corpus.write_text(text, encoding="utf-8")

    def ours(s: str) -> float:  # what preparing does: train on the text, encode it with the fast encoder
        t = time.perf_counter()
        tok = train_tokenizer_from_documents(lambda: [s], "bpe", vocab, "gpt4", 256)
        fast_encoder(tok).encode(s)
        return time.perf_counter() - t

    def reference(s: str) -> float:
        t = time.perf_counter()
        tok = RegexTokenizer()
        tok.train(s, vocab)
        tok.encode_ordinary(s)
        return time.perf_counter() - t

    rows: list[Row] = []
    log(f"tokenizer: BPE {vocab} train + encode of the sample, {plan.tok_reps} times")
    ours(text[:10_000])  # warm-up (library load)
    full_times = [ours(text) for _ in range(plan.tok_reps)]
    secs = median(full_times)
    rows.append(Row("tokenizer_seconds", round(secs, 3), "s", "< 2", secs < 2,
                    f"train + encode, {len(text.encode()) / 1e6:.2f} MB sample, vocab {vocab}, "
                    f"median of {plan.tok_reps}"))

    piece = text if plan.ref_bpe_chars is None else text[: plan.ref_bpe_chars]
    where = "whole sample" if plan.ref_bpe_chars is None else f"first {len(piece.encode()) // 1000} KB"
    ours_t, ref_t = [ours(piece)], []
    for rep in range(plan.ref_bpe_reps):
        log(f"  tokenizer: pure-Python BPE on the {where} ({rep + 1}/{plan.ref_bpe_reps}, takes a while)")
        ref_t.append(reference(piece))
        ours_t.append(ours(piece))
        log(f"  tokenizer: pure-Python {ref_t[-1]:.1f}s, ours {ours_t[-1]:.3f}s")
    ratio = median(ref_t) / median(ours_t)
    rows.append(Row("tokenizer_ratio", round(ratio, 1), f"x vs pure-Python BPE ({where})", ">= 50", ratio >= 50,
                    f"minbpe-style RegexTokenizer ({PATTERN_SOURCE}): median {median(ref_t):.1f}s of "
                    f"{len(ref_t)}, ours median {median(ours_t):.3f}s of {len(ours_t)}, alternating"))

    cache = tmp / "tokcache"
    cold_t = time.perf_counter()
    first = prepare(corpus, TokenizerSpec("bpe", vocab, "gpt4"), cache)
    cold = time.perf_counter() - cold_t
    hits = []
    for _ in range(3):
        t = time.perf_counter()
        again = prepare(corpus, TokenizerSpec("bpe", vocab, "gpt4"), cache)
        hits.append(time.perf_counter() - t)
        if not again.cached or first.cached:
            raise RuntimeError("the second prepare() did not come from the cache")
    hit = median(hits)
    rows.append(Row("tokenizer_cache_hit", round(hit, 4), "s", "< 0.5", hit < 0.5,
                    f"prepare() again with the same cache dir, median of 3 (cold prepare {cold:.2f}s)"))

    if plan.big_corpus_mb:
        big = tmp / "big" / "generated.txt"
        t = time.perf_counter()
        make_corpus(text, big, plan.big_corpus_mb * 1_000_000)
        log(f"tokenizer: generated {big.stat().st_size / 1e6:.0f} MB corpus in {time.perf_counter() - t:.1f}s; "
            "preparing it (cold cache)")
        t = time.perf_counter()
        d = prepare(big, TokenizerSpec("bpe", vocab, "gpt4"), tmp / "bigcache")
        secs = time.perf_counter() - t
        rows.append(Row("tokenizer_100mb", round(secs, 1), "s", "< 90", secs < 90,
                        f"prepare() of a generated {big.stat().st_size / 1e6:.0f} MB corpus, cold cache: "
                        f"train {d.seconds.get('train_tokenizer', 0):.1f}s, encode {d.seconds.get('encode', 0):.1f}s, "
                        f"{len(d.tokens):,} tokens"))
        big.unlink()
    return rows


def make_corpus(text: str, path: Path, size: int, seed: int = 0) -> None:
    """A deterministic Shakespeare-like corpus of about `size` bytes: runs of 1-12 words copied from random
    places of the sample, so lines and word sequences vary but the vocabulary and style stay."""
    import re

    import numpy as np

    words = np.array(re.findall(r"\S+\s*", text), dtype=object)
    rng = np.random.Generator(np.random.PCG64(seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size:
            runs = 100_000
            lengths = rng.integers(1, 13, size=runs)
            starts = rng.integers(0, len(words) - 13, size=runs)
            offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            chunk = "".join(words[np.repeat(starts, lengths) + offsets].tolist())
            chunk = chunk[: max(0, size - written)] if written + len(chunk) > size else chunk
            f.write(chunk)
            written += len(chunk.encode("utf-8"))


# --- 3b. preparing a large corpus ----------------------------------------------------------------------------


def bench_prepare(plan: Plan, tmp: Path) -> list[Row]:
    """`gptui prepare` (BPE 2048, every core) as a child process on a folder corpus of real text the bench
    builds, cold cache: throughput is the corpus's bytes over the command's wall time (interpreter start to exit:
    hashing the folder, the tokenizer's sample and training, encoding); peak memory is the most that process and
    its worker processes held together (a wrapper process samples them: see PEAK_RSS_WRAPPER)."""
    home = tmp / "prepare"
    corpus = home / "inputs" / "code"
    size = int(plan.prepare_mb * 1e6)
    t = time.perf_counter()
    files = make_code_corpus(corpus, size)
    log(f"prepare: built a {size / 1e6:,.0f} MB folder of {files:,} files (Python's standard library again and "
        f"again, each copy under its own header) in {time.perf_counter() - t:.0f}s; `gptui prepare`, cold cache")
    command = [sys.executable, "-m", "gptui", "--home", str(home), "prepare", "--input", "code", "--vocab-size",
               "2048"]
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS_WRAPPER, *command], capture_output=True, text=True)
    secs = time.perf_counter() - t
    lines = proc.stderr.strip().splitlines() or ["?"]
    if proc.returncode != 0 or not lines[-1].startswith("peak_rss_bytes "):
        raise RuntimeError(f"gptui prepare: {lines[-2 if len(lines) > 1 else -1]}")
    peak_mb = int(lines[-1].split()[1]) / (1 << 20)
    out = proc.stdout
    mb_s = size / 1e6 / secs
    shown = f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"
    check = not plan.quick  # the quick run's corpus is too small for the targets to mean anything
    summary = (out.strip().splitlines() or [""])[-1]
    return [
        Row("prepare_mb_s", round(mb_s, 1), "MB/s", ">= 12" if check else "", mb_s >= 12 if check else None,
            f"`gptui prepare --vocab-size 2048` of a {shown} corpus of Python sources, cold cache, "
            f"{os.cpu_count()} cores: {secs:.1f}s ({summary})"),
        Row("prepare_peak_rss_mb", round(peak_mb), "MB", "<= 1024" if check else "",
            peak_mb <= 1024 if check else None,
            f"the same command's peak resident memory with its worker processes' ({shown} corpus)"),
    ]


# runs the command given as its arguments and prints its peak resident memory in bytes: the largest sum over the
# command and its worker processes, sampled every 50 ms, or the largest single process's own peak if that is more
PEAK_RSS_WRAPPER = """
import resource, subprocess, sys, time
import psutil
proc = subprocess.Popen(sys.argv[1:])
root, peak = psutil.Process(proc.pid), 0
while proc.poll() is None:
    total = 0
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        tree = []
    for member in tree:
        try:
            total += member.memory_info().rss
        except psutil.Error:  # ended between the listing and the reading
            pass
    peak = max(peak, total)
    time.sleep(0.05)
own = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # bytes on macOS, KB elsewhere
print("peak_rss_bytes", max(peak, own if sys.platform == "darwin" else own * 1024), file=sys.stderr)
sys.exit(proc.returncode)
"""


def make_code_corpus(folder: Path, size: int) -> int:
    """A folder of about `size` bytes of real text nobody here wrote: the standard library's Python sources in
    sorted order, copied again and again into copy0000/, copy0001/, ..., each file under a header naming its copy
    and path (so no two documents are equal). Returns the number of files written."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)  # 31 MB in 3.11
    texts = []
    for f in files:
        try:
            texts.append((str(f.relative_to(root)), f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue
    written, copy, count = 0, 0, 0
    while written < size:
        for name, text in texts:
            target = folder / f"copy{copy:04d}" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            data = f"# ---- copy {copy} of {name} ----\n{text}".encode()
            target.write_bytes(data)
            written += len(data)
            count += 1
            if written >= size:
                break
        copy += 1
    return count


# --- 4. time to quality ------------------------------------------------------------------------------------


def nanogpt_recipe(max_minutes: float):
    """nanoGPT's README laptop command for shakespeare_char (config/train_shakespeare_char.py plus
    `--device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4
    --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`) as a gptui config; the values
    not on the command line come from that config file and train.py's defaults (bias False, AdamW weight decay
    0.1, beta2 0.99, warm-up 100, min_lr 1e-4, grad clip 1.0, eval every 250 steps). nanoGPT does not sample
    while training."""
    from gptui.core.config import Config, check

    return check(Config(
        n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False, mlp_ratio=4, tokenizer="char",
        batch_size=12, grad_accum=1, lr=1e-3, min_lr=1e-4, warmup_iters=100, weight_decay=0.1, beta1=0.9,
        beta2=0.99, grad_clip=1.0, max_iters=2000, eval_interval=250, eval_iters=20, sample_interval=0,
        max_minutes=max_minutes,
    ))


def bench_time_to_quality(plan: Plan, tmp: Path) -> list[Row]:
    """The tiny preset, the tiny-classic preset (the GPT-2 recipe tiny was before) and nanoGPT's laptop recipe,
    each trained by our TrainJob with a 4-minute budget, one after the other on the sample corpus; compares the
    best validation bits per byte each reports."""
    from gptui.core import events as ev
    from gptui.core.config import apply_overrides, preset_config
    from gptui.core.trainer import TrainJob
    from gptui.core.workspace import Workspace

    budget = plan.ttq_minutes
    ws = Workspace(tmp / "ttq").ensure()
    results = {}
    small = {**plan.model, "eval_iters": 2} if plan.smoke else {}
    for label, config in (
        ("tiny", apply_overrides(preset_config("tiny"), {"max_minutes": budget, **small})),
        ("tiny-classic", apply_overrides(preset_config("tiny-classic"), {"max_minutes": budget, **small})),
        ("nanogpt", apply_overrides(nanogpt_recipe(budget), small)),
    ):
        evals: list[ev.Eval] = []

        def on_event(e, evals=evals, label=label) -> None:
            if isinstance(e, ev.Eval):
                evals.append(e)
                log(f"  time_to_quality {label}: step {e.step} at {e.elapsed:.0f}s, val bpb {e.val_bpb:.4f}")

        log(f"time_to_quality: training {label} for up to {budget:g} minutes")
        finished = TrainJob(ws, "tinyshakespeare", config, name=f"bench-{label}", on_event=on_event).run()
        if finished.best_val_bpb is None:
            raise RuntimeError(f"{label}: no evaluation finished ({finished.status}: {finished.reason})")
        results[label] = (finished, evals, config)

    def describe(label: str) -> str:
        f, evals, c = results[label]
        last_eval = evals[-1].step if evals else 0
        shape = (f"{c.n_layer}x{c.n_head}x{c.n_embd}, block {c.block_size}, batch {c.batch_size}, {c.tokenizer}"
                 + (f" {c.vocab_size}" if c.tokenizer == "bpe" else "") + f", {c.optimizer}, lr {c.lr:g}")
        return (f"{shape}; {f.step} steps in {f.duration:.0f}s ({f.reason}); last evaluation at step {last_eval}; "
                f"{f.tokens_per_sec:,.0f} tok/s")

    ours, classic, theirs = (results[k][0].best_val_bpb for k in ("tiny", "tiny-classic", "nanogpt"))
    return [
        Row("time_to_quality", round(ours, 4), "val bits/byte", "<= 2.05", ours <= 2.05, f"tiny = {describe('tiny')}"),
        Row("time_to_quality_classic", round(classic, 4), "val bits/byte", "", None,
            f"tiny-classic = {describe('tiny-classic')}"),
        Row("time_to_quality_nanogpt", round(theirs, 4), "val bits/byte", f"> tiny ({ours:.4f})", theirs > ours,
            f"nanoGPT laptop recipe on our engine; {describe('nanogpt')}"),
    ]


# --- 5. TUI first frame --------------------------------------------------------------------------------------

FIRST_FRAME_SCRIPT = r"""
import asyncio, inspect, json, sys, time
from pathlib import Path
home = Path(sys.argv[1])
import gptui.tui.app as m
from textual.screen import Screen
first = {}
refresh = Screen._compositor_refresh
def timed_refresh(self):
    # the first frame: the first time the screen is drawn once the app's first screen is mounted
    result = refresh(self)
    if "t" not in first and getattr(self.app, "_dom_ready", True) and self is self.app.screen:
        first.update(t=time.monotonic(), widgets=len(list(self.walk_children())))
    return result
Screen._compositor_refresh = timed_refresh
if hasattr(m, "make_app"):
    app = m.make_app(home)
else:
    from textual.app import App
    from gptui.core.workspace import Workspace
    cls = next(c for c in vars(m).values() if inspect.isclass(c) and issubclass(c, App) and c is not App)
    app = cls(Workspace(home))
async def main():
    async with app.run_test(size=(120, 34)) as pilot:
        await pilot.pause()
        t = time.monotonic()
        torch_loaded = "torch" in sys.modules
        screen = type(app.screen).__name__
        widgets = len(list(app.screen.walk_children()))
    print(json.dumps({"first_frame": first.get("t", t), "first_widgets": first.get("widgets", widgets),
                      "settled": t, "torch": torch_loaded, "screen": screen, "widgets": widgets}))
asyncio.run(main())
"""


def bench_tui_first_frame(plan: Plan, tmp: Path) -> list[Row]:
    """Launch a fresh interpreter that builds the app over a small workspace and runs it headless; time from
    just before the process starts until its first frame: the first time the screen is drawn once the first
    screen is composed and mounted. Also (informational) until every pending message is processed (run_test's
    ready point plus one pilot.pause()), which includes the hidden tabs mounted after the first frame."""
    import importlib.util

    name, target = "tui_first_frame", "< 1"
    if importlib.util.find_spec("gptui.tui.app") is None:
        return [Row(name, "n/a", "s", target, False, "gptui/tui/app.py does not exist yet")]
    home = tmp / "tui"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TEXTUAL_ANIMATIONS": "none"}
    times, settled, infos = [], [], []
    warm_up = 0 if plan.smoke else 1  # a smoke run checks that the app starts, not how fast
    log(f"tui_first_frame: {plan.tui_reps} launches (+{warm_up} warm-up)")
    for rep in range(plan.tui_reps + warm_up):
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", FIRST_FRAME_SCRIPT, str(home)], capture_output=True,
                              text=True, timeout=120, env=env, cwd=tmp)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
            return [Row(name, "n/a", "s", target, False, f"the app did not start headless: {tail}")]
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        if rep >= warm_up:  # the first launch warms the disk cache and compiles bytecode
            times.append(info["first_frame"] - t0)
            settled.append(info["settled"] - t0)
            infos.append(info)
    secs = median(times)
    torch_loaded = any(i["torch"] for i in infos)
    return [
        Row(name, round(secs, 3), "s", target, secs < 1,
            f"median of {len(times)} launches of `python -c` (interpreter start, imports, compose, mount, first "
            f"draw); screen {infos[0]['screen']} with {infos[0]['first_widgets']} widgets"),
        Row("tui_settled", round(median(settled), 3), "s", "", None,
            f"the same launches until every pending message is processed: the hidden tabs, mounted after the "
            f"first frame ({infos[0]['widgets']} widgets then)"),
        Row("tui_torch_at_first_frame", "yes" if torch_loaded else "no", "torch imported", "no", not torch_loaded,
            "PRODUCT.md: torch is imported lazily, after the first frame (checked once every tab is mounted)"),
    ]


# --- 6. several processes (torchrun, DDP) -----------------------------------------------------------------------


def bench_ddp_scaling(plan: Plan, tmp: Path) -> list[Row]:
    """Training tokens per second of `gptui train --nproc-per-node 1` against `--nproc-per-node 2` (torchrun, gloo
    on the CPU, DDP), each a fresh command with the same small char-level model, per-rank batch and threads per
    rank (the cores shared out over two ranks), so the ratio is what the second rank adds. Tokens/s is the whole
    job's (the ranks' sum), from the command's JSON summary. Informational: on 2 cores the second rank takes the
    core the first one leaves, and both pay the gradient all-reduce each step."""
    cores = os.cpu_count() or 1
    steps = plan.ddp_steps or (40 if plan.quick else 150)
    home = tmp / "ddp"
    (home / "inputs").mkdir(parents=True, exist_ok=True)
    (home / "inputs" / "sample.txt").write_bytes(sample_corpus().read_bytes())
    settings = {"n_layer": 2, "n_head": 4, "n_embd": 128, "block_size": 128, "batch_size": 16, "tokenizer": "char",
                "max_iters": steps, "warmup_iters": min(5, steps - 1), "eval_interval": steps, "eval_iters": 2,
                "sample_interval": 0, "device": "cpu", "dtype": "float32"} | plan.model
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    base = [sys.executable, "-m", "gptui", "--home", str(home)]
    if not plan.smoke:  # prepared once, so neither run times the encoding (a smoke run saves the process)
        subprocess.run(base + ["prepare", "--input", "sample", "--tokenizer", "char"], check=True,
                       capture_output=True)
    results = {}
    threads = max(1, cores // 2)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for procs in (1, 2):
        log(f"ddp_scaling: {steps} steps on {procs} rank{'s' if procs > 1 else ''}")
        proc = subprocess.run(base + ["train", "--input", "sample", *sets, "--name", f"ddp-{procs}",
                                      "--nproc-per-node", str(procs)],
                              capture_output=True, text=True, env=env, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"{procs} process(es): {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        results[procs] = json.loads(proc.stdout.strip().splitlines()[-1])
    one, two = results[1]["tokens_per_sec"], results[2]["tokens_per_sec"]
    shape = (f"{steps} steps of {settings['batch_size']}x{settings['block_size']} tokens per rank, "
             f"{settings['n_layer']}x{settings['n_embd']} char model, {cores} cores")
    return [
        Row("ddp_scaling_1", one, "tok/s", "", None, f"one rank, {threads} thread(s); {shape}"),
        Row("ddp_scaling_2", two, "tok/s", "", None, f"two ranks, {threads} thread(s) each, tokens/s summed"),
        Row("ddp_scaling", round(two / max(1e-9, one), 2), "x (2 ranks / 1)", "", None,
            "informational: tokens/s of 2 ranks over 1 rank, same work per rank"),
    ]


# --- driver ------------------------------------------------------------------------------------------------

BENCHES: dict[str, Callable[[Plan, Path], list[Row]]] = {
    "train_throughput": bench_train_throughput,
    "kv_cache": bench_kv_cache,
    "generation": bench_generation,
    "train_sample_overhead": bench_train_sample_overhead,
    "tokenizer": bench_tokenizer,
    "prepare": bench_prepare,
    "time_to_quality": bench_time_to_quality,
    "tui_first_frame": bench_tui_first_frame,
    "ddp_scaling": bench_ddp_scaling,
}


def fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def print_table(rows: list[Row]) -> None:
    header = ("name", "value", "unit", "target", "ok")
    cells = [(r.name, fmt_value(r.value), r.unit, r.target or "-", "-" if r.ok is None else ("yes" if r.ok else "NO"))
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-" * len(line))
    for c in cells:
        print("  ".join((v.rjust(w) if i == 1 else v.ljust(w)) for i, (v, w) in enumerate(zip(c, widths, strict=True))))
    notes = [r for r in rows if r.note]
    if notes:
        print()
        for r in notes:
            print(f"{r.name}: {r.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer repetitions and a smaller BPE comparison "
                      "(same shapes), no time_to_quality and no 100 MB corpus; under 3 minutes on 2 cores")
    mode.add_argument("--smoke", action="store_true", help="every group on tiny shapes in seconds; exits 1 "
                      "when a row has no value (targets are not checked)")
    parser.add_argument("--only", nargs="+", choices=GROUPS, metavar="NAME",
                        help=f"run only these groups: {', '.join(GROUPS)}")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--prepare-gb", type=float, metavar="G",
                        help="size of the corpus the prepare group builds (full run: 1; quick run: 0.016)")
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.prepare_gb is not None:
        if not args.prepare_gb > 0:
            parser.error("--prepare-gb must be more than 0")
        plan = dataclasses.replace(plan, prepare_mb=args.prepare_gb * 1000)
    groups = [g for g in GROUPS if (args.only is None or g in args.only)]
    if plan.quick and not plan.smoke and args.only is None:
        groups.remove("time_to_quality")

    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gptui-bench-") as tmp:
        for group in groups:
            if group == "time_to_quality" and not plan.time_to_quality:
                log("time_to_quality runs in the full run only (8 minutes of training); skipped")
                continue
            t = time.perf_counter()
            try:
                new = BENCHES[group](plan, Path(tmp) / group)
            except Exception as exc:
                log(f"{group} failed: {type(exc).__name__}: {exc}")
                new = [Row(group, "n/a", "", "", False, f"failed: {type(exc).__name__}: {exc}")]
            log(f"{group}: done in {time.perf_counter() - t:.0f}s")
            rows.extend(new)
    print()
    print_table(rows)
    kind = "smoke" if plan.smoke else "quick" if plan.quick else "full"
    print(f"\n{kind} run, {time.perf_counter() - started:.0f}s; "
          f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M')}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.as_json() for r in rows], indent=2) + "\n")
    if plan.smoke:
        return smoke_verdict(rows)
    return 0 if all(r.ok is not False for r in rows) else 1


def smoke_verdict(rows: list[Row]) -> int:
    """A smoke run passes when every row has a value. An informational row (no target) may say n/a where this
    machine lacks what it compares (bfloat16 on a CPU without it); a failed group's row and a row with a
    target never may."""
    empty = [r.name for r in rows if r.value == "n/a" and r.ok is not None]
    if empty:
        print(f"smoke: no value for {', '.join(empty)}", file=sys.stderr)
        return 1
    print(f"smoke: all {len(rows)} rows have a value")
    return 0


if __name__ == "__main__":
    sys.exit(main())
