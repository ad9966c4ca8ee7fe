"""The GitHub Action (action.yml) run as a runner runs a composite action: its `run` steps in bash with the
inputs substituted and GITHUB_OUTPUT / GITHUB_STEP_SUMMARY set. The install step is left out (fpi is
installed here); `uses:` steps are the runner's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import FIXTURES, ROOT

ACTION = yaml.safe_load((ROOT / "action.yml").read_text())


def run_action(inputs: dict[str, str], workdir: Path) -> tuple[int, dict[str, str], str, str]:
    """Run the action's steps after `Install fpi`; returns the exit code, its outputs, the job summary and stdout."""
    values = {name: spec.get("default", "") for name, spec in ACTION["inputs"].items()} | inputs
    missing = [name for name, spec in ACTION["inputs"].items() if spec.get("required") and name not in inputs]
    assert not missing, missing
    output, summary = workdir / "github_output", workdir / "step_summary"
    output.write_text(""), summary.write_text("")
    fpi = shutil.which("fpi", path=str(Path(sys.executable).parent))
    assert fpi is not None
    env = {**os.environ, "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary),
           "PATH": f"{Path(fpi).parent}{os.pathsep}{os.environ['PATH']}"}

    def substitute(text: str) -> str:
        text = text.replace("${{ github.action_path }}", str(ROOT))
        return re.sub(r"\$\{\{ inputs\.([\w-]+) \}\}", lambda m: values[m.group(1)], text)
    code, stdout = 0, ""
    for step in ACTION["runs"]["steps"]:
        if "uses" in step or step["name"] == "Install fpi":
            continue
        step_env = {key: substitute(str(value)) for key, value in (step.get("env") or {}).items()}
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=workdir,
                              env={**env, **step_env}, capture_output=True, text=True)
        code, stdout = done.returncode, stdout + done.stdout
        if code:
            break
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    return code, outputs, summary.read_text(), stdout


@pytest.mark.slow
def test_action_passes_fails_and_reports_like_the_gate(tmp_path):
    gate = FIXTURES / "gate"
    passed = run_action({"traces": str(gate / "holdout.jsonl.gz"), "policy": str(gate / "policy.yaml"),
                         "baseline": str(gate / "baseline.json")}, tmp_path)
    assert passed[0] == 0 and passed[1]["exit-code"] == "0"
    assert "# ✅ fpi gate PASS: 19 checks" in passed[2] and (tmp_path / "fpi-gate-junit.xml").exists()
    strict = tmp_path / "strict.yaml"
    strict.write_text("model:\n  accuracy: 0.999\n")
    failed = run_action({"traces": str(FIXTURES / "traces.jsonl"), "policy": str(strict), "junit": "j.xml"}, tmp_path)
    assert failed[0] == 1 and failed[1]["exit-code"] == "1"
    assert "::error file=" in failed[3] and 'failures="1"' in (tmp_path / "j.xml").read_text()
    broken = run_action({"traces": str(tmp_path / "missing.jsonl"), "policy": str(strict), "junit": "e.xml"}, tmp_path)
    assert broken[0] == 2 and broken[1]["exit-code"] == "2" and 'errors="1"' in (tmp_path / "e.xml").read_text()
