"""`fpi map`: the mappings that ship with fpi, a check of one's own, and a first draft from logs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from fpi.cli.common import MappingOpt, StrictOpt, guard_paths, run, say, say_coverage
from fpi.presentation.terminal import show

MappingArg = Annotated[str, typer.Argument(help="A mapping file, or the name of a shipped mapping.")]


def list_mappings() -> None:
    """The mappings that ship with fpi (use them with --mapping NAME, or `extends: NAME`)."""
    def work() -> int:
        from fpi.io.mapping import load_mapping, shipped_mappings
        from fpi.presentation.display_tables import DisplayTable

        rows = []
        for name in shipped_mappings():
            mapping = load_mapping(name)
            rows.append([name, mapping.format or "any", ", ".join(mapping.stages or ()), _description(name)])
        show([DisplayTable("mappings", "shipped mappings", ["name", "format", "stages", "reads"], rows,
                    note="fpi map show NAME prints one; docs/mapping.md describes the language")])
        return 0
    run(work)


def _description(name: str) -> str:
    from fpi.io.mapping import shipped_mappings
    from fpi.contract.yaml_documents import read_yaml

    document, _ = read_yaml(shipped_mappings()[name])
    data = document.data if document is not None else None
    return str(data.get("description", "")) if isinstance(data, dict) else ""


def show_mapping(mapping: MappingArg) -> None:
    """Print a shipped mapping (to copy, or to read what `extends: NAME` brings)."""
    def work() -> int:
        from fpi.io.mapping import load_mapping, shipped_mappings

        load_mapping(mapping)  # a clear error for a name that is not shipped
        path = shipped_mappings().get(mapping, Path(mapping))
        sys.stdout.write(path.read_text(encoding="utf-8"))
        return 0
    run(work)


def check(
    target: Annotated[str, typer.Argument(help="A mapping file or a shipped mapping's name; or, with --mapping, logs to "
                                          "read through it.")],
    mapping: MappingOpt = None,
    strict: StrictOpt = False,
) -> None:
    """Check a mapping file (and every file it extends): each problem as file:line and how to mend it. With
    `LOGS --mapping M`, also read the logs through it: what it found of each stage and field, and a warning for
    a declared stage it found on no turn (--strict: exit 2)."""
    def work() -> int:
        from fpi.contract.errors import EXIT_ERROR
        from fpi.io.mapping import load_mapping
        from fpi.io.traces import read_traces

        loaded = load_mapping(mapping if mapping is not None else target)
        say(f"{loaded.source}: ok ({len(loaded.fields)} fields"
            + (f", stages {', '.join(loaded.stages)}" if loaded.stages else "") + ")")
        if mapping is None:
            return 0
        guard_paths([target], [])
        read = read_traces(target, mapping=loaded)
        for message in read.problems()[:10]:
            say(message)
        say(read.summary("rejected"))
        assert read.coverage is not None
        say_coverage(read.coverage)
        refused = read.rejected or (strict and read.coverage.warnings)
        return EXIT_ERROR if refused else 0
    run(work)


def infer(
    logs: Annotated[str, typer.Argument(help="Logs to draft a mapping for: JSON Lines, CSV/TSV, Parquet or OTLP/JSON spans; - for stdin.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the draft here (default: stdout).")] = None,
) -> None:
    """Draft a mapping from the logs' field names and value shapes, for a person to read and correct."""
    def work() -> int:
        import gzip

        from fpi.contract.errors import TraceError
        from fpi.io.mapping_draft import draft_mapping
        from fpi.contract.atomic_files import atomic_write_bytes

        guard_paths([logs], [output])
        try:
            data = sys.stdin.buffer.read() if logs == "-" else Path(logs).read_bytes()
        except OSError as exc:
            raise TraceError([f"{logs}: cannot be read ({exc.strerror})"]) from None
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        draft = draft_mapping(data, logs)
        if output is None:
            sys.stdout.write(draft)
        else:
            atomic_write_bytes(output, draft.encode("utf-8"))
            say(f"draft mapping written to {output}; read it, correct it, then `fpi validate {logs} --mapping {output}`")
        return 0
    run(work)
