"""fpi: name the failure point of every turn of a voice or conversational assistant."""

from fpi.classify import classify
from fpi.errors import FpiError, ModelError, TraceError, UsageError
from fpi.evaluate import defect_rates, evaluate, metrics_snapshot
from fpi.gate import load_policy, run_gate
from fpi.features import FEATURE_NAMES, build_features
from fpi.load import LoadResult, load_traces, read_traces
from fpi.model import FailurePointModel
from fpi.report import build_report, read_records
from fpi.schema import LABELS, STAGES
from fpi.simulate import simulate, write_traces

__all__ = [
    "FEATURE_NAMES", "LABELS", "STAGES", "FailurePointModel", "FpiError", "LoadResult", "ModelError",
    "TraceError", "UsageError", "build_features", "build_report", "classify", "defect_rates", "evaluate", "load_policy", "load_traces",
    "metrics_snapshot", "read_records", "read_traces", "run_gate", "simulate", "write_traces",
]
