"""The representational trajectory of a sweep: each model RDM's fit against layer.

Reads each cell's results.json["geometry"] (the layers of a sweep in place of the time
points of a time-resolved RSA); one figure per set and space (raw, SAE), one line per
model with each seed's bootstrap interval. Seeds are not pooled (they resample the same
items).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from cogsae.report.figures import save_png

TRAJECTORY_SPACES = ("raw", "sae")
"""Spaces followed across layers (the readouts' unit sets differ from layer to layer)."""


def geometry_records(cells: list[tuple[dict[str, Any], dict[str, Any]]]) -> pd.DataFrame:
    """One row per cell, space and model: set, layer, seed, space, model, r, ci_low,
    ci_high, p. ``cells``: (manifest cell, its results.json) pairs."""
    rows = []
    for _, results in cells:
        for m in (results.get("geometry") or {}).get("models", []):
            if m["space"] in TRAJECTORY_SPACES:
                rows.append(
                    {
                        "set": results["stimuli"]["name"],
                        "layer": results["model"]["layer"],
                        "seed": results["config"]["seed"],
                        **{k: m[k] for k in ("space", "model", "r", "ci_low", "ci_high", "p")},
                    }
                )
    return pd.DataFrame(rows)


def plot_trajectory(records: pd.DataFrame, title: str) -> Figure:
    """rho-a of each model against layer (mean over seeds) with each seed's interval."""
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    palette = matplotlib.colormaps["tab10"]
    for i, (model, part) in enumerate(records.groupby("model", sort=False)):
        color = palette(i % 10)
        mean = part.groupby("layer")["r"].mean()
        ax.plot(mean.index, mean.values, "-o", color=color, label=model, ms=4)
        ax.vlines(part["layer"], part["ci_low"], part["ci_high"], color=color, alpha=0.35)
    ax.axhline(0, color="black", lw=0.8, ls="--")
    ax.set_xticks(sorted(records["layer"].unique()))
    ax.set_xlabel("layer")
    ax.set_ylabel("rho-a with the data RDM (bars: 95% bootstrap CI)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def trajectory_section(
    directory: Path, cells: list[tuple[dict[str, Any], dict[str, Any]]], table: Any
) -> list[str]:
    """Markdown lines (and figures/trajectory_<n>.png) of the sweep's model-RDM
    trajectories; ``table`` renders a DataFrame (`cogsae.report.markdown.markdown_table`)."""
    records = geometry_records(cells)
    if records.empty:
        return []
    lines = [
        "## Representational trajectory: model RDM fits across layers",
        "",
        "Each run's model RDM fits (rho-a, 95% bootstrap interval over stimuli, permutation p; "
        "see the run reports) against layer: where in depth each hypothesis is expressed.",
        "",
    ]
    for n, ((name, space), part) in enumerate(records.groupby(["set", "space"], sort=False)):
        title = f"{name}: {space}"
        figure = f"figures/trajectory_{n}.png"
        save_png(plot_trajectory(part, title), directory / figure)
        rows = part.drop(columns=["set", "space"]).sort_values(["model", "layer", "seed"])
        lines += [f"### {title}", "", f"![{title}]({figure})", "", table(rows), ""]
    return lines
