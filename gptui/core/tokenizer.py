"""Tokenizers: byte-level BPE (on the `tokenizers` library) and the lecture's character-level one.

Both map text to ids and back exactly, expose `token_bytes` (the UTF-8 bytes of each id, which lets generation
stream text without splitting a character) and save to a single `tokenizer.json` loadable with `load_tokenizer`.

A tokenizer made since corpora have several documents has one more id, `eot_id`, the end-of-text token placed
between documents: it comes after the trained vocabulary (so the merges and every other id are the ones the same
text always gave), has no bytes (bits per byte count only text), and no text encodes to it (a literal
"<|endoftext|>" in a document is ordinary text). Tokenizers saved before it have `eot_id` None.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path

import numpy as np

from gptui.core.errors import InputError

# GPT-4 (cl100k) and GPT-2 split patterns, as in tiktoken / minbpe.
SPLIT_PATTERNS = {
    "gpt4": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""",
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
}
CHAR_FORMAT = "gptui-char"
CHUNK_CHARS = 1 << 16
EOT = "<|endoftext|>"

Progress = Callable[[str, float | None], None]


@cache
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


class Tokenizer:
    """Common interface: `encode`, `decode`, `vocab_size`, `token_bytes`, `eot_id`, `to_json`."""

    kind: str
    token_bytes: list[bytes]
    eot_id: int | None = None

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_corpus(self, text: str, progress: Progress | None = None) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        eot = EOT.encode("utf-8")
        return b"".join(eot if i == self.eot_id else self.token_bytes[i] for i in ids).decode(
            "utf-8", errors="replace")

    def to_json(self) -> str:
        raise NotImplementedError

    def save(self, path: Path) -> None:
        from gptui.core.fsio import atomic_write_text

        atomic_write_text(Path(path), self.to_json())

    def describe(self) -> str:
        return f"{self.kind} ({self.vocab_size} tokens)"


class CharTokenizer(Tokenizer):
    """One token per Unicode character seen in the training text (Karpathy's lecture tokenizer)."""

    kind = "char"

    def __init__(self, chars: Sequence[str], eot: bool = False):
        self.chars = list(chars)
        self.token_bytes = [c.encode("utf-8") for c in self.chars]
        if eot:  # reserved after every character, so each character keeps the id it always had
            self.eot_id = len(self.chars)
            self.token_bytes.append(b"")
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        self._order = np.argsort(self._codes)
        self._sorted = self._codes[self._order]

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)), eot=True)

    def encode(self, text: str) -> list[int]:
        return self.encode_corpus(text).tolist()

    def encode_corpus(self, text: str, progress: Progress | None = None) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        pos = np.searchsorted(self._sorted, codes)
        pos = np.minimum(pos, len(self._sorted) - 1)
        bad = self._sorted[pos] != codes
        if bad.any():
            missing = sorted({chr(c) for c in codes[bad][:1000]})
            shown = ", ".join(repr(c) for c in missing[:5])
            raise InputError(f"text has characters this char-level tokenizer has never seen: {shown}")
        return self._order[pos].astype(np.int64)

    def to_json(self) -> str:
        if self.eot_id is None:  # as saved before the end-of-text id existed, byte for byte
            return json.dumps({"type": CHAR_FORMAT, "version": 1, "chars": self.chars}, ensure_ascii=False)
        return json.dumps({"type": CHAR_FORMAT, "version": 2, "chars": self.chars, "eot": True}, ensure_ascii=False)


class BpeTokenizer(Tokenizer):
    """Byte-level BPE: every byte is a token, merges learned on the corpus; any UTF-8 text round-trips."""

    kind = "bpe"

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer
        byte_of = {ch: b for b, ch in _byte_to_unicode().items()}
        vocab = hf_tokenizer.get_vocab()
        self.eot_id = vocab.get(EOT) if EOT in _special_tokens(hf_tokenizer) else None
        table = [b""] * len(vocab)
        for piece, idx in vocab.items():
            if idx != self.eot_id:
                table[idx] = bytes(byte_of[ch] for ch in piece)
        self.token_bytes = table
        if self.eot_id is not None:
            # not saved in tokenizer.json: without it `tokenizers` would turn the text "<|endoftext|>" into eot
            hf_tokenizer.encode_special_tokens = True

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        pattern: str = "gpt4",
        progress: Progress | None = None,
        show_progress: bool = False,
    ) -> BpeTokenizer:
        chunks = split_chunks(text)
        if progress:
            progress("training tokenizer", None)
        return cls.train_from_iterator(chunks, vocab_size, pattern, show_progress, length=len(chunks))

    @classmethod
    def train_from_iterator(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        pattern: str = "gpt4",
        show_progress: bool = False,
        length: int | None = None,
    ) -> BpeTokenizer:
        """Train on `texts`, pieces of text each ending where no pre-token can straddle (see `split_chunks`);
        the end-of-text token is then added after the trained vocabulary."""
        from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, trainers
        from tokenizers import Tokenizer as HfTokenizer

        if vocab_size < 257:
            raise InputError(f"vocab_size must be at least 257 (256 bytes + 1 merge), not {vocab_size}")
        hf = HfTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(SPLIT_PATTERNS[pattern]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],  # a special token given here would take id 0 and shift every other id
            show_progress=show_progress,
        )
        hf.train_from_iterator(texts, trainer=trainer, length=length)
        hf.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
        return cls(hf)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text).ids

    def encode_corpus(self, text: str, progress: Progress | None = None) -> np.ndarray:
        chunks = split_chunks(text)
        encode = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)
        parts: list[np.ndarray] = []
        step = 256  # chunks per batch: big enough for parallelism, small enough for a smooth progress bar
        for start in range(0, len(chunks), step):
            for enc in encode(chunks[start : start + step]):
                parts.append(np.asarray(enc.ids, dtype=np.int64))
            if progress:
                progress("encoding", min(1.0, (start + step) / len(chunks)))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def merges(self) -> list[tuple[bytes, bytes]]:
        """The trained merges in order, as pairs of byte strings; KeyError for a piece that is not byte-level."""
        byte_of = {ch: b for b, ch in _byte_to_unicode().items()}
        merges = json.loads(self.hf.to_str())["model"]["merges"]
        pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in merges]  # older files: "a b"
        return [(bytes(byte_of[c] for c in a), bytes(byte_of[c] for c in b)) for a, b in pairs]

    def to_json(self) -> str:
        return self.hf.to_str()


def _special_tokens(hf_tokenizer) -> set[str]:
    return {t.content for t in hf_tokenizer.get_added_tokens_decoder().values() if t.special}


def split_chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Cut text into pieces of about `size` characters, each ending at a newline followed by a non-space
    character, so no pre-token of either split pattern straddles two pieces."""
    chunks: list[str] = []
    start, n = 0, len(text)
    while start < n:
        end = start + size
        if end >= n:
            chunks.append(text[start:])
            break
        cut = end
        while True:
            cut = text.find("\n", cut)
            if cut == -1 or cut + 1 >= n:
                cut = n
                break
            if not text[cut + 1].isspace():
                cut += 1
                break
            cut += 1
        chunks.append(text[start:cut])
        start = cut
    return chunks


def train_tokenizer(
    text: str,
    kind: str,
    vocab_size: int = 512,
    pattern: str = "gpt4",
    progress: Progress | None = None,
    show_progress: bool = False,
) -> Tokenizer:
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "bpe":
        return BpeTokenizer.train(text, vocab_size, pattern, progress, show_progress)
    raise InputError(f"unknown tokenizer {kind!r} (choose bpe or char)")


def tokenizer_from_json(text: str) -> Tokenizer:
    data = json.loads(text)
    if isinstance(data, dict) and data.get("type") == CHAR_FORMAT:
        chars = data.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError("char tokenizer has a malformed character list")
        return CharTokenizer(chars, eot=data.get("eot") is True)
    from tokenizers import Tokenizer as HfTokenizer

    return BpeTokenizer(HfTokenizer.from_str(text))


def load_tokenizer(path: Path) -> Tokenizer:
    return tokenizer_from_json(Path(path).read_text(encoding="utf-8"))


def token_spans(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    """Each token's piece of the decoded text, joining back into it exactly. A byte-level token that ends inside
    a character (a CJK character or an emoji split by BPE) gets the text up to there; the token that completes the
    character carries it."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    spans = [decoder.decode(tokenizer.token_bytes[i]) for i in ids]
    tail = decoder.decode(b"", final=True)
    if tail and spans:
        spans[-1] += tail
    return spans
