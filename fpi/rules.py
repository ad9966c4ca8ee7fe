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

import jsonschema
import numpy as np
import polars as pl

from fpi.conditions import Compiler, ConditionError, FieldType
from fpi.errors import DocumentError
from fpi.evaluate import evaluate
from fpi.features import CATEGORICAL, FEATURES, neighbour_rows, next_of, prev_of
from fpi.schema import EXPLICIT_FEEDBACK, LABELS, RESULT_STATUSES, STAGES, TURN_FIELDS
from fpi.yamldoc import package_schema, read_yaml, schema_problems

RULES_SCHEMA = "rules-v1.schema.json"
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


def load_rule_file(path: Path, compiler: Compiler | None = None) -> tuple[list[Rule], list[str]]:
    """Rules of one file and every problem found in it (schema, conditions, effects)."""
    document, problems = read_yaml(path)
    if document is None:
        return [], problems
    if document.data is None:
        return [], [f"{document.label}:1: empty rule file; expected `rules:` with a list of rules"]
    problems = schema_problems(document, package_schema(RULES_SCHEMA), _rule_hint)
    if problems:
        return [], problems
    compiler = compiler or Compiler(FIELD_TYPES)
    rules, found = [], []
    for i, raw in enumerate(document.data["rules"]):
        (effect, value), = raw["then"].items()
        try:
            compiler.compile(raw["when"])
        except ConditionError as exc:
            column = f", column {exc.column}" if exc.column else ""
            hint = f"; {exc.hint}" if exc.hint else ""
            found.append((document.line(("rules", i, "when")), f"rule {raw['id']!r}: when{column}: {exc}{hint}"))
        rules.append(Rule(id=raw["id"], description=raw["description"], when=raw["when"], effect=effect, value=str(value),
                          priority=float(raw.get("priority", 0)), source=document.label, line=document.line(("rules", i)),
                          metadata=raw.get("metadata") or {}))
    return rules, [f"{document.label}:{line}: {message}" for line, message in sorted(found)]


def _rule_files(paths: list[Path]) -> list[Path]:
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


def lint_rules(paths: list[Path] | None = None) -> tuple[RuleSet, list[str]]:
    """Load rule files and return the rules with every problem found (none means usable)."""
    files = _rule_files(paths or [default_rules_path()])
    compiler = Compiler(FIELD_TYPES)
    rules, problems = [], []
    seen: dict[str, Rule] = {}
    for path in files:
        loaded, found = load_rule_file(path, compiler)
        problems += found
        for rule in loaded:
            if rule.id in seen:
                first = seen[rule.id]
                problems.append(f"{rule.source}:{rule.line}: rule id {rule.id!r} is already used at {first.source}:{first.line}; "
                                "give each rule its own id")
            seen.setdefault(rule.id, rule)
            rules.append(rule)
    order = sorted(range(len(rules)), key=lambda i: (-rules[i].priority, i))
    return RuleSet(tuple(rules[i] for i in order)), problems


def load_rules(paths: list[Path] | None = None) -> RuleSet:
    """The rules of these files or folders (the shipped default rules when none), in run order."""
    rules, problems = lint_rules(paths)
    if problems:
        raise RuleError(problems)
    return rules


# ------------------------------------------------------------------ applying

def evaluation_frame(turns: pl.DataFrame, features: pl.DataFrame, records: pl.DataFrame) -> pl.DataFrame:
    """What conditions read: the trace, the features (as f.<name>) and the model's output."""
    probabilities = records["probabilities"].struct.unnest().rename({label: f"p_{label}" for label in LABELS})
    return pl.concat([
        turns.select("session_id", "turn_index", *[f.name for f in TURN_FIELDS if f.name not in ("session_id", "turn_index")]),
        features.drop("turn_id").rename(lambda name: f"f.{name}"),
        records.select(model_failure_point="model_failure_point", model_confidence="confidence"),
        probabilities,
        neighbour_rows(turns),
    ], how="horizontal")


def apply_rules(records: pl.DataFrame, turns: pl.DataFrame, features: pl.DataFrame, rules: RuleSet) -> pl.DataFrame:
    """Records with `failure_point` decided by the first matching rule (else the model's),
    `rule` (that rule's id or null), `rules_matched` and `recovered_from`. Same turns, same order."""
    if not len(rules):
        return records.with_columns(rule=pl.lit(None, dtype=pl.String), rules_matched=pl.lit([], dtype=pl.List(pl.String)),
                                    recovered_from=pl.lit([], dtype=pl.List(pl.String)))
    compiler = Compiler(FIELD_TYPES)
    matches = {f"m{i}": compiler.compile(rule.when) for i, rule in enumerate(rules.rules)}
    frame = evaluation_frame(turns, features, records).lazy().select(**matches)
    c = pl.col
    first = pl.coalesce([pl.when(c(f"m{i}")).then(pl.lit(i)) for i in range(len(rules))])
    decided_label = pl.coalesce([pl.when(c(f"m{i}")).then(pl.lit(rule.failure_point)) for i, rule in enumerate(rules.rules)])
    recovered = [(i, rule) for i, rule in enumerate(rules.rules) if rule.effect == "recovered"]
    stage_order = {stage: n for n, stage in enumerate(STAGES)}
    recovered_from = (pl.concat_list([pl.when(c(f"m{i}")).then(pl.lit(rule.value)) for i, rule in recovered])
                      .list.drop_nulls().list.unique().list.eval(pl.element().sort_by(pl.element().replace_strict(stage_order)))
                      if recovered else pl.lit([], dtype=pl.List(pl.String)))
    decisions = frame.select(
        rule=first.replace_strict(list(range(len(rules))), [r.id for r in rules.rules], default=None, return_dtype=pl.String),
        decided=decided_label,
        rules_matched=pl.concat_list([pl.when(c(f"m{i}")).then(pl.lit(rule.id)) for i, rule in enumerate(rules.rules)]).list.drop_nulls(),
        recovered_from=recovered_from,
    ).collect()
    final = decisions["decided"].fill_null(records["model_failure_point"])
    return records.with_columns(
        failure_point=final,
        rule=decisions["rule"],
        rules_matched=decisions["rules_matched"],
        recovered_from=pl.when(final == "correct").then(decisions["recovered_from"]).otherwise(pl.lit([], dtype=pl.List(pl.String))),
    )


# ------------------------------------------------------------------ auditing

def check_rules(records: pl.DataFrame, turns: pl.DataFrame, features: pl.DataFrame, rules: RuleSet) -> dict:
    """Per rule: turns matched, turns it changed, precision of those changes against gold,
    and macro-F1 of the model alone, with all rules, and with all rules but this one."""
    gold = turns["label"].to_list()
    model_only = evaluate(gold, records["model_failure_point"].to_list())["macro_f1"]
    with_all = apply_rules(records, turns, features, rules)
    all_f1 = evaluate(gold, with_all["failure_point"].to_list())["macro_f1"]
    gold_series = turns["label"]
    rows = []
    for rule in rules.rules:
        matched = with_all["rules_matched"].list.contains(rule.id)
        decided = with_all["rule"] == rule.id
        changed = decided & (with_all["failure_point"] != with_all["model_failure_point"])
        right = changed & (with_all["failure_point"] == gold_series)
        n_changed = int(changed.sum())
        without = apply_rules(records, turns, features, rules.without(rule.id))
        rows.append({
            "id": rule.id, "effect": rule.describe_effect(), "source": f"{rule.source}:{rule.line}",
            "matched": int(matched.sum()), "decided": int(decided.sum()), "changed": n_changed,
            "changed_right": int(right.sum()),
            "precision": round(int(right.sum()) / n_changed, 6) if n_changed else None,
            "match_precision": round(float(np.mean((gold_series.filter(decided) == rule.failure_point).to_numpy())), 6)
            if decided.any() else None,
            "macro_f1_without": evaluate(gold, without["failure_point"].to_list())["macro_f1"],
        })
    return {"turns": len(gold), "macro_f1_model": model_only, "macro_f1_with_rules": all_f1, "rules": rows}


def fields_reference() -> list[tuple[str, str]]:
    """(name, kind) of every field a condition can use, without the next./prev. copies."""
    return [(name, t.kind + (f" ({', '.join(t.values)})" if t.values else ""))
            for name, t in FIELD_TYPES.items() if not name.startswith(("next.", "prev."))]

