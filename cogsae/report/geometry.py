"""The report's model-RDM section, from results.json["geometry"] only: fits per space
ranked, corrected model comparisons, and the figures (fits with intervals, MDS layouts)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cogsae.constants import ALPHA
from cogsae.report.figures import save_png


def _p(p: float) -> str:
    return "n/a" if p is None or not np.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def fits_table(geometry: dict[str, Any], space: str) -> pd.DataFrame:
    """One row per model of ``space``, best fit first: r, interval, permutation p."""
    rows = sorted((m for m in geometry["models"] if m["space"] == space), key=lambda m: -m["r"])
    return pd.DataFrame(
        [
            {
                "model": m["model"],
                "rho-a": m["r"],
                "95% CI": f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}]",
                "p (perm.)": _p(m["p"]),
                "fits": "yes" if m["p"] < ALPHA else "",
            }
            for m in rows
        ]
    )


def comparisons_table(geometry: dict[str, Any], space: str) -> pd.DataFrame:
    """The model comparisons of ``space``, winner first in each row, smallest corrected p
    first."""
    rows = []
    for c in geometry["comparisons"]:
        if c["space"] != space:
            continue
        a, b, diff, low, high = c["a"], c["b"], c["diff"], c["ci_low"], c["ci_high"]
        if diff < 0:
            a, b, diff, low, high = b, a, -diff, -high, -low
        rows.append(
            {
                "better": a,
                "than": b,
                "Δ rho-a": diff,
                "95% CI": f"[{low:.3f}, {high:.3f}]",
                "p": _p(c["p"]),
                "p (Holm)": c["p_corrected"],
                "significant": "yes" if c["p_corrected"] < ALPHA else "",
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame.sort_values("p (Holm)", kind="stable")
    frame["p (Holm)"] = frame["p (Holm)"].map(_p)
    return frame


def plot_model_fits(geometry: dict[str, Any]) -> Figure:
    """rho-a of each model (points) with its bootstrap interval, one panel per space."""
    spaces = list(dict.fromkeys(m["space"] for m in geometry["models"]))
    models = list(dict.fromkeys(m["model"] for m in geometry["models"]))
    fig = Figure(figsize=(max(4.0, 3.2 * len(spaces)), 0.35 * len(models) + 1.6))
    axes = np.atleast_1d(fig.subplots(1, len(spaces), sharey=True))
    for ax, space in zip(axes, spaces, strict=True):
        rows = {m["model"]: m for m in geometry["models"] if m["space"] == space}
        y = np.arange(len(models))
        r = np.array([rows[n]["r"] for n in models])
        low = r - np.array([rows[n]["ci_low"] for n in models])
        high = np.array([rows[n]["ci_high"] for n in models]) - r
        colors = ["C0" if rows[n]["p"] < ALPHA else "0.6" for n in models]
        ax.errorbar(r, y, xerr=[low, high], fmt="none", ecolor="0.4", lw=1)
        ax.scatter(r, y, c=colors, zorder=3, s=22)
        ax.axvline(0, color="black", lw=0.8, ls="--")
        ax.set_yticks(y, models, fontsize=8)
        ax.set_title(space, fontsize=9)
        ax.set_xlabel("rho-a (95% bootstrap CI)", fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"model RDM fits (blue: permutation p < {ALPHA})", fontsize=10)
    return fig


def plot_mds(layout: dict[str, Any], title: str) -> Figure:
    """2-D MDS of the items' data RDM, coloured by condition."""
    xy = np.asarray(layout["xy"])
    condition = np.asarray(layout["condition"])
    fig = Figure(figsize=(5.0, 4.4))
    ax = fig.subplots()
    palette = matplotlib.colormaps["tab10"]
    for i, level in enumerate(dict.fromkeys(condition)):
        pick = condition == level
        ax.scatter(xy[pick, 0], xy[pick, 1], s=16, color=palette(i % 10), label=str(level))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def write_geometry_figures(folder: Path, results: dict[str, Any]) -> None:
    """geometry_fits.png and geometry_mds_<space>.png of a run with a geometry entry."""
    geometry = results.get("geometry") or {}
    if not geometry.get("models"):
        return
    save_png(plot_model_fits(geometry), folder / "geometry_fits.png")
    for space, layout in geometry.get("mds", {}).items():
        title = f"{space}: item geometry (MDS of the data RDM)"
        save_png(plot_mds(layout, title), folder / f"geometry_mds_{space}.png")


def geometry_section(
    results: dict[str, Any], figures: Path, markdown_table: Callable[[pd.DataFrame], str]
) -> list[str]:
    """Markdown lines of the model-RDM section (none for a run without a geometry entry);
    ``markdown_table`` renders a table (`cogsae.report.markdown.markdown_table`)."""
    geometry = results.get("geometry") or {}
    if not geometry.get("models"):
        return []
    spaces = list(dict.fromkeys(m["space"] for m in geometry["models"]))
    lines = [
        "## Model RDMs: which hypothesis does the geometry follow?",
        "",
        "Each model RDM (a hypothesis about which items should be represented alike) is "
        f"compared with each space's item RDM by rho-a over all {results['stimuli']['n_items']} "
        f"items. Intervals: {geometry['n_bootstrap']} bootstrap resamples of the stimuli "
        "(groups whole, pairs of an item with its own copy dropped); p: "
        f"{geometry['n_permutations']} permutations of the items (rows and columns of the "
        "model together, groups whole) against no relation. Comparisons: the bootstrap "
        "distribution of the difference of two fits, Holm-corrected over the pairs of a space.",
        "",
    ]
    if geometry.get("skipped"):
        lines += [
            "Models left out: "
            + "; ".join(f"{k} ({v})" for k, v in geometry["skipped"].items())
            + ".",
            "",
        ]
    # the model RDMs are drawn by the pipeline (like the data RDMs), the fits from results.json
    for alt, name in (("rdm models", "geometry_models.png"), ("fits", "geometry_fits.png")):
        if (figures / name).exists():
            lines += [f"![{alt}](figures/{name})", ""]
    for space in spaces:
        metric = geometry.get("metrics", {}).get(space, "")
        lines += [f"### {space}" + (f" ({metric} RDM)" if metric else ""), ""]
        lines += [markdown_table(fits_table(geometry, space)), ""]
        comparisons = comparisons_table(geometry, space)
        if not comparisons.empty:
            lines += [markdown_table(comparisons), ""]
        if (figures / f"geometry_mds_{space}.png").exists():
            lines += [f"![MDS {space}](figures/geometry_mds_{space}.png)", ""]
    return lines
