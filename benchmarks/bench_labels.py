"""How many labels a team needs: learning curves on simulated assistants the shipped model
never saw (the named profiles other than `default`).

    python benchmarks/bench_labels.py                 # prints the table, writes it into docs/model-card.md
    python benchmarks/bench_labels.py --quick         # two profiles, 250 labels: a smoke run

For each assistant: a training split (unlabeled but for the turns chosen) and a test split.
Macro-F1 on the test split zero-shot (the shipped model, no flags), then with 100, 250, 500
and 1,000 labels chosen at random or by `fpi sample`, trained from scratch or `--from default`,
with and without `--unlabeled`; all labels; and the lowest-confidence rule with the threshold
best on the training split. Learning curves are benchmark output, not tests."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from fpi import FailurePointModel, Pipeline, evaluate, simulate
from fpi.learning.lowest_confidence import fit_threshold, lowest_confidence
from fpi.contract.errors import FpiError
from fpi.learning.training import train
from fpi.simulation.profiles import PROFILES
from fpi.learning.turns_to_label import choose

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT = [name for name in PROFILES if name != "default"]
SIZES = (100, 250, 500, 1000)
TRAIN_TURNS, TEST_TURNS = 12_000, 8_000
START, END = "<!-- learning-curves:start -->", "<!-- learning-curves:end -->"


def macro_f1(model: FailurePointModel, test: pl.DataFrame) -> float:
    return evaluate(test["label"].to_list(), Pipeline(model, None).run(test).records["failure_point"].to_list())["macro_f1"]


def curves(profile: str, index: int, sizes: tuple[int, ...]) -> dict[str, float]:
    shipped = FailurePointModel.load()
    labeled = simulate(TRAIN_TURNS, seed=1000 + index, profile=profile)
    test = simulate(TEST_TURNS, seed=2000 + index, profile=profile)
    hidden = labeled.with_columns(label=pl.lit(None, pl.String))
    batch = Pipeline(shipped, None).run(hidden)
    base = Pipeline(shipped, None).run(labeled)
    threshold = fit_threshold(base.features, labeled["label"].to_list())
    test_batch = Pipeline(shipped, None).run(test)
    row = {"zero-shot": macro_f1(shipped, test),
           "lowest-confidence rule": evaluate(test["label"].to_list(), lowest_confidence(test_batch.features, threshold))["macro_f1"],
           "all labels": macro_f1(train(labeled).model, test),
           "all labels, --from default": macro_f1(train(labeled, base=shipped).model, test)}
    for n in sizes:
        chosen = {"random": np.sort(np.random.default_rng(index).choice(labeled.height, n, replace=False)),
                  "fpi sample": choose(batch, n, seed=0)["row"].to_numpy()}
        for how, rows in chosen.items():
            mask = pl.Series(np.isin(np.arange(labeled.height), rows))
            partial = labeled.with_columns(label=pl.when(mask).then(pl.col("label")))
            for start, base_model in (("scratch", None), ("--from default", shipped)):
                for unlabeled in (False, True):
                    name = f"{n} {how}, {start}" + (", --unlabeled" if unlabeled else "")
                    try:
                        row[name] = macro_f1(train(partial, base=base_model, unlabeled=unlabeled).model, test)
                    except FpiError as exc:  # a split too small to train on is a blank cell, not a crash
                        print(f"  {profile}: {name}: {exc}")
                        row[name] = float("nan")
    return row


def table(results: dict[str, dict[str, float]]) -> list[str]:
    names = list(results)
    rows = list(next(iter(results.values())))
    lines = ["| | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---:|" * len(names)]
    for key in rows:
        lines.append(f"| {key} | " + " | ".join(f"{results[n][key]:.3f}" for n in names) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two profiles and 250 labels only; the card is not written")
    args = parser.parse_args()
    profiles = HELD_OUT[:2] if args.quick else HELD_OUT
    sizes = (250,) if args.quick else SIZES
    started = time.perf_counter()
    results = {}
    for i, profile in enumerate(profiles):
        results[profile] = curves(profile, i, sizes)
        print(f"{profile}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    lines = table(results)
    print("\n".join(lines))
    if args.quick:
        return
    section = [START, "", "## Learning from few labels", "",
               f"`python benchmarks/bench_labels.py`: macro-F1 on {TEST_TURNS:,} test turns of each assistant the shipped model "
               f"never saw, learning from a {TRAIN_TURNS:,}-turn training split of which only the turns chosen carry a label. "
               "`fpi sample` chooses by the shipped model's uncertainty and its disagreement with user reactions; `--from default` "
               "continues the shipped model; `--unlabeled` adds weak labels from implicit feedback on the other turns. The rule "
               "gets the threshold best on the labeled training split.", "", *lines, "", END]
    card = ROOT / "docs" / "model-card.md"
    text = card.read_text(encoding="utf-8")
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    card.write_text(before.rstrip("\n") + "\n\n" + "\n".join(section) + after.rstrip("\n") + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
