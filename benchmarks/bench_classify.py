"""Throughput and peak memory of fpi's main path, each phase in a fresh process.

    python benchmarks/bench_classify.py [--turns 1000000] [--workdir DIR]

    python benchmarks/bench_classify.py --phases arrow-floor,classify,classify-streamed,spark

    python benchmarks/bench_classify.py --turns 10000000 --phases classify-streamed,report-streamed

Phases: simulate (blocks of 1M turns in time order, so sessions interleave as in real logs), the
Arrow floor (pyarrow's JSON reader parsing the same file), load, features, predict, rules, explain
(100k turns), classify end-to-end in memory, classify without rules, classify with Parquet in and out
(traces-to-parquet converts the traces first, timed apart), classify streamed (batches of
whole sessions, bounded memory), classify --explain streamed, classify on Spark local[2] (with the `spark` extra), report over the
classified records in memory, and report streamed (the records tallied batch by batch); and, without
traces, help: the wall time of `fpi --help` (median of 10 fresh processes).

Prints, per phase: seconds, turns/s and the peak RSS of the phase's process or its largest child
(Spark's JVM), including the ~0.2 GB of Python, polars and LightGBM themselves, and for a classify the
learning libraries its process loaded (none, when compiled trees in the cache predict); the
cores the whole process kept busy (CPU seconds over wall seconds; Spark's JVM and Python workers are waited
for and counted), and for local streamed and Spark their turns per core-second, Spark's against local
streamed's when both ran (alternate them: `--phases classify-streamed,spark,classify-streamed,spark`); each classify runs `--pairs` times, each
right after the Arrow floor, and its ratio is the median of the pairs' ratios (the floor moves with the
machine's state); when two or more engines classified (in memory, streamed, Parquet in and out, Spark), whether
their records are byte for byte the same; `--markdown` prints the table, `--write` writes it into docs/scale.md and the README."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


SIMULATED_BLOCK = 1_000_000
HELP_RUNS = 10
WITHOUT_TRACES = {"help"}  # phases that read no traces (nothing is simulated for them)
LEARNING_LIBRARIES = ("lightgbm", "sklearn", "scipy", "pandas", "shap", "numba")  # what a classify may do without


ENGINE_RECORDS = {"classify": ("in memory", "records.jsonl"), "classify-streamed": ("streamed", "records-streamed.jsonl"),
                  "classify-parquet": ("Parquet in and out", "records-from-parquet.parquet"),
                  "spark": ("Spark", "records-spark.parquet")}
"""Each engine's classify phase, what it is called and the records it writes (compared by `same_records`)."""


def _phase(name: str, traces: Path, out: Path) -> dict:
    import polars as pl

    from fpi import FailurePointModel, Pipeline, build_features, classify, load_traces, simulate, write_records, write_traces

    started = time.perf_counter()
    timings: dict[str, float | tuple[float, int]] = {}
    if name == "simulate":  # blocks of up to 1M turns, each in time order: sessions interleaved as in real logs
        n = int(traces.stem.split("-")[-1])
        with open(traces, "wb") as handle:
            for block, start in enumerate(range(0, n, SIMULATED_BLOCK)):
                frame = simulate(min(SIMULATED_BLOCK, n - start), seed=123 + block).sort("timestamp")
                if n > SIMULATED_BLOCK:
                    frame = frame.with_columns((f"b{block}-" + pl.col(name)).alias(name) for name in ("turn_id", "session_id"))
                handle.write(frame.write_ndjson().encode("utf-8"))
        timings["simulate+write"] = time.perf_counter() - started
    elif name == "arrow-floor":
        import pyarrow.json as arrow_json
        arrow_json.read_json(traces)
        timings["arrow floor (parse)"] = time.perf_counter() - started
    elif name == "load":
        turns = load_traces(traces)
        timings["load"] = time.perf_counter() - started
    elif name == "features":
        turns = load_traces(traces)
        t = time.perf_counter()
        build_features(turns)
        timings["features"] = time.perf_counter() - t
    elif name == "predict":
        model = FailurePointModel.load()
        features = build_features(load_traces(traces))
        t = time.perf_counter()
        X = model.matrix(features)
        timings["encode"] = time.perf_counter() - t
        t = time.perf_counter()
        model.raw_scores(X)
        timings["predict (LightGBM)"] = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as empty:
            t = time.perf_counter()
            model.compile(cache=Path(empty))
            timings["compile trees (once)"] = (time.perf_counter() - t, 0)
        t = time.perf_counter()
        model.raw_scores(X)
        timings["predict (compiled trees)"] = time.perf_counter() - t
        model.compile()  # into the user's cache, so the classify phases find it there
    elif name == "rules":
        from fpi.pipeline.features import neighbour_rows
        from fpi.pipeline.rules import decide, evaluation_frame, rule_matches
        pipeline = Pipeline()
        turns = load_traces(traces)
        neighbours = neighbour_rows(turns)
        features = build_features(turns, neighbours)
        verdicts = pipeline.verdicts(turns, features)
        t = time.perf_counter()
        matches = rule_matches(evaluation_frame(turns, features, verdicts, neighbours), pipeline.rules)
        decide(matches, pipeline.rules, verdicts["model_failure_point"])
        timings[f"rules ({len(pipeline.rules)})"] = time.perf_counter() - t
    elif name == "explain":
        from fpi.pipeline.explain import explanations, shap_values
        model = FailurePointModel.load()
        turns = load_traces(traces).head(100_000)
        features = build_features(turns)
        records = (Pipeline(model, None).verdicts(turns, features)
                   .with_columns(failure_point=pl.col("model_failure_point"), rule=pl.lit(None, pl.String)))
        t = time.perf_counter()
        explanations(records, features, model, top_k=3, explain_all=True)
        timings["explain, own class (100k)"] = (time.perf_counter() - t, turns.height)
        X = model.matrix(features)
        t = time.perf_counter()
        shap_values(model, X)
        timings["SHAP, all classes (100k)"] = (time.perf_counter() - t, X.shape[0])
    elif name == "classify":
        model = FailurePointModel.load()
        turns = load_traces(traces)
        write_records(classify(turns, model), out.with_name(ENGINE_RECORDS[name][1]))
        timings["classify end-to-end"] = time.perf_counter() - started
    elif name == "traces-to-parquet":  # setup for classify-parquet, timed apart
        load_traces(traces).drop("line", "raw").write_parquet(traces.with_suffix(".parquet"))
        timings["traces to Parquet (setup)"] = time.perf_counter() - started
    elif name == "classify-parquet":  # Parquet in and out, in memory (after traces-to-parquet)
        write_records(classify(load_traces(traces.with_suffix(".parquet")), FailurePointModel.load()),
                      out.with_name(ENGINE_RECORDS[name][1]))
        timings["classify in memory, Parquet in and out"] = time.perf_counter() - started
    elif name == "classify-streamed":
        from fpi.engines import streamed
        from fpi.engines.plan import Plan, sink_for
        streamed.run(Plan(traces, Pipeline(), sinks=[sink_for(out.with_name(ENGINE_RECORDS[name][1]))]))
        timings["classify streamed"] = time.perf_counter() - started
    elif name == "classify-explain":  # `fpi classify --explain`: each turn not correct explained by its top 3 features
        from fpi.engines import streamed
        from fpi.engines.plan import Plan, sink_for
        streamed.run(Plan(traces, Pipeline(explain_top_k=3), sinks=[sink_for(out.with_name("records-explained.jsonl"))]))
        timings["classify --explain streamed"] = time.perf_counter() - started
    elif name == "report-streamed":  # on the records classify-streamed wrote, tallied batch by batch
        from fpi.presentation.report_formats import html_page
        from fpi.reports.failure_report import build_report
        from fpi.reports.counts import Tally
        by = ["nlu.domain", "nlu.intent", "device.type", "locale"]
        html_page(build_report(Tally.of_file(out.with_name(ENGINE_RECORDS["classify-streamed"][1]), by), by=by))
        timings["report streamed (html)"] = time.perf_counter() - started
    elif name == "spark":
        from fpi.engines import spark as engine
        _adopt_orphans()
        session = engine.session("local[2]")
        engine.write_parquet(engine.classify(session.read.text(str(traces)), source=str(traces)),
                             out.with_name(ENGINE_RECORDS[name][1]))
        jvm = session.sparkContext._gateway.proc
        session.stop()
        jvm.stdin.close()  # the JVM ends when its input does; waited for, its CPU time and its workers' count
        jvm.wait()
        _reap_orphans()
        timings["classify spark local[2]"] = time.perf_counter() - started
    elif name == "help":
        runs = []
        for _ in range(HELP_RUNS):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "fpi", "--help"], stdout=subprocess.DEVNULL, check=True)
            runs.append(time.perf_counter() - t)
        timings[f"fpi --help (median of {HELP_RUNS})"] = (statistics.median(runs), 0)
    elif name == "classify-no-rules":
        write_records(classify(load_traces(traces), FailurePointModel.load(), None), out.with_name("records-no-rules.jsonl"))
        timings["classify, no rules"] = time.perf_counter() - started
    elif name == "report":  # on the records the classify phase wrote
        from fpi.io.records_files import read_records
        from fpi.presentation.report_formats import html_page
        from fpi.reports.failure_report import build_report
        records = read_records(out)
        timings["report: read jsonl"] = time.perf_counter() - started
        t = time.perf_counter()
        report = build_report(records, by=["nlu.domain", "nlu.intent", "device.type", "locale"], baseline=records)
        timings["report: numbers"] = time.perf_counter() - t
        t = time.perf_counter()
        html_page(report)
        timings["report: html + plots"] = time.perf_counter() - t
        records.write_parquet(out.with_suffix(".parquet"))
        t = time.perf_counter()
        build_report(read_records(out.with_suffix(".parquet")), by=["nlu.domain", "nlu.intent", "device.type", "locale"])
        timings["report from parquet"] = time.perf_counter() - t
    # the largest of this process and its children (Spark's JVM and Python workers are children)
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 2**20
    return {"timings": timings, "peak_rss_gb": peak, "loaded": [name for name in LEARNING_LIBRARIES if name in sys.modules]}


def _adopt_orphans() -> None:
    """Become the parent of this process's orphaned descendants (Linux), so that Python workers Spark's JVM leaves
    behind are waited for here and their CPU time is counted with this process's."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap_orphans(seconds: float = 30.0) -> None:
    """Wait for every descendant still running or unwaited (at most `seconds`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            time.sleep(0.05)


def same_records(workdir: Path, phases: list[str]) -> str | None:
    """Whether the engines these phases ran wrote the same records byte for byte, as fpi writes JSON Lines (Parquet
    files and Spark's folder of part files read back first); None when fewer than two ran."""
    import filecmp

    import polars as pl

    from fpi import write_records

    ran = [ENGINE_RECORDS[phase] for phase in dict.fromkeys(phases) if phase in ENGINE_RECORDS]
    if len(ran) < 2:
        return None
    lines = []
    for _, name in ran:
        path = workdir / name
        if path.suffix == ".parquet":
            path = workdir / f"{path.stem}.as.jsonl"
            write_records(pl.read_parquet(workdir / name / "*.parquet" if (workdir / name).is_dir() else workdir / name), path)
        lines.append(path)
    differ = [engine for (engine, _), path in zip(ran[1:], lines[1:]) if not filecmp.cmp(lines[0], path, shallow=False)]
    engines = ", ".join(engine for engine, _ in ran)
    return (f"records byte for byte the same across {engines}" if not differ
            else f"records DIFFER from {ran[0][0]}'s: {', '.join(differ)}")


PAIRED = ("classify", "classify-no-rules", "classify-parquet", "classify-streamed", "classify-explain", "spark")
"""Phases measured against the floor: each run right after a floor run, in the same machine state."""
MARKERS = ("<!-- bench-classify:start -->", "<!-- bench-classify:end -->")


def _run(phase: str, args: argparse.Namespace, workdir: Path) -> dict:
    """One phase in a fresh process: its timings, peak RSS and learning libraries, and the cores the whole process kept
    busy (CPU seconds of it and its children over its wall time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    run = subprocess.run([sys.executable, __file__, "--turns", str(args.turns), "--workdir", str(workdir), "--phase", phase],
                         capture_output=True, text=True)
    if run.returncode:
        kept = workdir / f"phase-{phase}.stderr"  # a JVM's stack trace buries the cause: keep it whole
        kept.write_text(run.stderr, encoding="utf-8")
        causes = [line for line in run.stderr.splitlines() if "Error" in line or "Caused by" in line][:12]
        raise SystemExit(f"phase {phase} failed (exit {run.returncode}); its whole error output in {kept}:\n"
                         + "\n".join(causes) + f"\n...\n{run.stderr[-2000:]}")
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result | {"cores": cpu / wall if wall else 0.0, "cpu": cpu, "wall": wall}


def _measure(phases: list[str], args: argparse.Namespace, workdir: Path) -> list[dict]:
    """Rows of figures; a paired phase runs `--pairs` times, each right after the floor, and keeps the medians."""
    rows = []
    for phase in phases:
        rounds = args.pairs if phase in PAIRED and args.pairs else 1
        floors, results = [], []
        for _ in range(rounds):
            if phase in PAIRED and args.pairs:
                floors.append(_run("arrow-floor", args, workdir)["timings"]["arrow floor (parse)"])
            results.append(_run(phase, args, workdir))
        for step in results[0]["timings"]:
            timings = [r["timings"][step] for r in results]
            seconds = statistics.median(t[0] if isinstance(t, list) else t for t in timings)
            turns = timings[0][1] if isinstance(timings[0], list) else args.turns
            ratios = [(t[0] if isinstance(t, list) else t) / f for t, f in zip(timings, floors)]
            rows.append({"step": step, "seconds": seconds, "turns": turns, "peak": max(r["peak_rss_gb"] for r in results),
                         "cores": statistics.median(r["cores"] for r in results), "loaded": results[0]["loaded"],
                         "process": statistics.median(r["wall"] for r in results),
                         "per_core": statistics.median(turns / r["cpu"] if r["cpu"] else 0.0 for r in results),
                         "phase": phase, "floor": statistics.median(floors) if floors else None,
                         "ratio": statistics.median(ratios) if ratios else None, "rounds": rounds})
            _say(rows[-1])
    return rows


def _say(row: dict) -> None:
    rate = f"{row['turns'] / row['seconds']:>12,.0f} turns/s" if row["turns"] else " " * 20
    ratio = f"   {row['ratio']:.2f} x its floor ({row['floor']:.2f} s; medians of {row['rounds']} pairs)" if row["ratio"] else ""
    print(f"  {row['step']:<30} {row['seconds']:8.2f} s  {rate}   peak RSS {row['peak']:.2f} GB   {row['cores']:.2f} cores{ratio}")
    if row["phase"].startswith("classify") or row["phase"] == "spark":
        print(f"  {'learning libraries loaded':<30} {', '.join(row['loaded']) or 'none'}")
    if row["phase"] in PER_CORE:
        print(f"  {'per core busy':<30} {row['per_core']:8,.0f} turns/s   (the whole process: {row['process']:.1f} s)")


PER_CORE = ("classify-streamed", "spark")  # the engines compared by their work per core: local streamed, and Spark


def per_core(rows: list[dict]) -> str | None:
    """Spark's turns per core-second against local streamed's, the medians of their runs, when both ran."""
    rates = {phase: [row["per_core"] for row in rows if row["phase"] == phase and row["turns"]] for phase in PER_CORE}
    if not all(rates.values()):
        return None
    local, spark = (statistics.median(rates[phase]) for phase in PER_CORE)
    return (f"Spark local[2] {spark:,.0f} turns/s per core busy against local streamed {local:,.0f} (medians of "
            f"{len(rates['spark'])} and {len(rates['classify-streamed'])} runs): local streamed does {local / spark:.2f}x "
            "the work per core")


def markdown(rows: list[dict], turns: int, size_gb: float, same: str | None = None) -> str:
    """The figures as the Markdown table docs/scale.md and the README show."""
    machine = f"{os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    lines = [f"{turns:,} simulated turns ({size_gb:.2f} GB of JSON Lines), {machine}; each phase in a fresh process; "
             "a classify's ratio is the median over pairs of it and the Arrow floor run just before it "
             "(`python benchmarks/bench_classify.py --write`):", "",
             "| phase | seconds | turns/s | × its Arrow floor (floor) | cores busy | peak RSS |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        rate = f"{row['turns'] / row['seconds']:,.0f}" if row["turns"] else ""
        ratio = f"{row['ratio']:.2f} ({row['floor']:.1f} s)" if row["ratio"] else ""
        lines.append(f"| {row['step']} | {row['seconds']:.1f} | {rate} | {ratio} | {row['cores']:.2f} | {row['peak']:.2f} GB |")
    compared = per_core(rows)
    return "\n".join([*lines, *(["", f"{compared}."] if compared else []), *(["", f"{same[0].upper()}{same[1:]}."] if same else [])])


def write_between_markers(path: Path, text: str) -> None:
    """Replace what sits between the benchmark's markers in `path` (atomically)."""
    content = path.read_text()
    head, found, rest = content.partition(MARKERS[0])
    _, found_end, tail = rest.partition(MARKERS[1])
    if not found or not found_end:
        raise SystemExit(f"{path}: no {MARKERS[0]} ... {MARKERS[1]} block to write the figures into")
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(f"{head}{MARKERS[0]}\n{text}\n{MARKERS[1]}{tail}")
    temporary.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--phases", default="arrow-floor,load,features,predict,rules,explain,classify,classify-no-rules,"
                        "traces-to-parquet,classify-parquet,classify-streamed,classify-explain,report,report-streamed,help", help="comma-separated; add `spark` with the spark extra")
    parser.add_argument("--pairs", type=int, default=3, help="runs of each classify phase, each right after an Arrow floor run "
                        "(0: once, no ratio)")
    parser.add_argument("--markdown", action="store_true", help="also print the figures as a Markdown table (the README's)")
    parser.add_argument("--write", action="store_true", help="write the table into docs/scale.md and README.md")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fpi-bench-"))
    traces = workdir / f"traces-{args.turns}.jsonl"
    out = workdir / "records.jsonl"
    if args.phase:
        print(json.dumps(_phase(args.phase, traces, out)))
        return
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"fpi benchmark: {args.turns:,} simulated turns, {os.cpu_count()} cores, work in {workdir}")
    asked = args.phases.split(",")
    phases = (["simulate"] if not traces.exists() and set(asked) - WITHOUT_TRACES else []) + asked
    rows = _measure(phases, args, workdir)
    compared = per_core(rows)
    if compared:
        print(f"  {compared}")
    same = same_records(workdir, asked)
    if same:
        print(f"  {same}")
    size = traces.stat().st_size / 2**30 if traces.exists() else 0.0
    table = markdown([row for row in rows if row["phase"] != "simulate"], args.turns, size, same)
    if args.markdown:
        print("\n" + table)
    if args.write:
        root = Path(__file__).resolve().parent.parent
        for target in (root / "docs" / "scale.md", root / "README.md"):
            write_between_markers(target, table)
            print(f"written into {target}")


if __name__ == "__main__":
    main()
