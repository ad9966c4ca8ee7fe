"""The streamed engine: classify an input of any size in bounded memory, with the same records as
the in-memory run, in input order.

1. Read the file in chunks of lines, check each like any input, and spill the accepted turns into
   partitions by a hash of session_id, so every session lands whole in one partition. Quantile
   tables are fitted on a sample chosen by turn_id (`Reference.sample`), collected as chunks pass.
2. Run the pipeline on one partition at a time: a batch of whole sessions.
3. Merge the partitions' records back into input order, a window of lines at a time.

Spill files live in a temporary folder removed on every exit path; the output is written to a
temporary file and renamed into place at the end, so an interrupted run leaves the old output."""

from __future__ import annotations

import gzip
import math
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import BinaryIO

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from fpi.errors import TraceError
from fpi.features import reference_rows
from fpi.load import (MOSTLY, LoadResult, RejectedRecord, _fields_seen, _read_jsonl, _read_table, _refuse_other_formats,
                      bad_records_error, duplicate_problem, no_stages_error)
from fpi.normalise import SAMPLE_TURNS, Reference
from fpi.output import atomic_write
from fpi.pipeline import Pipeline
from fpi.records import RecordsWriter, output_form
from fpi.schema import LABELS, STAGES, TURN_FIELD_NAMES

BATCH_TURNS = 200_000
CHUNK_BYTES = 64 << 20
ROW_GROUP = 20_000


@dataclass
class StreamResult:
    """What a streamed run read and wrote; `rejected` as the in-memory `LoadResult` would hold them."""

    source: str
    read: int = 0
    written: int = 0
    rejected: list[RejectedRecord] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABELS, 0))
    labeled: bool = True
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((len(LABELS), len(LABELS)), dtype=np.int64))

    @property
    def accepted(self) -> int:
        return self.read - len(self.rejected)

    def summary(self) -> str:
        return f"{self.source}: read {self.read}, accepted {self.accepted}, quarantined {len(self.rejected)} turns"

    def problems(self) -> list[str]:
        return [m for r in self.rejected for m in r.messages()]


def streamable(path: str | Path) -> bool:
    """A file the streamed engine reads in chunks: JSON Lines (plain or gzipped) of whole turns, or Parquet."""
    if str(path) == "-" or not Path(path).is_file():
        return False
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    if head[:4] == b"PAR1":
        return True
    if head[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as handle:
            head = handle.read(1 << 16)
    first = next((line for line in head.splitlines() if line.strip()), b"")
    return first.lstrip(b"\xef\xbb\xbf ").startswith(b"{") and b'"stage"' not in first and b"resourceSpans" not in first


def _chunks(path: Path, label: str, turns: int) -> Iterator[LoadResult]:
    """The file as loaded chunks of about `turns` turns, each with its lines numbered as in the file."""
    with open(path, "rb") as probe:
        parquet = probe.read(4) == b"PAR1"
    if parquet:
        first = 1
        for batch in pq.ParquetFile(path).iter_batches(batch_size=turns):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            yield _read_table(frame, label, first)
            first += frame.height
        return
    with open(path, "rb") as probe:
        opener = gzip.open if probe.read(2) == b"\x1f\x8b" else open
    first_line, carry = 1, b""
    with opener(path, "rb") as handle:
        while True:
            block = handle.read(CHUNK_BYTES)
            data = carry + block
            cut = data.rfind(b"\n") + 1 if block else len(data)  # whole lines; at the end, what is left
            if cut == 0 or (not block and not data.strip()):
                if not block:
                    return
                carry = data
                continue
            chunk, carry = data[:cut], data[cut:]
            if first_line == 1:
                _refuse_other_formats(chunk, label)
            yield _read_jsonl(chunk, label, first_line)
            first_line += chunk.count(b"\n")
            if not block:
                return


class _Seen:
    """Keys (turn_id, or session and index) of the accepted turns so far, as sorted 64-bit hashes with
    the line each was first used on: a duplicate in a later chunk is named as the in-memory run names it."""

    def __init__(self) -> None:
        self.hashes = np.empty(0, dtype=np.uint64)
        self.lines = np.empty(0, dtype=np.uint32)

    def first_lines(self, hashes: np.ndarray) -> np.ndarray:
        """For each hash, the line it was first used on, or 0."""
        if not self.hashes.size:
            return np.zeros(hashes.size, np.uint32)
        at = np.minimum(np.searchsorted(self.hashes, hashes), self.hashes.size - 1)
        return np.where(self.hashes[at] == hashes, self.lines[at], 0)

    def add(self, hashes: np.ndarray, lines: np.ndarray) -> None:
        merged = np.concatenate([self.hashes, hashes])
        order = np.argsort(merged, kind="stable")
        self.hashes, self.lines = merged[order], np.concatenate([self.lines, lines])[order]


def _cross_chunk_duplicates(turns: pl.DataFrame, label: str, ids: _Seen, places: _Seen) -> tuple[pl.DataFrame, list[RejectedRecord]]:
    id_hash = turns["turn_id"].hash(seed=0).to_numpy()
    place_hash = turns.select(pl.struct("session_id", "turn_index").hash(seed=0)).to_series().to_numpy()
    first_id, first_place = ids.first_lines(id_hash), places.first_lines(place_hash)
    duplicate = (first_id > 0) | (first_place > 0)
    rejected = []
    flagged = turns.select("line", "raw", "turn_id", "session_id", "turn_index").filter(pl.Series(duplicate))
    for row, (number, raw, turn_id, session_id, index) in zip(np.flatnonzero(duplicate), flagged.iter_rows(), strict=True):
        problem = duplicate_problem(turn_id, session_id, index, int(first_id[row]), int(first_place[row]))
        rejected.append(RejectedRecord(label, number, (problem,), raw))
    kept = ~duplicate
    lines = turns["line"].to_numpy()
    ids.add(id_hash[kept], lines[kept])
    places.add(place_hash[kept], lines[kept])
    return turns.filter(pl.Series(kept)), rejected


@dataclass
class _Sample:
    """The rows quantile tables are fitted on, kept to the SAMPLE_TURNS smallest turn_id hashes."""

    rows: pl.DataFrame | None = None

    def add(self, rows: pl.DataFrame) -> None:
        merged = rows if self.rows is None else pl.concat([self.rows, rows])
        self.rows = Reference.sample(merged) if merged.height > SAMPLE_TURNS else merged

    def fit(self) -> Reference:
        return Reference.fit(self.rows if self.rows is not None else pl.DataFrame())


class _Interrupted(KeyboardInterrupt):
    pass


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise _Interrupted()  # unwinds through the `with` blocks, so spill files and temporary output go


def classify_file(path: str | Path, pipeline: Pipeline, output: str | Path = "-", *, batch_turns: int = BATCH_TURNS,
                  on_error: str = "fail", on_progress: Callable[[str, int, int | None], None] | None = None) -> StreamResult:
    """Classify the turns of `path` into `output` (.jsonl, .csv or .parquet; `-`: JSON Lines on stdout)
    batch by batch, in bounded memory: the same records, in the same order, as `pipeline.run` on the whole file. `on_progress`
    hears (phase, turns done, turns in all or None)."""
    label = str(path)
    report = on_progress or (lambda phase, done, total: None)
    previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        with tempfile.TemporaryDirectory(prefix="fpi-spill-") as spill:
            result, partitions = _spill(Path(path), label, Path(spill), batch_turns, report)
            if result.rejected and on_error == "fail":
                raise bad_records_error(label, result.rejected)
            fitted = partitions.sample.fit()
            records = _classify_partitions(pipeline, Path(spill), partitions, fitted, result, report)
            _merge(records, output, result, report)
            return result
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class _Partitions:
    count: int
    files: dict[int, list[Path]] = field(default_factory=dict)
    sample: _Sample = field(default_factory=_Sample)
    empty: int = 0  # turns with none of the stages, for the whole-input check
    seen: list[str] = field(default_factory=list)  # the fields of the first records, for its message


def estimated_turns(path: Path) -> float:
    """About how many turns the file holds: Parquet says; for JSON Lines, the size over the first
    lines' mean length (gzip compresses traces about tenfold)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == b"PAR1":
        return float(pq.ParquetFile(path).metadata.num_rows)
    zipped = head[:2] == b"\x1f\x8b"
    with (gzip.open if zipped else open)(path, "rb") as handle:
        sample = handle.read(1 << 20)
    lines = max(sample.count(b"\n"), 1)
    return path.stat().st_size * (10 if zipped else 1) / (len(sample) / lines)


def _spill(path: Path, label: str, spill: Path, batch_turns: int, report: Callable) -> tuple[StreamResult, _Partitions]:
    result = StreamResult(label)
    partitions = _Partitions(count=max(1, math.ceil(1.5 * estimated_turns(path) / batch_turns)))
    ids, places = _Seen(), _Seen()
    for number, chunk in enumerate(_chunks(path, label, batch_turns)):
        turns, duplicates = _cross_chunk_duplicates(chunk.turns, label, ids, places)
        result.read += chunk.read
        result.rejected += chunk.rejected + duplicates
        if number == 0:
            partitions.seen = _fields_seen(turns)
        partitions.empty += int(turns.select(pl.all_horizontal(pl.col(s).is_null() for s in (*STAGES, "feedback")).sum()).item())
        if "label" in turns.columns and turns["label"].null_count():
            result.labeled = False
        partitions.sample.add(reference_rows(turns))
        keyed = turns.drop("raw").with_columns(_part=(pl.col("session_id").hash(seed=1) % partitions.count).cast(pl.UInt32))
        for (part,), rows in keyed.group_by("_part"):
            target = spill / f"turns-{int(part)}-{number}.parquet"
            rows.drop("_part").write_parquet(target)
            partitions.files.setdefault(int(part), []).append(target)
        report("reading", result.read, None)
    if result.read == 0:
        raise TraceError([f"{label}: empty file: expected one JSON object per line (trace format v1)"])
    accepted = result.read - len(result.rejected)
    if accepted and partitions.empty / accepted > MOSTLY and set(partitions.seen) - set(TURN_FIELD_NAMES):
        raise no_stages_error(partitions.empty / accepted, partitions.seen, label)
    result.rejected.sort(key=lambda r: r.line)
    return result, partitions


def _classify_partitions(pipeline: Pipeline, spill: Path, partitions: _Partitions, fitted: Reference, result: StreamResult,
                         report: Callable) -> list[Path]:
    """Each partition's records, sorted by line, in a Parquet file of small row groups."""
    out, done, total = [], 0, result.accepted
    for part, files in sorted(partitions.files.items()):
        turns = pl.concat([pl.read_parquet(f) for f in files]).sort("line")
        for f in files:
            f.unlink()
        batch = pipeline.run(turns.with_columns(raw=pl.lit(None, pl.String)), fitted=fitted)
        records = batch.records.with_columns(_line=turns["line"])
        target = spill / f"records-{part}.parquet"
        records.write_parquet(target, row_group_size=ROW_GROUP, statistics=True)
        out.append(target)
        for label, count in records["failure_point"].value_counts().iter_rows():
            result.counts[label] += count
        if result.labeled and "label" in records.columns:
            code = {label: i for i, label in enumerate(LABELS)}
            pairs = records.select(g=pl.col("label").replace_strict(code), p=pl.col("failure_point").replace_strict(code))
            np.add.at(result.confusion, (pairs["g"].to_numpy(), pairs["p"].to_numpy()), 1)
        done += turns.height
        report("classifying", done, total)
    return out


def _merge(parts: list[Path], output: str | Path, result: StreamResult, report: Callable) -> None:
    """The records in input order, a window of lines at a time, into `output` (written atomically), or
    JSON Lines on stdout for `-`."""
    scan = pl.scan_parquet(parts) if parts else None
    last = int(scan.select(pl.col("_line").max()).collect().item() or 0) if scan is not None else 0
    window = max(ROW_GROUP * 5, 100_000)

    def write(handle: BinaryIO) -> None:
        writer = RecordsWriter(handle, output_form(output))
        for start in range(1, last + 1, window):
            assert scan is not None
            records = scan.filter(pl.col("_line").is_between(start, start + window - 1)).sort("_line").drop("_line").collect()
            if records.height:
                writer.write(records)
                report("writing", writer.written, result.accepted)
        writer.close(scan.drop("_line").head(0).collect() if scan is not None else None)
        result.written = writer.written

    if str(output) == "-":
        write(sys.stdout.buffer)
        sys.stdout.flush()
    else:
        def to_file(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                write(handle)
        atomic_write(output, to_file)


__all__ = ["BATCH_TURNS", "StreamResult", "classify_file", "estimated_turns", "streamable"]
