"""The Tokens view's engine: spans that join back into the text exactly (BPE and char; CJK, emoji, newlines), a
corpus's passages and statistics from its prepared tokens (counted in chunks, the counts kept beside them), and
the vocabulary by length, frequency and search."""

from __future__ import annotations

import numpy as np
import pytest

from gptui.core import vocabulary
from gptui.core.data import TokenizerSpec, cache_entries, prepare
from gptui.core.errors import InputError
from gptui.core.tokenizer import EOT, train_tokenizer

TEXT = "First Citizen:\nAll: Speak,\n\nspeak.\t日本語の文章 🙂🚀 👨‍👩‍👧\r\nnaïve café\n"
ODD = ["日本語", "🙂", "👨‍👩‍👧", "\n\n\n", "\t e \r\n", "naïve", " ", TEXT]


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer(TEXT * 30, "bpe", 300)


@pytest.fixture(scope="module")
def char():
    return train_tokenizer(TEXT, "char")


@pytest.mark.parametrize("kind", ["bpe", "char"])
@pytest.mark.parametrize("text", ODD)
def test_spans_join_back_into_the_text_exactly(kind, text, request) -> None:
    tok = request.getfixturevalue(kind)
    ids, spans = vocabulary.encode_text(tok, text)
    assert len(spans) == len(ids) > 0
    assert "".join(spans) == text


def test_a_bpe_token_that_holds_part_of_a_character_is_marked(bpe) -> None:
    ids, spans = vocabulary.encode_text(bpe, "🚀")  # seen once per repeat: no merge makes it one token
    assert len(ids) > 1 and spans[-1] == "🚀" and all(s == "" for s in spans[:-1])
    assert not vocabulary.is_whole(bpe, ids[0]) and vocabulary.token_text(bpe, ids[0]) == "\ufffd"
    assert " ".join(vocabulary.token_hex(bpe, i) for i in ids) == "f0 9f 9a 80"
    labels = [vocabulary.token_label(bpe, i) for i in ids]  # the vocabulary list names the bytes
    assert "".join(labels).replace("><", " ") == "<f0 9f 9a 80>" and all(label.startswith("<") for label in labels)
    whole = bpe.encode("café")
    assert "".join(vocabulary.token_label(bpe, i) for i in whole) == "café"
    assert b"".join(bpe.token_bytes[i] for i in ids) == "🚀".encode()


def test_text_a_tokenizer_cannot_take_is_refused_in_one_line(char) -> None:
    with pytest.raises(InputError, match="empty"):
        vocabulary.encode_text(char, "")
    with pytest.raises(InputError, match="never seen: 'Z'"):
        vocabulary.encode_text(char, "Zebra")


def test_end_of_text_shows_by_name_and_has_no_bytes(char) -> None:
    assert vocabulary.token_text(char, char.eot_id) == EOT == vocabulary.token_label(char, char.eot_id)
    assert vocabulary.token_hex(char, char.eot_id) == ""


@pytest.fixture
def prepared(workspace, corpus, make_corpus_text):
    """tiny.txt (with a CJK and emoji line, so characters and bytes differ) prepared with a small BPE."""
    text = make_corpus_text() + "日本語の文章 🙂🚀 naïve\n"
    corpus.write_text(text, encoding="utf-8")
    spec = TokenizerSpec("bpe", 300, "gpt4")
    data = prepare(corpus, spec, workspace.cache, workers=1)
    return text, spec, data


def test_a_corpus_is_found_prepared_with_each_tokenizer_it_was_prepared_with(workspace, corpus, prepared) -> None:
    text, spec, data = prepared
    entries = cache_entries(workspace.cache, corpus)
    found = entries.load(spec)
    assert found is not None and found[1].tokens.tolist() == data.tokens.tolist()
    assert entries.load(TokenizerSpec("bpe", 400, "gpt4")) is None and list(entries.folders) == [spec.key()]
    char = prepare(corpus, TokenizerSpec("char", 0, ""), workspace.cache, workers=1)
    entries = cache_entries(workspace.cache, corpus)
    assert set(entries.folders) == {spec.key(), "char-v1"} and entries.load("char-v1")[1].tokenizer.kind == "char"
    assert len(char.tokens) == len(text)
    corpus.write_text(text + "more\n", encoding="utf-8")  # another text: another entry, not prepared
    entries = cache_entries(workspace.cache, corpus)
    assert entries.load(spec) is None and entries.folders == {}


def test_passages_are_the_corpus_text_itself(prepared) -> None:
    text, _, data = prepared
    tok, tokens = data.tokenizer, data.tokens
    first = vocabulary.passage(tokens, tok, 0, 50)
    assert first.start == 0 and first.end == 50 and text.startswith("".join(first.spans))
    whole = vocabulary.passage(tokens, tok, 0, len(tokens))
    assert "".join(whole.spans) == text
    last = vocabulary.passage(tokens, tok, len(tokens) + 99, 50)  # past the end: the last token
    assert last.end == len(tokens) and text.endswith("".join(last.spans))


def test_a_passage_starting_inside_a_character_moves_to_the_next_one(bpe) -> None:
    ids = bpe.encode("a🚀b")
    tokens = np.array(ids, dtype=np.uint16)
    inside = next(k for k, i in enumerate(ids) if bpe.token_bytes[i][:1] and bpe.token_bytes[i][0] & 0xC0 == 0x80)
    part = vocabulary.passage(tokens, bpe, inside, 10)
    assert "".join(part.spans) == "b" and part.start == len(ids) - 1


def test_counts_and_statistics_come_from_the_prepared_tokens(prepared, monkeypatch) -> None:
    text, _, data = prepared
    tok, tokens = data.tokenizer, data.tokens
    monkeypatch.setattr(vocabulary, "COUNT_CHUNK", 7)  # many chunks, one of them short
    counts = vocabulary.token_counts(tokens, tok.vocab_size)
    assert counts.tolist() == np.bincount(tokens, minlength=tok.vocab_size).tolist()
    stats = vocabulary.corpus_stats(tok, counts)
    assert stats.bytes == len(text.encode("utf-8")) and stats.chars == len(text) != stats.bytes
    assert stats.tokens + stats.end_of_text == len(tokens)
    assert stats.bytes_per_token == pytest.approx(stats.bytes / stats.tokens)
    assert stats.chars_per_token == pytest.approx(len(text) / stats.tokens)


def test_end_of_text_tokens_are_counted_apart(workspace) -> None:
    folder = workspace.inputs / "notes.jsonl"
    folder.write_text('{"text": "one doc"}\n{"text": "another doc"}\n{"text": "a third"}\n', encoding="utf-8")
    data = prepare(folder, TokenizerSpec("char", 0, ""), workspace.cache, workers=1)
    stats = vocabulary.corpus_stats(data.tokenizer, vocabulary.token_counts(data.tokens, data.tokenizer.vocab_size))
    assert stats.end_of_text == data.documents - 1 == 2
    assert stats.tokens == stats.chars == stats.bytes == len("one docanother doca third")


def test_counts_are_kept_beside_a_large_corpus_and_recounted_when_wrong(prepared, monkeypatch, tmp_path) -> None:
    _, _, data = prepared
    tokens, vocab = data.tokens, data.tokenizer.vocab_size
    truth = np.bincount(tokens, minlength=vocab)
    assert vocabulary.token_counts(tokens, vocab, tmp_path).tolist() == truth.tolist()
    assert not (tmp_path / vocabulary.COUNTS_FILE).exists()  # small: counting again is cheaper than a file
    monkeypatch.setattr(vocabulary, "CACHE_COUNTS_FROM", 1)
    vocabulary.token_counts(tokens, vocab, tmp_path)
    kept = np.load(tmp_path / vocabulary.COUNTS_FILE)
    assert kept.tolist() == truth.tolist()
    fake = np.zeros(vocab, dtype=np.int64)
    fake[0] = len(tokens)
    np.save(tmp_path / vocabulary.COUNTS_FILE, fake)  # adds up: served as kept, no recount
    assert vocabulary.token_counts(tokens, vocab, tmp_path).tolist() == fake.tolist()
    np.save(tmp_path / vocabulary.COUNTS_FILE, fake * 2)  # does not add up: counted again and rewritten
    assert vocabulary.token_counts(tokens, vocab, tmp_path).tolist() == truth.tolist()
    (tmp_path / vocabulary.COUNTS_FILE).write_bytes(b"not numpy")
    assert vocabulary.token_counts(tokens, vocab, tmp_path).tolist() == truth.tolist()


def test_longest_and_most_frequent(bpe) -> None:
    longest = vocabulary.longest(bpe, 10)
    lengths = [len(bpe.token_bytes[i]) for i in longest]
    assert lengths == sorted(lengths, reverse=True) and lengths[0] == max(map(len, bpe.token_bytes))
    assert bpe.eot_id not in vocabulary.longest(bpe, bpe.vocab_size)
    counts = np.zeros(bpe.vocab_size, dtype=np.int64)
    counts[[5, 9, 7]] = [3, 8, 3]
    assert vocabulary.most_frequent(counts, 10) == [9, 5, 7]  # ties by id; ids never seen are left out
    assert vocabulary.most_frequent(counts, 2) == [9, 5]


def test_search_finds_text_case_insensitively_and_ids(bpe) -> None:
    found = vocabulary.search(bpe, "SPEAK", 50)
    assert found and all("speak" in vocabulary.token_text(bpe, i).casefold() for i in found)
    assert [len(bpe.token_bytes[i]) for i in found] == sorted(len(bpe.token_bytes[i]) for i in found)
    assert vocabulary.search(bpe, "zzzz", 50) == [] and vocabulary.search(bpe, "", 50) == []
    by_id = vocabulary.search(bpe, "65", 50)
    assert by_id[0] == 65 and len(by_id) == len(set(by_id))
    assert len(vocabulary.search(bpe, "e", 3)) == 3
