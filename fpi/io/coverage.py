"""What a mapping found in the logs: for each declared stage and each mapped field, the share of turns
that got a value. A mapping can be valid and still read nothing (a selector `{name: stt}` on spans
named `stt_deepgramsttservice`): every verdict would then be made without that stage, so a declared
stage no turn has is a warning naming where it was to come from and the span names nearest to it."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field

import polars as pl

from fpi.contract.trace_format import STAGES
from fpi.io.mapping import FEEDBACK, Mapping, Selector, references_of


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

    def to_json(self) -> dict:
        return {"turns": self.turns, "stages": self.stages, "fields": self.fields, "warnings": self.warnings}


def _present(turns: pl.DataFrame, target: str) -> pl.Expr:
    top, _, member = target.partition(".")
    column = pl.col(top).struct.field(member) if member else pl.col(top)
    if target in ("asr.text",):  # a stage that ran with its text missing reads as "": found only when said
        return column.is_not_null() & (column != "")
    return column.is_not_null()


def measure(turns: pl.DataFrame, mapping: Mapping, span_names: list[str] | None = None) -> Coverage:
    """The coverage of the mapped `turns`; `span_names`: the names the input's spans have, for the warnings."""
    declared = [s for s in (mapping.stages or (*STAGES, FEEDBACK)) if s in turns.columns]
    mapped = sorted(name for name in mapping.fields if name.partition(".")[0] in turns.columns and name not in ("turn_id", "label"))
    if turns.height == 0:
        return Coverage(0, dict.fromkeys(declared, 0.0), dict.fromkeys(mapped, 0.0))
    shares = turns.select([pl.col(s).is_not_null().mean().alias(f"stage:{s}") for s in declared]
                          + [_present(turns, name).mean().alias(name) for name in mapped]).row(0, named=True)
    stages = {s: round(float(shares[f"stage:{s}"] or 0.0), 4) for s in declared}
    fields = {name: round(float(shares[name] or 0.0), 4) for name in mapped}
    warnings = [_warning(stage, turns.height, mapping, span_names) for stage, share in stages.items()
                if share == 0.0 and (mapping.stages is not None)]
    return Coverage(turns.height, stages, fields, warnings)


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


__all__ = ["Coverage", "measure"]
