"""The Spark engine: the same pipeline as `fpi classify`, one partition of whole sessions per task.

Trace lines are keyed by `session_id`, shuffled so every session lands whole in one partition, and
each partition is read by fpi's own reader and classified by the same `Pipeline`, with quantile
tables fitted once on the driver from the same sample the local engines use (`Reference.sample`).
So Spark and the local engine give the same records. The model and rule files travel to executors
as files (`SparkContext.addFile`), a mapping as JSON; nothing the user wrote is pickled.

    from fpi.engines import spark as fpi_spark
    records = fpi_spark.classify(spark.read.text("traces.jsonl"))    # a column `value` of JSON lines
    explained = fpi_spark.classify(lines, explain_top_k=3, on_error="skip", on_rejected=quarantine)

Needs the `spark` extra (`pip install "fpi-voice[spark]"`, pyspark 4)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from fpi.contract.errors import TraceError, UsageError
from fpi.pipeline.model_folder import default_model_dir
from fpi.pipeline.quantiles import SOURCES, Reference
from fpi.contract.records import SCHEMA

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from fpi.io.read_result import RejectedRecord
    from fpi.io.mapping import Mapping

LINE = "line"  # the 1-based line of each record in the input, carried through so output keeps input order
_PROBLEM, _CODE, _FIELD, _WHAT, _RAW, _LABELED = "_problem", "_code", "_field", "_what", "_raw", "_labeled"
# What the first pass brings back per partition: the rows quantile tables are fitted on, bad records (a row
# per problem: its message, and the field, code, reason and line text the quarantine keeps), and a row
# counting the turns with a gold label (records carry `label` when any turn has one).
_INSPECTED = pa.schema([("turn_id", pa.string()), *[(name, pa.float64()) for name in SOURCES], ("nlu_intent", pa.string()),
                        (LINE, pa.int64()), (_PROBLEM, pa.string()), (_CODE, pa.string()), (_FIELD, pa.string()),
                        (_WHAT, pa.string()), (_RAW, pa.string()), (_LABELED, pa.int64())])
_EXTRA = (_PROBLEM, _CODE, _FIELD, _WHAT, _RAW)


def _arrow_type(dtype: Any) -> pa.DataType:
    """The Arrow type Spark reads for a records column (plain strings and lists, not the large ones)."""
    if isinstance(dtype, pl.Struct):
        return pa.struct([(f.name, _arrow_type(f.dtype)) for f in dtype.fields])
    if isinstance(dtype, pl.List):
        return pa.list_(_arrow_type(dtype.inner))
    return pa.string() if dtype == pl.String else pa.int64() if dtype == pl.Int64 else pa.float64()


def records_arrow(explained: bool, labeled: bool) -> pa.Schema:
    """The records-v1 columns the engine writes (`explanation` when explaining, `label` when the input has
    gold labels), and `line`."""
    names = [name for name in SCHEMA if (explained or name != "explanation") and (labeled or name != "label")]
    return pa.schema([(name, _arrow_type(SCHEMA[name])) for name in names] + [(LINE, pa.int64())])


def _partition_traces(batches: Iterator[pa.RecordBatch]) -> tuple[bytes, list[int]]:
    """A partition's lines in input order, as the bytes of a JSON Lines file, and their input line numbers."""
    table = pa.Table.from_batches(list(batches))
    frame = pl.DataFrame(table).sort(LINE) if table.num_rows else pl.DataFrame({"value": [], LINE: []})
    text = "\n".join(frame["value"].to_list()) + "\n"
    return text.encode("utf-8"), frame[LINE].to_list()


def _read(batches: Iterator[pa.RecordBatch], label: str, mapping: str | None):
    from fpi.io.traces import read_traces
    from fpi.io.mapping import Mapping

    data, lines = _partition_traces(batches)
    if not lines:
        return None, lines
    return read_traces(data, name=label, mapping=Mapping.from_json(json.loads(mapping)) if mapping else None), lines


def _inspect(label: str, mapping: str | None):
    """Per partition: the sample rows for the quantile tables (the partition's own `Reference.sample`: the
    union over partitions holds the global one), its count of labeled turns and a row per problem of a bad record."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from fpi.pipeline.features import reference_rows

        result, lines = _read(batches, label, mapping)
        if result is None:
            return
        original = pl.Series(lines)
        if result.turns.height:
            rows = Reference.sample(reference_rows(result.turns).with_columns(
                pl.Series(LINE, original.gather(result.turns["line"] - 1)),
                *[pl.lit(None, pl.String).alias(name) for name in _EXTRA], pl.lit(None, pl.Int64).alias(_LABELED)))
            yield rows.select(_INSPECTED.names).to_arrow().cast(_INSPECTED).to_batches()[0]
            labeled = result.turns.height - result.turns["label"].null_count()
            yield pa.RecordBatch.from_pylist([{_LABELED: labeled}], schema=_INSPECTED)
        problems = [{LINE: lines[r.line - 1], _PROBLEM: f"{field}: {what}" if field else what, _CODE: code, _FIELD: field,
                     _WHAT: what, _RAW: r.raw if isinstance(r.raw, str) else r.raw.decode("utf-8", "replace")}
                    for r in result.rejected for field, code, what in r.problems]
        if problems:
            frame = pl.DataFrame(problems, schema={name: pl.Int64 if name == LINE else pl.String
                                                   for name in (LINE, *_EXTRA)}).with_columns(
                *[pl.lit(None, pl.Float64).alias(name) for name in SOURCES], turn_id=pl.lit(None, pl.String),
                nlu_intent=pl.lit(None, pl.String), _labeled=pl.lit(None, pl.Int64))
            yield frame.select(_INSPECTED.names).to_arrow().cast(_INSPECTED).to_batches()[0]
    return run


_PIPELINES: dict[tuple, object] = {}  # per Python worker: the pipeline built from the shipped files


def _classify(label: str, model_file: str, rule_files: tuple[str, ...], reference: str, explain_top_k: int | None,
              explain_all: bool, mapping: str | None, labeled: bool):
    """Per partition: fpi's reader, then the pipeline with the driver's quantile tables."""
    schema = records_arrow(explain_top_k is not None, labeled)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import SparkFiles

        from fpi.pipeline.model import FailurePointModel
        from fpi.pipeline.classify import Pipeline
        from fpi.pipeline.rules import RuleSet, load_rules

        key = (model_file, rule_files, explain_top_k, explain_all)
        if key not in _PIPELINES:
            rules = load_rules([Path(SparkFiles.get(name)) for name in rule_files]) if rule_files else RuleSet(())
            _PIPELINES[key] = Pipeline(FailurePointModel.load(SparkFiles.get(model_file)), rules,
                                       explain_top_k=explain_top_k, explain_all=explain_all)
        pipeline = _PIPELINES[key]
        assert isinstance(pipeline, Pipeline)
        result, lines = _read(batches, label, mapping)
        if result is None or result.turns.height == 0:
            return
        records = pipeline.run(result.turns, fitted=Reference.from_json(json.loads(reference))).records
        records = records.with_columns(pl.Series(LINE, pl.Series(lines).gather(result.turns["line"] - 1)))
        for name in schema.names:
            if name not in records.columns:
                records = records.with_columns(pl.lit(None, SCHEMA[name]).alias(name))
        yield from records.select(schema.names).to_arrow().cast(schema).to_batches()
    return run


def with_lines(lines: DataFrame) -> DataFrame:
    """A DataFrame of text lines (`value`, as `spark.read.text` gives) with each line's 1-based number."""
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    numbered = lines.select("value").rdd.zipWithIndex().map(lambda pair: (pair[0][0], pair[1] + 1))
    return lines.sparkSession.createDataFrame(numbered, StructType([StructField("value", StringType()),
                                                                    StructField(LINE, LongType())]))


def classify(lines: DataFrame, *, model: str | Path | None = None, rules: list[Path] | None = None, no_rules: bool = False,
             partitions: int | None = None, source: str = "traces", on_error: str = "fail", explain_top_k: int | None = None,
             explain_all: bool = False, on_rejected: Callable[[list[RejectedRecord]], None] | None = None,
             mapping: str | Path | None = None) -> DataFrame:
    """Records (the records-v1 contract, plus `line`; `explanation` only with `explain_top_k`) for trace lines:
    a DataFrame with a `value` column of JSON lines, in input order (`spark.read.text(path)`), optionally with
    `line` numbers. `on_error="fail"` raises TraceError naming every bad record; `"skip"` leaves them out and
    hands them, with their reasons and text, to `on_rejected` (which `fpi classify` quarantines). With a
    `mapping` (a shipped name or a file) the lines are JSON records of another shape (docs/mapping.md)."""
    from pyspark.sql import functions as F

    from fpi.pipeline.rules import default_rules_path

    if "value" not in lines.columns:
        raise UsageError("fpi.engines.spark.classify takes trace lines: a DataFrame with a `value` column of JSON text "
                         "(spark.read.text(path)); for a table of structs, select to_json(struct(*)) as value")
    spark = lines.sparkSession
    mapped = _line_mapping(mapping) if mapping is not None else None
    session_key, turn_key = _keys(mapped)
    mapping_json = json.dumps(mapped.to_json()) if mapped is not None else None
    numbered = lines if LINE in lines.columns else with_lines(lines)
    keyed = numbered.withColumn("_session", session_key)
    by_session = keyed.repartition(partitions or spark.sparkContext.defaultParallelism, "_session").select("value", LINE)

    inspected = by_session.mapInArrow(_inspect(source, mapping_json), _spark_schema(_INSPECTED)).toArrow()
    found = pl.from_arrow(inspected)
    assert isinstance(found, pl.DataFrame)
    problems = found.filter(pl.col(_PROBLEM).is_not_null())
    problems, reused = _reused_across_sessions(keyed, problems, turn_key) if turn_key is not None else (problems, [])
    problems = problems.sort(LINE, maintain_order=True)
    if problems.height and on_error == "fail":
        raise TraceError([f"{source}:{line}: {problem}" for line, problem in problems.select(LINE, _PROBLEM).iter_rows()],
                         summary=f"{source}: {problems[LINE].n_unique()} bad records; nothing was written "
                                 "(use --on-error skip to go on with the valid turns)")
    if problems.height and on_rejected is not None:
        on_rejected(_rejected(problems, source))
    if reused:
        by_session = by_session.where(~F.col(LINE).isin(reused))
    labeled = bool(found[_LABELED].sum())
    sample = Reference.sample(found.filter(pl.col(_PROBLEM).is_null() & pl.col(_LABELED).is_null() & ~pl.col(LINE).is_in(reused))
                              .drop(LINE, *_EXTRA, _LABELED))
    reference = json.dumps(Reference.fit(sample).to_json())

    model_dir = Path(model) if model is not None else default_model_dir()
    rule_paths = [] if no_rules else _shipped_rules(rules or [default_rules_path()])
    spark.sparkContext.addFile(str(model_dir.resolve()), recursive=True)
    for path in rule_paths:
        spark.sparkContext.addFile(str(path.resolve()))
    run = _classify(source, model_dir.resolve().name, tuple(path.name for path in rule_paths), reference, explain_top_k,
                    explain_all, mapping_json, labeled)
    return by_session.mapInArrow(run, _spark_schema(records_arrow(explain_top_k is not None, labeled)))


def _rejected(problems: pl.DataFrame, source: str) -> list[RejectedRecord]:
    """The bad records, one per input line in input order, each with every reason found and its text."""
    from fpi.io.read_result import RejectedRecord

    return [RejectedRecord(source, line, tuple(zip(group[_FIELD], group[_CODE], group[_WHAT], strict=True)), group[_RAW][0])
            for (line,), group in problems.group_by(LINE, maintain_order=True)]


def _line_mapping(mapping: str | Path) -> Mapping:
    """The mapping, if it reads JSON records one a line (Spark hands the engine lines, not files)."""
    from fpi.io.mapping import load_mapping

    loaded = load_mapping(mapping)
    if loaded.format not in (None, "jsonl") or loaded.turn is not None:
        raise UsageError(f"--engine spark reads JSON Lines, and the mapping {loaded.name} reads "
                         f"{loaded.format or 'spans'}: classify such input with the local engines")
    return loaded


def _keys(mapping: Mapping | None) -> tuple[Column, Column | None]:
    """What the JVM reads from each line: its session, which partitions the lines, and its turn_id, by which
    a turn_id reused in another session is found (None: the mapping makes turn_ids, unique per session)."""
    from pyspark.sql import functions as F

    if mapping is None:
        return F.get_json_object("value", "$.session_id"), F.get_json_object("value", "$.turn_id")
    turn = mapping.fields.get("turn_id")
    return (F.coalesce(*[F.get_json_object("value", path) for path in _json_paths(mapping, "session_id")]),
            None if turn is None else F.coalesce(*[F.get_json_object("value", path) for path in _json_paths(mapping, "turn_id")]))


def _json_paths(mapping: Mapping, target: str) -> list[str]:
    """The JSON paths of a key's field in the lines: a name with dots whole first, as the mapping reads it.
    A key the mapping computes (`first_of`, `values`, ...) cannot partition lines before they are read."""
    spec = mapping.fields.get(target)
    if isinstance(spec, dict) and set(spec) == {"from"}:
        spec = spec["from"]
    if not isinstance(spec, str) or any(c in spec for c in "'[]:"):
        raise UsageError(f"--engine spark partitions lines by `{target}` read straight from one field; the mapping "
                         f"{mapping.name} computes it ({spec!r}): classify with the local engines, or map it from one field")
    return ([f"$['{spec}']"] if "." in spec else []) + [f"$.{spec}"]


def _reused_across_sessions(keyed: DataFrame, problems: pl.DataFrame, turn_key: Column) -> tuple[pl.DataFrame, list[int]]:
    """A turn_id used in more than one session: each task sees one session's use only, so the driver names the
    later uses as the local reader does (first use: the earliest line that is otherwise a valid turn). Returns
    the problems with these, and the lines to leave out."""
    from pyspark.sql import functions as F

    from fpi.io.checks import duplicate_problem
    from fpi.contract.trace_format import DUPLICATE

    ids = keyed.select(turn_key.alias("turn_id"), "_session", LINE).where("turn_id is not null")
    spread = ids.groupBy("turn_id").agg(F.countDistinct("_session").alias("_sessions")).where("_sessions > 1")
    uses = pl.from_arrow(ids.join(spread, "turn_id").select("turn_id", LINE).toArrow())
    assert isinstance(uses, pl.DataFrame)
    invalid = problems.filter(pl.col(_CODE) != DUPLICATE)[LINE].implode()
    later = (uses.filter(~pl.col(LINE).is_in(invalid)).with_columns(first=pl.col(LINE).min().over("turn_id"))
             .filter(pl.col(LINE) != pl.col("first")).sort(LINE))
    if not later.height:
        return problems, []
    text = pl.from_arrow(keyed.where(F.col(LINE).isin(later[LINE].to_list())).select(LINE, "value").toArrow())
    assert isinstance(text, pl.DataFrame)
    raw = dict(text.iter_rows())
    named = pl.DataFrame([{LINE: line, _PROBLEM: f"{field}: {message}", _CODE: code, _FIELD: field, _WHAT: message,
                           _RAW: raw.get(line)}
                          for line, turn_id, first in later.select(LINE, "turn_id", "first").iter_rows()
                          for field, code, message in [duplicate_problem(turn_id, "", 0, first, 0)]],
                         schema={name: pl.Int64 if name == LINE else pl.String for name in (LINE, *_EXTRA)})
    kept = problems.filter(~(pl.col(LINE).is_in(later[LINE].implode()) & (pl.col(_CODE) == DUPLICATE)))
    return pl.concat([kept, named], how="diagonal_relaxed"), later[LINE].to_list()


def _shipped_rules(paths: list[Path]) -> list[Path]:
    """The rule files to ship (folders opened), checked first: a bad rule fails on the driver, not in a task."""
    from fpi.pipeline.rules import load_rules, rule_files

    load_rules(paths)
    found = rule_files(paths)
    names = [path.name for path in found]
    if len(set(names)) != len(names):
        raise UsageError("--engine spark ships rule files by name; give rule files with different names")
    return found


def _spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def session(master: str = "local[2]", app: str = "fpi"):
    """A Spark session whose Python workers run this interpreter (so they have fpi and its packages)."""
    import os
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master(master).appName(app).config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


@contextmanager
def running(master: str = "local[2]"):
    """The active session if there is one (a notebook's, a test's), else a new one, stopped at the end."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    spark = active or session(master)
    try:
        yield spark
    finally:
        if active is None:
            spark.stop()


def write_parquet(records: DataFrame, output: Path) -> None:
    """Records in input order as a Parquet folder (Spark's part files), replacing `output` only once the
    new folder is complete."""
    import shutil
    import tempfile

    output = output.resolve()
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        records.orderBy(LINE).drop(LINE).write.mode("overwrite").parquet(str(staging))
        if output.exists():
            old = staging.with_name(staging.name + ".old")
            output.rename(old)
            staging.rename(output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
