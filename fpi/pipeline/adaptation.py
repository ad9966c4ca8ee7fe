"""How far a run adapts to the logs at hand before classifying them (`fpi classify --adapt`), named
without loading what does it (`fpi.pipeline.log_profile`, `fpi.pipeline.log_adaptation`)."""

from __future__ import annotations

from enum import Enum


class Adaptation(str, Enum):
    auto = "auto"  # the logs' label prior; on logs out of the model's depth, a model taught by their own confidences
    prior = "prior"  # the logs' label prior only
    off = "off"  # the model alone, as trained
