"""Corpus kinds: what a name in `inputs/` holds, streamed as documents in bounded memory.

A corpus is one of:

- `NAME.txt` or `NAME.txt.gz`: one document;
- `NAME/`, a folder: every text file under it, in sorted path order, each a document (hidden files and folders,
  binary files and links leading out of the folder are skipped);
- `NAME.jsonl` or `NAME.jsonl.gz`: one JSON object a line, the document in its `text_field`;
- `NAME.parquet`, or a folder holding `.parquet` shards (a Hugging Face dataset): the `text_field` column,
  read in row-group batches with pyarrow.

Preparing a corpus reads it twice at most (a scan, then the documents), each a stream: the scan computes the
content digest that keys the cache (a folder's over its sorted relative paths and their contents), finds the
text files of a folder and refuses bad UTF-8 in a single text file; the documents pass yields one `str` per
document. Nothing ever holds the whole corpus: a single large document comes out in pieces cut where no
pre-token can straddle them (a newline followed by a non-space character, where `split_chunks` cuts too).
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import os
import stat
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gptui.core.errors import CorpusCancelled, CorpusError, GptuiError

READ_BYTES = 1 << 22  # bytes read at a time while scanning or streaming
PIECE_CHARS = 1 << 22  # a single document is streamed in pieces of about this many characters
PARQUET_BATCH_ROWS = 1024
VAL_SHARE = 0.1  # the share of a multi-document corpus's documents held out for validation
HASH_SPLIT_MIN_DOCUMENTS = 10  # below this, a corpus is split like one document (its last 10% of tokens)
SNIFF_BYTES = 8192  # bytes a listing looks at to tell a binary file from a text file
SNIFF_FILES = 2000  # a listing sniffs the files of a folder up to this many

KIND_SUFFIXES = {  # the longest suffix first, so x.txt.gz is a txt.gz and not a txt
    ".txt.gz": "txt.gz",
    ".jsonl.gz": "jsonl.gz",
    ".txt": "txt",
    ".jsonl": "jsonl",
    ".parquet": "parquet",
}
KIND_NAMES = {
    "txt": "text",
    "txt.gz": "text, gzip",
    "folder": "folder",
    "jsonl": "JSON Lines",
    "jsonl.gz": "JSON Lines, gzip",
    "parquet": "Parquet",
    "parquet-shards": "Parquet shards",
}
PYARROW_MISSING = "reading Parquet needs pyarrow: pip install -e '.[data]' (or pip install pyarrow)"

Progress = Callable[[str, float | None], None]


class CorpusChanged(CorpusError):
    pass


def is_validation_document(text: str) -> bool:
    """Whether a document of a multi-document corpus belongs to the validation split: a fixed ~10% of
    documents chosen by a hash of their content, so adding documents moves no other one across."""
    value = int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big")
    return value < int(VAL_SHARE * 2**64)


def corpus_kind(path: Path) -> str | None:
    """The kind of corpus `path` holds, judged by its name (and for a folder, by whether it holds Parquet
    shards); None for a file that is no corpus."""
    path = Path(path)
    if path.is_dir():
        return "parquet-shards" if _has_parquet(path) else "folder"
    lower = path.name.lower()
    for suffix, kind in KIND_SUFFIXES.items():
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return kind
    return None


def corpus_name(path: Path) -> str:
    """The name a corpus goes by: its file name without the kind's suffix (a folder's own name)."""
    path = Path(path)
    if path.is_dir():
        return path.name
    lower = path.name.lower()
    for suffix in KIND_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)]
    return path.name


def _has_parquet(folder: Path) -> bool:
    for _root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(f.lower().endswith(".parquet") and not f.startswith(".") for f in files):
            return True
    return False


@dataclass(frozen=True, slots=True)
class FileEntry:
    full: str  # the file's path (a str: a folder of many small files pays for every Path made)
    rel: str  # path relative to the corpus folder, with "/" separators (the file's own name for a file)
    size: int
    mtime_ns: int

    @property
    def path(self) -> Path:
        return Path(self.full)


@dataclass
class Scan:
    """What one streaming pass over a corpus found: its digest and which files its documents come from.

    A folder's files are not kept (a folder of a million files would hold them all in memory): its documents
    pass walks it again, in the same order, and tells text from binary files by the same rules."""

    digest: str
    bytes: int  # bytes on disk of every file read
    listing: str  # a digest of every file's relative path, size and modification time (see check_unchanged)
    text_files: list[FileEntry] | None  # the files the documents come from; None for a folder (walked again)
    binary_files: int = 0
    bad_utf8_files: int = 0  # files (or the one file) read with bad bytes replaced
    documents: int | None = None  # known before the documents pass for some kinds (None: not yet)
    seconds: float = 0.0
    text_file_count: int = 0  # files the documents come from


@dataclass
class DocumentCounts:
    """Counters of the latest documents pass."""

    documents: int = 0
    bytes: int = 0  # UTF-8 bytes of the documents
    skipped_rows: int = 0
    first_bad_row: str | None = None  # the message a strict read would have stopped at
    empty: int = 0
    replaced_bad_bytes: bool = False  # bad UTF-8 was replaced (with --replace-errors)
    blank: bool = True  # every document so far is whitespace only


@dataclass
class Corpus:
    """A corpus in `inputs/` (or anywhere): its kind, files, digest and documents."""

    path: Path
    kind: str
    text_field: str = "text"
    counts: DocumentCounts = field(default_factory=DocumentCounts)

    @classmethod
    def open(cls, path: Path, text_field: str = "text") -> Corpus:
        path = Path(path)
        kind = corpus_kind(path)
        if kind is None:
            known = ", ".join(KIND_SUFFIXES)
            raise CorpusError(f"{path.name} is not a corpus (a folder or a file ending in {known})")
        if kind in ("jsonl", "jsonl.gz", "parquet", "parquet-shards") and not text_field.strip():
            raise CorpusError("text_field is empty: name the field or column that holds the text")
        return cls(path, kind, text_field.strip())

    @property
    def name(self) -> str:
        return corpus_name(self.path)

    @property
    def label(self) -> str:
        return self.path.name + ("/" if self.kind in ("folder", "parquet-shards") else "")

    @property
    def single_document(self) -> bool:
        return self.kind in ("txt", "txt.gz")

    # --- files -----------------------------------------------------------------------------------------------

    def files(self) -> list[FileEntry]:
        """The corpus's files in sorted path order, as a list (see `iter_files`)."""
        return list(self.iter_files())

    def iter_files(self) -> Iterator[FileEntry]:
        """The corpus's files in sorted path order (of a folder: every file under it, hidden ones and links out
        of it left out; of Parquet shards: the .parquet files), one folder's listing in memory at a time."""
        if self.kind not in ("folder", "parquet-shards"):
            try:
                st = self.path.stat()
            except OSError as exc:
                raise CorpusError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
            yield FileEntry(str(self.path), self.path.name, st.st_size, st.st_mtime_ns)
            return
        root = os.path.realpath(self.path)
        found = False
        for entry in self._walk(root, root, ""):
            found = True
            yield entry
        if not found:
            what = "no Parquet file" if self.kind == "parquet-shards" else "no file"
            raise CorpusError(f"{self.label} is empty ({what} in it)")

    def _walk(self, root: str, folder: str, prefix: str) -> Iterator[FileEntry]:
        """The files under `folder` in the order of their relative paths' UTF-8 bytes: a folder's entries are
        sorted by name, a subfolder's name with "/" after it, which is the order of the full paths."""
        try:
            entries = list(os.scandir(folder))  # one system call per folder, the file types without a stat each
        except OSError as exc:
            raise CorpusError(f"{folder}: cannot read ({exc.strerror or exc})") from None
        keyed: list[tuple[bytes, os.DirEntry, bool]] = []
        for entry in entries:
            name = entry.name
            if name.startswith("."):  # .git, .cache, editors' swap files
                continue
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not target.startswith(root + os.sep) or not os.path.isfile(target):
                        continue  # links are not followed out of the folder, nor into folders
                    is_dir = False
                else:
                    is_dir = entry.is_dir()
            except OSError as exc:
                raise CorpusError(f"{entry.path}: cannot read ({exc.strerror or exc})") from None
            keyed.append(((name + "/" if is_dir else name).encode("utf-8", "surrogateescape"), entry, is_dir))
        keyed.sort(key=lambda k: k[0])
        del entries
        for _, entry, is_dir in keyed:
            rel = prefix + entry.name
            if is_dir:
                yield from self._walk(root, entry.path, rel + "/")
                continue
            if self.kind == "parquet-shards" and not entry.name.lower().endswith(".parquet"):
                continue
            try:
                st = entry.stat()
            except OSError as exc:
                raise CorpusError(f"{entry.path}: cannot read ({exc.strerror or exc})") from None
            if stat.S_ISREG(st.st_mode):
                yield FileEntry(entry.path, rel, st.st_size, st.st_mtime_ns)

    # --- the scan: digest, text files, checks --------------------------------------------------------------

    def scan(self, replace_errors: bool = False, progress: Progress | None = None,
             cancel: threading.Event | None = None) -> Scan:
        """One streaming pass over every byte: the content digest, and which files hold text.

        A single text file's digest is the sha256 of its bytes (as before corpus kinds, so earlier cache entries
        and runs still match); every other kind's covers its kind and text field, and a folder's each file's
        relative path, size and content in sorted order."""
        t0 = time.perf_counter()
        total = sum(e.size for e in self.iter_files())  # a walk of stats only, for the progress's ETA
        h, listing = hashlib.sha256(), hashlib.sha256()
        if self.kind != "txt":
            h.update(f"gptui-corpus\0{self.kind}\0{self.text_field}\0".encode())
        meter = ByteMeter(progress, "hashing", total)
        keep = self.kind != "folder"  # a folder's text files are found again by its documents pass
        text_files: list[FileEntry] = []
        text_count = binary = bad_utf8 = 0
        check_text = self.kind in ("txt", "folder")
        count_lines, lines = self.kind == "jsonl", 0
        for entry in self.iter_files():
            listing.update(_listed(entry))
            if self.kind in ("folder", "parquet-shards"):
                rel = entry.rel.encode("utf-8", "surrogateescape")
                h.update(len(rel).to_bytes(8, "big") + rel + entry.size.to_bytes(8, "big"))
            checker = _TextCheck() if check_text else None
            try:
                with open(entry.full, "rb") as f:
                    read = 0
                    while chunk := f.read(READ_BYTES):
                        if cancel is not None and cancel.is_set():
                            raise CorpusCancelled("preparing cancelled")
                        h.update(chunk)
                        if count_lines:
                            lines += chunk.count(b"\n")
                        if checker is not None:
                            checker.feed(chunk)
                        read += len(chunk)
                        meter.add(len(chunk))
            except OSError as exc:
                raise CorpusError(f"{entry.path}: cannot read ({exc.strerror or exc})") from None
            if read != entry.size:
                raise CorpusChanged(f"{entry.path} changed while it was read; prepare again")
            if checker is not None:
                checker.finish()
                if self.kind == "txt":
                    if checker.bad_at is not None:
                        if not replace_errors:
                            raise CorpusError(checker.refusal(entry.path.name))
                        bad_utf8 += 1
                    if read == 0 or checker.blank:
                        raise CorpusError(f"{entry.path} is empty")
                elif checker.binary or (checker.bad_at is not None and not replace_errors):
                    binary += 1
                    continue
                elif checker.bad_at is not None:
                    bad_utf8 += 1
            text_count += 1
            if keep:
                text_files.append(entry)
        meter.done()
        if bad_utf8 and self.kind == "folder":  # with --replace-errors those files are documents: another corpus
            h.update(b"\0replaced-bad-utf8")
        documents = None
        if self.kind == "jsonl":
            documents = lines  # an upper bound (blank lines count): enough to choose the split rule
        if self.kind == "txt":
            documents = 1
        elif self.kind == "folder":
            if not text_count:
                raise CorpusError(f"{self.label} has no text file ({binary} binary file"
                                  f"{'s' if binary != 1 else ''} skipped)")
            documents = text_count
        elif self.kind in ("parquet", "parquet-shards"):
            documents = sum(_parquet_rows(e.path, self.text_field) for e in text_files)
        return Scan(h.hexdigest(), total, listing.hexdigest(), text_files if keep else None, binary, bad_utf8,
                    documents, time.perf_counter() - t0, text_count)

    def check_unchanged(self, scan: Scan) -> None:
        """Refuse a corpus that changed since `scan` (a file added, removed, resized or rewritten)."""
        listing = hashlib.sha256()
        try:
            for entry in self.iter_files():
                listing.update(_listed(entry))
        except CorpusError:
            listing.update(b"gone")
        if listing.hexdigest() != scan.listing:
            raise CorpusChanged(f"{self.label} changed while it was prepared; prepare again")

    # --- documents -------------------------------------------------------------------------------------------

    def documents(self, scan: Scan, replace_errors: bool = False, skip_bad_rows: bool = False,
                  keep: Callable[[int], bool] | None = None) -> Iterator[str]:
        """Every document in order, one `str` each (a single document in pieces: see the module's note).
        Empty documents are left out. `self.counts` counts this pass. With `keep`, a folder reads only the
        files whose size in bytes `keep` takes, in order (a sample); other kinds ignore it."""
        self.counts = counts = DocumentCounts()
        if self.kind in ("txt", "txt.gz"):
            source = self._pieces(scan.text_files[0], replace_errors)
        elif self.kind == "folder":
            source = self._files_as_documents(scan.text_files, replace_errors, keep)
        elif self.kind in ("jsonl", "jsonl.gz"):
            source = self._json_lines(scan.text_files[0], replace_errors, skip_bad_rows)
        else:
            source = self._parquet_rows(scan.text_files, skip_bad_rows)
        for text in source:
            if not text:
                counts.empty += 1
                continue
            if not self.single_document:
                counts.documents += 1
            if counts.blank and not text.isspace():
                counts.blank = False
            counts.bytes += len(text.encode("utf-8", "surrogatepass"))
            yield text
        if self.single_document:
            counts.documents = 1
            if counts.blank:
                raise CorpusError(f"{self.path} is empty")
        elif counts.documents == 0 and keep is None:
            raise CorpusError(f"{self.label} holds no document with text"
                              + (f" ({counts.skipped_rows} bad rows skipped)" if counts.skipped_rows else ""))

    def _pieces(self, entry: FileEntry, replace_errors: bool) -> Iterator[str]:
        """One document in pieces, each cut just after a newline that a non-space character follows."""
        pending = ""
        for text in self._decoded(entry, replace_errors):
            pending += text
            if len(pending) < PIECE_CHARS:
                continue
            cut = _safe_cut(pending)
            if cut:
                yield pending[:cut]
                pending = pending[cut:]
        if pending:
            yield pending

    def _decoded(self, entry: FileEntry, replace_errors: bool) -> Iterator[str]:
        """The text of one file, decoded as it streams; bad UTF-8 is refused (naming the offset) or replaced."""
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        consumed = 0
        try:
            with _open_binary(entry.full) as f:
                while True:
                    chunk = f.read(READ_BYTES)
                    final = not chunk
                    state = decoder.getstate()[0]
                    try:
                        text = decoder.decode(chunk, final=final)
                    except UnicodeDecodeError as exc:
                        if not replace_errors:
                            data = state + chunk
                            raise CorpusError(_utf8_refusal(
                                entry.path.name, data[exc.start], consumed - len(state) + exc.start)) from None
                        decoder = codecs.getincrementaldecoder("utf-8")("replace")
                        self.counts.replaced_bad_bytes = True
                        text = decoder.decode(state + chunk, final=final)
                    consumed += len(chunk)
                    if text:
                        yield text
                    if final:
                        return
        except (OSError, EOFError, zlib.error) as exc:
            raise CorpusError(f"{entry.path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None

    def _files_as_documents(self, entries: list[FileEntry] | None, replace_errors: bool,
                            keep: Callable[[int], bool] | None = None) -> Iterator[str]:
        """Each text file's text; with `entries` None, the folder is walked again and its binary files are left
        out by the rules of the scan (a NUL byte, or bad UTF-8 without `replace_errors`). A file `keep` does
        not take is skipped unread."""
        walk = entries is None
        for entry in self.iter_files() if walk else entries:
            if keep is not None and not keep(entry.size):
                continue
            try:
                with open(entry.full, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise CorpusError(f"{entry.path}: cannot read ({exc.strerror or exc})") from None
            if len(data) != entry.size:
                raise CorpusChanged(f"{entry.path} changed while it was prepared; prepare again")
            if walk and b"\0" in data:
                continue
            try:
                yield data.decode("utf-8")
            except UnicodeDecodeError:
                if not replace_errors:
                    if walk:
                        continue
                    raise CorpusChanged(f"{entry.path} changed while it was prepared; prepare again") from None
                self.counts.replaced_bad_bytes = True
                yield data.decode("utf-8", "replace")

    def _json_lines(self, entry: FileEntry, replace_errors: bool, skip_bad_rows: bool) -> Iterator[str]:
        counts, key = self.counts, self.text_field
        number = 0
        for line in _lines(self._decoded(entry, replace_errors)):
            number += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problem = f"line {number}, column {exc.colno}: not JSON ({exc.msg})"
            else:
                if not isinstance(obj, dict):
                    problem = f"line {number}: not a JSON object"
                elif key not in obj:
                    fields = ", ".join(list(obj)[:8]) or "none"
                    problem = f"line {number}: no {key!r} field (fields: {fields}); set text_field to name it"
                elif not isinstance(obj[key], str):
                    problem = f"line {number}: the {key!r} field is {type(obj[key]).__name__}, not text"
                else:
                    yield obj[key]
                    continue
            problem = f"{entry.path.name} {problem}"
            if not skip_bad_rows:
                raise CorpusError(f"{problem}; pass --skip-bad-rows to skip such lines")
            counts.skipped_rows += 1
            counts.first_bad_row = counts.first_bad_row or problem

    def _parquet_rows(self, entries: list[FileEntry], skip_bad_rows: bool) -> Iterator[str]:
        pq = _pyarrow_parquet()
        counts, key = self.counts, self.text_field
        for entry in entries:
            handle = _parquet_file(pq, entry.path, key)
            row = 0
            try:
                for batch in handle.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[key]):
                    for value in batch.column(0).to_pylist():
                        row += 1
                        if isinstance(value, str):
                            yield value
                            continue
                        what = "null" if value is None else type(value).__name__
                        problem = f"{entry.rel} row {row}: column {key!r} is {what}, not text"
                        if not skip_bad_rows:
                            raise CorpusError(f"{problem}; pass --skip-bad-rows to skip such rows")
                        counts.skipped_rows += 1
                        counts.first_bad_row = counts.first_bad_row or problem
            except OSError as exc:
                raise CorpusError(f"{entry.path}: cannot read ({exc.strerror or exc})") from None
            except GptuiError:
                raise
            except Exception as exc:  # pyarrow's own errors (ArrowInvalid...) for a damaged file
                raise CorpusError(f"{entry.path.name} cannot be read as Parquet ({_first_line(exc)})") from None


# --- listing -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusStats:
    """What a listing shows, found without reading a large corpus whole (None: not known cheaply)."""

    kind: str
    bytes: int
    files: int
    documents: int | None
    chars: int | None = None  # a single text file's characters (None when not UTF-8)
    lines: int | None = None
    error: str | None = None


def corpus_stats(path: Path, text_field: str = "text") -> CorpusStats:
    """Bytes, files and documents of a corpus; a text file's characters and lines as well."""
    path = Path(path)
    kind = corpus_kind(path) or "txt"
    try:
        corpus = Corpus.open(path, text_field)
        files = corpus.files()
    except CorpusError as exc:
        return CorpusStats(kind, 0, 0, None, error=str(exc))
    total = sum(e.size for e in files)
    try:
        if kind == "txt":
            return _text_file_stats(files[0], total)
        if kind == "folder":
            if len(files) > SNIFF_FILES:  # a listing stays quick: a large folder's count comes with Prepare
                return CorpusStats(kind, total, len(files), None)
            documents = sum(1 for e in files if e.size and not _looks_binary(e.path))
            error = None if documents else "no text file"
            return CorpusStats(kind, total, len(files), documents, error=error)
        if kind == "jsonl":
            return CorpusStats(kind, total, 1, _count_lines(files[0].path))
        if kind in ("parquet", "parquet-shards"):
            try:
                documents = sum(_parquet_rows(e.path, None) for e in files)
            except CorpusError as exc:
                return CorpusStats(kind, total, len(files), None, error=str(exc))
            return CorpusStats(kind, total, len(files), documents)
        return CorpusStats(kind, total, 1, 1 if kind == "txt.gz" else None)
    except OSError as exc:
        return CorpusStats(kind, total, len(files), None, error=f"unreadable: {exc.strerror or exc}")


def _text_file_stats(entry: FileEntry, total: int) -> CorpusStats:
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    chars: int | None = 0
    lines = 0
    error = None
    last = b""
    with open(entry.path, "rb") as f:
        offset = 0
        while chunk := f.read(READ_BYTES):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
            if chars is not None:
                state = decoder.getstate()[0]
                try:
                    chars += len(decoder.decode(chunk))
                except UnicodeDecodeError as exc:
                    error = f"not UTF-8 at byte {offset - len(state) + exc.start}"
                    chars = None
            offset += len(chunk)
    if chars is not None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            error, chars = f"not UTF-8 at byte {offset - len(decoder.getstate()[0])}", None
    if last and last != b"\n":
        lines += 1
    return CorpusStats("txt", total, 1, 1, chars, lines, error)


def _looks_binary(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return True
    if b"\0" in head:
        return True
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(head)  # a cut character at the end is fine
    except UnicodeDecodeError:
        return True
    return False


def _count_lines(path: Path) -> int:
    lines, last = 0, b""
    with open(path, "rb") as f:
        while chunk := f.read(READ_BYTES):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (1 if last and last != b"\n" else 0)


def preview(path: Path, text_field: str = "text", limit: int = 6000) -> str:
    """The first `limit` characters of a corpus's documents (a rule between documents), read cheaply: only as
    much of it as the preview shows. A problem reading it comes back as the text to show."""
    try:
        source = Corpus.open(path, text_field)
        files = source.files()
        if source.kind == "folder":
            files = [e for e in files if not _looks_binary(e.path)][:50]
        head = Scan("", 0, "", files, text_file_count=len(files))
        parts: list[str] = []
        size = 0
        stream = source.documents(head, replace_errors=True, skip_bad_rows=True)
        try:
            for text in stream:
                parts.append(text[: limit - size])
                size += len(parts[-1])
                if size >= limit or source.single_document:
                    break
        finally:
            stream.close()
    except (CorpusError, OSError) as exc:
        return str(exc)
    rule = "\n" + "─" * 20 + " next document " + "─" * 20 + "\n"
    return rule.join(parts) + ("\n…" if size >= limit else "")


# --- progress ----------------------------------------------------------------------------------------------------


class ByteMeter:
    """Reports a phase's progress in bytes with its speed and an ETA, a few times a second at most."""

    def __init__(self, progress: Progress | None, stage: str, total: int, every: float = 0.2):
        self.progress, self.stage, self.total, self.every = progress, stage, max(0, total), every
        self.done_bytes = 0
        self.t0 = self.last = time.perf_counter()
        if progress:
            progress(f"{stage} {human_mb(0)} / {human_mb(total)}", 0.0 if total else None)

    def add(self, n: int) -> None:
        self.done_bytes += n
        now = time.perf_counter()
        if self.progress and now - self.last >= self.every:
            self.last = now
            self.progress(self.describe(now), self.done_bytes / self.total if self.total else None)

    def describe(self, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self.t0
        speed = self.done_bytes / elapsed if elapsed > 0 else 0.0
        text = f"{self.stage} {human_mb(self.done_bytes)} / {human_mb(self.total)}"
        if speed > 0 and self.done_bytes:
            eta = max(0.0, (self.total - self.done_bytes) / speed)
            text += f" ({speed / 1e6:,.1f} MB/s, eta {_clock(eta)})"
        return text

    def done(self) -> None:
        if self.progress:
            self.progress(self.describe(), 1.0 if self.total else None)


def human_mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 10e6 else f"{n / 1e6:,.0f} MB"


def _clock(seconds: float) -> str:
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# --- helpers -----------------------------------------------------------------------------------------------------


def _listed(entry: FileEntry) -> bytes:
    """What a file adds to a scan's listing digest: its relative path, size and modification time."""
    rel = entry.rel.encode("utf-8", "surrogateescape")
    return len(rel).to_bytes(8, "big") + rel + entry.size.to_bytes(8, "big") + entry.mtime_ns.to_bytes(16, "big", signed=True)


class _TextCheck:
    """Streams a file's bytes to tell whether it is text: no NUL byte, valid UTF-8 (the first bad offset)."""

    def __init__(self) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.offset = 0
        self.binary = False
        self.bad_at: int | None = None
        self.bad_byte = 0
        self.blank = True

    def feed(self, chunk: bytes) -> None:
        if b"\0" in chunk:
            self.binary = True
        if self.blank and chunk.strip():
            self.blank = False
        if self.bad_at is None:
            state = self.decoder.getstate()[0]
            if not state and chunk.isascii():  # ASCII is valid UTF-8; isascii is many times faster than decoding
                self.offset += len(chunk)
                return
            try:
                self.decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                data = state + chunk
                self.bad_at, self.bad_byte = self.offset - len(state) + exc.start, data[exc.start]
        self.offset += len(chunk)

    def finish(self) -> None:
        if self.bad_at is None:
            state = self.decoder.getstate()[0]
            try:
                self.decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                self.bad_at, self.bad_byte = self.offset - len(state), state[0]

    def refusal(self, name: str) -> str:
        return _utf8_refusal(name, self.bad_byte, self.bad_at or 0)


def _utf8_refusal(name: str, byte: int, offset: int) -> str:
    return (f"{name} is not valid UTF-8 (bad byte 0x{byte:02x} at offset {offset}); "
            "convert it, or pass --replace-errors to replace bad bytes")


def _safe_cut(text: str) -> int:
    """The last index just after a newline that a non-space character follows (0 when there is none)."""
    pos = len(text) - 1
    while True:
        pos = text.rfind("\n", 0, pos)
        if pos == -1:
            return 0
        if not text[pos + 1].isspace():
            return pos + 1


def _lines(texts: Iterator[str]) -> Iterator[str]:
    """Lines (without their newline) of a stream of decoded text pieces."""
    pending = ""
    for text in texts:
        pending += text
        parts = pending.split("\n")
        pending = parts.pop()
        yield from parts
    if pending:
        yield pending


def _open_binary(path: str):
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CorpusError(PYARROW_MISSING) from None
    return pq


def _parquet_file(pq, path: Path, column: str | None):
    try:
        handle = pq.ParquetFile(path)
    except OSError as exc:
        if getattr(exc, "strerror", None):
            raise CorpusError(f"{path}: cannot read ({exc.strerror})") from None
        raise CorpusError(f"{path.name} is not a Parquet file ({_first_line(exc)})") from None
    except Exception as exc:
        raise CorpusError(f"{path.name} is not a Parquet file ({_first_line(exc)})") from None
    if column is not None:
        names = handle.schema_arrow.names
        if column not in names:
            shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
            raise CorpusError(f"{path.name} has no column {column!r} (columns: {shown or 'none'}); "
                              "set text_field to name it")
    return handle


def _parquet_rows(path: Path, column: str | None) -> int:
    return int(_parquet_file(_pyarrow_parquet(), path, column).metadata.num_rows)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:160] if lines else type(exc).__name__
