"""`fpi gate`: pass or fail a release on labeled traces."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from fpi.cli.common import Classifier, Input, account_for, emit, format_option, guard_paths, options, run, say
from fpi.presentation import formats


@options
def gate(
    traces: Annotated[str, typer.Argument(help="Labeled traces the gate measures (a held-out, human-labeled set).")],
    policy: Annotated[Path, typer.Option("--policy", help="Gate policy YAML: floors, ceilings, regression limits (docs/ci.md).")],
    baseline: Annotated[Path | None, typer.Option("--baseline", help="Metrics file of the last accepted run "
                                                  "(`fpi eval --save-metrics`), for the policy's regression limits.")] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write JUnit XML: one testcase per check.")] = None,
    output_format: Annotated[str, format_option(formats.GATE, "human (table), json, or github "
                                                              "(GitHub Actions annotations).")] = "human",
    summary: Annotated[Path | None, typer.Option("--summary", help="Also write the verdict as Markdown, e.g. "
                                                 "--summary \"$GITHUB_STEP_SUMMARY\" for the job summary.")] = None,
    classifier: Classifier = Classifier(),
    bad_records: Input = Input(),
) -> None:
    """Pass or fail a release on labeled traces: exit 0 all checks pass, 1 a check failed, 2 usage, policy or input error."""
    def work() -> int:
        from fpi.contract.errors import DocumentError, FpiError, TraceError

        guard_paths([bad_records.mapping_file(), traces, policy, baseline, *classifier.inputs()],
                    [junit, summary, bad_records.quarantine_path(traces)])  # before the JUnit error file can be written
        try:
            return _measure_and_judge(traces, policy, baseline, junit, output_format, summary, classifier, bad_records)
        except FpiError as exc:  # the gate could not run: say so in the formats CI reads, then as usual
            from fpi.contract.atomic_files import atomic_write_bytes
            from fpi.presentation.ci_formats import github_errors, junit_error_xml

            problems = exc.problems if isinstance(exc, DocumentError | TraceError) else str(exc).splitlines()
            if junit is not None and not (junit.exists() and junit.is_dir()):
                atomic_write_bytes(junit, junit_error_xml(problems))
            if output_format == "github":
                sys.stdout.write(github_errors(problems))
            raise
    run(work)


def _measure_and_judge(traces: str, policy: Path, baseline: Path | None, junit: Path | None, output_format: str,
                       summary: Path | None, classifier: Classifier, bad_records: Input) -> int:
    from fpi.contract.atomic_files import atomic_write_bytes
    from fpi.contract.metrics import Metrics
    from fpi.engines.choice import run as run_engine
    from fpi.engines.plan import Plan
    from fpi.presentation.ci_formats import junit_xml, markdown_summary
    from fpi.presentation.progress import turns_progress
    from fpi.presentation.result_tables import gate_context
    from fpi.reports.gate import load_policy, run_gate

    gate_policy = load_policy(policy)
    previous = Metrics.read(baseline) if baseline is not None else None
    if previous is not None and not gate_policy.has("regression"):
        say(f"note: {policy} sets no regression limits; --baseline {baseline} is not used")
    pipeline = classifier.pipeline()
    with turns_progress() as progress:
        result = run_engine(Plan(traces, pipeline, bad_records.reading(traces), fingerprint=True, on_progress=progress))
    account_for(result)
    outcome = run_gate(gate_policy, result.metrics(pipeline), previous, result.possible)
    if junit is not None:
        atomic_write_bytes(junit, junit_xml(outcome))
    if summary is not None:
        atomic_write_bytes(summary, markdown_summary(outcome, gate_context(outcome)).encode("utf-8"))
    emit(formats.GATE[output_format](outcome))
    return outcome.exit_code or result.exit_code  # a failed check says 1; a pass with quarantined input, 3
