"""Hypothesis strategies for tests of code that reads or writes fpi traces, yours or ours.

    from hypothesis import given
    from fpi.testing import sessions

    @given(sessions())
    def test_my_exporter(turns): ...

Every drawn turn is valid trace format v1 (`fpi.contract.trace_format`); `as_loaded` says what
`fpi.load_traces` returns for it. Needs the `hypothesis` package (fpi's dev extra)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import strategies as st

from fpi.contract.trace_format import TURN_FIELDS, Field

_text = st.text(max_size=12)
_score = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def field_values(field: Field) -> st.SearchStrategy:
    """Valid values of one trace field (objects and arrays with valid members)."""
    if field.enum:
        return st.sampled_from(field.enum)
    if field.name == "timestamp":
        return st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1)).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S") + "Z")
    if field.kind == "string":
        return _text
    if field.kind == "integer":
        return st.integers(min_value=0, max_value=10**6)
    if field.kind == "number":
        return _score if field.maximum == 1.0 else st.floats(min_value=0, max_value=1e7, allow_nan=False)
    if field.kind == "boolean":
        return st.booleans()
    members = objects(field.fields)
    return st.lists(members, max_size=3) if field.kind == "array" else members


def objects(fields: tuple[Field, ...]) -> st.SearchStrategy[dict]:
    """Objects with every required field and any of the optional ones (or null)."""
    required = {f.name: field_values(f) for f in fields if f.required}
    optional = {f.name: st.one_of(st.none(), field_values(f)) for f in fields if not f.required}
    return st.fixed_dictionaries(required, optional=optional)


def turns() -> st.SearchStrategy[dict]:
    """One valid turn as a JSON-able dict; ids are drawn freely."""
    return objects(TURN_FIELDS)


def sessions(*, min_turns: int = 1, max_turns: int = 6, session_id: str = "s") -> st.SearchStrategy[list[dict]]:
    """The turns of one session: unique turn ids `t0, t1, ...`, turn_index in order."""
    def number(drawn: list[dict]) -> list[dict]:
        return [{**t, "turn_id": f"t{i}", "session_id": session_id, "turn_index": i} for i, t in enumerate(drawn)]
    return st.lists(turns(), min_size=min_turns, max_size=max_turns).map(number)


def any_json(max_leaves: int = 6) -> st.SearchStrategy[Any]:
    """Any JSON value (no NaN or infinity): for fields set to what they should not hold."""
    return st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False, allow_infinity=False) | _text,
                        lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
                        max_leaves=max_leaves)


def as_loaded(turn: dict, fields: tuple[Field, ...] = TURN_FIELDS) -> dict:
    """What the loader returns for a drawn turn: absent fields as null, in the format's order."""
    out: dict = {}
    for f in fields:
        value = turn.get(f.name)
        if value is not None and f.kind == "object":
            value = as_loaded(value, f.fields)
        elif value is not None and f.kind == "array":
            value = [as_loaded(v, f.fields) for v in value]
        out[f.name] = value
    return out
