"""`fpi validate`: check traces against the format."""

from __future__ import annotations

from fpi.cli.common import Input, TracesArg, exit_for, options, run


@options
def validate(traces: TracesArg, bad_records: Input = Input()) -> None:
    """Check traces against trace format v1 and report every bad record with file, line and field."""
    run(lambda: exit_for(bad_records.read(traces)))
