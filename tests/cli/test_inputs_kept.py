"""No input byte changes, whatever the outputs are named: every output that is, holds or lies inside
an input is refused before any work (exit 2), and nothing is written."""

import hashlib
import shutil

import pytest

from conftest import FIXTURES, run_cli
from fpi.pipeline.model_folder import default_model_dir


def _digests(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def inputs(tmp_path):
    """Traces, a policy and a model folder holding traces, all in tmp_path."""
    shutil.copy(FIXTURES / "traces.jsonl", tmp_path / "ok.jsonl")
    (tmp_path / "p.yaml").write_text("model:\n  macro_f1: 0.1\n")
    shutil.copytree(default_model_dir(), tmp_path / "m")
    shutil.copy(FIXTURES / "traces.jsonl", tmp_path / "m" / "ok.jsonl")
    return tmp_path


@pytest.mark.parametrize(("args", "said"), [
    (["gate", "{ok}", "--policy", "{p}", "--junit", "{ok}"], "ok.jsonl is also an input"),
    (["gate", "{ok}", "--policy", "{p}", "--junit", "{p}"], "p.yaml is also an input"),
    (["gate", "{ok}", "--policy", "{p}", "--summary", "{p}"], "p.yaml is also an input"),
    (["adapt", "{m}/ok.jsonl", "-o", "{m}", "--force"], "holds the input"),
    (["train", "{m}/ok.jsonl", "-o", "{m}", "--force"], "holds the input"),
    (["classify", "{ok}", "--model", "{m}", "-o", "{m}/records.jsonl"], "lies inside the input"),
    (["explain", "{ok}", "--model", "{m}", "--turn", "t00000001", "-o", "{m}"], "is also an input"),
    (["report", "{ok}", "--format", "csv", "-o", "{ok}"], "is also an input"),
])
def test_an_output_over_an_input_is_refused_and_nothing_changes(inputs, args, said):
    before = _digests(inputs)
    names = {"ok": inputs / "ok.jsonl", "p": inputs / "p.yaml", "m": inputs / "m"}
    result = run_cli(*[a.format(**names) for a in args])
    assert result.exit_code == 2 and said in result.stderr
    assert _digests(inputs) == before


def test_force_replaces_a_model_folder_only_when_it_holds_nothing_else(inputs):
    (inputs / "m" / "ok.jsonl").rename(inputs / "elsewhere.jsonl")
    (inputs / "m" / "notes.txt").write_text("mine")
    before = _digests(inputs)
    result = run_cli("adapt", inputs / "elsewhere.jsonl", "-o", inputs / "m", "--force")
    assert result.exit_code == 2 and "holds files fpi did not write (notes.txt)" in result.stderr
    assert _digests(inputs) == before


def test_a_symlink_loop_as_model_is_a_usage_error(inputs):
    loop = inputs / "loop"
    loop.symlink_to(inputs / "loop")
    result = run_cli("classify", inputs / "ok.jsonl", "--model", loop, "-o", inputs / "out.jsonl")
    assert result.exit_code == 2 and "loop" in result.stderr and not (inputs / "out.jsonl").exists()


@pytest.mark.parametrize("cache", ["{tmp}", "{tmp}/m", "{tmp}/ok.jsonl"])
def test_a_compiled_trees_cache_around_or_at_an_input_is_refused(inputs, monkeypatch, cache):
    """The cache is an output of every run that classifies: a cache folder holding the logs or the model,
    or at the logs' path, would be written over them."""
    monkeypatch.setenv("FPI_CACHE_DIR", cache.format(tmp=inputs))
    before = _digests(inputs)
    result = run_cli("classify", inputs / "ok.jsonl", "--model", inputs / "m", "--predictor", "native", "-o", "-")
    assert result.exit_code == 2 and "the compiled-trees cache" in result.stderr and "FPI_CACHE_DIR" in result.stderr
    assert _digests(inputs) == before
