"""`fpi` on the command line: one module per command, each parsing its arguments, calling
the library and handing the result to presentation (`fpi.presentation.formats`: every output format, named once)."""

from __future__ import annotations

import typer

from fpi.cli import classify, common, evaluate, explain, gate, maps, report, rules, sample, simulate, train, validate

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

rules_app = typer.Typer(help="Lint, audit, test and list the fields of the rule layer.", no_args_is_help=True,
                        rich_markup_mode=None)
rules_app.command("lint")(rules.lint)
rules_app.command("check")(rules.check)
rules_app.command("test")(rules.test)
rules_app.command("fields")(rules.fields)
app.add_typer(rules_app, name="rules")

map_app = typer.Typer(help="Mappings: read logs of another shape (other field names, CSV, OpenTelemetry spans).",
                      no_args_is_help=True, rich_markup_mode=None)
map_app.command("list")(maps.list_mappings)
map_app.command("show")(maps.show_mapping)
map_app.command("check")(maps.check)
map_app.command("infer")(maps.infer)
app.add_typer(map_app, name="map")

label_app = typer.Typer(help="Labels from a filled labeling sheet.", no_args_is_help=True, rich_markup_mode=None)
label_app.command("merge")(sample.merge)
app.add_typer(label_app, name="label")


def main() -> None:
    app()
