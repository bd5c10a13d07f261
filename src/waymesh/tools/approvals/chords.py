"""Turn directed approval pairs into the undirected chords of the diagram.

A chord joins two people. `A n <-> B m` reads: A approved n of B's pull requests and B approved
m of A's. A direction that fell below --min-count (or never happened) shows as 0.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from .query import ApprovalPair


@dataclass(frozen=True)
class Chord:
    a: str
    a_approved: int  # pull requests of b that a approved
    b: str
    b_approved: int  # pull requests of a that b approved

    @property
    def label(self) -> str:
        return f"{self.a} {self.a_approved} <-> {self.b} {self.b_approved}"


@dataclass(frozen=True)
class ChordData:
    people: list[str]  # order around the circle
    given: list[list[int]]  # given[i][j]: pull requests of people[j] approved by people[i]
    chords: list[Chord]

    def approvals_given(self, index: int) -> int:
        return sum(self.given[index])

    def approvals_received(self, index: int) -> int:
        return sum(row[index] for row in self.given)


def build_chords(pairs: list[ApprovalPair]) -> ChordData:
    given_by_pair: dict[tuple[str, str], int] = defaultdict(int)
    involvement: dict[str, int] = defaultdict(int)
    for pair in pairs:
        given_by_pair[pair.approver, pair.author] += pair.approvals
        involvement[pair.approver] += pair.approvals
        involvement[pair.author] += pair.approvals
    # The busiest people first, so the diagram reads clockwise from the top by activity.
    people = sorted(involvement, key=lambda person: (-involvement[person], person))
    given = [[given_by_pair.get((approver, author), 0) for author in people] for approver in people]

    chords = []
    for i, first in enumerate(people):
        for j in range(i + 1, len(people)):
            second = people[j]
            first_gave, second_gave = given[i][j], given[j][i]
            if first_gave == 0 and second_gave == 0:
                continue
            # Name the bigger approver first, as in "A 100 <-> B 50".
            if (second_gave, first) > (first_gave, second):
                chords.append(Chord(second, second_gave, first, first_gave))
            else:
                chords.append(Chord(first, first_gave, second, second_gave))
    chords.sort(key=lambda chord: (-(chord.a_approved + chord.b_approved), chord.a, chord.b))
    return ChordData(people=people, given=given, chords=chords)
