"""Benchmark of the per-unit analysis statistics against per-unit reference loops.

cogsae computes, for every unit at once: categorical and discriminative per-unit RSA
scores (``cogsae.analysis.unit_rsa.unit_rsa_scores``) and the univariate contrast (Welch t, p, BH q,
Hedges g, AUROC; ``cogsae.analysis.contrasts.univariate_contrast``). The reference computes the
same numbers one unit at a time with rsatoolbox (``calc_rdm`` + ``compare``) and
scipy/sklearn (``ttest_ind``, ``roc_auc_score``), timed on a subset of units and
extrapolated. Data are synthetic: half dense Gaussian units, half sparse ReLU
("SAE-like") units, some with a planted condition effect; no position is masked so the
reference's rsatoolbox RDMs equal cogsae's. Agreement on the subset is printed too, and
the time of one call of each selector (``cogsae.analysis.selection``) on a smaller unit set.

    python benchmarks/analysis.py [--units 50000] [--items 100] [--positions 16]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from rsatoolbox.data import Dataset
from rsatoolbox.rdm import RDMs, calc_rdm, compare
from scipy import stats
from sklearn.metrics import roc_auc_score

from cogsae.activations import window_mean
from cogsae.analysis.contrasts import univariate_contrast
from cogsae.analysis.selection import SELECTORS
from cogsae.analysis.unit_rsa import unit_rsa_scores


def synthetic(n_items: int, n_positions: int, n_units: int, seed: int) -> tuple[np.ndarray, ...]:
    """values [items, positions, units] float32, full mask, alternating labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_items) % 2
    values = rng.standard_normal((n_items, n_positions, n_units), dtype=np.float32)
    half = n_units // 2
    values[:, :, half:] = np.maximum(values[:, :, half:] * 2 - 3, 0)  # sparse, many exact zeros
    planted = rng.choice(n_units, size=max(1, n_units // 100), replace=False)
    values[:, :, planted] += 0.8 * labels[:, None, None].astype(np.float32)
    mask = np.ones((n_items, n_positions), dtype=bool)
    return values, mask, labels


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def reference_rsa(values: np.ndarray, labels: np.ndarray, units: np.ndarray) -> tuple[float, ...]:
    """Per-unit loops with rsatoolbox: categorical (Pearson fit) and discriminative scores."""
    n = len(labels)
    iu, ju = np.triu_indices(n, k=1)
    between = labels[iu] != labels[ju]
    within = [(labels[iu] == c) & (labels[ju] == c) for c in (1, 0)]
    model = RDMs(between.astype(np.float64)[None, :])
    start = time.perf_counter()
    categorical = [
        compare(
            calc_rdm(Dataset(values[:, :, u].astype(np.float64)), method="euclidean"), model, "corr"
        )[0, 0]
        for u in units
    ]
    t_cat = time.perf_counter() - start
    start = time.perf_counter()
    discriminative = []
    for u in units:
        d = calc_rdm(
            Dataset(values[:, :, u].astype(np.float64)), method="euclidean"
        ).dissimilarities[0]
        mean = d.mean()
        score = (d[between].mean() - (d[within[0]].mean() + d[within[1]].mean()) / 2) / mean
        discriminative.append(score if mean > 0 else 0.0)
    t_disc = time.perf_counter() - start
    return t_cat, np.nan_to_num(categorical), t_disc, np.array(discriminative)


def reference_contrast(
    means: np.ndarray, labels: np.ndarray, units: np.ndarray
) -> tuple[float, ...]:
    """Per-unit loop with scipy ttest_ind (Welch) and sklearn roc_auc_score."""
    start = time.perf_counter()
    t = [
        stats.ttest_ind(means[labels == 1, u], means[labels == 0, u], equal_var=False).statistic
        for u in units
    ]
    auc = [roc_auc_score(labels, means[:, u]) for u in units]
    return time.perf_counter() - start, np.array(t), np.array(auc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--positions", type=int, default=16)
    parser.add_argument(
        "--reference-units", type=int, default=300, help="units timed in the reference loops"
    )
    parser.add_argument("--selection-units", type=int, default=8192, help="units per selector call")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    values, mask, labels = synthetic(args.items, args.positions, args.units, args.seed)
    print(f"data: {args.units} units x {args.items} items x {args.positions} positions, float32")
    print(f"cores: {len(os.sched_getaffinity(0))}, load average at start: {os.getloadavg()[0]:.2f}")

    t_cat, categorical = timed(unit_rsa_scores, values, mask, labels, "categorical")
    t_disc, discriminative = timed(unit_rsa_scores, values, mask, labels, "discriminative")
    t_mean, means = timed(window_mean, values, mask)
    t_con, contrast = timed(univariate_contrast, means, labels)
    t_con += t_mean
    masked = mask.copy()
    masked[::3, -args.positions // 3 :] = False
    t_masked, _ = timed(unit_rsa_scores, values * masked[:, :, None], masked, labels, "categorical")

    subset = np.random.default_rng(args.seed).choice(
        args.units, size=args.reference_units, replace=False
    )
    scale = args.units / len(subset)
    r_cat, ref_cat, r_disc, ref_disc = reference_rsa(values, labels, subset)
    r_con, ref_t, ref_auc = reference_contrast(means.astype(np.float64), labels, subset)
    r_cat, r_disc, r_con = r_cat * scale, r_disc * scale, r_con * scale

    rows = [
        ("categorical RSA scores", t_cat, r_cat),
        ("discriminative RSA scores", t_disc, r_disc),
        ("contrast (t, p, q, g, AUROC)", t_con, r_con),
        ("all per-unit scores", t_cat + t_disc + t_con, r_cat + r_disc + r_con),
    ]
    print(f"\n{'statistic':32s} {'cogsae s':>10s} {'reference s':>12s} {'speed-up':>9s}")
    for name, ours, ref in rows:
        print(f"{name:32s} {ours:10.2f} {ref:12.1f} {ref / ours:8.0f}x")
    print(f"(reference timed on {len(subset)} units and extrapolated x{scale:.0f})")
    print(f"categorical scores with a third of items masked at the end: {t_masked:.2f} s")

    print("\nagreement on the reference subset (max abs difference):")
    print(
        f"  categorical {np.abs(categorical[subset] - ref_cat).max():.1e}, "
        f"discriminative {np.abs(discriminative[subset] - ref_disc).max():.1e}, "
        f"t {np.nanmax(np.abs(contrast.t[subset] - ref_t)):.1e}, "
        f"AUROC {np.nanmax(np.abs(contrast.auroc[subset] - ref_auc)):.1e}"
    )
    sub = values[:, :, : args.selection_units]
    print(f"\nselector calls, k = 8 on {sub.shape[2]} units (best of 3):")
    for name, select in SELECTORS.items():
        best = min(
            timed(select, sub, mask, labels, 8, rng=np.random.default_rng(0))[0] for _ in range(3)
        )
        print(f"  {name:20s} {best:6.3f} s")
    total, speedup = rows[-1][1], rows[-1][2] / rows[-1][1]
    print(
        f"\ntarget: all scores < 5 s -> {total:.2f} s ({'met' if total < 5 else 'NOT met'}); "
        f">= 20x -> {speedup:.0f}x ({'met' if speedup >= 20 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
