"""A trace drawn as an SVG sequence diagram: lifelines, one row per step, time on the left.

Pure string building (no dependencies), so the report stays one self-contained file.
Every arrow is a ``<g class="arrow" data-kind=...>`` and every note a ``<g class="note">``,
which is what tests and browsers count.
"""

from __future__ import annotations

from html import escape

from redrive.lab.trace import Arrow, Note, Trace

COLUMN = 200
LEFT = 64
TOP = 56
ROW = 26
CHAR = 6.3  # average width of an 11 px sans-serif character

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
}

HEADER_FILL = {
    "topic": "#e3f2fd",
    "client": "#ede7f6",
    "listener": "#e8f5e9",
    "offsets": "#f3e5f5",
    "dlt": "#fbe9e7",
    "retry": "#e0f7fa",
}


_HEADER_FONT = 'text-anchor="middle" font-size="12" font-weight="bold"'


def _x(trace: Trace, participant_id: str) -> float:
    return LEFT + COLUMN * trace.index(participant_id) + COLUMN / 2


def render(trace: Trace, *, ident: str = "d") -> str:
    """The SVG element (a string) for `trace`; `ident` keeps marker ids unique in a page."""
    n = max(len(trace.participants), 1)
    width = LEFT + COLUMN * n + 16
    height = TOP + ROW * (len(trace.steps) + 1) + 8
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sequence" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" '
        f'font-size="11" role="img">',
        "<defs>",
    ]
    for kind, color in COLORS.items():
        out.append(
            f'<marker id="{ident}-{kind}" viewBox="0 0 10 10" refX="10" refY="5" '
            f'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>'
        )
    out.append("</defs>")
    bottom = height - 6
    for p in trace.participants:
        x = _x(trace, p.id)
        fill = HEADER_FILL.get(p.kind, "#eeeeee")
        fits = int((COLUMN - 12) / 7)  # characters of bold 12 px text in a header box
        lines = [p.label]
        if len(p.label) > fits and " (" in p.label:  # "Kafka client (consumer-retry)"
            head, _, tail = p.label.partition(" (")
            lines = [head, "(" + tail]
        lines = [ln if len(ln) <= fits else ln[: fits - 1] + "…" for ln in lines]
        if len(lines) == 1:
            text = f'<text x="{x}" y="28" {_HEADER_FONT}>{escape(lines[0])}</text>'
        else:
            text = (
                f'<text x="{x}" y="21" {_HEADER_FONT}>{escape(lines[0])}'
                f'<tspan x="{x}" dy="14">{escape(lines[1])}</tspan></text>'
            )
        out.append(
            f'<g class="participant" data-kind="{p.kind}">'
            f'<line x1="{x}" y1="{TOP - 12}" x2="{x}" y2="{bottom}" stroke="#9e9e9e" '
            f'stroke-dasharray="4 4"/>'
            f'<rect x="{x - COLUMN / 2 + 8}" y="8" width="{COLUMN - 16}" height="32" rx="4" '
            f'fill="{fill}" stroke="#616161"/>{text}<title>{escape(p.id)}</title></g>'
        )
    for row, step in enumerate(trace.steps):
        y = TOP + ROW * row + ROW / 2
        out.append(f'<text x="6" y="{y + 4}" fill="#757575" font-size="10">+{step.t:.2f}s</text>')
        if isinstance(step, Arrow):
            out.append(_arrow(trace, step, y, ident))
        else:
            out.append(_note(trace, step, y))
    out.append("</svg>")
    return "\n".join(out)


def _arrow(trace: Trace, a: Arrow, y: float, ident: str) -> str:
    x1, x2 = _x(trace, a.src), _x(trace, a.dst)
    color = COLORS.get(a.kind, "#333333")
    dash = ' stroke-dasharray="5 3"' if a.dashed else ""
    mid = (x1 + x2) / 2
    cross = ""
    head = f' marker-end="url(#{ident}-{a.kind})"'
    if a.kind == "dead-letter-failed":  # a write that never arrived: stops short, with an X
        x2 = x2 - 24 if x2 > x1 else x2 + 24
        cross = (
            f'<path d="M{x2 - 5},{y - 1} L{x2 + 5},{y + 9} M{x2 - 5},{y + 9} L{x2 + 5},{y - 1}" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        head = ""
    return (
        f'<g class="arrow" data-kind="{a.kind}">'
        f'<line x1="{x1}" y1="{y + 4}" x2="{x2}" y2="{y + 4}" stroke="{color}" '
        f'stroke-width="1.4"{dash}{head}/>{cross}'
        f'<text x="{mid}" y="{y}" text-anchor="middle" fill="{color}">{escape(a.label)}</text>'
        "</g>"
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
