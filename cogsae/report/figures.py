"""Summary figures of a run, drawn from its results.json records.

Figures are `matplotlib.figure.Figure` objects rendered by the Agg canvas: no pyplot, no
global backend change (a notebook's backend stays what it was).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from cogsae._io import atomic_path
from cogsae.constants import ALPHA
from cogsae.report.omnibus import concept_name, record_tag

SPACE_COLORS = {"sae": "#1b9e77", "raw": "#7570b3"}


def save_png(fig: Figure, path: Path) -> None:
    """``fig`` as a PNG at ``path`` (atomically)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def plot_method_aurocs(results: list[dict[str, Any]], title: str) -> Figure:
    """Held-out AUROC with its interval per readout, coloured by space; chance at 0.5."""
    frame = pd.DataFrame(results).sort_values("auroc")
    fig = Figure(figsize=(7, 0.35 * len(frame) + 1.2))
    ax = fig.subplots()
    for row_i, (_, row) in enumerate(frame.iterrows()):
        color = SPACE_COLORS.get(row["space"], "grey")
        ax.errorbar(
            row["auroc"],
            row_i,
            xerr=[[row["auroc"] - row["auroc_ci"][0]], [row["auroc_ci"][1] - row["auroc"]]],
            fmt="o",
            color=color,
            capsize=3,
        )
        mark = "*" if row.get("p_corrected", 1) < ALPHA else ""
        ax.text(1.005, row_i, mark, va="center", fontsize=12)
    ax.set_yticks(
        range(len(frame)),
        [f"{s}:{m}" for s, m in zip(frame["space"], frame["method"], strict=True)],
    )
    ax.axvline(0.5, color="black", lw=0.8, ls="--")
    ax.set_xlim(min(0.3, frame["auroc_ci"].map(lambda c: c[0]).min() - 0.02), 1.02)
    ax.set_xlabel("held-out AUROC (95% corrected repeated-CV t interval; * BH q < 0.05)")
    ax.set_title(title)
    return fig


def plot_auroc_vs_k(curve: list[dict[str, Any]], main: list[dict[str, Any]], title: str) -> Figure:
    """AUROC against ensemble size k per method and space."""
    keep = {(m["method"], m["space"]) for m in curve}
    rows = curve + [m for m in main if (m["method"], m["space"]) in keep]
    frame = pd.DataFrame(rows)
    frame["readout"] = frame["space"] + ":" + frame["method"]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    sns.lineplot(data=frame.sort_values("k"), x="k", y="auroc", hue="readout", marker="o", ax=ax)
    ax.set_xscale("log", base=2)
    ax.axhline(0.5, color="black", lw=0.8, ls="--")
    ax.set_ylabel("held-out AUROC")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_nulls(results: list[dict[str, Any]], title: str) -> Figure:
    """Permutation null distribution of each readout's AUROC with the observed value."""
    n = len(results)
    cols = 4
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(3 * cols, 2.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, res in zip(axes.flat, results, strict=False):
        null = np.asarray(res["null_aurocs"])
        if null.size:
            ax.hist(null, bins=20, color="lightgrey", edgecolor="grey")
        ax.axvline(res["auroc"], color="crimson", lw=2)
        ax.set_title(
            f"{res['space']}:{res['method']}\np={res['p_value']:.3g} (n={null.size})", fontsize=8
        )
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_concept_scores(corpus: dict[str, Any], title: str) -> Figure:
    """Mean judged relevance (0-3) of each method's top corpus examples with CIs, beside the
    base rate (random snippets of the same sample: a shaded CI band and a line) when judged."""
    rows = [
        {"readout": label, "mean": v["mean_relevance"], "lo": v["ci"][0], "hi": v["ci"][1]}
        for label, v in corpus["methods"].items()
    ]
    frame = pd.DataFrame(rows).sort_values("mean")
    fig = Figure(figsize=(7, 0.35 * len(frame) + 1.2))
    ax = fig.subplots()
    base = corpus.get("base") or {}
    if base.get("mean_relevance") is not None:
        ax.axvspan(*base["ci"], color="0.85", zorder=0)
        ax.axvline(
            base["mean_relevance"],
            color="0.4",
            linestyle="--",
            label=f"base rate ({len(base['examples'])} random snippets)",
        )
        ax.legend(loc="lower right", fontsize="small")
    ax.errorbar(
        frame["mean"],
        range(len(frame)),
        xerr=[frame["mean"] - frame["lo"], frame["hi"] - frame["mean"]],
        fmt="o",
        capsize=3,
    )
    ax.set_yticks(range(len(frame)), frame["readout"])
    ax.set_xlim(-0.1, 3.1)
    ax.set_xlabel(f"mean relevance of top examples (0-3, judge: {corpus.get('judge', '?')})")
    ax.set_title(title)
    return fig


def plot_combined(pivot: pd.DataFrame) -> Figure:
    """Heatmap of held-out AUROC, readouts (rows) by concepts (columns)."""
    fig = Figure(figsize=(1.6 * pivot.shape[1] + 3, 0.35 * pivot.shape[0] + 1.5))
    ax = fig.subplots()
    sns.heatmap(pivot, annot=True, fmt=".2f", cmap="viridis", vmin=0.5, vmax=1.0, ax=ax)
    ax.set_title("held-out AUROC by readout and concept")
    return fig


def write_figures(folder: Path, results: dict[str, Any]) -> None:
    """AUROC, null, AUROC-vs-k and corpus-relevance PNGs of every concept."""
    folder.mkdir(parents=True, exist_ok=True)
    for record in results["concepts"]:
        tag = record_tag(record)  # a file-name part; the factor may be any text
        name = concept_name(record)
        save_png(plot_method_aurocs(record["methods"], name), folder / f"auroc_{tag}.png")
        save_png(
            plot_nulls(record["methods"], f"permutation nulls: {name}"), folder / f"nulls_{tag}.png"
        )
        if record["k_curve"]:
            save_png(
                plot_auroc_vs_k(record["k_curve"], record["methods"], name),
                folder / f"auroc_vs_k_{tag}.png",
            )
        corpus = record["corpus"]
        if corpus.get("methods") and corpus.get("judge") != "none":
            save_png(plot_concept_scores(corpus, name), folder / f"concept_scores_{tag}.png")
