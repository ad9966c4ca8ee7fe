"""OpenTelemetry spans in and out: OTLP/JSON as the Collector's file exporter writes it (one
`ExportTraceServiceRequest` a line, or one a file), turned into one row per turn span for a
mapping to read; and the same spans written back with fpi's verdict on each turn span."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl

from fpi.contract.atomic_files import atomic_write_bytes
from fpi.contract.errors import TraceError, UsageError
from fpi.io.checks import refuse_lone_surrogates
from fpi.io.mapping import Mapping, Selector
from fpi.io.read_result import LoadResult
from fpi.io.span_exchanges import exchanges

_STATUS: dict[int | str, str] = {0: "unset", 1: "ok", 2: "error", "STATUS_CODE_UNSET": "unset", "STATUS_CODE_OK": "ok", "STATUS_CODE_ERROR": "error"}
_KIND: dict[int | str, str] = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
KEY_COLUMN = "_otlp_key"



@dataclass(slots=True)
class Span:
    line: int
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    start: int
    end: int
    status: str
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    children: list[Span] = field(default_factory=list)
    parent: Span | None = None

    @property
    def key(self) -> str:
        return f"{self.trace_id}/{self.span_id}"

    def fact(self, name: str) -> Any:
        """`@name`, `@status` ... : what every span has besides its attributes."""
        return {
            "@name": self.name, "@status": self.status, "@status_message": self.status_message or None,
            "@span_id": self.span_id, "@trace_id": self.trace_id, "@start": self.start, "@end": self.end,
            "@duration_ms": (self.end - self.start) / 1e6 if self.end and self.start else None, "@kind": self.kind,
        }.get(name)

    def value(self, attribute: str) -> Any:
        return self.fact(attribute) if attribute.startswith("@") else self.attributes.get(attribute)


def _get(obj: dict, camel: str) -> Any:
    """OTLP/JSON uses lowerCamelCase; protobuf's own JSON printer can keep the proto names."""
    if camel in obj:
        return obj[camel]
    snake = "".join("_" + ch.lower() if ch.isupper() else ch for ch in camel)
    return obj.get(snake)


def any_value(value: Any) -> Any:
    """An OTLP `AnyValue` as a plain value (int64 arrives as a string in JSON)."""
    if not isinstance(value, dict) or not value:
        return None
    kind, inner = next(iter(value.items()))
    if kind in ("stringValue", "string_value"):
        return inner if isinstance(inner, str) else json.dumps(inner)
    if kind in ("boolValue", "bool_value"):
        return bool(inner)
    if kind in ("intValue", "int_value"):
        return int(inner) if isinstance(inner, int | str) and not isinstance(inner, bool) else None
    if kind in ("doubleValue", "double_value"):
        number = float(inner) if isinstance(inner, int | float | str) and not isinstance(inner, bool) else None
        return number if number is not None and math.isfinite(number) else None
    if kind in ("arrayValue", "array_value"):
        return [any_value(v) for v in _objects((inner or {}).get("values") if isinstance(inner, dict) else None, "arrayValue")]
    if kind in ("kvlistValue", "kvlist_value"):
        return attributes(_objects((inner or {}).get("values") if isinstance(inner, dict) else None, "kvlistValue"))
    if kind in ("bytesValue", "bytes_value"):
        return inner
    return None


def attributes(items: list | None) -> dict[str, Any]:
    return {str(item["key"]): any_value(item.get("value")) for item in items or [] if isinstance(item, dict) and "key" in item}


def _hex_id(value: Any) -> str:
    """Trace and span ids as lowercase hex: OTLP/JSON writes hex; protobuf's JSON printer, base64."""
    if not isinstance(value, str) or not value:
        return ""
    if all(ch in "0123456789abcdefABCDEF" for ch in value) and len(value) in (16, 32):
        return value.lower()
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return value


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:40]} is out of range for a double")
    return number


def _not_json(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _request(text: str) -> Any:
    """One JSON document of the export, refused (ValueError) when it holds what JSON cannot carry back
    out: a number beyond a double (`1e999`), NaN or Infinity, or an unpaired surrogate (`\\ud800`)."""
    document = json.loads(text, parse_float=_finite, parse_constant=_not_json)
    refuse_lone_surrogates(document, text)
    return document


def _requests(data: bytes, label: str) -> tuple[list[tuple[int, dict]], list[tuple[int, str, str]], bool]:
    """(line, request) pairs, the lines that are not requests, and whether the file is one request."""
    text = data.decode("utf-8-sig", errors="replace")
    try:
        whole = _request(text)
        if isinstance(whole, dict):
            return [(1, whole)], [], True
    except (ValueError, RecursionError):
        pass
    good, bad = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            request = _request(line)
        except (ValueError, RecursionError) as exc:
            bad.append((number, line, f"malformed JSON: {exc}"))
            continue
        if not isinstance(request, dict) or _get(request, "resourceSpans") is None:
            bad.append((number, line, "expected an OTLP ExportTraceServiceRequest object with resourceSpans"))
            continue
        good.append((number, request))
    return good, bad, False


def _time(raw: dict, key: str) -> int:
    value = _get(raw, key)
    if value in (None, ""):
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit() or int(value) >= 2**63:
        raise ValueError(f"{key}: expected Unix nanoseconds (before the year 2262), got {json.dumps(value)[:40]}")
    return int(value)


def _objects(value: Any, where: str) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError(f"{where}: expected a list of objects")
    return value


def _spans_of(number: int, request: dict) -> list[Span]:
    """The spans of one request; ValueError names the first thing that is not OTLP."""
    spans = []
    for resource_spans in _objects(_get(request, "resourceSpans"), "resourceSpans"):
        resource_object = _get(resource_spans, "resource") or {}
        if not isinstance(resource_object, dict):
            raise ValueError("resource: expected an object")
        resource = attributes(_objects(resource_object.get("attributes"), "resource.attributes"))
        for scope_spans in _objects(_get(resource_spans, "scopeSpans"), "scopeSpans"):
            for raw in _objects(_get(scope_spans, "spans"), "spans"):
                status = _get(raw, "status") or {}
                if not isinstance(status, dict):
                    raise ValueError("status: expected an object")
                code = _get(status, "code") or 0
                kind = _get(raw, "kind") or 0
                spans.append(Span(
                    line=number, trace_id=_hex_id(_get(raw, "traceId")), span_id=_hex_id(_get(raw, "spanId")),
                    parent_id=_hex_id(_get(raw, "parentSpanId")), name=str(_get(raw, "name") or ""),
                    kind=_KIND.get(kind, str(kind)) if isinstance(kind, int | str) else "unspecified",
                    start=_time(raw, "startTimeUnixNano"), end=_time(raw, "endTimeUnixNano"),
                    status=_STATUS.get(code, "unset") if isinstance(code, int | str) else "unset",
                    status_message=str(_get(status, "message") or ""),
                    attributes=attributes(_objects(_get(raw, "attributes"), "attributes")), resource=resource))
    return spans


def read_spans(data: bytes, label: str) -> tuple[list[Span], list[tuple[int, str, str]]]:
    """Every span of the file, linked to its parent and children whatever order they came in. A request
    that is not OTLP as the exporter writes it is a bad line, with what is wrong."""
    requests, bad, _ = _requests(data, label)
    spans: list[Span] = []
    lines = data.decode("utf-8-sig", errors="replace").split("\n")
    for number, request in requests:
        try:
            spans += _spans_of(number, request)
        except (ValueError, TypeError, AttributeError, RecursionError) as exc:
            raw = lines[number - 1] if len(requests) > 1 or number <= len(lines) else ""
            bad.append((number, raw, f"not an OTLP trace request: {exc}"))
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    for span in spans:
        parent = by_id.get((span.trace_id, span.parent_id)) if span.parent_id else None
        if parent is not None and parent is not span:
            span.parent = parent
            parent.children.append(span)
    for span in spans:
        span.children.sort(key=lambda s: (s.start, s.line))
    return spans, bad


def _listed(value: str | list[str] | None) -> tuple[str, ...]:
    return () if value is None else (value,) if isinstance(value, str) else tuple(value)


def _matches(span: Span, selector: Selector) -> bool:
    """A span the selector picks: one of its names or name prefixes (either), its attribute, its status."""
    if selector.status is not None and span.status != selector.status:
        return False
    names, prefixes = _listed(selector.name), _listed(selector.name_prefix)
    if (names or prefixes) and span.name not in names and not span.name.startswith(prefixes):
        return False
    if selector.attribute is not None:
        if selector.attribute not in span.attributes:
            return False
        if selector.equals is not None and span.attributes[selector.attribute] != selector.equals:
            return False
    return True


def _below(turn: Span, is_turn: set[int], members: Sequence[Span] = ()) -> list[Span]:
    """The turn's descendants in start order, not entering another turn's spans; with the spans that
    answer it and theirs (`answers`)."""
    found: list[Span] = list(members)  # a reply no turn span precedes is its own turn span, and its own answer
    stack = list(reversed(turn.children)) + [child for m in members if m is not turn for child in reversed(m.children)]
    while stack:
        span = stack.pop()
        if id(span) in is_turn:
            continue
        found.append(span)
        stack.extend(reversed(span.children))
    return sorted(found, key=lambda s: (s.start, s.line))


def _above(turn: Span) -> list[Span]:
    found: list[Span] = []
    span = turn.parent
    while span is not None and len(found) < 1000:
        found.append(span)
        span = span.parent
    return found


def _turn_spans(spans: list[Span], mapping: Mapping) -> list[Span]:
    if mapping.turn == "trace":
        roots: dict[str, Span] = {}
        for span in spans:
            if span.parent is None and (span.trace_id not in roots or span.start < roots[span.trace_id].start):
                roots[span.trace_id] = span
        return sorted(roots.values(), key=lambda s: (s.line, s.start))
    if not isinstance(mapping.turn, Selector):
        raise TraceError([f"{mapping.source}: OpenTelemetry input needs `spans: turn:` (which spans are turns)"])
    selector = mapping.turn
    return sorted((s for s in spans if _matches(s, selector)), key=lambda s: (s.line, s.start))


def _column(values: list[Any]) -> pl.Series:
    """Values of mixed JSON types become text, so one odd span never breaks a column."""
    kinds = {type(v) for items in values for v in items if v is not None}
    if kinds <= {bool}:
        inner: pl.DataType = pl.Boolean()
    elif kinds <= {int} and kinds:
        inner = pl.Int64()
    elif kinds <= {int, float} and kinds:
        inner = pl.Float64()
    else:
        inner = pl.String()
        values = [[v if isinstance(v, str) or v is None else json.dumps(v) if isinstance(v, list | dict) else
                   str(v).lower() if isinstance(v, bool) else str(v) for v in items] for items in values]
    return pl.Series(values, dtype=pl.List(inner))


def _read_turn(turn: Span, mapping: Mapping, wanted: dict[str, set[str]], columns: dict[str, list[list[Any]]],
               below_of: Callable[[], list[Span]]) -> None:
    """One turn's values of every `selector:attribute` the mapping reads, appended to `columns`."""
    below: list[Span] | None = None
    above: list[Span] | None = None
    for selector, names in sorted(wanted.items()):
        if selector == "turn" or selector == "trace":
            chosen = [turn]
        elif selector == "resource":
            for name in sorted(names):
                columns[f"resource:{name}"].append([turn.resource.get(name)])
            continue
        else:
            spec = mapping.select.get(selector)
            if spec is None:
                raise TraceError([f"{mapping.source}: selector {selector!r} is used but not defined under spans/select"])
            if spec.ancestor:
                above = above if above is not None else _above(turn)
                chosen = [s for s in above if _matches(s, spec)]
            else:
                below = below if below is not None else below_of()
                chosen = [s for s in below if _matches(s, spec)]
        for name in sorted(names):
            if selector == "trace":
                values = [turn.trace_id] if name == "@trace_id" else []
            else:
                values = [v for s in chosen if (v := s.value(name)) is not None]
            columns[f"{selector}:{name}"].append(values)


def turn_rows(data: bytes, label: str, mapping: Mapping) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    """One row per turn span: a list column `selector:attribute` for each one the mapping reads (values
    of the matching spans, in start order), `line` (of the request holding the turn span), `raw`, and the
    turn span's key for write-back."""
    spans, bad = read_spans(data, label)
    turns = _turn_spans(spans, mapping)
    if not turns:
        seen = sorted({s.name for s in spans})
        raise TraceError([f"{label}: no turn spans found by {mapping.source} (spans/turn: {mapping.turn}); "
                          f"span names seen: {', '.join(seen[:20]) or 'none'}"])
    members: dict[int, list[Span]] = {}
    if mapping.answers is not None:
        turns, members = exchanges(spans, turns, mapping.answers, _matches)
    is_turn = {id(t) for t in turns}
    wanted = mapping.span_references()
    columns: dict[str, list[list[Any]]] = defaultdict(list)
    for turn in turns:
        _read_turn(turn, mapping, wanted, columns, partial(_below, turn, is_turn, members.get(id(turn), [])))
    frame = pl.DataFrame([_column(values).alias(name) for name, values in sorted(columns.items())]) if columns else pl.DataFrame()
    frame = frame.with_columns(
        pl.Series("line", [t.line for t in turns], dtype=pl.UInt32),
        pl.Series(KEY_COLUMN, [t.key for t in turns], dtype=pl.String),
    )
    raw = frame.select(pl.struct(pl.all().exclude("line")).struct.json_encode().alias("raw"))
    return frame.with_columns(raw["raw"]), bad


# ------------------------------------------------------------------ write-back

def _attribute(key: str, value: Any) -> dict:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    if isinstance(value, list):
        return {"key": key, "value": {"arrayValue": {"values": [_attribute("", v)["value"] for v in value]}}}
    return {"key": key, "value": {"stringValue": str(value)}}


def write_back(data: bytes, label: str, verdicts: dict[str, dict[str, Any]], path: str | Path) -> int:
    """The input's spans, unchanged but for the verdict attributes on each classified turn span
    (`fpi.failure_point`, `fpi.confidence`, `fpi.rule`, `fpi.reasons`); returns how many were marked."""
    requests, _, whole = _requests(data, label)
    marked = 0
    out = []
    for _, request in requests:
        for resource_spans in _get(request, "resourceSpans") or []:
            for scope_spans in _get(resource_spans, "scopeSpans") or []:
                for span in _get(scope_spans, "spans") or []:
                    key = f"{_hex_id(_get(span, 'traceId'))}/{_hex_id(_get(span, 'spanId'))}"
                    verdict = verdicts.get(key)
                    if verdict is None:
                        continue
                    kept = [a for a in span.get("attributes") or [] if not str(a.get("key", "")).startswith("fpi.")]
                    span["attributes"] = kept + [_attribute(k, v) for k, v in verdict.items() if v is not None and v != []]
                    marked += 1
        out.append(json.dumps(request, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
    atomic_write_bytes(path, ("\n".join(out) + "\n").encode("utf-8") if not whole else (out[0] + "\n").encode("utf-8"))
    return marked


class SpanVerdicts:
    """Where records go when the output is named like spans (`x.otlp.json`): the input's spans, written
    back with each turn span's verdict (failure point, confidence, deciding rule, reasons). A records
    sink of `fpi.engines.plan`; it needs the input as the readers read it, through a span mapping."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.marked = 0  # turn spans given a verdict
        self._verdicts: dict[str, dict[str, Any]] = {}
        self._spans: bytes = b""
        self._source = ""
        self._keys = pl.DataFrame()

    def start(self, read: LoadResult | None) -> None:
        if read is None or read.otlp is None:
            raise UsageError(f"{self.path}: spans can be written back only for OpenTelemetry input; name the "
                             "records .jsonl, .csv or .parquet")
        self._spans, self._source = read.otlp, read.source
        self._keys = read.turns.select("turn_id", KEY_COLUMN)

    def write(self, records: pl.DataFrame) -> None:
        reasons = pl.col("explanation").struct.field("features").list.eval(pl.element().struct.field("name"))
        rows = records.join(self._keys, on="turn_id", how="left", maintain_order="left").select(
            KEY_COLUMN,
            pl.col("failure_point").alias("fpi.failure_point"),
            pl.col("confidence").alias("fpi.confidence"),
            pl.col("rule").alias("fpi.rule"),
            (reasons if "explanation" in records.columns else pl.lit(None, pl.List(pl.String))).alias("fpi.reasons"))
        self._verdicts.update((row.pop(KEY_COLUMN), row) for row in rows.to_dicts())

    def finish(self, empty: pl.DataFrame | None) -> None:
        self.marked = write_back(self._spans, self._source, self._verdicts, self.path)

    def discard(self) -> None:
        """Nothing is written before `finish`."""


def is_otlp_path(path: str | Path | None) -> bool:
    """Output named like spans (`x.otlp.json`, `x.otlp.jsonl`) gets the spans back, with verdicts."""
    return path is not None and ".otlp." in Path(path).name


__all__ = ["KEY_COLUMN", "Span", "SpanVerdicts", "is_otlp_path", "read_spans", "turn_rows", "write_back"]
