"""The regression gate: a policy of floors, ceilings and regression limits checked
against the metrics of labeled traces (and a baseline), as a pass/fail CI step.

A gate compares two metrics snapshots (`fpi.evaluate.metrics_snapshot`): the one
measured now and, optionally, a baseline saved by `fpi eval --save-metrics`. That
keeps the checks a pure function of numbers, testable without a model."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

from fpi.errors import EXIT_FAIL, EXIT_OK, DocumentError, UsageError
from fpi.evaluate import METRICS_FORMAT
from fpi.schema import LABELS
from fpi.yamldoc import YamlDocument, package_schema, read_yaml, schema_problems

POLICY_SCHEMA = "gate-policy-v1.schema.json"
DEFAULT_MIN_SUPPORT = 30
COMPONENTS = tuple(label for label in LABELS if label != "correct")
LABEL_METRICS = ("precision", "recall", "f1")


class PolicyError(DocumentError):
    """A gate policy that cannot be used, with every problem found."""


@dataclass(frozen=True)
class Policy:
    document: YamlDocument

    @property
    def source(self) -> str:
        return self.document.label

    @property
    def min_support(self) -> int:
        value = self.section().get("min_support")
        return DEFAULT_MIN_SUPPORT if value is None else int(value)

    def section(self, *path: str) -> dict:
        node = self.document.data
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node if node is not None else {}

    def line(self, *path: str) -> int:
        return self.document.line(path)


def _limit_hint(error) -> tuple[tuple, str] | None:
    path = tuple(error.absolute_path)
    if error.validator == "anyOf" and path and path[0] == "regression":
        where = "/".join(map(str, path))
        return path, (f"{where}: {error.instance!r} is not a limit; write a number >= 0 (an absolute change), "
                      "`{absolute: A}` or `{relative: R}` (a fraction of the baseline value)")
    return None


def load_policy(path: str | Path) -> Policy:
    """Read and check a gate policy; every problem names file:line and how to mend it."""
    document, problems = read_yaml(Path(path))
    if document is None:
        raise PolicyError(problems)
    if document.data is None:
        raise PolicyError([f"{document.label}:1: empty policy; set at least one of `model`, `defect_rates`, `regression` "
                           "(docs/ci.md)"])
    problems = schema_problems(document, package_schema(POLICY_SCHEMA), _limit_hint)
    if problems:
        raise PolicyError(problems)
    policy = Policy(document)
    if not any(policy.section(key) for key in ("model", "defect_rates", "regression")):
        raise PolicyError([f"{document.label}:1: the policy sets no checks; set at least one of `model`, `defect_rates`, "
                           "`regression` (docs/ci.md)"])
    return policy


def load_baseline(path: str | Path) -> dict:
    """A metrics file written by `fpi eval --save-metrics`."""
    label = str(path)
    try:
        baseline = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{label}: no such baseline file; write one with `fpi eval LABELED --save-metrics {label}`") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{label}: not a readable JSON metrics file ({exc})") from None
    if not isinstance(baseline, dict) or baseline.get("format") != "fpi-metrics":
        raise UsageError(f"{label}: not an fpi metrics file (expected \"format\": \"fpi-metrics\"); "
                         "write one with `fpi eval LABELED --save-metrics FILE`")
    if baseline.get("format_version") != METRICS_FORMAT:
        raise UsageError(f"{label}: metrics format {baseline.get('format_version')} is not supported (expected {METRICS_FORMAT}); "
                         "save the baseline again with this fpi")
    return baseline


# ------------------------------------------------------------------ checks

@dataclass(frozen=True)
class Check:
    """One line of the gate: `value op threshold`, or skipped with the reason."""

    name: str
    group: str  # model | defect_rate | regression
    value: float | None
    op: str  # ">=" (a floor) or "<=" (a ceiling)
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


def _compare(name: str, group: str, value: float, op: str, threshold: float, line: int, detail: str = "") -> Check:
    threshold = round(threshold, 6)
    ok = value >= threshold if op == ">=" else value <= threshold
    return Check(name, group, value, op, threshold, "pass" if ok else "fail", detail, line)


def _skip(name: str, group: str, op: str, threshold: float | None, line: int, reason: str) -> Check:
    return Check(name, group, None, op, threshold, "skipped", reason, line)


def _label_entries(section: dict) -> list[tuple[str, str, float | dict, str]]:
    """(label, metric, threshold or limit, the policy key that set it): each label's own
    entry, with `all` filling in the metrics it leaves out."""
    entries = []
    for label in LABELS:
        own, common = section.get(label) or {}, section.get("all") or {}
        for metric in LABEL_METRICS:
            if metric in own or metric in common:
                key = label if metric in own else "all"
                entries.append((label, metric, section[key][metric], key))
    return entries


def _component_entries(section: dict) -> list[tuple[str, float | dict, str]]:
    """(component, ceiling or limit, the policy key that set it): its own entry, else `all`."""
    return [(c, section[c if c in section else "all"], c if c in section else "all")
            for c in COMPONENTS if c in section or "all" in section]


def _allowed(limit: float | dict, baseline_value: float) -> tuple[float, str]:
    if isinstance(limit, dict) and "relative" in limit:
        return limit["relative"] * baseline_value, f"{limit['relative']:g} of the baseline"
    amount = limit["absolute"] if isinstance(limit, dict) else limit
    return float(amount), "absolute"


def _rate_source(policy: Policy, current: dict) -> str:
    wanted = policy.section("defect_rates").get("source", "auto")
    if wanted == "auto":
        return "gold" if "gold" in current["defect_rates"] else "predicted"
    if wanted not in current["defect_rates"]:
        raise UsageError(f"{policy.source}:{policy.line('defect_rates', 'source')}: defect_rates.source is gold "
                         "but the traces lack a gold `label` on every turn; label them or use `source: predicted`")
    return wanted


def _model_checks(policy: Policy, current: dict) -> list[Check]:
    section = policy.section("model")
    checks = []
    metrics = current["metrics"]
    for metric in ("accuracy", "macro_f1"):
        if metric in section:
            checks.append(_compare(f"model.{metric}", "model", metrics[metric], ">=", section[metric], policy.line("model", metric)))
    for label, metric, floor, key in _label_entries(section.get("per_label") or {}):
        support = metrics["per_label"][label]["support"]
        line = policy.line("model", "per_label", key, metric)
        name = f"model.{label}.{metric}"
        if support < policy.min_support:
            checks.append(_skip(name, "model", ">=", floor, line, f"support {support} < min_support {policy.min_support}"))
        else:
            checks.append(_compare(name, "model", metrics["per_label"][label][metric], ">=", floor, line, f"support {support}"))
    return checks


def _defect_checks(policy: Policy, current: dict, source: str) -> list[Check]:
    section = policy.section("defect_rates")
    rates = current["defect_rates"][source]
    checks = []
    if "overall" in section:
        checks.append(_compare("defect_rate.overall", "defect_rate", rates["overall"], "<=", section["overall"],
                               policy.line("defect_rates", "overall"), f"{source} failure points"))
    for component, ceiling, key in _component_entries(section.get("per_component") or {}):
        checks.append(_compare(f"defect_rate.{component}", "defect_rate", rates["per_component"][component], "<=",
                               ceiling, policy.line("defect_rates", "per_component", key), f"{source} failure points"))
    return checks


def _regression_checks(policy: Policy, current: dict, baseline: dict, source: str) -> list[Check]:
    checks = []
    metrics_limits = policy.section("regression", "metrics")
    if metrics_limits:
        if "metrics" not in baseline:
            raise UsageError(f"{policy.source}:{policy.line('regression', 'metrics')}: regression.metrics needs a baseline "
                             f"measured on labeled traces, and {baseline.get('source')} had none")
        now, before = current["metrics"], baseline["metrics"]
        for metric in ("accuracy", "macro_f1"):
            if metric in metrics_limits:
                allowed, how = _allowed(metrics_limits[metric], before[metric])
                checks.append(_compare(f"regression.{metric}", "regression", now[metric], ">=", before[metric] - allowed,
                                       policy.line("regression", "metrics", metric),
                                       f"baseline {before[metric]:.4f} - max drop {allowed:.4f} ({how})"))
        for label, metric, limit, key in _label_entries(metrics_limits.get("per_label") or {}):
            support = min(now["per_label"][label]["support"], before["per_label"][label]["support"])
            base_value = before["per_label"][label][metric]
            allowed, how = _allowed(limit, base_value)
            line = policy.line("regression", "metrics", "per_label", key, metric)
            name = f"regression.{label}.{metric}"
            if support < policy.min_support:
                checks.append(_skip(name, "regression", ">=", round(base_value - allowed, 6), line,
                                    f"support {support} < min_support {policy.min_support}"))
            else:
                checks.append(_compare(name, "regression", now["per_label"][label][metric], ">=", base_value - allowed, line,
                                       f"baseline {base_value:.4f} - max drop {allowed:.4f} ({how})"))
    rate_limits = policy.section("regression", "defect_rates")
    if rate_limits:
        if source not in baseline.get("defect_rates", {}):
            raise UsageError(f"{policy.source}:{policy.line('regression', 'defect_rates')}: the baseline has no {source} "
                             "defect rates to compare with; save it from labeled traces or use `defect_rates: {source: predicted}`")
        now, before = current["defect_rates"][source], baseline["defect_rates"][source]
        pairs = []
        if "overall" in rate_limits:
            pairs.append(("overall", now["overall"], before["overall"], rate_limits["overall"], ("overall",)))
        for component, limit, key in _component_entries(rate_limits.get("per_component") or {}):
            pairs.append((component, now["per_component"][component], before["per_component"][component],
                          limit, ("per_component", key)))
        for name, value, base_value, limit, path in pairs:
            allowed, how = _allowed(limit, base_value)
            checks.append(_compare(f"regression.defect_rate.{name}", "regression", value, "<=", base_value + allowed,
                                   policy.line("regression", "defect_rates", *path),
                                   f"baseline {base_value:.4f} + max rise {allowed:.4f} ({how}; {source})"))
    return checks


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


def run_gate(policy: Policy, current: dict, baseline: dict | None = None) -> GateResult:
    """Every check the policy sets, on the `current` metrics snapshot (and the baseline)."""
    needs_gold = policy.section("model") or policy.section("regression", "metrics")
    if needs_gold and "metrics" not in current:
        raise UsageError(f"{policy.source}:{policy.line('model' if policy.section('model') else 'regression')}: "
                         f"model quality checks need a gold `label` on every turn of {current['source']}")
    if policy.section("regression") and baseline is None:
        raise UsageError(f"{policy.source}:{policy.line('regression')}: the policy sets regression limits; "
                         "give --baseline METRICS.json (written by `fpi eval --save-metrics`)")
    source = _rate_source(policy, current)
    checks = _model_checks(policy, current) if policy.section("model") else []
    if policy.section("defect_rates"):
        checks += _defect_checks(policy, current, source)
    if baseline is not None and policy.section("regression"):
        checks += _regression_checks(policy, current, baseline, source)
    context = {
        "policy": policy.source, "source": current["source"], "turns": current["turns"],
        "data_fingerprint": current["data_fingerprint"], "model_fingerprint": current["model_fingerprint"],
        "rules": current["rules"], "defect_rate_source": source, "min_support": policy.min_support,
    }
    if baseline is not None:
        context["baseline"] = {
            "source": baseline.get("source"), "model_fingerprint": baseline.get("model_fingerprint"),
            "same_data": baseline.get("data_fingerprint") == current["data_fingerprint"],
            "same_model": baseline.get("model_fingerprint") == current["model_fingerprint"],
            "same_rules": (baseline.get("rules") or {}).get("fingerprint") == current["rules"]["fingerprint"],
        }
    return GateResult(checks, context)


# ------------------------------------------------------------------ outputs

def junit_xml(result: GateResult) -> bytes:
    """One testsuite per group of checks, one testcase per check (Jenkins/Ant JUnit XML)."""
    groups = {"model": "model quality floors", "defect_rate": "defect-rate ceilings", "regression": "regression limits"}
    root = ET.Element("testsuites", name="fpi gate", tests=str(len(result.checks)), failures=str(result.count("fail")),
                      errors="0", time="0")
    for group, title in groups.items():
        checks = [c for c in result.checks if c.group == group]
        if not checks:
            continue
        suite = ET.SubElement(root, "testsuite", name=f"fpi gate: {title}", tests=str(len(checks)),
                              failures=str(sum(c.status == "fail" for c in checks)), errors="0",
                              skipped=str(sum(c.status == "skipped" for c in checks)), time="0")
        properties = ET.SubElement(suite, "properties")
        for key in ("policy", "source", "data_fingerprint", "model_fingerprint"):
            ET.SubElement(properties, "property", name=key, value=str(result.context[key]))
        for check in checks:
            threshold = "-" if check.threshold is None else f"{check.threshold:.4f}"
            case = ET.SubElement(suite, "testcase", classname=f"fpi.gate.{group}", name=f"{check.name} {check.op} {threshold}",
                                 time="0")
            if check.status == "fail":
                failure = ET.SubElement(case, "failure", type="threshold", message=check.message())
                failure.text = f"value {check.value:.6f}, threshold {check.op} {check.threshold:.6f}; {check.detail}\n" \
                               f"policy {result.context['policy']}:{check.policy_line}"
            elif check.status == "skipped":
                ET.SubElement(case, "skipped", message=check.detail)
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(result: GateResult) -> str:
    """GitHub Actions workflow commands: an error per failed check, a warning per skipped one,
    each pointing at the policy line, and a notice with the summary."""
    lines = []
    for check in result.checks:
        if check.status == "pass":
            continue
        level = "error" if check.status == "fail" else "warning"
        lines.append(f"::{level} file={_escape_property(result.context['policy'])},line={check.policy_line},"
                     f"title={_escape_property('fpi gate ' + check.name)}::{_escape_data(check.message())}")
    lines.append(f"::notice title=fpi gate::{_escape_data(result.summary())}")
    return "\n".join(lines) + "\n"
