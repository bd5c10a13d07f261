"""The pairs as JSON, CSV or a terminal table."""

from __future__ import annotations

import csv
import io
import json

from rich.console import Console
from rich.table import Table

from .chords import build_chords
from .query import ApprovalPair, ApprovalQuery


def pairs_as_json(pairs: list[ApprovalPair], query: ApprovalQuery) -> str:
    chords = build_chords(pairs).chords
    document = {
        "org": query.org,
        "repo": query.repo,
        "since": query.since,
        "min_count": query.min_count,
        "pairs": [{"approver": p.approver, "author": p.author, "approvals": p.approvals} for p in pairs],
        "chords": [
            {"a": c.a, "a_approved": c.a_approved, "b": c.b, "b_approved": c.b_approved, "label": c.label}
            for c in chords
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def pairs_as_csv(pairs: list[ApprovalPair]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["approver", "author", "approvals"])
    writer.writerows([p.approver, p.author, p.approvals] for p in pairs)
    return buffer.getvalue()


def print_pairs_table(console: Console, pairs: list[ApprovalPair], query: ApprovalQuery) -> None:
    # The description goes above, not in the title, which rich would wrap to the table's width.
    console.print(f"Approvals in {query.describe()}", highlight=False)
    table = Table()
    table.add_column("Approver")
    table.add_column("Author")
    table.add_column("Approvals", justify="right")
    for pair in pairs:
        table.add_row(pair.approver, pair.author, str(pair.approvals))
    console.print(table)
