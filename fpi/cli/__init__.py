"""`fpi` on the command line: one module per command, each parsing its arguments, calling
the library and handing the result to presentation (`fpi.presentation.formats`: every output format, named once)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import typer
from typer.core import TyperGroup

from fpi.cli import classify, common, evaluate, explain, gate, report, sample, simulate, train, validate

if TYPE_CHECKING:
    from typer._click import Command, Context

# Plain help and usage errors: rendering them with rich costs 0.17 s of every `fpi --help`.
app = typer.Typer(help="Failure-point isolation for voice and conversational assistants.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False, add_completion=False, rich_markup_mode=None)


def _show_version(asked: bool) -> None:
    if asked:
        from fpi.contract.distribution import DISTRIBUTION, version

        typer.echo(f"fpi {version()} ({DISTRIBUTION})")
        raise typer.Exit()


@app.callback()
def main_options(debug: bool = typer.Option(False, "--debug", help="Show the traceback of an internal error."),
                 version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                              help="Show fpi's version and exit.")) -> None:
    """Failure-point isolation for voice and conversational assistants."""
    common.DEBUG["traceback"] = debug


app.command("simulate")(simulate.simulate)
app.command("validate")(validate.validate)
app.command("classify")(classify.classify)
app.command("train")(train.train)
app.command("adapt")(train.adapt)
app.command("sample")(sample.sample)
app.command("eval")(evaluate.evaluate)
app.command("explain")(explain.explain)
app.command("gate")(gate.gate)
app.command("report")(report.report)

# The command groups: each one's help, and the module of its commands with, by command name, the function
# it holds; the module is imported when the group is used (`GroupOnUse`), not for `fpi --help`.
GROUPS = {
    "rules": ("Lint, audit, test and list the fields of the rule layer.", "fpi.cli.rules",
              {"lint": "lint", "check": "check", "test": "test", "fields": "fields"}),
    "map": ("Mappings: read logs of another shape (other field names, CSV, OpenTelemetry spans).", "fpi.cli.maps",
            {"list": "list_mappings", "show": "show_mapping", "check": "check", "infer": "infer"}),
    "label": ("Labels from a filled labeling sheet.", "fpi.cli.sample", {"merge": "merge"}),
}


class GroupOnUse(TyperGroup):
    """A group (`GROUPS`) whose commands are imported and built when it runs or shows its own help: `fpi --help`
    shows the group's help and loads none of them."""

    def _register(self) -> None:
        if self.commands:
            return
        _, where, functions = GROUPS[self.name or ""]
        module = importlib.import_module(where)
        commands = typer.Typer(rich_markup_mode=None)
        for name, function in functions.items():
            commands.command(name)(getattr(module, function))
        self.commands.update(typer.main.get_group(commands).commands)

    def list_commands(self, ctx: Context) -> list[str]:
        self._register()
        return super().list_commands(ctx)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        self._register()
        return super().get_command(ctx, cmd_name)


for group, (about, *_) in GROUPS.items():
    app.add_typer(typer.Typer(cls=GroupOnUse, help=about, no_args_is_help=True, rich_markup_mode=None), name=group)


def main() -> None:
    app()
