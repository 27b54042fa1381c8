"""A trace drawn as an SVG sequence diagram: lifelines, time running downwards, to scale.

Steps that happen together are one row apart; a pause between two steps adds space in
proportion to its length (``PX_PER_S``), so a 1.5 s back-off is a visible gap and a 3 s one
twice as tall. A pause longer than ``CAP`` seconds is drawn ``CAP`` tall and marked as
compressed: a zig-zag band across the lifelines saying how long it was. A wait (back-off,
not due yet) is also a bar on its client's lifeline from the note to the time it ends.

Pure string building (no dependencies), so the report stays one self-contained file.
Every arrow is a ``<g class="arrow" data-kind=...>`` and every note a ``<g class="note">``,
which is what tests and browsers count. The SVG carries its natural ``width``/``height``;
the report lets it shrink to its box (``viewBox`` keeps the proportions).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from redrive.lab.trace import Arrow, Note, Step, Trace

COLUMN = 150
LEFT = 76
TOP = 56
ROW = 24
CHAR = 6.3  # average width of an 11 px sans-serif character
PX_PER_S = 40.0
"""Extra space per second of a pause between two steps."""
CAP = 3.0
"""Pauses longer than this (seconds) are drawn this long and marked as compressed."""
MARKED = 0.25
"""Pauses at least this long (seconds) get their length written in the time column."""

COLORS = {
    "poll": "#555555",
    "records": "#555555",
    "handle": "#1f4e99",
    "ok": "#2e7d32",
    "exception": "#c62828",
    "commit": "#6a1b9a",
    "seek": "#ef6c00",
    "pause": "#ef6c00",
    "resume": "#ef6c00",
    "dead-letter": "#d84315",
    "ack": "#d84315",
    "dead-letter-failed": "#c62828",
    "retry-hop": "#00838f",
    "acknowledge": "#00695c",
}
LIGHT_COMMIT = "#b39ddb"
"""A commit that moved no position (a window or attempt mark, a hand-over)."""
WAIT_FILL = "#ffcc80"

HEADER_FILL = {
    "topic": "#e3f2fd",
    "client": "#ede7f6",
    "listener": "#e8f5e9",
    "offsets": "#f3e5f5",
    "dlt": "#fbe9e7",
    "retry": "#e0f7fa",
}

_HEADER_FONT = 'text-anchor="middle" font-size="12" font-weight="bold"'
_HALO = 'paint-order="stroke" stroke="#ffffff" stroke-width="3" stroke-linejoin="round"'


@dataclass(frozen=True, slots=True)
class Gap:
    """A pause between two rows: from `top` to `bottom` (px), `seconds` long."""

    top: float
    bottom: float
    seconds: float

    @property
    def compressed(self) -> bool:
        return self.seconds > CAP


def layout(steps: tuple[Step, ...] | list[Step]) -> tuple[list[float], list[Gap]]:
    """The y of each step's row (its arrow's line) and the marked pauses between rows."""
    ys: list[float] = []
    gaps: list[Gap] = []
    y = TOP + ROW / 2
    for i, step in enumerate(steps):
        if i:
            pause = max(step.t - steps[i - 1].t, 0.0)
            extra = PX_PER_S * min(pause, CAP)
            if pause >= MARKED:
                gaps.append(Gap(y + 12, y + ROW + extra - 14, pause))
            y += ROW + extra
        ys.append(y)
    return ys, gaps


def _x(trace: Trace, participant_id: str) -> float:
    return LEFT + COLUMN * trace.index(participant_id) + COLUMN / 2


def size(trace: Trace) -> tuple[int, int]:
    """The diagram's natural width and height in px."""
    ys, _ = layout(trace.steps)
    n = max(len(trace.participants), 1)
    return LEFT + COLUMN * n + 16, int((ys[-1] if ys else TOP) + ROW + 8)


def render(trace: Trace, *, ident: str = "d") -> str:
    """The SVG element (a string) for `trace`; `ident` keeps marker ids unique in a page."""
    width, height = size(trace)
    ys, gaps = layout(trace.steps)
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sequence" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" '
        f'font-size="11" role="img">',
        "<defs>",
    ]
    for kind, color in (*COLORS.items(), ("commit-light", LIGHT_COMMIT)):
        out.append(
            f'<marker id="{ident}-{kind}" viewBox="0 0 10 10" refX="10" refY="5" '
            f'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>'
        )
    out.append("</defs>")
    bottom = height - 6
    for p in trace.participants:
        out.append(_participant(p.id, p.label, p.kind, _x(trace, p.id), bottom))
    out += [_gap(g, width) for g in gaps]
    for i, step in enumerate(trace.steps):
        if isinstance(step, Note) and step.until is not None and step.at:
            out.append(_wait(trace, step, i, ys))
    shown: float | None = None
    for step, y in zip(trace.steps, ys, strict=True):
        if shown is None or step.t - shown >= 0.01:
            out.append(
                f'<text x="6" y="{y + 4}" fill="#757575" font-size="10">+{step.t:.2f}s</text>'
            )
            shown = step.t
        if isinstance(step, Arrow):
            out.append(_arrow(trace, step, y, ident))
        else:
            out.append(_note(trace, step, y))
    out.append("</svg>")
    return "\n".join(out)


def _participant(ident: str, label: str, kind: str, x: float, bottom: float) -> str:
    fill = HEADER_FILL.get(kind, "#eeeeee")
    fits = int((COLUMN - 12) / 7)  # characters of bold 12 px text in a header box
    lines = [label]
    if len(label) > fits and " (" in label:  # "Kafka client (consumer-retry)"
        head, _, tail = label.partition(" (")
        lines = [head, "(" + tail]
    lines = [ln if len(ln) <= fits else ln[: fits - 1] + "…" for ln in lines]
    if len(lines) == 1:
        text = f'<text x="{x}" y="28" {_HEADER_FONT}>{escape(lines[0])}</text>'
    else:
        text = (
            f'<text x="{x}" y="21" {_HEADER_FONT}>{escape(lines[0])}'
            f'<tspan x="{x}" dy="14">{escape(lines[1])}</tspan></text>'
        )
    return (
        f'<g class="participant" data-kind="{kind}">'
        f'<line x1="{x}" y1="{TOP - 12}" x2="{x}" y2="{bottom}" stroke="#9e9e9e" '
        f'stroke-dasharray="4 4"/>'
        f'<rect x="{x - COLUMN / 2 + 8}" y="8" width="{COLUMN - 16}" height="32" rx="4" '
        f'fill="{fill}" stroke="#616161"/>{text}<title>{escape(ident)}</title></g>'
    )


def _gap(g: Gap, width: float) -> str:
    """A pause: its length in the time column; a compressed one is a zig-zag band."""
    mid = (g.top + g.bottom) / 2
    label = f"{g.seconds:.2f} s"
    if not g.compressed:
        return (
            f'<g class="gap" data-seconds="{g.seconds:.3f}">'
            f'<line x1="60" y1="{g.top}" x2="60" y2="{g.bottom}" stroke="#bdbdbd"/>'
            f'<text x="56" y="{mid + 4}" text-anchor="end" fill="#9e9e9e" '
            f'font-size="10">{label}</text></g>'
        )
    step = 12.0

    def zigzag(y: float) -> str:
        pts = [f"{x},{y + (3 if i % 2 else -3)}" for i, x in enumerate(_range(LEFT, width, step))]
        return f'<polyline points="{" ".join(pts)}" fill="none" stroke="#9e9e9e"/>'

    return (
        f'<g class="gap compressed" data-seconds="{g.seconds:.3f}">'
        f'<rect x="{LEFT}" y="{g.top}" width="{width - LEFT}" height="{g.bottom - g.top}" '
        f'fill="#fafafa"/>{zigzag(g.top)}{zigzag(g.bottom)}'
        f'<text x="{(LEFT + width) / 2}" y="{mid + 4}" text-anchor="middle" fill="#757575" '
        f'font-style="italic">… {label} without events, drawn as {CAP:g} s …</text>'
        f'<text x="56" y="{mid + 4}" text-anchor="end" fill="#757575" '
        f'font-size="10">{label}</text></g>'
    )


def _range(start: float, stop: float, step: float) -> list[float]:
    out = []
    x = start
    while x <= stop:
        out.append(x)
        x += step
    return out


def _wait(trace: Trace, n: Note, i: int, ys: list[float]) -> str:
    """A wait's bar on its lifeline, from the note down to the row at which it ends."""
    until = n.t if n.until is None else n.until
    end = len(ys) - 1
    for j in range(i + 1, len(ys)):
        if trace.steps[j].t >= until - 0.005:
            end = j
            break
    top, bottom = ys[i] + 11, ys[end] - 10
    if bottom - top < 4:
        return ""
    x = _x(trace, n.at)
    return (
        f'<rect class="wait" x="{x - 4}" y="{top}" width="8" height="{bottom - top}" '
        f'fill="{WAIT_FILL}" stroke="#ef6c00" stroke-width="0.5"/>'
    )


def _arrow(trace: Trace, a: Arrow, y: float, ident: str) -> str:
    x1, x2 = _x(trace, a.src), _x(trace, a.dst)
    color = COLORS.get(a.kind, "#333333")
    marker = a.kind
    width = "1.4"
    if not a.moved:
        color, marker, width = LIGHT_COMMIT, "commit-light", "1"
    dash = ' stroke-dasharray="5 3"' if a.dashed else ""
    mid = (x1 + x2) / 2
    cross = ""
    head = f' marker-end="url(#{ident}-{marker})"'
    if a.kind == "dead-letter-failed":  # a write that never arrived: stops short, with an X
        x2 = x2 - 24 if x2 > x1 else x2 + 24
        cross = (
            f'<path d="M{x2 - 5},{y - 1} L{x2 + 5},{y + 9} M{x2 - 5},{y + 9} L{x2 + 5},{y - 1}" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        head = ""
    moved = "" if a.moved else ' data-moved="false"'
    return (
        f'<g class="arrow" data-kind="{a.kind}"{moved}>'
        f'<line x1="{x1}" y1="{y + 4}" x2="{x2}" y2="{y + 4}" stroke="{color}" '
        f'stroke-width="{width}"{dash}{head}/>{cross}'
        f'<text x="{mid}" y="{y}" text-anchor="middle" fill="{color}" {_HALO}>'
        f"{escape(a.label)}</text></g>"
    )


def _note(trace: Trace, n: Note, y: float) -> str:
    x = _x(trace, n.at) if n.at else LEFT + COLUMN / 2
    w = len(n.text) * CHAR + 14
    fill = "#ffebee" if n.kind in ("lost", "lab") else "#fff8e1"
    return (
        f'<g class="note" data-kind="{n.kind}">'
        f'<rect x="{x - w / 2}" y="{y - 8}" width="{w}" height="18" rx="3" fill="{fill}" '
        f'stroke="#bdbdbd"/>'
        f'<text x="{x}" y="{y + 5}" text-anchor="middle" fill="#424242">{escape(n.text)}</text>'
        "</g>"
    )
