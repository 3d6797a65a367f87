"""How tokens look on screen in the views that look inside a model: whitespace made visible, and a shade for a
number between 0 and 1 (a probability, an attention weight) that reads on dark and light themes alike."""

from __future__ import annotations

import json

from rich.color import Color
from rich.style import Style

VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
LOW = (28, 32, 48)  # the shade of 0: a dark blue-grey
HIGH = (255, 196, 64)  # the shade of 1: amber


def visible(token: str) -> str:
    """The token with whitespace and control characters drawn as symbols (its boundaries stay visible)."""
    return "".join(VISIBLE.get(c, "·" if ord(c) < 32 or ord(c) == 127 else c) for c in token)


def quoted(token: str, width: int = 0) -> str:
    """The token as a quoted string with escapes (the side panels), cut to `width` with an ellipsis."""
    text = json.dumps(token, ensure_ascii=False)
    return text[: width - 1] + "…" if width and len(text) > width else text


def shade(value: float) -> Style:
    """A background from dark (0) to amber (1); the square root spreads the small values that matter most."""
    t = min(1.0, max(0.0, value)) ** 0.5
    rgb = tuple(round(lo + (hi - lo) * t) for lo, hi in zip(LOW, HIGH, strict=True))
    text = "black" if t > 0.6 else "white"
    return Style(bgcolor=Color.from_rgb(*rgb), color=text)


def legend(width: int = 10) -> list[tuple[str, Style]]:
    """The shades from 0 to 1, one cell each, for a key under a view."""
    return [(" ", shade(i / (width - 1))) for i in range(width)]
