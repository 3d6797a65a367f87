"""A loss-against-step plot that stays cheap however long the run: downsampled series, bounded redraw rate."""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual_plotext import PlotextPlot

MAX_POINTS = 500  # per series: more than a terminal has columns of braille dots anyway
REDRAW_SECONDS = 0.25  # at most 4 redraws a second, however fast the events come


def downsample(xs: Sequence[float], ys: Sequence[float], limit: int = MAX_POINTS) -> tuple[list, list]:
    """At most `limit` evenly spaced points, always keeping the first and the last."""
    n = len(xs)
    if n <= limit:
        return list(xs), list(ys)
    idx = [round(i * (n - 1) / (limit - 1)) for i in range(limit)]
    return [xs[i] for i in idx], [ys[i] for i in idx]


def step_ticks(low: float, high: float, most: int = 6) -> list[int]:
    """Whole steps for the x axis: multiples of 1, 2 or 5 times a power of ten, at most `most` of them, within
    [low, high] (plotext's own ticks split the range evenly and print steps as 31.5)."""
    low, high = math.ceil(low), math.floor(high)
    if high <= low:
        return [low]
    span = high - low
    spacing = next(m * 10 ** e for e in range(int(math.log10(span)) + 1) for m in (1, 2, 5)
                   if span // (m * 10 ** e) + 1 <= most)
    first = -(-low // spacing) * spacing
    return list(range(first, high + 1, spacing))


class LossPlot(PlotextPlot):
    """Named series of (step, loss). Appending only marks the plot dirty; a timer redraws it."""

    DEFAULT_CSS = """
    LossPlot {
        min-height: 8;
    }
    """

    def __init__(self, title: str = "loss", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        self._dirty = True

    def on_mount(self) -> None:  # PlotextPlot's own on_mount runs too (Textual walks the MRO)
        self.set_interval(REDRAW_SECONDS, self._redraw_if_dirty)
        self._redraw()

    def clear(self, title: str | None = None) -> None:
        self.series.clear()
        if title is not None:
            self.title = title
        self._dirty = True

    def append(self, name: str, x: float, y: float) -> None:
        xs, ys = self.series.setdefault(name, ([], []))
        xs.append(x)
        ys.append(y)
        self._dirty = True

    def set_series(self, name: str, xs: Sequence[float], ys: Sequence[float]) -> None:
        self.series[name] = (list(xs), list(ys))
        self._dirty = True

    def point_count(self, name: str) -> int:
        return len(self.series.get(name, ((), ()))[0])

    def flush(self) -> None:
        """Redraw now if anything changed (the timer does this on its own; tests call it to be exact)."""
        if self._dirty:
            self._redraw()

    _redraw_if_dirty = flush

    def _redraw(self) -> None:
        self._dirty = False
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.title)
        plt.xlabel("step")
        drawn = {name: (xs, ys) for name, (xs, ys) in self.series.items() if xs}
        for name, (xs, ys) in drawn.items():
            dx, dy = downsample(xs, ys)
            plt.plot(dx, dy, label=name, marker="braille")
        if drawn:
            steps = [x for xs, _ in drawn.values() for x in xs]
            ticks = step_ticks(min(steps), max(steps))
            plt.xticks(ticks, [f"{t:,}" for t in ticks])
        else:
            plt.xlim(0, 1)
            plt.ylim(0, 1)
        self.refresh()
