"""Corpus preparation: train the tokenizer, encode the text, split 90/10, cache both on disk.

The cache key is the corpus's sha256 plus the tokenizer settings, so an edited corpus or other settings get a
fresh entry and a repeat costs a hash and a memory map. Tokens are a raw uint16/uint32 array (`tokens.bin`).
A corpus encoded with a given tokenizer (a run's, to fine-tune it) is keyed by that tokenizer's sha256 instead.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gptui.core.config import MAX_UINT16_VOCAB, Config
from gptui.core.errors import CorpusError, InputError
from gptui.core.fsio import atomic_write, atomic_write_json, read_json
from gptui.core.tokenizer import (
    CharTokenizer,
    Progress,
    Tokenizer,
    load_tokenizer,
    tokenizer_from_json,
    train_tokenizer,
)
from gptui.core.workspace import read_text

CACHE_VERSION = 1
VAL_FRACTION = 0.1
MISSING_SHOWN = 12  # characters named when a char tokenizer cannot encode a corpus


@dataclass(frozen=True)
class TokenizerSpec:
    kind: str = "bpe"
    vocab_size: int = 512
    pattern: str = "gpt4"

    @classmethod
    def from_config(cls, config: Config) -> TokenizerSpec:
        if config.tokenizer == "char":
            return cls("char", 0, "")
        return cls("bpe", config.vocab_size, config.split_pattern)

    def key(self) -> str:
        return f"char-v{CACHE_VERSION}" if self.kind == "char" else (
            f"bpe{self.vocab_size}-{self.pattern}-v{CACHE_VERSION}"
        )


@dataclass
class Dataset:
    """A tokenized corpus: the token array (memory-mapped) and the contiguous 90/10 split."""

    tokenizer: Tokenizer
    tokens: np.ndarray
    split: int  # tokens[:split] train, tokens[split:] val
    corpus_sha256: str
    corpus_bytes: int
    val_bytes: int
    cached: bool
    had_bad_bytes: bool = False  # the corpus was read with bad UTF-8 bytes replaced
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def train(self) -> np.ndarray:
        return self.tokens[: self.split]

    @property
    def val(self) -> np.ndarray:
        return self.tokens[self.split :]

    @property
    def val_tokens_per_byte(self) -> float:
        return len(self.val) / max(1, self.val_bytes)

    def check_block_size(self, block_size: int) -> None:
        """Refuse a corpus too short for one training example (block_size + 1 tokens) in each split."""
        need = block_size + 1
        if len(self.train) < need or len(self.val) < need:
            raise CorpusError(
                f"corpus too short for block_size {block_size}: need {need} tokens in each split, "
                f"have {len(self.train)} train and {len(self.val)} val ({len(self.tokens)} tokens in all); "
                "use a longer text or a smaller block_size"
            )


def token_dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= MAX_UINT16_VOCAB else np.uint32


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def cache_dir(cache_root: Path, corpus_sha: str, spec: TokenizerSpec | str) -> Path:
    """The cache entry of a corpus: `spec` is tokenizer settings, or the key of a given tokenizer."""
    key = spec if isinstance(spec, str) else spec.key()
    return Path(cache_root) / f"{corpus_sha[:16]}-{key}"


def tokenizer_key(tokenizer_json: str) -> str:
    """The cache key of a corpus encoded with a given tokenizer: the sha256 of its tokenizer.json."""
    return f"tok{hashlib.sha256(tokenizer_json.encode('utf-8')).hexdigest()[:16]}-v{CACHE_VERSION}"


def cache_status(cache_root: Path, corpus: Path, spec: TokenizerSpec) -> bool:
    """Whether the corpus is already tokenized with these settings (reads the corpus to hash it)."""
    try:
        return (cache_dir(cache_root, sha256_file(corpus), spec) / "meta.json").is_file()
    except OSError:
        return False


def prepare(
    corpus: Path,
    spec: TokenizerSpec,
    cache_root: Path,
    progress: Progress | None = None,
    replace_errors: bool = False,
    show_progress: bool = False,
) -> Dataset:
    """Tokenize `corpus` with `spec`, reusing the cache when corpus and settings match."""

    def tokenizer_for(text: str) -> Tokenizer:
        return train_tokenizer(text, spec.kind, spec.vocab_size, spec.pattern, progress, show_progress)

    return _prepare(corpus, spec.key(), tokenizer_for, cache_root, progress, replace_errors)


def prepare_with_tokenizer(
    corpus: Path,
    tokenizer_json: str,
    cache_root: Path,
    progress: Progress | None = None,
    replace_errors: bool = False,
    source: str = "the",
) -> Dataset:
    """Encode `corpus` with a given tokenizer (a run's tokenizer.json, to fine-tune that run): nothing is trained,
    and the entry is cached under the tokenizer's own key. A char-level tokenizer lacking characters of the corpus
    is refused, naming them (`source` says whose tokenizer it is: "run X's")."""
    try:
        tokenizer = tokenizer_from_json(tokenizer_json)
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{source} tokenizer.json cannot be read ({str(exc).splitlines()[0][:120]})") from None

    def tokenizer_for(text: str) -> Tokenizer:
        if isinstance(tokenizer, CharTokenizer):
            missing = sorted(set(text) - set(tokenizer.chars))
            if missing:
                shown = ", ".join(repr(c) for c in missing[:MISSING_SHOWN])
                more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
                raise CorpusError(
                    f"{source} char tokenizer cannot encode {Path(corpus).name}: it lacks {len(missing)} "
                    f"character{'s' if len(missing) > 1 else ''} ({shown}{more})"
                )
        return tokenizer

    return _prepare(corpus, tokenizer_key(tokenizer_json), tokenizer_for, cache_root, progress, replace_errors)


def _prepare(
    corpus: Path,
    key: str,
    tokenizer_for,
    cache_root: Path,
    progress: Progress | None,
    replace_errors: bool,
) -> Dataset:
    """Read, tokenize (with `tokenizer_for(text)`), encode, split and cache `corpus` under `key`; or serve it."""
    corpus = Path(corpus)
    if corpus.is_dir():
        raise CorpusError(f"{corpus} is a directory, not a text file")
    t0 = time.perf_counter()
    try:
        sha = sha256_file(corpus)
    except OSError as exc:
        raise CorpusError(f"{corpus}: cannot read ({exc.strerror or exc})") from None
    folder = cache_dir(cache_root, sha, key)
    loaded = _load_cached(folder, sha)
    if loaded is not None and loaded.had_bad_bytes and not replace_errors:
        read_text(corpus)  # raises the same refusal, with the offset, as the first time
    if loaded is not None:
        loaded.seconds["cache_hit"] = time.perf_counter() - t0
        return loaded

    if progress:
        progress("reading corpus", None)
    text = read_text(corpus, replace_errors=replace_errors)
    had_bad_bytes = replace_errors and "\ufffd" in text and _invalid_utf8(corpus)
    t1 = time.perf_counter()
    tokenizer = tokenizer_for(text)
    t2 = time.perf_counter()
    ids = tokenizer.encode_corpus(text, progress)
    t3 = time.perf_counter()
    tokens = ids.astype(token_dtype(tokenizer.vocab_size))
    split = int(len(tokens) * (1 - VAL_FRACTION))
    lengths = np.fromiter((len(b) for b in tokenizer.token_bytes), dtype=np.int64, count=tokenizer.vocab_size)
    val_bytes = int(lengths[ids[split:]].sum())
    meta = {
        "version": CACHE_VERSION,
        "corpus": corpus.name,
        "corpus_sha256": sha,
        "corpus_bytes": corpus.stat().st_size,
        "tokenizer": tokenizer.kind,
        "vocab_size": tokenizer.vocab_size,
        "dtype": np.dtype(tokens.dtype).name,
        "n_tokens": int(len(tokens)),
        "split": split,
        "val_bytes": val_bytes,
        "train_tokenizer_s": round(t2 - t1, 3),
        "encode_s": round(t3 - t2, 3),
        "had_bad_bytes": had_bad_bytes,
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tokenizer.save(folder / "tokenizer.json")
        atomic_write(folder / "tokens.bin", lambda p: tokens.tofile(p))
        atomic_write_json(folder / "meta.json", meta)  # written last: its presence marks a complete entry
    except OSError:
        pass  # a cache we cannot write only costs time next run
    return Dataset(
        tokenizer, tokens, split, sha, meta["corpus_bytes"], val_bytes, cached=False, had_bad_bytes=had_bad_bytes,
        seconds={"read": t1 - t0, "train_tokenizer": t2 - t1, "encode": t3 - t2},
    )


def _invalid_utf8(path: Path) -> bool:
    try:
        Path(path).read_bytes().decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def _load_cached(folder: Path, sha: str) -> Dataset | None:
    try:
        meta = read_json(folder / "meta.json")
        if meta.get("version") != CACHE_VERSION or meta.get("corpus_sha256") != sha:
            return None
        tokenizer = load_tokenizer(folder / "tokenizer.json")
        dtype = np.dtype(meta["dtype"])
        n = int(meta["n_tokens"])
        if (folder / "tokens.bin").stat().st_size != n * dtype.itemsize or tokenizer.vocab_size != meta["vocab_size"]:
            return None
        tokens = np.memmap(folder / "tokens.bin", dtype=dtype, mode="r", shape=(n,))
        return Dataset(
            tokenizer, tokens, int(meta["split"]), sha, int(meta["corpus_bytes"]), int(meta["val_bytes"]),
            cached=True, had_bad_bytes=bool(meta.get("had_bad_bytes")),
        )
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None


class BatchSampler:
    """Random contiguous windows from a split, gathered with one vectorised index (no per-row Python).

    Its numpy Generator's state is saved in checkpoints, so a resumed run sees the same batches.

    In a distributed run every rank holds the same generator (seeded by `seed`) and draws the same global
    batches; each call draws `world_size` batches and keeps the one of this `rank`. So rank r of W takes rows
    r*B..(r+1)*B-1 of the W*B rows that one process with grad_accum W would draw over its W micro-steps, the
    generator's state is the same on every rank (one checkpoint resumes them all), and with world_size 1 the
    draws are exactly those of a single process.
    """

    def __init__(self, data: np.ndarray, block_size: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, pin_memory: bool = False):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        self.data = data
        self.block_size = block_size
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.pin_memory = pin_memory
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self._window = np.arange(block_size + 1)

    def _draw(self) -> np.ndarray:
        return self.rng.integers(0, len(self.data) - self.block_size, size=self.batch_size)

    def next(self):
        import torch

        starts = None
        for r in range(self.world_size):  # one draw per rank, in rank order, each the size of one batch
            drawn = self._draw()
            if r == self.rank:
                starts = drawn
        rows = self.data[starts[:, None] + self._window]
        # x and y are the two contiguous halves of one buffer, pinned for a CUDA copy when asked: a strided view
        # (rows[:, :-1]) would be copied through a pageable temporary, and non_blocking would overlap nothing
        pair = torch.empty((2, self.batch_size, self.block_size), dtype=torch.long, pin_memory=self.pin_memory)
        both = pair.numpy()
        both[0], both[1] = rows[:, :-1], rows[:, 1:]
        return pair[0], pair[1]

    def skip(self) -> None:
        """Draw the next global batch without gathering it (another rank evaluates it)."""
        for _ in range(self.world_size):
            self._draw()

    def state(self) -> str:
        return json.dumps(self.rng.bit_generator.state)

    def set_state(self, state: str) -> None:
        self.rng.bit_generator.state = json.loads(state)
