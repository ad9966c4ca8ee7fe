"""`fpi simulate`: labeled traces from the causal simulator."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from fpi.cli.common import run, say
from fpi.contract.errors import UsageError


class TraceForm(str, Enum):
    turn = "turn"
    stage = "stage"


def simulate(
    n: Annotated[int, typer.Option("-n", "--turns", min=1, help="Number of turns.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same traces.")] = 0,
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file: .jsonl, .jsonl.gz or .parquet.")] = Path("traces.jsonl"),
    annotator_noise: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Also write `human_label`: one annotator "
                                                          "with this error rate, mistakes concentrated on hard turns.")] = None,
    error_rate: Annotated[list[str] | None, typer.Option(help="Base error rate of a stage, STAGE=P (repeatable), "
                                                         "e.g. --error-rate asr=0.2.")] = None,
    form: Annotated[TraceForm, typer.Option(help="turn: one line per turn; stage: one line per stage event.")] = TraceForm.turn,
    profile: Annotated[str, typer.Option(help="The assistant: default, telephone-slot-filling, push-to-talk, in-car, "
                                         "terse-speaker, llm-agent (docs/simulator.md), or random: a new random assistant every "
                                         "--batch-turns turns.")] = "default",
    batch_turns: Annotated[int, typer.Option(min=100, help="With --profile random: turns per random assistant.")] = 5_000,
) -> None:
    """Write labeled traces from a causal simulation of an assistant and its users."""
    def work() -> None:
        from fpi.presentation.progress import steps
        from fpi.contract.trace_format import LABELS
        from fpi.simulation.simulator import parse_error_rates, simulate, write_traces

        from fpi.simulation.profiles import PROFILES

        from fpi.simulation.simulator import TRACE_SUFFIXES

        if not str(output).lower().endswith(TRACE_SUFFIXES):
            raise UsageError(f"{output}: trace files are {', '.join(TRACE_SUFFIXES)}; name the output so")
        rates = parse_error_rates(error_rate or [])
        if profile != "random" and profile not in PROFILES:
            raise UsageError(f"--profile {profile}: unknown profile; expected one of {', '.join([*PROFILES, 'random'])}")
        with steps(2, "simulating") as bar:
            frame = simulate(n, seed=seed, error_rates=rates, annotator_noise=annotator_noise, profile=profile,
                             batch_turns=batch_turns)
            bar.advance("writing")
            write_traces(frame, output, form=form.value)
            bar.advance()
        counts = dict(frame["label"].value_counts().iter_rows())
        mix = ", ".join(f"{label} {counts.get(label, 0)}" for label in LABELS)
        say(f"wrote {n} turns to {output} ({mix})")
    run(work)
