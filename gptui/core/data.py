"""Corpus preparation: train the tokenizer, encode the documents, split train/val, cache both on disk.

The cache key is the corpus's content digest (`corpus.Corpus.scan`: a text file's sha256, a folder's over its
sorted paths and contents) plus the tokenizer settings, so an edited corpus or other settings get a fresh entry
and a repeat costs one streaming pass and a memory map. Tokens are a raw uint16/uint32 array (`tokens.bin`),
written as they are encoded, never held in memory. A corpus encoded with a given tokenizer (a run's, to
fine-tune or resume it) is keyed by that tokenizer's sha256 instead.

Preparing streams: the documents come from `corpus.Corpus.documents` (twice: a sample trains the tokenizer,
then every document is encoded by `encode.encode_documents`). An entry is built in a temporary folder renamed
into place at the end, so an error, a cancel or ctrl-c leaves no partial entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gptui.core.config import MAX_UINT16_VOCAB, SETTINGS_BY_NAME, Config
from gptui.core.corpus import (
    HASH_SPLIT_MIN_DOCUMENTS,
    Corpus,
    Scan,
    is_validation_document,
)
from gptui.core.errors import CorpusError, GptuiError, InputError
from gptui.core.fsio import atomic_write_json, read_json
from gptui.core.tokenizer import CharTokenizer, Progress, Tokenizer, load_tokenizer, tokenizer_from_json

CACHE_VERSION = 1
VAL_FRACTION = 0.1
MISSING_SHOWN = 12  # characters named when a char tokenizer cannot encode a corpus
DEFAULT_SAMPLE_MB = float(SETTINGS_BY_NAME["tokenizer_sample_mb"].default)

Documents = Callable[..., Iterable[str]]  # () -> every document; (keep) -> a folder's files keep(size) takes


@dataclass(frozen=True)
class TokenizerSpec:
    kind: str = "bpe"
    vocab_size: int = 512
    pattern: str = "gpt4"
    sample_mb: float = DEFAULT_SAMPLE_MB  # BPE trains on this much of a larger corpus

    @classmethod
    def from_config(cls, config: Config) -> TokenizerSpec:
        sample_mb = float(config.tokenizer_sample_mb)
        if config.tokenizer == "char":
            return cls("char", 0, "", sample_mb)
        return cls("bpe", config.vocab_size, config.split_pattern, sample_mb)

    def key(self, corpus_bytes: int = 0) -> str:
        """The cache key of these settings; a corpus larger than the tokenizer's sample adds the sample's size
        (smaller ones train on everything, as before samples existed, and keep their old keys)."""
        if self.kind == "char":
            return f"char-v{CACHE_VERSION}"
        sample = f"-s{self.sample_mb:g}" if corpus_bytes > self.sample_mb * 1e6 else ""
        return f"bpe{self.vocab_size}-{self.pattern}{sample}-v{CACHE_VERSION}"


@dataclass
class Dataset:
    """A tokenized corpus: the token array (memory-mapped) and the train/val split."""

    tokenizer: Tokenizer
    tokens: np.ndarray
    split: int  # tokens[:split] train, tokens[split:] val
    corpus_sha256: str
    corpus_bytes: int
    val_bytes: int
    cached: bool
    had_bad_bytes: bool = False  # the corpus was read with bad UTF-8 bytes replaced
    seconds: dict[str, float] = field(default_factory=dict)
    corpus_kind: str = "txt"
    documents: int = 1
    files: int = 1
    skipped: dict[str, int] = field(default_factory=dict)  # binary files, bad rows, ... left out
    first_bad_row: str | None = None  # the first row --skip-bad-rows skipped, as a strict read refuses it

    @property
    def train(self) -> np.ndarray:
        return self.tokens[: self.split]

    @property
    def val(self) -> np.ndarray:
        return self.tokens[self.split :]

    @property
    def val_tokens_per_byte(self) -> float:
        return len(self.val) / max(1, self.val_bytes)

    def skipped_text(self) -> str:
        """'skipped 1 binary file, 3 bad rows' (empty when nothing was skipped)."""
        parts = [f"{n:,} {what[:-1] if n == 1 else what}" for what, n in self.skipped.items()]
        return f"skipped {', '.join(parts)}" if parts else ""

    def corpus_record(self) -> dict:
        """What config.json records of the corpus."""
        return {"corpus_kind": self.corpus_kind, "corpus_documents": self.documents, "corpus_files": self.files}

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


def cache_dir(cache_root: Path, corpus_sha: str, spec: TokenizerSpec | str, corpus_bytes: int = 0) -> Path:
    """The cache entry of a corpus: `spec` is tokenizer settings, or the key of a given tokenizer."""
    key = spec if isinstance(spec, str) else spec.key(corpus_bytes)
    return Path(cache_root) / f"{corpus_sha[:16]}-{key}"


def tokenizer_key(tokenizer_json: str) -> str:
    """The cache key of a corpus encoded with a given tokenizer: the sha256 of its tokenizer.json."""
    return f"tok{hashlib.sha256(tokenizer_json.encode('utf-8')).hexdigest()[:16]}-v{CACHE_VERSION}"


def cache_status(cache_root: Path, corpus: Path, spec: TokenizerSpec, text_field: str = "text",
                 cancel: threading.Event | None = None) -> bool:
    """Whether the corpus is already tokenized with these settings (reads the corpus to hash it)."""
    try:
        scan = Corpus.open(corpus, text_field).scan(replace_errors=True, cancel=cancel)
        return (cache_dir(cache_root, scan.digest, spec, scan.bytes) / "meta.json").is_file()
    except (OSError, GptuiError):  # unreadable, bad, or cancelled: not (known to be) cached
        return False


@dataclass
class CacheEntries:
    """Every cache entry of one corpus, one per tokenizer it was prepared with, found by hashing it once."""

    digest: str
    corpus_bytes: int
    folders: dict[str, Path]  # cache key -> entry, newest first

    def key(self, spec: TokenizerSpec | str) -> str:
        return spec if isinstance(spec, str) else spec.key(self.corpus_bytes)

    def load(self, spec: TokenizerSpec | str) -> tuple[Path, Dataset] | None:
        """The entry prepared with `spec` (settings, or a given tokenizer's key) and its dataset, or None."""
        folder = self.folders.get(self.key(spec))
        data = None if folder is None else _load_cached(folder, self.digest)
        return None if folder is None or data is None else (folder, data)


def cache_entries(cache_root: Path, corpus: Path, text_field: str = "text",
                  cancel: threading.Event | None = None) -> CacheEntries:
    """The cache entries of a corpus as it is now (reads the corpus to hash it)."""
    scan = Corpus.open(corpus, text_field).scan(replace_errors=True, cancel=cancel)
    prefix = f"{scan.digest[:16]}-"
    found = [p for p in Path(cache_root).glob(f"{prefix}*") if (p / "meta.json").is_file()]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return CacheEntries(scan.digest, scan.bytes, {p.name[len(prefix):]: p for p in found})


def prepare(
    corpus: Path,
    spec: TokenizerSpec,
    cache_root: Path,
    progress: Progress | None = None,
    replace_errors: bool = False,
    show_progress: bool = False,
    *,
    text_field: str = "text",
    skip_bad_rows: bool = False,
    workers: int = 0,
    cancel: threading.Event | None = None,
) -> Dataset:
    """Tokenize `corpus` (a file or folder of any kind) with `spec`, reusing the cache when corpus and
    settings match. `workers` encode in parallel (0: every core); `cancel` stops it (CorpusCancelled)."""
    from gptui.core.encode import train_tokenizer_from_documents

    def tokenizer_for(documents: Documents, source: Corpus, scan: Scan) -> Tokenizer:
        return train_tokenizer_from_documents(
            documents, spec.kind, spec.vocab_size, spec.pattern, spec.sample_mb, progress,
            pieces=source.single_document, total_bytes=scan.bytes, cancel=cancel, by_size=source.kind == "folder",
        )

    return _prepare(corpus, lambda scan: spec.key(scan.bytes), tokenizer_for, cache_root, progress,
                    replace_errors, text_field, skip_bad_rows, workers, cancel)


def prepare_with_tokenizer(
    corpus: Path,
    tokenizer_json: str,
    cache_root: Path,
    progress: Progress | None = None,
    replace_errors: bool = False,
    source: str = "the",
    *,
    text_field: str = "text",
    skip_bad_rows: bool = False,
    workers: int = 0,
    cancel: threading.Event | None = None,
    on_digest: Callable[[str], None] | None = None,
) -> Dataset:
    """Encode `corpus` with a given tokenizer (a run's tokenizer.json, to fine-tune or resume that run): nothing
    is trained, and the entry is cached under the tokenizer's own key. A char-level tokenizer lacking characters
    of the corpus is refused, naming them (`source` says whose tokenizer it is: "run X's"). `on_digest` sees the
    corpus's digest before anything is encoded (a resume refuses a changed corpus there)."""
    try:
        tokenizer = tokenizer_from_json(tokenizer_json)
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{source} tokenizer.json cannot be read ({str(exc).splitlines()[0][:120]})") from None

    def tokenizer_for(documents: Documents, corpus_: Corpus, scan: Scan) -> Tokenizer:
        if isinstance(tokenizer, CharTokenizer):
            known = set(tokenizer.chars)
            missing: set[str] = set()
            for text in documents():  # one streaming pass: the set of characters is small
                missing.update(set(text) - known)
            if missing:
                ordered = sorted(missing)
                shown = ", ".join(repr(c) for c in ordered[:MISSING_SHOWN])
                more = f" and {len(ordered) - MISSING_SHOWN} more" if len(ordered) > MISSING_SHOWN else ""
                raise CorpusError(
                    f"{source} char tokenizer cannot encode {corpus_.label}: it lacks {len(ordered)} "
                    f"character{'s' if len(ordered) > 1 else ''} ({shown}{more})"
                )
        return tokenizer

    key = tokenizer_key(tokenizer_json)
    return _prepare(corpus, lambda scan: key, tokenizer_for, cache_root, progress, replace_errors,
                    text_field, skip_bad_rows, workers, cancel, on_digest)


def _prepare(
    path: Path,
    key_for: Callable[[Scan], str],
    tokenizer_for: Callable[[Documents, Corpus, Scan], Tokenizer],
    cache_root: Path,
    progress: Progress | None,
    replace_errors: bool,
    text_field: str,
    skip_bad_rows: bool,
    workers: int,
    cancel: threading.Event | None,
    on_digest: Callable[[str], None] | None = None,
) -> Dataset:
    """Scan, tokenize (with `tokenizer_for`), encode, split and cache the corpus at `path`; or serve it."""
    from gptui.core.encode import encode_documents

    t0 = time.perf_counter()
    corpus = Corpus.open(Path(path), text_field)
    scan = corpus.scan(replace_errors, progress, cancel)
    if on_digest is not None:
        on_digest(scan.digest)
    folder = cache_dir(cache_root, scan.digest, key_for(scan))
    loaded = _load_cached(folder, scan.digest)
    if loaded is not None:
        _refuse_again(loaded, corpus, scan, replace_errors, skip_bad_rows)
        loaded.seconds["cache_hit"] = time.perf_counter() - t0
        loaded.seconds["hash"] = scan.seconds
        return loaded

    def documents(keep: Callable[[int], bool] | None = None) -> Iterable[str]:
        return corpus.documents(scan, replace_errors, skip_bad_rows, keep)

    t1 = time.perf_counter()
    tokenizer = tokenizer_for(documents, corpus, scan)
    t2 = time.perf_counter()
    hash_split = not corpus.single_document and (
        scan.documents is None or scan.documents >= HASH_SPLIT_MIN_DOCUMENTS)
    work = folder.with_name(f".{folder.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    dtype = token_dtype(tokenizer.vocab_size)
    try:
        work.mkdir(parents=True)
        encoded = encode_documents(
            documents(), tokenizer, work / "tokens.bin", dtype=dtype, workers=workers,
            is_val=is_validation_document if hash_split else None, total_bytes=scan.bytes, progress=progress,
            cancel=cancel, pieces=corpus.single_document,
        )
        t3 = time.perf_counter()
        corpus.check_unchanged(scan)
        counts = corpus.counts
        if hash_split and encoded.split >= encoded.n_tokens:
            # every document hashed into training (a few large ones): hold out the last 10% of tokens instead
            encoded.split = int(encoded.n_tokens * (1 - VAL_FRACTION))
            encoded.val_bytes = _val_bytes(work / "tokens.bin", dtype, encoded.split, tokenizer)
        skipped = {k: v for k, v in (("binary files", scan.binary_files), ("bad rows", counts.skipped_rows),
                                     ("empty documents", counts.empty)) if v}
        meta = {
            "version": CACHE_VERSION,
            "corpus": corpus.path.name,
            "corpus_kind": corpus.kind,
            "corpus_sha256": scan.digest,
            "corpus_bytes": scan.bytes,
            "documents": counts.documents,
            "files": scan.text_file_count,
            "skipped": skipped,
            "first_bad_row": counts.first_bad_row,
            "split_by": "document hash" if hash_split else "last 10% of tokens",
            "tokenizer": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
            "dtype": np.dtype(dtype).name,
            "n_tokens": int(encoded.n_tokens),
            "split": int(encoded.split),
            "val_bytes": int(encoded.val_bytes),
            "hash_s": round(scan.seconds, 3),
            "train_tokenizer_s": round(t2 - t1, 3),
            "encode_s": round(t3 - t2, 3),
            "had_bad_bytes": bool(scan.bad_utf8_files or counts.replaced_bad_bytes),
        }
        tokenizer.save(work / "tokenizer.json")
        atomic_write_json(work / "meta.json", meta)
        try:
            os.rename(work, folder)
        except OSError:
            if _load_cached(folder, scan.digest) is not None:  # another process finished it first: use it
                shutil.rmtree(work, ignore_errors=True)
            else:  # a damaged entry (torn by an older version, or edited by hand) is replaced
                shutil.rmtree(folder)
                os.rename(work, folder)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise CorpusError(f"cannot write the token cache in {cache_root}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    dataset = _load_cached(folder, scan.digest)
    if dataset is None:
        raise CorpusError(f"the token cache entry {folder.name} cannot be read back; prepare again")
    dataset.cached = False
    dataset.seconds = {"hash": scan.seconds, "read": t1 - t0, "train_tokenizer": t2 - t1, "encode": t3 - t2}
    return dataset


def _refuse_again(data: Dataset, corpus: Corpus, scan: Scan, replace_errors: bool, skip_bad_rows: bool) -> None:
    """A cache entry made with --replace-errors or --skip-bad-rows is served only with the same flag."""
    if data.skipped.get("bad rows") and not skip_bad_rows:
        raise CorpusError(f"{data.first_bad_row or corpus.label + ' has bad rows'}; "
                          "pass --skip-bad-rows to skip such rows")
    if data.had_bad_bytes and not replace_errors and not scan.bad_utf8_files:
        # a text file's bad bytes were refused by the scan already; other kinds are read to name the place
        for _ in corpus.documents(scan, replace_errors=False, skip_bad_rows=True):
            pass
        raise CorpusError(f"{corpus.label} is not valid UTF-8; pass --replace-errors to replace bad bytes")


def _val_bytes(path: Path, dtype, split: int, tokenizer: Tokenizer) -> int:
    lengths = np.fromiter((len(b) for b in tokenizer.token_bytes), dtype=np.int64, count=tokenizer.vocab_size)
    tokens = np.memmap(path, dtype=dtype, mode="r")
    total = 0
    for start in range(split, len(tokens), 1 << 24):  # bounded memory: a slice at a time
        total += int(lengths[tokens[start : start + (1 << 24)]].sum())
    return total


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
            corpus_kind=str(meta.get("corpus_kind", "txt")), documents=int(meta.get("documents", 1)),
            files=int(meta.get("files", 1)), skipped=dict(meta.get("skipped") or {}),
            first_bad_row=meta.get("first_bad_row"),
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
