"""Ways of learning from a team's labels (`fpi train --method`), named without loading what fits them
(`fpi.learning.training`)."""

from __future__ import annotations

from enum import Enum


class Method(str, Enum):
    auto = "auto"  # continue on logs like the base's training data, unless scratch is clearly better; else scratch
    scratch = "scratch"
    continue_ = "continue"  # boosting on from the base model
    weak = "weak"  # from scratch, with weak labels from the base model where users' reactions agree
