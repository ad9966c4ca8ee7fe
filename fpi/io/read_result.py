"""What a reader returns: the accepted turns in input order, and every record it did not accept
with all its reasons and its text, as the quarantine file keeps them."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from fpi.contract.errors import EXIT_OK, EXIT_PARTIAL, Problem
from fpi.contract.trace_format import RELATED, TURN_SCHEMA, FieldProblem

if TYPE_CHECKING:
    from fpi.io.coverage import Coverage


@dataclass(frozen=True)
class RejectedRecord:
    """One input record that was not accepted, with every reason found."""

    source: str
    line: int
    problems: tuple[FieldProblem, ...]  # (field, code, message)
    raw: str | bytes

    def found(self) -> list[Problem]:
        return [Problem(self.source, self.line, code, f"{path}: {what}" if path else what) for path, code, what in self.problems]

    def messages(self) -> list[str]:
        return [str(problem) for problem in self.found()]

    def only_related(self) -> bool:
        """Rejected only because another line of its turn was (per-stage events)."""
        return all(code == RELATED for _, code, _ in self.problems)

    def to_json(self) -> dict:
        record: dict = {"source": self.source, "line": self.line,
                        "errors": [{"field": p, "code": c, "message": m} for p, c, m in self.problems]}
        if isinstance(self.raw, bytes):
            record["raw_base64"] = base64.b64encode(self.raw).decode("ascii")
        else:
            record["raw"] = self.raw
        return record


@dataclass
class LoadResult:
    """Accepted turns (in input order) and the records that were not accepted."""

    turns: pl.DataFrame
    rejected: list[RejectedRecord] = field(default_factory=list)
    read: int = 0
    source: str = ""
    form: str = "turn"
    otlp: bytes | None = None  # the spans as read, for writing them back with verdicts
    quarantine: Path | None = None  # where the rejected records were written (`--on-error skip`)
    coverage: Coverage | None = None  # read through a mapping: what it found (`fpi.io.coverage`)

    @property
    def accepted(self) -> int:
        return self.read - len(self.rejected)

    def summary(self, rejected_as: str = "quarantined") -> str:
        return read_summary(self.source, self.read, len(self.rejected), self.form, self.turns.height, rejected_as)

    def problems(self) -> list[str]:
        return problem_messages(self.rejected)

    @property
    def exit_code(self) -> int:
        """3 when records were rejected (and the run went on), else 0."""
        return EXIT_PARTIAL if self.rejected else EXIT_OK


def problem_messages(rejected: list[RejectedRecord]) -> list[str]:
    """Every problem, the lines at fault first (each naming its field), then the lines rejected with them:
    a message cut short still says what is wrong."""
    return ([m for r in rejected if not r.only_related() for m in r.messages()]
            + [m for r in rejected if r.only_related() for m in r.messages()])


def read_summary(source: str, read: int, rejected: int, form: str, turns: int, rejected_as: str = "quarantined") -> str:
    """One line on what was read: records read, accepted and rejected (event lines for per-stage input, with the turns)."""
    unit = "event lines" if form == "stage" else "turns"
    text = f"{source}: read {read}, accepted {read - rejected}, {rejected_as} {rejected} {unit}"
    return text + f" ({turns} turns)" if form == "stage" else text


def empty_turns() -> pl.DataFrame:
    """A frame with no turns and the loader's schema."""
    return pl.DataFrame(schema={**TURN_SCHEMA, "line": pl.UInt32, "raw": pl.String})
