from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest
from hypothesis import settings
from typer.testing import CliRunner

# LightGBM's threads sleep while they wait instead of spinning: on a machine other work also uses (a shared CI
# runner), spinning threads on two cores stall training a hundredfold. Set before LightGBM loads.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
# The CLI's tables go to a pipe here, drawn 200 columns wide unless $COLUMNS says otherwise: so are the goldens. The
# workers of a parallel run (pytest-xdist) start with COLUMNS=80 and LINES=24 in their environment; a test that
# wants a width sets its own.
for _size in ("COLUMNS", "LINES"):
    os.environ.pop(_size, None)

from fpi import FailurePointModel, simulate  # noqa: E402
from fpi.cli import app  # noqa: E402

# Property tests explore the same examples on every run: CI passes or fails on the code, not on the draw.
# To hunt for new counterexamples: pytest --hypothesis-profile explore
settings.register_profile("fpi", derandomize=True, database=None)
settings.register_profile("explore", max_examples=2000)
settings.load_profile("fpi")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


def run_cli(*args: str, input: bytes | str | None = None):
    """Invoke the CLI; a crash (anything but SystemExit) fails the test instead of passing as exit 1."""
    result = CliRunner().invoke(app, ["--debug", *[str(a) for a in args]], input=input, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def turn(**fields) -> dict:
    """A minimal valid turn; keyword arguments replace fields."""
    base = {"turn_id": "t1", "session_id": "s1", "turn_index": 0}
    base.update(fields)
    return base


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session", autouse=True)
def compiled_trees_cache(tmp_path_factory) -> Path:
    """Compiled models go to a folder of the test run, never the user's cache."""
    where = tmp_path_factory.mktemp("compiled-trees")
    os.environ["FPI_CACHE_DIR"] = str(where)
    return where


@pytest.fixture(scope="session")
def small_training_set() -> pl.DataFrame:
    return simulate(6000, seed=11)


@pytest.fixture(scope="session")
def small_model(small_training_set) -> FailurePointModel:
    return FailurePointModel(n_estimators=40, learning_rate=0.2, early_stopping_rounds=10, seed=3).fit(small_training_set)


@pytest.fixture(scope="session")
def fixture_traces() -> Path:
    return FIXTURES / "traces.jsonl"


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for every test that needs one (Java 17, pyspark 4)."""
    pytest.importorskip("pyspark")
    from fpi.engines.spark import session

    started = session("local[2]", "fpi-tests")
    yield started
    started.stop()


def pytest_xdist_make_scheduler(config, log):
    """In a parallel run (pytest-xdist, `-n` in pyproject.toml) the tests on Spark go to one worker as one unit, so
    one Java process starts and warms up; every other test is scheduled on its own, wherever a worker is free.
    (A test on Spark is one whose module or name says spark: one named otherwise still passes, on a Java process
    of its worker's own.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SparkOnOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "spark" if "spark" in nodeid.split("[", 1)[0] else nodeid

    return SparkOnOneWorker(config, log)
