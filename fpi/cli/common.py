"""What every command shares: option types and groups, the error handler, the guard on paths
(`output_guard`), consoles. The work itself (reading under the --on-error policy, choosing an engine, writing) is the
library's; heavy libraries are imported by the commands when they run, so `fpi --help` loads none
of them."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import sys
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from fpi.cli.output_guard import guard_paths
from fpi.contract.errors import EXIT_INTERNAL, EXIT_OK, FpiError, FpiWarning, UsageError
from fpi.io.quarantine import OnError, default_quarantine
from fpi.pipeline.adaptation import Adaptation
from fpi.pipeline.predictor import Predictor
from fpi.presentation import formats
from fpi.presentation.formats import Shown
from fpi.presentation.terminal import say, stderr_console

if TYPE_CHECKING:
    from fpi.io.coverage import Coverage
    from fpi.engines.plan import Reading, Run
    from fpi.io.read_result import LoadResult
    from fpi.pipeline.classify import Pipeline


def format_option(writers: dict[str, object], help: str) -> Any:
    """`--format`, one of the names `writers` has (`fpi.presentation.formats`), checked as typer checks a choice."""
    names = list(writers)

    def one_of(value: str | None) -> str | None:
        if value is not None and value not in names:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, names))}.")
        return value
    return typer.Option("--format", metavar="<" + "|".join(names) + ">", callback=one_of, help=help)


def emit(shown: Shown, output: Path | None = None) -> None:
    """A rendered result: its text to `output` (written atomically) or stdout, and what it has for stderr."""
    from fpi.contract.environment_faults import writing

    if output is not None:
        from fpi.contract.atomic_files import atomic_write_bytes

        atomic_write_bytes(output, shown.stdout.encode("utf-8"))
    elif shown.stdout:
        with writing("stdout"):
            sys.stdout.write(shown.stdout)
            sys.stdout.flush()
    if shown.stderr:
        say(shown.stderr.removesuffix("\n"))


TracesArg = Annotated[str, typer.Argument(help="Trace file: .jsonl, .jsonl.gz or .parquet; - for stdin.")]
LabeledArg = Annotated[str, typer.Argument(help="Traces with gold labels (`label`) on some or all of their turns.")]
ModelOpt = Annotated[Path | None, typer.Option("--model", "-m", help="Model directory (default: the model shipped with fpi).")]
OnErrorOpt = Annotated[OnError, typer.Option("--on-error", help="fail: stop at bad records (exit 2, nothing written); "
                                             "skip: go on with the valid turns and quarantine the bad records (exit 3).")]
RulesOpt = Annotated[list[Path] | None, typer.Option("--rules", help="Rule file or folder (repeatable); default: the rules shipped with fpi.")]
PredictorOpt = Annotated[Predictor, typer.Option("--predictor", help="What predicts: native compiles the model's trees "
                                                 "(about 4x faster; once per model and machine, kept in $FPI_CACHE_DIR or "
                                                 "~/.cache/fpi; needs llvmlite, which shap brings), lightgbm does not, auto "
                                                 "uses compiled trees already in the cache and compiles them for "
                                                 "300,000 turns or more. The records are the same.")]
NoRulesOpt = Annotated[bool, typer.Option("--no-rules", help="Run the model alone, without the rule layer.")]
AdaptOpt = Annotated[Adaptation, typer.Option("--adapt", help="auto: move verdicts to the label mix these logs seem to "
                                              "have and, on logs unlike the model's training data (shift 0.25 or more), "
                                              "classify with a model taught by their own confidences; prior: the label "
                                              "mix only; off: the model as trained.")]
QuarantineOpt = Annotated[Path | None, typer.Option("--quarantine", help="Where --on-error skip writes bad records "
                                                    "(default: <traces>.quarantine.jsonl).")]
LintFormatOpt = Annotated[str, format_option(formats.PROBLEMS, "text: `file:line: CODE message` lines on stderr; json "
                                                               "(stdout); github: ::error annotations (stdout).")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="With --mapping: a declared stage that no turn has (its "
                                        "selector matched nothing) is an error, exit 2, instead of a warning.")]
MappingOpt = Annotated[str | None, typer.Option("--mapping", help="Read records of another shape (other field names, CSV, "
                                                "OpenTelemetry spans) through a mapping: a file, or a shipped one "
                                                "(`fpi map list`: pipecat, livekit, openinference).")]


# ------------------------------------------------------------------ option groups

@dataclass(frozen=True)
class Classifier:
    """--model, --rules, --no-rules, --predictor, --adapt: what classifies the turns."""

    model: ModelOpt = None
    rules: RulesOpt = None
    no_rules: NoRulesOpt = False
    predictor: PredictorOpt = Predictor.auto
    adapt: AdaptOpt = Adaptation.auto

    def inputs(self) -> list[str | Path | None]:
        return [self.model, *(self.rules or [])]

    def given(self) -> bool:
        return self.model is not None or bool(self.rules) or self.no_rules

    def pipeline(self, **explain: Any) -> Pipeline:
        from fpi.pipeline.classify import Pipeline
        from fpi.pipeline.model import FailurePointModel
        from fpi.pipeline.rules import rules_for

        return Pipeline(FailurePointModel.load(self.model), rules_for(self.rules, self.no_rules), predictor=self.predictor,
                        adapt=self.adapt, **explain)


@dataclass(frozen=True)
class Input:
    """--mapping, --strict, --on-error, --quarantine: how records are read, and what happens to bad ones."""

    mapping: MappingOpt = None
    strict: StrictOpt = False
    on_error: OnErrorOpt = OnError.fail
    quarantine: QuarantineOpt = None

    def reading(self, traces: str, *, labels_required: bool = False) -> Reading:
        """How an engine reads `traces` under these options."""
        from fpi.engines.plan import Reading

        return Reading(self.mapping, self.on_error, self.quarantine_path(traces), labels_required, strict=self.strict)

    def read(self, traces: str) -> LoadResult:
        """The turns of `traces` under these options (for commands that want the turns themselves), said for people."""
        from fpi.io.traces import read_accepting

        result = read_accepting(traces, on_error=self.on_error, quarantine=self.quarantine_path(traces), mapping=self.mapping,
                                strict=self.strict)
        account_for(result)
        return result

    def mapping_file(self) -> str | None:
        """The mapping as an input path (for `guard_paths`), None when it is a shipped one."""
        from fpi.io.mapping import shipped_mappings

        return None if self.mapping is None or self.mapping in shipped_mappings() else self.mapping

    def quarantine_path(self, traces: str) -> Path | None:
        """Where bad records of `traces` would go, for `guard_paths` (None when they cannot)."""
        if self.quarantine is not None and self.on_error is not OnError.skip:
            raise UsageError("--quarantine goes with --on-error skip (with --on-error fail nothing is quarantined)")
        return default_quarantine(traces, self.quarantine) if self.on_error is OnError.skip else None


@functools.cache
def _group_options(kind: type) -> list[inspect.Parameter]:
    """A group's options as keyword parameters, worked out once for all the commands that take the group."""
    members = typing.get_type_hints(kind, include_extras=True)
    return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=members[f.name])
            for f in dataclasses.fields(kind)]


def options(command: Callable[..., None]) -> Callable[..., None]:
    """Let a command take option groups: each parameter typed with a group dataclass (`Classifier`,
    `Input`) shows on the command line as the group's options, and reaches the command as one object."""
    hints = typing.get_type_hints(command, include_extras=True)
    parameters, groups = [], {}
    for parameter in inspect.signature(command).parameters.values():
        kind = hints[parameter.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            groups[parameter.name] = (kind, [f.name for f in dataclasses.fields(kind)])
            parameters += _group_options(kind)
        else:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=kind))

    def expanded(**values: Any) -> None:
        for name, (kind, members) in groups.items():
            values[name] = kind(**{member: values.pop(member) for member in members})
        command(**values)

    expanded.__name__, expanded.__doc__ = command.__name__, command.__doc__
    expanded.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    expanded.__annotations__ = {p.name: p.annotation for p in parameters}
    return expanded


DEBUG = {"traceback": False}  # set by `fpi --debug`
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader went away


@contextlib.contextmanager
def _warnings_in_one_line() -> Iterator[None]:
    """fpi's own warnings as one `warning:` line on stderr; other libraries' as Python shows them."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
                 line: str | None = None) -> None:
            if issubclass(category, FpiWarning):
                say(f"warning: {message}")
            else:
                shown(message, category, filename, lineno, file, line)
        warnings.showwarning = show
        yield


def run(work: Callable[[], int | None]) -> None:
    """Run a command body; expected errors (and faults of the machine: a full disk, a folder that may not be
    written) become a line on stderr and their exit code, an interrupt exits 130 or 143 once temporary files
    are gone, and an unexpected error says so in a line and exits 70 (with --debug, its traceback instead)."""
    from fpi.contract.environment_faults import as_environment_fault, is_closed_pipe
    from fpi.contract.interrupts import Interrupted, handling_interrupts

    try:
        with handling_interrupts(), _warnings_in_one_line():
            code = work()
    except FpiError as exc:
        _error("error:", str(exc), exc.exit_code)
    except Interrupted as exc:
        _error("interrupted:", str(exc).removeprefix("interrupted "), exc.exit_code)
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as exc:
        if is_closed_pipe(exc):
            _stop_writing_stdout()
        fault = as_environment_fault(exc)
        if fault is not None:
            _error("error:", str(fault), fault.exit_code)
        if DEBUG["traceback"]:
            raise
        _error("internal error:", f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", EXIT_INTERNAL)
    raise typer.Exit(code or EXIT_OK)


def _stop_writing_stdout() -> NoReturn:
    """The reader of stdout is gone: say nothing more there (not even at exit) and end as a shell's SIGPIPE would."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise typer.Exit(EXIT_CLOSED_PIPE)


def _error(kind: str, message: str, exit_code: int) -> NoReturn:
    from rich.text import Text

    stderr_console().print(Text.assemble((kind, "bold red"), f" {message}"), highlight=False, soft_wrap=True)
    raise typer.Exit(exit_code) from None


def account_for(result: LoadResult | Run) -> None:
    """Say what was rejected, where it went, and how many records were read and accepted."""
    if result.rejected:
        for message in result.problems()[:10]:
            say(message)
        say(f"quarantined records written to {result.quarantine}")
    say(result.summary())
    say_coverage(result.coverage)


def say_coverage(coverage: Coverage | None) -> None:
    """Read through a mapping: what it found of each stage and field, and a warning per declared stage it did not find."""
    if coverage is None:
        return
    for line in coverage.lines():
        say(line)
    for warning in coverage.warnings:
        say(f"warning: {warning}")
