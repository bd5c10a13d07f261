"""The chord page and PNG as Chromium renders them. CI installs Debian's `chromium` package."""

from __future__ import annotations

import html
import json
import re
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

from waymesh.tools.approvals.chord_html import ARC_THICKNESS, PALETTE, label_margin
from waymesh.tools.approvals.chord_layout import lay_out, point
from waymesh.tools.approvals.chords import build_chords
from waymesh.tools.approvals.query import ApprovalPair
from waymesh.tools.approvals.screenshot import PAGE_HEADER_HEIGHT, headless_chromium_command

SIZE = 600
EXPECTED_LABELS = {"alice 3 <-> bob 2", "alice 1 <-> carol 1", "bob 1 <-> carol 0"}

# Runs inside the page after its own script: hovers every chord and name the way a mouse would
# (mousemove at the element's centre, then mouseleave) and reports what the page shows.
PROBE = """
<script>
(function () {
  var ends = %(ends)s;
  var tooltip = document.getElementById("tooltip");
  var chords = Array.prototype.slice.call(document.querySelectorAll("#chord-diagram path.chord"));
  function hover(element) {
    var rect = element.getBoundingClientRect();
    element.dispatchEvent(new MouseEvent("mousemove", {
      bubbles: true, clientX: rect.left + rect.width / 2, clientY: rect.top + rect.height / 2 }));
    var seen = { tooltip: tooltip.hidden ? null : tooltip.textContent,
                 faded: document.querySelectorAll("path.chord.faded").length };
    element.dispatchEvent(new MouseEvent("mouseleave"));
    seen.hiddenAfter = tooltip.hidden;
    return seen;
  }
  function coveringChords(xy) {
    return chords.filter(function (c) { return c.isPointInFill(new DOMPoint(xy[0], xy[1])); })
                 .map(function (c) { return c.dataset.label; });
  }
  var report = { chords: [], groups: [] };
  chords.forEach(function (chord) {
    var box = chord.getBBox();
    var end = ends[chord.dataset.label];
    report.chords.push({
      label: chord.dataset.label,
      title: chord.querySelector("title").textContent,
      box: [box.width, box.height],
      length: chord.getTotalLength(),
      fill: getComputedStyle(chord).fill,
      atAEnd: coveringChords(end.a),
      atBEnd: end.b ? coveringChords(end.b) : null,
      hover: hover(chord)
    });
  });
  document.querySelectorAll("#chord-diagram g.group").forEach(function (group) {
    var box = group.querySelector("path").getBBox();
    report.groups.push({ person: group.dataset.person, box: [box.width, box.height],
                         text: group.querySelector("text").textContent, hover: hover(group) });
  });
  var pre = document.createElement("pre");
  pre.id = "probe-report";
  pre.textContent = JSON.stringify(report);
  document.body.appendChild(pre);
})();
</script>
"""


def chord_end_points() -> dict[str, dict[str, list[float] | None]]:
    """A point just inside the circle at the middle of each chord end, from the layout."""
    pairs = [
        ApprovalPair("alice", "bob", 3),
        ApprovalPair("bob", "alice", 2),
        ApprovalPair("alice", "carol", 1),
        ApprovalPair("bob", "carol", 1),
        ApprovalPair("carol", "alice", 1),
    ]
    radius = SIZE / 2 - label_margin(["alice", "bob", "carol"]) - ARC_THICKNESS - 3
    ends: dict[str, dict[str, list[float] | None]] = {}
    for chord in lay_out(build_chords(pairs)).chords:
        ends[chord.chord.label] = {
            "a": list(point(radius, chord.a_end.middle)),
            "b": list(point(radius, chord.b_end.middle)) if chord.chord.b_approved else None,
        }
    return ends


def dump_dom(chromium: str, page: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="approvals-test-chromium-") as profile:
        command = headless_chromium_command(chromium, Path(profile), "--dump-dom", page.resolve().as_uri())
        completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def test_chromium_draws_the_chords_and_shows_labels_on_hover(
    sample_db: Path, tmp_path: Path, run_cli, chromium: str
) -> None:
    page = tmp_path / "chord.html"
    result = run_cli(
        "chord", "--db", sample_db, "--org", "acme", "--repo", "mesh", "--html", page, "--size", SIZE
    )
    assert result.exit_code == 0, result.output
    probed = tmp_path / "probed.html"
    probe = PROBE % {"ends": json.dumps(chord_end_points())}
    probed.write_text(page.read_text().replace("</body>", probe + "</body>"))

    match = re.search(r'<pre id="probe-report">(.*?)</pre>', dump_dom(chromium, probed), re.S)
    assert match, "the probe script did not run: the page has a script error?"
    report = json.loads(html.unescape(match[1]))

    chords = {chord["label"]: chord for chord in report["chords"]}
    assert len(report["chords"]) == 3
    assert set(chords) == EXPECTED_LABELS
    for label, chord in chords.items():
        assert chord["title"] == label
        assert min(chord["box"]) > 10 and chord["length"] > 100, chord  # really drawn, not a dot
        assert chord["fill"] != "none"
        # Each end sits where the layout put it and belongs to this chord alone.
        assert chord["atAEnd"] == [label], chord
        assert chord["atBEnd"] in ([label], None), chord
        assert chord["hover"] == {"tooltip": label, "faded": 2, "hiddenAfter": True}
    assert chords["bob 1 <-> carol 0"]["atBEnd"] is None

    groups = {group["person"]: group for group in report["groups"]}
    assert set(groups) == {"alice", "bob", "carol"}
    assert all(min(group["box"]) > 5 and group["text"] == person for person, group in groups.items())
    assert groups["alice"]["hover"] == {
        "tooltip": "alice: approved 4, received 3 approvals",
        "faded": 1,  # bob <-> carol is the only chord without alice
        "hiddenAfter": True,
    }


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit, non-interlaced PNG."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    offset, chunks, header = 8, [], b""
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        offset += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, header
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            up_left = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                nearest = min((abs(p - left), 0, left), (abs(p - up), 1, up), (abs(p - up_left), 2, up_left))
                line[x] = (line[x] + nearest[2]) & 0xFF
        rows.append(bytes(b for i in range(0, stride, channels) for b in line[i : i + 3]))
        previous = line
    return width, height, rows


def test_png_is_a_screenshot_of_the_diagram(sample_db: Path, tmp_path: Path, run_cli, chromium: str) -> None:
    png = tmp_path / "chord.png"
    result = run_cli(
        "chord", "--db", sample_db, "--org", "acme", "--repo", "mesh", "--png", png, "--size", 400
    )
    assert result.exit_code == 0, result.output
    width, height, rows = png_pixels(png.read_bytes())
    assert (width, height) == (400 + 32, 400 + PAGE_HEADER_HEIGHT)
    pixels = b"".join(rows)
    # The arcs are opaque, so each person's colour appears exactly as in the palette.
    for colour in PALETTE[:3]:
        rgb = bytes.fromhex(colour[1:])
        count = sum(1 for i in range(0, len(pixels), 3) if pixels[i : i + 3] == rgb)
        assert count > 200, (colour, count)
    assert PALETTE[3] not in pixels.hex()  # only three people


def test_png_without_chromium_says_so(sample_db: Path, tmp_path: Path, run_cli, monkeypatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("WAYMESH_CHROMIUM", raising=False)
    page, png = tmp_path / "chord.html", tmp_path / "chord.png"
    result = run_cli(
        "chord", "--db", sample_db, "--org", "acme", "--repo", "mesh", "--html", page, "--png", png
    )
    assert result.exit_code == 1
    assert "chromium not found on PATH" in result.stderr
    assert not png.exists() and not page.exists()


def test_chord_needs_an_output(sample_db: Path, run_cli) -> None:
    result = run_cli("chord", "--db", sample_db, "--org", "acme", "--repo", "mesh")
    assert result.exit_code == 1
    assert "--html FILE and/or --png FILE" in result.stderr
