"""Faults of the user's machine (a full disk, a read-only folder, special files, oversized or looping
configuration) are exit 2 with one line naming the path and the cause, never "internal error" (70),
and leave no temporary file behind."""

import errno
import os
import shutil
import tempfile

import polars as pl
import pyarrow as pa
import pytest

from conftest import FIXTURES, run_cli


def _disk_full(*args, **kwargs):
    raise OSError("No space left on device (os error 28)")  # as polars says it


def _disk_full_errno(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def full_disk(monkeypatch):
    """Every way fpi writes a file fails as a full disk does."""
    for method in ("write_ndjson", "write_csv", "write_ipc", "write_parquet"):
        monkeypatch.setattr(pl.DataFrame, method, _disk_full)
    monkeypatch.setattr("pathlib.Path.write_bytes", _disk_full_errno)
    monkeypatch.setattr(pa.ipc, "new_file", _disk_full_errno)  # the streamed engine's spill files


@pytest.fixture
def traces(tmp_path):
    """Clean traces, and the same with a broken line (bad.jsonl) beside them."""
    path = tmp_path / "in" / "traces.jsonl"
    path.parent.mkdir()
    shutil.copy(FIXTURES / "traces.jsonl", path)
    lines = path.read_text().splitlines()
    (path.parent / "bad.jsonl").write_text("\n".join([*lines[:1200], '{"turn_id": "broken",', *lines[1200:]]) + "\n")
    return path


def _leftovers(folder):
    return [p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".old"))]


@pytest.mark.parametrize(("args", "named"), [
    (["classify", "{t}", "-o", "{o}/records.jsonl"], "records.jsonl"),
    (["classify", "{t}", "-o", "{o}/records.csv"], "records.csv"),
    (["classify", "{t}", "--batch-turns", "1000", "-o", "{o}/records.jsonl"], "set TMPDIR"),
    (["validate", "{b}", "--on-error", "skip", "--quarantine", "{o}/quarantined.jsonl"], "quarantined.jsonl"),
    (["report", "{t}", "--format", "markdown", "-o", "{o}/report.md"], "report.md"),
    (["sample", "{t}", "-n", "5", "-o", "{o}/sheet.csv"], "sheet.csv"),
])
def test_a_full_disk_is_exit_2_naming_the_file(traces, tmp_path, full_disk, args, named):
    out = tmp_path / "out"
    out.mkdir()
    before = traces.read_bytes()
    result = run_cli(*[a.format(t=traces, b=traces.parent / "bad.jsonl", o=out) for a in args])
    assert result.exit_code == 2, result.stderr
    assert "No space left on device" in result.stderr and named in result.stderr and "internal error" not in result.stderr
    assert _leftovers(tmp_path) == [] and traces.read_bytes() == before


def test_a_full_disk_in_label_merge_is_exit_2(tmp_path, monkeypatch):
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("turn_id,label\nt00000001,correct\n")
    monkeypatch.setattr("pathlib.Path.write_bytes", _disk_full_errno)
    result = run_cli("label", "merge", FIXTURES / "traces.jsonl", sheet, "-o", tmp_path / "labeled.jsonl")
    assert result.exit_code == 2 and "labeled.jsonl: No space left on device" in result.stderr
    assert _leftovers(tmp_path) == []


def test_a_read_only_output_folder_is_exit_2(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    result = run_cli("report", FIXTURES / "traces.jsonl", "--format", "json", "-o", tmp_path / "report.json")
    assert result.exit_code == 2 and "report.json" in result.stderr and "Read-only file system" in result.stderr


@pytest.mark.parametrize("option", ["--mapping", "--policy", "--rules"])
@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "huge"])
def test_special_or_huge_configuration_files_are_refused_at_once(tmp_path, option, special):
    if special == "fifo":
        path = tmp_path / "config.yaml"
        os.mkfifo(path)
    elif special == "huge":
        path = tmp_path / "config.yaml"
        path.write_text("# padding\n" * 700_000)
    else:
        path = special
    policy = tmp_path / "policy.yaml"
    policy.write_text("model:\n  macro_f1: 0.1\n")
    args = {"--mapping": ["classify", FIXTURES / "traces.jsonl", "--mapping", path],
            "--policy": ["gate", FIXTURES / "traces.jsonl", "--policy", path],
            "--rules": ["classify", FIXTURES / "traces.jsonl", "--rules", path]}[option]
    result = run_cli(*args)
    assert result.exit_code == 2 and str(path) in result.stderr
    assert ("not a regular file" in result.stderr) if special != "huge" else ("at most" in result.stderr)


def test_an_extends_cycle_through_dotdot_is_named(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "self.yaml").write_text("extends: ../sub/self.yaml\nfields:\n  turn_id: id\n")
    result = run_cli("map", "check", sub / "self.yaml")
    assert result.exit_code == 2 and "extends itself" in result.stderr


@pytest.mark.slow
def test_a_cache_folder_on_a_full_disk_is_not_an_error(tmp_path, monkeypatch, fixture_traces, small_model):
    model = small_model.save(tmp_path / "model")  # few trees: quick to compile
    monkeypatch.setenv("FPI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(os, "replace", lambda *a: _disk_full_errno())
    result = run_cli("classify", fixture_traces, "--model", model, "--predictor", "native")
    assert result.exit_code == 0  # records went to stdout; the cache kept nothing
    assert not list((tmp_path / "cache").glob("*.o"))


def test_special_files_as_traces_model_or_sheet_are_refused_at_once(tmp_path):
    from fpi.pipeline.model_folder import default_model_dir

    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    (model / "booster.txt").unlink()
    os.mkfifo(model / "booster.txt")
    cases = [(["classify", "/dev/zero"], "/dev/zero: not a regular file"),
             (["classify", FIXTURES / "traces.jsonl", "--model", model], "not a model directory"),
             (["label", "merge", FIXTURES / "traces.jsonl", "/dev/zero", "-o", tmp_path / "out.jsonl"], "not a regular file")]
    for args, said in cases:
        result = run_cli(*args)
        assert result.exit_code == 2 and said in result.stderr, args


def _fpi(*args, stdout):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "fpi", *map(str, args)], stdout=stdout, stderr=subprocess.PIPE,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=300)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.slow
def test_records_to_a_full_stdout_are_exit_2_and_a_closed_pipe_ends_quietly(tmp_path):
    import subprocess

    with open("/dev/full", "wb") as full:
        result = _fpi("classify", FIXTURES / "traces.jsonl", stdout=full)
    assert result.returncode == 2 and b"error: stdout: No space left on device" in result.stderr
    reader = subprocess.Popen(["head", "-c", "10"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    result = _fpi("classify", FIXTURES / "traces.jsonl", stdout=reader.stdin)
    reader.stdin.close()
    reader.wait()
    assert result.returncode == 141 and b"error" not in result.stderr and b"Traceback" not in result.stderr
