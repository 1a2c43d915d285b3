"""Figures of analysis results: volcano, RDM heatmap, MDS of items, per-position profiles.

Each function builds a matplotlib ``Figure`` without pyplot (so no GUI backend and no
global figure state; PNGs are rendered by the Agg canvas), saves it as a PNG when given a
``path`` (atomically) and returns it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from rsatoolbox.rdm import RDMs
from scipy import stats
from sklearn.manifold import MDS

from cogsae._io import atomic_path
from cogsae.analysis.contrasts import ContrastResult, welch_t
from cogsae.errors import CogsaeError

CONDITION_NAMES = ("reference", "target")  # label 0, label 1
CONDITION_COLORS = ("tab:blue", "tab:orange")


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    """Save ``fig`` as a PNG at ``path`` (if given) and return it."""
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    return fig


def volcano_plot(
    result: ContrastResult,
    path: str | Path | None = None,
    *,
    q_threshold: float = 0.05,
    n_annotate: int = 8,
    title: str | None = None,
) -> Figure:
    """Hedges g (x) against -log10 BH q (y) of every active unit.

    A dashed line marks ``q_threshold``; the ``n_annotate`` units with the smallest q are
    labelled with their index. Infinite g (separable constant units) and q = 0 are drawn
    at the edge of the finite range.
    """
    active = np.flatnonzero(result.active)
    g = result.g[active]
    finite = np.isfinite(g)
    edge = np.abs(g[finite]).max(initial=1.0)
    g = np.where(finite, g, np.sign(g) * edge)
    q = result.q[active]
    y = -np.log10(np.maximum(q, np.finfo(np.float64).tiny))
    significant = q < q_threshold
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    ax.scatter(g[~significant], y[~significant], s=6, c="grey", alpha=0.5, linewidths=0)
    ax.scatter(g[significant], y[significant], s=10, c="tab:red", linewidths=0)
    ax.axhline(-np.log10(q_threshold), ls="--", c="k", lw=0.8)
    for i in np.lexsort((-np.abs(g), q))[:n_annotate]:
        ax.annotate(
            str(active[i]), (g[i], y[i]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    ax.set_xlabel("Hedges g (target - reference)")
    ax.set_ylabel("-log10 q (BH)")
    ax.set_title(title or f"{significant.sum()} of {len(active)} active units at q < {q_threshold}")
    return _finish(fig, path)


def _square(rdm: RDMs | np.ndarray) -> np.ndarray:
    """[items, items] matrix of a single-RDM ``RDMs`` object or a square array."""
    matrix = rdm.get_matrices()[0] if isinstance(rdm, RDMs) else np.asarray(rdm, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise CogsaeError(f"expected one square RDM, got shape {matrix.shape}", field="rdm")
    return matrix


def rdm_heatmap(
    rdm: RDMs | np.ndarray,
    labels: np.ndarray,
    path: str | Path | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Item x item RDM, items sorted by condition (target first), a line between conditions."""
    matrix = _square(rdm)
    labels = np.asarray(labels)
    order = np.argsort(-labels, kind="stable")
    n_target = int((labels == 1).sum())
    fig = Figure(figsize=(5.5, 4.8))
    ax = fig.subplots()
    sns.heatmap(
        matrix[np.ix_(order, order)],
        ax=ax,
        cmap="viridis",
        square=True,
        xticklabels=False,
        yticklabels=False,
        cbar_kws={"label": "dissimilarity"},
    )
    ax.axhline(n_target, c="w", lw=1.5)
    ax.axvline(n_target, c="w", lw=1.5)
    ax.set_xlabel(f"{CONDITION_NAMES[1]} | {CONDITION_NAMES[0]}")
    ax.set_ylabel(f"{CONDITION_NAMES[0]} | {CONDITION_NAMES[1]}")
    ax.set_title(title or "RDM")
    return _finish(fig, path)


def mds_plot(
    rdm: RDMs | np.ndarray,
    labels: np.ndarray,
    path: str | Path | None = None,
    *,
    seed: int = 0,
    title: str | None = None,
) -> Figure:
    """2-D metric MDS of the items from their RDM (classical start, seeded), coloured by condition.

    Squared-Euclidean RDMs are square-rooted first so the embedding fits distances.
    """
    matrix = _square(rdm)
    if isinstance(rdm, RDMs) and "squared" in str(rdm.dissimilarity_measure):
        matrix = np.sqrt(np.maximum(matrix, 0.0))
    mds = MDS(metric="precomputed", init="classical_mds", n_init=1, random_state=seed)
    coords = mds.fit_transform(np.nan_to_num((matrix + matrix.T) / 2))
    labels = np.asarray(labels)
    fig = Figure(figsize=(5, 4.5))
    ax = fig.subplots()
    for c in (1, 0):
        pts = coords[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=18, c=CONDITION_COLORS[c], label=CONDITION_NAMES[c])
    ax.legend(frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"MDS of items (stress {mds.stress_:.3g})")
    return _finish(fig, path)


def position_profile(
    values: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray,
    units: Sequence[int] | np.ndarray,
    path: str | Path | None = None,
    *,
    statistic: str = "t",
    title: str | None = None,
) -> Figure:
    """Per-position effect of selected units: Welch t or mean difference (target - reference).

    At each position only the items that have it enter (masked positions never count);
    positions with fewer than two items of a condition are left blank. For t, dotted lines
    mark the uncorrected two-sided p = 0.05 level of the pooled df.
    """
    if statistic not in ("t", "difference"):
        raise CogsaeError(f"unknown profile statistic {statistic!r}", field="statistic")
    units = np.asarray(units, dtype=np.int64)
    labels = np.asarray(labels)
    x = np.asarray(values[:, :, units], dtype=np.float64)
    n_positions = x.shape[1]
    profile = np.full((n_positions, len(units)), np.nan)
    for p in range(n_positions):
        have = mask[:, p]
        lab = labels[have]
        if min((lab == 1).sum(), (lab == 0).sum()) < 2:
            continue
        if statistic == "t":
            profile[p] = welch_t(x[have, p], lab)[0]
        else:
            profile[p] = x[have, p][lab == 1].mean(0) - x[have, p][lab == 0].mean(0)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for j, unit in enumerate(units):
        ax.plot(np.arange(n_positions), profile[:, j], marker="o", ms=3, label=f"unit {unit}")
    ax.axhline(0, c="k", lw=0.6)
    if statistic == "t":
        critical = stats.t.isf(0.025, len(labels) - 2)
        for sign in (-1, 1):
            ax.axhline(sign * critical, c="grey", ls=":", lw=0.8)
    ax.set_xlabel("window position")
    ax.set_ylabel("Welch t" if statistic == "t" else "mean difference")
    if len(units) <= 12:
        ax.legend(fontsize=7, frameon=False, ncols=2)
    ax.set_title(title or "per-position effect (target - reference)")
    return _finish(fig, path)
