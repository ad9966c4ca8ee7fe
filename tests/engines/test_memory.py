"""The in-memory engine reports a pipeline run phase by phase in turns, every phase ending complete."""

from __future__ import annotations

import pytest

from fpi import Pipeline, simulate
from fpi.engines.memory import PipelinePhases


@pytest.mark.slow
def test_a_pipeline_run_reports_each_phase_in_turns_and_ends_complete():
    turns = simulate(400, seed=8)
    heard: list[tuple[str, int, int | None]] = []
    phases = PipelinePhases(lambda phase, done, total: heard.append((phase, done, total)), turns.height)
    records = Pipeline(explain_top_k=2).run(turns, on_step=phases.step, on_explained=phases.explained).records
    phases.finish()
    names = list(dict.fromkeys(phase for phase, _, _ in heard))
    assert names == ["preparing", "features", "predicting", "rules", "explaining"]
    last = {phase: (done, total) for phase, done, total in heard}
    assert all(done == total for done, total in last.values())  # no phase left half done
    explained = [(done, total) for phase, done, total in heard if phase == "explaining"][1:]
    wanted = records.filter((records["failure_point"] != "correct") & records["rule"].is_null()).height
    assert explained[-1] == (wanted, wanted) and [d for d, _ in explained] == sorted(d for d, _ in explained)
