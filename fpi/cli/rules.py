"""`fpi rules`: lint, audit and list the fields of the rule layer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fpi.cli.common import (Input, LabeledArg, LintFormatOpt, ModelOpt, RulesOpt, account_for, emit, format_option, guard_paths,
                            options, run, say)
from fpi.contract.errors import EXIT_ERROR, EXIT_FAIL, EXIT_OK
from fpi.presentation import formats


def lint(paths: Annotated[list[Path] | None, typer.Argument(help="Rule files or folders (default: the shipped rules).")] = None,
         output_format: LintFormatOpt = "text") -> None:
    """Check rule files in one pass: YAML, schema, every condition's names and types, duplicate ids."""
    def work() -> int:
        from fpi.pipeline.rules import lint_rules

        rule_set, problems = lint_rules(paths)
        files = len({p.file for p in problems})
        summary = (f"{len(problems)} problem{'s' * (len(problems) != 1)} in {files} file{'s' * (files != 1)}" if problems
                   else f"{len(rule_set)} rules, no problems")
        emit(formats.PROBLEMS[output_format](problems, "fpi rules lint", summary))
        return EXIT_ERROR if problems else EXIT_OK
    run(work)


@options
def check(
    traces: LabeledArg,
    rules: RulesOpt = None,
    model: ModelOpt = None,
    output_format: Annotated[str, format_option(formats.RULE_AUDIT, "table (terminal) or json (stdout).")] = "table",
    bad_records: Input = Input(),
) -> None:
    """Audit each rule against gold labels: matches, changes, precision, and macro-F1 with and without it."""
    def work() -> int:
        from fpi.engines.choice import run as run_engine
        from fpi.engines.plan import Plan
        from fpi.pipeline.classify import Pipeline
        from fpi.pipeline.model import FailurePointModel
        from fpi.pipeline.rules import audit_rules, load_rules

        guard_paths([bad_records.mapping_file(), traces, model, *(rules or [])], [bad_records.quarantine_path(traces)])
        pipeline = Pipeline(FailurePointModel.load(model), load_rules(rules))
        result = run_engine(Plan(traces, pipeline, bad_records.reading(traces, labels_required=True), keep_batch=True))
        account_for(result)
        batch = result.batch
        assert batch is not None
        labeled = batch.turns["label"].is_not_null()  # the turns a rule can be checked on
        audit = audit_rules(batch.matches.filter(labeled), pipeline.rules, batch.verdicts["model_failure_point"].filter(labeled),
                            batch.turns["label"].filter(labeled))
        emit(formats.RULE_AUDIT[output_format](audit))
        return result.exit_code
    run(work)


def test(
    cases: Annotated[list[Path], typer.Argument(help="Rule case files (YAML): sessions each rule must or must not match.")],
    rules: RulesOpt = None,
    model: ModelOpt = None,
) -> None:
    """Run rule cases: exit 0 when every case holds, 1 when one fails, 2 when a file or rule is wrong."""
    def work() -> int:
        from fpi.pipeline.model import FailurePointModel
        from fpi.pipeline.classify import Pipeline
        from fpi.pipeline.rule_cases import load_cases, run_cases
        from fpi.pipeline.rules import load_rules

        pipeline = Pipeline(FailurePointModel.load(model), load_rules(rules))
        results = run_cases([case for path in cases for case in load_cases(path)], pipeline)
        failed = [r for r in results if not r.passed]
        for result in failed:
            say(result.message())
        say(f"{len(results)} cases, {len(results) - len(failed)} passed, {len(failed)} failed")
        return EXIT_FAIL if failed else EXIT_OK
    run(work)


def fields() -> None:
    """List the fields a rule condition can name (each also as next.<field> and prev.<field>)."""
    from fpi.pipeline.rules import fields_reference
    from fpi.presentation.result_tables import fields_table
    from fpi.presentation.terminal import show

    show([fields_table(fields_reference())])
