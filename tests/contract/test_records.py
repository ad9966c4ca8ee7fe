"""The classified-records contract (records-v1): schema from code, records that meet it,
and reading back every format to the same records."""

import json

import jsonschema
import pytest

from conftest import ROOT, run_cli
from fpi.contract.records import COLUMN_NAMES, SCHEMA, records_json_schema
from fpi.io.records_files import read_records
from fpi.io.sniff import is_classified


def test_shipped_records_schema_is_the_generated_one():
    shipped = json.loads((ROOT / "fpi" / "schemas" / "records-v1.schema.json").read_text())
    assert shipped == records_json_schema()


@pytest.mark.slow
def test_classify_output_meets_the_contract(fixture_traces, tmp_path):
    out = tmp_path / "r.jsonl"
    assert run_cli("classify", fixture_traces, "--explain", "-o", out).exit_code == 0
    validator = jsonschema.Draft202012Validator(records_json_schema())
    lines = out.read_text().splitlines()
    for line in lines[:300]:
        validator.validate(json.loads(line))
    assert tuple(json.loads(lines[0])) == COLUMN_NAMES
    bad = json.loads(lines[0]) | {"failure_point": "tts"}
    assert not validator.is_valid(bad)


@pytest.mark.slow
def test_every_format_reads_back_to_the_contract_dtypes(fixture_traces, tmp_path):
    frames = {}
    for suffix in ("jsonl", "csv", "parquet"):
        path = tmp_path / f"r.{suffix}"
        assert run_cli("classify", fixture_traces, "--explain", "-o", path).exit_code == 0
        assert is_classified(path) and not is_classified(fixture_traces)
        frames[suffix] = read_records(path)
    jsonl, parquet = frames["jsonl"], frames["parquet"]
    for name in ("turn_id", "failure_point", "model_failure_point", "confidence", "rule", "explanation", *("timestamp", "intent")):
        assert parquet.schema[name] == SCHEMA[name], name
        assert parquet[name].equals(jsonl[name]), name
    assert frames["csv"]["failure_point"].equals(jsonl["failure_point"])
