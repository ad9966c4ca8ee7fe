"""Turns that no single span holds: LiveKit Agents writes the user's turn (`user_turn`) and the agent's
reply (`agent_turn`, one per LLM step) side by side under `agent_session`. A mapping's `spans: answers:`
says which spans beside a turn span answer it; this module gives each turn span the spans of its
exchange, so one exchange is one record, whatever the number of steps its reply took."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

from fpi.io.mapping import Answers, Selector

if TYPE_CHECKING:
    from fpi.io.otlp import Span

Matches = Callable[["Span", Selector], bool]


class _Turns:
    """The turn spans under each parent, in start order, to find the one that started last before a time."""

    def __init__(self, turns: list[Span]):
        self.by_parent: dict[tuple[str, str], list[Span]] = defaultdict(list)
        for turn in sorted(turns, key=lambda s: (s.start, s.line)):
            self.by_parent[(turn.trace_id, turn.parent_id)].append(turn)
        self.starts = {key: [t.start for t in spans] for key, spans in self.by_parent.items()}

    def latest_before(self, span: Span) -> Span | None:
        key = (span.trace_id, span.parent_id)
        at = bisect.bisect_right(self.starts.get(key, []), span.start)
        return self.by_parent[key][at - 1] if at else None


def _answer_groups(spans: list[Span], answers: Answers, matches: Matches, is_turn: set[int]) -> list[list[Span]]:
    """Answer spans grouped by parent and `link` value (each span alone without one), in start order."""
    groups: dict[tuple[str, str, str], list[Span]] = defaultdict(list)
    for span in spans:
        if id(span) in is_turn or not matches(span, answers.spans):
            continue
        link = span.attributes.get(answers.link) if answers.link else None
        groups[(span.trace_id, span.parent_id, span.key if link is None else str(link))].append(span)
    ordered = [sorted(group, key=lambda s: (s.start, s.line)) for group in groups.values()]
    return sorted(ordered, key=lambda g: (g[0].start, g[0].line))


def exchanges(spans: list[Span], turns: list[Span], answers: Answers, matches: Matches) -> tuple[list[Span], dict[int, list[Span]]]:
    """The turn spans, with an answer that no turn span precedes (a greeting) made a turn of its own, and
    the spans each one gathers: its answers (placed by their first span's start) and the `during` spans
    (placed with the answer open when they start, else with the turn span that started last before them)."""
    placed = _Turns(turns)
    members: dict[int, list[Span]] = {id(t): [] for t in turns}
    own: list[Span] = []
    open_answers: dict[tuple[str, str], list[tuple[int, int, Span]]] = defaultdict(list)
    for group in _answer_groups(spans, answers, matches, {id(t) for t in turns}):
        owner = placed.latest_before(group[0])
        if owner is None:
            owner = group[0]
            own.append(owner)
            members[id(owner)] = []
        members[id(owner)].extend(group)
        open_answers[(owner.trace_id, group[0].parent_id)] += [(s.start, s.end, owner) for s in group]
    if answers.during is not None:
        taken = {id(s) for group in members.values() for s in group} | set(members)
        for span in spans:
            if id(span) in taken or not matches(span, answers.during):
                continue
            during = [o for start, end, o in open_answers.get((span.trace_id, span.parent_id), []) if start <= span.start <= end]
            owner = during[0] if during else placed.latest_before(span)
            if owner is not None:
                members[id(owner)].append(span)
    every = sorted([*turns, *own], key=lambda s: (s.line, s.start))
    return every, members


__all__ = ["exchanges"]
