"""Streaming encoding: today's tokens for one document, the end-of-text token between documents, the split,
tiktoken against `tokenizers` on every kind of text, cancel and errors leaving no file, the tokenizer's sample."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from gptui.core.encode import (
    EncodedCorpus,
    encode_documents,
    fast_encoder,
    hf_encoder,
    progress_stage,
    safe_pieces,
    train_tokenizer_from_documents,
)
from gptui.core.errors import CorpusCancelled
from gptui.core.tokenizer import (
    EOT,
    SPLIT_PATTERNS,
    BpeTokenizer,
    CharTokenizer,
    tokenizer_from_json,
    train_tokenizer,
)

SAMPLE_CORPUS = Path(__file__).resolve().parents[2] / "inputs" / "tinyshakespeare.txt"

# sha256 of the sample corpus's tokens (as little-endian uint32) with today's train_tokenizer + encode_corpus,
# computed at main before the end-of-text token existed: the streaming path must give exactly these
TODAY = {
    ("bpe", 2048): (355637, "720f80c97168361846fceb37d37742ed87d98b0514176d8582dba26ffcd33380"),
    ("bpe", 1024): (428147, "10456f2a737df9e02cf143a3f1b8bb804f0e6219c516bf71080f8728b8a89b25"),
    ("char", 0): (1115394, "54c586ffca0f6fdf0eae141fc66a18de39356c345350e9ce8f5fe71f0ee57074"),
}

# every kind of text the encoders must agree on
KINDS = {
    "prose": "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n",
    "contractions": "It's, we'll, they're, I'VE, you'd, O'Neill's 'quoted' ''' 's",
    "numbers": "1 12 123 1234 12345 3.14159 1,000,000 0x1F 2024-12-01 ١٢٣ ½ ²",
    "code": "def f(x):\n\treturn {'a': [1, 2]}  # comment\n\n\nclass A:\n    pass\r\n}}};;\n",
    "cjk": "日本語のテキストと中文文本。한국어 텍스트. 漢字かな交じり文",
    "emoji": "👍 🎉 🐍 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 👩🏽‍💻",
    "accents": "Café déjà vu, naïve façade; Cafe\u0301 ÀÉÎÕÜ ñ ç ß ø å Ελληνικά русский",
    "rtl": "שלום עולם مرحبا بالعالم",
    "newlines": "\n\n\na\n\n b\n  \nc \n\td\n\r\n\r\ne\r\rf\n",
    "odd whitespace": "a\u00a0b\u2003c\u3000d\x0be\x0cf\x1cg\u0085h\u2028i\u2029j \t \u200bk\ufeffl",
    "trailing spaces": "word   \n   word\t\t\n \n",
    "controls": "a\x00b\x1b[31mred\x1b[0m\x07\x7f",
    "literal end-of-text": f"before {EOT} after<|endoftext|>",
    "unseen": "Ωmega ∑∫√ ƒ ₿ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🦜 ꙮ \U0010fffd",
    "long line": "word " * 3000 + "\n",
    "empty": "",
}
TRAIN_TEXT = "".join(KINDS.values()) * 30


def read_tokens(path: Path, dtype=np.uint16) -> np.ndarray:
    return np.fromfile(path, dtype=dtype)


def digest(tokens: np.ndarray) -> str:
    return hashlib.sha256(tokens.astype("<u4").tobytes()).hexdigest()


@pytest.fixture(scope="module")
def sample_text() -> str:
    return SAMPLE_CORPUS.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def mixed_bpe() -> dict[str, BpeTokenizer]:
    return {p: train_tokenizer(TRAIN_TEXT, "bpe", 600, p) for p in SPLIT_PATTERNS}


def parts_of(text: str, size: int):
    """A document handed over in parts cut anywhere (the encoder re-cuts where it is safe)."""
    return lambda: (text[i : i + size] for i in range(0, len(text), size))


# --- the sample corpus gets today's tokens ------------------------------------------------------------------


@pytest.mark.parametrize("kind,vocab", list(TODAY), ids=[f"{k}{v or ''}" for k, v in TODAY])
def test_the_sample_corpus_gets_todays_tokens(tmp_path, sample_text, kind, vocab):
    documents = parts_of(sample_text, 250_001)
    tok = train_tokenizer_from_documents(documents, kind, vocab, "gpt4", 256, pieces=True)
    result = encode_documents(documents(), tok, tmp_path / "tokens.bin", dtype=np.uint16, pieces=True)
    tokens = read_tokens(tmp_path / "tokens.bin")
    n, expected = TODAY[kind, vocab]
    assert (result.n_tokens, len(tokens), digest(tokens)) == (n, n, expected)
    # the same tokenizer as today's, plus the end-of-text id after it
    today = train_tokenizer(sample_text, kind, vocab)
    assert tok.token_bytes[: tok.eot_id] == today.token_bytes[: today.eot_id]
    assert tok.eot_id == tok.vocab_size - 1
    # today's split and bits-per-byte denominator
    assert result.split == int(n * 0.9)
    assert result.val_bytes == sum(len(tok.token_bytes[i]) for i in tokens[result.split :])
    assert result.bytes == len(sample_text.encode("utf-8")) and result.documents == 1
    assert result.encoder == ("char" if kind == "char" else "tiktoken")


def test_a_whole_document_in_one_string_gets_the_same_tokens_as_in_parts(tmp_path, sample_text):
    tok = train_tokenizer(sample_text, "char")
    whole = encode_documents([sample_text], tok, tmp_path / "a.bin", dtype=np.uint16)
    parts = encode_documents(parts_of(sample_text, 4099)(), tok, tmp_path / "b.bin", dtype=np.uint16, pieces=True)
    assert whole == EncodedCorpus(**{**parts.__dict__, "seconds": whole.seconds})
    assert np.array_equal(read_tokens(tmp_path / "a.bin"), read_tokens(tmp_path / "b.bin"))


# --- tiktoken gives the tokens of `tokenizers` ---------------------------------------------------------------


@pytest.mark.parametrize("pattern", list(SPLIT_PATTERNS))
@pytest.mark.parametrize("name", list(KINDS))
def test_tiktoken_and_tokenizers_agree_on_every_kind_of_text(mixed_bpe, pattern, name):
    tok = mixed_bpe[pattern]
    fast = fast_encoder(tok)
    assert fast.name == "tiktoken"
    text = KINDS[name]
    expected = tok.hf.encode(text).ids
    assert fast.encode(text).tolist() == expected
    assert hf_encoder(tok).encode(text).tolist() == expected
    assert EOT not in text or tok.eot_id not in expected, "a literal <|endoftext|> is text"


def test_tiktoken_and_tokenizers_agree_on_the_sample_corpus_tokenizer(sample_text):
    tok = train_tokenizer(sample_text[:300_000], "bpe", 1024)
    fast = fast_encoder(tok)
    text = "".join(KINDS.values()) + sample_text[-50_000:]
    assert fast.name == "tiktoken"
    assert fast.encode(text).tolist() == tok.hf.encode(text).ids


def test_a_tokenizer_tiktoken_cannot_reproduce_is_encoded_by_tokenizers(mixed_bpe):
    data = json.loads(mixed_bpe["gpt4"].to_json())
    data["normalizer"] = {"type": "Lowercase"}  # not what ours are: tiktoken has no normalizers
    tok = tokenizer_from_json(json.dumps(data))
    assert fast_encoder(tok).name == "tokenizers"
    assert fast_encoder(tok).encode("Hello World").tolist() == tok.hf.encode("Hello World").ids


def test_merges_out_of_id_order_are_encoded_by_tokenizers(mixed_bpe):
    # tiktoken ranks a merge by its result's id: with two merges swapped the ranks no longer follow the merges
    data = json.loads(mixed_bpe["gpt4"].to_json())
    merges = data["model"]["merges"]
    merges[10], merges[11] = merges[11], merges[10]
    tok = tokenizer_from_json(json.dumps(data))
    assert fast_encoder(tok).name == "tokenizers"


def test_an_encoder_that_disagrees_on_the_first_piece_is_not_used(tmp_path, mixed_bpe, monkeypatch):
    import gptui.core.encode as encode

    tok = mixed_bpe["gpt4"]
    wrong = encode.Encoder("tiktoken", lambda text: np.asarray(tok.encode(text)[::-1], dtype=np.uint32))
    monkeypatch.setattr(encode, "fast_encoder", lambda tokenizer: wrong)
    docs = ["short one", KINDS["prose"] * 50]
    result = encode_documents(iter(docs), tok, tmp_path / "t.bin", dtype=np.uint16)
    assert result.encoder == "tokenizers"
    assert read_tokens(tmp_path / "t.bin").tolist() == tok.encode(docs[0]) + [tok.eot_id] + tok.encode(docs[1])


# --- documents and the end-of-text token ---------------------------------------------------------------------


DOCS = [f"Document {i}: " + "some words here. " * (i % 5 + 1) + "\nend\n" for i in range(40)]


def is_val(doc: str) -> bool:
    return int(doc.split(":")[0].split()[1]) % 4 == 3


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_documents_are_separated_by_the_end_of_text_token_train_then_val(tmp_path, kind):
    tok = train_tokenizer_from_documents(lambda: iter(DOCS), kind, 300, "gpt4", 256)
    result = encode_documents(iter(DOCS), tok, tmp_path / "tokens.bin", dtype=np.uint16, is_val=is_val)
    tokens = read_tokens(tmp_path / "tokens.bin")
    train_docs = [d for d in DOCS if not is_val(d)]
    val_docs = [d for d in DOCS if is_val(d)]

    def stream(docs):
        out = []
        for k, d in enumerate(docs):
            out += ([tok.eot_id] if k else []) + tok.encode(d)
        return out

    assert tokens[: result.split].tolist() == stream(train_docs)
    assert tokens[result.split :].tolist() == stream(val_docs)
    assert result.n_tokens == len(tokens)
    assert result.documents == len(DOCS)
    assert result.val_bytes == sum(len(d.encode("utf-8")) for d in val_docs)
    assert result.bytes == sum(len(d.encode("utf-8")) for d in DOCS)
    assert tok.decode(tokens[: result.split].tolist()) == EOT.join(train_docs)


def test_without_a_document_split_the_last_tenth_of_tokens_is_validation(tmp_path):
    tok = train_tokenizer("".join(DOCS), "char")
    tok = CharTokenizer(tok.chars, eot=True)
    result = encode_documents(iter(DOCS), tok, tmp_path / "tokens.bin", dtype=np.uint16)
    tokens = read_tokens(tmp_path / "tokens.bin")
    assert (tokens == tok.eot_id).sum() == len(DOCS) - 1
    assert result.split == int(len(tokens) * 0.9)
    assert result.val_bytes == sum(len(tok.token_bytes[i]) for i in tokens[result.split :])


def test_empty_documents_add_no_tokens_and_no_separator(tmp_path):
    tok = CharTokenizer(sorted(set("abc")), eot=True)
    encode_documents(iter(["", "ab", "", "", "c", ""]), tok, tmp_path / "t.bin", dtype=np.uint16)
    assert read_tokens(tmp_path / "t.bin").tolist() == [0, 1, tok.eot_id, 2]


def test_a_tokenizer_from_before_the_end_of_text_token_joins_documents_with_nothing(tmp_path):
    old = tokenizer_from_json(json.dumps({"type": "gptui-char", "version": 1, "chars": ["a", "b"]}))
    assert old.eot_id is None and old.vocab_size == 2
    assert old.to_json() == json.dumps({"type": "gptui-char", "version": 1, "chars": ["a", "b"]})
    encode_documents(iter(["ab", "ba"]), old, tmp_path / "t.bin", dtype=np.uint16)
    assert read_tokens(tmp_path / "t.bin").tolist() == [0, 1, 1, 0]


def test_an_old_bpe_tokenizer_loads_as_before(mixed_bpe):
    data = json.loads(mixed_bpe["gpt4"].to_json())
    data["added_tokens"] = []
    tok = tokenizer_from_json(json.dumps(data))
    assert tok.eot_id is None
    assert tok.vocab_size == mixed_bpe["gpt4"].vocab_size - 1
    assert tok.token_bytes == mixed_bpe["gpt4"].token_bytes[:-1]
    assert fast_encoder(tok).encode(KINDS["prose"]).tolist() == tok.encode(KINDS["prose"])


def test_the_end_of_text_token_is_recorded_in_tokenizer_json(mixed_bpe):
    tok = mixed_bpe["gpt4"]
    added = json.loads(tok.to_json())["added_tokens"]
    assert added == [{"id": tok.eot_id, "content": EOT, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True}]
    again = tokenizer_from_json(tok.to_json())
    assert again.eot_id == tok.eot_id and again.token_bytes == tok.token_bytes
    assert tok.eot_id not in again.encode(EOT)
    char = train_tokenizer("abc", "char")
    assert json.loads(char.to_json()) == {"type": "gptui-char", "version": 2, "chars": ["a", "b", "c"], "eot": True}
    assert tokenizer_from_json(char.to_json()).eot_id == 3


# --- pieces ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", list(SPLIT_PATTERNS))
def test_pieces_cut_where_no_pre_token_straddles(mixed_bpe, pattern):
    tok = mixed_bpe[pattern]
    text = "".join(KINDS.values()) * 5 + "x" * 500 + "\n  \n\n \nword\n" * 300
    expected = tok.hf.encode(text).ids
    for size in (7, 200, 1000):
        pieces = list(safe_pieces(parts_of(text, 333)(), size))
        assert "".join(pieces) == text
        assert max(len(p) for p in pieces) <= 4 * size + 333
        got = [i for p in pieces for i in tok.hf.encode(p).ids]
        if size > 500 / 4:  # smaller pieces are cut anyway inside the run of 500 x's (memory comes first)
            assert got == expected


# --- workers, progress, cancel, errors -------------------------------------------------------------------------


def test_any_number_of_workers_writes_the_same_file(tmp_path, mixed_bpe, monkeypatch):
    import gptui.core.encode as encode

    monkeypatch.setattr(encode, "PIECE_CHARS", 2000)  # many small batches, finishing out of order
    docs = [KINDS[k] * (i + 1) for i, k in enumerate(KINDS)] * 20
    tok = mixed_bpe["gpt4"]
    results = []
    for workers in (1, 3):
        out = tmp_path / f"w{workers}.bin"
        results.append(encode_documents(iter(docs), tok, out, dtype=np.uint16, workers=workers, is_val=len))
    assert results[0].n_tokens == results[1].n_tokens
    assert (tmp_path / "w1.bin").read_bytes() == (tmp_path / "w3.bin").read_bytes()


def test_progress_counts_bytes_with_an_eta(tmp_path, monkeypatch):
    import gptui.core.encode as encode

    monkeypatch.setattr(encode, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(encode, "PIECE_CHARS", 1000)
    tok = CharTokenizer(sorted(set("".join(DOCS))), eot=True)
    total = sum(len(d) for d in DOCS)
    seen = []
    encode_documents(iter(DOCS), tok, tmp_path / "t.bin", dtype=np.uint16, total_bytes=total,
                     progress=lambda stage, frac: seen.append((stage, frac)))
    fracs = [f for _, f in seen]
    assert len(seen) >= 3 and fracs == sorted(fracs) and fracs[-1] == 1.0
    assert all(stage.startswith("encoding ") and "MB" in stage and "eta" in stage for stage, _ in seen)
    assert progress_stage("encoding", 120_000_000, 1_024_000_000, 6.0) == "encoding 120 / 1,024 MB (20 MB/s, eta 0:45)"
    assert progress_stage("encoding", 5_000_000, None, 2.0) == "encoding 5 MB (2.5 MB/s)"


def cancelling(docs: list[str], at: int, cancel: threading.Event):
    """The documents, with `cancel` set as the one numbered `at` is read."""
    for k, d in enumerate(docs):
        if k == at:
            cancel.set()
        yield d


def test_cancel_leaves_no_file(tmp_path):
    tok = CharTokenizer(sorted(set("".join(DOCS))), eot=True)
    cancel = threading.Event()
    with pytest.raises(CorpusCancelled):
        encode_documents(cancelling(DOCS * 100, 500, cancel), tok, tmp_path / "t.bin", dtype=np.uint16,
                         is_val=is_val, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [KeyboardInterrupt, ValueError])
def test_an_error_while_reading_leaves_no_file(tmp_path, error):
    tok = CharTokenizer(sorted(set("".join(DOCS))), eot=True)

    def documents():
        yield from DOCS * 50
        raise error("line 7 is not JSON")

    with pytest.raises(error):
        encode_documents(documents(), tok, tmp_path / "t.bin", dtype=np.uint16, workers=2)
    assert list(tmp_path.iterdir()) == []


def test_an_error_in_a_worker_stops_the_rest_and_leaves_no_file(tmp_path, monkeypatch):
    import gptui.core.encode as encode

    tok = CharTokenizer(sorted(set("".join(DOCS))), eot=True)
    calls = []

    def failing(text: str) -> np.ndarray:
        calls.append(text)
        if len(calls) == 30:
            raise MemoryError("out of memory")
        return tok.encode_corpus(text)

    monkeypatch.setattr(encode, "fast_encoder", lambda tokenizer: encode.Encoder("char", failing))
    monkeypatch.setattr(encode, "PIECE_CHARS", 200)
    with pytest.raises(MemoryError):
        encode_documents(iter(DOCS * 50), tok, tmp_path / "t.bin", dtype=np.uint16, workers=2, is_val=is_val)
    assert list(tmp_path.iterdir()) == []
    assert len(calls) < 100, "it stops at the error: queued pieces are dropped, not encoded"


def test_cancel_while_training_the_tokenizer(tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CorpusCancelled):
        train_tokenizer_from_documents(lambda: iter(DOCS), "bpe", 300, "gpt4", 256, cancel=cancel)


def test_a_vocabulary_too_large_for_the_dtype_is_refused(tmp_path):
    tok = CharTokenizer([chr(0x20000 + i) for i in range(70_000)], eot=True)
    with pytest.raises(ValueError, match="uint16"):
        encode_documents(iter(["x"]), tok, tmp_path / "t.bin", dtype=np.uint16)
    assert list(tmp_path.iterdir()) == []


# --- the tokenizer's sample ----------------------------------------------------------------------------------


def test_a_large_corpus_is_sampled_across_its_whole_length():
    # two halves with different words: a sample spread over the corpus learns both, the first megabyte only one
    first = ["alpha beta gamma delta " * 2000 + "\n"] * 60
    second = ["zyxw vuts rqpo nmlk " * 2000 + "\n"] * 60
    docs = first + second
    total = sum(len(d) for d in docs)
    spread = train_tokenizer_from_documents(lambda: iter(docs), "bpe", 300, "gpt4", 1, total_bytes=total)
    prefix = train_tokenizer_from_documents(lambda: iter(docs), "bpe", 300, "gpt4", 1)
    assert b" zyxw" in spread.token_bytes and b" alpha" in spread.token_bytes
    assert b" zyxw" not in prefix.token_bytes and b" alpha" in prefix.token_bytes
    whole = train_tokenizer_from_documents(lambda: iter(docs), "bpe", 300, "gpt4", 256, total_bytes=total)
    assert whole.token_bytes == train_tokenizer("".join(docs), "bpe", 300).token_bytes


def test_char_tokenizer_sees_every_character_of_a_large_corpus():
    docs = ["plain ascii text\n"] * 1000 + ["ünïcode 日本 🦜\n"]
    tok = train_tokenizer_from_documents(lambda: iter(docs), "char", 0, "", 1)
    assert tok.chars == sorted(set("".join(docs)))
    assert tok.eot_id == len(tok.chars)


# --- worker processes (a large corpus that tiktoken encodes) --------------------------------------------------


def _encode_in_processes(tmp_path, tok, docs, name, monkeypatch, cancel=None) -> tuple[Path, EncodedCorpus, list]:
    """encode_documents with worker processes whatever the corpus's size; also the pools it used."""
    import gptui.core.encode as encode

    monkeypatch.setattr(encode, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(encode, "PIECE_CHARS", 2000)  # many batches in flight
    pools = []
    real_processes, real_threads = encode._workers_for, encode._threads

    def recorded(real):
        def pool(*args):
            made = real(*args)
            pools.append(type(made[0]).__name__)
            return made
        return pool

    monkeypatch.setattr(encode, "_workers_for", recorded(real_processes))
    monkeypatch.setattr(encode, "_threads", recorded(real_threads))
    out = tmp_path / name
    result = encode_documents(iter(docs), tok, out, dtype=np.uint16, workers=2, is_val=len, cancel=cancel)
    return out, result, pools


MANY_DOCS = [KINDS[k] * (i + 1) for i, k in enumerate(KINDS)] * 20


def test_worker_processes_write_the_file_threads_write(tmp_path, mixed_bpe, monkeypatch):
    tok = mixed_bpe["gpt4"]
    threads = encode_documents(iter(MANY_DOCS), tok, tmp_path / "threads.bin", dtype=np.uint16, workers=2,
                               is_val=len)
    out, processes, pools = _encode_in_processes(tmp_path, tok, MANY_DOCS, "processes.bin", monkeypatch)
    assert pools == ["ProcessPoolExecutor"] and processes.encoder == "tiktoken"
    assert (processes.n_tokens, processes.split, processes.val_bytes, processes.documents) == (
        threads.n_tokens, threads.split, threads.val_bytes, threads.documents)
    assert out.read_bytes() == (tmp_path / "threads.bin").read_bytes()


def test_worker_processes_that_cannot_start_leave_the_work_to_threads(tmp_path, mixed_bpe, monkeypatch):
    """A worker process that dies (here: its initializer cannot read the tokenizer) breaks the pool; the
    batches not yet written are encoded again by threads, and the file is the same."""
    tok = tokenizer_from_json(mixed_bpe["gpt4"].to_json())
    expected = encode_documents(iter(MANY_DOCS), tok, tmp_path / "threads.bin", dtype=np.uint16, workers=2,
                                is_val=len)
    monkeypatch.setattr(tok, "to_json", lambda: "not a tokenizer")
    out, result, pools = _encode_in_processes(tmp_path, tok, MANY_DOCS, "fallback.bin", monkeypatch)
    assert pools == ["ProcessPoolExecutor", "ThreadPoolExecutor"]
    assert result.n_tokens == expected.n_tokens
    assert out.read_bytes() == (tmp_path / "threads.bin").read_bytes()


def test_cancel_with_worker_processes_leaves_no_file(tmp_path, mixed_bpe, monkeypatch):
    cancel = threading.Event()
    (tmp_path / "out").mkdir()
    with pytest.raises(CorpusCancelled):
        _encode_in_processes(tmp_path / "out", mixed_bpe["gpt4"], cancelling(MANY_DOCS * 5, 400, cancel), "t.bin",
                             monkeypatch, cancel)
    assert list((tmp_path / "out").iterdir()) == []
