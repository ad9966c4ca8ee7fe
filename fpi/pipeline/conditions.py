"""The rule condition language: parsed, type-checked and compiled to one
vectorised polars expression; never evaluated as Python.

    asr.confidence < 0.6 and nlu.confidence >= 0.85 and result.status == "success"
      and not next.is_rephrase and not feedback.barge_in

Grammar: `or`, `and`, `not`; comparisons `== != < <= > >=`; `x in [..]`,
`x not in [..]`; `x is null`, `x is not null`; parentheses; numbers, strings,
`true`, `false`. Fields are trace fields (`asr.confidence`), features
(`er_min_score`), model outputs (`model.failure_point`) and the same prefixed
with `next.` or `prev.` for the neighbouring turn of the session.

Missing values (a stage that did not run, no next turn): every comparison with a
missing value is false, except `!=` and `not in`, which are true; a boolean field
used on its own counts missing as false. So `feedback.explicit != "negative"`
holds when there was no feedback. Test for absence with `is null`."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import polars as pl

from fpi.contract.errors import FpiError


# Stable codes of condition problems (docs/lint.md).
SYNTAX, TOO_BIG, UNKNOWN_FIELD, WRONG_TYPE, NEVER_VALUE = "C001", "C002", "C003", "C004", "C005"


class ConditionError(FpiError):
    """A condition that does not parse or type-check; `column` is 1-based within the condition."""

    def __init__(self, message: str, column: int | None = None, hint: str | None = None, code: str = SYNTAX):
        self.column = column
        self.hint = hint
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class FieldType:
    """What a field name means: its expression, its type, and its allowed values if it has a fixed set."""

    expr: pl.Expr
    kind: str  # number | string | boolean | object
    values: tuple[str, ...] | None = None


# ------------------------------------------------------------------ tokens

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
""", re.VERBOSE)
_KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}
MAX_LENGTH = 2_000  # characters of a condition; a rule that needs more wants splitting
MAX_DEPTH = 40  # nested `not` and parentheses


@dataclass(frozen=True)
class Token:
    kind: str  # number | string | op | name | keyword | end
    text: str
    column: int


def tokenize(text: str) -> list[Token]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ConditionError(f"unexpected character {text[position]!r}", position + 1,
                                 "strings need double quotes; operators are == != < <= > >= and, or, not, in, is null")
        kind = match.lastgroup
        if kind != "space":
            value = match.group()
            assert kind is not None
            if kind == "name" and value in _KEYWORDS:
                kind = "keyword"
            tokens.append(Token(kind, value, position + 1))
        position = match.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


# ------------------------------------------------------------------ syntax tree

@dataclass(frozen=True)
class Node:
    column: int


@dataclass(frozen=True)
class Literal(Node):
    value: object
    kind: str  # number | string | boolean | null


@dataclass(frozen=True)
class FieldRef(Node):
    name: str


@dataclass(frozen=True)
class Not(Node):
    operand: Node


@dataclass(frozen=True)
class Logical(Node):
    op: str  # and | or
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Compare(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Membership(Node):
    operand: Node
    values: tuple[Literal, ...]
    negated: bool


@dataclass(frozen=True)
class NullCheck(Node):
    operand: Node
    negated: bool


class _Parser:
    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    def deeper(self, token: Token) -> None:
        """One more level of `not` or parentheses; past MAX_DEPTH, an error rather than a stack overflow."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ConditionError(f"the condition nests deeper than {MAX_DEPTH} levels", token.column,
                                 "simplify its `not` and parentheses", code=TOO_BIG)

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def expect(self, text: str) -> Token:
        token = self.take()
        if token.text != text:
            found = repr(token.text) if token.kind != "end" else "the end of the condition"
            raise ConditionError(f"expected {text!r}, found {found}", token.column)
        return token

    def parse(self) -> Node:
        node = self.logical("or")
        token = self.peek()
        if token.kind != "end":
            raise ConditionError(f"unexpected {token.text!r}", token.column, "join conditions with `and` or `or`")
        return node

    def logical(self, op: str) -> Node:
        first = self.logical("and") if op == "or" else self.negation()
        operands = [first]
        while self.peek().text == op and self.peek().kind == "keyword":
            self.take()
            operands.append(self.logical("and") if op == "or" else self.negation())
        return first if len(operands) == 1 else Logical(first.column, op, tuple(operands))

    def negation(self) -> Node:
        if self.peek().text == "not" and self.peek().kind == "keyword":
            token = self.take()
            self.deeper(token)
            node = Not(token.column, self.negation())
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Node:
        left = self.primary()
        token = self.peek()
        if token.kind == "op" and token.text in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            return Compare(token.column, token.text, left, self.primary())
        if token.kind == "keyword" and token.text == "is":
            self.take()
            negated = self.peek().text == "not"
            if negated:
                self.take()
            self.expect("null")
            return NullCheck(token.column, left, negated)
        if token.kind == "keyword" and token.text in ("in", "not") and (
                token.text == "in" or self.tokens[self.i + 1].text == "in"):
            negated = token.text == "not"
            self.take()
            if negated:
                self.take()
            return Membership(token.column, left, self.literal_list(), negated)
        return left

    def literal_list(self) -> tuple[Literal, ...]:
        self.expect("[")
        values = []
        while True:
            node = self.primary()
            if not isinstance(node, Literal):
                raise ConditionError("a list after `in` holds literal values only", node.column)
            values.append(node)
            if self.peek().text == ",":
                self.take()
                continue
            self.expect("]")
            return tuple(values)

    def primary(self) -> Node:
        token = self.take()
        if token.kind == "number":
            return Literal(token.column, float(token.text), "number")
        if token.kind == "string":
            body = token.text[1:-1]
            return Literal(token.column, re.sub(r"\\(.)", r"\1", body), "string")
        if token.kind == "keyword" and token.text in ("true", "false"):
            return Literal(token.column, token.text == "true", "boolean")
        if token.kind == "keyword" and token.text == "null":
            return Literal(token.column, None, "null")
        if token.kind == "name":
            return FieldRef(token.column, token.text)
        if token.text == "(":
            self.deeper(token)
            node = self.logical("or")
            self.expect(")")
            self.depth -= 1
            return node
        found = repr(token.text) if token.kind != "end" else "the end of the condition"
        raise ConditionError(f"expected a field, a value or '(', found {found}", token.column)


def parse(text: str) -> Node:
    if len(text) > MAX_LENGTH:
        raise ConditionError(f"the condition is {len(text):,} characters long; at most {MAX_LENGTH:,}", 1,
                             "split it into several rules", code=TOO_BIG)
    return _Parser(text).parse()


# ------------------------------------------------------------------ type check and compile

class Compiler:
    """Turns a parsed condition into a boolean polars expression, checking names and types."""

    def __init__(self, fields: dict[str, FieldType]):
        self.fields = fields

    def compile(self, text: str) -> pl.Expr:
        expr, kind = self._compile(parse(text), boolean_context=True)
        if kind != "boolean":
            raise ConditionError(f"the condition is a {kind}, not true or false", 1,
                                 "compare it, e.g. `asr.confidence < 0.5`, or test it with `is null`", code=WRONG_TYPE)
        return expr.fill_null(False)

    def _field(self, node: FieldRef) -> FieldType:
        if node.name in self.fields:
            return self.fields[node.name]
        close = difflib.get_close_matches(node.name, list(self.fields), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see `fpi rules fields` for the names a condition can use"
        raise ConditionError(f"unknown field {node.name!r}", node.column, hint, code=UNKNOWN_FIELD)

    def _compile(self, node: Node, *, boolean_context: bool = False) -> tuple[pl.Expr, str]:
        if isinstance(node, Literal):
            if node.kind == "null":
                raise ConditionError("null is not a value here", node.column, "write `x is null` or `x is not null`", code=WRONG_TYPE)
            return pl.lit(node.value), node.kind
        if isinstance(node, FieldRef):
            field = self._field(node)
            if boolean_context and field.kind == "boolean":
                return field.expr.fill_null(False), "boolean"
            return field.expr, field.kind
        if isinstance(node, Not):
            expr, kind = self._compile(node.operand, boolean_context=True)
            self._require(kind, "boolean", node.operand, "`not` applies to a condition")
            return ~expr, "boolean"
        if isinstance(node, Logical):
            parts = []
            for operand in node.operands:
                expr, kind = self._compile(operand, boolean_context=True)
                self._require(kind, "boolean", operand, f"`{node.op}` joins conditions")
                parts.append(expr)
            combined = parts[0]
            for part in parts[1:]:
                combined = combined & part if node.op == "and" else combined | part
            return combined, "boolean"
        if isinstance(node, NullCheck):
            expr, _ = self._compile(node.operand)
            return (expr.is_not_null() if node.negated else expr.is_null()), "boolean"
        if isinstance(node, Membership):
            expr, kind = self._compile(node.operand)
            for value in node.values:
                self._require(value.kind, kind, value, f"the list must hold {kind}s to match {self._name(node.operand)}")
                self._check_value(node.operand, value)
            member = expr.is_in([v.value for v in node.values])
            return (~member if node.negated else member).fill_null(node.negated), "boolean"
        if isinstance(node, Compare):
            left, left_kind = self._compile(node.left)
            right, right_kind = self._compile(node.right)
            if left_kind != right_kind:
                raise ConditionError(f"{node.op} compares a {left_kind} with a {right_kind}", node.column,
                                     "compare numbers with numbers and strings with quoted strings", code=WRONG_TYPE)
            if left_kind in ("object",):
                raise ConditionError(f"{self._name(node.left)} is a whole stage; compare one of its fields "
                                     "or test it with `is null`", node.left.column, code=WRONG_TYPE)
            if left_kind in ("string", "boolean") and node.op not in ("==", "!="):
                raise ConditionError(f"{node.op} needs numbers; {left_kind}s compare with == or !=", node.column, code=WRONG_TYPE)
            for side, other in ((node.left, node.right), (node.right, node.left)):
                if isinstance(other, Literal):
                    self._check_value(side, other)
            ops = {"==": left == right, "!=": left != right, "<": left < right, "<=": left <= right,
                   ">": left > right, ">=": left >= right}
            return ops[node.op].fill_null(node.op == "!="), "boolean"
        raise ConditionError("unsupported expression", node.column)

    def _name(self, node: Node) -> str:
        return node.name if isinstance(node, FieldRef) else "this value"

    def _check_value(self, node: Node, value: Literal) -> None:
        if isinstance(node, FieldRef):
            allowed = self.fields[node.name].values
            if allowed and value.value not in allowed:
                close = difflib.get_close_matches(str(value.value), allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(allowed)}"
                raise ConditionError(f"{node.name} is never {value.value!r}", value.column, hint, code=NEVER_VALUE)

    @staticmethod
    def _require(kind: str, wanted: str, node: Node, why: str) -> None:
        if kind != wanted:
            raise ConditionError(f"expected a {wanted}, found a {kind}: {why}", node.column, code=WRONG_TYPE)
