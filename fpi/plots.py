"""Plots of a report as inline SVG for the HTML page: defect rate per component with
intervals (and the baseline), rate by day, a heat-map per slice, the confusion matrix.
SVG text stays text and ids are salted, so the page is small and byte-for-byte stable."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np

from fpi.report import Report, SliceTable
from fpi.schema import COMPONENTS

COLOURS = {"wake": "#7b61c9", "asr": "#d1495b", "nlu": "#edae49", "er": "#00798c", "result": "#30638e", "defects": "#1d2330"}
HEATMAP_MAX_VALUES = 60


def _svg(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: the SVG sits inside HTML


def _components(report: Report):
    import matplotlib.pyplot as plt

    rows = {row["failure_point"]: row for row in report["components"]}
    rates = np.array([rows[c]["rate"] for c in COMPONENTS]) * 100
    low = rates - np.array([rows[c]["ci_low"] for c in COMPONENTS]) * 100
    high = np.array([rows[c]["ci_high"] for c in COMPONENTS]) * 100 - rates
    figure, axes = plt.subplots(figsize=(7, 3.2))
    y = np.arange(len(COMPONENTS))[::-1]
    axes.barh(y, rates, color=[COLOURS[c] for c in COMPONENTS], alpha=0.85, label="this run")
    axes.errorbar(rates, y, xerr=[low, high], fmt="none", ecolor="#1d2330", capsize=4, linewidth=1.2, label="95% interval")
    if "baseline" in report:
        base = {row["failure_point"]: row["baseline_rate"] for row in report["baseline"]["components"]}
        axes.scatter([base[c] * 100 for c in COMPONENTS], y, marker="D", color="white", edgecolor="#1d2330", zorder=3,
                     label="baseline", s=36)
    axes.set_yticks(y, COMPONENTS)
    axes.set_xlabel("share of all turns (%)")
    axes.legend(loc="lower right", frameon=False, fontsize=8)
    axes.spines[["top", "right"]].set_visible(False)
    return figure


def _by_day(table: SliceTable):
    """All defects with its 95% band above; each component's line below (bands there would hide the lines)."""
    import matplotlib.pyplot as plt

    days = [row["value"] for row in table["values"]]
    x = np.arange(len(days))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.2), sharex=True, height_ratios=[1, 1.3])

    def series(name: str, key: Literal["rate", "ci_low", "ci_high"]) -> np.ndarray:
        return np.array([row["rates"][name][key] for row in table["values"]]) * 100

    top.fill_between(x, series("defects", "ci_low"), series("defects", "ci_high"), color=COLOURS["defects"], alpha=0.12,
                     linewidth=0, label="95% interval")
    top.plot(x, series("defects", "rate"), color=COLOURS["defects"], linewidth=2, marker="o", markersize=3, label="all defects")
    top.set_ylabel("all defects (%)")
    top.legend(fontsize=8, frameon=False, loc="upper left", ncol=2)
    for name in COMPONENTS:
        bottom.plot(x, series(name, "rate"), color=COLOURS[name], linewidth=1.4, marker="o", markersize=2.5, label=name)
    bottom.set_ylabel("per component (%)")
    bottom.legend(ncol=5, fontsize=8, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0))
    step = max(1, len(days) // 12)
    bottom.set_xticks(x[::step], days[::step], rotation=30, ha="right", fontsize=8)
    for axes in (top, bottom):
        axes.spines[["top", "right"]].set_visible(False)
        axes.set_ylim(bottom=0)
    return figure


def _heatmap(table: SliceTable):
    import matplotlib.pyplot as plt

    values = table["values"][:HEATMAP_MAX_VALUES]
    names = [f"{row['value']}{' *' if row['small'] else ''}" for row in values]
    columns = (*COMPONENTS, "defects")
    rates = np.array([[row["rates"][c]["rate"] * 100 for c in columns] for row in values])
    figure, axes = plt.subplots(figsize=(7, 0.8 + 0.28 * len(values)))
    # colour scaled to the values with enough turns, so one tiny slice at 100% does not wash out the rest
    trusted = rates[[not row["small"] for row in values]]
    ceiling = (trusted if trusted.size else rates).max(initial=0) or None
    image = axes.imshow(rates, aspect="auto", cmap="Reds", vmin=0, vmax=ceiling)
    axes.set_xticks(range(len(columns)), [*COMPONENTS, "all defects"])
    axes.set_yticks(range(len(values)), names, fontsize=8)
    axes.xaxis.tick_top()
    peak = ceiling or 0
    for i in range(rates.shape[0]):
        for j in range(rates.shape[1]):
            axes.text(j, i, f"{rates[i, j]:.1f}", ha="center", va="center", fontsize=7,
                      color="white" if rates[i, j] > 0.6 * peak else "#1d2330")
    figure.colorbar(image, ax=axes, label="% of the slice's turns", shrink=0.8)
    return figure


def _confusion(confusion: dict):
    import matplotlib.pyplot as plt

    matrix = np.array(confusion["matrix"], dtype=float)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    labels = confusion["labels"]
    figure, axes = plt.subplots(figsize=(5.2, 4.4))
    image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted failure point")
    axes.set_ylabel("gold label")
    for i in range(len(labels)):
        for j in range(len(labels)):
            axes.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                      color="white" if share[i, j] > 0.6 else "#1d2330")
    figure.colorbar(image, ax=axes, label="share of the gold row", shrink=0.8)
    return figure


def report_figures(report: Report) -> dict[str, list[tuple[str, str]]]:
    """(caption, inline SVG) per report table key."""
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({"svg.hashsalt": "fpi", "svg.fonttype": "none", "font.size": 9}):
        figures = {"components": [("Defect rate per component with 95% Wilson intervals"
                                   + (" and the baseline's rate" if "baseline" in report else ""), _svg(_components(report)))]}
        by_day = report.get("by_day")
        if by_day and len(by_day["values"]) > 1:
            figures["slice:day"] = [("Rate by day: all defects with its 95% interval, and each component", _svg(_by_day(by_day)))]
        for table in report["slices"]:
            if table["field"] == "day":
                continue
            shown = len(table["values"])
            caption = f"Rate by {table['field']} (% of each value's turns; * fewer than {table['min_cell']} turns)"
            if shown > HEATMAP_MAX_VALUES:
                caption += f"; the {HEATMAP_MAX_VALUES} values with most turns of {shown}, all in the table above"
            figures.setdefault(f"slice:{table['field']}", []).append((caption, _svg(_heatmap(table))))
        if "confusion" in report:
            figures["confusion"] = [("Predicted vs gold failure point (colour: share of the gold row)", _svg(_confusion(report["confusion"])))]
    return figures
