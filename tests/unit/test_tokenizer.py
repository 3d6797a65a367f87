"""Tokenizers: exact round trips (BPE and char), save/load, token_bytes, chunking of large corpora."""

from __future__ import annotations

import json

import pytest

from gptui.core.errors import InputError
from gptui.core.tokenizer import (
    BpeTokenizer,
    CharTokenizer,
    load_tokenizer,
    split_chunks,
    tokenizer_from_json,
    train_tokenizer,
)

TRAIN_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "Café déjà vu, naïve façade, Zürich, São Paulo, Ελληνικά, русский.\n"
    "日本語のテキストと中文文本。한국어 텍스트.\n"
    "Numbers 12345 67890, 3.14159; e-mail: someone@example.com\r\n"
    "Emoji 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🎉\ttabs\tand  double  spaces   \n"
) * 20

SAMPLES = {
    "ascii": "Hello, world! It's 2024 -- we'll see. ~!@#$%^&*()_+{}|:\"<>?`[]\\;',./",
    "accents": "Café déjà vu, naïve façade; ÀÉÎÕÜ ñ ç ß ø å",
    "decomposed accents": "Cafe\u0301 de\u0301ja\u0300 vu",
    "cjk": "日本語のテキストと中文文本。한국어 텍스트.",
    "emoji": "👍 🎉 🐍 😀😃😄",
    "emoji skin tones": "👍🏻 👍🏼 👍🏽 👍🏾 👍🏿 👋🏽",
    "emoji zwj": "👨‍👩‍👧‍👦 🏳️‍🌈 👩🏽‍💻 🧑‍🤝‍🧑",
    "nul": "before\x00after\x00\x00",
    "crlf": "line one\r\nline two\r\n\r\nline four\r\n",
    "lone cr and controls": "a\rb\x1b[31mred\x1b[0m\x07\x7f",
    "whitespace": "  leading\n\n\n\ttabs\t\t and trailing   \n \u00a0nbsp\u2003em space",
    "empty": "",
    "single newline": "\n",
    "unseen in training": "Ωmega ∑∫√ ƒ ₿ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🦜 ꙮ \U0010fffd",
}


@pytest.fixture(scope="module")
def bpe_tokenizers():
    """One BPE tokenizer per (vocab, pattern) combination, trained once for the module."""
    out = {}
    for vocab in (257, 300, 1024):
        for pattern in ("gpt4", "gpt2"):
            out[vocab, pattern] = train_tokenizer(TRAIN_TEXT, "bpe", vocab, pattern)
    return out


BPE_KEYS = [(v, p) for v in (257, 300, 1024) for p in ("gpt4", "gpt2")]


@pytest.mark.parametrize("key", BPE_KEYS, ids=[f"bpe{v}-{p}" for v, p in BPE_KEYS])
@pytest.mark.parametrize("name", list(SAMPLES))
def test_bpe_round_trip(bpe_tokenizers, key, name):
    tok = bpe_tokenizers[key]
    text = SAMPLES[name]
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    # the bytes of the ids are exactly the UTF-8 bytes of the text (what streaming generation relies on)
    assert b"".join(tok.token_bytes[i] for i in ids) == text.encode("utf-8")


@pytest.mark.parametrize("key", BPE_KEYS, ids=[f"bpe{v}-{p}" for v, p in BPE_KEYS])
def test_bpe_vocab_size_and_byte_alphabet(bpe_tokenizers, key):
    vocab, _ = key
    tok = bpe_tokenizers[key]
    assert tok.kind == "bpe"
    # the trained vocabulary (bytes + merges) has `vocab` ids at most; the end-of-text id comes after it
    assert tok.eot_id == tok.vocab_size - 1
    assert 257 <= tok.eot_id <= vocab
    if vocab <= 300:  # the training text has far more than 44 distinct pairs
        assert tok.eot_id == vocab
    text_ids = tok.token_bytes[: tok.eot_id]
    # every one of the 256 byte values is a token of its own: any UTF-8 text can be encoded
    singles = {b for b in text_ids if len(b) == 1}
    assert singles == {bytes([i]) for i in range(256)}
    assert all(text_ids), "no text token may decode to nothing"
    assert tok.token_bytes[tok.eot_id] == b"", "end-of-text stands for no text"
    assert len(set(text_ids)) == tok.eot_id, "two ids for the same bytes"


def test_bpe_merges_shorten_text(bpe_tokenizers):
    text = TRAIN_TEXT[:2000]
    n257 = len(bpe_tokenizers[257, "gpt4"].encode(text))
    n1024 = len(bpe_tokenizers[1024, "gpt4"].encode(text))
    assert n257 < len(text.encode("utf-8"))
    assert n1024 < n257


def test_bpe_patterns_differ(bpe_tokenizers):
    # GPT-4's pattern splits digits in runs of at most three; GPT-2's keeps a whole run of digits together
    a = bpe_tokenizers[1024, "gpt4"]
    b = bpe_tokenizers[1024, "gpt2"]
    assert json.loads(a.to_json())["pre_tokenizer"] != json.loads(b.to_json())["pre_tokenizer"]


def test_bpe_vocab_below_257_refused():
    with pytest.raises(InputError, match="257"):
        train_tokenizer(TRAIN_TEXT, "bpe", 256)


def test_unknown_tokenizer_kind_refused():
    with pytest.raises(InputError, match="unknown tokenizer"):
        train_tokenizer(TRAIN_TEXT, "wordpiece")


# --- char ------------------------------------------------------------------------------------------------------


# the char tokenizer is trained on every sample but the unseen one
CHAR_TRAIN_TEXT = TRAIN_TEXT + "".join(t for n, t in SAMPLES.items() if n != "unseen in training")


@pytest.fixture(scope="module")
def char_tok():
    return train_tokenizer(CHAR_TRAIN_TEXT, "char")


@pytest.mark.parametrize("name", [n for n in SAMPLES if n != "unseen in training"])
def test_char_round_trip(char_tok, name):
    text = SAMPLES[name]
    ids = char_tok.encode(text)
    assert len(ids) == len(text), "char-level: one token per code point"
    assert char_tok.decode(ids) == text
    assert b"".join(char_tok.token_bytes[i] for i in ids) == text.encode("utf-8")


def test_char_round_trips_its_whole_training_text(char_tok):
    assert char_tok.decode(char_tok.encode(CHAR_TRAIN_TEXT)) == CHAR_TRAIN_TEXT
    # ZWJ sequences and skin tones are several code points, each its own token
    assert "\u200d" in char_tok.chars and "\U0001f3fd" in char_tok.chars


def test_char_vocab_is_sorted_distinct_characters(char_tok):
    assert char_tok.kind == "char"
    assert char_tok.chars == sorted(set(CHAR_TRAIN_TEXT))
    assert char_tok.vocab_size == len(char_tok.chars) + 1  # the end-of-text id, after every character
    assert char_tok.eot_id == len(char_tok.chars)
    assert char_tok.encode(char_tok.chars[0] + char_tok.chars[-1]) == [0, len(char_tok.chars) - 1]


def test_char_empty_string(char_tok):
    assert char_tok.encode("") == []
    assert char_tok.decode([]) == ""


def test_char_unseen_characters_raise_input_error(char_tok):
    with pytest.raises(InputError, match="never seen") as info:
        char_tok.encode("Hello Ω world")
    assert "'Ω'" in str(info.value), "the message names the offending character"
    assert "\n" not in str(info.value), "one-line message"
    with pytest.raises(InputError, match="never seen"):
        char_tok.encode(SAMPLES["unseen in training"])


def test_char_unseen_characters_in_corpus_encode(char_tok):
    with pytest.raises(InputError, match="🦜"):
        char_tok.encode_corpus("abc 🦜")


# --- save / load ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_tokenizer_json_save_load_round_trip(tmp_path, bpe_tokenizers, char_tok, kind):
    tok = bpe_tokenizers[300, "gpt4"] if kind == "bpe" else char_tok
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok)
    assert loaded.kind == kind
    assert loaded.vocab_size == tok.vocab_size
    assert loaded.token_bytes == tok.token_bytes
    for text in (TRAIN_TEXT[:3000], SAMPLES["emoji zwj"], SAMPLES["crlf"], ""):
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.decode(loaded.encode(text)) == text
    assert tokenizer_from_json(path.read_text(encoding="utf-8")).token_bytes == tok.token_bytes


def test_bpe_tokenizer_json_is_a_huggingface_file(tmp_path, bpe_tokenizers):
    from tokenizers import Tokenizer as HfTokenizer

    tok = bpe_tokenizers[300, "gpt2"]
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    hf = HfTokenizer.from_file(str(path))
    text = SAMPLES["accents"] + SAMPLES["emoji"]
    assert hf.encode(text).ids == tok.encode(text)
    assert hf.decode(hf.encode(text).ids) == text


def test_char_tokenizer_json_format(tmp_path, char_tok):
    path = tmp_path / "tokenizer.json"
    char_tok.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["type"] == "gptui-char"
    assert data["chars"] == char_tok.chars


def test_malformed_char_tokenizer_json_refused():
    with pytest.raises(ValueError):
        tokenizer_from_json(json.dumps({"type": "gptui-char", "chars": ["ab", "c"]}))


# --- token_bytes and decode ------------------------------------------------------------------------------------


def test_token_bytes_consistent_with_decode(bpe_tokenizers, char_tok):
    for tok in (bpe_tokenizers[1024, "gpt4"], char_tok):
        ids = tok.encode(TRAIN_TEXT[:5000])
        assert b"".join(tok.token_bytes[i] for i in ids).decode("utf-8") == tok.decode(ids)
        for i in range(tok.vocab_size):
            piece = tok.token_bytes[i]
            if i == tok.eot_id:  # no text, but shown where it falls (in training samples)
                assert piece == b"" and tok.decode([i]) == "<|endoftext|>"
                continue
            assert tok.decode([i]) == piece.decode("utf-8", errors="replace")


def test_bpe_token_bytes_agree_with_huggingface_decoder(bpe_tokenizers):
    tok = bpe_tokenizers[1024, "gpt4"]
    ids = tok.encode(TRAIN_TEXT[:4000])
    assert tok.hf.decode(ids) == tok.decode(ids)
    for i in range(tok.vocab_size):
        piece = tok.token_bytes[i]
        try:
            text = piece.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a partial character: only meaningful next to its neighbours
        assert tok.hf.decode([i]) == text


def test_decode_of_a_split_character_is_replaced_not_raised(bpe_tokenizers):
    tok = bpe_tokenizers[257, "gpt4"]
    ids = tok.encode("é")
    assert len(ids) == 2  # two bytes, no merge for them at vocab 257
    assert tok.decode(ids[:1]) == "\ufffd"


# --- chunking and corpus encoding ----------------------------------------------------------------------------

CHUNK_TEXTS = {
    "no newline": "word " * 500,
    "newlines then spaces": ("line\n  indented\n\n\tx\n" * 100),
    "ends with newline": "abc\n" * 300,
    "crlf": "row\r\n" * 300,
    "only newlines": "\n" * 1000,
    "mixed": TRAIN_TEXT,
    "unicode": SAMPLES["emoji zwj"] * 50 + "\n" + SAMPLES["cjk"] * 50,
}


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 16])
@pytest.mark.parametrize("name", list(CHUNK_TEXTS))
def test_split_chunks_never_loses_text(name, size):
    text = CHUNK_TEXTS[name]
    chunks = split_chunks(text, size)
    assert "".join(chunks) == text
    assert all(chunks), "no empty chunk"
    for chunk in chunks[:-1]:
        assert len(chunk) >= size
        assert chunk.endswith("\n"), "cuts only after a newline"


def test_split_chunks_empty():
    assert split_chunks("") == []


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_bpe_encode_corpus_equals_encode(bpe_tokenizers, pattern):
    """The corpus is encoded in chunks (in parallel); the result must equal encoding the text in one go."""
    tok = bpe_tokenizers[1024, pattern]
    text = TRAIN_TEXT * 4 + ("\n".join(SAMPLES.values()) + "!\n\n x\n") * 150 + " trailing"
    assert len(text) > 1 << 16  # more than one chunk
    assert len(split_chunks(text)) > 1
    fast = tok.encode_corpus(text)
    assert fast.tolist() == tok.encode(text)
    assert tok.decode(fast.tolist()) == text


def test_char_encode_corpus_equals_encode(char_tok):
    arr = char_tok.encode_corpus(TRAIN_TEXT)
    assert arr.tolist() == char_tok.encode(TRAIN_TEXT)


def test_classes_exposed():
    assert BpeTokenizer.kind == "bpe" and CharTokenizer.kind == "char"
