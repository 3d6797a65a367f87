"""What a tokenizer does to text and to a prepared corpus, for the Tokens view (the tokenization lecture's
coloured tokens, the tiktokenizer app): a passage or a typed text cut into its tokens' spans, the corpus's
characters and bytes per token, and the vocabulary by length, by frequency and by search.

Everything over the whole corpus comes from its prepared `tokens.bin` (never re-encoded): the count of each id,
computed a chunk at a time with `numpy.bincount` and kept next to the tokens, gives the tokens, the bytes (each
id's byte length) and the characters (each id's bytes that start a UTF-8 character) in one small dot product.
"""

from __future__ import annotations

import codecs
import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptui.core.errors import InputError
from gptui.core.fsio import atomic_write
from gptui.core.tokenizer import EOT, Tokenizer, token_spans

COUNTS_FILE = "token_counts.npy"
COUNT_CHUNK = 1 << 22  # tokens counted at a time: bounded memory over a memory-mapped corpus of any size
CACHE_COUNTS_FROM = 1 << 20  # below this many tokens counting is a blink, and nothing is written


@dataclass(frozen=True)
class Passage:
    """Tokens `start` to `start + len(ids)` of a corpus, with each one's piece of the text."""

    start: int
    ids: list[int]
    spans: list[str]

    @property
    def end(self) -> int:
        return self.start + len(self.ids)


@dataclass(frozen=True)
class CorpusStats:
    """The whole corpus in tokens: the end-of-text tokens between documents carry no text and are kept apart."""

    tokens: int  # tokens of text
    end_of_text: int
    bytes: int
    chars: int

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / max(1, self.tokens)

    @property
    def chars_per_token(self) -> float:
        return self.chars / max(1, self.tokens)


def token_text(tokenizer: Tokenizer, token_id: int) -> str:
    """A token as text: bytes of a character split across tokens show as U+FFFD, end-of-text by its name."""
    if token_id == tokenizer.eot_id:
        return EOT
    return tokenizer.token_bytes[token_id].decode("utf-8", errors="replace")


def _hex_bytes(error: UnicodeDecodeError) -> tuple[str, int]:
    return f"<{error.object[error.start:error.end].hex(' ')}>", error.end


codecs.register_error("gptui.hex", _hex_bytes)


def token_label(tokenizer: Tokenizer, token_id: int) -> str:
    """A token for a list of the vocabulary: its text, with the bytes of a character split across tokens in hex
    ('の<e6 96>'), end-of-text by its name."""
    if token_id == tokenizer.eot_id:
        return EOT
    return tokenizer.token_bytes[token_id].decode("utf-8", errors="gptui.hex").replace("><", " ")


def token_hex(tokenizer: Tokenizer, token_id: int) -> str:
    """A token's UTF-8 bytes in hex, 'e4 b8 ad' (empty for end-of-text, which has none)."""
    return tokenizer.token_bytes[token_id].hex(" ")


def is_whole(tokenizer: Tokenizer, token_id: int) -> bool:
    """Whether a token's bytes are whole characters (a byte-level token may hold part of one)."""
    try:
        tokenizer.token_bytes[token_id].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def encode_text(tokenizer: Tokenizer, text: str) -> tuple[list[int], list[str]]:
    """A typed text's ids and spans; InputError (one line) for empty text or characters a char tokenizer never
    saw."""
    if not text:
        raise InputError("the text is empty: type some text to tokenize")
    ids = tokenizer.encode(text)  # a char tokenizer raises InputError naming the characters it lacks
    return ids, token_spans(tokenizer, ids)


def passage(tokens: np.ndarray, tokenizer: Tokenizer, start: int, length: int) -> Passage:
    """About `length` tokens from token `start` on (clamped to the corpus). A start inside a character (its
    token begins with a UTF-8 continuation byte) moves on to the next token that begins one, so the passage's
    spans are the corpus's own text."""
    n = len(tokens)
    start = min(max(0, start), max(0, n - 1))
    while start < n - 1 and _continues(tokenizer.token_bytes[int(tokens[start])]):
        start += 1
    ids = [int(i) for i in tokens[start : start + max(1, length)]]
    return Passage(start, ids, token_spans(tokenizer, ids))


def _continues(piece: bytes) -> bool:
    return bool(piece) and piece[0] & 0xC0 == 0x80


def token_counts(tokens: np.ndarray, vocab_size: int, folder: Path | None = None) -> np.ndarray:
    """How often each id occurs in `tokens`, a chunk at a time. With `folder` (the prepared entry) a corpus of
    `CACHE_COUNTS_FROM` tokens or more keeps its counts there; a kept file that does not add up is recounted."""
    path = Path(folder) / COUNTS_FILE if folder is not None else None
    if path is not None:
        try:
            kept = np.load(path, allow_pickle=False)
            if kept.shape == (vocab_size,) and int(kept.sum()) == len(tokens):
                return kept
        except (OSError, ValueError):
            pass
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(tokens), COUNT_CHUNK):
        counts += np.bincount(tokens[start : start + COUNT_CHUNK], minlength=vocab_size)[:vocab_size]
    if path is not None and len(tokens) >= CACHE_COUNTS_FROM:
        with contextlib.suppress(OSError):  # a read-only cache only costs the next look a recount
            atomic_write(path, lambda tmp: _save_array(tmp, counts))
    return counts


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # given a path, np.save would write to path + ".npy"
        np.save(f, array, allow_pickle=False)


def corpus_stats(tokenizer: Tokenizer, counts: np.ndarray) -> CorpusStats:
    lengths = np.array([len(b) for b in tokenizer.token_bytes], dtype=np.int64)
    starts = np.array([sum(1 for byte in b if byte & 0xC0 != 0x80) for b in tokenizer.token_bytes], dtype=np.int64)
    eot = int(counts[tokenizer.eot_id]) if tokenizer.eot_id is not None else 0
    return CorpusStats(int(counts.sum()) - eot, eot, int(counts @ lengths), int(counts @ starts))


def longest(tokenizer: Tokenizer, limit: int) -> list[int]:
    """The ids with the most bytes, longest first (ties by id)."""
    ids = [i for i in range(tokenizer.vocab_size) if i != tokenizer.eot_id]
    return sorted(ids, key=lambda i: (-len(tokenizer.token_bytes[i]), i))[:limit]


def most_frequent(counts: np.ndarray, limit: int) -> list[int]:
    """The ids that occur most in the corpus, most first (ties by id); ids that never occur are left out."""
    order = np.lexsort((np.arange(len(counts)), -counts))
    return [int(i) for i in order[:limit] if counts[i] > 0]


def search(tokenizer: Tokenizer, query: str, limit: int) -> list[int]:
    """Tokens whose text contains `query` (case-insensitive), shortest first; a number also finds that id, first."""
    if not query:
        return []
    found: list[int] = []
    if query.isdigit() and int(query) < tokenizer.vocab_size:
        found.append(int(query))
    folded = query.casefold()
    matches = [i for i in range(tokenizer.vocab_size) if folded in token_text(tokenizer, i).casefold()]
    matches.sort(key=lambda i: (len(tokenizer.token_bytes[i]), i))
    found += [i for i in matches if i not in found[:1]]
    return found[:limit]
