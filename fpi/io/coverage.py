"""What a mapping found in the logs: for each declared stage and each mapped field, the share of turns
that got a value. A mapping can be valid and still read nothing (a selector `{name: stt}` on spans
named `stt_deepgramsttservice`): every verdict would then be made without that stage, so a declared
stage no turn has is a warning naming where it was to come from and the span names nearest to it."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field

import polars as pl

from fpi.contract.errors import TraceError
from fpi.contract.trace_format import STAGES
from fpi.io.mapping import FEEDBACK, RESOLVED, Mapping, Selector, references_of


@dataclass(frozen=True)
class Coverage:
    """Turns read, and the share of them each declared stage ran on and each mapped field has a value in."""

    turns: int
    stages: dict[str, float]
    fields: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """For a terminal: the stages, then the fields found on fewer than all turns (short lines)."""
        stages = ", ".join(f"{stage} {share:.0%}" for stage, share in self.stages.items())
        partial = ", ".join(f"{name} {share:.0%}" if share else f"{name} absent"
                            for name, share in self.fields.items() if share < 1.0)
        return [f"coverage of {self.turns} turns: {stages or 'no stages'}"] + ([f"fields not on every turn: {partial}"] if partial else [])

    def check(self, source: str, strict: bool) -> None:
        """With `--strict`, a declared stage found on no turn is an error, not a warning."""
        if strict and self.warnings:
            raise TraceError([f"{source}: {warning} (--strict)" for warning in self.warnings])

    def to_json(self) -> dict:
        return {"turns": self.turns, "stages": self.stages, "fields": self.fields, "warnings": self.warnings}

    @classmethod
    def from_json(cls, data: dict) -> Coverage:
        """What `to_json` wrote (a report's numbers carry it to every format)."""
        return cls(data["turns"], dict(data["stages"]), dict(data["fields"]), list(data["warnings"]))


def _present(turns: pl.DataFrame, target: str) -> pl.Expr:
    top, _, member = ("er.entities" if target == RESOLVED else target).partition(".")  # a status is of an entity
    column = pl.col(top).struct.field(member) if member else pl.col(top)
    if target in ("asr.text",):  # a stage that ran with its text missing reads as "": found only when said
        return column.is_not_null() & (column != "")
    return column.is_not_null()


def measure(turns: pl.DataFrame, mapping: Mapping, span_names: list[str] | None = None) -> Coverage:
    """The coverage of the mapped `turns`; `span_names`: the names the input's spans have, for the warnings."""
    return of_counts(turns.height, counts_found(turns, mapping), mapping, span_names)


def counts_found(turns: pl.DataFrame, mapping: Mapping) -> dict[str, int]:
    """How many of the mapped `turns` each declared stage ran on (`stage:<name>`) and each mapped field has a value
    in: what an engine that reads the input in parts adds up before `of_counts`."""
    declared = [s for s in (mapping.stages or (*STAGES, FEEDBACK)) if s in turns.columns]
    mapped = sorted(name for name in mapping.fields if name.partition(".")[0] in turns.columns and name not in ("turn_id", "label"))
    if turns.height == 0:
        return {**{f"stage:{s}": 0 for s in declared}, **dict.fromkeys(mapped, 0)}
    counts = turns.select([pl.col(s).is_not_null().sum().alias(f"stage:{s}") for s in declared]
                          + [_present(turns, name).sum().alias(name) for name in mapped]).row(0, named=True)
    return {name: int(count or 0) for name, count in counts.items()}


def of_counts(turns: int, counts: dict[str, int], mapping: Mapping, span_names: list[str] | None = None) -> Coverage:
    """The coverage of `turns` turns of which `counts` (`counts_found`) had each stage and field."""
    def share(count: int) -> float:
        return round(count / turns, 4) if turns else 0.0
    stages = {name.removeprefix("stage:"): share(count) for name, count in counts.items() if name.startswith("stage:")}
    fields = {name: share(count) for name, count in counts.items() if not name.startswith("stage:")}
    warnings = [_warning(stage, turns, mapping, span_names) for stage, value in stages.items()
                if turns and value == 0.0 and mapping.stages is not None]
    return Coverage(turns, stages, fields, warnings)


def _warning(stage: str, turns: int, mapping: Mapping, span_names: list[str] | None) -> str:
    """Which selector the stage was to come from, and the span names nearest to it."""
    sources = sorted({ref for name, spec in mapping.fields.items() if name.startswith(f"{stage}.") for ref in references_of(spec)})
    message = f"stage {stage}: declared but found on 0 of {turns} turns (from {', '.join(sources) or 'no field'})"
    selectors = sorted({ref.partition(":")[0] for ref in sources if ":" in ref} - {"turn", "trace", "resource"})
    for name in selectors:
        selector = mapping.select.get(name)
        if selector is None:
            continue
        wanted = [selector.name] if isinstance(selector.name, str) else list(selector.name or [])
        near = sorted({c for w in wanted for c in difflib.get_close_matches(w, span_names or [], n=3, cutoff=0.6)}
                      | {s for s in span_names or [] for w in wanted if w in s and s != w})
        message += f"; {name} ({_shown(selector)}) matched no span" + (f": nearest span names seen: {', '.join(near[:5])}?" if near else "")
    return message


def _shown(selector: Selector) -> str:
    return "{" + ", ".join(f"{key}: {value}" for key, value in asdict(selector).items() if value not in (None, False)) + "}"


__all__ = ["Coverage", "counts_found", "measure", "of_counts"]
