"""Tables and sections: what each benchmark hands back to ``run.py`` for the terminal and docs/benchmarks.md."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Target:
    """A target of the issue, with the figure measured for it in this run."""

    what: str
    target: str
    figure: str
    met: bool | None  # None: not measured in this run


@dataclass
class Section:
    name: str
    title: str
    body: str  # markdown: the method, the table(s), what the figures say
    targets: list[Target] = field(default_factory=list)
    load: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A markdown table, padded so that it also reads well in a terminal."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}"


def med(samples: list[float]) -> float:
    return statistics.median(samples)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"
