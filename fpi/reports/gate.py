"""The regression gate: a policy of floors, ceilings and regression limits checked
against the metrics of labeled traces (and a baseline), as a pass/fail CI step.

A policy parses into checks that are data: a metric path, an operator, and a threshold
or a limit relative to the baseline's value. One loop runs them all on two metrics files
(`fpi.contract.metrics.Metrics`), so the gate is a pure function of numbers, testable without
a model. The policy's JSON Schema is generated from the same vocabulary."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fpi.contract.errors import EXIT_FAIL, EXIT_OK, DocumentError, UsageError
from fpi.contract.metrics import Metrics
from fpi.contract.trace_format import COMPONENTS, LABELS
from fpi.contract.yaml_documents import YamlDocument, read_yaml, schema_problems

DEFAULT_MIN_SUPPORT = 30
LABEL_METRICS = ("precision", "recall", "f1")
SCORES = ("accuracy", "macro_f1")
RATE_SOURCES = ("auto", "predicted", "gold")


class PolicyError(DocumentError):
    """A gate policy that cannot be used, with every problem found."""


# ------------------------------------------------------------------ the policy schema

def _object(properties: dict, description: str = "", **extra: object) -> dict:
    out: dict = {"type": "object", "additionalProperties": False}
    if description:
        out["description"] = description
    out.update(extra)
    out["properties"] = properties
    return out


def policy_json_schema() -> dict:
    """JSON Schema (draft 2020-12) of a gate policy, generated from the labels and metrics."""
    share = {"type": "number", "minimum": 0, "maximum": 1}
    limit = {"$ref": "#/$defs/limit"}
    per_label = lambda value, description: _object(  # noqa: E731
        {key: _object({m: value for m in LABEL_METRICS}, minProperties=1) for key in (*LABELS, "all")}, description)
    per_component = lambda value, description: _object({key: value for key in (*COMPONENTS, "all")}, description)  # noqa: E731
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://fpi.dev/schemas/gate-policy-v1.schema.json",
        "title": "fpi gate policy v1",
        "description": "Checks `fpi gate` runs on labeled traces: model quality floors, assistant defect-rate ceilings, "
                       "and regression limits against a baseline metrics file (docs/ci.md).",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "version": {"const": 1, "description": "policy format version"},
            "min_support": {"type": "integer", "minimum": 0, "description": "per-label checks on fewer gold turns than this "
                            f"are skipped, not passed (default {DEFAULT_MIN_SUPPORT})"},
            "model": _object({**{s: share for s in SCORES}, "per_label": per_label(
                share, "minimum precision/recall/F1 per label; `all` applies to every label without its own entry")},
                "model quality floors (need gold labels)"),
            "defect_rates": _object({
                "source": {"enum": list(RATE_SOURCES), "description": "whose failure points: gold labels, the model's "
                           "(with rules), or gold when every turn has a label (default)"},
                "overall": share,
                "per_component": per_component(share, "maximum share of turns failing at each component")},
                "assistant quality ceilings: share of all turns"),
            "regression": _object({
                "metrics": _object({**{s: limit for s in SCORES},
                                    "per_label": per_label(limit, "maximum drop of precision/recall/F1 per label")},
                                   "maximum drop of each score"),
                "defect_rates": _object({"overall": limit, "per_component": per_component(limit, "maximum rise per component")},
                                        "maximum rise of each defect rate")},
                "limits against --baseline"),
        },
        "$defs": {"limit": {
            "description": "a number (absolute change) or {absolute: A} or {relative: R} (a fraction of the baseline value)",
            "anyOf": [{"type": "number", "minimum": 0},
                      _object({"absolute": {"type": "number", "minimum": 0}, "relative": {"type": "number", "minimum": 0}},
                              minProperties=1, maxProperties=1)]}},
    }


# ------------------------------------------------------------------ checks as data

@dataclass(frozen=True)
class RegressionLimit:
    """A threshold taken from the baseline: its value moved by an absolute amount or a fraction of it."""

    absolute: float | None = None
    relative: float | None = None

    @classmethod
    def parse(cls, limit: float | dict) -> RegressionLimit:
        if isinstance(limit, dict):
            return cls(absolute=limit.get("absolute"), relative=limit.get("relative"))
        return cls(absolute=float(limit))

    def allowed(self, baseline_value: float) -> tuple[float, str]:
        if self.relative is not None:
            return self.relative * baseline_value, f"{self.relative:g} of the baseline"
        return float(self.absolute or 0.0), "absolute"


@dataclass(frozen=True)
class CheckSpec:
    """One line of a policy: `value at metric op threshold` (or the baseline's value moved by `regression`).
    Metric paths read the metrics file's JSON; `{source}` stands for the defect-rate source."""

    name: str
    group: str  # model | defect_rate | regression
    metric: tuple[str, ...]
    op: str  # ">=" (a floor) or "<=" (a ceiling)
    line: int
    threshold: float | None = None
    regression: RegressionLimit | None = None
    support: tuple[str, ...] | None = None  # where the gold support of a per-label check is

    @property
    def label(self) -> str | None:
        """The label or component the check is on; None for the run as a whole."""
        for section in ("per_label", "per_component"):
            if section in self.metric:
                return self.metric[self.metric.index(section) + 1]
        return None


@dataclass(frozen=True)
class Policy:
    """A parsed gate policy: its checks and what they need."""

    source: str
    checks: tuple[CheckSpec, ...]
    min_support: int = DEFAULT_MIN_SUPPORT
    rate_source: str = "auto"
    lines: tuple[tuple[tuple[str, ...], int], ...] = ()  # the line of each section, for messages

    def line(self, *path: str) -> int:
        found = dict(self.lines)
        while path and path not in found:
            path = path[:-1]
        return found.get(path, 1)

    def has(self, group: str, section: str | None = None) -> bool:
        return any(c.group == group and (section is None or c.metric[0] == section) for c in self.checks)


def _label_entries(section: dict) -> list[tuple[str, str, Any, str]]:
    """(label, metric, value, the policy key that set it): each label's own entry, with `all`
    filling in the metrics it leaves out."""
    entries = []
    for label in LABELS:
        own, common = section.get(label) or {}, section.get("all") or {}
        for metric in LABEL_METRICS:
            if metric in own or metric in common:
                key = label if metric in own else "all"
                entries.append((label, metric, section[key][metric], key))
    return entries


def _component_entries(section: dict) -> list[tuple[str, Any, str]]:
    """(component, value, the policy key that set it): its own entry, else `all`."""
    return [(c, section[c if c in section else "all"], c if c in section else "all")
            for c in COMPONENTS if c in section or "all" in section]


def _checks(data: dict, line: Callable[..., int]) -> list[CheckSpec]:
    """Every check a policy document sets, in the order the gate reports them."""
    checks: list[CheckSpec] = []
    model = data.get("model") or {}
    for score in SCORES:
        if score in model:
            checks.append(CheckSpec(f"model.{score}", "model", ("metrics", score), ">=", line("model", score),
                                    threshold=model[score]))
    for label, metric, floor, key in _label_entries(model.get("per_label") or {}):
        checks.append(CheckSpec(f"model.{label}.{metric}", "model", ("metrics", "per_label", label, metric), ">=",
                                line("model", "per_label", key, metric), threshold=floor,
                                support=("metrics", "per_label", label, "support")))
    rates = data.get("defect_rates") or {}
    if "overall" in rates:
        checks.append(CheckSpec("defect_rate.overall", "defect_rate", ("defect_rates", "{source}", "overall"), "<=",
                                line("defect_rates", "overall"), threshold=rates["overall"]))
    for component, ceiling, key in _component_entries(rates.get("per_component") or {}):
        checks.append(CheckSpec(f"defect_rate.{component}", "defect_rate", ("defect_rates", "{source}", "per_component", component),
                                "<=", line("defect_rates", "per_component", key), threshold=ceiling))
    metrics = (data.get("regression") or {}).get("metrics") or {}
    for score in SCORES:
        if score in metrics:
            checks.append(CheckSpec(f"regression.{score}", "regression", ("metrics", score), ">=",
                                    line("regression", "metrics", score), regression=RegressionLimit.parse(metrics[score])))
    for label, metric, limit, key in _label_entries(metrics.get("per_label") or {}):
        checks.append(CheckSpec(f"regression.{label}.{metric}", "regression", ("metrics", "per_label", label, metric), ">=",
                                line("regression", "metrics", "per_label", key, metric), regression=RegressionLimit.parse(limit),
                                support=("metrics", "per_label", label, "support")))
    rate_limits = (data.get("regression") or {}).get("defect_rates") or {}
    if "overall" in rate_limits:
        checks.append(CheckSpec("regression.defect_rate.overall", "regression", ("defect_rates", "{source}", "overall"), "<=",
                                line("regression", "defect_rates", "overall"), regression=RegressionLimit.parse(rate_limits["overall"])))
    for component, limit, key in _component_entries(rate_limits.get("per_component") or {}):
        checks.append(CheckSpec(f"regression.defect_rate.{component}", "regression",
                                ("defect_rates", "{source}", "per_component", component), "<=",
                                line("regression", "defect_rates", "per_component", key), regression=RegressionLimit.parse(limit)))
    return checks


def _limit_hint(error) -> tuple[tuple, str] | None:
    path = tuple(error.absolute_path)
    if error.validator == "anyOf" and path and path[0] == "regression":
        where = "/".join(map(str, path))
        return path, (f"{where}: {error.instance!r} is not a limit; write a number >= 0 (an absolute change), "
                      "`{absolute: A}` or `{relative: R}` (a fraction of the baseline value)")
    return None


SECTIONS = (("model",), ("defect_rates",), ("defect_rates", "source"), ("regression",), ("regression", "metrics"),
            ("regression", "defect_rates"))


def policy_from_document(document: YamlDocument) -> Policy:
    """Check a parsed policy against the schema and turn it into checks."""
    if document.data is None:
        raise PolicyError([f"{document.label}:1: empty policy; set at least one of `model`, `defect_rates`, `regression` "
                           "(docs/ci.md)"])
    problems = schema_problems(document, policy_json_schema(), _limit_hint)
    if problems:
        raise PolicyError(problems)
    data = document.data
    assert isinstance(data, dict)
    checks = _checks(data, lambda *path: document.line(path))
    if not checks:
        raise PolicyError([f"{document.label}:1: the policy sets no checks; set at least one of `model`, `defect_rates`, "
                           "`regression` (docs/ci.md)"])
    min_support = data.get("min_support")
    return Policy(source=document.label, checks=tuple(checks),
                  min_support=DEFAULT_MIN_SUPPORT if min_support is None else int(min_support),
                  rate_source=(data.get("defect_rates") or {}).get("source", "auto"),
                  lines=tuple((path, document.line(path)) for path in SECTIONS))


def load_policy(path: str | Path) -> Policy:
    """Read and check a gate policy; every problem names file:line and how to mend it."""
    document, problems = read_yaml(Path(path))
    if document is None:
        raise PolicyError(problems)
    return policy_from_document(document)


# ------------------------------------------------------------------ running

@dataclass(frozen=True)
class Check:
    """One line of the gate's verdict: `value op threshold`, or skipped with the reason."""

    name: str
    group: str  # model | defect_rate | regression
    value: float | None
    op: str
    threshold: float | None
    status: str  # pass | fail | skipped
    detail: str
    policy_line: int

    def message(self) -> str:
        if self.status == "skipped":
            return f"{self.name}: skipped ({self.detail})"
        verdict = "holds" if self.status == "pass" else "fails"
        return f"{self.name} = {self.value:.4f}, must be {self.op} {self.threshold:.4f}: {verdict}" + (
            f" ({self.detail})" if self.detail else "")


def _at(document: dict, path: tuple[str, ...], source: str) -> object:
    node: object = document
    for key in path:
        node = node[source if key == "{source}" else key]  # type: ignore[index]
    return node


def _run_check(spec: CheckSpec, current: dict, baseline: dict | None, source: str, min_support: int) -> Check:
    value = float(_at(current, spec.metric, source))  # type: ignore[arg-type]
    rates = spec.metric[0] == "defect_rates"
    detail = f"{source} failure points" if rates else ""
    if spec.regression is not None:
        assert baseline is not None
        base_value = float(_at(baseline, spec.metric, source))  # type: ignore[arg-type]
        allowed, how = spec.regression.allowed(base_value)
        threshold = base_value + allowed if spec.op == "<=" else base_value - allowed
        detail = (f"baseline {base_value:.4f} + max rise {allowed:.4f} ({how}; {source})" if spec.op == "<="
                  else f"baseline {base_value:.4f} - max drop {allowed:.4f} ({how})")
    else:
        threshold = float(spec.threshold)  # type: ignore[arg-type]
    threshold = round(threshold, 6)
    if spec.support is not None:
        support = int(_at(current, spec.support, source))  # type: ignore[call-overload]
        if baseline is not None and spec.regression is not None:
            support = min(support, int(_at(baseline, spec.support, source)))  # type: ignore[call-overload]
        if support < min_support:
            return Check(spec.name, spec.group, None, spec.op, threshold, "skipped",
                         f"support {support} < min_support {min_support}", spec.line)
        if spec.regression is None:
            detail = f"support {support}"
    ok = value >= threshold if spec.op == ">=" else value <= threshold
    return Check(spec.name, spec.group, value, spec.op, threshold, "pass" if ok else "fail", detail, spec.line)


@dataclass
class GateResult:
    checks: list[Check]
    context: dict

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.checks)

    @property
    def passed(self) -> bool:
        return self.count("fail") == 0

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_FAIL

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"gate {verdict}: {len(self.checks)} checks, {self.count('pass')} passed, {self.count('fail')} failed, "
                f"{self.count('skipped')} skipped")

    def to_json(self) -> dict:
        return {"passed": self.passed, "exit_code": self.exit_code, "summary": self.summary(),
                "counts": {s: self.count(s) for s in ("pass", "fail", "skipped")},
                "context": self.context, "checks": [asdict(c) for c in self.checks]}

    def to_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"


def _rate_source(policy: Policy, current: Metrics) -> str:
    if policy.rate_source == "auto":
        return "gold" if "gold" in current.defect_rates else "predicted"
    if policy.rate_source not in current.defect_rates:
        raise UsageError(f"{policy.source}:{policy.line('defect_rates', 'source')}: defect_rates.source is gold "
                         "but the traces lack a gold `label` on every turn; label them or use `source: predicted`")
    return policy.rate_source


def run_gate(policy: Policy, current: Metrics, baseline: Metrics | None = None,
             possible: frozenset[str] = frozenset(LABELS)) -> GateResult:
    """Every check the policy sets, on the `current` metrics (and the baseline's), but those on a stage the logs
    lack: `possible` are the labels a turn of them could have (`fpi.contract.records.possible_labels`). A
    stage that ran on no turn has a defect rate of 0 that says nothing, so it is no check, and the context says so."""
    needs_gold = policy.has("model") or policy.has("regression", "metrics")
    if needs_gold and current.metrics is None:
        raise UsageError(f"{policy.source}:{policy.line('model' if policy.has('model') else 'regression')}: "
                         f"model quality checks need a gold `label` on every turn of {current.source}")
    if policy.has("regression") and baseline is None:
        raise UsageError(f"{policy.source}:{policy.line('regression')}: the policy sets regression limits; "
                         "give --baseline METRICS.json (written by `fpi eval --save-metrics`)")
    source = _rate_source(policy, current)
    if baseline is not None:
        if policy.has("regression", "metrics") and baseline.metrics is None:
            raise UsageError(f"{policy.source}:{policy.line('regression', 'metrics')}: regression.metrics needs a baseline "
                             f"measured on labeled traces, and {baseline.source} had none")
        if any(c.group == "regression" and c.metric[0] == "defect_rates" for c in policy.checks) \
                and source not in baseline.defect_rates:
            raise UsageError(f"{policy.source}:{policy.line('regression', 'defect_rates')}: the baseline has no {source} "
                             "defect rates to compare with; save it from labeled traces or use `defect_rates: {source: predicted}`")
    now, before = current.to_json(), baseline.to_json() if baseline is not None else None
    checks = [_run_check(spec, now, before, source, policy.min_support) for spec in policy.checks
              if (spec.regression is None or before is not None) and (spec.label is None or spec.label in possible)]
    context = {
        "policy": policy.source, "source": current.source, "turns": current.turns,
        "data_fingerprint": current.data_fingerprint, "model_fingerprint": current.model_fingerprint,
        "rules": current.rules, "defect_rate_source": source, "min_support": policy.min_support,
    }
    lacking = [stage for stage in COMPONENTS if stage not in possible]
    if lacking:
        context["stages_lacking"] = lacking
    if baseline is not None:
        context["baseline"] = {
            "source": baseline.source, "model_fingerprint": baseline.model_fingerprint,
            "same_data": baseline.data_fingerprint == current.data_fingerprint,
            "same_model": baseline.model_fingerprint == current.model_fingerprint,
            "same_rules": (baseline.rules or {}).get("fingerprint") == current.rules["fingerprint"],
        }
    return GateResult(checks, context)
