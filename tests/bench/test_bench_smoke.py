"""`python bench/run.py --smoke`: every benchmark group on tiny shapes, so a benchmark the code broke fails the suite
instead of the next full run. Values are not judged here (the machine is shared), only that each row has one."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import ENV

BENCH = Path(__file__).resolve().parents[2] / "bench" / "run.py"


def bench_module():
    if "bench_run" not in sys.modules:  # its dataclasses look their module up there
        spec = importlib.util.spec_from_file_location("bench_run", BENCH)
        sys.modules["bench_run"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["bench_run"])
    return sys.modules["bench_run"]


@pytest.mark.slow
def test_every_benchmark_group_yields_rows_with_values_on_tiny_shapes(tmp_path):
    out = tmp_path / "rows.json"
    result = subprocess.run([sys.executable, str(BENCH), "--smoke", "--json", str(out)], capture_output=True,
                            text=True, env=ENV, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads(out.read_text())
    names = [r["name"] for r in rows]
    assert "smoke: all" in result.stdout
    groups = bench_module().GROUPS
    failed = [g for g in groups if g in names and next(r for r in rows if r["name"] == g)["value"] == "n/a"]
    assert not failed, f"groups that failed: {failed}"
    # the rows each group exists for (a group that failed would leave one n/a row under its own name instead)
    for name in ("train_throughput", "train_throughput_ratio", "kv_cache", "gen_batch", "train_sample_overhead",
                 "tokenizer_seconds", "tokenizer_cache_hit", "time_to_quality", "time_to_quality_nanogpt",
                 "tui_first_frame", "ddp_scaling"):
        row = next(r for r in rows if r["name"] == name)
        assert isinstance(row["value"], (int, float)), row
    assert not [r for r in rows if r["value"] == "n/a" and r["ok"] is not None]


def test_a_smoke_run_fails_when_a_row_has_no_value():
    run = bench_module()
    fine = [run.Row("a", 1.0, "x", "> 2", False), run.Row("gen_tok_s_bf16", "n/a", "tok/s", "", None, "no bf16")]
    assert run.smoke_verdict(fine) == 0, "a missed target or a feature this machine lacks is not a failure"
    assert run.smoke_verdict(fine + [run.Row("kv_cache", "n/a", "", "", False, "failed: boom")]) == 1
    assert run.smoke_verdict(fine + [run.Row("tui_first_frame", "n/a", "s", "< 1", False, "did not start")]) == 1


def test_the_smoke_plan_shrinks_every_shape_the_groups_read():
    run = bench_module()
    smoke, quick = run.SMOKE, run.QUICK
    assert smoke.smoke and smoke.quick and smoke.time_to_quality and not quick.smoke
    assert smoke.model["n_embd"] < 64 and smoke.decode_tokens < 50 and smoke.ttq_minutes < 0.1
    assert smoke.tok_chars < 100_000 and smoke.ref_bpe_chars < 10_000 and smoke.ddp_steps < 10
