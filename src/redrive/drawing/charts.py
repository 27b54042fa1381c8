"""Time-series charts as inline SVG: lines (cumulative counts, lag), bars (counts per
interval), and vertical markers for events (a fault: a line at its time, or a band from its
start to its end).

Each chart is ``<svg class="chart" data-chart=NAME>``; each line a ``<g class="series"
data-label=...>`` and each marker a ``<g class="marker" data-kind=...>``, which is what
tests and browsers count. Like the sequence diagrams, a chart carries its natural size and a
``viewBox``, so the page can shrink it to its box.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 960
HEIGHT = 230
LEFT = 64
RIGHT = 16
TOP = 28
BOTTOM = 34
PALETTE = (
    "#1f4e99",
    "#2e7d32",
    "#ef6c00",
    "#6a1b9a",
    "#00838f",
    "#c62828",
    "#5d4037",
    "#455a64",
    "#ad1457",
    "#9e9d24",
)


@dataclass(frozen=True, slots=True)
class Series:
    """A line through `points` (x, y), x in seconds; ``bars``: one bar per point instead,
    ``width`` seconds wide."""

    label: str
    points: Sequence[tuple[float, float]]
    color: str = ""
    bars: bool = False
    width: float = 1.0


@dataclass(frozen=True, slots=True)
class Marker:
    """An event at `t` seconds (until `until`: a band), drawn across the chart."""

    t: float
    kind: str
    label: str
    color: str
    until: float | None = None


def nice(top: float) -> float:
    """A round number at or above `top` for the y axis (1, 2, 2.5, 5 times a power of 10)."""
    if top <= 0:
        return 1.0
    power = 1.0
    while power * 10 <= top:
        power *= 10
    while power > top:
        power /= 10
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= top:
            return step * power
    return 10 * power


def _fmt(v: float) -> str:
    if v >= 1_000_000:
        return f"{v / 1_000_000:g}M"
    if v >= 1_000:
        return f"{v / 1_000:g}k"
    return f"{v:g}"


def chart(
    name: str,
    title: str,
    series: Sequence[Series],
    *,
    x_max: float,
    markers: Sequence[Marker] = (),
    y_label: str = "",
) -> str:
    """The SVG of one chart; x runs from 0 to `x_max` seconds."""
    x_max = max(x_max, 1e-9)
    y_top = nice(max((y for s in series for _, y in s.points), default=0.0))
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return round(LEFT + inner_w * min(max(t, 0.0), x_max) / x_max, 1)

    def y(v: float) -> float:
        return round(TOP + inner_h * (1 - v / y_top), 1)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{escape(name)}" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'font-family="sans-serif" font-size="11" role="img">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    for i in range(5):  # horizontal grid and the y axis's values
        v = y_top * i / 4
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v)}" y2="{y(v)}" '
            f'stroke="{"#9e9e9e" if i == 0 else "#eeeeee"}"/>'
            f'<text x="{LEFT - 6}" y="{y(v) + 4}" text-anchor="end" fill="#757575">'
            f"{_fmt(v)}</text>"
        )
    step = nice(x_max / 8)
    t = 0.0
    while t <= x_max + 1e-9:
        out.append(
            f'<text x="{x(t)}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
            f'fill="#757575">{_fmt(t)} s</text>'
        )
        t += step
    if y_label:
        out.append(
            f'<text x="12" y="{TOP + inner_h / 2}" fill="#757575" text-anchor="middle" '
            f'transform="rotate(-90 12 {TOP + inner_h / 2})">{escape(y_label)}</text>'
        )
    for m in markers:
        out.append(_marker(m, x, TOP, TOP + inner_h))
    legend_x = LEFT + 8.0
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        out.append(_series(s, color, x, y, y(0), inner_w / x_max))
        out.append(
            f'<text x="{legend_x}" y="{HEIGHT - 4}" fill="{color}">&#9632; {escape(s.label)}</text>'
        )
        legend_x += 16 + 6.3 * len(s.label)
    out.append("</svg>")
    return "\n".join(out)


Scale = Callable[[float], float]


def _series(s: Series, color: str, fx: Scale, fy: Scale, base: float, px_per_s: float) -> str:
    label = escape(s.label)
    if s.bars:
        w = max(px_per_s * s.width - 0.5, 0.8)
        rects = "".join(
            f'<rect x="{fx(t)}" y="{fy(v)}" width="{w:.1f}" height="{base - fy(v):.1f}"/>'
            for t, v in s.points
            if v > 0
        )
        return f'<g class="series" data-label="{label}" fill="{color}">{rects}</g>'
    pts = " ".join(f"{fx(t)},{fy(v)}" for t, v in s.points)
    return (
        f'<g class="series" data-label="{label}"><polyline points="{pts}" fill="none" '
        f'stroke="{color}" stroke-width="1.6" stroke-linejoin="round"/></g>'
    )


def _marker(m: Marker, fx: Scale, top: float, bottom: float) -> str:
    title = f"<title>{escape(m.label)}</title>"
    if m.until is not None and m.until > m.t:
        x1, x2 = fx(m.t), fx(m.until)
        return (
            f'<g class="marker" data-kind="{escape(m.kind)}">{title}'
            f'<rect x="{x1}" y="{top}" width="{max(x2 - x1, 1.5):.1f}" height="{bottom - top}" '
            f'fill="{m.color}" fill-opacity="0.18"/>'
            f'<text x="{x1 + 2}" y="{top + 10}" fill="{m.color}" font-size="10">'
            f"{escape(m.label)}</text></g>"
        )
    return (
        f'<g class="marker" data-kind="{escape(m.kind)}">{title}'
        f'<line x1="{fx(m.t)}" x2="{fx(m.t)}" y1="{top}" y2="{bottom}" stroke="{m.color}" '
        f'stroke-width="1" stroke-dasharray="3 2"/></g>'
    )
