"""What predicts a run's verdicts: LightGBM, or the model's trees compiled to native code
(`fpi.pipeline.compiled_trees`: the same scores bit for bit, about 3.5 times faster, compiled once
per model and machine); `auto` takes compiled trees already in the cache for a run of any size (they
load in a fraction of a second, and LightGBM's imports alone take longer), and compiles them only
for runs large enough to pay for the compile."""

from __future__ import annotations

from enum import Enum

COMPILE_FROM = 300_000  # turns in a run; below, LightGBM predicts them faster than the trees compile


class Predictor(str, Enum):
    auto = "auto"
    native = "native"
    lightgbm = "lightgbm"

    def compiles(self, turns: int) -> bool:
        """Whether a run of `turns` turns compiles the trees when the cache does not have them."""
        return self is Predictor.native or (self is Predictor.auto and turns >= COMPILE_FROM)
