"""How numbers read on screen: sizes, durations and losses in the same short forms on every tab."""

from __future__ import annotations

from rich.text import Text

# how a run's log line looks by its kind (gptui.core.events.LOG_KINDS): what went wrong stands out, the settings
# header recedes, an evaluation (the line people look for) is bold
LOG_STYLES = {"warning": "bold yellow", "error": "bold red", "evaluation": "bold", "finish": "bold green",
              "setting": "dim", "sample": "italic", "info": ""}


def human_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, int(round(seconds)))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def human_number(n: float | None) -> str:
    """1234567 -> '1.2M' (parameter counts, tokens per second)."""
    if n is None:
        return "—"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def loss_text(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def memory_text(memory: dict | None) -> str:
    """GPU allocated/reserved/peak on CUDA, the process's resident memory elsewhere."""
    if not memory:
        return "—"
    if memory.get("kind") == "cuda":
        return (
            f"GPU {human_bytes(memory.get('allocated'))} alloc · {human_bytes(memory.get('reserved'))} reserved"
            f" · {human_bytes(memory.get('peak'))} peak"
        )
    return f"process {human_bytes(memory.get('allocated'))} (peak {human_bytes(memory.get('peak'))})"


def log_text(line: str, kind: str = "info") -> Text:
    """One line of a run's log, styled by its kind."""
    return Text(line, style=LOG_STYLES.get(kind, ""))
