"""Mappings: how a team's own records (other field names, CSV columns, OpenTelemetry spans) become
trace format v1. A mapping is a YAML file a person writes and reads; it compiles to polars
expressions, so a mapped file is converted column by column, never row by row."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from fpi.contract.errors import DocumentError, Problem, TraceError
from fpi.contract.trace_format import ER_STATUSES, STAGES, TURN_FIELDS, WRONG_VALUE, Field, FieldProblem, turn_dtype
from fpi.contract.yaml_documents import YamlDocument, parse_yaml, read_yaml, schema_problems

FORMATS = ("jsonl", "csv", "tsv", "parquet", "otlp")
PICKS = ("first", "last", "join", "any", "count")
TIME_UNITS = {"unix_s": 1_000_000, "unix_ms": 1_000, "unix_us": 1, "unix_ns": 0.001}  # to microseconds
ARRAY_TARGETS = {f"{stage.name}.{member.name}": member for stage in TURN_FIELDS if stage.kind == "object"
                 for member in stage.fields if member.kind == "array"}
FEEDBACK = "feedback"
RESOLVED = "er.resolved"  # not a trace field: whether resolution succeeded, for the one entity of a flat column
RESOLVED_DOC = ("whether entity resolution succeeded (true/false, yes/no, 1/0, or resolved, ambiguous, unresolved): the "
                "status of the one entity a flat `er.entities` column gives, or of an entity of its own")


MEANING = "M001"  # the code of a mapping problem its schema cannot see (docs/lint.md)


class MappingError(DocumentError):
    """A mapping file that cannot be used, with every problem found."""


def _leaves() -> dict[str, Field]:
    """Every field a mapping can fill: top-level scalars, object members as `stage.member`, and
    arrays (n-best, slots, entities) as a whole."""
    out: dict[str, Field] = {}
    for f in TURN_FIELDS:
        if f.kind == "object":
            out.update({f"{f.name}.{m.name}": m for m in f.fields})
        else:
            out[f.name] = f
    return out


TARGETS = _leaves()


# ------------------------------------------------------------------ the schema

def _spec_schema() -> dict:
    scalar = {"type": ["string", "number", "boolean", "null"]}
    spec: dict = {
        "type": "object", "additionalProperties": False,
        "description": "Where a trace field comes from, and how its value is converted.",
        "properties": {
            "from": {"type": "string", "description": "a field, column, JSON path (a.b.c) or span attribute (selector:attribute)"},
            "value": {**scalar, "description": "a constant"},
            "first_of": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/source"},
                         "description": "the first of these that is not null"},
            "values": {"type": "object", "additionalProperties": scalar,
                       "description": "their values -> ours (status words, labels, yes/no)"},
            "otherwise": {**scalar, "description": "the value when `values` has no entry (default: keep it)"},
            "absent": {"type": "array", "items": scalar, "minItems": 1,
                       "description": "values that mean nothing was logged (LiveKit's confidence 0 when the STT gives none)"},
            "scale": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
                      "description": "[low, high] of their scale, mapped linearly onto [0, 1]"},
            "multiply": {"type": "number", "description": "multiply by this (seconds -> milliseconds: 1000)"},
            "time": {"type": "string", "description": "unix_s, unix_ms, unix_us, unix_ns, or a strftime format such as %d/%m/%Y %H:%M"},
            "pick": {"enum": list(PICKS), "description": "of several spans or list items: first (default), last, join, any, count"},
            "separator": {"type": "string", "description": "between joined values (default a space)"},
            "fields": {"type": "object", "additionalProperties": {"type": "string"},
                       "description": "for a list: our member name -> their member name"},
        },
        "oneOf": [{"required": ["from"]}, {"required": ["value"]}, {"required": ["first_of"]}],
    }
    return spec


def _selector_schema() -> dict:
    return {
        "type": "object", "additionalProperties": False,
        "description": "Which spans: by name, by an attribute (present, or equal to a value); searched among the "
                       "turn span's descendants, or its ancestors with `ancestor: true`.",
        "properties": {
            "name": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
                     "description": "a span name, or several: any of them"},
            "name_prefix": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
                            "description": "the start of a name, or several (with `name`: either matches)"},
            "attribute": {"type": "string"},
            "equals": {"type": ["string", "number", "boolean"]},
            "status": {"enum": ["unset", "ok", "error"], "description": "only spans with this status"},
            "ancestor": {"type": "boolean"},
        },
        "anyOf": [{"required": ["name"]}, {"required": ["name_prefix"]}, {"required": ["attribute"]}],
    }


def _answers_schema() -> dict:
    return {
        "type": "object", "additionalProperties": False, "required": ["spans"],
        "description": "When no one span holds a turn: spans beside the turn span (the same parent) that answer it "
                       "(LiveKit's agent_turn beside user_turn) join the turn span that started last before them.",
        "properties": {
            "spans": {"$ref": "#/$defs/selector", "description": "the spans that answer a turn"},
            "link": {"type": "string", "description": "an attribute: answer spans that share its value are one answer, "
                                                      "placed by its first span (LiveKit: lk.speech_id)"},
            "during": {"$ref": "#/$defs/selector", "description": "spans beside the turn span that belong to the turn "
                                                                  "whose answer is open when they start (a barge-in)"},
        },
    }


def mapping_json_schema() -> dict:
    """JSON Schema (draft 2020-12) of a mapping file, generated from trace format v1."""
    source = {"oneOf": [{"type": "string"}, {"$ref": "#/$defs/spec"}]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://fpi.dev/schemas/mapping-v1.schema.json",
        "title": "fpi mapping v1: how a team's records become trace format v1",
        "type": "object", "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "extends": {"type": "string", "description": "a shipped mapping's name, or a path relative to this file"},
            "format": {"enum": list(FORMATS), "description": "default: recognised by content"},
            "stages": {"type": "array", "items": {"enum": [*STAGES, FEEDBACK]}, "uniqueItems": True,
                       "description": "the stages this assistant has; no other stage is ever filled"},
            "order": {"$ref": "#/$defs/source", "description": "orders the turns of a session when turn_index is not mapped"},
            "spans": {
                "type": "object", "additionalProperties": False,
                "description": "OpenTelemetry input: which spans are turns, and named selectors for the spans fields read",
                "properties": {
                    "turn": {"oneOf": [{"const": "trace"}, {"$ref": "#/$defs/selector"}]},
                    "select": {"type": "object", "additionalProperties": {"$ref": "#/$defs/selector"}},
                    "answers": {"$ref": "#/$defs/answers"},
                },
            },
            "fields": {"type": "object", "additionalProperties": False,
                       "properties": {**{name: {"$ref": "#/$defs/source", "description": f.doc or f.kind}
                                         for name, f in TARGETS.items()},
                                      RESOLVED: {"$ref": "#/$defs/source", "description": RESOLVED_DOC}}},
        },
        "$defs": {"source": source, "spec": _spec_schema(), "selector": _selector_schema(), "answers": _answers_schema()},
    }


# ------------------------------------------------------------------ loading

@dataclass(frozen=True)
class Selector:
    """Spans chosen by name or attribute, below the turn span (or above it, `ancestor`)."""

    name: str | list[str] | None = None
    name_prefix: str | list[str] | None = None
    attribute: str | None = None
    equals: Any = None
    status: str | None = None
    ancestor: bool = False


@dataclass(frozen=True)
class Answers:
    """Spans beside the turn span that answer it (`spans`), one answer per `link` value, and spans that
    belong to the turn whose answer they interrupt (`during`)."""

    spans: Selector
    link: str | None = None
    during: Selector | None = None

    @classmethod
    def from_json(cls, raw: dict) -> Answers:
        return cls(Selector(**raw["spans"]), raw.get("link"), Selector(**raw["during"]) if raw.get("during") else None)


@dataclass
class Mapping:
    """A checked mapping, with `extends` already resolved."""

    name: str
    source: str
    fields: dict[str, Any]
    format: str | None = None
    stages: tuple[str, ...] | None = None
    order: Any = None
    turn: Selector | str | None = None
    select: dict[str, Selector] = field(default_factory=dict)
    answers: Answers | None = None
    origins: dict[str, str] = field(default_factory=dict)  # field (and `order`) -> `file:line` where it is mapped

    def at(self, target: str) -> str:
        """Where `target` is mapped, as `file:line` (the file that extends another names its own lines), for messages."""
        return self.origins.get(target, self.source)

    def references(self) -> set[str]:
        """Every field, column or `selector:attribute` the mapping reads."""
        found: set[str] = set()

        def walk(spec: Any) -> None:
            if isinstance(spec, str):
                found.add(spec)
            elif isinstance(spec, dict):
                if "from" in spec:
                    found.add(spec["from"])
                for alternative in spec.get("first_of", []):
                    walk(alternative)
        for spec in (*self.fields.values(), self.order):
            walk(spec)
        return found

    def to_json(self) -> dict:
        """The mapping as plain data, which `Mapping.from_json` reads back (how the Spark engine sends it to executors)."""
        return {"name": self.name, "source": self.source, "fields": self.fields, "format": self.format,
                "stages": list(self.stages) if self.stages is not None else None, "order": self.order,
                "turn": self.turn if isinstance(self.turn, str) or self.turn is None else asdict(self.turn),
                "select": {name: asdict(selector) for name, selector in self.select.items()},
                "answers": asdict(self.answers) if self.answers is not None else None, "origins": self.origins}

    @classmethod
    def from_json(cls, data: dict) -> Mapping:
        return cls(name=data["name"], source=data["source"], fields=data["fields"], format=data["format"],
                   stages=tuple(data["stages"]) if data["stages"] is not None else None, order=data["order"],
                   turn=_selector(data["turn"]) if data["turn"] is not None else None,
                   select={name: Selector(**raw) for name, raw in data["select"].items()},
                   answers=Answers.from_json(data["answers"]) if data.get("answers") else None, origins=data.get("origins") or {})

    def span_references(self) -> dict[str, set[str]]:
        """selector -> attributes (and `@` facts) read from it; `turn` and `trace` are built in."""
        out: dict[str, set[str]] = {}
        for ref in self.references():
            selector, _, attribute = ref.partition(":")
            if attribute:
                out.setdefault(selector, set()).add(attribute)
        return out


def shipped_mappings() -> dict[str, Path]:
    """Name -> file of the mappings that ship with fpi."""
    folder = resources.files("fpi").joinpath("mappings")
    return {Path(str(p)).stem: Path(str(p)) for p in sorted(folder.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".yaml")}


def _locate(name_or_path: str | Path, base: Path | None = None) -> tuple[Path, str]:
    shipped = shipped_mappings()
    text = str(name_or_path)
    if text in shipped:
        return shipped[text], f"fpi:mappings/{text}.yaml"
    path = Path(text)
    if base is not None and not path.is_absolute():
        path = base / path
    if not path.exists() and "/" not in text and not text.endswith((".yaml", ".yml")):
        close = difflib.get_close_matches(text, list(shipped), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise MappingError([f"{text}: no such mapping; {hint}shipped: {', '.join(shipped)}, or give a file"])
    return path, str(path)


def load_mapping(name_or_path: str | Path) -> Mapping:
    """A shipped mapping by name, or a mapping file; `extends` chains are followed and merged."""
    return _load(name_or_path, None, ())


def as_mapping(mapping: Mapping | dict | str | Path | None) -> Mapping | None:
    """A mapping as a notebook may give it: loaded, a dict, YAML text (a string of several lines, or one
    with `key: value` that names no file), a shipped mapping's name or a file."""
    if mapping is None or isinstance(mapping, Mapping):
        return mapping
    if isinstance(mapping, dict):
        return mapping_from_text(yaml.safe_dump(mapping, sort_keys=False), "<mapping dict>")
    if isinstance(mapping, str) and ("\n" in mapping or (": " in mapping and not Path(mapping).exists())):
        return mapping_from_text(mapping, "<mapping text>")
    if not isinstance(mapping, str | Path):
        raise MappingError([f"mapping: expected a shipped mapping's name, a file, YAML text or a dict, got {type(mapping).__name__}"])
    return load_mapping(mapping)


def mapping_from_text(text: str, label: str) -> Mapping:
    """A mapping written out in a string (`extends:` a shipped name, or a file relative to here)."""
    document, problems = parse_yaml(text, label)
    if document is None:
        raise MappingError(problems)
    data = _checked(document)
    parent = _load(data["extends"], Path.cwd(), ((label, label),)) if "extends" in data else None
    return _merge(parent, data, label, _origins(document, data))


def _load(name_or_path: str | Path, base: Path | None, chain: tuple[tuple[str, str], ...]) -> Mapping:
    path, label = _locate(name_or_path, base)
    try:
        identity = label if label.startswith("fpi:") else str(path.resolve())  # `../sub/self.yaml` is itself too
    except (RuntimeError, OSError):
        raise MappingError([f"{label}: cannot be resolved (a symlink loop)"]) from None
    if identity in (seen for seen, _ in chain):
        raise MappingError([f"{label}:1: extends itself ({' -> '.join((*(name for _, name in chain), label))})"])
    document, problems = read_yaml(path, label)
    if document is None:
        raise MappingError(problems)
    data = _checked(document)
    parent = _load(data["extends"], path.parent, (*chain, (identity, label))) if "extends" in data else None
    return _merge(parent, data, label, _origins(document, data))


def _origins(document: YamlDocument, data: dict) -> dict[str, str]:
    """`file:line` of each field the document maps, and of its `order`."""
    places = {target: f"{document.label}:{document.line(('fields', target))}" for target in data.get("fields") or {}}
    return places | ({"order": f"{document.label}:{document.line(('order',))}"} if "order" in data else {})


def _checked(document: YamlDocument) -> dict:
    if document.data is None:
        raise MappingError([f"{document.label}:1: empty mapping; map at least `fields` (docs/mapping.md)"])
    problems = schema_problems(document, mapping_json_schema(), _hint)
    data = document.data
    if not problems and isinstance(data, dict):
        problems += _meaning_problems(document, data)
    if problems:
        raise MappingError(problems)
    assert isinstance(data, dict)
    return data


def _hint(error: Any) -> tuple[tuple, str] | None:
    """Schema errors on a field's source say what a source may be, not which `oneOf` branch failed."""
    path = tuple(error.absolute_path)
    if error.validator == "oneOf" and len(path) >= 2 and path[0] == "fields":
        instance = error.instance
        if isinstance(instance, dict):
            known = set(_spec_schema()["properties"])
            unknown = sorted(set(map(str, instance)) - known)
            if unknown:
                close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(sorted(known))}"
                return (*path, unknown[0]), f"{'/'.join(map(str, path))}: unknown key {unknown[0]!r}; {hint}"
            given = [k for k in ("from", "value", "first_of") if k in instance]
            if len(given) != 1:
                return path, (f"{'/'.join(map(str, path))}: give exactly one of `from`, `value`, `first_of`"
                              + (f" (found {', '.join(given)})" if given else ""))
        return path, f"{'/'.join(map(str, path))}: expected a field name or an object with `from`, `value` or `first_of`"
    if error.validator == "additionalProperties" and path == ("fields",):
        field_name = min(map(str, set(error.instance) - {*TARGETS, RESOLVED}))
        close = difflib.get_close_matches(field_name, [*TARGETS, RESOLVED], n=1)
        hint = f"did you mean {close[0]!r}?" if close else "trace fields are named as in docs/trace-format.md"
        return ("fields", field_name), f"fields: {field_name!r} is not a trace field; {hint}"
    return None


def _meaning_problems(document: YamlDocument, data: dict) -> list[Problem]:
    """What the schema cannot say: a stage mapped that the assistant does not have, a selector that is
    used but not defined, a scale that is empty."""
    problems = []
    stages = data.get("stages")
    for target in data.get("fields") or {}:
        stage = target.split(".")[0]
        if stages is not None and stage in (*STAGES, FEEDBACK) and stage not in stages:
            problems.append((document.line(("fields", target)),
                             f"fields/{target}: stage {stage!r} is not in `stages` ({', '.join(stages)}); add it or drop the field"))
    problems += _required_problems(document, data) + _resolved_problems(document, data)
    defined = set((data.get("spans") or {}).get("select") or {}) | {"turn", "trace", "resource"}
    for target, spec in (data.get("fields") or {}).items():
        for ref in references_of(spec):
            selector, colon, _ = ref.partition(":")
            if colon and selector not in defined and "spans" in data:
                close = difflib.get_close_matches(selector, sorted(defined), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"define it under spans/select ({', '.join(sorted(defined))})"
                problems.append((document.line(("fields", target)), f"fields/{target}: selector {selector!r} is not defined; {hint}"))
        for scale in _scales(spec):
            if scale[0] == scale[1]:
                problems.append((document.line(("fields", target)), f"fields/{target}: scale {scale} is empty; give [low, high]"))
    return [Problem(document.label, line, MEANING, message) for line, message in sorted(problems)]


def _required_problems(document: YamlDocument, data: dict) -> list[tuple[int, str]]:
    """A stage mapped without a member it cannot do without (a result with no status): every record would be
    refused on reading, so say it here. Text members are not: a stage with no text heard nothing (`""`)."""
    fields = data.get("fields") or {}
    problems = []
    for stage in TURN_FIELDS:
        mapped = [t for t in fields if t.split(".")[0] == stage.name]
        needed = [m for m in stage.fields if m.required and not (m.kind == "string" and not m.enum)]
        for member in needed if mapped and "extends" not in data else []:
            given = f"{stage.name}.{member.name}" in fields or (stage.name == "er" and RESOLVED in fields)  # its own entity
            if not given:
                problems.append((document.line(("fields", mapped[0])),
                                 f"fields/{mapped[0]}: stage {stage.name!r} needs {stage.name}.{member.name} too; map it "
                                 "(a constant will do: `{value: ...}`), or every record is refused"))
    return problems


def _resolved_problems(document: YamlDocument, data: dict) -> list[tuple[int, str]]:
    """`er.resolved` gives the status of one entity per turn: a list of entities carries each one's own."""
    fields = data.get("fields") or {}
    entities = fields.get("er.entities")
    if RESOLVED not in fields or not any(isinstance(s, dict) and "fields" in s for s in _alternatives(entities)):
        return []
    return [(document.line(("fields", RESOLVED)), "fields/er.resolved: goes with a flat er.entities column (one entity per "
             "turn), and er.entities reads a list of entities: map each one's status there (`fields: {status: ...}`), "
             "or drop er.resolved")]


def _alternatives(spec: Any) -> list[Any]:
    """A source and, for `first_of`, each of its alternatives."""
    return [spec] + [a for s in spec.get("first_of", []) for a in _alternatives(s)] if isinstance(spec, dict) else [spec]


def references_of(spec: Any) -> list[str]:
    """The fields, columns or `selector:attribute`s one field's source reads."""
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, dict):
        return ([spec["from"]] if "from" in spec else []) + [r for s in spec.get("first_of", []) for r in references_of(s)]
    return []


def _scales(spec: Any) -> list[list[float]]:
    if isinstance(spec, dict):
        return ([spec["scale"]] if "scale" in spec else []) + [s for a in spec.get("first_of", []) for s in _scales(a)]
    return []


def _selector(raw: dict | str) -> Selector | str:
    return raw if isinstance(raw, str) else Selector(**raw)


def _merge(parent: Mapping | None, data: dict, label: str, origins: dict[str, str]) -> Mapping:
    """The child's fields, selectors and settings win over its parent's, key by key."""
    spans = data.get("spans") or {}
    fields = {**(parent.fields if parent else {}), **(data.get("fields") or {})}
    stages = tuple(data["stages"]) if "stages" in data else (parent.stages if parent else None)
    if stages is not None:  # a child that narrows the stages drops its parent's fields for the others
        fields = {k: v for k, v in fields.items() if k.split(".")[0] not in (*STAGES, FEEDBACK) or k.split(".")[0] in stages}
    return Mapping(
        name=data.get("name") or (Path(label).stem if not parent else f"{parent.name}+{Path(label).stem}"),
        source=label, fields=fields, stages=stages,
        format=data.get("format") or (parent.format if parent else None),
        order=data.get("order", parent.order if parent else None),
        turn=_selector(spans["turn"]) if "turn" in spans else (parent.turn if parent else None),
        select={**(parent.select if parent else {}),
                **{name: Selector(**raw) for name, raw in (spans.get("select") or {}).items()}},
        answers=Answers.from_json(spans["answers"]) if "answers" in spans else (parent.answers if parent else None),
        origins={**(parent.origins if parent else {}), **origins},
    )


# ------------------------------------------------------------------ applying

_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


@dataclass
class _Compiled:
    """One trace field as an expression, and where its source value could not be converted."""

    target: str
    value: pl.Expr
    bad: pl.Expr | None = None
    source: str = ""


class _Context:
    def __init__(self, mapping: Mapping, schema: pl.Schema, label: str):
        self.mapping, self.schema, self.label = mapping, schema, label
        self.missing: list[tuple[str, str]] = []
        self.resolved: _Compiled | None = None  # `er.resolved`: the status of a flat column's entity

    def column(self, ref: str, target: str) -> pl.Expr | None:
        """The source column (or nested JSON member) `ref` names, or None when the input lacks it."""
        if ref in self.schema:
            return pl.col(ref)
        head, *rest = ref.split(".")
        for cut in range(len(ref.split(".")) - 1, 0, -1):  # the longest column name that is a prefix
            parts = ref.split(".")
            name = ".".join(parts[:cut])
            if name in self.schema:
                head, rest = name, parts[cut:]
                break
        if head not in self.schema:
            self.missing.append((target, ref))
            return None
        expr, dtype = pl.col(head), self.schema[head]
        for member in rest:
            if not isinstance(dtype, pl.Struct) or member not in {f.name for f in dtype.fields}:
                self.missing.append((target, ref))
                return None
            dtype = pl.Schema({f.name: f.dtype for f in dtype.fields})[member]
            expr = expr.struct.field(member)
        return expr

    def dtype(self, expr: pl.Expr) -> pl.DataType:
        return pl.LazyFrame(schema=self.schema).select(expr.alias("x")).collect_schema()["x"]


def _pick(expr: pl.Expr, dtype: pl.DataType, spec: dict) -> pl.Expr:
    if not isinstance(dtype, pl.List):
        return expr
    how = spec.get("pick", "first")
    if how == "join":
        joined = expr.list.eval(pl.element().cast(pl.String)).list.join(spec.get("separator", " "))
        return pl.when(expr.list.len() > 0).then(joined)
    if how == "any":  # nothing to say when no span has the attribute, so `first_of` goes on
        return pl.when(expr.list.len() > 0).then(expr.list.eval(pl.element().cast(pl.String).str.to_lowercase().is_in(_TRUE)).list.any())
    if how == "count":
        return expr.list.len()
    return expr.list.last() if how == "last" else expr.list.first()


def _to_microseconds(expr: pl.Expr, dtype: pl.DataType, how: str) -> pl.Expr:
    if how in TIME_UNITS:
        number = expr.cast(pl.Float64, strict=False) if dtype == pl.String else expr.cast(pl.Float64)
        return (number * TIME_UNITS[how]).round(0).cast(pl.Int64, strict=False)
    return expr.cast(pl.String).str.to_datetime(how, strict=False, time_zone="UTC").dt.epoch("us")


def _source(ctx: _Context, spec: Any, target: Field, name: str) -> tuple[pl.Expr, pl.Expr | None, str]:
    """(value as the target's type, where the source could not be converted, what it came from)."""
    if isinstance(spec, str):
        spec = {"from": spec}
    if "value" in spec:
        return _cast(pl.lit(spec["value"]), _literal_dtype(spec["value"]), target, name, repr(spec["value"]), ctx.mapping.at(name))
    if "first_of" in spec:
        parts = [_source(ctx, alternative, target, name) for alternative in spec["first_of"]]
        present = [p for p in parts if p[2]]
        if not present:
            return pl.lit(None), None, ""
        value = pl.coalesce([p[0] for p in present])
        bads = [p[1] for p in present if p[1] is not None]
        bad = pl.any_horizontal(bads) & value.is_null() if bads else None
        return value, bad, " or ".join(p[2] for p in present)
    ref = spec["from"]
    column = ctx.column(ref, name)
    if column is None:
        return pl.lit(None), None, ""
    dtype = ctx.dtype(column)
    if name in ARRAY_TARGETS:
        return _array(ctx, name, column, dtype, spec, ref), None, ref
    expr = _pick(column, dtype, spec)
    dtype = ctx.dtype(expr)
    if "absent" in spec:
        expr = pl.when(_as_text(expr, dtype).is_in([_key(v) for v in spec["absent"]])).then(None).otherwise(expr)
    if "values" in spec:
        table = {_key(k): v for k, v in spec["values"].items()}
        text = _as_text(expr, dtype)
        fallback = pl.lit(spec["otherwise"]) if "otherwise" in spec else text
        outputs = list(table.values()) + ([spec["otherwise"]] if "otherwise" in spec else [])
        kind = _literal_dtype(outputs[0]) if outputs and all(type(o) is type(outputs[0]) for o in outputs) else pl.String()
        if kind != pl.String():
            mapped = text.replace_strict(list(table), list(table.values()), default=pl.lit(spec.get("otherwise")),
                                         return_dtype=kind)
        else:
            mapped = text.replace_strict(list(table), [None if v is None else str(v) for v in table.values()],
                                         default=fallback.cast(pl.String), return_dtype=pl.String)
        expr = pl.when(text.is_null()).then(None).otherwise(mapped)  # a value that is not there stays so
        dtype = kind
    if "time" in spec:
        micros = _to_microseconds(expr, dtype, spec["time"])
        iso = pl.from_epoch(micros, "us").dt.replace_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        return iso, expr.is_not_null() & micros.is_null(), ref
    value, bad, _ = _cast(expr, dtype, target, name, ref, ctx.mapping.at(name))
    if "scale" in spec:
        low, high = spec["scale"]
        value = (value - low) / (high - low)
    if "multiply" in spec:
        value = value * spec["multiply"]
    return value, bad, ref


def _key(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _literal_dtype(value: Any) -> pl.DataType:
    if isinstance(value, bool):
        return pl.Boolean()
    if isinstance(value, int | float):
        return pl.Float64()
    return pl.String() if value is not None else pl.Null()


def _as_text(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.Boolean:
        return pl.when(expr).then(pl.lit("true")).when(~expr).then(pl.lit("false"))
    if dtype.is_float():  # 1.0 reads as 1, as a person writes it in a value map
        return pl.when(expr == expr.floor()).then(expr.cast(pl.Int64, strict=False).cast(pl.String)).otherwise(expr.cast(pl.String))
    return expr.cast(pl.String)


def _cast(expr: pl.Expr, dtype: pl.DataType, target: Field, name: str, ref: str,
          where: str) -> tuple[pl.Expr, pl.Expr | None, str]:
    """Convert to the target's type; `bad` marks values that are there but do not convert. `where`: the mapping's
    `file:line` of the field, for a source that cannot be converted at all."""
    kind = target.kind
    if dtype == pl.Null:
        return pl.lit(None), None, ref
    if isinstance(dtype, pl.List | pl.Struct | pl.Array):
        raise TraceError([f"{where}: fields/{name}: {ref} holds {'a list' if not isinstance(dtype, pl.Struct) else 'an object'}, "
                          f"not {'text' if kind == 'string' else 'a ' + kind}; name one of its members (a.b) or set `pick`"])
    if kind == "string":
        return _as_text(expr, dtype), None, ref
    if kind in ("number", "integer"):
        if dtype == pl.String:
            text = expr.str.strip_chars()
            value = text.cast(pl.Float64, strict=False)
            return value, (text != "") & value.is_null(), ref
        if dtype == pl.Boolean:
            return pl.lit(None, pl.Float64), expr.is_not_null(), ref
        return expr.cast(pl.Float64), None, ref
    # boolean
    if dtype == pl.String:
        text = expr.str.strip_chars().str.to_lowercase()
        value = pl.when(text.is_in(_TRUE)).then(True).when(text.is_in(_FALSE)).then(False)
        return value, (text != "") & value.is_null(), ref
    if dtype == pl.Boolean:
        return expr, None, ref
    return expr != 0, None, ref


def _one_entity(expr: pl.Expr | None, target: Field, ref: str, resolved: _Compiled | None) -> pl.Expr:
    """A flat column (`er.entities: resolved_entity`): one entity per turn, its slot named after the column, none where
    the column is empty. Without `er.resolved` every value is resolved; with it, its status says (a value that did not
    resolve has no resolved value), and a turn with a status but no value still has its entity."""
    text = expr.cast(pl.String) if expr is not None else pl.lit(None, pl.String)
    value = pl.when(text != "").then(text)
    status = resolved.value if resolved is not None else pl.lit("resolved")
    given = {"slot": pl.lit(ref.rpartition(":")[2].rpartition(".")[2]), "value": value,
             "resolved_value": pl.when(status == "resolved").then(value), "status": status}
    members = [given.get(m.name, pl.lit(None, dtype=_member_dtype(m))).alias(m.name) for m in target.fields]
    there = value.is_not_null() | (resolved.value.is_not_null() if resolved is not None else pl.lit(False))
    return pl.when(there).then(pl.concat_list(pl.struct(members)))


_STATUS_WORDS = {**dict.fromkeys(_TRUE, "resolved"), **dict.fromkeys(_FALSE, "unresolved"), **{s: s for s in ER_STATUSES}}


def _resolved(ctx: _Context, spec: Any) -> _Compiled:
    """`er.resolved` as an entity status: yes/no words and ER's own status words; any other value is bad."""
    text, bad, source = _source(ctx, spec, Field("resolved", "string"), RESOLVED)
    words = text.cast(pl.String).str.strip_chars().str.to_lowercase()
    status = words.replace_strict(list(_STATUS_WORDS), list(_STATUS_WORDS.values()), default=None, return_dtype=pl.String)
    unknown = text.is_not_null() & (words != "") & status.is_null()
    return _Compiled(RESOLVED, status, unknown if bad is None else bad | unknown, source)


def _array(ctx: _Context, name: str, expr: pl.Expr, dtype: pl.DataType, spec: dict, ref: str) -> pl.Expr:
    """A list of objects with our member names, from a list of theirs (`fields` renames members); for
    entities, also a flat column: one entity per turn (`_one_entity`)."""
    target = ARRAY_TARGETS[name]
    if target.name == "entities" and not isinstance(dtype, pl.List | pl.Struct | pl.Array):
        return _one_entity(expr, target, ref, ctx.resolved)
    if target.name == "entities" and ctx.resolved is not None:
        raise TraceError([f"{ctx.mapping.at(RESOLVED)}: fields/er.resolved: goes with a flat er.entities column (one entity "
                          f"per turn), and {ref} holds {'a list' if isinstance(dtype, pl.List | pl.Array) else 'an object'}: "
                          "map each entity's status in er.entities (`fields: {status: ...}`), or drop er.resolved"])
    if not (isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct)):
        raise TraceError([f"{ctx.mapping.at(name)}: fields/{name}: {ref} is {dtype}, not a list of objects; "
                          f"{target.name} needs one object per item"])
    theirs = {f.name: f.dtype for f in dtype.inner.fields}
    renames = spec.get("fields") or {}
    members = []
    for member in target.fields:
        source = renames.get(member.name, member.name)
        if source not in theirs:
            members.append(pl.lit(None, dtype=_member_dtype(member)).alias(member.name))
            continue
        element = pl.element().struct.field(source)
        kind = theirs[source]
        if member.kind == "string":
            value = element.cast(pl.String)
        elif member.kind == "boolean":
            value = element.cast(pl.Boolean, strict=False)
        else:
            value = element.str.strip_chars().cast(pl.Float64, strict=False) if kind == pl.String else element.cast(pl.Float64, strict=False)
        members.append(value.alias(member.name))
    return expr.list.eval(pl.struct(members))


def _member_dtype(member: Field) -> pl.DataType:
    return {"string": pl.String(), "boolean": pl.Boolean()}.get(member.kind, pl.Float64())


def apply_mapping(mapping: Mapping, frame: pl.DataFrame, label: str) -> tuple[pl.DataFrame, dict[int, list[FieldProblem]]]:
    """Trace-format columns (decode types, as the JSON reader gives them) for each row of `frame`, with
    `line` and `raw` carried over; and, by line, the values that did not convert."""
    try:
        return _apply(mapping, frame, label)
    except pl.exceptions.PolarsError as exc:  # e.g. a `time` format polars cannot use
        raise TraceError([f"{mapping.source}: cannot be applied to {label}: {str(exc).splitlines()[0]}"]) from None


def _apply(mapping: Mapping, frame: pl.DataFrame, label: str) -> tuple[pl.DataFrame, dict[int, list[FieldProblem]]]:
    ctx = _Context(mapping, frame.schema, label)
    decode = pl.Schema(turn_dtype(decode=True).to_schema())
    compiled = _compiled(ctx, mapping)
    _refuse_missing(ctx, mapping, frame, compiled)
    columns = []
    for top in TURN_FIELDS:
        if top.kind != "object":
            columns.append(_top_level(top, compiled, decode).alias(top.name))
            continue
        # A stage that ran (some member is there) with its text missing heard or understood nothing: text "".
        struct = decode[top.name]
        assert isinstance(struct, pl.Struct)
        member_types = pl.Schema(struct.to_schema())
        members = [_filled(m, (compiled[f"{top.name}.{m.name}"].value if f"{top.name}.{m.name}" in compiled else pl.lit(None))
                           .cast(member_types[m.name])).alias(m.name)
                   for m in top.fields]
        mapped = [f"{top.name}.{m.name}" for m in top.fields if f"{top.name}.{m.name}" in compiled]
        ran = pl.any_horizontal([compiled[t].value.is_not_null() for t in mapped]) if mapped else pl.lit(False)
        columns.append(pl.when(ran).then(pl.struct(members)).otherwise(None).alias(top.name))
    bads = [(t, c.bad.alias(f"_bad:{t}"), c.source) for t, c in compiled.items() if c.bad is not None]
    out = frame.with_columns(columns + [b for _, b, _ in bads] + [compiled[t].value.alias(f"_value:{t}") for t, _, _ in bads])
    out = _with_identity(out, mapping)
    problems = _unconverted(out, mapping, [(t, source) for t, _, source in bads]) if bads else {}
    keep = [f.name for f in TURN_FIELDS] + ["line", "raw"] + [c for c in frame.columns if c.startswith("_otlp")]
    return out.select(keep), problems


def _compiled(ctx: _Context, mapping: Mapping) -> dict[str, _Compiled]:
    """Every mapped field as an expression; `er.resolved` first, as the status of a flat entity column's entity (or of
    an entity of its own when er.entities is not mapped)."""
    compiled: dict[str, _Compiled] = {}
    if RESOLVED in mapping.fields:
        resolved = compiled[RESOLVED] = ctx.resolved = _resolved(ctx, mapping.fields[RESOLVED])
        if "er.entities" not in mapping.fields:
            entity = _one_entity(None, ARRAY_TARGETS["er.entities"], resolved.source, resolved)
            compiled["er.entities"] = _Compiled("er.entities", entity, None, resolved.source)
    for name, spec in mapping.fields.items():
        if name != RESOLVED:
            value, bad, source = _source(ctx, spec, TARGETS[name], name)
            compiled[name] = _Compiled(name, value, bad, source)
    return compiled


def _unconverted(out: pl.DataFrame, mapping: Mapping, bads: list[tuple[str, str]]) -> dict[int, list[FieldProblem]]:
    """By line, each value a field's source has that does not convert, with where it came from."""
    problems: dict[int, list[FieldProblem]] = {}
    flagged = out.filter(pl.any_horizontal([pl.col(f"_bad:{t}") for t, _ in bads]))
    for row in flagged.iter_rows(named=True):
        for t, source in bads:
            if row[f"_bad:{t}"]:
                expected = ("true or false, or resolved, ambiguous or unresolved" if t == RESOLVED
                            else "a date-time" if "time" in str(mapping.fields[t])
                            else {"boolean": "true or false", "string": "text"}.get(TARGETS[t].kind, "a number"))
                problems.setdefault(row["line"], []).append(
                    (t, WRONG_VALUE, f"expected {expected}, got {_shown(row, source)} (from {source} via {mapping.source})"))
    return problems


def _filled(member: Field, value: pl.Expr) -> pl.Expr:
    return value.fill_null("") if member.required and member.kind == "string" and not member.enum else value


def _shown(row: dict, source: str) -> str:
    value = row.get(source)
    return repr(value)[:60] if value is not None else "a value it could not convert"


def _top_level(top: Field, compiled: dict[str, _Compiled], decode: pl.Schema) -> pl.Expr:
    if top.name in compiled:
        return compiled[top.name].value.cast(decode[top.name])
    return pl.lit(None, dtype=decode[top.name])


def _with_identity(frame: pl.DataFrame, mapping: Mapping) -> pl.DataFrame:
    """turn_index from `order` (or input order) within each session; turn_id from session and index
    when the mapping gives none."""
    if "turn_index" not in mapping.fields:
        if mapping.order is not None:
            ctx = _Context(mapping, frame.schema, mapping.source)
            order, _, _ = _source(ctx, mapping.order, Field("order", "string"), "order")
            if ctx.missing:
                raise TraceError([f"{mapping.at('order')}: order: {ctx.missing[0][1]!r} is not in the input"])
            # numbers in numeric order (text "9" before "10"), anything else as text, ties in input order
            keys = frame.with_row_index("_row").with_columns(_text=order, _number=order.cast(pl.Float64, strict=False))
            ranked = (keys.sort("session_id", "_number", "_text", "_row", nulls_last=True)
                      .with_columns(turn_index=pl.int_range(pl.len()).over("session_id").cast(pl.Float64)).sort("_row"))
            frame = ranked.drop("_row", "_text", "_number")
        else:
            frame = frame.with_columns(turn_index=pl.int_range(pl.len()).over("session_id").cast(pl.Float64))
    if "turn_id" not in mapping.fields:
        frame = frame.with_columns(turn_id=pl.col("session_id") + "#" + pl.col("turn_index").cast(pl.Int64).cast(pl.String))
    return frame


def _refuse_missing(ctx: _Context, mapping: Mapping, frame: pl.DataFrame, compiled: dict[str, _Compiled]) -> None:
    """A field the mapping reads that the input does not have, where no alternative is there either."""
    unresolved = sorted({(t, ref) for t, ref in ctx.missing if not compiled[t].source})
    if not unresolved:
        return
    columns = [c for c in frame.columns if c not in ("line", "raw") and not c.startswith("_otlp")]
    problems = []
    for target, ref in unresolved:
        close = difflib.get_close_matches(ref, columns, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"the input has: {', '.join(columns[:20])}"
        problems.append(f"{mapping.at(target)}: fields/{target}: {ref!r} is not in {ctx.label}; {hint}")
    raise TraceError(problems)


__all__ = ["Answers", "Mapping", "MappingError", "apply_mapping", "as_mapping", "load_mapping", "mapping_from_text", "mapping_json_schema", "references_of", "shipped_mappings"]
