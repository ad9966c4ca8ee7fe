"""fpi: name the failure point of every turn of a voice or conversational assistant.

Names are imported on first use (PEP 562), so `import fpi` and `fpi --help` stay light:
reading records for a report never loads LightGBM or SHAP."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Batch": "fpi.pipeline", "Pipeline": "fpi.pipeline", "classify": "fpi.pipeline",
    "FpiError": "fpi.errors", "ModelError": "fpi.errors", "TraceError": "fpi.errors", "UsageError": "fpi.errors",
    "defect_rates": "fpi.metrics", "evaluate": "fpi.metrics", "Metrics": "fpi.metrics",
    "load_policy": "fpi.gate", "run_gate": "fpi.gate",
    "FEATURE_NAMES": "fpi.features", "build_features": "fpi.features",
    "LoadResult": "fpi.load", "load_traces": "fpi.load", "read_traces": "fpi.load",
    "FailurePointModel": "fpi.model",
    "read_records": "fpi.records", "write_records": "fpi.records",
    "build_report": "fpi.report", "Tally": "fpi.tally",
    "LABELS": "fpi.schema", "STAGES": "fpi.schema",
    "load_rules": "fpi.rules",
    "simulate": "fpi.simulator", "write_traces": "fpi.simulator",
}
__all__ = [
    "Batch", "FEATURE_NAMES", "FailurePointModel", "FpiError", "LABELS", "LoadResult", "Metrics", "ModelError",
    "Pipeline", "STAGES", "Tally", "TraceError", "UsageError", "build_features", "build_report", "classify", "defect_rates",
    "evaluate", "load_policy", "load_rules", "load_traces", "read_records", "read_traces", "run_gate", "simulate",
    "write_records", "write_traces",
]

if TYPE_CHECKING:
    from fpi.errors import FpiError, ModelError, TraceError, UsageError
    from fpi.metrics import Metrics, defect_rates, evaluate
    from fpi.features import FEATURE_NAMES, build_features
    from fpi.gate import load_policy, run_gate
    from fpi.load import LoadResult, load_traces, read_traces
    from fpi.model import FailurePointModel
    from fpi.pipeline import Batch, Pipeline, classify
    from fpi.records import read_records, write_records
    from fpi.report import build_report
    from fpi.rules import load_rules
    from fpi.schema import LABELS, STAGES
    from fpi.simulator import simulate, write_traces
    from fpi.tally import Tally


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from fpi.about import version

        return version()
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fpi' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
