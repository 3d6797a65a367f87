"""Corpus kinds from the command line: `gptui corpora`, `prepare` and `train --input` on folders, JSON Lines and
Parquet; every bad input is one line naming the file (exit 2, nothing written); a fine-tune and a two-process
run on a folder corpus."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import assert_one_line_error, gptui

TRAIN = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 4, "max_iters": 12,
         "warmup_iters": 2, "eval_interval": 6, "eval_iters": 2, "sample_interval": 0, "tokenizer": "char",
         "device": "cpu", "dtype": "float32"}


def sets(overrides: dict) -> list[str]:
    out: list[str] = []
    for key, value in overrides.items():
        out += ["--set", f"{key}={value}"]
    return out


def documents(make_corpus_text, n: int = 24) -> list[str]:
    return [f"Part {i}.\n{make_corpus_text(8 + i % 5)}" for i in range(n)]


@pytest.fixture(scope="module")
def home(tmp_path_factory, make_corpus_text) -> Path:
    """A workspace with one corpus of each kind (the same documents in each but the text file)."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    home = tmp_path_factory.mktemp("kinds")
    inputs = home / "inputs"
    (inputs / "notes" / "sub").mkdir(parents=True)
    docs = documents(make_corpus_text)
    for i, text in enumerate(docs):
        (inputs / "notes" / ("sub" if i % 3 else ".") / f"{i:02d}.md").write_text(text, encoding="utf-8")
    (inputs / "notes" / "logo.png").write_bytes(b"\x89PNG\0\0\0")
    (inputs / "rows.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    pq.write_table(pa.table({"text": docs}), inputs / "table.parquet", row_group_size=5)
    (inputs / "tiny.txt").write_text(make_corpus_text(), encoding="utf-8")
    return home


def test_corpora_lists_every_kind_with_bytes_documents_and_files(home):
    listing = {c["name"]: c for c in json.loads(gptui(home, "corpora", "--json").stdout)}
    assert {n: (c["kind"], c["documents"], c["files"]) for n, c in listing.items()} == {
        "notes": ("folder", 24, 25), "rows": ("jsonl", 24, 1), "table": ("parquet", 24, 1), "tiny": ("txt", 1, 1)}
    notes = home / "inputs" / "notes"
    assert listing["notes"]["bytes"] == sum(p.stat().st_size for p in notes.rglob("*") if p.is_file())
    text = gptui(home, "corpora").stdout
    assert "JSON Lines" in text and "Parquet" in text and "folder" in text


@pytest.mark.parametrize("name", ["notes", "rows", "table"])
def test_prepare_any_kind_then_a_cache_hit(home, name):
    first = gptui(home, "prepare", "--input", name, "--tokenizer", "char")
    assert first.returncode == 0, first.stderr
    assert "24 documents" in first.stdout and "cache hit" not in first.stdout
    if name == "notes":
        assert "skipped 1 binary file;" in first.stdout
    again = gptui(home, "prepare", "--input", name, "--tokenizer", "char")
    assert "cache hit" in again.stdout


def bad_home(tmp_path: Path) -> Path:
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "tiny.txt").write_text("some text\n" * 50)
    return tmp_path


def cache_is_empty(home: Path) -> bool:
    cache = home / ".cache" / "gptui"
    return not cache.exists() or not any(cache.iterdir())


@pytest.mark.parametrize("setup, fragments", [
    (lambda i: (i / "void").mkdir(), ["void/ is empty"]),
    (lambda i: ((i / "void").mkdir(), (i / "void" / "a.bin").write_bytes(b"\0\1")),
     ["void/ has no text file (1 binary file skipped)"]),
    (lambda i: (i / "void.jsonl").write_text('{"text": "a"}\n{"text": "b"\n'),
     ["void.jsonl line 2, column 13: not JSON", "--skip-bad-rows"]),
    (lambda i: (i / "void.jsonl").write_text('{"text": "a"}\n{"body": "b"}\n'),
     ["void.jsonl line 2: no 'text' field (fields: body)"]),
    (lambda i: (i / "void.parquet").write_text("not parquet\n"), ["void.parquet is not a Parquet file"]),
    (lambda i: (i / "void.txt").write_bytes(b"abc\xffdef\n"), ["void.txt is not valid UTF-8", "offset 3"]),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, setup, fragments):
    home = bad_home(tmp_path)
    setup(home / "inputs")
    result = gptui(home, "prepare", "--input", "void")
    assert_one_line_error(result, 2, *fragments)
    assert cache_is_empty(home)
    result = gptui(home, "train", "--input", "void", *sets(TRAIN))
    assert_one_line_error(result, 2, *fragments)
    assert not (home / "models").exists() or not any((home / "models").iterdir())


def test_parquet_without_the_column_names_the_columns_it_has(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    home = bad_home(tmp_path)
    pq.write_table(pa.table({"id": [1], "body": ["x"]}), home / "inputs" / "void.parquet")
    assert_one_line_error(gptui(home, "prepare", "--input", "void"), 2,
                          "void.parquet has no column 'text' (columns: id, body)")
    ok = gptui(home, "prepare", "--input", "void", "--text-field", "body", "--tokenizer", "char")
    assert ok.returncode == 0, ok.stderr


def test_skip_bad_rows(tmp_path, make_corpus_text):
    home = bad_home(tmp_path)
    rows = [json.dumps({"text": d}) for d in documents(make_corpus_text)]
    rows.insert(3, "{broken")
    (home / "inputs" / "rows.jsonl").write_text("\n".join(rows) + "\n")
    assert_one_line_error(gptui(home, "prepare", "--input", "rows"), 2, "rows.jsonl line 4, column 2")
    ok = gptui(home, "prepare", "--input", "rows", "--skip-bad-rows", "--tokenizer", "char")
    assert ok.returncode == 0, ok.stderr
    assert "24 documents" in ok.stdout and "skipped 1 bad row;" in ok.stdout


def test_ambiguous_name_asks_for_the_extension(tmp_path):
    home = bad_home(tmp_path)
    (home / "inputs" / "tiny.jsonl").write_text('{"text": "x"}\n')
    assert_one_line_error(gptui(home, "prepare", "--input", "tiny"), 2, "several corpora are named 'tiny'",
                          "tiny.jsonl", "tiny.txt")
    assert gptui(home, "prepare", "--input", "tiny.txt", "--tokenizer", "char").returncode == 0


def test_train_on_a_folder_then_fine_tune_onto_another_folder(home, make_corpus_text):
    result = gptui(home, "train", "--input", "notes", "--preset", "tiny-classic", *sets(TRAIN))
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout.strip().splitlines()[-1])["run"]
    config = json.loads((home / "models" / run_id / "config.json").read_text())
    assert (config["corpus"], config["corpus_file"], config["corpus_kind"]) == ("notes", "notes", "folder")
    assert config["corpus_documents"] == 24 and config["corpus_files"] == 24
    assert "data: folder corpus, 24 documents from 24 files; skipped 1 binary file\n" in (
        home / "models" / run_id / "train.log").read_text()

    other = home / "inputs" / "other"
    other.mkdir()
    for i, text in enumerate(documents(make_corpus_text, 12)):  # characters the run's char tokenizer knows
        (other / f"{i}.txt").write_text(f"Part {i + 100}.\n{text}", encoding="utf-8")
    tuned = gptui(home, "train", "--init-from", run_id, "--input", "other", "--set", "max_iters=6")
    assert tuned.returncode == 0, tuned.stderr
    tuned_id = json.loads(tuned.stdout.strip().splitlines()[-1])["run"]
    tuned_config = json.loads((home / "models" / tuned_id / "config.json").read_text())
    assert tuned_config["init_from"] == run_id and tuned_config["corpus_kind"] == "folder"
    assert tuned_config["corpus_documents"] == 12

    resumed = gptui(home, "train", "--resume", tuned_id, "--set", "max_iters=8")
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.slow
def test_two_processes_train_on_a_folder_corpus(home):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two cores")
    result = gptui(home, "train", "--input", "notes", "--preset", "tiny-classic", *sets(TRAIN),
                   "--nproc-per-node", "2", timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    config = json.loads((home / "models" / summary["run"] / "config.json").read_text())
    assert summary["status"] == "completed" and config["world_size"] == 2 and config["corpus_kind"] == "folder"
