"""Rewrite tests/golden/ from the CLI as it is now, after a deliberate change of output.

    python scripts/make_golden.py

Review the diff (`git diff tests/golden`) before committing it: every changed byte is a
change users see."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from typer.testing import CliRunner  # noqa: E402

from fpi.cli import app  # noqa: E402
from golden_cases import CASES, GOLDEN, clear, outputs, prepare_records, scratch  # noqa: E402


def main() -> None:
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(app, list(args), catch_exceptions=False)
        return result

    clear()
    with tempfile.TemporaryDirectory() as tmp, scratch(Path(tmp)):
        prepare_records(run)
        for case in CASES:
            for name, data in outputs(case, run(*case.args)).items():
                target = GOLDEN / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            print(f"{case.name}: done")


if __name__ == "__main__":
    main()
