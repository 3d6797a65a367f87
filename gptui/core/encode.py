"""Streaming corpus encoding: a tokenizer trained on a sample, documents encoded on every core into one file.

Nothing here holds the corpus or its tokens: documents come from an iterator, are cut into pieces of about a
megabyte where no pre-token can straddle a cut, encoded by a pool of workers with a bounded number of pieces in
flight, and their tokens are written in order straight to a temporary file that is renamed into place at the
end. The end-of-text token goes between documents. The workers are threads (the encoders release the GIL), or
for a large corpus encoded by tiktoken, processes: tiktoken's threads contend with each other, and two processes
encode about 30% more per second than two threads on a 2-core machine.

The BPE encoder is tiktoken built from the tokenizer's own merges and split pattern (2.6x the speed of
`tokenizers`' batch encoding on 2 cores, as issue 22 measured it); the tokens are those `tokenizers` gives, which a check on the tokenizer's
merges and on the first piece of every corpus confirms before tiktoken is used (`tokenizers` encodes otherwise).
`tokenizer.json` stays the format.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptui.core.errors import CorpusCancelled, InputError
from gptui.core.tokenizer import (
    SPLIT_PATTERNS,
    BpeTokenizer,
    CharTokenizer,
    Progress,
    Tokenizer,
    tokenizer_from_json,
)

VAL_FRACTION = 0.1  # of the tokens, when no document-level split is given
PIECE_CHARS = 1 << 20  # characters a worker encodes at a time
TRAIN_PIECE_CHARS = 1 << 15  # pieces the BPE trainer is fed: it buffers 256 of them
HARD_CUT = 4  # a stretch with no safe cut is cut anyway at this many pieces' length (memory stays bounded)
PROCESS_MIN_BYTES = 64 << 20  # a corpus at least this large is encoded by worker processes (tiktoken only)
IN_FLIGHT_PER_WORKER = 2  # pieces queued or encoding per worker thread: enough to keep every core busy
CHECK_CHARS = 1 << 16  # characters of a corpus's first piece encoded by both encoders to compare them
PROGRESS_EVERY_S = 0.2


@dataclass
class EncodedCorpus:
    n_tokens: int  # tokens written
    split: int  # tokens[:split] train, tokens[split:] val
    val_bytes: int  # UTF-8 bytes of the validation text (for bits per byte)
    documents: int
    bytes: int  # UTF-8 bytes encoded
    seconds: float = 0.0  # encoding, from the first document read to the file renamed into place
    encoder: str = ""  # "tiktoken", "tokenizers" or "char"


# --- progress -----------------------------------------------------------------------------------------------


def progress_stage(label: str, done_bytes: int, total_bytes: int | None, seconds: float) -> str:
    """'encoding 120 / 1,024 MB (20 MB/s, eta 0:45)'; without a total, 'encoding 120 MB (20 MB/s)'."""
    rate = done_bytes / seconds if seconds > 0 else 0.0
    speed = f"{rate / 1e6:,.0f} MB/s" if rate >= 10e6 else f"{rate / 1e6:.1f} MB/s"
    if not total_bytes:
        return f"{label} {done_bytes / 1e6:,.0f} MB ({speed})"
    eta = ""
    if rate > 0:
        left = max(0, int((total_bytes - done_bytes) / rate))
        h, rest = divmod(left, 3600)
        eta = f", eta {h}:{rest // 60:02d}:{rest % 60:02d}" if h else f", eta {rest // 60}:{rest % 60:02d}"
    return f"{label} {done_bytes / 1e6:,.0f} / {total_bytes / 1e6:,.0f} MB ({speed}{eta})"


class _Meter:
    """Reports `label` with bytes done, speed and ETA through `progress`, at most every PROGRESS_EVERY_S."""

    def __init__(self, progress: Progress | None, label: str, total: int | None):
        self.progress, self.label, self.total = progress, label, total
        self.start = self.last = time.perf_counter()

    def update(self, done: int, force: bool = False) -> None:
        if not self.progress:
            return
        now = time.perf_counter()
        if force or now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            frac = min(1.0, done / self.total) if self.total else None
            self.progress(progress_stage(self.label, done, self.total, now - self.start), frac)


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", errors="surrogatepass"))


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise CorpusCancelled("preparing the corpus was cancelled; nothing was written")


# --- cutting text where no pre-token straddles ----------------------------------------------------------------


_LETTER_THEN_OTHER = re.compile(r"[^\W\d_](?=[\W\d_])")  # candidates; checked with str.isalpha (= \p{L})


def _safe_cut(text: str, at: int, hard: int) -> int:
    """The first position >= `at` where both split patterns start a new pre-token whatever follows, or -1 when
    the text ends before one is certain; a stretch without one is cut anyway at `hard`.

    Safe places: after a newline between two non-spaces (before a run of whitespace a text's end would change
    how GPT-2's pattern splits it), else after the last letter of a run of letters (no pre-token of either
    pattern goes on from a letter to a character that is not one)."""
    n = len(text)
    pos = max(at, 1)
    while (nl := text.find("\n", pos, hard)) >= 0:
        if nl + 1 >= n:
            return -1  # what follows the newline is not here yet
        if not text[nl - 1].isspace() and not text[nl + 1].isspace():
            return nl + 1
        pos = nl + 1
    for m in _LETTER_THEN_OTHER.finditer(text, max(at - 1, 0), min(hard + 1, n)):
        cut = m.end()
        if cut >= at and text[cut - 1].isalpha() and not text[cut].isalpha():
            return cut
    return hard if hard < n else -1


def safe_pieces(parts: Iterable[str], size: int = PIECE_CHARS) -> Iterator[str]:
    """Re-cut consecutive parts of one text into pieces of about `size` characters (at most HARD_CUT x size),
    each ending where no pre-token straddles, so encoding the pieces one by one gives the tokens of the whole."""
    carry = ""
    for part in parts:
        text = carry + part if carry else part
        start = 0
        while len(text) - start > size:
            cut = _safe_cut(text, start + size, start + HARD_CUT * size)
            if cut < 0:
                break
            yield text[start:cut]
            start = cut
        carry = text[start:]
    if carry:
        yield carry


def _text_pieces(documents: Iterable[str], pieces: bool, size: int) -> Iterator[str]:
    """Every document cut into pieces of about `size` characters (with `pieces`, the items of `documents` are
    consecutive parts of one document); a document shorter than that is one piece."""
    if pieces:
        yield from safe_pieces(documents, size)
        return
    for document in documents:
        if len(document) <= size:
            if document:
                yield document
        else:
            yield from safe_pieces((document,), size)


# --- the tokenizer, from a sample -----------------------------------------------------------------------------


def _sample(
    documents: Callable[..., Iterable[str]], pieces: bool, sample_bytes: int, total_bytes: int | None,
    meter: _Meter, cancel: threading.Event | None, by_size: bool = False,
) -> Iterator[str]:
    """The pieces of text the tokenizer learns from: all of a corpus no larger than the sample; otherwise
    documents (or parts of the one document) spread evenly over it, each taken while the sample is behind its
    share of what was read; or, when the corpus's size is not known, its first `sample_bytes`. With `by_size`,
    documents are taken by their size in bytes before they are read (`documents(keep)`: a folder's files),
    so what is left out is never read."""
    read = taken = 0
    if total_bytes is not None and total_bytes > sample_bytes:
        share, seen = sample_bytes / total_bytes, [0, 0]  # bytes read (or passed over), bytes taken

        def take(size: int) -> bool:
            _check_cancel(cancel)
            seen[0] += size
            meter.update(seen[0])
            if seen[1] < share * seen[0]:
                seen[1] += size
                return True
            return False

        # only what is taken is cut into pieces
        taken_items = documents(take) if by_size else (d for d in documents() if take(_utf8_len(d)))
        for item in taken_items:
            yield from safe_pieces((item,), TRAIN_PIECE_CHARS)
        read = seen[0]
    else:
        for piece in _text_pieces(documents(), pieces, TRAIN_PIECE_CHARS):
            _check_cancel(cancel)
            if total_bytes is None and taken >= sample_bytes:
                break
            read += (n := _utf8_len(piece))
            taken += n
            yield piece
            meter.update(read)
    meter.update(read, force=True)


def train_tokenizer_from_documents(
    documents: Callable[[], Iterable[str]],
    kind: str,
    vocab_size: int,
    pattern: str,
    sample_mb: float,
    progress: Progress | None = None,
    *,
    total_bytes: int | None = None,
    pieces: bool = False,
    cancel: threading.Event | None = None,
    by_size: bool = False,
) -> Tokenizer:
    """BPE trained on (a sample of) the documents, with the end-of-text token added after its vocabulary;
    char: every character the documents hold, and the end-of-text id after them.

    `documents()` gives a fresh iterator over the corpus (read once here). A corpus no larger than `sample_mb`
    is learnt whole, so it gets the tokenizer `train_tokenizer` gives its text. `total_bytes` (the corpus's
    UTF-8 size, when known) spreads the sample over the whole corpus and gives the progress an ETA. With
    `by_size`, `documents(keep)` reads only the documents whose size `keep` takes (see `_sample`)."""
    if kind == "char":
        meter = _Meter(progress, "training tokenizer", total_bytes)
        chars: set[str] = set()
        ascii_seen = np.zeros(128, dtype=bool)
        done = 0
        for piece in _text_pieces(documents(), pieces, PIECE_CHARS):
            _check_cancel(cancel)
            if piece.isascii():  # a byte histogram is ~10x faster than a set of characters
                ascii_seen |= np.bincount(np.frombuffer(piece.encode("ascii"), np.uint8), minlength=128) > 0
                done += len(piece)
            else:
                chars.update(piece)
                done += _utf8_len(piece)
            meter.update(done)
        chars.update(chr(c) for c in np.flatnonzero(ascii_seen))
        return CharTokenizer(sorted(chars), eot=True)
    if kind != "bpe":
        raise InputError(f"unknown tokenizer {kind!r} (choose bpe or char)")
    if pattern not in SPLIT_PATTERNS:
        raise InputError(f"unknown split pattern {pattern!r} (choose {' or '.join(SPLIT_PATTERNS)})")
    sample_bytes = max(1, int(sample_mb * 1e6))
    label = "training tokenizer: sampling" if total_bytes and total_bytes > sample_bytes else "training tokenizer"
    meter = _Meter(progress, label, total_bytes if total_bytes else None)
    texts = _sample(documents, pieces, sample_bytes, total_bytes, meter, cancel, by_size)
    # `tokenizers` reads a few hundred pieces ahead of its counting: the last ones and the merges come after
    tokenizer = BpeTokenizer.train_from_iterator(_then(texts, lambda: progress and progress(
        "training tokenizer: counting and merging", None)), vocab_size, pattern)
    _check_cancel(cancel)
    return tokenizer


def _then(items: Iterable[str], after: Callable[[], object]) -> Iterator[str]:
    yield from items
    after()


# --- encoders -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoder:
    """Text to token ids (a numpy array) for one tokenizer; `name` says which library does it."""

    name: str
    encode: Callable[[str], np.ndarray]


def fast_encoder(tokenizer: Tokenizer) -> Encoder:
    """The fastest encoder that gives `tokenizer`'s own tokens: tiktoken from its merges where they allow it."""
    if isinstance(tokenizer, CharTokenizer):
        return Encoder("char", tokenizer.encode_corpus)
    if not isinstance(tokenizer, BpeTokenizer):
        return Encoder(tokenizer.kind, lambda text: np.asarray(tokenizer.encode(text), dtype=np.int64))
    tt = tiktoken_encoding(tokenizer)
    if tt is not None:
        return Encoder("tiktoken", lambda text: tt.encode_to_numpy(text, disallowed_special=()))
    return hf_encoder(tokenizer)


def hf_encoder(tokenizer: BpeTokenizer) -> Encoder:
    hf = tokenizer.hf
    batch = getattr(hf, "encode_batch_fast", hf.encode_batch)

    def encode(text: str) -> np.ndarray:
        parts = [np.asarray(e.ids, dtype=np.uint32) for e in batch(list(safe_pieces((text,), 1 << 16)))]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)

    return Encoder("tokenizers", encode)


def tiktoken_encoding(tokenizer: BpeTokenizer):
    """A tiktoken Encoding with `tokenizer`'s ids, or None when tiktoken is missing or the tokenizer is not the
    kind it reproduces: byte-level BPE behind one split pattern, with merges whose results have ids in merge
    order (tiktoken merges by the rank of the merged piece, `tokenizers` by the merge's; these agree then)."""
    try:
        import tiktoken
    except ImportError:
        return None
    data = json.loads(tokenizer.hf.to_str())
    pattern = _byte_level_pattern(data)
    if pattern is None:
        return None
    model = data.get("model") or {}
    if model.get("type") != "BPE" or any(model.get(k) for k in (
            "dropout", "continuing_subword_prefix", "end_of_word_suffix", "ignore_merges")):
        return None
    text_ids = [i for i in range(tokenizer.vocab_size) if i != tokenizer.eot_id]
    ranks = {tokenizer.token_bytes[i]: i for i in text_ids}
    if len(ranks) != len(text_ids) or any(bytes([b]) not in ranks for b in range(256)):
        return None
    try:
        merges = tokenizer.merges()
    except (KeyError, ValueError):
        return None
    if len(merges) != len(text_ids) - 256:
        return None
    last = -1
    for left, right in merges:
        merged = ranks.get(left + right)
        if merged is None or merged <= last:
            return None
        last = merged
    return tiktoken.Encoding(f"gptui-{id(tokenizer)}", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})


def _byte_level_pattern(data: dict) -> str | None:
    """The split regex of a tokenizer.json made as ours are (Split then ByteLevel without its own regex)."""
    if data.get("normalizer") is not None:
        return None
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not isinstance(steps, list) or len(steps) != 2:
        return None
    split, byte_level = steps
    if split.get("type") != "Split" or split.get("behavior") != "Isolated" or split.get("invert"):
        return None
    if byte_level.get("type") != "ByteLevel" or byte_level.get("add_prefix_space") or byte_level.get("use_regex"):
        return None
    regex = (split.get("pattern") or {}).get("Regex")
    return regex if isinstance(regex, str) else None


def _checked(encoder: Encoder, tokenizer: Tokenizer, texts: list[str]) -> Encoder:
    """`encoder`, when it gives the tokenizer's own tokens for the first CHECK_CHARS characters of `texts`;
    `tokenizers` otherwise."""
    if encoder.name != "tiktoken" or not isinstance(tokenizer, BpeTokenizer):
        return encoder
    reference = hf_encoder(tokenizer)
    left = CHECK_CHARS
    for text in texts:
        if left <= 0:
            break
        sample = next(safe_pieces((text[: 2 * left],), left), "")
        if not np.array_equal(encoder.encode(sample), reference.encode(sample)):
            return reference
        left -= len(sample)
    return encoder


# --- encoding -------------------------------------------------------------------------------------------------


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass
class _Piece:
    text: str
    first: bool  # first piece of its document
    val: bool


def _encode_texts(encode: Callable[[str], np.ndarray], dtype, texts: list[str]) -> list[tuple[np.ndarray, int]]:
    """Runs on a worker: each text's tokens and UTF-8 length."""
    return [(encode(text).astype(dtype, copy=False), _utf8_len(text)) for text in texts]


_worker_encoder: Encoder | None = None  # in a worker process: the encoder its initializer built


def _start_worker(tokenizer_json: str) -> None:
    """A worker process's initializer: ctrl-c is for the parent to handle (it stops the pool); the encoder is
    built once, from the tokenizer the parent checked tiktoken against."""
    global _worker_encoder
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_encoder = fast_encoder(tokenizer_from_json(tokenizer_json))


def _encode_in_worker(texts: list[str], dtype) -> list[tuple[np.ndarray, int]]:
    """Runs in a worker process, with the encoder its initializer built."""
    assert _worker_encoder is not None
    return _encode_texts(_worker_encoder.encode, dtype, texts)


def _workers_for(
    encoder: Encoder, tokenizer: Tokenizer, workers: int, total_bytes: int | None, dtype,
) -> tuple[Executor, Callable[[list[_Piece]], Future]]:
    """The pool that encodes, and how a batch is handed to it: processes for a large corpus that tiktoken
    encodes on several workers (they start in about a second, which a small corpus would not win back),
    threads otherwise or when processes cannot be started."""
    if encoder.name == "tiktoken" and workers > 1 and (total_bytes or 0) >= PROCESS_MIN_BYTES:
        try:
            processes = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_worker, initargs=(tokenizer.to_json(),))
        except (OSError, ValueError, NotImplementedError):
            pass
        else:
            return processes, lambda batch: processes.submit(_encode_in_worker, [p.text for p in batch], dtype)
    return _threads(encoder, workers, dtype)


def _threads(encoder: Encoder, workers: int, dtype) -> tuple[Executor, Callable[[list[_Piece]], Future]]:
    threads = ThreadPoolExecutor(workers, thread_name_prefix="gptui-encode")
    return threads, lambda batch: threads.submit(_encode_texts, encoder.encode, dtype, [p.text for p in batch])


class _Streams:
    """The training and validation token streams, written in order: an end-of-text token goes before every
    document but a stream's first. Validation tokens go to a file of their own, appended at the end."""

    def __init__(self, train_path: Path, val_path: Path | None, eot: np.ndarray | None):
        self.files = [open(train_path, "wb"), None]
        if val_path is not None:
            self.files[1] = open(val_path, "wb")
        self.val_path, self.eot = val_path, eot
        self.tokens, self.bytes = [0, 0], [0, 0]
        self.began = [False, False]

    def write(self, batch: list[_Piece], results: list[tuple[np.ndarray, int]]) -> None:
        for piece, (tokens, nbytes) in zip(batch, results, strict=True):
            s = int(piece.val)
            if piece.first and self.began[s] and self.eot is not None:
                self.files[s].write(self.eot.data)
                self.tokens[s] += 1
            self.began[s] = True
            self.files[s].write(tokens.data)
            self.tokens[s] += len(tokens)
            self.bytes[s] += nbytes

    def finish(self) -> None:
        """Append the validation tokens to the training ones and make the file durable."""
        train, val = self.files
        if val is not None:
            val.close()
            with open(self.val_path, "rb") as src:
                shutil.copyfileobj(src, train, 1 << 24)
        train.flush()
        os.fsync(train.fileno())
        self.close()

    def close(self) -> None:
        for f in self.files:
            if f is not None:
                f.close()


def encode_documents(
    documents: Iterable[str],
    tokenizer: Tokenizer,
    out_path: Path,
    *,
    dtype,
    workers: int = 0,
    is_val: Callable[[str], bool] | None = None,
    total_bytes: int | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    pieces: bool = False,
) -> EncodedCorpus:
    """Encode every document in order, an end-of-text token between documents, into `out_path`: the tokens of
    the training documents, then those of the validation documents (`is_val`). Without `is_val`, the last 10%
    of the tokens is the validation split. With `pieces`, the items are consecutive parts of one document.

    `workers` threads encode (0: every core). The file is written under a temporary name and renamed into place
    at the end; ctrl-c, an error from the documents, or `cancel` (CorpusCancelled) leave no file."""
    if pieces and is_val is not None:
        raise ValueError("a corpus given as pieces of one document has no document-level split")
    dtype = np.dtype(dtype)
    if tokenizer.vocab_size - 1 > np.iinfo(dtype).max:
        raise ValueError(f"{tokenizer.vocab_size} token ids do not fit in {dtype.name}")
    workers = workers if workers > 0 else default_workers()
    out_path = Path(out_path)
    t0 = time.perf_counter()
    meter = _Meter(progress, "encoding", total_bytes)
    eot = None if tokenizer.eot_id is None else np.array([tokenizer.eot_id], dtype=dtype)
    fd, name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    tmp = Path(name)
    val_tmp = tmp.with_name(tmp.name + ".val") if is_val is not None else None
    encoder = fast_encoder(tokenizer)
    counts = {"docs": 0}
    streams = None
    pool: Executor | None = None
    submit: Callable[[list[_Piece]], Future] | None = None
    try:
        streams = _Streams(tmp, val_tmp, eot)
        in_flight: deque = deque()  # (batch, future), oldest first: results are written in submission order

        def write_oldest() -> None:
            nonlocal pool, submit
            batch, future = in_flight[0]
            try:
                results = future.result()
            except BrokenProcessPool:
                # a worker process died, or could not start (a script without a main guard imports itself
                # again in a spawned process): threads encode what is left, from the oldest batch not written
                pool.shutdown(wait=False, cancel_futures=True)
                pool, submit = _threads(encoder, workers, dtype)
                for k, (waiting, _) in enumerate(in_flight):
                    in_flight[k] = (waiting, submit(waiting))
                return
            in_flight.popleft()
            streams.write(batch, results)
            meter.update(sum(streams.bytes))

        for batch in _batches(documents, pieces, is_val, counts):
            _check_cancel(cancel)
            if pool is None:
                encoder = _checked(encoder, tokenizer, [p.text for p in batch])
                pool, submit = _workers_for(encoder, tokenizer, workers, total_bytes, dtype)
            in_flight.append((batch, submit(batch)))
            while len(in_flight) > IN_FLIGHT_PER_WORKER * workers:
                write_oldest()
        while in_flight:
            write_oldest()
        _check_cancel(cancel)
        streams.finish()
        os.chmod(tmp, 0o644)
        n_tokens = sum(streams.tokens)
        if is_val is not None:
            split, val_bytes = streams.tokens[0], streams.bytes[1]
        else:
            split = int(n_tokens * (1 - VAL_FRACTION))
            val_bytes = _bytes_of(tmp, dtype, split, n_tokens, tokenizer)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)  # after an error, what is still queued is dropped
        if streams is not None:
            streams.close()
        if val_tmp is not None:
            val_tmp.unlink(missing_ok=True)
    total = sum(streams.bytes)
    meter.total = meter.total or total
    meter.update(total, force=True)
    return EncodedCorpus(n_tokens, split, val_bytes, counts["docs"], total, time.perf_counter() - t0, encoder.name)


def _batches(
    documents: Iterable[str], pieces: bool, is_val: Callable[[str], bool] | None, counts: dict,
) -> Iterator[list[_Piece]]:
    """Pieces grouped into batches of about PIECE_CHARS characters (many small documents share one)."""

    def stream() -> Iterator[_Piece]:
        if pieces:
            for k, text in enumerate(safe_pieces(documents, PIECE_CHARS)):
                counts["docs"] = 1
                yield _Piece(text, k == 0, False)
            return
        for document in documents:
            counts["docs"] += 1
            if not document:
                continue
            val = bool(is_val(document)) if is_val is not None else False
            if len(document) <= PIECE_CHARS:
                yield _Piece(document, True, val)
                continue
            for k, text in enumerate(safe_pieces((document,), PIECE_CHARS)):
                yield _Piece(text, k == 0, val)

    batch: list[_Piece] = []
    size = 0
    for piece in stream():
        batch.append(piece)
        size += len(piece.text)
        if size >= PIECE_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _bytes_of(path: Path, dtype, start: int, stop: int, tokenizer: Tokenizer) -> int:
    """UTF-8 bytes of the text that tokens[start:stop] of the file at `path` stand for."""
    lengths = np.fromiter((len(b) for b in tokenizer.token_bytes), dtype=np.int64, count=tokenizer.vocab_size)
    if stop <= start:
        return 0
    tokens = np.memmap(path, dtype=dtype, mode="r", shape=(stop,))
    total = 0
    step = 1 << 24
    for i in range(start, stop, step):
        total += int(lengths[tokens[i : min(stop, i + step)]].sum())
    del tokens
    return total
