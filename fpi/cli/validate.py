"""`fpi validate`: check traces against the format."""

from __future__ import annotations

from fpi.cli.common import OnError, OnErrorOpt, QuarantineOpt, TracesArg, exit_for, read, run


def validate(traces: TracesArg, on_error: OnErrorOpt = OnError.fail, quarantine: QuarantineOpt = None) -> None:
    """Check traces against trace format v1 and report every bad record with file, line and field."""
    run(lambda: exit_for(read(traces, on_error, quarantine)))
