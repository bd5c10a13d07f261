"""A self-contained HTML page with the chord diagram as inline SVG and a little inline JS for hover.

Nothing is fetched when the page is viewed: no CDN, no fonts, no images. Each chord also carries
an SVG <title>, so the label shows on hover even with scripts turned off.
"""

from __future__ import annotations

import math
from html import escape

from .chord_layout import DiagramLayout, chord_path, group_path, lay_out, point
from .chords import ChordData

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1f77b4",
    "#8c564b",
)

ARC_THICKNESS = 16
# Names are written outwards along the radius in 12px text, about 7px a character.
LABEL_CHARACTER_WIDTH = 7


def label_margin(people: list[str]) -> float:
    """Room around the circle for the longest name, so the circle is as big as the names allow."""
    longest = max((len(person) for person in people), default=0)
    return min(max(24 + LABEL_CHARACTER_WIDTH * longest, 40), 200)


_STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 18px; margin: 0 0 4px; }
p.note { margin: 0 0 8px; color: #555; font-size: 12px; }
svg text { font-size: 12px; fill: #222; }
path.chord { fill-opacity: 0.7; stroke: #fff; stroke-width: 0.5; transition: fill-opacity 0.15s; }
path.chord.faded { fill-opacity: 0.08; }
path.chord.active { fill-opacity: 0.95; }
g.group path { stroke-width: 1; }
#tooltip { position: fixed; pointer-events: none; background: rgba(20,20,20,0.9); color: #fff;
           padding: 4px 8px; border-radius: 4px; font-size: 13px; white-space: nowrap; }
"""

# Hover: show the chord's label next to the pointer and fade the other chords.
_SCRIPT = """
(function () {
  var tooltip = document.getElementById("tooltip");
  var chords = Array.prototype.slice.call(document.querySelectorAll("path.chord"));
  function show(text, event) {
    tooltip.textContent = text;
    tooltip.hidden = false;
    tooltip.style.left = (event.clientX + 12) + "px";
    tooltip.style.top = (event.clientY + 12) + "px";
  }
  function highlight(isLit) {
    chords.forEach(function (chord) {
      var lit = isLit(chord);
      chord.classList.toggle("active", lit);
      chord.classList.toggle("faded", !lit);
    });
  }
  function reset() {
    tooltip.hidden = true;
    chords.forEach(function (chord) { chord.classList.remove("active", "faded"); });
  }
  chords.forEach(function (chord) {
    chord.addEventListener("mousemove", function (event) {
      show(chord.dataset.label, event);
      highlight(function (other) { return other === chord; });
    });
    chord.addEventListener("mouseleave", reset);
  });
  document.querySelectorAll("g.group").forEach(function (group) {
    var person = group.dataset.person;
    group.addEventListener("mousemove", function (event) {
      show(group.dataset.label, event);
      highlight(function (chord) { return chord.dataset.a === person || chord.dataset.b === person; });
    });
    group.addEventListener("mouseleave", reset);
  });
})();
"""


def render_chord_html(data: ChordData, title: str, subtitle: str, size: int = 760) -> str:
    layout = lay_out(data)
    svg = _svg(layout, size)
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{escape(title)}</h1>\n"
        f'<p class="note">{escape(subtitle)}</p>\n'
        '<p class="note">A chord <b>A n &lt;-&gt; B m</b>: A approved n of B\'s pull requests, '
        "B approved m of A's. Each arc is as long as the approvals that person gave. "
        "Hover a chord or a name.</p>\n"
        f"{svg}\n"
        '<div id="tooltip" role="tooltip" hidden></div>\n'
        f"<script>{_SCRIPT}</script>\n"
        "</body>\n</html>\n"
    )


def _svg(layout: DiagramLayout, size: int) -> str:
    outer = size / 2 - label_margin([group.person for group in layout.groups])
    inner = outer - ARC_THICKNESS
    colour = {group.person: PALETTE[i % len(PALETTE)] for i, group in enumerate(layout.groups)}
    half = size / 2
    lines = [
        f'<svg id="chord-diagram" xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="{-half:.0f} {-half:.0f} {size} {size}" role="img" aria-label="chord diagram of approvals">',
        '<g class="chords">',
    ]
    for chord in layout.chords:
        label = escape(chord.chord.label)
        lines.append(
            f'<path class="chord" d="{chord_path(chord.a_end, chord.b_end, inner)}" '
            f'fill="{colour[chord.chord.a]}" data-a="{escape(chord.chord.a)}" data-b="{escape(chord.chord.b)}" '
            f'data-label="{label}"><title>{label}</title></path>'
        )
    lines.append("</g>")
    lines.append('<g class="groups">')
    for group in layout.groups:
        person = escape(group.person)
        label = escape(f"{group.person}: approved {group.given}, received {group.received} approvals")
        fill = colour[group.person]
        lines.append(
            f'<g class="group" data-person="{person}" data-label="{label}"><title>{label}</title>'
            f'<path d="{group_path(group.arc, inner, outer)}" fill="{fill}" stroke="{fill}"/>'
            f"{_name_label(group.person, group.arc.middle, outer + 6)}</g>"
        )
    lines.append("</g>")
    lines.append("</svg>")
    return "\n".join(lines)


def _name_label(person: str, angle: float, radius: float) -> str:
    """A name written outwards along the radius, turned upright on the left half."""
    degrees = math.degrees(angle) - 90
    x, y = point(radius, angle)
    if angle > math.pi:
        return (
            f'<text transform="translate({x:.2f},{y:.2f}) rotate({degrees + 180:.2f})" '
            f'text-anchor="end" dominant-baseline="middle">{escape(person)}</text>'
        )
    return (
        f'<text transform="translate({x:.2f},{y:.2f}) rotate({degrees:.2f})" '
        f'dominant-baseline="middle">{escape(person)}</text>'
    )
