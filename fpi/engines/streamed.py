"""The streamed engine: an input of any size classified in bounded memory, with the same records as
the in-memory engine, in input order.

1. Read the input in parts and spill the accepted turns into partitions by a hash of session_id, so
   every session lands whole in one partition; when sessions come whole one after another, each chunk
   is a partition as read (`_SessionOrder`). Spilled turns wait in memory until SPILL_BYTES of them
   wait, then go to one file holding every partition's share (`_Shelf`): files of a fixed size, as many
   as the input needs, so the cost of a turn does not grow with the input. A JSON Lines or Parquet file
   of trace format v1 is read chunk by chunk; any other input (a mapping, CSV, OpenTelemetry spans,
   stdin, a frame) is read whole by the readers, which need whole sessions and span trees, and then
   spilled. Quantile tables are fitted on a sample chosen by turn_id (`QuantileSample`), collected as
   parts pass.
2. Run the pipeline on one partition at a time: a batch of whole sessions; its records, sorted by line,
   are written in record batches that share MERGE_BYTES among the partitions.
3. Merge the partitions' records back into input order, a window of lines at a time, reading each
   partition's record batches in turn, each once (`_SortedRecords`), into the sinks.

Spill files live in a temporary folder removed on every exit path; outputs are written beside their
place and renamed into it at the end, so an interrupted run leaves the old ones."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import math
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import closing, contextmanager
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
from fpi.engines.overlap import OneBehind, one_behind, read_ahead
from fpi.engines.whole_input import QuantileSample, hear, own_text, read_whole, settle
from fpi.io.checks import FIRST_INDEX, FIRST_TURN, StageCheck, duplicates_rejected, row_json
from fpi.io.line_blocks import BLOCK_BYTES, line_blocks
from fpi.io.read_result import LoadResult
from fpi.io.sniff import file_head, is_gzip, is_parquet, refuse_other_formats, whole_turn_lines
from fpi.io.trace_lines import read_jsonl, split_lines
from fpi.io.trace_tables import read_table, table_rows
from fpi.io.traces import canonical_turns, turns_fingerprint
from fpi.pipeline.classify import Pipeline
from fpi.pipeline.features import sample_rows
from fpi.pipeline.log_profile import HeardScores
from fpi.pipeline.quantiles import Reference

CHUNK_BYTES = BLOCK_BYTES
MIN_CHUNK_BYTES = 1 << 20
SPILL_BYTES = 128 << 20  # spilled turns held in memory before they are written: the size of a spill file
ID_SPILL_BYTES = 32 << 20  # the same for the turn_ids and lines of the duplicate check
MERGE_BYTES = 128 << 20  # records the merge holds read ahead, shared among the partitions
MIN_MERGE_ROWS = 1000  # the fewest records in a record batch the merge reads
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
        heard = hear(plan.pipeline, _sampled_sessions(partitions, rejected_lines, chosen["turn_id"], spill), fitted)
        with Sinks(plan.sinks, read) as sinks:
            records = _classify_partitions(plan.pipeline, spill, partitions, rejected_lines, fitted, heard, outcome,
                                           plan.progress, keep=bool(sinks))
            if sinks:
                _merge(records, sinks, outcome, plan.progress)
        return outcome


@dataclass
class _Partitions:
    """Where the spilled turns are: by a hash of session_id (whole sessions), and their turn_ids by a
    hash of turn_id (so a turn_id used again anywhere lands beside its first use)."""

    count: int
    by_session: _Shelf
    by_turn_id: _Shelf
    id_count: int = 1  # turn_ids and lines are small: fewer partitions
    sample: QuantileSample = field(default_factory=QuantileSample)
    stages: StageCheck = field(default_factory=StageCheck)  # turns with none of the stages, for the whole-input check

    @classmethod
    def under(cls, spill: Path, count: int, name: str = "turns") -> _Partitions:
        """`count` partitions by session spilled into the folder `spill`, in files named `name`."""
        return cls(count, _Shelf(spill, name, SPILL_BYTES), _Shelf(spill, "ids", ID_SPILL_BYTES), math.ceil(count / 8))

    def turns(self, part: int, columns: list[str] | None = None, without: pl.Series | None = None) -> pl.DataFrame:
        """One partition's turns in input order, less the lines `without`."""
        turns = self.by_session.read(part, columns)
        if without is not None and without.len():
            turns = turns.filter(~pl.col("line").is_in(without.implode()))
        return turns.sort("line")

    def flush(self) -> None:
        """Every spilled turn on disk, before the partitions are read one by one."""
        self.by_session.flush()
        self.by_turn_id.flush()

    @contextmanager
    def written_behind(self) -> Iterator[None]:
        """In this block, each spill file is written on a thread while the next rows are read; a write that
        failed is raised by the next flush, or at the end."""
        with one_behind("fpi-spill") as writer:
            self.by_session.writer = self.by_turn_id.writer = writer
            try:
                yield
                self.flush()
            finally:
                self.by_session.writer = self.by_turn_id.writer = None


class _Shelf:
    """Rows bound for partitions, held in memory until `budget` bytes of them wait, then written together to one
    Arrow IPC file, each partition's rows in record batches of their own: spill files of a fixed size, as many
    as the input needs, however many partitions share them (a file per chunk and partition would grow with the
    input times the partitions, and shrink to a few rows each)."""

    def __init__(self, folder: Path, name: str, budget: int):
        self.folder, self.name, self.budget = folder, name, budget
        self.waiting: dict[int, list[pa.Table]] = {}
        self.held = 0  # bytes waiting
        self.pieces: dict[int, list[tuple[Path, int, int]]] = {}  # partition: (file, its first record batch, the batch after)
        self.files: list[Path] = []
        self.columns: list[str] = []  # the rows' columns, as the files hold them
        self.writer: OneBehind | None = None  # when set, files are written on its thread (`_Partitions.written_behind`)

    @property
    def parts(self) -> list[int]:
        """The partitions that got rows, in order."""
        return sorted(self.pieces.keys() | self.waiting.keys())

    def put(self, part: int, rows: pl.DataFrame) -> None:
        """`rows` added to partition `part`; written with the rest once the budget is full."""
        table = _arrow(rows)
        self.waiting.setdefault(part, []).append(table)
        self.columns = rows.columns
        self.held += table.nbytes
        if self.held >= self.budget:
            self.flush()

    def split(self, rows: pl.DataFrame, key: pl.Expr, count: int) -> None:
        """`rows` among the partitions by `key` modulo `count`."""
        for (part,), group in rows.with_columns(_part=(key % count).cast(pl.UInt32)).group_by("_part"):
            self.put(int(part), group.drop("_part"))

    def flush(self) -> None:
        """What waits, written as one file, each partition's rows in record batches of their own."""
        if not self.waiting:
            return
        target = self.folder / f"{self.name}-{len(self.files)}.arrow"
        parts = sorted(self.waiting)
        tables = [pa.concat_tables(self.waiting.pop(part)) for part in parts]
        first = 0
        for part, table in zip(parts, tables, strict=True):
            batches = len(table.to_batches())  # as `_write_arrow` cuts it
            self.pieces.setdefault(part, []).append((target, first, first + batches))
            first += batches
        self.files.append(target)
        self.held = 0
        if self.writer is None:
            _write_arrow(iter(tables), target)
        else:
            self.writer.submit(_write_arrow, iter(tables), target)

    def _written(self) -> None:
        """Every file written (a write on the writer thread finished, its error raised here)."""
        if self.writer is not None:
            self.writer.wait()

    def read(self, part: int, columns: list[str] | None = None) -> pl.DataFrame:
        """One partition's rows in the order they came (only `columns`, if given)."""
        self._written()
        wanted = [name for name in self.columns if columns is None or name in columns]
        options = pa.ipc.IpcReadOptions(included_fields=[self.columns.index(name) for name in wanted])
        tables = []
        for path, first, stop in self.pieces.get(part, []):
            with pa.OSFile(str(path)) as source:
                reader = pa.ipc.open_file(source, options=options)
                tables.append(pa.Table.from_batches([reader.get_batch(i) for i in range(first, stop)]))
        tables += [table.select(wanted) for table in self.waiting.get(part, [])]
        return pl.DataFrame(pa.concat_tables(tables)).select(columns or pl.all())

    def remove(self) -> None:
        """The files deleted once read for the last time, freeing the disk for what comes next."""
        self._written()
        for path in self.files:
            path.unlink()


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


def _arrow(frame: pl.DataFrame) -> pa.Table:
    """A frame as it waits in memory and in spill files: plain strings, copied out of the buffers polars decoded
    them into (a string view keeps its whole buffer alive, several times the rows' own size)."""
    return frame.to_arrow(compat_level=pl.CompatLevel.oldest())


def _write_arrow(tables: Iterator[pa.Table], target: Path, rows: int | None = None) -> list[int]:
    """Tables put aside in TMPDIR, read back soon (speed over size): the record batches of one Arrow IPC file, of
    at most `rows` rows each; how many each table took. A full disk there is named as such."""
    first = next(tables)
    taken = []
    with (writing(f"{target.parent} (turns spilled to the temporary folder; set TMPDIR to one with room)"),
          pa.ipc.new_file(target, first.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer):
        for table in itertools.chain([first], tables):
            batches = table.to_batches(max_chunksize=rows)
            for batch in batches:
                writer.write_batch(batch)
            taken.append(len(batches))
    return taken


def _spill(path: Path, label: str, spill: Path, batch_turns: int, report: Progress,
           fingerprint: bool) -> tuple[Run, _Partitions]:
    """The file read chunk by chunk, each chunk's accepted turns spilled by session (and their ids by turn_id)."""
    result = Run(label, "streamed")
    digest = hashlib.sha256()
    partitions = _Partitions.under(spill, max(1, math.ceil(1.5 * estimated_turns(path) / batch_turns)), "chunks")
    order = _SessionOrder()
    # the next chunk parsed, and the last spill file written, while this chunk spills
    with partitions.written_behind(), closing(read_ahead(_chunks(path, label, batch_turns))) as chunks:
        for number, chunk in enumerate(chunks):
            partitions.stages.add(chunk.turns)
            turns = chunk.turns.drop("raw")
            result.read += chunk.read
            result.rejected += chunk.rejected
            result.unlabeled += turns["label"].null_count()
            partitions.sample.add(turns)
            if fingerprint:
                digest.update(canonical_turns(turns))
            partitions.by_turn_id.split(turns.select("turn_id", "line"), pl.col("turn_id").hash(seed=2), partitions.id_count)
            if order.contiguous:
                order.spill(turns, number, partitions)
            else:
                partitions.by_session.split(turns, SESSION_HASH, partitions.count)
            del chunk, turns
            report("reading", result.read, None)
        order.finish(partitions)
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
    partitions = _Partitions.under(spill, max(1, math.ceil(1.5 * turns.height / plan.batch_turns)))
    partitions.sample.add(turns)
    partitions.by_session.split(turns, SESSION_HASH, partitions.count)
    partitions.flush()
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

    def spill(self, turns: pl.DataFrame, number: int, partitions: _Partitions) -> None:
        if self.held is not None:
            turns = pl.concat([self.held, turns])
        if not turns.height:
            return
        sessions = turns.select(SESSION_HASH).to_series()
        seen = np.unique(sessions.to_numpy())
        if np.isin(seen, self.ended, assume_unique=True).any():
            self._hash_from_now(turns, partitions)
            return
        last = sessions[-1]
        here = sessions != last
        self.held = turns.filter(~here)
        if here.any():
            partitions.by_session.put(number, turns.filter(here))
        self.ended = np.union1d(self.ended, seen[seen != last])

    def finish(self, partitions: _Partitions) -> None:
        if self.contiguous and self.held is not None and self.held.height:
            partitions.by_session.put(max(partitions.by_session.parts, default=0) + 1, self.held)
        if self.contiguous:
            partitions.count = max(1, len(partitions.by_session.parts))
        self.held, self.ended = None, np.empty(0, dtype=np.uint64)

    def _hash_from_now(self, turns: pl.DataFrame, partitions: _Partitions) -> None:
        self.contiguous, self.held, self.ended = False, None, np.empty(0, dtype=np.uint64)
        chunks = partitions.by_session
        partitions.by_session = _Shelf(chunks.folder, "turns", chunks.budget)
        partitions.by_session.writer = chunks.writer
        for part in chunks.parts:
            partitions.by_session.split(chunks.read(part), SESSION_HASH, partitions.count)
        chunks.remove()
        partitions.by_session.split(turns, SESSION_HASH, partitions.count)


def _reject_duplicates(path: Path, label: str, partitions: _Partitions, result: Run, batch_turns: int) -> pl.Series:
    """Turns whose turn_id, or whose session and turn_index, an earlier line used (across chunks; each chunk
    was checked when read), named as the in-memory run names them. Returns their lines, sorted."""
    reused_ids = pl.concat([
        partitions.by_turn_id.read(part).with_columns(first_turn=FIRST_TURN).filter(pl.col("line") != pl.col("first_turn"))
        .select("line", "first_turn")
        for part in partitions.by_turn_id.parts] or [pl.DataFrame(schema={"line": pl.UInt32, "first_turn": pl.UInt32})])
    found = []
    for part in partitions.by_session.parts:
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
    for part in partitions.by_session.parts:
        sample.add(partitions.turns(part, without=rejected))
    return sample


def _sampled_sessions(partitions: _Partitions, rejected: pl.Series, sampled: pl.Series, spill: Path) -> pl.DataFrame:
    """The sampled turns' `sample_rows` with their `line`, each computed among the whole partition of sessions it
    sits in (their text copied out, or every partition's text would stay alive till the last). Every partition's
    rows are kept in `spill` as they are, so its classification reads its features before the quantiles, not
    computes them again."""
    found = []
    with one_behind("fpi-features") as writer:  # written while the next partition's are computed
        for part in partitions.by_session.parts:
            turns = partitions.turns(part, without=rejected)
            if turns.height:
                rows = sample_rows(turns).with_columns(turns["line"])
                writer.submit(_write_arrow, iter([_arrow(rows.drop("session_id", "line"))]), _features_file(spill, part))
                found.append(own_text(rows.filter(pl.col("turn_id").is_in(sampled.implode()))))
    return pl.concat(found) if found else pl.DataFrame()


def _features_file(spill: Path, part: int) -> Path:
    return spill / f"features-{part}.arrow"


def _kept_features(spill: Path, part: int, pipeline: Pipeline, fitted: Reference) -> pl.DataFrame | None:
    """A partition's features as `_sampled_sessions` kept them, with the run's quantiles (None: it kept none)."""
    path = _features_file(spill, part)
    if not path.exists():
        return None
    with pa.OSFile(str(path)) as source:  # read, not mapped (see `_SortedRecords`)
        rows = pl.DataFrame(pa.ipc.open_file(source).read_all())
    path.unlink()
    return fitted.over(pipeline.base.reference_).apply(rows)


def _classify_partitions(pipeline: Pipeline, spill: Path, partitions: _Partitions, rejected: pl.Series, fitted: Reference,
                         heard: HeardScores | None, result: Run, report: Progress, keep: bool = True) -> list[Path]:
    """Each partition's records, sorted by line, in a file of record batches (unless not `keep`): the merge holds
    one batch of every partition at a time, so they share MERGE_BYTES among them. A partition's records are written
    on a thread of their own while the next partition is classified; the sample's scores, predicted when the run
    heard it, are not predicted again."""
    out, done = [], 0
    with one_behind("fpi-records") as writer:
        for part in partitions.by_session.parts:
            turns = partitions.turns(part, without=rejected)
            batch = pipeline.run(turns.with_columns(raw=pl.lit(None, pl.String)), fitted=fitted, heard=heard,
                                 features=_kept_features(spill, part, pipeline, fitted))
            records = batch.records.with_columns(_line=turns["line"])
            if keep:
                out.append(spill / f"records-{part}.arrow")
                table = _arrow(records)
                share = MERGE_BYTES * table.num_rows // max(1, table.nbytes * partitions.count)
                writer.submit(_write_arrow, iter([table]), out[-1], max(MIN_MERGE_ROWS, share))
            result.count(records)
            done += turns.height
            report("classifying", done, result.turns)
    partitions.by_session.remove()
    return out


class _SortedRecords:
    """One partition's records, sorted by line, read a record batch at a time as the merge comes to them (kept as
    Arrow, whose slices hold what they show, till a window of every partition's records becomes one frame)."""

    def __init__(self, path: Path):
        # opened once (its footer read once) and read, not mapped: pages of a mapped file stay resident as
        # the merge passes them, so the process would grow with the records (a GB at 10M turns)
        self.reader = pa.ipc.open_file(pa.OSFile(str(path)))
        self.batches = self.reader.num_record_batches
        self.held = pa.Table.from_batches([], schema=self.reader.schema)  # (Arrow's empty_table() imports pandas)
        self.read = 0

    def first_line(self) -> int | None:
        """The line of its next record; None when every record was taken."""
        while not self.held.num_rows and self._more():
            pass
        return self.held["_line"][0].as_py() if self.held.num_rows else None

    def before(self, end: int) -> pa.Table:
        """Its records on lines before `end`, taken out."""
        while (not self.held.num_rows or self.held["_line"][-1].as_py() < end) and self._more():
            pass
        cut = int(np.searchsorted(pl.from_arrow(self.held["_line"]).to_numpy(), end))  # (Arrow's to_numpy imports pandas)
        taken, self.held = self.held.slice(0, cut), self.held.slice(cut)
        return taken

    def _more(self) -> bool:
        """Its next record batch read; False when there is none."""
        if self.read == self.batches:
            return False
        self.held = pa.concat_tables([self.held, pa.Table.from_batches([self.reader.get_batch(self.read)])])
        self.read += 1
        return True


def _merge(parts: list[Path], sinks: Sinks, result: Run, report: Progress) -> None:
    """The records in input order, a window of lines at a time, into the sinks: every record read once, each
    window written on a thread while the next is read."""
    streams = [_SortedRecords(path) for path in parts]
    empty = pl.DataFrame(streams[0].held).drop("_line") if streams else None
    written = 0
    with one_behind("fpi-merge") as writer:
        while lines := [line for stream in streams if (line := stream.first_line()) is not None]:
            end = min(lines) + MERGE_WINDOW
            records = pl.DataFrame(pa.concat_tables([stream.before(end) for stream in streams])).sort("_line").drop("_line")
            writer.submit(sinks.write, records)
            written += records.height
            report("writing", written, result.turns)
    sinks.finish(empty)


__all__ = ["estimated_turns", "in_chunks", "run"]
