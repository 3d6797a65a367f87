"""The workspace: a folder holding `inputs/` (corpora) and `models/` (one folder per run)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gptui.core.errors import CorpusError

SAMPLE_CORPUS = "tinyshakespeare.txt"


@dataclass(frozen=True)
class CorpusInfo:
    name: str  # file name without .txt
    path: Path
    bytes: int
    chars: int | None  # None when the file is not valid UTF-8
    lines: int
    error: str | None = None


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
        if not any(p.is_file() for p in self.inputs.glob("*.txt")):
            sample = resources.files("gptui") / "data" / SAMPLE_CORPUS
            with resources.as_file(sample) as src:
                shutil.copyfile(src, self.inputs / SAMPLE_CORPUS)
        return self

    # --- corpora -----------------------------------------------------------------------------------------

    def corpus_path(self, name: str) -> Path:
        """Resolve a corpus name (with or without .txt) to its file in inputs/, or raise CorpusError."""
        name = name.strip()
        if not name:
            raise CorpusError("no corpus named: give --input NAME (a file in inputs/)")
        if "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
            raise CorpusError(f"corpus name {name!r} must be a file name in {self.inputs}, not a path")
        file = name if name.endswith(".txt") else name + ".txt"
        path = self.inputs / file
        if not path.exists():
            known = ", ".join(c.name for c in self.corpora()) or "none"
            raise CorpusError(f"no corpus {file!r} in {self.inputs} (available: {known})")
        if not path.is_file():
            raise CorpusError(f"{path} is not a regular file")
        return path

    def corpora(self) -> list[CorpusInfo]:
        if not self.inputs.is_dir():
            return []
        return [self.corpus_info(p) for p in sorted(self.inputs.glob("*.txt")) if p.is_file()]

    def corpus_info(self, path: Path) -> CorpusInfo:
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns)
        cached = self._stats.get(path)
        if cached and cached[0] == key:
            return cached[1]
        chars, lines, error = None, 0, None
        try:
            data = path.read_bytes()
            lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
            try:
                chars = len(data.decode("utf-8"))
            except UnicodeDecodeError as exc:
                error = f"not UTF-8 at byte {exc.start}"
        except OSError as exc:
            error = f"unreadable: {exc.strerror or exc}"
        info = CorpusInfo(path.stem, path, st.st_size, chars, lines, error)
        self._stats[path] = (key, info)
        return info

    def add_corpus(self, source: Path | str) -> Path:
        """Copy a text file into inputs/ (keeping its name, .txt added) and return the new path."""
        src = Path(source).expanduser()
        if not src.exists():
            raise CorpusError(f"{src}: no such file")
        if not src.is_file():
            raise CorpusError(f"{src} is not a regular file")
        read_text(src)  # refuse non-UTF-8 or empty files before copying
        name = src.name if src.suffix == ".txt" else src.name + ".txt"
        dest = self.inputs / name
        if dest.exists() and dest.resolve() != src.resolve():
            raise CorpusError(f"a corpus named {name!r} already exists in {self.inputs}")
        self.inputs.mkdir(parents=True, exist_ok=True)
        if dest.resolve() != src.resolve():
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
