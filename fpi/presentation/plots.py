"""Plots of a report as inline SVG for the HTML page: defect rate per component with
intervals (and the baseline), rate by day, a heat-map per slice, the confusion matrix.
SVG text stays text and ids are salted, so the page is small and byte-for-byte stable."""

from __future__ import annotations

import io
from typing import Any, Literal

import numpy as np

from fpi.presentation.terminal import printable
from fpi.reports.failure_report import Report, SliceRates, components_of
from fpi.contract.trace_format import COMPONENTS

COLOURS = {"wake": "#7b61c9", "asr": "#d1495b", "nlu": "#edae49", "er": "#00798c", "result": "#30638e", "defects": "#1d2330"}
HEATMAP_MAX_VALUES = 60


# Labels are data (intents, domains): `$` in one is text, never mathtext (which would fail or run TeX-like markup).
PLOT_STYLE: dict[Any, Any] = {"svg.hashsalt": "fpi", "svg.fonttype": "none", "font.size": 9, "text.parse_math": False}


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
    shown = [c for c in COMPONENTS if c in rows]  # never a stage the logs lack
    rates = np.array([rows[c]["rate"] for c in shown]) * 100
    low = rates - np.array([rows[c]["ci_low"] for c in shown]) * 100
    high = np.array([rows[c]["ci_high"] for c in shown]) * 100 - rates
    figure, axes = plt.subplots(figsize=(7, 3.2))
    y = np.arange(len(shown))[::-1]
    axes.barh(y, rates, color=[COLOURS[c] for c in shown], alpha=0.85, label="this run")
    axes.errorbar(rates, y, xerr=[low, high], fmt="none", ecolor="#1d2330", capsize=4, linewidth=1.2, label="95% interval")
    if "baseline" in report:
        base = {row["failure_point"]: row["baseline_rate"] for row in report["baseline"]["components"]}
        axes.scatter([base.get(c, 0.0) * 100 for c in shown], y, marker="D", color="white", edgecolor="#1d2330", zorder=3,
                     label="baseline", s=36)
    axes.set_yticks(y, shown)
    axes.set_xlabel("share of all turns (%)")
    axes.legend(loc="lower right", frameon=False, fontsize=8)
    axes.spines[["top", "right"]].set_visible(False)
    return figure


def _by_day(table: SliceRates):
    """Small multiples: all defects and each component in a panel of its own, each with its 95% band
    and its own scale (one chart of six lines is spaghetti; components differ tenfold in rate)."""
    import matplotlib.pyplot as plt

    days = [row["value"] for row in table["values"]]
    x = np.arange(len(days))
    figure, grid = plt.subplots(2, 3, figsize=(10, 5.2), sharex=True)

    def series(name: str, key: Literal["rate", "ci_low", "ci_high"]) -> np.ndarray:
        return np.array([row["rates"][name][key] for row in table["values"]]) * 100

    step = max(1, len(days) // 6)
    names = ("defects", *components_of(table))
    for axes in grid.flat[len(names):]:  # a stage the logs lack has no panel
        axes.set_visible(False)
    for axes, name in zip(grid.flat, names, strict=False):
        axes.fill_between(x, series(name, "ci_low"), series(name, "ci_high"), color=COLOURS[name], alpha=0.15, linewidth=0)
        axes.plot(x, series(name, "rate"), color=COLOURS[name], linewidth=1.6, marker="o", markersize=2.5)
        axes.set_title("all defects" if name == "defects" else name, loc="left", fontsize=10, color=COLOURS[name])
        axes.set_ylim(bottom=0)
        axes.spines[["top", "right"]].set_visible(False)
        axes.set_xticks(x[::step], days[::step], rotation=30, ha="right", fontsize=7)
    for axes in grid[:, 0]:
        axes.set_ylabel("% of the day's turns")
    figure.tight_layout()
    return figure


def _heatmap(table: SliceRates):
    """Each column coloured on its own scale (its highest rate among values with enough turns is the
    darkest), so per-component differences show beside all defects; values with fewer turns than
    `min_cell` are grey, never the strongest colour."""
    import matplotlib.pyplot as plt

    values = table["values"][:HEATMAP_MAX_VALUES]
    names = [f"{printable(str(row['value']))}{' *' if row['small'] else ''}" for row in values]  # data: no control characters
    columns = (*components_of(table), "defects")
    rates = np.array([[row["rates"][c]["rate"] * 100 for c in columns] for row in values])
    small = np.array([row["small"] for row in values])
    trusted = rates[~small] if (~small).any() else np.zeros((0, len(columns)))
    ceilings = trusted.max(axis=0, initial=0)
    shade = np.divide(rates, ceilings, out=np.zeros_like(rates), where=ceilings > 0).clip(0, 1)
    colour_map = plt.get_cmap("Reds").with_extremes(bad="#eeeeee")
    figure, axes = plt.subplots(figsize=(7, 0.8 + 0.28 * len(values)))
    axes.imshow(np.ma.masked_array(shade, np.broadcast_to(small[:, None], shade.shape)), aspect="auto", cmap=colour_map,
                vmin=0, vmax=1)
    axes.set_xticks(range(len(columns)), [*columns[:-1], "all defects"])
    axes.set_yticks(range(len(values)), names, fontsize=8)
    axes.xaxis.tick_top()
    for i in range(rates.shape[0]):
        for j in range(rates.shape[1]):
            axes.text(j, i, f"{rates[i, j]:.1f}", ha="center", va="center", fontsize=7,
                      color="#8a8f99" if small[i] else "white" if shade[i, j] > 0.6 else "#1d2330",
                      style="italic" if small[i] else "normal")
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
    with matplotlib.rc_context(PLOT_STYLE):
        figures = {"components": [("Defect rate per component with 95% Wilson intervals"
                                   + (" and the baseline's rate" if "baseline" in report else ""), _svg(_components(report)))]}
        by_day = report.get("by_day")
        if by_day and len(by_day["values"]) > 1:
            figures["slice:day"] = [("Rate by day, a panel per component with its 95% interval; each panel has its own scale",
                                     _svg(_by_day(by_day)))]
        for table in report["slices"]:
            if table["field"] == "day":
                continue
            shown = len(table["values"])
            caption = (f"Rate by {table['field']} (% of each value's turns). Colour is per column: the darkest cell is the "
                       f"column's highest rate; * grey: fewer than {table['min_cell']} turns")
            if shown > HEATMAP_MAX_VALUES:
                caption += f"; the {HEATMAP_MAX_VALUES} values with most turns of {shown}, all in the table above"
            figures.setdefault(f"slice:{table['field']}", []).append((caption, _svg(_heatmap(table))))
        if "confusion" in report:
            figures["confusion"] = [("Predicted vs gold failure point (colour: share of the gold row)", _svg(_confusion(report["confusion"])))]
    return figures


def confusion_image(confusion: dict, path, title: str = "") -> None:
    """The confusion matrix as a PNG (or SVG, by the extension) for `fpi eval -o`; the same drawing as the report's."""
    import matplotlib

    from fpi.contract.atomic_files import atomic_write

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind = "svg" if str(path).lower().endswith(".svg") else "png"
    with matplotlib.rc_context(PLOT_STYLE):
        figure = _confusion(confusion)
        if title:
            figure.axes[0].set_title(title, fontsize=9, loc="left")
        metadata = {"Software": None} if kind == "png" else {"Date": None, "Creator": None}
        atomic_write(path, lambda tmp: figure.savefig(tmp, format=kind, dpi=110, bbox_inches="tight", metadata=metadata))
        plt.close(figure)
