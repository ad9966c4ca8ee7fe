"""Fuzzing every reader: arbitrary bytes and structure-aware mutations give either a result
or an error of fpi's own family, within a deadline; nothing read is lost, and quarantine
keeps each bad line's original bytes. Derandomised in CI (conftest); `pytest
--hypothesis-profile explore tests/test_fuzz.py` hunts for new cases. Every bug found is
pinned as an @example."""

from __future__ import annotations

import json

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fpi.pipeline.conditions import Compiler, ConditionError
from fpi.contract.errors import FpiError
from fpi.reports.gate import policy_from_document
from fpi.io.traces import read_traces
from fpi.contract.metrics import Metrics
from fpi.pipeline.rule_cases import CASES_SCHEMA
from fpi.pipeline.rules import FIELD_TYPES, lint_rules
from fpi.testing import any_json, sessions
from fpi.contract.yaml_documents import read_yaml, schema_problems

FUZZ = settings(deadline=2000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _lines(data: bytes) -> int:
    return sum(1 for line in data.removeprefix(b"\xef\xbb\xbf").split(b"\n") if line.strip())


def _accounted(data: bytes) -> None:
    """read = accepted + quarantined, and every quarantined line holds its original bytes."""
    try:
        result = read_traces(data, name="fuzz.jsonl")
    except FpiError:
        return
    assert result.read == result.accepted + len(result.rejected)
    if result.form == "turn" and data[:2] != b"\x1f\x8b" and data[:4] != b"PAR1":
        assert result.read == _lines(data)
        lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
        for rejected in result.rejected:
            original = lines[rejected.line - 1]
            raw = rejected.raw if isinstance(rejected.raw, bytes) else rejected.raw.encode("utf-8")
            assert raw.rstrip(b"\r") == original.rstrip(b"\r")


@FUZZ
@given(st.binary(max_size=400))
@example(b'[1, 2]\n{"turn_id": "a", "session_id": "s", "turn_index": 0}\n')
@example(b'{"turn_id": "a", "session_id": "s", "turn_index": 0, "asr": ' + b"[" * 5000 + b"]" * 5000 + b"}\n")
@example(b"turn_id,session_id\na,s\n")
def test_any_bytes_are_read_or_refused_and_nothing_is_lost(data):
    _accounted(data)


@FUZZ
@given(sessions(max_turns=4), st.data())
@pytest.mark.slow
def test_mutated_valid_lines_are_accepted_or_quarantined(turns, data):
    lines = [json.dumps(t) for t in turns]
    i = data.draw(st.integers(0, len(lines) - 1))
    mutation = data.draw(st.sampled_from(["cut", "field", "garbage", "duplicate"]))
    if mutation == "cut":
        lines[i] = lines[i][: data.draw(st.integers(0, max(len(lines[i]) - 1, 0)))]
    elif mutation == "field":
        key = data.draw(st.sampled_from(["turn_id", "turn_index", "asr", "nlu", "er", "result", "wake", "timestamp", "label"]))
        lines[i] = json.dumps({**turns[i], key: data.draw(any_json())})
    elif mutation == "garbage":
        lines[i] = data.draw(st.text(max_size=40))
    else:
        lines.append(lines[i])
    _accounted(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.text(max_size=300))
@example("rules:\n  - id: a\n    description: d\n    when: " + "not " * 100 + "x\n    then: {assign: asr}\n")
@example("a: &a [1]\nrules: *a\n")
def test_any_rules_text_gives_rules_or_problems(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("rules") / "r.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        _, problems = lint_rules([path])
    except FpiError:
        return
    assert all(p.file == str(path) and p.code[0] in "YSCR" for p in problems)


@FUZZ
@given(st.one_of(st.text(max_size=300), any_json().map(lambda v: json.dumps(v))))
def test_any_policy_or_rule_cases_text_gives_a_document_or_problems(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("policy") / "p.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    document, problems = read_yaml(path)
    if document is None:
        assert problems
        return
    try:
        policy_from_document(document)
    except FpiError:
        pass
    if document.data is not None:
        schema_problems(document, CASES_SCHEMA)


@FUZZ
@given(st.text(max_size=200))
@example("(" * 100 + "x" + ")" * 100)
def test_any_condition_compiles_or_is_a_condition_error(text):
    try:
        Compiler(FIELD_TYPES).compile(text)
    except ConditionError as exc:
        assert str(exc)


@FUZZ
@given(any_json(max_leaves=12))
@example({"format": "fpi-metrics", "format_version": 1, "defect_rates": {"predicted": {"overall": 0.1}}})
def test_any_metrics_file_content_is_read_or_a_usage_error(value):
    try:
        Metrics.from_json(value, "m.json")
    except FpiError:
        pass


_COLUMN = st.sampled_from([pl.String, pl.Int64, pl.Float64, pl.Boolean])


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["turn_id", "session_id", "turn_index", "timestamp", "locale", "label", "extra"]),
                          _COLUMN), min_size=1, max_size=6, unique_by=lambda c: c[0]),
       st.integers(1, 4), st.data())
def test_any_typed_table_is_read_or_refused(columns, rows, data):
    values = {"turn_id": st.text(max_size=5), "session_id": st.text(max_size=5)}
    frame = pl.DataFrame({name: pl.Series(name, [data.draw({
        pl.String: values.get(name, st.text(max_size=8)), pl.Int64: st.integers(-5, 2**62),
        pl.Float64: st.floats(allow_nan=True), pl.Boolean: st.booleans()}[dtype]) for _ in range(rows)], dtype=dtype)
        for name, dtype in columns})
    try:
        result = read_traces(frame, name="frame")
    except FpiError:
        return
    assert result.read == rows == result.accepted + len(result.rejected)


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_a_model_folder_cut_anywhere_is_a_model_error(tmp_path, cut):
    import shutil

    from fpi.contract.errors import ModelError
    from fpi.pipeline.model import FailurePointModel
    from fpi.pipeline.model_folder import default_model_dir

    where = tmp_path / "m"
    shutil.copytree(default_model_dir(), where)
    for name in ("booster.txt", "model.json"):
        original = (default_model_dir() / name).read_bytes()
        (where / name).write_bytes(original[: int(len(original) * cut)])
        with pytest.raises(ModelError):
            FailurePointModel.load(where)
        (where / name).write_bytes(original)


def test_an_index_beyond_exact_integers_is_a_bad_line_not_a_crash():
    # found by the explore profile: 9.2e18 passed the checks, then failed the cast to Int64
    frame = pl.DataFrame({"turn_id": ["a", "b"], "session_id": ["s", "s"], "turn_index": [0.0, 9.223372036854776e18]})
    result = read_traces(frame, name="frame")
    assert result.accepted == 1 and "expected an integer >= 0 and <= 2^53" in result.problems()[0]


# ---------------------------------------------------------------- mappings and their readers

_CSV_MAPPING = None


def _csv_mapping():
    global _CSV_MAPPING
    if _CSV_MAPPING is None:
        from fpi.io.mapping import Mapping

        _CSV_MAPPING = Mapping(name="fuzz", source="fuzz.yaml", format="csv", order="n", fields={
            "session_id": "call", "asr.text": "text", "asr.confidence": {"from": "score", "scale": [0, 100]},
            "result.status": {"from": "status", "values": {"ok": "success"}}, "feedback.barge_in": "cut",
            "timestamp": {"from": "ts", "time": "unix_ms"}})
    return _CSV_MAPPING


_cell = st.one_of(st.text(max_size=12), st.integers(-10**20, 10**20).map(str), st.floats(allow_nan=True).map(str),
                  st.sampled_from(["", "ok", "true", "no", "1e999", "\"", ",", "\n"]))


@FUZZ
@given(st.lists(st.lists(_cell, min_size=0, max_size=8), max_size=8))
@example([["c", "hello", "50", "ok", "true", "1790000000000", "1"], ["c", "", "x", "", "maybe", "-1e30", "x"]])
@pytest.mark.slow
def test_any_csv_through_a_mapping_is_read_or_refused_and_nothing_is_lost(rows):
    header = "call,text,score,status,cut,ts,n\n"
    body = "".join(",".join(json.dumps(c) if any(ch in c for ch in ',"\n') else c for c in row) + "\n" for row in rows)
    data = (header + body).encode("utf-8")
    try:
        result = read_traces(data, name="fuzz.csv", mapping=_csv_mapping())
    except FpiError:
        return
    assert result.read == result.accepted + len(result.rejected)


@FUZZ
@given(st.binary(max_size=300))
@example(b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "turn", "spanId": "zz", "parentSpanId": "zz"}]}]}]}\n')
@example(b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "turn", "startTimeUnixNano": "x"}]}]}]}\n')
@example(b'{"resourceSpans": 7}\n')
@pytest.mark.slow
def test_any_bytes_as_spans_are_read_or_refused(data):
    for payload in (data, b'{"resourceSpans": [' + data + b"]}\n"):
        try:
            result = read_traces(payload, name="fuzz.otlp.jsonl", mapping="pipecat")
        except FpiError:
            continue
        assert result.read == result.accepted + len(result.rejected)


_span = st.fixed_dictionaries({
    "traceId": st.sampled_from(["0" * 32, "a" * 32, "", "xyz"]), "spanId": st.sampled_from(["1" * 16, "2" * 16, "3" * 16, ""]),
    "parentSpanId": st.sampled_from(["1" * 16, "2" * 16, "", "9" * 16]),
    "name": st.sampled_from(["conversation", "turn", "stt", "llm", "tts", "x"]),
    "startTimeUnixNano": st.one_of(st.integers(0, 2**63).map(str), st.sampled_from(["", "x", "-1"])),
    "status": st.one_of(st.just({}), st.fixed_dictionaries({"code": st.sampled_from([0, 1, 2, 7, "STATUS_CODE_ERROR", None])})),
    "attributes": st.lists(st.fixed_dictionaries({
        "key": st.sampled_from(["transcript", "turn.number", "turn.was_interrupted", "conversation.id", "tool.function_name",
                                "tool.result_status", "gen_ai.operation.name", "text"]),
        "value": any_json(max_leaves=3)}), max_size=4),
})


@FUZZ
@given(st.lists(_span, max_size=8))
@pytest.mark.slow
def test_structured_spans_are_read_or_refused(spans):
    request = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": spans}]}]}
    try:
        result = read_traces(json.dumps(request).encode(), name="fuzz.otlp.jsonl", mapping="pipecat")
    except FpiError:
        return
    assert result.read == result.accepted + len(result.rejected)


@FUZZ
@given(st.one_of(st.text(max_size=300), any_json(max_leaves=10).map(lambda v: json.dumps(v))))
@example("extends: pipecat\nfields:\n  asr.confidence: {from: 'stt:x', scale: [0, 0]}\n")
@example("fields:\n  asr.text: {first_of: []}\n")
@example("a: &a [1]\nfields: *a\n")
def test_any_mapping_text_gives_a_mapping_or_problems(tmp_path_factory, text):
    from fpi.io.mapping import MappingError, load_mapping

    path = tmp_path_factory.mktemp("m") / "mapping.yaml"
    path.write_text(text)
    try:
        mapping = load_mapping(path)
    except MappingError as exc:
        assert exc.problems and all(p.startswith(str(path)) or p.startswith("fpi:") for p in exc.problems)
        return
    try:  # a mapping that loads applies to a small file, or says why not
        read_traces(b'{"session_id": "s", "text": "hi"}\n', name="x.jsonl", mapping=mapping)
    except FpiError:
        pass


@pytest.mark.slow
def test_hostile_inputs_stay_within_memory_and_time(tmp_path):
    """Under a 4 GB address-space limit and a deadline, in a fresh process: a billion-laughs rules file and
    mapping, JSON nested a million deep, a condition of 100k parentheses, a 50 MB line; each is refused with
    exit 2 (or read, for the long line), never a crash, a hang or an allocation failure."""
    import subprocess
    import sys

    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(20))
    (tmp_path / "laughs.yaml").write_text(laughs)
    (tmp_path / "deep.jsonl").write_text('{"turn_id": "a", "session_id": "s", "turn_index": 0, "asr": ' + "[" * 1_000_000 + "\n")
    (tmp_path / "paren.yaml").write_text("rules:\n  - id: deep\n    description: d\n    when: " + "(" * 100_000 + "x" + ")" * 100_000
                                        + "\n    then: {assign: asr}\n")
    (tmp_path / "long.jsonl").write_text(json.dumps({"turn_id": "a", "session_id": "s", "turn_index": 0,
                                                     "asr": {"text": "x" * 50_000_000}}) + "\n")
    traces = str(tmp_path / "long.jsonl")
    cases = [
        (["rules", "lint", str(tmp_path / "laughs.yaml")], {2}),
        (["validate", traces, "--mapping", str(tmp_path / "laughs.yaml")], {2}),
        (["validate", str(tmp_path / "deep.jsonl")], {2}),
        (["rules", "lint", str(tmp_path / "paren.yaml")], {2}),
        (["validate", traces], {0}),
    ]
    limit = "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); " \
            "sys.argv = ['fpi'] + sys.argv[1:]; runpy.run_module('fpi', run_name='__main__')"
    for args, codes in cases:
        done = subprocess.run([sys.executable, "-c", limit, *args], capture_output=True, timeout=120)
        assert done.returncode in codes, (args, done.returncode, done.stderr[-500:])
        assert b"Traceback" not in done.stderr and b"MemoryError" not in done.stderr, args
