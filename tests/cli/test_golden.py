"""Every normal CLI output, byte for byte, against tests/golden/ (rewritten by
`python scripts/make_golden.py` after a deliberate change)."""

import pytest

from conftest import run_cli
from golden_cases import CASES, GOLDEN, outputs, prepare_records, scratch


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    where = tmp_path_factory.mktemp("golden") / "work"
    with scratch(where):
        prepare_records(run_cli)
    return where


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_output_is_byte_identical_to_golden(case, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    for name, data in outputs(case, run_cli(*case.args)).items():
        expected = (GOLDEN / name).read_bytes()
        assert data == expected, f"{name} differs from tests/golden/{name}; if intended, run scripts/make_golden.py"
