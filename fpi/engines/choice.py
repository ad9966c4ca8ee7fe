"""Which engine runs a plan, chosen the same way for every command: Spark when asked for; else the
streamed engine for a file larger than a batch, and the in-memory engine for the rest (and for
commands that need what the pipeline computed, whole). Every engine reads what the readers read and
gives the same records, so the choice changes memory and time, never the output."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fpi.engines.plan import Plan, Run

DEFAULT_MASTER = "local[2]"  # the Spark master when none is given: two local cores
BATCH_TURNS = 200_000  # turns per batch of whole sessions: a larger input is streamed, batch by batch


class Engine(str, Enum):
    """Where a plan runs: `local`, this process (in memory, or streamed for a large input), or `spark`."""

    local = "local"
    spark = "spark"


def choose(plan: Plan, engine: Engine = Engine.local) -> str:
    """`memory`, `streamed` or `spark`: the engine that runs `plan`."""
    if engine is Engine.spark:
        return "spark"
    if plan.keep_batch or not _a_file(plan.source):
        return "memory"
    from fpi.engines.streamed import estimated_turns

    return "streamed" if estimated_turns(Path(plan.source)) > plan.batch_turns else "memory"


def run(plan: Plan, engine: Engine = Engine.local, master: str = DEFAULT_MASTER) -> Run:
    """Run `plan` on the engine `choose` names for it."""
    chosen = choose(plan, engine)
    if chosen == "spark":
        from fpi.engines import spark

        outcome = spark.run(plan, master)
    elif chosen == "streamed":
        from fpi.engines import streamed

        outcome = streamed.run(plan)
    else:
        from fpi.engines import memory

        outcome = memory.run(plan)
    outcome.profile = plan.pipeline.profile
    return outcome


def _a_file(source: object) -> bool:
    return isinstance(source, str | Path) and str(source) != "-" and Path(source).is_file()
