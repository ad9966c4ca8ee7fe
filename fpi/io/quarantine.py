"""What happens to records a reader did not accept, the `--on-error` policy written once: `fail` stops
with every problem and writes nothing; `skip` goes on with the valid turns and writes the bad records,
unchanged and with their reasons, to a quarantine file."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from typing import TYPE_CHECKING

from fpi.contract.errors import TraceError

if TYPE_CHECKING:
    from fpi.io.read_result import RejectedRecord


class OnError(str, Enum):
    """What a run does with bad records."""

    fail = "fail"
    skip = "skip"


def default_quarantine(traces: str | Path, quarantine: str | Path | None = None) -> Path:
    """Where `--on-error skip` writes the bad records of `traces` unless told: beside the input."""
    return Path(quarantine) if quarantine is not None else Path(("stdin" if str(traces) == "-" else str(traces)) + ".quarantine.jsonl")


def write_quarantine(rejected: list[RejectedRecord], path: str | Path) -> None:
    """Each rejected record, unchanged, with its reasons: one JSON object a line."""
    import json

    from fpi.contract.atomic_files import atomic_write_bytes

    body = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in rejected)
    atomic_write_bytes(path, body.encode("utf-8"))


def bad_records_error(source: str, rejected: list[RejectedRecord]) -> TraceError:
    """--on-error fail: every problem, and nothing written."""
    from fpi.io.read_result import problem_messages

    return TraceError(problem_messages(rejected),
                      summary=f"{source}: {len(rejected)} bad records; nothing was written "
                              "(use --on-error skip to go on with the valid turns)")


def apply_on_error(source: str, rejected: list[RejectedRecord], on_error: OnError | str,
                   quarantine: str | Path | None) -> Path | None:
    """The policy on the records a whole input did not accept: raise (`fail`), or write them to
    `quarantine` when given (`skip`). Returns where they went."""
    if not rejected:
        return None
    if OnError(on_error) is OnError.fail:
        raise bad_records_error(source, rejected)
    if quarantine is None:
        return None
    write_quarantine(rejected, quarantine)
    return Path(quarantine)
