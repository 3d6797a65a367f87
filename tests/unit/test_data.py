"""Corpus preparation: the tokenizer/token cache, corpus checks, and the batch sampler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gptui.core.data import (
    BatchSampler,
    TokenizerSpec,
    cache_dir,
    cache_status,
    prepare,
    prepare_with_tokenizer,
    sha256_file,
    token_dtype,
    tokenizer_key,
)
from gptui.core.errors import CorpusError, InputError
from gptui.core.workspace import read_text

CHAR = TokenizerSpec("char", 0, "")
BPE = TokenizerSpec("bpe", 300, "gpt4")


@pytest.mark.parametrize("spec", [CHAR, BPE], ids=["char", "bpe"])
def test_cache_miss_then_hit(workspace, corpus, spec):
    assert not cache_status(workspace.cache, corpus, spec)
    first = prepare(corpus, spec, workspace.cache)
    assert first.cached is False
    assert cache_status(workspace.cache, corpus, spec)
    second = prepare(corpus, spec, workspace.cache)
    assert second.cached is True
    assert isinstance(second.tokens, np.memmap), "a cache hit memory-maps tokens.bin"
    assert second.tokens.dtype == np.uint16 and first.tokens.dtype == np.uint16
    assert np.array_equal(np.asarray(first.tokens), np.asarray(second.tokens))
    assert second.split == first.split
    assert second.corpus_sha256 == first.corpus_sha256 == sha256_file(corpus)
    assert second.val_bytes == first.val_bytes and second.corpus_bytes == first.corpus_bytes == corpus.stat().st_size
    assert second.tokenizer.token_bytes == first.tokenizer.token_bytes
    # the cached tokens decode back to the corpus
    assert second.tokenizer.decode(np.asarray(second.tokens).tolist()) == corpus.read_text(encoding="utf-8")


def test_cache_files_on_disk(workspace, corpus):
    data = prepare(corpus, BPE, workspace.cache)
    folder = cache_dir(workspace.cache, data.corpus_sha256, BPE)
    assert folder.parent == workspace.cache
    assert (folder / "tokenizer.json").is_file() and (folder / "meta.json").is_file()
    raw = np.fromfile(folder / "tokens.bin", dtype=np.uint16)  # a raw array, no header
    assert np.array_equal(raw, data.tokens)


def test_split_is_contiguous_90_10(workspace, corpus):
    data = prepare(corpus, CHAR, workspace.cache)
    n = len(data.tokens)
    assert data.split == int(n * 0.9)
    assert len(data.train) + len(data.val) == n
    assert np.array_equal(np.concatenate([data.train, data.val]), data.tokens)
    text = corpus.read_text(encoding="utf-8")
    assert data.val_bytes == len(text[data.split:].encode("utf-8"))  # char: one token per character
    assert data.val_tokens_per_byte == pytest.approx(len(data.val) / data.val_bytes)


def test_corpus_edit_invalidates_cache(workspace, corpus):
    before = prepare(corpus, CHAR, workspace.cache)
    corpus.write_text(corpus.read_text(encoding="utf-8") + "Zebra quartz vexing jumps.\n", encoding="utf-8")
    after = prepare(corpus, CHAR, workspace.cache)
    assert after.cached is False
    assert after.corpus_sha256 != before.corpus_sha256
    assert len(after.tokens) != len(before.tokens)
    assert after.tokenizer.vocab_size > before.tokenizer.vocab_size  # Z, q, x, j, ... are new characters
    assert prepare(corpus, CHAR, workspace.cache).cached is True


def test_same_size_edit_invalidates_cache(workspace, corpus):
    """The key is the content hash, not the size or the time stamp."""
    import os

    before = prepare(corpus, CHAR, workspace.cache)
    st = corpus.stat()
    text = corpus.read_text(encoding="utf-8")
    corpus.write_text(text.replace("Speak", "Sneak", 1), encoding="utf-8")
    os.utime(corpus, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = prepare(corpus, CHAR, workspace.cache)
    assert after.cached is False
    assert not np.array_equal(np.asarray(after.tokens), np.asarray(before.tokens))


def test_tokenizer_settings_get_their_own_cache_entry(workspace, corpus):
    specs = [CHAR, TokenizerSpec("bpe", 300, "gpt4"), TokenizerSpec("bpe", 300, "gpt2"),
             TokenizerSpec("bpe", 320, "gpt4")]
    results = [prepare(corpus, s, workspace.cache) for s in specs]
    assert all(not r.cached for r in results)
    folders = {cache_dir(workspace.cache, results[0].corpus_sha256, s) for s in specs}
    assert len(folders) == len(specs)
    assert results[0].tokenizer.kind == "char" and results[1].tokenizer.kind == "bpe"
    assert results[1].tokenizer.vocab_size == 301 and results[3].tokenizer.vocab_size == 321  # + end-of-text
    assert len(results[3].tokens) < len(results[1].tokens) < len(results[0].tokens)
    assert all(prepare(corpus, s, workspace.cache).cached for s in specs)


def test_a_given_tokenizer_gets_a_cache_entry_of_its_own(workspace, corpus):
    trained = prepare(corpus, CHAR, workspace.cache)
    text = trained.tokenizer.to_json()
    first = prepare_with_tokenizer(corpus, text, workspace.cache)
    again = prepare_with_tokenizer(corpus, text, workspace.cache)
    assert (first.cached, again.cached) == (False, True)
    assert np.array_equal(np.asarray(first.tokens), np.asarray(trained.tokens))
    assert again.tokenizer.token_bytes == trained.tokenizer.token_bytes
    folder = cache_dir(workspace.cache, trained.corpus_sha256, tokenizer_key(text))
    assert (folder / "meta.json").is_file() and folder != cache_dir(workspace.cache, trained.corpus_sha256, CHAR)
    # another tokenizer (here the same characters in another order) is another entry, never the first one's
    data = json.loads(text)
    reordered = json.dumps({**data, "chars": data["chars"][::-1]})
    shuffled = prepare_with_tokenizer(corpus, reordered, workspace.cache)
    assert shuffled.cached is False
    assert not np.array_equal(np.asarray(shuffled.tokens), np.asarray(trained.tokens))


def test_a_given_tokenizer_that_cannot_be_read_is_refused(workspace, corpus):
    with pytest.raises(InputError, match="tokenizer.json cannot be read"):
        prepare_with_tokenizer(corpus, '{"type": "gptui-char", "chars": 5}', workspace.cache, source="run x's")


def test_tokenizer_spec_from_config(tiny_config):
    import dataclasses

    assert TokenizerSpec.from_config(tiny_config) == CHAR
    bpe = dataclasses.replace(tiny_config, tokenizer="bpe", vocab_size=700, split_pattern="gpt2")
    assert TokenizerSpec.from_config(bpe) == TokenizerSpec("bpe", 700, "gpt2")
    # for char, the BPE settings do not matter: one cache entry
    other = dataclasses.replace(tiny_config, vocab_size=999, split_pattern="gpt2")
    assert TokenizerSpec.from_config(other).key() == CHAR.key()


def test_token_dtype():
    assert token_dtype(300) == np.uint16
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32


def test_damaged_cache_entry_is_rebuilt(workspace, corpus):
    first = prepare(corpus, CHAR, workspace.cache)
    expected = np.array(first.tokens)  # a copy: the tokens are memory-mapped from the file damaged below
    folder = cache_dir(workspace.cache, first.corpus_sha256, CHAR)
    (folder / "tokens.bin").write_bytes(b"\x00\x01\x02")  # truncated
    again = prepare(corpus, CHAR, workspace.cache)
    assert again.cached is False
    assert np.array_equal(np.asarray(again.tokens), expected)
    (folder / "meta.json").write_text("{not json", encoding="utf-8")
    assert prepare(corpus, CHAR, workspace.cache).cached is False


# --- corpus checks -----------------------------------------------------------------------------------------------


def test_check_block_size_refuses_short_corpus_with_numbers(workspace):
    path = workspace.inputs / "short.txt"
    path.write_text("abcdefghij" * 10, encoding="utf-8")  # 100 tokens: 90 train, 10 val
    data = prepare(path, CHAR, workspace.cache)
    data.check_block_size(8)  # 9 tokens needed in each split: fine
    with pytest.raises(CorpusError) as info:
        data.check_block_size(32)
    message = str(info.value)
    assert "block_size 32" in message
    assert "33" in message and "90 train" in message and "10 val" in message and "100 tokens" in message
    assert "\n" not in message


def test_check_block_size_boundary(workspace):
    path = workspace.inputs / "edge.txt"
    path.write_text("x" * 100, encoding="utf-8")  # 90 train, 10 val
    data = prepare(path, CHAR, workspace.cache)
    data.check_block_size(9)  # need exactly 10 in val
    with pytest.raises(CorpusError):
        data.check_block_size(10)


def test_non_utf8_corpus_refused_with_name_and_offset(workspace):
    path = workspace.inputs / "latin1.txt"
    path.write_bytes(b"hello world, this is fine\n" * 3 + b"caf\xe9 au lait\n")
    offset = 26 * 3 + 3
    with pytest.raises(CorpusError) as info:
        prepare(path, CHAR, workspace.cache)
    message = str(info.value)
    assert "latin1.txt" in message
    assert f"offset {offset}" in message
    assert "0xe9" in message
    assert "\n" not in message
    with pytest.raises(CorpusError, match=f"offset {offset}"):
        read_text(path)


def test_non_utf8_corpus_accepted_with_replace_errors(tmp_path):
    from gptui.core.workspace import Workspace

    ws = Workspace(tmp_path).ensure()
    path = ws.inputs / "latin1.txt"
    path.write_bytes(b"hello world, this is fine\n" * 3 + b"caf\xe9 au lait\n")
    data = prepare(path, CHAR, ws.cache, replace_errors=True)
    assert "\ufffd" in data.tokenizer.chars
    assert data.tokenizer.decode(np.asarray(data.tokens).tolist()).endswith("caf\ufffd au lait\n")


def test_empty_corpus_refused(workspace):
    for name, content in (("empty.txt", b""), ("blank.txt", b"  \n\n\t\n")):
        path = workspace.inputs / name
        path.write_bytes(content)
        with pytest.raises(CorpusError, match="empty"):
            prepare(path, CHAR, workspace.cache)


def test_empty_folder_named_like_a_text_file_refused(workspace):
    folder = workspace.inputs / "x.txt"  # a folder is a corpus of its files, whatever its name
    folder.mkdir()
    with pytest.raises(CorpusError, match=r"^x\.txt/ is empty"):
        prepare(workspace.corpus_path("x"), CHAR, workspace.cache)
    (info,) = [c for c in workspace.corpora() if c.file_name == "x.txt"]
    assert info.kind == "folder" and "empty" in info.error


def test_missing_corpus_refused(workspace):
    with pytest.raises(CorpusError):
        prepare(workspace.inputs / "missing.txt", CHAR, workspace.cache)
    with pytest.raises(CorpusError, match="available"):
        workspace.corpus_path("missing")


@pytest.mark.parametrize("name", ["../etc/passwd", "/etc/passwd", ".hidden", "a\0b", "  "])
def test_corpus_names_cannot_be_paths(workspace, name):
    with pytest.raises(CorpusError):
        workspace.corpus_path(name)


def test_corpus_path_with_and_without_txt(workspace, corpus):
    assert workspace.corpus_path("tiny") == corpus
    assert workspace.corpus_path("tiny.txt") == corpus


def test_corpus_info(workspace, corpus):
    info = {c.name: c for c in workspace.corpora()}["tiny"]
    text = corpus.read_text(encoding="utf-8")
    assert info.bytes == len(text.encode("utf-8"))
    assert info.chars == len(text)
    assert info.lines == text.count("\n")
    assert info.error is None


def test_workspace_seeds_sample_corpus(tmp_path):
    from gptui.core.workspace import Workspace

    ws = Workspace(tmp_path / "fresh").ensure()
    assert ws.inputs.is_dir() and ws.models.is_dir()
    assert (ws.inputs / "tinyshakespeare.txt").stat().st_size > 1_000_000


# --- batch sampler -----------------------------------------------------------------------------------------------


@pytest.fixture
def tokens():
    return np.arange(1000, dtype=np.uint16) % 250


def test_batch_shapes_and_shift(tokens):
    sampler = BatchSampler(tokens, block_size=16, batch_size=5, seed=0)
    for _ in range(20):
        x, y = sampler.next()
        assert x.shape == y.shape == (5, 16)
        assert x.dtype == y.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1]), "y is x shifted by one"
        for row_x, row_y in zip(x, y, strict=True):
            start = int(np.flatnonzero(tokens == row_x[0].item())[0])
            # with tokens = arange % 250, windows are contiguous runs of the data
            expected = torch.from_numpy((np.arange(start, start + 17) % 250).astype(np.int64))
            assert torch.equal(row_x, expected[:-1]) and torch.equal(row_y, expected[1:])


def test_batch_windows_stay_inside_the_data():
    data = np.arange(17, dtype=np.uint16)  # exactly block_size + 1 tokens: one possible window
    sampler = BatchSampler(data, block_size=16, batch_size=3, seed=1)
    x, y = sampler.next()
    assert torch.equal(x, torch.arange(16).repeat(3, 1))
    assert torch.equal(y, torch.arange(1, 17).repeat(3, 1))


def test_batches_cover_the_last_token():
    data = np.arange(40, dtype=np.uint16)
    sampler = BatchSampler(data, block_size=8, batch_size=64, seed=3)
    seen = set()
    for _ in range(10):
        _, y = sampler.next()
        seen |= set(y.flatten().tolist())
    assert 39 in seen and max(seen) == 39


def test_batches_deterministic_given_seed(tokens):
    a = BatchSampler(tokens, 16, 4, seed=42)
    b = BatchSampler(tokens, 16, 4, seed=42)
    c = BatchSampler(tokens, 16, 4, seed=43)
    batches_a = [a.next() for _ in range(5)]
    batches_b = [b.next() for _ in range(5)]
    batches_c = [c.next() for _ in range(5)]
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(batches_a, batches_b, strict=True))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(batches_a, batches_c, strict=True))


def test_batch_sampler_state_round_trip(tokens):
    import json

    a = BatchSampler(tokens, 16, 4, seed=7)
    for _ in range(3):
        a.next()
    saved = a.state()
    json.loads(saved)  # a plain JSON string: safe inside a weights_only checkpoint
    expected = [a.next() for _ in range(4)]
    b = BatchSampler(tokens, 16, 4, seed=999)
    b.set_state(saved)
    got = [b.next() for _ in range(4)]
    for (ex, ey), (gx, gy) in zip(expected, got, strict=True):
        assert torch.equal(ex, gx) and torch.equal(ey, gy)


def test_batch_sampler_reads_a_memmap(workspace, corpus):
    prepare(corpus, CHAR, workspace.cache)
    data = prepare(corpus, CHAR, workspace.cache)
    assert isinstance(data.tokens, np.memmap)
    x, y = BatchSampler(data.train, 32, 4, seed=0).next()
    assert x.shape == (4, 32) and int(x.max()) < data.tokenizer.vocab_size


def test_add_corpus(workspace, tmp_path):
    src = tmp_path / "notes.md"
    src.write_text("some notes\n", encoding="utf-8")
    dest = workspace.add_corpus(src)
    assert dest == workspace.inputs / "notes.md.txt" and dest.read_text(encoding="utf-8") == "some notes\n"
    with pytest.raises(CorpusError, match="already exists"):
        other = tmp_path / "other"
        other.mkdir()
        (other / "notes.md").write_text("different\n", encoding="utf-8")
        workspace.add_corpus(other / "notes.md")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(CorpusError, match="UTF-8"):
        workspace.add_corpus(bad)
    assert not (workspace.inputs / "bad.txt").exists()
    with pytest.raises(CorpusError, match="no such file"):
        workspace.add_corpus(tmp_path / "missing.txt")
