"""Every normal output of the CLI, as cases whose bytes are kept in tests/golden/.

`python scripts/make_golden.py` rewrites the golden files after a deliberate change;
`tests/test_golden.py` runs the same cases and compares byte for byte. Cases run in
a scratch folder where `fixtures` points at the repository's, so paths in outputs
are the same on every machine."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
INPUT_TURNS = 400  # the first turns of fixtures/traces.jsonl: every kind of output, small files

BAD_RULES = """rules:
  - id: er-fix
    description: a misspelt field and a value the field never takes
    whn: asr.confidence < 0.5
    then: {recovered: er}
  - id: er-fix2
    description: wrong value
    when: result.status == "sucess" and asr.confidnce < 0.5
    then: {recovered: er}
  - id: er-fix2
    description: duplicate id
    when: asr.confidence < 0.5
    then: {assign: asr}
"""


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    files: tuple[str, ...] = ()  # output files (relative to the scratch folder) kept as golden


CASES: tuple[Case, ...] = (
    Case("classify-jsonl", ("classify", "input/traces.jsonl", "-o", "out/records.jsonl"), ("out/records.jsonl",)),
    Case("classify-stdout-no-rules", ("classify", "input/traces.jsonl", "--no-rules")),
    Case("classify-csv", ("classify", "input/traces.jsonl", "-o", "out/records.csv"), ("out/records.csv",)),
    Case("classify-explain", ("classify", "input/traces.jsonl", "--explain", "--top-k", "2", "-o", "out/explained.jsonl"),
         ("out/explained.jsonl",)),
    Case("validate", ("validate", "input/traces.jsonl")),
    Case("validate-bad", ("validate", "fixtures/bad/wrong_type.jsonl")),
    Case("report-table", ("report", "input/records.jsonl", "--by", "domain")),
    Case("report-json", ("report", "input/records.jsonl", "--by", "domain", "--by", "day", "--baseline",
                         "input/baseline.jsonl", "--format", "json")),
    Case("report-markdown", ("report", "input/records.jsonl", "--by-component", "--by", "device.type", "--baseline", "input/baseline.jsonl",
                             "--format", "markdown")),
    Case("report-csv", ("report", "input/records.jsonl", "--by", "locale", "--baseline", "input/baseline.jsonl",
                        "--format", "csv")),
    Case("report-html", ("report", "input/explained.jsonl", "--by-component", "--by", "intent", "--baseline", "input/baseline.jsonl",
                         "--format", "html", "-o", "out/report.html"), ("out/report.html",)),
    Case("report-traces", ("report", "input/traces.jsonl", "--format", "json")),
    Case("eval-table", ("eval", "input/traces.jsonl")),
    Case("eval-json-human", ("eval", "input/traces.jsonl", "--human", "human_label", "--format", "json")),
    Case("eval-save-metrics", ("eval", "input/traces.jsonl", "--format", "json", "--save-metrics", "out/metrics.json"),
         ("out/metrics.json",)),
    Case("gate-human", ("gate", "input/traces.jsonl", "--policy", "fixtures/gate/policy.yaml",
                        "--baseline", "fixtures/gate/baseline.json", "--junit", "out/junit.xml"), ("out/junit.xml",)),
    Case("gate-json", ("gate", "input/traces.jsonl", "--policy", "fixtures/gate/policy.yaml",
                       "--baseline", "fixtures/gate/baseline.json", "--format", "json")),
    Case("gate-github", ("gate", "input/traces.jsonl", "--policy", "fixtures/gate/policy.yaml",
                         "--baseline", "fixtures/gate/baseline.json", "--format", "github")),
    Case("rules-lint-default", ("rules", "lint")),
    Case("rules-lint-bad", ("rules", "lint", "input/bad-rules.yaml")),
    Case("rules-check-table", ("rules", "check", "input/traces.jsonl")),
    Case("rules-check-json", ("rules", "check", "input/traces.jsonl", "--format", "json")),
    Case("rules-fields", ("rules", "fields")),
    Case("explain-turn", ("explain", "input/traces.jsonl", "--turn", "t00000692")),
    Case("simulate", ("simulate", "-n", "40", "--seed", "5", "--annotator-noise", "0.1", "-o", "out/sim.jsonl"),
         ("out/sim.jsonl",)),
    Case("simulate-stage", ("simulate", "-n", "20", "--seed", "6", "--form", "stage", "-o", "out/sim-stage.jsonl"),
         ("out/sim-stage.jsonl",)),
)


@contextmanager
def scratch(where: Path):
    """A scratch folder with the inputs every case reads, as the working directory."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "fixtures").symlink_to(ROOT / "fixtures")
    (where / "input").mkdir()
    (where / "out").mkdir()
    lines = (ROOT / "fixtures" / "traces.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (where / "input" / "traces.jsonl").write_text("".join(lines[:INPUT_TURNS]), encoding="utf-8")
    (where / "input" / "bad-rules.yaml").write_text(BAD_RULES, encoding="utf-8")
    before = Path.cwd()
    os.chdir(where)
    try:
        yield where
    finally:
        os.chdir(before)


def prepare_records(run) -> None:
    """Records and a baseline run the report cases read (made by the CLI under test)."""
    run("classify", "input/traces.jsonl", "-o", "input/records.jsonl")
    run("classify", "input/traces.jsonl", "--no-rules", "-o", "input/baseline.jsonl")
    run("classify", "input/traces.jsonl", "--explain", "-o", "input/explained.jsonl")


def outputs(case: Case, result) -> dict[str, bytes]:
    """What a case produced: exit code, stdout, stderr and its files, by golden file name."""
    found = {f"{case.name}/exit_code": f"{result.exit_code}\n".encode(),
             f"{case.name}/stdout": result.stdout_bytes, f"{case.name}/stderr": result.stderr_bytes}
    for name in case.files:
        found[f"{case.name}/{Path(name).name}"] = Path(name).read_bytes()
    return found


def clear(golden: Path = GOLDEN) -> None:
    for child in golden.iterdir() if golden.exists() else []:
        if child.is_dir():
            shutil.rmtree(child)
