"""How many labels a team needs, on a real assistant's logs and on simulated ones side by side.

    python benchmarks/bench_labels.py              # prints the table and writes it into docs/learning.md
    python benchmarks/bench_labels.py --quick      # one seed, 250 labels: a smoke run
    python benchmarks/bench_labels.py --dstc2 DIR  # where the real logs are (default: ../shared/data/dstc2)

Real logs: DSTC2 (Henderson, Thomson & Williams, 2014), calls to a deployed telephone
restaurant-information system: turns are labeled from the train split and scored on the dev split.
Simulated: an assistant profile the shipped model never trained on, a train and a test draw of
the simulator. For each: zero-shot (`fpi classify` as shipped), the confidence-threshold rule tuned
on every train label, and for 50 to 1,000 labels and all of them, labels on whole sessions chosen at
random or on the turns `fpi sample` chooses, then plain training (`fpi train --method scratch`),
continuing from the shipped model (`--method continue`) and what `fpi sample` tells users to run
(`fpi train --labels SHEET`, which chooses among those by cross-validation). Five seeds (sessions,
sheet and training), mean ± standard deviation of macro-F1 over the labels present; two processes,
one LightGBM thread each. Learning curves are benchmark output, not tests."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DSTC2 = ROOT.parent / "shared" / "data" / "dstc2"
SIMULATED = "telephone-slot-filling"  # the simulator's nearest kind of assistant to the real one, never trained on
SIM_TRAIN, SIM_TEST = 12_000, 4_000
SIZES = (50, 100, 250, 500, 1000)
SEEDS = 5
SAMPLERS = ("random sessions", "fpi sample")
PATHS = {"plain": "scratch", "--from default": "continue", "recommended": None}
START, END = "<!-- label-curves:start -->", "<!-- label-curves:end -->"


@cache
def _data(name: str, dstc2: str):
    """(train, test) turns of a benchmark assistant: loaded once per process."""
    import fpi
    from fpi.simulation.simulator import simulate

    if name == "real":
        return fpi.load_traces(str(Path(dstc2) / "train.jsonl.gz")), fpi.load_traces(str(Path(dstc2) / "dev.jsonl.gz"))
    return simulate(SIM_TRAIN, seed=11, profile=SIMULATED), simulate(SIM_TEST, seed=12, profile=SIMULATED)


@cache
def _unlabeled_batch(name: str, dstc2: str):
    """What `fpi sample` sees: the train traces without their labels, classified as shipped."""
    import polars as pl

    from fpi.pipeline.classify import Pipeline

    train, _ = _data(name, dstc2)
    return Pipeline().run(train.with_columns(label=pl.lit(None, pl.String)))


def _macro_f1(model, name: str, dstc2: str) -> float:
    """Macro-F1 on the test turns of what `fpi classify --model` outputs (the model, then the shipped rules)."""
    from fpi.contract.metrics import evaluate
    from fpi.pipeline.classify import Pipeline

    _, test = _data(name, dstc2)
    return evaluate(test["label"].to_list(), Pipeline(model).run(test).records["failure_point"].to_list())["macro_f1"]


def _labeled_rows(name: str, dstc2: str, n: int, sampler: str, seed: int):
    """Row numbers of the `n` train turns whose labels a team would have: whole sessions at random (the
    last one cut to `n`), or the sheet `fpi sample -n n --seed seed` writes."""
    import numpy as np
    import polars as pl

    from fpi.learning.turns_to_label import choose

    train, _ = _data(name, dstc2)
    if sampler == "fpi sample":
        return choose(_unlabeled_batch(name, dstc2), n, seed=seed)["row"].to_numpy()
    sessions = train["session_id"].unique().sort()
    order = sessions.gather(np.random.default_rng(seed).permutation(len(sessions)))
    rank = train.select(pl.col("session_id").replace_strict(order, np.arange(len(order)), return_dtype=pl.Int64))
    return np.sort(rank.with_row_index("row").sort("session_id", "row").head(n)["row"].to_numpy())


def _task(task: tuple) -> tuple[tuple, dict[str, float], float]:
    """One cell group: every path for one assistant, label count, sampler and seed (or the label-free rows)."""
    import numpy as np
    import polars as pl

    from fpi.contract.metrics import evaluate
    from fpi.learning.confidence_rule import ConfidenceRule
    from fpi.learning.training import train
    from fpi.pipeline.classify import Pipeline
    from fpi.pipeline.features import build_features

    name, dstc2, n, sampler, seed = task
    started = time.perf_counter()
    training_turns, test = _data(name, dstc2)
    if n == 0:
        gold = test["label"].to_list()
        rule = ConfidenceRule.fit(build_features(training_turns), training_turns["label"].to_list())
        scores = {"zero-shot (`fpi classify`)": evaluate(gold, Pipeline().run(test).records["failure_point"].to_list())["macro_f1"],
                  "confidence-threshold rule, tuned on all train labels": evaluate(gold, rule.predict(build_features(test)))["macro_f1"]}
        return task, scores, time.perf_counter() - started
    if n < 0:
        labeled = training_turns
    else:
        keep = np.isin(np.arange(training_turns.height), _labeled_rows(name, dstc2, n, sampler, seed))
        labeled = training_turns.with_columns(label=pl.when(pl.Series(keep)).then(pl.col("label")))
    training = train(labeled, seed=seed, threads=1)
    models = {c.method: c.model for c in training.candidates}
    for method in ("scratch", "continue"):  # the plain and --from default columns, where `auto` did not fit them
        if method not in models:
            models[method] = train(labeled, method=method, seed=seed, threads=1).model
    scores = {path: _macro_f1(training.model if method is None else models[method], name, dstc2)
              for path, method in PATHS.items() if method is None or method in models}
    return task, scores, time.perf_counter() - started


def _tasks(names: list[str], dstc2: str, sizes: tuple[int, ...], seeds: int, all_labels: bool) -> list[tuple]:
    tasks = [(name, dstc2, 0, "", 0) for name in names]
    for name in names:
        for seed in range(seeds):
            tasks += [(name, dstc2, n, sampler, seed) for n in sizes for sampler in SAMPLERS]
            if all_labels:
                tasks.append((name, dstc2, -1, "", seed))
    return sorted(tasks, key=lambda t: t[2] != -1)  # the long all-label runs first


def _cells(results: list[tuple[tuple, dict[str, float], float]]) -> dict[str, dict[str, list[float]]]:
    """Row name -> assistant -> the score of each seed."""
    cells: dict[str, dict[str, list[float]]] = {}
    for (name, _, n, sampler, _), scores, _ in results:
        for path, score in scores.items():
            row = path if n == 0 else (f"all labels, {path}" if n < 0 else f"{n} labels, {sampler}, {path}")
            cells.setdefault(row, {}).setdefault(name, []).append(score)
    return cells


def table(cells: dict[str, dict[str, list[float]]], names: list[str], titles: dict[str, str]) -> list[str]:
    import numpy as np

    def cell(values: list[float] | None) -> str:
        if not values:
            return "-"
        return f"{np.mean(values):.3f}" + (f" ± {np.std(values):.3f}" if len(values) > 1 else "")

    lines = ["| macro-F1 | " + " | ".join(titles[n] for n in names) + " |", "|---|" + "---:|" * len(names)]
    order = sorted(cells, key=_row_order)
    lines += [f"| {row} | " + " | ".join(cell(cells[row].get(n)) for n in names) + " |" for row in order]
    return lines


def _row_order(row: str) -> tuple:
    if not row[0].isdigit():
        return (0 if row.startswith("zero") else 1, 0, 0, 0) if not row.startswith("all") else (3, 0, 0, list(PATHS).index(row.split(", ")[1]))
    n, sampler, path = row.split(", ")
    return (2, int(n.split()[0]), SAMPLERS.index(sampler), list(PATHS).index(path))


def _worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dstc2", default=str(DSTC2), help="folder with DSTC2's train.jsonl.gz and dev.jsonl.gz")
    parser.add_argument("--quick", action="store_true", help="one seed, 250 labels, no all-label runs; writes nothing")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    names = (["real"] if (Path(args.dstc2) / "dev.jsonl.gz").is_file() else []) + ["simulated"]
    if "real" not in names:
        print(f"no DSTC2 logs in {args.dstc2}: simulated assistant only")
    sizes, seeds = ((250,), 1) if args.quick else (SIZES, SEEDS)
    tasks = _tasks(names, args.dstc2, sizes, seeds, all_labels=not args.quick)
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.processes, initializer=_worker_init) as pool:
        results = []
        for done, result in enumerate(pool.imap_unordered(_task, tasks), start=1):
            results.append(result)
            print(f"  [{done}/{len(tasks)}] {result[0][0]} {result[0][2]} {result[0][3]} seed {result[0][4]}: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in result[1].items()) + f" ({result[2]:.0f} s)", flush=True)
    elapsed = time.perf_counter() - started
    titles = {"real": "DSTC2 dev, real (train labels)", "simulated": f"simulated `{SIMULATED}`"}
    lines = table(_cells(results), names, titles)
    footer = (f"{seeds} seeds; {elapsed / 60:.1f} min on {os.cpu_count()} cores "
              f"(`python benchmarks/bench_labels.py`).")
    print("\n".join(lines) + "\n\n" + footer)
    if not args.quick and "real" in names:
        path = ROOT / "docs" / "learning.md"
        text = path.read_text(encoding="utf-8")
        before, _, rest = text.partition(START)
        _, _, after = rest.partition(END)
        path.write_text(before + START + "\n" + "\n".join(lines) + "\n\n" + footer + "\n" + END + after, encoding="utf-8")
        print(f"written into {path}")


if __name__ == "__main__":
    main()
