"""`fpi` on the command line: parse arguments, call the library, format the result."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from fpi.classify import classify as classify_turns
from fpi.classify import failure_point_counts, model_records
from fpi.errors import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, FpiError, TraceError, UsageError
from fpi.evaluate import evaluate, human_relative, metrics_snapshot
from fpi.explain import explain_turn, explanations, summarize
from fpi.features import DESCRIPTIONS, build_features
from fpi.gate import GateResult, github_annotations, junit_xml, load_baseline, load_policy, run_gate
from fpi.load import LoadResult, read_traces, turns_fingerprint, write_quarantine
from fpi.model import FailurePointModel
from fpi.output import atomic_write_bytes, write_records
from fpi.progress import stderr_console, steps
from fpi.render import csv_text, html_page, markdown, print_report
from fpi.report import build_report, is_classified, read_records
from fpi.rules import RuleSet, check_rules, fields_reference, lint_rules, load_rules
from fpi.schema import LABELS, STAGES
from fpi.simulate import simulate as simulate_turns
from fpi.simulate import write_traces

app = typer.Typer(help="Failure-point isolation for voice and conversational assistants.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False, add_completion=False)


class OnError(str, Enum):
    fail = "fail"
    skip = "skip"


class TableFormat(str, Enum):
    table = "table"
    json = "json"


class TraceForm(str, Enum):
    turn = "turn"
    stage = "stage"


TracesArg = Annotated[str, typer.Argument(help="Trace file: .jsonl, .jsonl.gz or .parquet; - for stdin.")]
ModelOpt = Annotated[Path | None, typer.Option("--model", "-m", help="Model directory (default: the model shipped with fpi).")]
OnErrorOpt = Annotated[OnError, typer.Option("--on-error", help="fail: stop at bad records (exit 2, nothing written); "
                                             "skip: go on with the valid turns and quarantine the bad records (exit 3).")]
RulesOpt = Annotated[list[Path] | None, typer.Option("--rules", help="Rule file or folder (repeatable); default: the rules shipped with fpi.")]
NoRulesOpt = Annotated[bool, typer.Option("--no-rules", help="Run the model alone, without the rule layer.")]
QuarantineOpt = Annotated[Path | None, typer.Option("--quarantine", help="Where --on-error skip writes bad records "
                                                    "(default: <traces>.quarantine.jsonl).")]


def _run(work: Callable[[], int | None]) -> None:
    """Run a command body; expected errors become a message on stderr and their exit code."""
    try:
        code = work()
    except FpiError as exc:
        stderr_console().print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    raise typer.Exit(code or EXIT_OK)


def _load(traces: str, on_error: OnError, quarantine: Path | None) -> LoadResult:
    """Read traces under the --on-error policy; report what was rejected and where it went."""
    result = read_traces(traces)
    console = stderr_console()
    if result.rejected and on_error is OnError.fail:
        raise TraceError(result.problems(), summary=f"{result.source}: {len(result.rejected)} bad records; nothing was written "
                                                    "(use --on-error skip to go on with the valid turns)")
    if result.rejected:
        where = quarantine or Path(("stdin" if traces == "-" else traces) + ".quarantine.jsonl")
        write_quarantine(result.rejected, where)
        for message in result.problems()[:10]:
            console.print(message, markup=False, highlight=False, soft_wrap=True)
        console.print(f"quarantined records written to {where}", markup=False, highlight=False)
    console.print(result.summary(), markup=False, highlight=False)
    return result


def _rules(paths: list[Path] | None, no_rules: bool) -> RuleSet:
    if no_rules and paths:
        raise UsageError("--rules and --no-rules do not go together")
    return RuleSet(()) if no_rules else load_rules(paths)


def _exit_for(result: LoadResult) -> int:
    return EXIT_PARTIAL if result.rejected else EXIT_OK


@app.command()
def simulate(
    n: Annotated[int, typer.Option("-n", "--turns", min=1, help="Number of turns.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same traces.")] = 0,
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file (.jsonl or .parquet).")] = Path("traces.jsonl"),
    annotator_noise: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Also write `human_label`: one annotator "
                                                          "with this error rate, mistakes concentrated on hard turns.")] = None,
    error_rate: Annotated[list[str] | None, typer.Option(help="Base error rate of a stage, STAGE=P (repeatable), "
                                                         "e.g. --error-rate asr=0.2.")] = None,
    form: Annotated[TraceForm, typer.Option(help="turn: one line per turn; stage: one line per stage event.")] = TraceForm.turn,
) -> None:
    """Write labeled traces from a causal simulation of an assistant and its users."""
    def work() -> None:
        rates = {}
        for item in error_rate or []:
            stage, _, value = item.partition("=")
            if stage not in STAGES:
                raise UsageError(f"--error-rate {item}: unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
            try:
                rates[stage] = float(value)
            except ValueError:
                raise UsageError(f"--error-rate {item}: expected STAGE=P with P a number in [0, 1]") from None
            if not 0 <= rates[stage] <= 1:
                raise UsageError(f"--error-rate {item}: expected P in [0, 1]")
        with steps(2, "simulating") as bar:
            frame = simulate_turns(n, seed=seed, error_rates=rates, annotator_noise=annotator_noise)
            bar.advance("writing")
            write_traces(frame, output, form=form.value)
            bar.advance()
        counts = dict(frame["label"].value_counts().iter_rows())
        mix = ", ".join(f"{label} {counts.get(label, 0)}" for label in LABELS)
        stderr_console().print(f"wrote {n} turns to {output} ({mix})", markup=False, highlight=False)
    _run(work)


@app.command()
def validate(traces: TracesArg, on_error: OnErrorOpt = OnError.fail, quarantine: QuarantineOpt = None) -> None:
    """Check traces against trace format v1 and report every bad record with file, line and field."""
    _run(lambda: _exit_for(_load(traces, on_error, quarantine)))


@app.command("classify")
def classify_command(
    traces: TracesArg,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Records file (.jsonl, .csv, .parquet); default stdout as JSON Lines.")] = None,
    model: ModelOpt = None,
    rules: RulesOpt = None,
    no_rules: NoRulesOpt = False,
    explain: Annotated[bool, typer.Option("--explain", help="Add each turn's top SHAP features (or the deciding rule).")] = False,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Features per explanation.")] = 3,
    explain_all: Annotated[bool, typer.Option("--explain-all", help="Explain `correct` turns too (slower).")] = False,
    on_error: OnErrorOpt = OnError.fail,
    quarantine: QuarantineOpt = None,
) -> None:
    """Name each turn's failure point (wake, asr, nlu, er, result) or `correct`."""
    def work() -> int:
        if explain_all and not explain:
            raise UsageError("--explain-all goes with --explain")
        with steps(4, "loading model") as bar:
            fitted = FailurePointModel.load(model)
            rule_set = _rules(rules, no_rules)
            bar.advance("reading traces")
            result = _load(traces, on_error, quarantine)
            bar.advance("features")
            features = build_features(result.turns)
            bar.advance("classifying")
            records = classify_turns(result.turns, fitted, rule_set, features=features)
            bar.advance()
        if explain:
            wanted = records.height if explain_all else int((records["failure_point"] != "correct").sum())
            with steps(wanted, "explaining") as bar:
                records = records.with_columns(explanations(records, features, fitted, top_k=top_k, explain_all=explain_all,
                                                            on_progress=lambda n: bar.advance(steps=n)))
            records = records.select([c for c in records.columns if c != "label"] + (["label"] if "label" in records.columns else []))
        write_records(records, output)
        _print_counts(failure_point_counts(records), records.height)
        return _exit_for(result)
    _run(work)


def _print_counts(counts: dict[str, int], total: int) -> None:
    table = Table(title=f"failure points of {total} turns", title_justify="left")
    table.add_column("failure point")
    table.add_column("turns", justify="right")
    table.add_column("share", justify="right")
    for label, count in counts.items():
        table.add_row(label, str(count), f"{100 * count / total:.1f}%" if total else "-")
    stderr_console().print(table)


@app.command()
def train(
    traces: Annotated[str, typer.Argument(help="Labeled traces (every turn with a `label`).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model directory to write.")],
    seed: Annotated[int, typer.Option(help="Seed for the validation split and LightGBM.")] = 0,
    valid_fraction: Annotated[float, typer.Option(min=0.01, max=0.9, help="Share of sessions held out for early stopping.")] = 0.15,
    on_error: OnErrorOpt = OnError.fail,
    quarantine: QuarantineOpt = None,
) -> None:
    """Train a failure-point model on your labeled traces."""
    def work() -> int:
        result = _load(traces, on_error, quarantine)
        estimator = FailurePointModel(seed=seed, valid_fraction=valid_fraction)
        with steps(estimator.n_estimators, "training") as bar:
            estimator.fit(result.turns, on_iteration=lambda i, total: bar.update(i, total))
        estimator.save(output)
        metrics = estimator.validation_metrics_
        stderr_console().print(f"validation ({estimator.training_rows_['valid']} turns, {estimator.best_iteration_} rounds): "
                               f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}", markup=False)
        _print_metrics(stderr_console(), metrics)
        stderr_console().print(f"model written to {output}", markup=False, highlight=False)
        return _exit_for(result)
    _run(work)


def _print_metrics(console: Console, metrics: dict, human: dict | None = None) -> None:
    table = Table(title=f"{metrics['turns']} turns: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}",
                  title_justify="left")
    for column in ("label", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "label" else "right")
    if human:
        table.add_column("annotator F1", justify="right")
    for label, row in metrics["per_label"].items():
        cells = [label, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", str(row["support"])]
        if human:
            cells.append(f"{human['per_label'][label]['f1']:.4f}")
        table.add_row(*cells)
    console.print(table)
    confusion = Table(title="confusion (rows gold, columns predicted)", title_justify="left")
    confusion.add_column("gold \\ predicted")
    for label in metrics["confusion"]["labels"]:
        confusion.add_column(label, justify="right")
    for label, row in zip(metrics["confusion"]["labels"], metrics["confusion"]["matrix"], strict=True):
        confusion.add_row(label, *map(str, row))
    console.print(confusion)


@app.command("eval")
def eval_command(
    traces: Annotated[str, typer.Argument(help="Labeled traces (every turn with a `label`).")],
    model: ModelOpt = None,
    output_format: Annotated[TableFormat, typer.Option("--format", help="table (terminal) or json (stdout).")] = TableFormat.table,
    human: Annotated[str | None, typer.Option(help="Field with one annotator's labels (e.g. human_label): score the "
                                              "annotator too and report the model as % of human macro-F1.")] = None,
    save_metrics: Annotated[Path | None, typer.Option("--save-metrics", help="Also write the metrics, defect rates and the "
                                                      "model, rules and data fingerprints to this JSON file: the "
                                                      "baseline `fpi gate --baseline` reads.")] = None,
    rules: RulesOpt = None,
    no_rules: NoRulesOpt = False,
    on_error: OnErrorOpt = OnError.fail,
    quarantine: QuarantineOpt = None,
) -> None:
    """Score the model against gold labels: accuracy, macro-F1, per-label P/R/F1, confusion."""
    def work() -> int:
        fitted = FailurePointModel.load(model)
        rule_set = _rules(rules, no_rules)
        result = _load(traces, on_error, quarantine)
        turns = _require_labels(result)
        records = classify_turns(turns, fitted, rule_set)
        gold = turns["label"].to_list()
        if save_metrics is not None:
            snapshot = _snapshot(result, fitted, rule_set, records)
            metrics = snapshot["metrics"]
            atomic_write_bytes(save_metrics, (json.dumps(snapshot, indent=2, sort_keys=True) + "\n").encode("utf-8"))
            stderr_console().print(f"metrics written to {save_metrics}", markup=False, highlight=False)
        else:
            metrics = evaluate(gold, records["failure_point"].to_list())
        report: dict = {"source": result.source, "model": metrics}
        human_metrics = None
        if human:
            human_labels = turns.select(pl.col("raw").str.json_path_match(f"$.{human}")).to_series()
            bad = human_labels.is_null() | ~human_labels.is_in(list(LABELS))
            if bad.any():
                first = turns.filter(bad)["line"][0]
                raise UsageError(f"{result.source}:{first}: {human}: expected one of {', '.join(LABELS)} on every turn "
                                 f"({int(bad.sum())} turns lack it)")
            human_metrics = evaluate(gold, human_labels.to_list())
            report["human"] = human_metrics
            report["model_pct_of_human_macro_f1"] = human_relative(metrics, human_metrics)
        if output_format is TableFormat.json:
            sys.stdout.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
        else:
            _print_metrics(stdout_console(), metrics, human_metrics)
            if human_metrics:
                stdout_console().print(f"annotator macro-F1 {human_metrics['macro_f1']:.4f}; model = "
                                      f"{report['model_pct_of_human_macro_f1']:.1f}% of human performance")
        return _exit_for(result)
    _run(work)


@app.command("explain")
def explain_command(
    traces: TracesArg,
    turn: Annotated[str | None, typer.Option("--turn", help="Explain this turn_id: stages, probabilities and a SHAP waterfall.")] = None,
    summary: Annotated[bool, typer.Option("--summary", help="Global importance per failure point: table, JSON and PNG plots.")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Folder for --summary files.")] = None,
    sample: Annotated[int, typer.Option(min=1, help="Turns sampled for --summary.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the --summary sample.")] = 0,
    model: ModelOpt = None,
    rules: RulesOpt = None,
    no_rules: NoRulesOpt = False,
    on_error: OnErrorOpt = OnError.fail,
    quarantine: QuarantineOpt = None,
) -> None:
    """Show why fpi named a failure point: one turn (--turn) or the whole set (--summary)."""
    def work() -> int:
        if (turn is None) == (not summary):
            raise UsageError("give either --turn TURN_ID or --summary -o DIR")
        if summary and output is None:
            raise UsageError("--summary needs -o DIR for its JSON and plots")
        fitted = FailurePointModel.load(model)
        rule_set = _rules(rules, no_rules)
        result = _load(traces, on_error, quarantine)
        features = build_features(result.turns)
        if turn is not None:
            records = classify_turns(result.turns, fitted, rule_set, features=features)
            _print_turn(explain_turn(turn, result.turns, features, fitted),
                        records.row(int(np.flatnonzero((records["turn_id"] == turn).to_numpy())[0]), named=True))
            return _exit_for(result)
        with steps(min(sample, features.height), "explaining") as bar:
            numbers = summarize(features, fitted, output, sample=sample, seed=seed, on_progress=lambda n: bar.advance(steps=n))
        _print_importance(numbers)
        stderr_console().print(f"wrote importance.json and bar/beeswarm plots per failure point to {output}", markup=False)
        return _exit_for(result)
    _run(work)


def _stage_lines(turn: dict) -> list[tuple[str, str]]:
    """The stages as the trace saw them, one line each."""
    def num(value: object) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
    wake, asr, nlu, er, result, feedback = (turn.get(k) for k in ("wake", "asr", "nlu", "er", "result", "feedback"))
    lines = [("wake", "did not run" if wake is None else
              f"detected {wake['detected']}, score {num(wake['score'])}, verified {num(wake['verified'])}")]
    lines.append(("asr", "did not run" if asr is None else f"{asr['text']!r} (confidence {num(asr['confidence'])}"
                  f", {len(asr['nbest'] or [])} n-best)"))
    if nlu is None:
        lines.append(("nlu", "did not run"))
    else:
        slots = ", ".join(f"{s['name']}={s['value']!r}" for s in nlu["slots"] or []) or "no slots"
        lines.append(("nlu", f"{nlu['domain']}/{nlu['intent']} (confidence {num(nlu['confidence'])}); {slots}"))
    if er is None:
        lines.append(("er", "did not run"))
    else:
        lines.append(("er", "; ".join(f"{e['value']!r} -> {e['resolved_value']!r} {e['status']} ({num(e['score'])})"
                                      for e in er["entities"]) or "no entities"))
    lines.append(("result", "not logged" if result is None else
                  f"{result['status']}, action {result['action']!r}, {num(result['latency_ms'])} ms, says {result['response']!r}"))
    if feedback is not None:
        lines.append(("feedback", f"barge-in {feedback['barge_in']}, explicit {feedback['explicit']}"))
    return lines


def _print_turn(explained, record: dict) -> None:
    console = stdout_console()
    turn = explained.turn
    console.print(f"[bold]turn {turn['turn_id']}[/] (session {turn['session_id']}, index {turn['turn_index']}, "
                  f"{turn.get('timestamp') or 'no timestamp'})", highlight=False)
    stages = Table(show_header=False, box=None)
    stages.add_column(style="bold")
    stages.add_column()
    for stage, line in _stage_lines(turn):
        stages.add_row(stage, line)
    console.print(stages)
    verdict = f"failure point [bold]{record['failure_point']}[/]; model says {record['model_failure_point']}"
    if record["rule"]:
        verdict += f"; decided by rule [bold]{record['rule']}[/]"
    if turn.get("label"):
        verdict += f"; gold label {turn['label']}"
    console.print(verdict, highlight=False)
    probabilities = Table(title="probabilities", title_justify="left")
    probabilities.add_column("label")
    probabilities.add_column("p", justify="right")
    for label, p in sorted(explained.probabilities.items(), key=lambda item: -item[1]):
        probabilities.add_row(label, f"{p:.4f}")
    console.print(probabilities)
    waterfall = Table(title=f"why {explained.explained_class}: SHAP contributions in log-odds", title_justify="left")
    for column in ("feature", "value", "contribution", "running total"):
        waterfall.add_column(column, justify="left" if column in ("feature", "value") else "right")
    total = explained.expected
    waterfall.add_row("expected value", "", "", f"{total:+.4f}")
    shown, rest = explained.contributions[:12], explained.contributions[12:]
    for feature, value, contribution in shown:
        total += contribution
        colour = "green" if contribution > 0 else "red"
        waterfall.add_row(f"{feature} ({DESCRIPTIONS[feature]})", "missing" if value is None else str(value), f"[{colour}]{contribution:+.4f}[/]", f"{total:+.4f}")
    if rest:
        other = sum(c for _, _, c in rest)
        total += other
        waterfall.add_row(f"{len(rest)} other features", "", f"{other:+.4f}", f"{total:+.4f}")
    waterfall.add_row(f"score for {explained.explained_class}", "", "", f"[bold]{explained.score:+.4f}[/]")
    console.print(waterfall)


def _print_importance(numbers: dict) -> None:
    table = Table(title=f"mean |SHAP| per failure point over {numbers['turns_explained']} turns (top 8)", title_justify="left")
    table.add_column("failure point")
    table.add_column("most important features")
    for label, importance in numbers["mean_abs_shap"].items():
        table.add_row(label, ", ".join(f"{name} {value:.3f}" for name, value in list(importance.items())[:8]))
    stdout_console().print(table)


class GateFormat(str, Enum):
    human = "human"
    json = "json"
    github = "github"


def _snapshot(result: LoadResult, fitted: FailurePointModel, rule_set: RuleSet, records: pl.DataFrame) -> dict:
    """Metrics of classified turns, with what they were measured with (see fpi.evaluate.metrics_snapshot)."""
    labeled = result.turns["label"].null_count() == 0 and result.turns.height > 0
    return metrics_snapshot(source=result.source, data_fingerprint=turns_fingerprint(result.turns),
                            model_fingerprint=fitted.fingerprint(), rules=rule_set.identity(),
                            predicted=records["failure_point"].to_list(),
                            gold=result.turns["label"].to_list() if labeled else None)


@app.command("gate")
def gate_command(
    traces: Annotated[str, typer.Argument(help="Labeled traces the gate measures (a held-out, human-labeled set).")],
    policy: Annotated[Path, typer.Option("--policy", help="Gate policy YAML: floors, ceilings, regression limits (docs/ci.md).")],
    baseline: Annotated[Path | None, typer.Option("--baseline", help="Metrics file of the last accepted run "
                                                  "(`fpi eval --save-metrics`), for the policy's regression limits.")] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write JUnit XML: one testcase per check.")] = None,
    output_format: Annotated[GateFormat, typer.Option("--format", help="human (table), json, or github "
                                                      "(GitHub Actions annotations).")] = GateFormat.human,
    model: ModelOpt = None,
    rules: RulesOpt = None,
    no_rules: NoRulesOpt = False,
    on_error: OnErrorOpt = OnError.fail,
    quarantine: QuarantineOpt = None,
) -> None:
    """Pass or fail a release on labeled traces: exit 0 all checks pass, 1 a check failed, 2 usage, policy or input error."""
    def work() -> int:
        gate_policy = load_policy(policy)
        previous = load_baseline(baseline) if baseline is not None else None
        if previous is not None and not gate_policy.section("regression"):
            stderr_console().print(f"note: {policy} sets no regression limits; --baseline {baseline} is not used", markup=False)
        fitted = FailurePointModel.load(model)
        rule_set = _rules(rules, no_rules)
        result = _load(traces, on_error, quarantine)
        with steps(2, "classifying") as bar:
            records = classify_turns(result.turns, fitted, rule_set)
            bar.advance("measuring")
            outcome = run_gate(gate_policy, _snapshot(result, fitted, rule_set, records), previous)
            bar.advance()
        if junit is not None:
            atomic_write_bytes(junit, junit_xml(outcome))
        if output_format is GateFormat.json:
            sys.stdout.write(json.dumps(outcome.to_json(), indent=2, sort_keys=True) + "\n")
        elif output_format is GateFormat.github:
            sys.stdout.write(github_annotations(outcome))
        else:
            _print_gate(outcome)
        return outcome.exit_code
    _run(work)


def _print_gate(outcome: GateResult) -> None:
    console = stdout_console()
    context = outcome.context
    lines = [f"{context['source']}: {context['turns']} turns (data {context['data_fingerprint'][:12]}); "
             f"model {context['model_fingerprint'][:12]}; {len(context['rules']['ids'])} rules; policy {context['policy']}"]
    if "baseline" in context:
        base = context["baseline"]
        same = ", ".join(f"{'same' if base[f'same_{k}'] else 'different'} {k}" for k in ("data", "model", "rules"))
        lines.append(f"baseline {base['source']} (model {str(base['model_fingerprint'])[:12]}): {same}")
    for line in lines:
        console.print(line, markup=False, highlight=False)
    table = Table(title=outcome.summary(), title_justify="left")
    for column in ("check", "value", "threshold", "status", "detail"):
        table.add_column(column, justify="right" if column in ("value", "threshold") else "left")
    colours = {"pass": "green", "fail": "bold red", "skipped": "yellow"}
    for check in outcome.checks:
        table.add_row(check.name, "-" if check.value is None else f"{check.value:.4f}",
                      f"{check.op} {check.threshold:.4f}" if check.threshold is not None else "-",
                      f"[{colours[check.status]}]{check.status}[/]", check.detail)
    console.print(table)


class ReportFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"
    html = "html"


def _report_records(path: str, model: Path | None, rules: list[Path] | None, no_rules: bool,
                    on_error: OnError, quarantine: Path | None) -> tuple[pl.DataFrame, LoadResult | None]:
    """Classified records as they are, or raw traces classified now with the given (or shipped) model."""
    if path != "-" and Path(path).is_file() and is_classified(path):
        if model is not None or rules or no_rules:
            raise UsageError(f"{path} is already classified (it has failure_point); --model, --rules and --no-rules "
                             "apply to raw traces")
        return read_records(path), None
    fitted = FailurePointModel.load(model)
    rule_set = _rules(rules, no_rules)
    result = _load(path, on_error, quarantine)
    with steps(1, "classifying") as bar:
        records = classify_turns(result.turns, fitted, rule_set)
        bar.advance()
    return records, result


@app.command("report")
def report_command(
    records: Annotated[str, typer.Argument(help="`fpi classify` output (.jsonl, .csv, .parquet), or raw traces to classify now.")],
    by_component: Annotated[bool, typer.Option("--by-component", help="Defect rate per failure point (always shown; the default view).")] = True,
    by: Annotated[list[str] | None, typer.Option("--by", help="Slice by a field (repeatable): nlu.domain, nlu.intent, "
                                                 "device.type, locale, day, or any column of the records.")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="Another run (records or traces) to compare with, "
                                                 "e.g. the last release.")] = None,
    output_format: Annotated[ReportFormat, typer.Option("--format", help="table (terminal), json, csv, markdown or html.")] = ReportFormat.table,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the report to this file (default stdout).")] = None,
    min_cell: Annotated[int, typer.Option("--min-cell", min=1, help="Slice values with fewer turns are flagged small.")] = 30,
    top: Annotated[int, typer.Option("--top", min=1, help="Intents, domains, reasons listed per failure point.")] = 3,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0001, max=0.5, help="Significance level of the baseline comparison.")] = 0.05,
    model: ModelOpt = None,
    rules: RulesOpt = None,
    no_rules: NoRulesOpt = False,
    on_error: OnErrorOpt = OnError.fail,
    quarantine: QuarantineOpt = None,
) -> None:
    """Where the assistant fails: defect rate per component with intervals, slices, a baseline, confusion."""
    def work() -> int:
        current, result = _report_records(records, model, rules, no_rules, on_error, quarantine)
        before = _report_records(baseline, model, rules, no_rules, on_error, None)[0] if baseline else None
        numbers = build_report(current, source=result.source if result else records, by=by, baseline=before,
                               baseline_source=baseline or "", min_cell=min_cell, top=top, alpha=alpha)
        if output_format is ReportFormat.table:
            if output is not None:
                raise UsageError("-o needs --format json, csv, markdown or html")
            print_report(numbers, stdout_console())
        else:
            text = {ReportFormat.json: lambda: json.dumps(numbers, indent=2, sort_keys=True) + "\n",
                    ReportFormat.csv: lambda: csv_text(numbers), ReportFormat.markdown: lambda: markdown(numbers),
                    ReportFormat.html: lambda: html_page(numbers)}[output_format]()
            if output is None:
                sys.stdout.write(text)
            else:
                atomic_write_bytes(output, text.encode("utf-8"))
                stderr_console().print(f"report written to {output}", markup=False, highlight=False)
        return _exit_for(result) if result else EXIT_OK
    _run(work)


rules_app = typer.Typer(help="Lint, audit and list the fields of the rule layer.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")


@rules_app.command("lint")
def rules_lint(paths: Annotated[list[Path] | None, typer.Argument(help="Rule files or folders (default: the shipped rules).")] = None) -> None:
    """Check rule files: schema, unknown fields, duplicate ids, condition names and types."""
    def work() -> int:
        rule_set, problems = lint_rules(paths)
        console = stderr_console()
        for problem in problems:
            console.print(problem, markup=False, highlight=False)
        if problems:
            console.print(f"{len(problems)} problems", markup=False)
            return EXIT_ERROR
        console.print(f"{len(rule_set)} rules, no problems", markup=False)
        return EXIT_OK
    _run(work)


@rules_app.command("check")
def rules_check(
    traces: Annotated[str, typer.Argument(help="Labeled traces (every turn with a `label`).")],
    rules: RulesOpt = None,
    model: ModelOpt = None,
    output_format: Annotated[TableFormat, typer.Option("--format", help="table (terminal) or json (stdout).")] = TableFormat.table,
    on_error: OnErrorOpt = OnError.fail,
    quarantine: QuarantineOpt = None,
) -> None:
    """Audit each rule against gold labels: matches, changes, precision, and macro-F1 with and without it."""
    def work() -> int:
        fitted = FailurePointModel.load(model)
        rule_set = load_rules(rules)
        result = _load(traces, on_error, quarantine)
        turns = _require_labels(result)
        features = build_features(turns)
        audit = check_rules(model_records(turns, fitted, features), turns, features, rule_set)
        if output_format is TableFormat.json:
            sys.stdout.write(json.dumps(audit, indent=2, sort_keys=True) + "\n")
            return _exit_for(result)
        table = Table(title=f"{audit['turns']} turns: macro-F1 model {audit['macro_f1_model']:.4f}, "
                            f"model + rules {audit['macro_f1_with_rules']:.4f}", title_justify="left")
        for column in ("rule", "then", "matched", "decided", "precision", "changed", "changes right", "macro-F1 without", "effect"):
            table.add_column(column, justify="left" if column in ("rule", "then") else "right")
        for row in audit["rules"]:
            effect = audit["macro_f1_with_rules"] - row["macro_f1_without"]
            table.add_row(row["id"], row["effect"], str(row["matched"]), str(row["decided"]),
                          "-" if row["match_precision"] is None else f"{row['match_precision']:.3f}",
                          str(row["changed"]), "-" if row["precision"] is None else f"{row['precision']:.3f}",
                          f"{row['macro_f1_without']:.4f}", f"[{'green' if effect >= 0 else 'red'}]{effect:+.4f}[/]")
        stdout_console().print(table)
        stdout_console().print("precision: share of the turns the rule decided whose gold label is what the rule says; "
                        "changes right: the same over the turns where it overrode the model; "
                        "effect: macro-F1 with all rules minus without this one.", highlight=False)
        return _exit_for(result)
    _run(work)


@rules_app.command("fields")
def rules_fields() -> None:
    """List the fields a rule condition can name (each also as next.<field> and prev.<field>)."""
    table = Table(title="condition fields (also next.<field>, prev.<field>)", title_justify="left")
    table.add_column("field")
    table.add_column("type")
    for name, kind in fields_reference():
        table.add_row(name, kind)
    stdout_console().print(table)


def stdout_console() -> Console:
    """Tables on stdout: the terminal's width, or wide enough not to fold when piped."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _require_labels(result: LoadResult) -> pl.DataFrame:
    missing = result.turns["label"].null_count()
    if missing:
        raise UsageError(f"{result.source}: {missing} of {result.turns.height} turns have no `label`; "
                         "this needs gold labels on every turn")
    return result.turns


def main() -> None:
    app()


if __name__ == "__main__":
    main()

