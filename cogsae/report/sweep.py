"""The report of a sweep: held-out AUROC against layer per method and space.

Reads the sweep's ``sweep.json`` (written by `cogsae.pipeline.sweep`) and the results.json
of every run it lists; nothing else. Across seeds the table gives the mean of the runs'
held-out AUROCs and each seed's own interval (the procedure-level interval of the run,
named in its results); no pooled interval is computed, because the seeds re-partition the
same items and their intervals are not independent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from cogsae.constants import ALPHA
from cogsae.report import load_results, read_json
from cogsae.report.figures import save_png
from cogsae.report.html import write_pages
from cogsae.report.markdown import markdown_table
from cogsae.report.omnibus import concept_name
from cogsae.report.sweep_geometry import trajectory_section
from cogsae.report.tables import write_csv

SWEEP_MANIFEST = "sweep.json"
"""The sweep folder's cell list (`cogsae.pipeline.sweep.SWEEP_MANIFEST`)."""
KEYS = ["set", "concept", "layer", "space", "method"]
"""One row of the combined table per these (seeds combined)."""


def is_sweep(directory: Path) -> bool:
    """Whether ``directory`` is a sweep folder (holds a sweep manifest)."""
    return (Path(directory) / SWEEP_MANIFEST).is_file()


def load_manifest(directory: Path) -> dict[str, Any]:
    """The sweep manifest of ``directory``, or a CogsaeError naming it."""
    return read_json(Path(directory), SWEEP_MANIFEST, "sweep folder")


def sweep_records(directory: Path) -> pd.DataFrame:
    """One row per cell, concept and readout: set, concept, layer, seed, space, method,
    auroc, its interval (ci_low, ci_high), q (corrected p) and the interval's name."""
    directory = Path(directory)
    root = directory.parents[1]  # <output>/sweeps/<sweep id>
    rows = []
    for cell in load_manifest(directory)["cells"]:
        results = load_results(root / cell["run"])
        for concept in results["concepts"]:
            for m in concept["methods"]:
                rows.append(
                    {
                        "set": results["stimuli"]["name"],
                        "concept": concept_name(concept),
                        "layer": results["model"]["layer"],
                        "seed": results["config"]["seed"],
                        "space": m["space"],
                        "method": m["method"],
                        "auroc": m["auroc"],
                        "ci_low": m["auroc_ci"][0],
                        "ci_high": m["auroc_ci"][1],
                        "q": m["p_corrected"],
                        "interval": concept["interval"],
                    }
                )
    return pd.DataFrame(rows)


def combine_seeds(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (set, concept, layer, space, method): mean AUROC over seeds, the lowest
    and highest seed's AUROC, the seeds' intervals in seed order and how many seeds give
    q < ALPHA."""
    rows = []
    for key, part in records.sort_values("seed").groupby(KEYS, sort=True):
        intervals = "; ".join(
            f"{s}: [{lo:.2f}, {hi:.2f}]"
            for s, lo, hi in zip(part["seed"], part["ci_low"], part["ci_high"], strict=True)
        )
        rows.append(
            {
                **dict(zip(KEYS, key, strict=True)),
                "mean_auroc": part["auroc"].mean(),
                "min_auroc": part["auroc"].min(),
                "max_auroc": part["auroc"].max(),
                "seed_intervals": intervals,
                "significant_seeds": f"{int((part['q'] < ALPHA).sum())}/{len(part)}",
            }
        )
    return pd.DataFrame(rows)


def plot_auroc_vs_layer(records: pd.DataFrame, title: str) -> Figure:
    """Mean held-out AUROC against layer, one line per space:method (colour by method;
    raw: solid, circles; SAE: dashed, squares; others dotted), with each seed's interval
    as a thin bar beside it; chance at 0.5."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    readouts = records.groupby(["space", "method"], sort=True)
    methods = sorted(records["method"].unique())
    palette = matplotlib.colormaps["tab10"]
    for i, ((space, method), part) in enumerate(readouts):
        color = palette(methods.index(method) % 10)
        mean = part.groupby("layer")["auroc"].mean()
        style, marker = {"raw": ("-", "o"), "sae": ("--", "s")}.get(space, (":", "^"))
        ax.plot(
            mean.index, mean.values, style, marker=marker, color=color, label=f"{space}:{method}"
        )
        offset = 0.04 * (i - len(readouts) / 2)
        ax.vlines(part["layer"] + offset, part["ci_low"], part["ci_high"], color=color, alpha=0.3)
    ax.axhline(0.5, color="black", lw=0.8, ls="--")
    ax.set_xticks(sorted(records["layer"].unique()))
    ax.set_xlabel("layer")
    ax.set_ylabel("held-out AUROC (mean over seeds; bars: each seed's interval)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def write_sweep_report(directory: Path) -> Path:
    """sweep.csv, combined.csv, figures/auroc_vs_layer_<n>.png, report.md and report.html
    of the sweep folder ``directory``; returns the path of report.html."""
    directory = Path(directory)
    manifest = load_manifest(directory)
    records = sweep_records(directory)
    combined = combine_seeds(records)
    write_csv(records, directory / "sweep.csv")
    write_csv(combined, directory / "combined.csv")
    text = [
        f"# cogsae sweep {manifest['sweep']}",
        "",
        f"Sets: {', '.join(manifest['sets'])}; layers: {manifest['layers']}; "
        f"seeds: {manifest['seeds']}; {len(manifest['cells'])} runs (listed in sweep.json).",
        "",
        "Mean AUROC is the mean over seeds of each run's held-out AUROC; the seeds' own "
        f"intervals ({records['interval'].iloc[0]}) are listed, not pooled: the seeds "
        "re-partition the same items, so they are not independent replications. SAE rows "
        f"appear only for layers given an SAE. Significant seeds: q < {ALPHA}.",
        "",
    ]
    for n, ((name, concept), part) in enumerate(combined.groupby(["set", "concept"], sort=False)):
        title = f"{name}: {concept}"
        figure = f"figures/auroc_vs_layer_{n}.png"
        picked = (records["set"] == name) & (records["concept"] == concept)
        save_png(plot_auroc_vs_layer(records[picked], title), directory / figure)
        table = part.drop(columns=["set", "concept"]).sort_values(["space", "method", "layer"])
        text += [f"## {title}", "", f"![{title}]({figure})", "", markdown_table(table), ""]
    root = directory.parents[1]
    cells = [(c, load_results(root / c["run"])) for c in manifest["cells"]]
    text += trajectory_section(directory, cells, markdown_table)
    return write_pages(directory, "\n".join(text), f"cogsae sweep {manifest['sweep']}")
