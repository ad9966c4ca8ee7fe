"""The streamed engine: an input of any size classified in bounded memory, with the same records as
the in-memory engine, in input order.

1. Read the input in parts and spill the accepted turns into partitions by a hash of session_id, so
   every session lands whole in one partition; when sessions come whole one after another, each chunk
   is a partition as read (`_SessionOrder`). A JSON Lines or Parquet file of trace format v1 is read
   chunk by chunk; any other input (a mapping, CSV, OpenTelemetry spans, stdin, a frame) is read whole
   by the readers, which need whole sessions and span trees, and then spilled. Quantile tables are
   fitted on a sample chosen by turn_id (`QuantileSample`), collected as parts pass.
2. Run the pipeline on one partition at a time: a batch of whole sessions.
3. Merge the partitions' records back into input order, a window of records at a time, into the sinks.

Spill files live in a temporary folder removed on every exit path; outputs are written beside their
place and renamed into it at the end, so an interrupted run leaves the old ones."""

from __future__ import annotations

import gzip
import hashlib
import math
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from fpi.contract.errors import TraceError
from fpi.contract.environment_faults import writing
from fpi.contract.interrupts import handling_interrupts
from fpi.engines.plan import Plan, Progress, Run, Sinks
from fpi.engines.whole_input import QuantileSample, hear, read_whole, settle
from fpi.io.checks import FIRST_INDEX, FIRST_TURN, StageCheck, duplicates_rejected, row_json
from fpi.io.line_blocks import BLOCK_BYTES, line_blocks
from fpi.io.read_result import LoadResult
from fpi.io.sniff import file_head, is_gzip, is_parquet, refuse_other_formats, whole_turn_lines
from fpi.io.trace_lines import read_jsonl, split_lines
from fpi.io.trace_tables import read_table, table_rows
from fpi.io.traces import canonical_turns, turns_fingerprint
from fpi.pipeline.classify import Pipeline
from fpi.pipeline.features import sample_rows
from fpi.pipeline.quantiles import Reference

CHUNK_BYTES = BLOCK_BYTES
MIN_CHUNK_BYTES = 1 << 20
MERGE_WINDOW = 100_000  # lines merged back into input order at a time
SESSION_HASH = pl.col("session_id").hash(seed=1)  # what places a session in its partition, and tells sessions apart


def in_chunks(path: str | Path) -> bool:
    """A file the streamed engine reads chunk by chunk: JSON Lines (plain or gzipped) of whole turns in trace
    format v1, or Parquet."""
    if str(path) == "-" or not Path(path).is_file():
        return False
    head = file_head(path)
    if head is None:
        return False  # damaged: read in memory, where the reader names the problem
    return is_parquet(head) or whole_turn_lines(head)


def _is_parquet(path: Path) -> bool:
    with open(path, "rb") as probe:
        return is_parquet(probe.read(4))


def _table_batches(path: Path, turns: int) -> Iterator[tuple[int, pl.DataFrame]]:
    """(number of the first row, rows) of a Parquet file, `turns` rows at a time."""
    first = 1
    for batch in pq.ParquetFile(path).iter_batches(batch_size=turns):
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        yield first, frame
        first += frame.height


def _chunks(path: Path, label: str, turns: int) -> Iterator[LoadResult]:
    """The file as loaded chunks of about `turns` turns (at most CHUNK_BYTES of text), each with its
    lines numbered as in the file."""
    if _is_parquet(path):
        for first, frame in _table_batches(path, turns):
            yield read_table(frame, label, first)
        return
    for first_line, chunk in line_blocks(path, min(CHUNK_BYTES, max(MIN_CHUNK_BYTES, int(turns * _line_bytes(path))))):
        if first_line == 1:
            refuse_other_formats(chunk, label)
        yield read_jsonl(chunk, label, first_line)


def _raw_lines(path: Path, label: str, wanted: pl.Series, turns: int) -> dict[int, str | bytes]:
    """The input text of the lines `wanted` (sorted), as the loader keeps it for the quarantine file:
    read again, since a streamed run does not carry every line's text along."""
    found: dict[int, str | bytes] = {}
    if _is_parquet(path):
        for first, frame in _table_batches(path, turns):
            rows = row_json(table_rows(frame, label, first).filter(pl.col("line").is_in(wanted.implode())))
            found.update(zip(rows["line"].to_list(), rows["raw"].to_list(), strict=True))
        return found
    for first_line, chunk in line_blocks(path, CHUNK_BYTES):
        last_line = first_line + chunk.count(b"\n")
        if wanted.is_between(first_line, last_line).any():
            lines = split_lines(chunk, label, first_line)[0].filter(pl.col("line").is_in(wanted.implode()))
            found.update(zip(lines["line"].to_list(), lines["raw"].to_list(), strict=True))
    return found


def run(plan: Plan) -> Run:
    """Classify the plan's input batch by batch of whole sessions, in bounded memory: the same records, in
    the same order, as the in-memory engine."""
    with handling_interrupts(), tempfile.TemporaryDirectory(prefix="fpi-spill-") as folder:  # both unwind: spills go
        spill = Path(folder)
        read: LoadResult | None = None
        if isinstance(plan.source, str | Path) and plan.reading.mapping is None and in_chunks(plan.source):
            outcome, partitions = _spill(Path(plan.source), plan.label, spill, plan.batch_turns, plan.progress,
                                         plan.fingerprint)
            rejected_lines = _reject_duplicates(Path(plan.source), plan.label, partitions, outcome, plan.batch_turns)
            settle(outcome, plan.reading)
            outcome.turns = outcome.accepted
        else:
            read = read_whole(plan)
            outcome, partitions = _spill_whole(read, spill, plan)
            rejected_lines = pl.Series("line", [], dtype=pl.UInt32)
        plan.pipeline.expect(outcome.turns)
        chosen = partitions.sample.chosen(rejected_lines)
        if chosen is None:
            chosen = _sample_again(partitions, rejected_lines).chosen(rejected_lines)
            assert chosen is not None
        fitted = Reference.fit(chosen)
        hear(plan.pipeline, _sampled_sessions(partitions, rejected_lines, chosen["turn_id"]), fitted)
        with Sinks(plan.sinks, read) as sinks:
            records = _classify_partitions(plan.pipeline, spill, partitions, rejected_lines, fitted, outcome, plan.progress,
                                           keep=bool(sinks))
            if sinks:
                _merge(records, sinks, outcome, plan.progress)
        return outcome


@dataclass
class _Partitions:
    """Where the spilled turns are: by a hash of session_id (whole sessions), and their turn_ids by a
    hash of turn_id (so a turn_id used again anywhere lands beside its first use)."""

    count: int
    files: dict[int, list[Path]] = field(default_factory=dict)
    id_count: int = 1  # turn_ids and lines are small: fewer partitions, fewer files
    ids: dict[int, list[Path]] = field(default_factory=dict)
    sample: QuantileSample = field(default_factory=QuantileSample)
    stages: StageCheck = field(default_factory=StageCheck)  # turns with none of the stages, for the whole-input check

    def turns(self, part: int, columns: list[str] | None = None, without: pl.Series | None = None) -> pl.DataFrame:
        """One partition's turns in input order, less the lines `without`."""
        scan = pl.scan_ipc(self.files[part]).select(columns or pl.all())
        if without is not None and without.len():
            scan = scan.filter(~pl.col("line").is_in(without.implode()))
        return scan.sort("line").collect()


def estimated_turns(path: Path) -> float:
    """About how many turns the file holds: Parquet says; for JSON Lines, the size over the first
    lines' mean length (gzip compresses traces about tenfold)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if is_parquet(head):
        try:
            return float(pq.ParquetFile(path).metadata.num_rows)
        except (OSError, pa.ArrowException):
            return 0.0  # not readable: read in memory, where the reader names the problem
    length = _line_bytes(path)
    return path.stat().st_size * (10 if is_gzip(head) else 1) / length if length else 0.0


def _line_bytes(path: Path) -> float:
    """The mean length of the first lines of a (plain or gzipped) text file; 0 when it cannot be read."""
    with open(path, "rb") as handle:
        zipped = is_gzip(handle.read(2))
    try:
        with (gzip.open if zipped else open)(path, "rb") as handle:
            sample = handle.read(1 << 20)
    except (OSError, EOFError, zlib.error):
        return 0.0
    return len(sample) / max(sample.count(b"\n"), 1)


def _write_spill(frame: pl.DataFrame, target: Path) -> None:
    """Turns put aside in TMPDIR, read back soon (speed over size); a full disk there is named as such."""
    with writing(f"{target.parent} (turns spilled to the temporary folder; set TMPDIR to one with room)"):
        frame.write_ipc(target, compression="lz4")


def _spill_by(rows: pl.DataFrame, key: pl.Expr, count: int, where: Path, files: dict[int, list[Path]]) -> None:
    for (part,), group in rows.with_columns(_part=(key % count).cast(pl.UInt32)).group_by("_part"):
        target = where.with_name(f"{where.name}-{int(part)}.arrow")
        _write_spill(group.drop("_part"), target)
        files.setdefault(int(part), []).append(target)


def _spill(path: Path, label: str, spill: Path, batch_turns: int, report: Progress,
           fingerprint: bool) -> tuple[Run, _Partitions]:
    """The file read chunk by chunk, each chunk's accepted turns spilled by session (and their ids by turn_id)."""
    result = Run(label, "streamed")
    digest = hashlib.sha256()
    count = max(1, math.ceil(1.5 * estimated_turns(path) / batch_turns))
    partitions = _Partitions(count=count, id_count=math.ceil(count / 8))
    order = _SessionOrder()
    for number, chunk in enumerate(_chunks(path, label, batch_turns)):
        partitions.stages.add(chunk.turns)
        turns = chunk.turns.drop("raw")
        result.read += chunk.read
        result.rejected += chunk.rejected
        result.unlabeled += turns["label"].null_count()
        partitions.sample.add(turns)
        if fingerprint:
            digest.update(canonical_turns(turns))
        _spill_by(turns.select("turn_id", "line"), pl.col("turn_id").hash(seed=2), partitions.id_count, spill / f"ids-{number}",
                  partitions.ids)
        if order.contiguous:
            order.spill(turns, number, spill, partitions)
        else:
            _spill_by(turns, SESSION_HASH, partitions.count, spill / f"turns-{number}", partitions.files)
        del chunk, turns
        report("reading", result.read, None)
    order.finish(spill, partitions)
    result.contiguous = order.contiguous
    if result.read == 0:
        raise TraceError([f"{label}: empty file: expected one JSON object per line (trace format v1)"])
    partitions.stages.check(label)
    result.fingerprint = digest.hexdigest() if fingerprint else ""
    return result, partitions


def _spill_whole(read: LoadResult, spill: Path, plan: Plan) -> tuple[Run, _Partitions]:
    """An input the readers read whole, spilled by session; its turns numbered in input order (spans can
    put several turns on one line)."""
    outcome = Run.of_read(read, "streamed")
    turns = read.turns.drop("raw").with_columns(line=pl.int_range(1, read.turns.height + 1, dtype=pl.UInt32))
    partitions = _Partitions(count=max(1, math.ceil(1.5 * turns.height / plan.batch_turns)))
    partitions.sample.add(turns)
    _spill_by(turns, SESSION_HASH, partitions.count, spill / "turns-0", partitions.files)
    if plan.fingerprint:
        outcome.fingerprint = turns_fingerprint(read.turns)
    return outcome, partitions


class _SessionOrder:
    """The fast path for inputs whose sessions come whole, one after another: each chunk is a partition
    as it was read (its last session held back for the next chunk, where it may go on), with no shuffle
    by session. The first session met again after it ended sends the run back to hashing by session:
    the chunks spilled so far are hashed then, and every chunk after them."""

    def __init__(self) -> None:
        self.contiguous = True
        self.ended = np.empty(0, dtype=np.uint64)  # hashes of the sessions that ended, sorted
        self.held: pl.DataFrame | None = None  # the last session of the chunk before

    def spill(self, turns: pl.DataFrame, number: int, spill: Path, partitions: _Partitions) -> None:
        if self.held is not None:
            turns = pl.concat([self.held, turns])
        if not turns.height:
            return
        sessions = turns.select(SESSION_HASH).to_series()
        seen = np.unique(sessions.to_numpy())
        if np.isin(seen, self.ended, assume_unique=True).any():
            self._hash_from_now(turns, number, spill, partitions)
            return
        last = sessions[-1]
        here = sessions != last
        self.held = turns.filter(~here)
        if here.any():
            target = spill / f"chunk-{number}.arrow"
            _write_spill(turns.filter(here), target)
            partitions.files[number] = [target]
        self.ended = np.union1d(self.ended, seen[seen != last])

    def finish(self, spill: Path, partitions: _Partitions) -> None:
        if self.contiguous and self.held is not None and self.held.height:
            target = spill / "chunk-last.arrow"
            _write_spill(self.held, target)
            partitions.files[max(partitions.files, default=0) + 1] = [target]
        if self.contiguous:
            partitions.count = max(1, len(partitions.files))
        self.held, self.ended = None, np.empty(0, dtype=np.uint64)

    def _hash_from_now(self, turns: pl.DataFrame, number: int, spill: Path, partitions: _Partitions) -> None:
        self.contiguous, self.held, self.ended = False, None, np.empty(0, dtype=np.uint64)
        spilled, partitions.files = partitions.files, {}
        for part, (path,) in spilled.items():
            _spill_by(pl.read_ipc(path), SESSION_HASH, partitions.count, spill / f"turns-{part}",
                      partitions.files)
            path.unlink()
        _spill_by(turns, SESSION_HASH, partitions.count, spill / f"turns-{number}", partitions.files)


def _reject_duplicates(path: Path, label: str, partitions: _Partitions, result: Run, batch_turns: int) -> pl.Series:
    """Turns whose turn_id, or whose session and turn_index, an earlier line used (across chunks; each chunk
    was checked when read), named as the in-memory run names them. Returns their lines, sorted."""
    reused_ids = pl.concat([
        pl.scan_ipc(files).with_columns(first_turn=FIRST_TURN).filter(pl.col("line") != pl.col("first_turn"))
        .select("line", "first_turn").collect()
        for files in partitions.ids.values()] or [pl.DataFrame(schema={"line": pl.UInt32, "first_turn": pl.UInt32})])
    found = []
    for part in partitions.files:
        keys = partitions.turns(part, ["line", "turn_id", "session_id", "turn_index"])
        found.append(keys.join(reused_ids, on="line", how="left").with_columns(first_index=FIRST_INDEX)
                     .filter(pl.col("first_turn").is_not_null() | (pl.col("line") != pl.col("first_index"))))
    duplicates = pl.concat(found).sort("line") if found else pl.DataFrame(schema={"line": pl.UInt32})
    if duplicates.height:
        raw = _raw_lines(path, label, duplicates["line"], batch_turns)
        texts = pl.Series("raw", [raw[number] for number in duplicates["line"].to_list()], dtype=pl.String)
        result.rejected += duplicates_rejected(duplicates.with_columns(texts), label)
        if result.fingerprint:  # the accepted turns' fingerprint, without the duplicates
            digest = hashlib.sha256()
            for chunk in _chunks(path, label, batch_turns):
                digest.update(canonical_turns(chunk.turns.filter(~pl.col("line").is_in(duplicates["line"].implode()))))
            result.fingerprint = digest.hexdigest()
    return duplicates["line"]


def _sample_again(partitions: _Partitions, rejected: pl.Series) -> QuantileSample:
    """The sample gathered from the spilled turns, when too many of the first one's turns were rejected."""
    sample = QuantileSample()
    for part in partitions.files:
        sample.add(partitions.turns(part, without=rejected))
    return sample


def _sampled_sessions(partitions: _Partitions, rejected: pl.Series, sampled: pl.Series) -> pl.DataFrame:
    """The sampled turns' `sample_rows`, each computed among the whole session it sits in."""
    found = []
    for part in sorted(partitions.files):
        turns = partitions.turns(part, without=rejected)
        sessions = turns.filter(pl.col("turn_id").is_in(sampled.implode()))["session_id"].unique()
        whole = turns.filter(pl.col("session_id").is_in(sessions.implode()))
        if whole.height:
            found.append(sample_rows(whole).filter(pl.col("turn_id").is_in(sampled.implode())))
    return pl.concat(found) if found else pl.DataFrame()


def _classify_partitions(pipeline: Pipeline, spill: Path, partitions: _Partitions, rejected: pl.Series, fitted: Reference,
                         result: Run, report: Progress, keep: bool = True) -> list[Path]:
    """Each partition's records, sorted by line, in a Parquet file of small row groups (unless not `keep`)."""
    out, done = [], 0
    for part in sorted(partitions.files):
        turns = partitions.turns(part, without=rejected)
        for f in partitions.files[part]:
            f.unlink()
        batch = pipeline.run(turns.with_columns(raw=pl.lit(None, pl.String)), fitted=fitted)
        records = batch.records.with_columns(_line=turns["line"])
        if keep:
            out.append(spill / f"records-{part}.parquet")
            # a partition holds 1/count of the lines spread over the whole file: row groups of WINDOW/count
            # records each span about one merge window, so the merge reads each record about once
            records.write_parquet(out[-1], row_group_size=max(1000, MERGE_WINDOW // partitions.count), statistics=True)
        result.count(records)
        done += turns.height
        report("classifying", done, result.turns)
    return out


def _merge(parts: list[Path], sinks: Sinks, result: Run, report: Progress) -> None:
    """The records in input order, a window of lines at a time, into the sinks."""
    scan = pl.scan_parquet(parts) if parts else None
    last = int(scan.select(pl.col("_line").max()).collect().item() or 0) if scan is not None else 0
    written = 0
    for start in range(1, last + 1, MERGE_WINDOW):
        assert scan is not None
        records = scan.filter(pl.col("_line").is_between(start, start + MERGE_WINDOW - 1)).sort("_line").drop("_line").collect()
        if records.height:
            sinks.write(records)
            written += records.height
            report("writing", written, result.turns)
    sinks.finish(scan.drop("_line").head(0).collect() if scan is not None else None)


__all__ = ["estimated_turns", "in_chunks", "run"]
