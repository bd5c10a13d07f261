"""Chords from pairs, their geometry, and the HTML page around them (without a browser)."""

from __future__ import annotations

import re

import pytest

from waymesh.tools.approvals.chord_html import render_chord_html
from waymesh.tools.approvals.chord_layout import FULL_TURN, lay_out
from waymesh.tools.approvals.chords import build_chords
from waymesh.tools.approvals.query import ApprovalPair

# acme/mesh from data/README.md
PAIRS = [
    ApprovalPair("alice", "bob", 3),
    ApprovalPair("bob", "alice", 2),
    ApprovalPair("alice", "carol", 1),
    ApprovalPair("bob", "carol", 1),
    ApprovalPair("carol", "alice", 1),
]


def test_chords_pair_up_both_directions() -> None:
    data = build_chords(PAIRS)
    assert data.people == ["alice", "bob", "carol"]  # most involved first
    assert [chord.label for chord in data.chords] == [
        "alice 3 <-> bob 2",
        "alice 1 <-> carol 1",
        "bob 1 <-> carol 0",
    ]
    assert [data.approvals_given(i) for i in range(3)] == [4, 3, 1]
    assert [data.approvals_received(i) for i in range(3)] == [3, 3, 2]


def test_bigger_approver_is_named_first() -> None:
    data = build_chords([ApprovalPair("zoe", "adam", 1), ApprovalPair("adam", "zoe", 5)])
    assert [chord.label for chord in data.chords] == ["adam 5 <-> zoe 1"]


def width(arc) -> float:
    return arc.end - arc.start


def test_arcs_and_chord_ends_are_proportional_to_approvals() -> None:
    layout = lay_out(build_chords(PAIRS))
    unit = width(layout.groups[0].arc) / 4  # alice gave 4
    assert [width(group.arc) / unit for group in layout.groups] == pytest.approx([4, 3, 1])
    ends = {
        chord.chord.label: (width(chord.a_end) / unit, width(chord.b_end) / unit) for chord in layout.chords
    }
    assert ends == {
        "alice 3 <-> bob 2": pytest.approx((3, 2)),
        "alice 1 <-> carol 1": pytest.approx((1, 1)),
        "bob 1 <-> carol 0": pytest.approx((1, 0)),
    }
    # Arcs follow each other clockwise without overlapping and the circle is not overfull.
    arcs = [group.arc for group in layout.groups]
    assert all(earlier.end < later.start for earlier, later in zip(arcs, arcs[1:], strict=False))
    assert arcs[-1].end < FULL_TURN


def test_chord_ends_lie_inside_their_persons_arc() -> None:
    layout = lay_out(build_chords(PAIRS))
    arc_of = {group.person: group.arc for group in layout.groups}
    for chord in layout.chords:
        for person, end in ((chord.chord.a, chord.a_end), (chord.chord.b, chord.b_end)):
            arc = arc_of[person]
            assert arc.start - 1e-9 <= end.start <= end.end <= arc.end + 1e-9, (person, chord.chord.label)


def test_many_people_still_fit() -> None:
    pairs = [ApprovalPair(f"p{i:02d}", f"p{(i + 1) % 60:02d}", 1 + i % 3) for i in range(60)]
    layout = lay_out(build_chords(pairs))
    assert len(layout.groups) == 60
    assert layout.groups[-1].arc.end <= FULL_TURN
    assert all(width(group.arc) > 0 for group in layout.groups)


def test_page_is_self_contained_and_escapes_names() -> None:
    pairs = [ApprovalPair("<script>alert(1)</script>", "bob", 2), ApprovalPair("bob", "o'hara & co", 1)]
    page = render_chord_html(build_chords(pairs), title="t", subtitle="s")
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; 2 &lt;-&gt; bob 0" in page
    # Nothing is loaded at view time: no external script, stylesheet, image, font or fetch.
    assert not re.search(r"<script[^>]*\bsrc=|<link\b|<img\b|@import|url\(|fetch\(|XMLHttpRequest", page)
    assert re.findall(r"https?://[^\s\"'<>]+", page) == ["http://www.w3.org/2000/svg"]
    assert page.count('class="chord"') == 2
