"""The workspace: a folder holding `inputs/` (corpora) and `models/` (one folder per run)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gptui.core.corpus import KIND_SUFFIXES, corpus_kind, corpus_name, corpus_stats
from gptui.core.errors import CorpusError

SAMPLE_CORPUS = "tinyshakespeare.txt"
COPY_LIMIT_BYTES = 64 << 20  # a text file added above this size is linked into inputs/, not copied


@dataclass(frozen=True)
class CorpusInfo:
    name: str  # the name without the kind's suffix (a folder's own name)
    path: Path
    bytes: int
    chars: int | None  # a text file's characters; None for other kinds, or when the file is not valid UTF-8
    lines: int | None  # a text file's lines; None for other kinds
    error: str | None = None
    kind: str = "txt"  # see corpus.KIND_NAMES
    documents: int | None = 1  # None when not known without reading it whole (a .gz)
    files: int = 1

    @property
    def file_name(self) -> str:
        """The entry in inputs/ (what `corpus_path` takes to name exactly this corpus)."""
        return self.path.name


class Workspace:
    def __init__(self, home: Path | str | None = None):
        if home is None:
            home = os.environ.get("GPTUI_HOME") or Path.cwd()
        self.home = Path(home).expanduser().resolve()
        self.inputs = self.home / "inputs"
        self.models = self.home / "models"
        self.cache = self.home / ".cache" / "gptui"
        self._stats: dict[Path, tuple[tuple[int, int], CorpusInfo]] = {}

    def ensure(self) -> Workspace:
        """Create missing folders; give a workspace with no corpus the bundled sample."""
        for folder in (self.inputs, self.models, self.cache):
            folder.mkdir(parents=True, exist_ok=True)
        # a folder is a corpus of some kind: no need to walk it to find which
        if not any(p.is_dir() or corpus_kind(p) for p in self.inputs.iterdir() if not p.name.startswith(".")):
            sample = resources.files("gptui") / "data" / SAMPLE_CORPUS
            with resources.as_file(sample) as src:
                shutil.copyfile(src, self.inputs / SAMPLE_CORPUS)
        return self

    # --- corpora -----------------------------------------------------------------------------------------

    def corpus_path(self, name: str) -> Path:
        """Resolve a corpus name (`NAME`, or its entry in inputs/ such as `NAME.jsonl`) to its file or folder in
        inputs/, or raise CorpusError."""
        name = name.strip().rstrip("/")
        if not name:
            raise CorpusError("no corpus named: give --input NAME (a file or folder in inputs/)")
        if "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
            raise CorpusError(f"corpus name {name!r} must be a name in {self.inputs}, not a path")
        exact = self.inputs / name
        if exact.is_dir() or (exact.exists() and corpus_kind(exact) is not None):
            return exact
        found = [p for p in (self.inputs / (name + suffix) for suffix in KIND_SUFFIXES) if p.exists()]
        if len(found) > 1:
            raise CorpusError(f"several corpora are named {name!r} ({', '.join(p.name for p in found)}): "
                              "give the one you mean with its extension")
        if found:
            return found[0]
        if exact.exists():
            raise CorpusError(f"{exact} is not a corpus (a folder, or a file ending in "
                              f"{', '.join(KIND_SUFFIXES)})")
        known = ", ".join(c.name for c in self.corpora()) or "none"
        raise CorpusError(f"no corpus {name!r} in {self.inputs} (available: {known})")

    def corpora(self) -> list[CorpusInfo]:
        """Every corpus in inputs/, of every kind, by name."""
        if not self.inputs.is_dir():
            return []
        entries = [p for p in self.inputs.iterdir() if not p.name.startswith(".") and corpus_kind(p) is not None]
        return [self.corpus_info(p) for p in sorted(entries, key=lambda p: (corpus_name(p), p.name))]

    def corpus_info(self, path: Path) -> CorpusInfo:
        """A corpus's kind, bytes, files and documents (a text file's characters and lines too), kept while its
        size and time stamp stay the same."""
        try:
            st = path.stat()
            key: tuple = (st.st_size, st.st_mtime_ns)
        except OSError:
            key = (-1, -1)
        if path.is_dir():
            key = ()  # a folder's own time stamp misses edits deep inside it: always look again
        cached = self._stats.get(path)
        if key and cached and cached[0] == key:
            return cached[1]
        stats = corpus_stats(path)
        info = CorpusInfo(corpus_name(path), path, stats.bytes, stats.chars, stats.lines, stats.error,
                          stats.kind, stats.documents, stats.files)
        self._stats[path] = (key, info)
        return info

    def add_corpus(self, source: Path | str) -> Path:
        """Add a corpus to inputs/ under its own name: a small text file is checked and copied (.txt added when
        it has no corpus suffix); a large file, a folder or any other kind is linked, and checked when it is
        prepared, so adding a big corpus costs nothing and keeps no second copy."""
        src = Path(source).expanduser()
        if not src.exists():
            raise CorpusError(f"{src}: no such file or folder")
        src = src.resolve()
        if src.is_dir():
            if src == self.inputs.resolve() or self.inputs.resolve().is_relative_to(src):
                raise CorpusError(f"{src} holds the workspace's own inputs/; add a folder of documents")
            if not any(True for _ in src.iterdir()):
                raise CorpusError(f"{src} is an empty folder")
            name, link = src.name, True
        elif not src.is_file():
            raise CorpusError(f"{src} is not a regular file or a folder")
        elif corpus_kind(src) is None or corpus_kind(src) == "txt":
            name = src.name if corpus_kind(src) == "txt" else src.name + ".txt"
            link = src.stat().st_size > COPY_LIMIT_BYTES
            if not link:
                read_text(src)  # refuse non-UTF-8 or empty files before copying
        else:
            name, link = src.name, True
        dest = self.inputs / name
        if dest.exists() or dest.is_symlink():
            if dest.resolve() == src:
                return dest
            raise CorpusError(f"a corpus named {name!r} already exists in {self.inputs}")
        clash = [c.file_name for c in self.corpora() if c.name == corpus_name(dest)]
        if clash:
            raise CorpusError(f"a corpus named {corpus_name(dest)!r} already exists in {self.inputs} ({clash[0]})")
        self.inputs.mkdir(parents=True, exist_ok=True)
        if link:
            dest.symlink_to(src, target_is_directory=src.is_dir())
        else:
            shutil.copyfile(src, dest)
        return dest


def read_text(path: Path, replace_errors: bool = False) -> str:
    """Read a corpus as UTF-8; refuse bad bytes (naming file and offset) unless asked to replace them."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise CorpusError(f"{path} is a directory, not a text file") from None
    except PermissionError:
        raise CorpusError(f"{path}: permission denied") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data.strip():
        raise CorpusError(f"{path} is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if replace_errors:
            return data.decode("utf-8", errors="replace")
        raise CorpusError(
            f"{Path(path).name} is not valid UTF-8 (bad byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "convert it, or pass --replace-errors to replace bad bytes"
        ) from None
