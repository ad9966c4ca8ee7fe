"""The streamed engine: classify an input of any size in bounded memory, with the same records as
the in-memory run, in input order.

1. Read the file in chunks of lines, check each like any input, and spill the accepted turns into
   partitions by a hash of session_id, so every session lands whole in one partition; when sessions
   come whole one after another, each chunk is a partition as read (`_SessionOrder`). Quantile
   tables are fitted on a sample chosen by turn_id (`Reference.sample`), collected as chunks pass.
2. Run the pipeline on one partition at a time: a batch of whole sessions.
3. Merge the partitions' records back into input order, a window of lines at a time.

Spill files live in a temporary folder removed on every exit path; the output is written to a
temporary file and renamed into place at the end, so an interrupted run leaves the old output."""

from __future__ import annotations

import gzip
import hashlib
import math
import signal
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from fpi.io.line_blocks import BLOCK_BYTES, line_blocks
from fpi.contract.errors import TraceError, require_scorable
from fpi.pipeline.features import reference_rows
from fpi.io.checks import StageCheck, duplicate_problem, row_json
from fpi.io.quarantine import bad_records_error
from fpi.io.read_result import LoadResult, RejectedRecord
from fpi.io.sniff import file_head, is_gzip, is_parquet, refuse_other_formats
from fpi.io.trace_lines import read_jsonl, split_lines
from fpi.io.trace_tables import read_table, table_rows
from fpi.io.traces import canonical_turns
from fpi.contract.metrics import Metrics
from fpi.pipeline.quantiles import SAMPLE_TURNS, Reference
from fpi.contract.atomic_files import atomic_write
from fpi.pipeline.classify import Pipeline
from fpi.io.records_files import RecordsWriter, output_form
from fpi.contract.trace_format import LABELS

BATCH_TURNS = 200_000
CHUNK_BYTES = BLOCK_BYTES
MIN_CHUNK_BYTES = 1 << 20
SAMPLE_SLACK = 20_000
MERGE_WINDOW = 100_000  # lines merged back into input order at a time
SESSION_HASH = pl.col("session_id").hash(seed=1)  # what places a session in its partition, and tells sessions apart


@dataclass
class StreamResult:
    """What a streamed run read and wrote; `rejected` as the in-memory `LoadResult` would hold them."""

    source: str
    read: int = 0
    written: int = 0
    rejected: list[RejectedRecord] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABELS, 0))
    unlabeled: int = 0  # accepted turns without a gold label
    contiguous: bool = False  # sessions came whole, one after another: read without a shuffle by session
    fingerprint: str = ""  # of the accepted turns, as `fpi.io.traces.turns_fingerprint` (when only measuring)
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((len(LABELS), len(LABELS)), dtype=np.int64))

    @property
    def labeled(self) -> bool:
        return self.unlabeled == 0

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
    head = file_head(path)
    if head is None:
        return False  # damaged: read in memory, where the reader names the problem
    if is_parquet(head):
        return True
    first = next((line for line in head.splitlines() if line.strip()), b"")
    return first.lstrip(b"\xef\xbb\xbf ").startswith(b"{") and b'"stage"' not in first and b"resourceSpans" not in first


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


@dataclass
class _Sample:
    """The turns quantile tables are fitted on (`Reference.sample`: the smallest turn_id hashes),
    gathered as chunks pass. Only the turns whose hash can still be among the smallest get their
    reference rows computed; SAMPLE_SLACK more than needed are kept, so the sample stays the same
    when duplicates found at the end are taken out."""

    rows: pl.DataFrame | None = None
    truncated: bool = False

    def add(self, turns: pl.DataFrame) -> None:
        hashed = turns.with_columns(_hash=pl.col("turn_id").hash(seed=0))
        if self.truncated and self.rows is not None:
            hashed = hashed.filter(pl.col("_hash") <= self.rows["_hash"].max())
        rows = _own_text(reference_rows(hashed).with_columns(hashed["_hash"], hashed["line"]))
        merged = rows if self.rows is None else pl.concat([self.rows, rows])
        if merged.height > SAMPLE_TURNS + SAMPLE_SLACK:
            merged, self.truncated = merged.sort("_hash", "turn_id").head(SAMPLE_TURNS + SAMPLE_SLACK), True
        self.rows = merged

    def fit(self, rejected: pl.Series) -> Reference | None:
        """The tables, or None when so many sampled turns were rejected that the sample must be gathered again."""
        rows = self.rows.filter(~pl.col("line").is_in(rejected.implode())) if self.rows is not None else pl.DataFrame()
        if self.truncated and rows.height < SAMPLE_TURNS:
            return None
        return Reference.fit(Reference.sample(rows.drop("_hash", "line", strict=False)))


def _own_text(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame with its text copied out: polars' strings are views into the buffers they were decoded
    into, so a few rows kept from each chunk would keep every chunk's text alive."""
    return frame.with_columns(pl.concat_str(pl.col(name), pl.lit("")).alias(name) for name, dtype in frame.schema.items()
                              if dtype == pl.String)


class _Interrupted(KeyboardInterrupt):
    pass


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise _Interrupted()  # unwinds through the `with` blocks, so spill files and temporary output go


def classify_file(path: str | Path, pipeline: Pipeline, output: str | Path | None = "-", *, batch_turns: int = BATCH_TURNS,
                  on_error: str = "fail", on_progress: Callable[[str, int, int | None], None] | None = None,
                  labels_required: bool = False) -> StreamResult:
    """Classify the turns of `path` into `output` (.jsonl, .csv or .parquet; `-`: JSON Lines on stdout)
    batch by batch, in bounded memory: the same records, in the same order, as `pipeline.run` on the whole file;
    `output=None` only counts them and fingerprints the turns (`measured`), and `labels_required` refuses turns without a gold label. `on_progress` hears (phase, turns done, turns in all or None)."""
    label = str(path)
    report = on_progress or (lambda phase, done, total: None)
    previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        with tempfile.TemporaryDirectory(prefix="fpi-spill-") as spill:
            result, partitions = _spill(Path(path), label, Path(spill), batch_turns, report, fingerprint=output is None)
            duplicate_lines = _reject_duplicates(Path(path), label, partitions, result, batch_turns)
            if result.rejected and on_error == "fail":
                raise bad_records_error(label, result.rejected)
            if labels_required:
                require_scorable(label, result.read, result.accepted, result.unlabeled)
            pipeline.expect(result.accepted)
            fitted = partitions.sample.fit(duplicate_lines)
            if fitted is None:
                fitted = _sample_again(partitions, duplicate_lines).fit(duplicate_lines)
                assert fitted is not None
            records = _classify_partitions(pipeline, Path(spill), partitions, duplicate_lines, fitted, result, report,
                                           keep=output is not None)
            if output is not None:
                _merge(records, output, result, report)
            return result
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class _Partitions:
    """Where the spilled turns are: by a hash of session_id (whole sessions), and their turn_ids by a
    hash of turn_id (so a turn_id used again anywhere lands beside its first use)."""

    count: int
    files: dict[int, list[Path]] = field(default_factory=dict)
    id_count: int = 1  # turn_ids and lines are small: fewer partitions, fewer files
    ids: dict[int, list[Path]] = field(default_factory=dict)
    sample: _Sample = field(default_factory=_Sample)
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


def _spill_by(rows: pl.DataFrame, key: pl.Expr, count: int, where: Path, files: dict[int, list[Path]]) -> None:
    for (part,), group in rows.with_columns(_part=(key % count).cast(pl.UInt32)).group_by("_part"):
        target = where.with_name(f"{where.name}-{int(part)}.arrow")
        group.drop("_part").write_ipc(target, compression="lz4")  # read back soon: speed over size
        files.setdefault(int(part), []).append(target)


def _spill(path: Path, label: str, spill: Path, batch_turns: int, report: Callable,
           fingerprint: bool) -> tuple[StreamResult, _Partitions]:
    result = StreamResult(label)
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
            turns.filter(here).write_ipc(target, compression="lz4")
            partitions.files[number] = [target]
        self.ended = np.union1d(self.ended, seen[seen != last])

    def finish(self, spill: Path, partitions: _Partitions) -> None:
        if self.contiguous and self.held is not None and self.held.height:
            target = spill / "chunk-last.arrow"
            self.held.write_ipc(target, compression="lz4")
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


def _reject_duplicates(path: Path, label: str, partitions: _Partitions, result: StreamResult, batch_turns: int) -> pl.Series:
    """Turns whose turn_id, or whose session and turn_index, an earlier line used (across chunks; each chunk
    was checked when read), named as the in-memory run names them. Returns their lines, sorted."""
    reused_ids = pl.concat([
        pl.scan_ipc(files).with_columns(first_turn=pl.col("line").min().over("turn_id"))
        .filter(pl.col("line") != pl.col("first_turn")).select("line", "first_turn").collect()
        for files in partitions.ids.values()] or [pl.DataFrame(schema={"line": pl.UInt32, "first_turn": pl.UInt32})])
    found = []
    for part in partitions.files:
        keys = partitions.turns(part, ["line", "turn_id", "session_id", "turn_index"])
        found.append(keys.join(reused_ids, on="line", how="left")
                     .with_columns(first_index=pl.col("line").min().over("session_id", "turn_index"))
                     .filter(pl.col("first_turn").is_not_null() | (pl.col("line") != pl.col("first_index"))))
    duplicates = pl.concat(found).sort("line") if found else pl.DataFrame(schema={"line": pl.UInt32})
    if duplicates.height:
        raw = _raw_lines(path, label, duplicates["line"], batch_turns)
        for number, turn_id, session_id, index, first_turn, first_index in duplicates.select(
                "line", "turn_id", "session_id", "turn_index", "first_turn", "first_index").iter_rows():
            problem = duplicate_problem(turn_id, session_id, index, first_turn or 0, first_index)
            result.rejected.append(RejectedRecord(label, number, (problem,), raw[number]))
        if result.fingerprint:  # the accepted turns' fingerprint, without the duplicates
            digest = hashlib.sha256()
            for chunk in _chunks(path, label, batch_turns):
                digest.update(canonical_turns(chunk.turns.filter(~pl.col("line").is_in(duplicates["line"].implode()))))
            result.fingerprint = digest.hexdigest()
    result.rejected.sort(key=lambda r: r.line)
    return duplicates["line"]


def _sample_again(partitions: _Partitions, rejected: pl.Series) -> _Sample:
    """The sample gathered from the spilled turns, when too many of the first one's turns were rejected."""
    sample = _Sample()
    for part in partitions.files:
        sample.add(partitions.turns(part, without=rejected))
    return sample


def _classify_partitions(pipeline: Pipeline, spill: Path, partitions: _Partitions, rejected: pl.Series, fitted: Reference,
                         result: StreamResult, report: Callable, keep: bool = True) -> list[Path]:
    """Each partition's records, sorted by line, in a Parquet file of small row groups (unless not `keep`)."""
    out, done, total = [], 0, result.accepted
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
    window = MERGE_WINDOW

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


def measured(pipeline: Pipeline, result: StreamResult) -> Metrics:
    """The metrics file of a streamed run, as `fpi.pipeline.classify.measure` gives for the same turns in memory."""
    return Metrics.of_counts(source=result.source, data_fingerprint=result.fingerprint, model_fingerprint=pipeline.model.fingerprint(),
                             rules=pipeline.rules.identity(), predicted=result.counts,
                             confusion=result.confusion if result.labeled else None)


__all__ = ["BATCH_TURNS", "StreamResult", "classify_file", "estimated_turns", "measured", "streamable"]
