"""SIGINT and SIGTERM in the middle of writing: exit 130 or 143 with one line, no temporary file left,
no Rust panic text, whichever engine runs."""

import os
import signal
import tempfile

import polars as pl
import pytest

from conftest import run_cli


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("engine_args", [[], ["--batch-turns", "1000"]], ids=["memory", "streamed"])
def test_an_interrupt_while_writing_leaves_nothing(fixture_traces, tmp_path, monkeypatch, signum, engine_args):
    write = pl.DataFrame.write_ndjson

    class Interrupting:
        """The temporary file, interrupted as polars writes into it (from Rust, through Python)."""

        def __init__(self, target):
            self.target = target

        def write(self, data):
            os.kill(os.getpid(), signum)
            return self.target.write(data)

        def flush(self):
            return self.target.flush()

    def interrupted_write(frame, target, *args, **kwargs):
        return write(frame, Interrupting(target), *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_ndjson", interrupted_write)
    spills = tmp_path / "spills"
    spills.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spills))
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("classify", fixture_traces, *engine_args, "-o", out / "records.jsonl")
    assert result.exit_code == 128 + signum
    assert result.stderr.strip().splitlines()[-1] == (
        f"interrupted: by {signal.Signals(signum).name}; temporary files removed, nothing written")
    assert "panicked" not in result.stderr and list(out.iterdir()) == [] and list(spills.iterdir()) == []


def test_an_interrupt_while_polars_runs_fpis_python_exits_130_with_nothing_left(fixture_traces, tmp_path, monkeypatch):
    from fpi.pipeline import features

    cpdist = features.process.cpdist

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives inside polars' call of fpi's similarity
        return cpdist(*args, **kwargs)

    monkeypatch.setattr(features.process, "cpdist", interrupted)
    result = run_cli("classify", fixture_traces, "-o", tmp_path / "records.jsonl")
    assert result.exit_code == 130 and "panic" not in result.stderr.lower() and list(tmp_path.iterdir()) == []
