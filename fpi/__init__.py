"""fpi: name the failure point of every turn of a voice or conversational assistant.

Names are imported on first use (PEP 562), so `import fpi` and `fpi --help` stay light:
reading records for a report never loads LightGBM or SHAP."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Batch": "fpi.pipeline.classify", "Pipeline": "fpi.pipeline.classify", "classify": "fpi.pipeline.classify",
    "FpiError": "fpi.contract.errors", "ModelError": "fpi.contract.errors", "TraceError": "fpi.contract.errors", "UsageError": "fpi.contract.errors",
    "defect_rates": "fpi.contract.metrics", "evaluate": "fpi.contract.metrics", "Metrics": "fpi.contract.metrics",
    "load_policy": "fpi.reports.gate", "run_gate": "fpi.reports.gate",
    "FEATURE_NAMES": "fpi.pipeline.features", "build_features": "fpi.pipeline.features",
    "LoadResult": "fpi.io.read_result", "load_traces": "fpi.io.traces", "read_traces": "fpi.io.traces",
    "FailurePointModel": "fpi.pipeline.model",
    "read_records": "fpi.io.records_files", "write_records": "fpi.io.records_files",
    "build_report": "fpi.reports.failure_report", "Tally": "fpi.reports.counts",
    "LABELS": "fpi.contract.trace_format", "STAGES": "fpi.contract.trace_format",
    "load_rules": "fpi.pipeline.rules",
    "simulate": "fpi.simulation.simulator", "write_traces": "fpi.simulation.simulator",
}
__all__ = [
    "Batch", "FEATURE_NAMES", "FailurePointModel", "FpiError", "LABELS", "LoadResult", "Metrics", "ModelError",
    "Pipeline", "STAGES", "Tally", "TraceError", "UsageError", "build_features", "build_report", "classify", "defect_rates",
    "evaluate", "load_policy", "load_rules", "load_traces", "read_records", "read_traces", "run_gate", "simulate",
    "write_records", "write_traces",
]

if TYPE_CHECKING:
    from fpi.contract.errors import FpiError, ModelError, TraceError, UsageError
    from fpi.contract.metrics import Metrics, defect_rates, evaluate
    from fpi.pipeline.features import FEATURE_NAMES, build_features
    from fpi.reports.gate import load_policy, run_gate
    from fpi.io.read_result import LoadResult
    from fpi.io.traces import load_traces, read_traces
    from fpi.pipeline.model import FailurePointModel
    from fpi.pipeline.classify import Batch, Pipeline, classify
    from fpi.io.records_files import read_records, write_records
    from fpi.reports.failure_report import build_report
    from fpi.pipeline.rules import load_rules
    from fpi.contract.trace_format import LABELS, STAGES
    from fpi.simulation.simulator import simulate, write_traces
    from fpi.reports.counts import Tally


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from fpi.contract.distribution import version

        return version()
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fpi' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
