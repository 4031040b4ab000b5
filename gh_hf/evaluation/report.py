"""Benchmark reports: results.json, a Markdown table and the per-class accuracy plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gh_hf.evaluation.features import PIXELS
from gh_hf.formatting import percent

TABLE_COLUMNS = (
    ("Overall", "accuracy"),
    ("Many", "many"),
    ("Medium", "medium"),
    ("Few", "few"),
    ("Std", "per_class_std"),
)


def json_safe(value: Any) -> Any:
    """`value` with NaN / inf floats replaced by None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(report: dict[str, Any], path: str | Path) -> None:
    """Write `report` as indented strict JSON (NaN -> null)."""
    Path(path).write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")


def _short_name(encoder: str) -> str:
    parts = [part for part in encoder.replace("\\", "/").split("/") if part]
    return parts[-2] if len(parts) >= 2 and parts[-1] == "encoder" else encoder


def display_names(encoders: Sequence[str]) -> dict[str, str]:
    """Short labels: a run folder's name for `.../RUN/encoder`, unless two would collide."""
    short = {encoder: _short_name(encoder) for encoder in encoders}
    return short if len(set(short.values())) == len(short) else {encoder: encoder for encoder in encoders}


def markdown_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One row per encoder x protocol: Overall, Many, Medium, Few, Std, in percent.

    Args:
        results: {encoder: {protocol: {"metrics": metric dict, ...}}}.

    Returns:
        A GitHub-flavoured Markdown table (a group without classes shows "n/a").
    """
    header = ["Encoder", "Protocol", *(title for title, _ in TABLE_COLUMNS)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * len(TABLE_COLUMNS)) + "|",
    ]
    names = display_names(list(results))
    for encoder, protocols in results.items():
        for protocol, entry in protocols.items():
            metrics = entry["metrics"]
            cells = [names[encoder], protocol, *(percent(metrics[key]) for _, key in TABLE_COLUMNS)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


GEOMETRY_COLUMNS = (
    ("NCM acc.", "centroid_accuracy", "overall"),
    *((f"NCM {group.title()}", "centroid_accuracy", group) for group in ("many", "medium", "few")),
    *((f"nearest cos {group.title()}", "neighbour_cosine", group) for group in ("many", "medium", "few")),
    *((f"concentration {group.title()}", "concentration", group) for group in ("many", "medium", "few")),
)


def geometry_table(geometry: dict[str, dict[str, Any]]) -> str:
    """One row per encoder of `class_geometry`'s group means: nearest-class-mean accuracy in percent,
    nearest-class cosine and concentration as they are (see gh_hf.evaluation.class_geometry)."""
    header = ["Encoder (class geometry)", *(title for title, _, _ in GEOMETRY_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(GEOMETRY_COLUMNS)]
    names = display_names(list(geometry))
    for encoder, report in geometry.items():
        cells = [
            percent(report[group][key]) if key == "centroid_accuracy" else _plain(report[group][key])
            for _, key, group in GEOMETRY_COLUMNS
        ]
        lines.append("| " + " | ".join([names[encoder], *cells]) + " |")
    return "\n".join(lines) + "\n"


def _plain(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _minor_tick_label(value: float, _position: int) -> str:
    # Plain numbers on the 2x and 5x minor ticks of the log axis, nothing on the others.
    return f"{value:g}" if f"{value:e}"[0] in "25" else ""


def _group_boundaries(counts: np.ndarray, groups: dict[str, Sequence[int]]) -> list[float]:
    # Between consecutive non-empty groups: the geometric mean of the two adjacent counts.
    present = [list(groups[name]) for name in ("many", "medium", "few") if groups.get(name)]
    boundaries = []
    for upper, lower in zip(present, present[1:], strict=False):
        low, high = max(counts[upper].min(), 0.5), max(counts[lower].max(), 0.5)
        boundaries.append(float(np.sqrt(low * high)))
    return boundaries


def plot_per_class_accuracy(
    per_class: dict[str, Sequence[float]],
    class_counts: Sequence[int],
    path: str | Path,
    title: str = "",
    groups: dict[str, Sequence[int]] | None = None,
) -> None:
    """Per-class accuracy (%) against the class's count in the pretraining split, one line per encoder.

    Classes are ordered by count (head to tail); the x axis is logarithmic (a count of 0 is
    drawn at 0.5). Classes without test samples (NaN) are skipped; the raw-pixel floor (label
    "pixels") is drawn dashed black. Up to 10 encoders share the
    plot with their legend; more get 20 distinct colours and the legend beside the plot.

    Args:
        per_class: {legend label: per-class accuracies in [0, 1], indexed by class id}.
        class_counts: Images per class id in the long-tailed pretraining split.
        path: Output PNG.
        title: Figure title.
        groups: Optional {"many": ids, "medium": ids, "few": ids}; dashed lines mark where
            one group ends and the next begins.
    """
    # The Agg canvas directly, not pyplot: no global backend switch, no GUI, safe in workers.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, ScalarFormatter

    counts = np.asarray(class_counts, dtype=float)
    order = np.lexsort((np.arange(counts.size), -counts))
    many = len(per_class) > 10
    figure = Figure(figsize=(9.5 if many else 7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    if many:
        from matplotlib import colormaps

        axes.set_prop_cycle(color=colormaps["tab20"].colors)
    for label, accuracies in per_class.items():
        values = 100 * np.asarray(accuracies, dtype=float)[order]
        keep = ~np.isnan(values)
        # The pixel floor is a reference, not a competitor: dashed black, outside the colour cycle.
        style = {"color": "black", "linestyle": "--"} if label == PIXELS else {}
        x = np.maximum(counts[order], 0.5)[keep]
        axes.plot(x, values[keep], marker="o", markersize=3, label=label, **style)
    for boundary in _group_boundaries(counts, groups or {}):
        axes.axvline(boundary, color="grey", linestyle="--", linewidth=0.8)
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(FuncFormatter(_minor_tick_label))
    axes.set_xlabel("Training images of the class in the long-tailed pretraining split (log scale)")
    axes.set_ylabel("Per-class top-1 accuracy (%)")
    axes.set_ylim(-2, 102)
    axes.grid(True, which="both", alpha=0.3)
    axes.set_title(title)
    if many:
        axes.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    else:
        axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
