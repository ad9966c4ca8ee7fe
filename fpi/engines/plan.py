"""What every engine is handed and hands back. A `Plan`: the input, how to read it (a mapping, the
`--on-error` policy, gold labels required), the pipeline, and the sinks the records go to in input
order. A `Run`: what was read, rejected, counted and written, the same whichever engine ran it, with
the metrics file of the run. Engines differ in how they cut the input into batches of whole
sessions, never in what they compute."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import polars as pl

from fpi.contract.errors import EXIT_OK, EXIT_PARTIAL
from fpi.contract.metrics import Metrics, scores
from fpi.contract.records import possible_labels
from fpi.contract.trace_format import LABELS
from fpi.engines import choice
from fpi.io.otlp import SpanVerdicts, is_otlp_path
from fpi.io.quarantine import OnError
from fpi.io.read_result import LoadResult, RejectedRecord, read_summary
from fpi.io.records_files import RecordsFile

if TYPE_CHECKING:
    from fpi.io.coverage import Coverage
    from fpi.io.mapping import Mapping
    from fpi.pipeline.classify import Batch, Pipeline
    from fpi.pipeline.log_profile import LogProfile

Progress = Callable[[str, int, "int | None"], None]  # (phase, turns done, turns in all or None)


class RecordsSink(Protocol):
    """Where an engine puts records, batch by batch in input order: a records file (`fpi.io.records_files`),
    the input's spans with verdicts (`fpi.io.otlp`), a tally for a report (`fpi.reports.counts`)."""

    def start(self, read: LoadResult | None) -> None:
        """Hear the input as the readers read it whole (None: an engine read it in parts); refuse what cannot be written."""

    def write(self, records: pl.DataFrame) -> None: ...

    def finish(self, empty: pl.DataFrame | None) -> None:
        """Done: put the output in place (`empty`: the records' columns, for an output that got none)."""

    def discard(self) -> None:
        """The run failed: leave no output."""


def sink_for(output: str | Path | None) -> RecordsSink:
    """Where `-o` sends records: the spans back with verdicts for a name like `x.otlp.json`, else a records
    file by its extension, or stdout."""
    return SpanVerdicts(output) if output is not None and is_otlp_path(output) else RecordsFile(output)


@dataclass(frozen=True)
class Reading:
    """How the input is read: through a mapping, under the `--on-error` policy (`quarantine`: where
    skipped records go; None keeps them in the run only), needing gold labels on every turn or not;
    `name` names input that is not a file (stdin, bytes) in messages."""

    mapping: Mapping | dict | str | Path | None = None
    on_error: OnError | str = OnError.fail
    quarantine: Path | None = None
    labels_required: bool = False
    name: str | None = None
    strict: bool = False  # a declared stage no turn has is an error (`fpi.io.coverage`)


@dataclass
class Plan:
    """What an engine runs: `source` (a path, `-`, bytes, or a frame), read as `reading` says, through
    `pipeline`, into `sinks`. `fingerprint`: measure the accepted turns (a metrics file names its data);
    `keep_batch`: hand back what the pipeline computed (the whole input in memory)."""

    source: Any
    pipeline: Pipeline
    reading: Reading = field(default_factory=Reading)
    sinks: list[RecordsSink] = field(default_factory=list)
    batch_turns: int = field(default_factory=lambda: choice.BATCH_TURNS)
    fingerprint: bool = False
    keep_batch: bool = False
    on_progress: Progress | None = None

    @property
    def label(self) -> str:
        """The input's name in messages."""
        if self.reading.name is not None:
            return self.reading.name
        return "<stdin>" if str(self.source) == "-" else str(self.source) if isinstance(self.source, str | Path) else "<input>"

    def progress(self, phase: str, done: int, total: int | None) -> None:
        if self.on_progress is not None:
            self.on_progress(phase, done, total)


@dataclass
class Run:
    """What a run read and made, whichever engine ran it: records read and rejected (as the readers name
    them), where the rejected went, turns per failure point, the confusion matrix of the turns with a
    gold label (rows gold), and the accepted turns' fingerprint when asked for."""

    source: str
    engine: str
    read: int = 0
    rejected: list[RejectedRecord] = field(default_factory=list)
    form: str = "turn"  # "stage": the input was per-stage event lines
    quarantine: Path | None = None
    turns: int = 0  # accepted turns (per-stage input: fewer than the event lines accepted)
    unlabeled: int = 0  # accepted turns without a gold label
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABELS, 0))
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((len(LABELS), len(LABELS)), dtype=np.int64))
    fingerprint: str = ""
    contiguous: bool = False  # streamed: the sessions came whole, one after another, and were read without a shuffle
    batch: Batch | None = None  # with `Plan.keep_batch`: what the pipeline computed
    profile: LogProfile | None = None  # how the input sat against the model's training data (`Pipeline.fit_logs`)
    coverage: Coverage | None = None  # read through a mapping: what it found
    possible: frozenset[str] = frozenset()  # the labels some record could have: no stage the logs lack (`possible_labels`)

    @classmethod
    def of_read(cls, read: LoadResult, engine: str) -> Run:
        """A run of an input the readers read whole."""
        return cls(read.source, engine, read=read.read, rejected=read.rejected, form=read.form, quarantine=read.quarantine,
                   turns=read.turns.height, unlabeled=read.turns["label"].null_count(), coverage=read.coverage)

    @property
    def accepted(self) -> int:
        return self.read - len(self.rejected)

    @property
    def classified(self) -> int:
        return sum(self.counts.values())

    def count(self, records: pl.DataFrame, *, turns: str | None = None) -> None:
        """Add a batch's records: turns per failure point, the labels they could have and, where a turn has a gold
        label, the confusion. `turns` names a column saying how many turns each row stands for (records counted
        elsewhere, without their probabilities: the engine that counted them says what is possible)."""
        weight = pl.col(turns).sum() if turns is not None else pl.len()
        if "probabilities" in records.columns:
            self.possible |= possible_labels(records)
        for label, count in records.group_by("failure_point").agg(weight).iter_rows():
            self.counts[label] += int(count)
        if "label" in records.columns:
            code = {label: i for i, label in enumerate(LABELS)}
            pairs = records.filter(pl.col("label").is_not_null()).group_by("label", "failure_point").agg(weight.alias("n"))
            pairs = pairs.select(pl.col("label").replace_strict(code), pl.col("failure_point").replace_strict(code), "n")
            np.add.at(self.confusion, (pairs["label"].to_numpy(), pairs["failure_point"].to_numpy()), pairs["n"].to_numpy())

    @property
    def scored(self) -> int:
        """Accepted turns with a gold label: the turns scores are computed on."""
        return self.turns - self.unlabeled

    def scores(self) -> dict | None:
        """Accuracy, macro-F1 and per-label scores against the gold labels, over the turns that have one."""
        return scores(self.confusion) if self.scored > 0 else None

    def metrics(self, pipeline: Pipeline) -> Metrics:
        """The metrics file of the run (`fpi eval --save-metrics`, what `fpi gate` judges)."""
        return Metrics.of_counts(source=self.source, data_fingerprint=self.fingerprint,
                                 model_fingerprint=pipeline.model.fingerprint(), rules=pipeline.rules.identity(),
                                 predicted=self.counts, confusion=self.confusion if self.scored > 0 else None)

    @property
    def exit_code(self) -> int:
        """3 when records were quarantined, else 0."""
        return EXIT_PARTIAL if self.rejected else EXIT_OK

    def summary(self, rejected_as: str = "quarantined") -> str:
        return read_summary(self.source, self.read, len(self.rejected), self.form, self.turns, rejected_as)

    def problems(self) -> list[str]:
        return [m for r in self.rejected for m in r.messages()]


class Sinks:
    """The plan's sinks for one run: started on the input as read, fed in input order, finished together,
    and discarded together when the run fails."""

    def __init__(self, sinks: list[RecordsSink], read: LoadResult | None):
        self.sinks = sinks
        self.read = read

    def __enter__(self) -> Sinks:
        for sink in self.sinks:
            sink.start(self.read)
        return self

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def write(self, records: pl.DataFrame) -> None:
        for sink in self.sinks:
            sink.write(records)

    def finish(self, empty: pl.DataFrame | None) -> None:
        for sink in self.sinks:
            sink.finish(empty)

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            for sink in self.sinks:
                sink.discard()
