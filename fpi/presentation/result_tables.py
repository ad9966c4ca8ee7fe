"""Results as tables for people: failure-point counts, scores, the gate's checks, the rule
audit, SHAP importance and one turn's explanation. Content only; `display_tables` draws them."""

from __future__ import annotations

from collections.abc import Sequence

from fpi.presentation.display_tables import DisplayTable

SCORE_COLUMNS = ("precision", "recall", "F1", "support", "annotator F1", "p", "contribution", "running total", "value",
                 "threshold")
STATUS_STYLES = {"pass": "green", "fail": "bold red", "skipped": "yellow"}


def counts_table(counts: dict[str, int], total: int, possible: Sequence[str] | None = None) -> DisplayTable:
    """Turns per failure point; with `possible` (the labels a turn of the logs could have), no row for a stage they lack."""
    table = DisplayTable("counts", f"failure points of {total} turns", ["failure point", "turns", "share"])
    for label, count in counts.items():
        if possible is not None and label not in possible and not count:
            continue
        table.add(label, str(count), f"{100 * count / total:.1f}%" if total else "-")
    return table


def metrics_tables(metrics: dict, human: dict | None = None) -> list[DisplayTable]:
    """Per-label scores (and the annotator's F1), then the confusion matrix."""
    scores = DisplayTable("metrics", f"{metrics['turns']} turns: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}",
                   ["label", "precision", "recall", "F1", "support", *(["annotator F1"] if human else [])],
                   numeric_columns=SCORE_COLUMNS)
    for label, row in metrics["per_label"].items():
        predicted = row.get("predicted", 1)  # undefined where nothing was predicted, or nothing is to be recalled
        cells = [label, f"{row['precision']:.4f}" if predicted else "-", f"{row['recall']:.4f}" if row["support"] else "-",
                 f"{row['f1']:.4f}" if predicted or row["support"] else "-", str(row["support"])]
        if human:
            cells.append(f"{human['per_label'][label]['f1']:.4f}")
        scores.add(*cells)
    labels = metrics["confusion"]["labels"]
    confusion = DisplayTable("confusion", "confusion (rows gold, columns predicted)", ["gold \\ predicted", *labels])
    for label, row in zip(labels, metrics["confusion"]["matrix"], strict=True):
        confusion.add(label, *map(str, row))
    return [scores, confusion]


def gate_table(result) -> DisplayTable:
    """One row per check of a `fpi.reports.gate.GateResult`, titled by its verdict."""
    table = DisplayTable("gate", result.summary(), ["check", "value", "threshold", "status", "detail"], numeric_columns=SCORE_COLUMNS)
    for check in result.checks:
        table.add(check.name, "-" if check.value is None else f"{check.value:.4f}",
                  f"{check.op} {check.threshold:.4f}" if check.threshold is not None else "-", check.status, check.detail,
                  styles={3: STATUS_STYLES[check.status]})
    return table


def gate_context(result) -> list[str]:
    """What the gate measured and against what, as lines above its table."""
    context = result.context
    lines = [f"{context['source']}: {context['turns']} turns (data {context['data_fingerprint'][:12]}); "
             f"model {context['model_fingerprint'][:12]}; {len(context['rules']['ids'])} rules; policy {context['policy']}"]
    if "baseline" in context:
        base = context["baseline"]
        same = ", ".join(f"{'same' if base[f'same_{k}'] else 'different'} {k}" for k in ("data", "model", "rules"))
        lines.append(f"baseline {base['source']} (model {str(base['model_fingerprint'])[:12]}): {same}")
    if context.get("stages_lacking"):
        lacking = ", ".join(context["stages_lacking"])
        lines.append(f"no checks on {lacking}: these logs lack {'that stage' if len(context['stages_lacking']) == 1 else 'those stages'}")
    return lines


RULE_AUDIT_LEGEND = ("precision: share of the turns the rule decided whose gold label is what the rule says; "
                     "changes_right: the same over the turns where it overrode the model; "
                     "effect: macro-F1 with all rules minus without this one. --format json has the same columns.")


def rule_audit_table(audit) -> DisplayTable:
    """One row per rule of a `fpi.pipeline.rules.RuleAudit`, its columns named as in the JSON."""
    columns = audit.COLUMNS
    table = DisplayTable("rules", f"{audit.turns} turns: macro-F1 model {audit.macro_f1_model:.4f}, "
                                  f"model + rules {audit.macro_f1_with_rules:.4f}", list(columns), numeric_columns=columns[2:])
    for row in audit.rows():
        cells = {name: "-" if row[name] is None else f"{row[name]:.3f}" if name in ("precision", "changes_right")
                 else f"{row[name]:.4f}" if name == "macro_f1_without" else f"{row[name]:+.4f}" if name == "effect"
                 else str(row[name]) for name in columns}
        table.add(*cells.values(), styles={8: "green" if row["effect"] >= 0 else "red"})
    return table


def fields_table(fields: list[tuple[str, str]]) -> DisplayTable:
    table = DisplayTable("fields", "condition fields (also next.<field>, prev.<field>)", ["field", "type"])
    for name, kind in fields:
        table.add(name, kind)
    return table


def importance_table(numbers: dict) -> DisplayTable:
    table = DisplayTable("importance", f"mean |SHAP| per failure point over {numbers['turns_explained']} turns (top 8)",
                  ["failure point", "most important features"])
    for label, importance in numbers["mean_abs_shap"].items():
        table.add(label, ", ".join(f"{name} {value:.3f}" for name, value in list(importance.items())[:8]))
    return table


def _number(value: object) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def stages_table(turn: dict) -> DisplayTable:
    """The stages of one turn as the trace saw them, one line each."""
    wake, asr, nlu, er, result, feedback = (turn.get(k) for k in ("wake", "asr", "nlu", "er", "result", "feedback"))
    table = DisplayTable("stages", "", ["stage", "what it did"], plain=True)
    table.add("wake", "did not run" if wake is None else
              f"detected {wake['detected']}, score {_number(wake['score'])}, verified {_number(wake['verified'])}")
    table.add("asr", "did not run" if asr is None else f"{asr['text']!r} (confidence {_number(asr['confidence'])}"
              f", {len(asr['nbest'] or [])} n-best)")
    if nlu is None:
        table.add("nlu", "did not run")
    else:
        slots = ", ".join(f"{s['name']}={s['value']!r}" for s in nlu["slots"] or []) or "no slots"
        table.add("nlu", f"{nlu['domain']}/{nlu['intent']} (confidence {_number(nlu['confidence'])}); {slots}")
    if er is None:
        table.add("er", "did not run")
    else:
        table.add("er", "; ".join(f"{e['value']!r} -> {e['resolved_value']!r} {e['status']} ({_number(e['score'])})"
                                  for e in er["entities"]) or "no entities")
    table.add("result", "not logged" if result is None else
              f"{result['status']}, action {result['action']!r}, {_number(result['latency_ms'])} ms, says {result['response']!r}")
    if feedback is not None:
        table.add("feedback", f"barge-in {feedback['barge_in']}, explicit {feedback['explicit']}")
    return table


WATERFALL_ROWS = 12


def explanation_tables(explained, descriptions: dict[str, str]) -> list[DisplayTable]:
    """Probabilities, then the SHAP waterfall of a `fpi.pipeline.explain.TurnExplanation`."""
    probabilities = DisplayTable("probabilities", "probabilities", ["label", "p"], numeric_columns=SCORE_COLUMNS)
    for label, p in sorted(explained.probabilities.items(), key=lambda item: -item[1]):
        probabilities.add(label, f"{p:.4f}")
    waterfall = DisplayTable("waterfall", f"why {explained.explained_class}: SHAP contributions in log-odds",
                      ["feature", "value", "contribution", "running total"], numeric_columns=("contribution", "running total"))
    total = explained.expected
    waterfall.add("expected value", "", "", f"{total:+.4f}")
    shown, rest = explained.contributions[:WATERFALL_ROWS], explained.contributions[WATERFALL_ROWS:]
    for feature, value, contribution in shown:
        total += contribution
        name = f"{feature} ({descriptions[feature]})" if feature in descriptions else feature  # the `not logged` bar
        waterfall.add(name, "" if value is None else str(value), f"{contribution:+.4f}",
                      f"{total:+.4f}", styles={2: "green" if contribution > 0 else "red"})
    if rest:
        other = sum(c for _, _, c in rest)
        total += other
        waterfall.add(f"{len(rest)} other features", "", f"{other:+.4f}", f"{total:+.4f}")
    waterfall.add(f"score for {explained.explained_class}", "", "", f"{explained.score:+.4f}", styles={3: "bold"})
    return [probabilities, waterfall]
