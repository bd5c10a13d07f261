"""Chord diagram geometry: angles for each person's arc and each chord's two ends, as SVG paths.

Angles are radians clockwise from 12 o'clock. Person i's arc is as wide as the approvals i gave;
the chord between i and j is given[i][j] wide at i's end and given[j][i] wide at j's end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .chords import Chord, ChordData

FULL_TURN = 2 * math.pi


@dataclass(frozen=True)
class Arc:
    start: float
    end: float

    @property
    def middle(self) -> float:
        return (self.start + self.end) / 2


@dataclass(frozen=True)
class GroupLayout:
    person: str
    arc: Arc
    given: int
    received: int


@dataclass(frozen=True)
class ChordLayout:
    chord: Chord
    a_end: Arc  # where the chord meets a's arc; as wide as a_approved
    b_end: Arc


@dataclass(frozen=True)
class DiagramLayout:
    groups: list[GroupLayout]
    chords: list[ChordLayout]


def lay_out(data: ChordData) -> DiagramLayout:
    count = len(data.people)
    total = sum(map(sum, data.given))
    if count == 0 or total == 0:
        return DiagramLayout(groups=[], chords=[])
    # Gaps between people, shrinking when there are many so the data keeps most of the circle.
    padding = min(0.04, 0.25 * FULL_TURN / count)
    scale = (FULL_TURN - padding * count) / total

    groups: list[GroupLayout] = []
    chord_ends: dict[tuple[int, int], Arc] = {}
    angle = 0.0
    for i, person in enumerate(data.people):
        start = angle
        # Chords to people just counter-clockwise of i start the arc, those just clockwise end
        # it, so that chords to neighbours do not cross each other.
        for j in sorted(range(count), key=lambda other: -((other - i) % count)):
            width = data.given[i][j] * scale
            if data.given[i][j] or data.given[j][i]:
                chord_ends[i, j] = Arc(angle, angle + width)
            angle += width
        groups.append(
            GroupLayout(person, Arc(start, angle), data.approvals_given(i), data.approvals_received(i))
        )
        angle += padding

    index = {person: i for i, person in enumerate(data.people)}
    chords = [
        ChordLayout(
            chord, chord_ends[index[chord.a], index[chord.b]], chord_ends[index[chord.b], index[chord.a]]
        )
        for chord in data.chords
    ]
    return DiagramLayout(groups=groups, chords=chords)


def point(radius: float, angle: float) -> tuple[float, float]:
    return radius * math.sin(angle), -radius * math.cos(angle)


def _xy(radius: float, angle: float) -> str:
    x, y = point(radius, angle)
    return f"{x:.2f},{y:.2f}"


def _arc_to(radius: float, start: float, end: float, clockwise: bool = True) -> str:
    large = 1 if abs(end - start) > math.pi else 0
    sweep = 1 if clockwise else 0
    target = end if clockwise else start
    return f"A{radius:.2f},{radius:.2f} 0 {large} {sweep} {_xy(radius, target)}"


def group_path(arc: Arc, inner: float, outer: float) -> str:
    """An annulus segment: outer edge clockwise, inner edge back."""
    return (
        f"M{_xy(outer, arc.start)} {_arc_to(outer, arc.start, arc.end)} "
        f"L{_xy(inner, arc.end)} {_arc_to(inner, arc.start, arc.end, clockwise=False)} Z"
    )


def chord_path(a_end: Arc, b_end: Arc, radius: float) -> str:
    """A ribbon: along a's end, a curve through the centre to b's end, along it, and back."""
    return (
        f"M{_xy(radius, a_end.start)} {_arc_to(radius, a_end.start, a_end.end)} "
        f"Q0,0 {_xy(radius, b_end.start)} {_arc_to(radius, b_end.start, b_end.end)} "
        f"Q0,0 {_xy(radius, a_end.start)} Z"
    )
