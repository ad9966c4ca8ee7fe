"""`fpi validate`: check traces against the format."""

from __future__ import annotations

from fpi.cli.common import Input, TracesArg, exit_for, guard_paths, options, run


@options
def validate(traces: TracesArg, bad_records: Input = Input()) -> None:
    """Check traces against trace format v1 and report every bad record with file, line and field."""
    def work() -> int:
        guard_paths([bad_records.mapping_file(), traces], [bad_records.quarantine_path(traces)])
        return exit_for(bad_records.read(traces))
    run(work)
