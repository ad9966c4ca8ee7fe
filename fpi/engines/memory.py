"""The in-memory engine: the whole input read by the readers (any format, any mapping) and
classified as one batch of whole sessions; the pipeline fits its quantile tables on that batch.
What the pipeline computed can be kept (`Plan.keep_batch`) for commands that look further: one
turn's explanation, the turns worth labeling, a rule audit."""

from __future__ import annotations

from fpi.engines.plan import Plan, Progress, Run, Sinks
from fpi.engines.whole_input import read_whole
from fpi.io.traces import turns_fingerprint


def run(plan: Plan) -> Run:
    """Read, classify and write the whole input at once."""
    plan.progress("reading", 0, None)
    read = read_whole(plan)
    turns = read.turns.height
    plan.progress("reading", turns, turns)
    outcome = Run.of_read(read, "memory")
    phases = PipelinePhases(plan.progress, turns)
    with Sinks(plan.sinks, read) as sinks:
        batch = plan.pipeline.run(read.turns, on_step=phases.step, on_explained=phases.explained)
        outcome.count(batch.records)
        if sinks:
            phases.step("writing")
            sinks.write(batch.records)
            sinks.finish(batch.records.head(0))
    phases.finish()
    if plan.fingerprint:
        outcome.fingerprint = turns_fingerprint(batch.turns)
    if plan.keep_batch:
        outcome.batch = batch
    return outcome


class PipelinePhases:
    """A pipeline run as progress phases: each step the pipeline announces starts at 0 of its turns and is
    complete when the next one starts; explaining counts the turns it explains as it goes."""

    def __init__(self, update: Progress, turns: int):
        self._update, self._turns = update, turns
        self._phase, self._total = "", turns

    def step(self, phase: str) -> None:
        self.finish()
        self._phase, self._total = phase, self._turns
        self._update(phase, 0, self._turns)

    def explained(self, done: int, total: int) -> None:
        self._total = total
        self._update(self._phase, done, total)

    def finish(self) -> None:
        if self._phase:
            self._update(self._phase, self._total, self._total)
