"""`fpi validate`: check traces against the format."""

from __future__ import annotations

from fpi.cli.common import Input, LintFormatOpt, OnError, TracesArg, emit, guard_paths, options, run, say, say_coverage
from fpi.contract.errors import EXIT_ERROR
from fpi.presentation import formats


@options
def validate(traces: TracesArg, bad_records: Input = Input(), output_format: LintFormatOpt = "text") -> None:
    """Check traces against trace format v1: every bad record in one pass, by line, each problem with its field and code."""
    def work() -> int:
        from fpi.io.quarantine import write_quarantine
        from fpi.io.traces import read_traces

        guard_paths([bad_records.mapping_file(), traces], [bad_records.quarantine_path(traces)])
        result = read_traces(traces, mapping=bad_records.mapping, strict=bad_records.strict)
        problems = sorted(problem for rejected in result.rejected for problem in rejected.found())
        keep = bad_records.on_error is OnError.skip
        emit(formats.PROBLEMS[output_format](problems, "fpi validate",
                                             result.summary("quarantined" if keep or not result.rejected else "rejected")))
        say_coverage(result.coverage)
        if not result.rejected:
            return result.exit_code
        if not keep:
            return EXIT_ERROR
        where = bad_records.quarantine_path(traces)
        assert where is not None
        write_quarantine(result.rejected, where)
        say(f"quarantined records written to {where}")
        return result.exit_code
    run(work)
