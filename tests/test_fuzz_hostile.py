"""Property tests of the second round of hostile input, one class each: CSV cells of any text or
bytes, JSON Lines with any escapes, numbers beyond a double in spans, spreadsheet and terminal
text, and where outputs lie against inputs. Each draws its class and holds: a result or an error
of fpi's own family (never a crash), nothing read lost, nothing written that cannot be read back."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fpi.cli.output_guard import guard_paths
from fpi.contract.errors import FpiError, UsageError
from fpi.contract.spreadsheet_cells import neutralised, restored
from fpi.io.otlp import write_back
from fpi.io.traces import read_traces
from fpi.presentation.terminal import printable

FUZZ = settings(max_examples=60, deadline=3000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MAPPING = "fields:\n  turn_id: id\n  session_id: session\n  turn_index: idx\n  asr.text: text\n"
HOSTILE_TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(list("=+-@\t\r\n\"',\x1b\x07\x9b\u202e$")), max_size=40)


@FUZZ
@given(cells=st.lists(st.binary(max_size=30) | HOSTILE_TEXT.map(str.encode), min_size=1, max_size=12))
@example(cells=[b"caf\xe9", b"x" * 300_000, b'a"b', b"\xed\xa0\x80"])
@pytest.mark.slow
def test_csv_cells_of_any_bytes_are_read_or_refused_never_lost(tmp_path_factory, cells):
    folder = tmp_path_factory.mktemp("csv")
    (folder / "m.yaml").write_text(MAPPING)
    quoted = [b'"' + cell.replace(b'"', b'""') + b'"' for cell in cells]
    rows = [b"id,session,idx,text"] + [f"t{n},s,{n},".encode() + cell for n, cell in enumerate(quoted)]
    data = b"\n".join(rows) + b"\n"
    try:
        result = read_traces(data, name="fuzz.csv", mapping=folder / "m.yaml")
    except FpiError:
        return
    assert result.read == result.accepted + len(result.rejected)
    assert all(r.problems for r in result.rejected)


@FUZZ
@given(text=st.text(max_size=30), escape=st.sampled_from(["\\ud800", "\\udfff", "\\ud83d\\ude00", "\\u0000", "\\u001b"]))
@pytest.mark.slow
def test_json_lines_with_any_escape_are_read_or_named_by_line(text, escape):
    line = json.dumps({"turn_id": "a", "session_id": "s", "turn_index": 0, "asr": {"text": text}})
    data = (line.replace('"text": "', '"text": "' + escape, 1) + "\n").encode()
    result = read_traces(data, name="fuzz.jsonl")
    assert result.read == 1 == result.accepted + len(result.rejected)
    for rejected in result.rejected:
        assert rejected.line == 1 and rejected.messages()
    if result.accepted:
        result.turns.write_ndjson()  # what was accepted can be written


@FUZZ
@given(exponent=st.integers(300, 5000), sign=st.sampled_from(["", "-"]))
def test_numbers_beyond_a_double_in_spans_never_come_back_as_non_json(tmp_path_factory, exponent, sign):
    value = f"{sign}1e{exponent}"
    request = ('{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c",'
               '"spanId":"b7ad6b7169203331","name":"turn","attributes":[{"key":"x","value":{"doubleValue":' + value + '}}]}]}]}]}')
    out = tmp_path_factory.mktemp("otlp") / "out.otlp.json"
    write_back(request.encode(), "fuzz.otlp.json", {}, out)
    written = [line for line in out.read_text().splitlines() if line]
    assert len(written) == (1 if float(value) not in (float("inf"), float("-inf")) else 0)  # a bad request is not written back
    for line in written:
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} written"))


@FUZZ
@given(values=st.lists(HOSTILE_TEXT | st.none(), min_size=1, max_size=20))
def test_spreadsheet_cells_are_never_formulas_and_read_back_as_written(values):
    frame = pl.DataFrame({"text": values}, schema={"text": pl.String})
    written = neutralised(frame)
    assert not written.filter(pl.col("text").str.contains(r"^[=+\-@\t\r]")).height
    assert restored(pl.read_csv(written.write_csv().encode(), schema={"text": pl.String})).equals(frame)


@FUZZ
@given(text=HOSTILE_TEXT)
def test_terminal_text_holds_no_control_character_but_newline_and_tab(text):
    shown = printable(text)
    assert not [ch for ch in shown if (ord(ch) < 0x20 and ch not in "\n\t") or 0x7f <= ord(ch) < 0xa0
                or 0x202a <= ord(ch) <= 0x202e or 0x2066 <= ord(ch) <= 0x2069]


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.sampled_from(["a", "b", "..", "."]), min_size=1, max_size=4),
       other=st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=3))
def test_an_output_is_refused_exactly_when_it_is_holds_or_lies_in_an_input(tmp_path_factory, parts, other):
    root = tmp_path_factory.mktemp("paths")
    given_input, output = root.joinpath(*other), root.joinpath(*parts)
    near = Path(str(given_input.resolve())), Path(str(output.resolve()))
    overlaps = near[0] == near[1] or near[0] in near[1].parents or near[1] in near[0].parents
    try:
        guard_paths([given_input], [output], folders=(output,))
    except UsageError:
        assert overlaps
        return
    assert not overlaps
