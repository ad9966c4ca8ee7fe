"""The rule layer: auditable YAML rules that run after the model and say "this
stage erred but the system recovered", "not a defect", or "decisively this stage".

Order: rules run by descending `priority` (default 0), then in the order the files
were given (a folder's files by name), then in file order. The first rule that
matches a turn decides it; the others that matched are listed too."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import ClassVar

import jsonschema
import numpy as np
import polars as pl

from fpi.pipeline.conditions import Compiler, ConditionError, FieldType
from fpi.contract.errors import DocumentError, Problem, UsageError
from fpi.contract.metrics import evaluate
from fpi.pipeline.features import CATEGORICAL, FEATURES, next_of, prev_of
from fpi.contract.trace_format import LABELS, RESULT_STATUSES, STAGES, TURN_FIELDS, with_every_member
from fpi.contract.yaml_documents import EMPTY, package_schema, read_yaml, schema_problems

RULES_SCHEMA = "rules-v1.schema.json"
DUPLICATE_ID = "R001"  # stable code (docs/lint.md)
REPHRASE_SIMILARITY = 0.6
REPHRASE_MAX_GAP_S = 30.0


class RuleError(DocumentError):
    """Rule files that cannot be used, with every problem found."""


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    when: str
    effect: str  # recovered | not_defect | assign
    value: str  # the stage, the reason or the label
    priority: float
    source: str
    line: int
    metadata: dict = field(default_factory=dict)
    condition: pl.Expr = field(default_factory=lambda: pl.lit(False), compare=False, repr=False)  # `when`, compiled once

    @property
    def failure_point(self) -> str:
        return self.value if self.effect == "assign" else "correct"

    def describe_effect(self) -> str:
        return f"{self.effect}: {self.value}"


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]

    def __len__(self) -> int:
        return len(self.rules)

    def without(self, rule_id: str) -> RuleSet:
        return RuleSet(tuple(r for r in self.rules if r.id != rule_id))

    def to_json(self) -> list[dict]:
        """The rules as data, in run order (what a Spark task is sent): each compiles again to the same condition."""
        return [{"id": r.id, "description": r.description, "when": r.when, "effect": r.effect, "value": r.value,
                 "priority": r.priority, "source": r.source, "line": r.line, "metadata": r.metadata} for r in self.rules]

    @classmethod
    def from_json(cls, data: list[dict]) -> RuleSet:
        compiler = Compiler(FIELD_TYPES)
        return cls(tuple(Rule(**item, condition=compiler.compile(item["when"])) for item in data))

    def identity(self) -> dict:
        """Rule ids in run order and a hash of what they do, for metrics files."""
        digest = hashlib.sha256(json.dumps([[r.id, r.when, r.effect, r.value, r.priority] for r in self.rules]).encode())
        return {"ids": [r.id for r in self.rules], "fingerprint": digest.hexdigest()}


def default_rules_path() -> Path:
    return Path(str(resources.files("fpi").joinpath("rules", "default.yaml")))


# ------------------------------------------------------------------ fields a condition can name

def _field_types() -> dict[str, FieldType]:
    """Trace fields, features, model outputs and derived signals, by the names conditions use."""
    c = pl.col
    fields: dict[str, FieldType] = {}
    for top in TURN_FIELDS:
        if top.name == "label":
            continue  # the gold label: a rule that reads it would grade itself
        if top.kind == "object":
            fields[top.name] = FieldType(c(top.name), "object")
            for member in top.fields:
                if member.kind in ("array", "object"):
                    continue
                fields[f"{top.name}.{member.name}"] = FieldType(
                    c(top.name).struct.field(member.name), _kind(member.kind), member.enum)
        elif top.kind != "array":
            fields[top.name] = FieldType(c(top.name), _kind(top.kind), top.enum)
    for feature in FEATURES:
        values = {"result_status": RESULT_STATUSES, "next_result_status": RESULT_STATUSES}.get(feature.name)
        fields.setdefault(feature.name, FieldType(c(f"f.{feature.name}"), "string" if feature.name in CATEGORICAL else "number", values))
    fields["model.failure_point"] = FieldType(c("model_failure_point"), "string", LABELS)
    fields["model.confidence"] = FieldType(c("model_confidence"), "number")
    for label in LABELS:
        fields[f"model.probability.{label}"] = FieldType(c(f"p_{label}"), "number")
    similar = c("f.prev_text_similarity") >= REPHRASE_SIMILARITY
    quick = c("f.prev_gap_s").is_null() | (c("f.prev_gap_s") <= REPHRASE_MAX_GAP_S)
    fields["is_rephrase"] = FieldType(similar & quick, "boolean")
    fields["is_answer_to_clarification"] = FieldType(prev_of(c("result").struct.field("status")) == "clarify", "boolean")
    for prefix, neighbour in (("next", next_of), ("prev", prev_of)):
        for name, base in list(fields.items()):
            if not name.startswith(("next.", "prev.")):
                fields[f"{prefix}.{name}"] = FieldType(neighbour(base.expr), base.kind, base.values)
    return fields


def _kind(kind: str) -> str:
    return "number" if kind in ("integer", "number") else kind


FIELD_TYPES = _field_types()


# ------------------------------------------------------------------ loading

_THEN_FORMS = (f"`then` takes exactly one of `recovered: STAGE` ({', '.join(STAGES)}), "
               f"`not_defect: REASON` or `assign: LABEL` ({', '.join(LABELS)})")


def _rule_hint(error: jsonschema.ValidationError) -> tuple[tuple, str] | None:
    """Rule-file wording for the schema errors a generic message would leave unclear."""
    path = tuple(error.absolute_path)
    where = "/".join(map(str, path)) or "the file"
    if error.validator == "additionalProperties" and path and path[-1] == "then":
        unknown = sorted(map(str, set(error.instance) - set(error.schema.get("properties", {}))))[0]
        return (*path, unknown), f"{where}: unknown effect {unknown!r}; {_THEN_FORMS}"
    if error.validator in ("minProperties", "maxProperties") and path and path[-1] == "then":
        return path, f"{where}: {_THEN_FORMS}"
    if error.validator == "type" and path == ("rules",):
        return path, f"{where}: expected a list of rules, each item starting with `- id: ...`"
    if error.validator == "pattern" and path and path[-1] == "id":
        return path, f"{where}: {error.instance!r} is not a rule id; use lower-case letters, digits, '-', '_' and '.'"
    return None


SHIPPED_LABEL = "fpi:rules/default.yaml"  # how messages and audits name the shipped rules, wherever fpi is installed


def load_rule_file(path: Path, compiler: Compiler | None = None) -> tuple[list[Rule], list[Problem], list[tuple[str, int]]]:
    """Rules of one file, every problem found in it in one pass (YAML, schema, every condition), and
    the id and line of each rule item, for the duplicate check across files. Rules are built only
    from a file without schema problems."""
    document, problems = read_yaml(path, SHIPPED_LABEL if path == default_rules_path() else None)
    if document is None:
        return [], problems, []
    if document.data is None:
        return [], [Problem(document.label, 1, EMPTY, "empty rule file; expected `rules:` with a list of rules")], []
    problems = schema_problems(document, package_schema(RULES_SCHEMA), _rule_hint)
    compiler = compiler or Compiler(FIELD_TYPES)
    items = document.data.get("rules") if isinstance(document.data, dict) else None
    rules, found, ids = [], list(problems), []
    for i, raw in enumerate(items if isinstance(items, list) else []):
        if not isinstance(raw, dict):
            continue
        if isinstance(raw.get("id"), str):
            ids.append((raw["id"], document.line(("rules", i))))
        if not isinstance(raw.get("when"), str):
            continue
        condition = pl.lit(False)
        try:
            condition = compiler.compile(raw["when"])
        except ConditionError as exc:
            column = f", column {exc.column}" if exc.column else ""
            hint = f"; {exc.hint}" if exc.hint else ""
            found.append(Problem(document.label, document.line(("rules", i, "when")), exc.code,
                                 f"rule {raw.get('id')!r}: when{column}: {exc}{hint}"))
        if not problems:
            rules.append(Rule(id=raw["id"], description=raw["description"], when=raw["when"], effect=next(iter(raw["then"])),
                              value=str(next(iter(raw["then"].values()))), priority=float(raw.get("priority", 0)),
                              source=document.label, line=document.line(("rules", i)), metadata=raw.get("metadata") or {},
                              condition=condition))
    return rules, sorted(found), ids


def rule_files(paths: list[Path]) -> list[Path]:
    files = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
            if not found:
                raise RuleError([f"{path}: no rule files (*.yaml) in this folder"])
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise RuleError([f"{path}: no such rule file or folder"])
    return files


def lint_rules(paths: list[Path] | None = None) -> tuple[RuleSet, list[Problem]]:
    """Load rule files and return the rules with every problem found, sorted by file and line
    (none means usable)."""
    files = rule_files(paths or [default_rules_path()])
    compiler = Compiler(FIELD_TYPES)
    rules, problems = [], []
    first: dict[str, tuple[str, int]] = {}
    for path in files:
        loaded, found, ids = load_rule_file(path, compiler)
        problems += found
        label = SHIPPED_LABEL if path == default_rules_path() else str(path)
        for rule_id, line in ids:
            if rule_id in first:
                problems.append(Problem(label, line, DUPLICATE_ID, f"rule id {rule_id!r} is already used at "
                                        f"{first[rule_id][0]}:{first[rule_id][1]}; give each rule its own id"))
            first.setdefault(rule_id, (label, line))
        rules += loaded
    order = sorted(range(len(rules)), key=lambda i: (-rules[i].priority, i))
    return RuleSet(tuple(rules[i] for i in order)), sorted(problems)


def rules_for(paths: list[Path] | None, no_rules: bool = False) -> RuleSet:
    """The rule set `--rules` and `--no-rules` ask for: these files, none, or the shipped rules."""
    if no_rules and paths:
        raise UsageError("--rules and --no-rules do not go together")
    return RuleSet(()) if no_rules else load_rules(paths)


def load_rules(paths: list[Path] | None = None) -> RuleSet:
    """The rules of these files or folders (the shipped default rules when none), in run order."""
    rules, problems = lint_rules(paths)
    if problems:
        raise RuleError(problems)
    return rules


# ------------------------------------------------------------------ applying

def evaluation_frame(turns: pl.DataFrame, features: pl.DataFrame, verdicts: pl.DataFrame,
                     neighbours: pl.DataFrame) -> pl.DataFrame:
    """What conditions read: the trace, the features (as f.<name>), the model's verdicts and
    the session neighbour index (`fpi.pipeline.features.neighbour_rows`)."""
    probabilities = verdicts["probabilities"].struct.unnest().rename({label: f"p_{label}" for label in LABELS})
    return pl.concat([
        with_every_member(turns).select("session_id", "turn_index",
                                        *[f.name for f in TURN_FIELDS if f.name not in ("session_id", "turn_index")]),
        features.drop("turn_id").rename(lambda name: f"f.{name}"),
        verdicts.select(model_failure_point="model_failure_point", model_confidence="confidence"),
        probabilities,
        neighbours,
    ], how="horizontal")


def rule_matches(frame: pl.DataFrame, rules: RuleSet) -> pl.DataFrame:
    """One boolean column per rule (named by its id, in run order): whether its condition holds."""
    return frame.lazy().select(**{rule.id: rule.condition for rule in rules.rules}).collect()


def decide(matches: pl.DataFrame, rules: RuleSet, model_failure_point: pl.Series) -> pl.DataFrame:
    """From the match of each rule: `failure_point` decided by the first rule that matched and applies (else
    the model's; a `recovered: STAGE` rule applies where the model names that stage or `correct`), `rule`
    (that rule's id or null), `rules_matched` and `recovered_from` (in stage order).
    The lists are built only for the turns some rule matched: most turns match none."""
    empty = pl.lit([], dtype=pl.List(pl.String))
    if not len(rules):
        return model_failure_point.alias("failure_point").to_frame().with_columns(
            rule=pl.lit(None, pl.String), rules_matched=empty, recovered_from=empty)
    c = pl.col
    ids = [rule.id for rule in rules.rules]
    recovered = [rule for rule in rules.rules if rule.effect == "recovered"]
    by_stage = [(stage, [rule.id for rule in recovered if rule.value == stage]) for stage in STAGES]
    recovered_from = (pl.concat_list([pl.when(pl.any_horizontal(of)).then(pl.lit(stage)) for stage, of in by_stage if of])
                      .list.drop_nulls() if recovered else empty)
    lists = matches.lazy().with_row_index("_row").filter(pl.any_horizontal(ids)).select(
        "_row", rules_matched=pl.concat_list([pl.when(c(i)).then(pl.lit(i)) for i in ids]).list.drop_nulls(),
        recovered_from=recovered_from)
    applies = {rule.id: c(rule.id) & c("_model").is_in([rule.value, "correct"]) if rule.effect == "recovered" else c(rule.id)
               for rule in rules.rules}  # a stage's recovery speaks for that stage, not for another's failure
    return matches.lazy().with_row_index("_row").with_columns(_model=model_failure_point).select(
        "_row",
        failure_point=pl.coalesce([pl.when(applies[rule.id]).then(pl.lit(rule.failure_point)) for rule in rules.rules])
        .fill_null(model_failure_point),
        rule=pl.coalesce([pl.when(applies[rule.id]).then(pl.lit(rule.id)) for rule in rules.rules]),
    ).join(lists, on="_row", how="left", maintain_order="left").select(
        "failure_point", "rule", c("rules_matched").fill_null(empty),
        recovered_from=pl.when(c("failure_point") == "correct").then(c("recovered_from").fill_null(empty)).otherwise(empty),
    ).collect()


# ------------------------------------------------------------------ auditing

@dataclass(frozen=True)
class RuleEffect:
    """What one rule did on labeled turns (see `audit_rules`)."""

    id: str
    effect: str
    source: str
    matched: int
    decided: int
    changed: int
    changed_right: int
    precision: float | None  # right among the turns where it overrode the model
    match_precision: float | None  # right among the turns it decided
    macro_f1_without: float


@dataclass(frozen=True)
class RuleAudit:
    """Macro-F1 of the model alone and with the rules, and each rule's part in it."""

    turns: int
    macro_f1_model: float
    macro_f1_with_rules: float
    rules: tuple[RuleEffect, ...]
    COLUMNS: ClassVar[tuple[str, ...]] = ("rule", "then", "matched", "decided", "precision", "changed", "changes_right",
                                          "macro_f1_without", "effect")

    def rows(self) -> list[dict]:
        """One row per rule, keyed by COLUMNS: what the table shows and the JSON holds, under the same names."""
        return [{"rule": r.id, "then": r.effect, "matched": r.matched, "decided": r.decided, "precision": r.match_precision,
                 "changed": r.changed, "changes_right": r.precision, "macro_f1_without": r.macro_f1_without,
                 "effect": round(self.macro_f1_with_rules - r.macro_f1_without, 6)} for r in self.rules]

    def to_json(self) -> dict:
        return {"turns": self.turns, "macro_f1_model": self.macro_f1_model,
                "macro_f1_with_rules": self.macro_f1_with_rules, "rules": self.rows()}



def audit_rules(matches: pl.DataFrame, rules: RuleSet, model_failure_point: pl.Series, gold: pl.Series) -> RuleAudit:
    """Per rule: turns matched, decided and changed, precision against gold, and macro-F1 with all rules
    but this one. Conditions are evaluated once (`matches`); leaving a rule out re-decides from them."""
    gold_list = gold.to_list()
    with_all = decide(matches, rules, model_failure_point)
    final, model = with_all["failure_point"], model_failure_point
    effects = []
    for rule in rules.rules:
        decided = with_all["rule"] == rule.id
        changed = decided & (final != model)
        right = changed & (final == gold)
        n_changed = int(changed.sum())
        without = decide(matches.drop(rule.id), rules.without(rule.id), model_failure_point)
        effects.append(RuleEffect(
            id=rule.id, effect=rule.describe_effect(), source=f"{rule.source}:{rule.line}",
            matched=int(matches[rule.id].sum()), decided=int(decided.sum()), changed=n_changed, changed_right=int(right.sum()),
            precision=round(int(right.sum()) / n_changed, 6) if n_changed else None,
            match_precision=round(float(np.mean((gold.filter(decided) == rule.failure_point).to_numpy())), 6)
            if decided.any() else None,
            macro_f1_without=evaluate(gold_list, without["failure_point"].to_list())["macro_f1"]))
    return RuleAudit(turns=len(gold_list), macro_f1_model=evaluate(gold_list, model.to_list())["macro_f1"],
                     macro_f1_with_rules=evaluate(gold_list, final.to_list())["macro_f1"], rules=tuple(effects))


def fields_reference() -> list[tuple[str, str]]:
    """(name, kind) of every field a condition can use, without the next./prev. copies."""
    return [(name, t.kind + (f" ({', '.join(t.values)})" if t.values else ""))
            for name, t in FIELD_TYPES.items() if not name.startswith(("next.", "prev."))]

