"""One error family; each class carries the exit code the CLI turns it into."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_ERROR = 2
EXIT_PARTIAL = 3  # output written, but some input records were quarantined
EXIT_INTERNAL = 70  # a bug in fpi (EX_SOFTWARE): never the code a gate or bad input gives


class FpiError(Exception):
    """Base of every error fpi expects and reports without a traceback."""

    exit_code = EXIT_ERROR


class FpiWarning(UserWarning):
    """Something fpi worked around and the user should hear of (the CLI shows it as one `warning:` line)."""


class TraceError(FpiError):
    """Input traces that break the trace format, with every problem found."""

    def __init__(self, problems: list[str], *, summary: str | None = None):
        self.problems = problems
        shown = problems[:20]
        more = len(problems) - len(shown)
        lines = [summary] if summary else []
        lines += shown
        if more:
            lines.append(f"... and {more} more problems")
        super().__init__("\n".join(lines))


class ModelError(FpiError):
    """A model directory that is missing, malformed or does not fit this fpi."""


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong in a file a user wrote: where, its kind as a stable code (docs/lint.md),
    and what is wrong and how to mend it. Sorts by file and line."""

    file: str
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "code": self.code, "message": self.message}


class DocumentError(FpiError):
    """A file the user wrote (rules, a gate policy) that cannot be used; each problem
    reads `file:line: what is wrong; how to mend it`."""

    def __init__(self, problems: Sequence[str | Problem]):
        self.problems = [str(p) for p in problems]
        super().__init__("\n".join(self.problems))


class UsageError(FpiError):
    """Arguments that do not fit together."""


def require_scorable(source: str, read: int, accepted: int, unlabeled: int) -> None:
    """Scores need accepted turns, some with a gold label (the others are classified, not scored): a usage
    error naming what is missing."""
    if not accepted:
        raise UsageError(f"{source}: no turns to score: none of the {read} records read was accepted")
    if unlabeled == accepted:
        raise UsageError(f"{source}: none of the {accepted} turns has a `label`, so there is nothing to score against; "
                         "label some with `fpi sample` and `fpi label merge`")
