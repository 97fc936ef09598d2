"""The dashboard's charts, drawn as SVG text: no script, no asset fetched at run time.
Every label is escaped; each chart has a title and a description for screen readers (the
page shows the same numbers in a table)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from html import escape


@dataclass(frozen=True, slots=True)
class Bar:
    """One label with a value per series (last 7 days, last 30 days)."""

    label: str
    values: tuple[int, ...]
    key: str = ""


_W = 640
_LABEL_W = 250
_SERIES_CLASS = ("s7", "s30")


def _text(x: float, y: float, s: str, cls: str = "", anchor: str = "start") -> str:
    klass = f' class="{cls}"' if cls else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{klass}>'
            f"{escape(s)}</text>")


def _clip(label: str, n: int = 38) -> str:
    return label if len(label) <= n else label[: n - 1] + "\u2026"


def bar_chart(ident: str, title: str, bars: Sequence[Bar], series: Sequence[str]) -> str:
    """Horizontal bars, one group per label, one bar per series, values written out."""
    bar_h, gap, top = 11, 10, 34
    group_h = bar_h * len(series) + gap
    height = top + max(1, len(bars)) * group_h + 8
    peak = max((v for b in bars for v in b.values), default=0) or 1
    span = _W - _LABEL_W - 60
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart bars" viewBox="0 0 {_W} {height}" '
        f'role="img" aria-labelledby="{ident}-t {ident}-d">',
        f'<title id="{ident}-t">{escape(title)}</title>',
        f'<desc id="{ident}-d">{escape(_describe(bars, series))}</desc>',
    ]
    x = _LABEL_W
    for i, name in enumerate(series):
        cls = _SERIES_CLASS[i % len(_SERIES_CLASS)]
        out.append(f'<rect x="{x}" y="8" width="12" height="12" class="{cls}"/>')
        out.append(_text(x + 18, 18, name, "legend"))
        x += 150
    if not bars:
        out.append(_text(_LABEL_W, top + 12, "Nothing in this period.", "muted"))
    for gi, b in enumerate(bars):
        y0 = top + gi * group_h
        out.append(_text(_LABEL_W - 8, y0 + bar_h * len(series) / 2 + 4, _clip(b.label),
                         "label", "end"))
        for si, v in enumerate(b.values):
            y = y0 + si * bar_h
            w = max(1.0, span * v / peak) if v else 0.0
            cls = _SERIES_CLASS[si % len(_SERIES_CLASS)]
            out.append(f'<rect x="{_LABEL_W}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" '
                       f'class="{cls}"/>')
            out.append(_text(_LABEL_W + w + 4, y + bar_h - 3, str(v), "value"))
    out.append(f'<line x1="{_LABEL_W}" y1="{top - 4}" x2="{_LABEL_W}" y2="{height - 6}" '
               'class="axis"/>')
    out.append("</svg>")
    return "".join(out)


def _describe(bars: Sequence[Bar], series: Sequence[str]) -> str:
    if not bars:
        return "No data in this period."
    parts = [
        f"{b.label}: " + ", ".join(f"{v} ({s.lower()})" for s, v in zip(series, b.values,
                                                                         strict=False))
        for b in bars
    ]
    return "; ".join(parts) + "."


def line_chart(ident: str, title: str, points: Sequence[tuple[date, int]],
               width: int = 1200) -> str:
    """One line over days, with gridlines, a dot per day and weekly date labels (drawn for
    a full-width card: ``width`` user units, so its text keeps the page's size)."""
    height, left, right, top, bottom = 220, 44, 24, 12, 30
    peak = max((v for _, v in points), default=0)
    ceiling = max(4, _nice(peak))
    iw, ih = width - left - right, height - top - bottom
    n = max(1, len(points) - 1)

    def xy(i: int, v: int) -> tuple[float, float]:
        return left + iw * i / n, top + ih * (1 - v / ceiling)

    desc = ", ".join(f"{d.isoformat()}: {v}" for d, v in points if v) or "no refusals"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="{ident}-t {ident}-d">',
        f'<title id="{ident}-t">{escape(title)}</title>',
        f'<desc id="{ident}-d">{escape("Refusals per day: " + desc + ".")}</desc>',
    ]
    for k in range(5):
        value = ceiling * k // 4
        _, y = xy(0, value)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
                   'class="gridline"/>')
        out.append(_text(left - 6, y + 4, str(value), "value", "end"))
    coords = [xy(i, v) for i, (_, v) in enumerate(points)]
    if coords:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        out.append(f'<polyline points="{path}" class="line"/>')
        for (x, y), (d, v) in zip(coords, points, strict=True):
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" class="dot">'
                       f"<title>{d.isoformat()}: {v}</title></circle>")
    last = len(points) - 1
    for i, (d, _) in enumerate(points):
        # Weekly labels counted back from today, so the last day is always labelled.
        if (last - i) % 7 == 0:
            x, _y = xy(i, 0)
            anchor = "end" if i == last else "start" if i == 0 else "middle"
            out.append(_text(x, height - 8, d.strftime("%b %d"), "label", anchor))
    out.append("</svg>")
    return "".join(out)


def _nice(v: int) -> int:
    """A round axis maximum at or above ``v``."""
    if v <= 4:
        return 4
    step = 1
    while step * 10 < v:
        step *= 10
    for m in (1, 2, 4, 5, 10):
        if m * step >= v:
            return m * step
    return 10 * step
