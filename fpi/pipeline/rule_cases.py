"""Rule cases: example sessions a rule must or must not match on their first turn, as
YAML beside the rules (sqlfluff's rule cases, semgrep's --test). `fpi rules test` runs
them for your rules as the test suite runs them for the shipped ones.

    - rule: er-fuzzy-match-recovered-asr
      should_fire:
        - - {asr: {text: "play despasito", confidence: 0.6}, ...}   # a session: a list of turns
      should_not_fire:
        - - {...}

Turn ids, session ids and indices are filled in; every turn must otherwise be valid trace
format v1. All cases run as one batch of sessions through the same pipeline as `classify`."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

from fpi.contract.errors import DocumentError
from fpi.io.traces import read_traces
from fpi.pipeline.classify import Pipeline
from fpi.contract.yaml_documents import read_yaml, schema_problems

EXPECTATIONS = {"should_fire": True, "should_not_fire": False}
_SESSIONS = {"type": "array", "items": {"type": "array", "minItems": 1, "items": {"type": "object"}}}
CASES_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "fpi rule cases",
    "type": "array",
    "items": {"type": "object", "additionalProperties": False, "required": ["rule"],
              "properties": {"rule": {"type": "string"}, **{key: _SESSIONS for key in EXPECTATIONS}}},
}


@dataclass(frozen=True)
class RuleCase:
    rule: str
    should_fire: bool
    session: tuple[dict, ...]
    source: str
    line: int
    number: int  # of its kind, for the rule

    @property
    def name(self) -> str:
        return f"{self.rule}-{'should_fire' if self.should_fire else 'should_not_fire'}-{self.number}"


@dataclass(frozen=True)
class CaseResult:
    case: RuleCase
    matched: tuple[str, ...]  # every rule that matched the session's first turn, in run order

    @property
    def passed(self) -> bool:
        return (self.case.rule in self.matched) == self.case.should_fire

    def message(self) -> str:
        verdict = "fires" if self.case.rule in self.matched else "does not fire"
        wanted = "should fire" if self.case.should_fire else "should not fire"
        seen = ", ".join(self.matched) or "none"
        return f"{self.case.source}:{self.case.line}: {self.case.rule} {wanted} and {verdict} (rules matched: {seen})"


def load_cases(path: str | Path) -> list[RuleCase]:
    """The cases of one file; every problem names file:line."""
    document, problems = read_yaml(Path(path))
    if document is None:
        raise DocumentError(problems)
    if document.data is None:
        raise DocumentError([f"{document.label}:1: no cases; expected a list of `- rule: ID` entries"])
    problems = schema_problems(document, CASES_SCHEMA)
    if problems:
        raise DocumentError(problems)
    assert isinstance(document.data, list)
    cases = []
    for i, entry in enumerate(document.data):
        for key, fires in EXPECTATIONS.items():
            for j, session in enumerate(entry.get(key) or []):
                cases.append(RuleCase(entry["rule"], fires, tuple(session), document.label,
                                      document.line((i, key, j)), j))
    return cases


def run_cases(cases: list[RuleCase], pipeline: Pipeline) -> list[CaseResult]:
    """Each case's session classified with the pipeline's model and rules, in one batch."""
    known = [rule.id for rule in pipeline.rules.rules]
    problems = []
    for case in cases:
        if case.rule not in known:
            close = difflib.get_close_matches(case.rule, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the rules are: {', '.join(known) or 'none'}"
            problems.append(f"{case.source}:{case.line}: no rule {case.rule!r}; {hint}")
    lines, origin = [], []
    for k, case in enumerate(cases):
        for i, turn in enumerate(case.session):
            lines.append(json.dumps({**turn, "turn_id": f"case{k}-t{i}", "session_id": f"case{k}", "turn_index": i}))
            origin.append(case)
    loaded = read_traces("\n".join(lines).encode("utf-8"), name="cases")
    for rejected in loaded.rejected:
        case = origin[rejected.line - 1]
        problems += [f"{case.source}:{case.line}: {path + ': ' if path else ''}{what}" for path, _, what in rejected.problems]
    if problems:
        raise DocumentError(sorted(set(problems)))
    records = pipeline.run(loaded.turns).records
    first = dict(zip(records["turn_id"].to_list(), records["rules_matched"].to_list(), strict=True))
    return [CaseResult(case, tuple(first[f"case{k}-t0"])) for k, case in enumerate(cases)]
