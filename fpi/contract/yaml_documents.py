"""YAML documents users write (rule files, gate policies): safe loading, the line of
every key, and JSON Schema problems phrased as `file:line: what is wrong; how to mend it`."""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from fpi.contract.errors import Problem
from fpi.contract.small_files import TooLarge, read_small_file

Hint = Callable[[jsonschema.ValidationError], "tuple[tuple, str] | None"]

# Stable codes of problems in YAML documents (docs/lint.md); rules add their own (fpi.pipeline.rules).
UNREADABLE, NOT_YAML, NOT_A_NUMBER, EMPTY = "Y001", "Y002", "Y003", "Y004"
SCHEMA_CODES = {"additionalProperties": "S001", "required": "S002", "enum": "S003", "minimum": "S004", "maximum": "S004",
                "exclusiveMinimum": "S004", "exclusiveMaximum": "S004", "type": "S005"}
SCHEMA_OTHER = "S006"


@dataclass
class YamlDocument:
    """A parsed YAML file (None when empty) with the 1-based line of each key and item."""

    label: str
    data: object
    lines: dict[tuple, int]

    def line(self, path: tuple) -> int:
        """Line of `path`, or of its nearest ancestor that has one."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)


def package_schema(name: str) -> dict:
    return json.loads(resources.files("fpi").joinpath("schemas", name).read_text(encoding="utf-8"))


def _line_map(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines.update(_line_map(value, (*path, key.value)))
            lines[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_line_map(item, (*path, i)))
    return lines


MAX_BYTES = 5 * 2**20  # a rules file or a policy is a page or two, never megabytes
MAX_DEPTH = 50


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter: no aliases (a few lines of them expand to gigabytes), no
    duplicate keys (the last would silently win), no nesting deeper than MAX_DEPTH."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed here; write the value out",
                                              event.start_mark)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in first:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}, first on line {first[key]}; "
                                                        "keep one", key_node.start_mark)
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, label: str | None = None) -> tuple[YamlDocument | None, list[Problem]]:
    """Load `path` with PyYAML's safe loader; on failure, no document and the problem."""
    label = label or str(path)

    def problem(line: int, code: str, message: str) -> tuple[None, list[Problem]]:
        return None, [Problem(label, line, code, message)]
    try:
        text = read_small_file(path, MAX_BYTES).decode("utf-8")
    except FileNotFoundError:
        return problem(1, UNREADABLE, "no such file")
    except TooLarge as exc:
        return problem(1, UNREADABLE, f"{exc}; a rules file, policy or mapping is at most {MAX_BYTES:,} bytes")
    except (OSError, UnicodeDecodeError, RuntimeError) as exc:
        return problem(1, UNREADABLE, f"cannot be read ({getattr(exc, 'strerror', None) or exc})")
    return parse_yaml(text, label)


def parse_yaml(text: str, label: str) -> tuple[YamlDocument | None, list[Problem]]:
    """YAML text a user gave (a file's, or a string in a notebook) as a document with its line numbers."""

    def problem(line: int, code: str, message: str) -> tuple[None, list[Problem]]:
        return None, [Problem(label, line, code, message)]
    try:
        loader = _StrictLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except RecursionError:
        return problem(1, NOT_YAML, "nested too deep to read")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return problem(mark.line + 1 if mark else 1, NOT_YAML, f"not valid YAML: {getattr(exc, 'problem', None) or exc}")
    document = YamlDocument(label, data, _line_map(node) if node is not None else {})
    not_numbers = [Problem(label, document.line(path), NOT_A_NUMBER,
                           f"{'/'.join(map(str, path))}: {value} is not a number; write a number")
                   for path, value in _not_finite(data)]
    return (None, not_numbers) if not_numbers else (document, [])


def _not_finite(node: object, path: tuple = ()) -> list[tuple[tuple, float]]:
    """NaN and infinities anywhere in a document: they pass every range check (NaN compares false)."""
    if isinstance(node, float) and not math.isfinite(node):
        return [(path, node)]
    if isinstance(node, dict):
        return [found for key, value in node.items() for found in _not_finite(value, (*path, key))]
    if isinstance(node, list):
        return [found for i, value in enumerate(node) for found in _not_finite(value, (*path, i))]
    return []


def _generic_hint(error: jsonschema.ValidationError) -> tuple[tuple, str]:
    path = tuple(error.absolute_path)
    where = "/".join(map(str, path)) or "the file"
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        unknown = sorted(map(str, set(error.instance) - set(allowed)))[0]
        close = difflib.get_close_matches(unknown, allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
        return (*path, unknown), f"{where}: unknown field {unknown!r}; {hint}"
    if error.validator == "required":
        return path, f"{where}: {error.message}; add it"
    if error.validator == "enum":
        close = difflib.get_close_matches(str(error.instance), [str(v) for v in error.validator_value], n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(map(str, error.validator_value))}"
        return path, f"{where}: unknown value {error.instance!r}; {hint}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return path, f"{where}: {error.instance!r} is out of range ({error.message.split(' is ', 1)[-1]})"
    if error.validator == "type":
        return path, f"{where}: expected {error.validator_value}, got {type(error.instance).__name__} {error.instance!r}"
    return path, f"{where}: {error.message}"


def schema_problems(document: YamlDocument, schema: dict, hint: Hint | None = None) -> list[Problem]:
    """Every way the document breaks `schema`, each as `file:line: message` with its code, by line."""
    validator = jsonschema.Draft202012Validator(schema)
    found = set()
    for error in validator.iter_errors(document.data):
        path, message = (hint and hint(error)) or _generic_hint(error)
        found.add(Problem(document.label, document.line(path), SCHEMA_CODES.get(str(error.validator), SCHEMA_OTHER), message))
    return sorted(found)
