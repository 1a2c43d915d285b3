"""Univariate contrasts over all units at once, and factorial GLMs.

Every function here works on window-mean activations ``means`` [items, units] (see
``cogsae.activations.window_mean``) and two-condition ``labels`` [items] with 1 = target,
0 = reference. Statistics follow docs/methods.md ("Univariate contrasts"):
Welch t, Hedges g and AUROC per unit; Benjamini-Hochberg q over all active units via
``statsmodels.stats.multitest.multipletests(method="fdr_bh")``; an optional max-|t|
label-permutation family-wise p. Units that are zero on every item ("inactive", e.g. dead
SAE features) get NaN statistics and are left out of every multiple-comparison family.
Label permutations and bootstrap resamples live in ``cogsae.analysis.resampling``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import numpy as np
import pandas as pd
from scipy import special, stats
from statsmodels.stats.multitest import multipletests

from cogsae.analysis.resampling import label_pure, permute_labels
from cogsae.errors import CogsaeError
from cogsae.streams import Stream, rng

# A standard error below this fraction of the condition means is float round-off of a
# constant unit, not variance: such units get t = 0 (equal means) or +-inf (different means).
_SE_REL_TOL = 1e-12
_PERMUTATION_BATCH = 64

UnitOfAnalysis = Literal["item", "group", "paired-group"]


def check_labels(labels: np.ndarray, n_items: int, *, min_per_condition: int = 2) -> np.ndarray:
    """Validate two-condition labels [items] (1 target, 0 reference) and return them as int8.

    Raises CogsaeError when the length differs from ``n_items``, a value is not 0/1, or a
    condition has fewer than ``min_per_condition`` items (a variance needs two).
    """
    labels = np.asarray(labels)
    if labels.shape != (n_items,):
        raise CogsaeError(f"labels has shape {labels.shape}, expected ({n_items},)", field="labels")
    if not np.isin(labels, (0, 1)).all():
        raise CogsaeError(
            "labels must be 1 (target) or 0 (reference); drop other items first", field="labels"
        )
    n_target = int((labels == 1).sum())
    if min(n_target, n_items - n_target) < min_per_condition:
        raise CogsaeError(
            f"each condition needs at least {min_per_condition} items "
            f"(target {n_target}, reference {n_items - n_target})",
            field="labels",
        )
    return labels.astype(np.int8)


def active_units(means: np.ndarray) -> np.ndarray:
    """[units] bool: True where a unit is non-zero on at least one item (dead units are False)."""
    return np.asarray(means != 0).any(axis=0)


def _t_from_estimate(estimate: np.ndarray, se: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """t = estimate / se; a standard error at round-off level of ``scale`` counts as zero."""
    zero_se = se <= _SE_REL_TOL * np.maximum(scale, np.finfo(np.float64).tiny)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = estimate / se
    return np.where(zero_se, np.where(estimate == 0, 0.0, np.copysign(np.inf, estimate)), t)


def _welch_from_moments(
    m1: np.ndarray, v1: np.ndarray, n1: np.ndarray, m0: np.ndarray, v0: np.ndarray, n0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Welch t and Welch-Satterthwaite df from condition means, unbiased variances and sizes."""
    a, b = v1 / n1, v0 / n0
    t = _t_from_estimate(m1 - m0, np.sqrt(a + b), np.maximum(np.abs(m1), np.abs(m0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (a + b) ** 2 / (a**2 / (n1 - 1) + b**2 / (n0 - 1))
    return t, np.where(np.isfinite(df), df, n1 + n0 - 2.0)


def welch_t(means: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit Welch t (target minus reference) and its df, vectorized over units.

    Args:
        means: [items, units] window-mean activations (any float dtype; computed in float64).
        labels: [items] 1 target / 0 reference (validated by the caller).

    Returns:
        t [units] and df [units]. Equals ``scipy.stats.ttest_ind(equal_var=False)``; a unit
        without variance in either condition gets t = 0 (equal means) or +-inf.
    """
    x = np.asarray(means, dtype=np.float64)
    target = labels == 1
    x1, x0 = x[target], x[~target]
    return _welch_from_moments(
        x1.mean(0), x1.var(0, ddof=1), len(x1), x0.mean(0), x0.var(0, ddof=1), len(x0)
    )


def two_sided_p(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Two-sided p of a t statistic with ``df`` degrees of freedom."""
    return 2.0 * stats.t.sf(np.abs(t), df)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks along axis 0 of ``values`` [n, columns], 1-based, ties sharing their mean rank.

    Same result as ``scipy.stats.rankdata(values, axis=0)`` but several times faster on wide
    arrays: one sort per contiguous row of the transpose, tie runs found by cumulative max/min.
    """
    v = np.ascontiguousarray(np.asarray(values).reshape(values.shape[0], -1).T)
    n = v.shape[1]
    order = np.argsort(v, axis=1)
    s = np.take_along_axis(v, order, axis=1)
    run_starts = np.ones(s.shape, dtype=bool)
    np.not_equal(s[:, 1:], s[:, :-1], out=run_starts[:, 1:])
    run_ends = np.ones(s.shape, dtype=bool)
    run_ends[:, :-1] = run_starts[:, 1:]
    position = np.broadcast_to(np.arange(n, dtype=np.float64), s.shape)
    first = np.maximum.accumulate(np.where(run_starts, position, 0.0), axis=1)
    last = np.minimum.accumulate(np.where(run_ends, position, n)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(s.shape)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks.T.reshape(values.shape)


def auroc(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-column AUROC of ``values`` [n, units] for separating label 1 from label 0.

    Rank-based (Mann-Whitney U / (n1 n0)), ties count one half, vectorized over columns;
    equals ``sklearn.metrics.roc_auc_score(labels, values[:, u])``. 0.5 = no separation.
    """
    target = labels == 1
    n1, n0 = int(target.sum()), int((~target).sum())
    rank_sum = average_ranks(values)[target].sum(axis=0)
    return (rank_sum - n1 * (n1 + 1) / 2.0) / (n1 * n0)


def hedges_g(means: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-unit Hedges g: (target - reference mean) / pooled SD, times the exact small-sample J.

    J = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2)), df = n1 + n0 - 2. A unit with zero
    pooled SD gets 0 (equal means) or +-inf.
    """
    x = np.asarray(means, dtype=np.float64)
    target = labels == 1
    x1, x0 = x[target], x[~target]
    n1, n0 = len(x1), len(x0)
    df = n1 + n0 - 2
    pooled = np.sqrt(((n1 - 1) * x1.var(0, ddof=1) + (n0 - 1) * x0.var(0, ddof=1)) / df)
    m1, m0 = x1.mean(0), x0.mean(0)
    d = _t_from_estimate(m1 - m0, pooled, np.maximum(np.abs(m1), np.abs(m0)))
    j = np.exp(special.gammaln(df / 2) - 0.5 * np.log(df / 2) - special.gammaln((df - 1) / 2))
    return d * j


def bh_q(p: np.ndarray, tested: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q over the ``tested`` entries of ``p`` (statsmodels fdr_bh), else NaN."""
    q = np.full(p.shape, np.nan)
    if tested.any():
        q[tested] = multipletests(p[tested], method="fdr_bh")[1]
    return q


def unit_of_analysis(labels: np.ndarray, groups: np.ndarray | None) -> UnitOfAnalysis:
    """What a per-unit contrast treats as independent observations (see ``univariate_contrast``).

    "item" without groups; "paired-group" when every group holds both conditions (matched
    designs: one within-group difference per group); "group" otherwise (the mean of each
    group's items of one condition is one observation).
    """
    if groups is None:
        return "item"
    _, inverse = np.unique(groups, return_inverse=True)
    has = np.zeros((inverse.max() + 1, 2), dtype=bool)
    has[inverse, np.asarray(labels, dtype=np.intp)] = True
    return "paired-group" if has.all() else "group"


def groups_warning(labels: np.ndarray, groups: np.ndarray | None) -> str | None:
    """A one-line warning when groups are label-pure (condition confounded with group), else None.

    Label-pure groups make the groups, not the items, the independent observations: power
    follows the number of groups, and any group-level nuisance is inseparable from the
    condition unless groups are many.
    """
    if groups is None or not label_pure(labels, groups):
        return None
    n_groups, n_items = len(np.unique(groups)), len(labels)
    return (
        f"groups are label-pure: each group holds one condition, so the {n_groups} groups "
        f"(not the {n_items} items) are the units of analysis; per-unit tests use group "
        "means and permutations move whole groups"
    )


@dataclass
class ContrastResult:
    """Per-unit target-vs-reference contrast on window means; all arrays are [units].

    Attributes:
        t: t statistic (target minus reference); NaN for inactive units. Welch t across
            items or group means, or a one-sample t of within-group differences (see
            ``unit_of_analysis``).
        df: its degrees of freedom (Welch-Satterthwaite, or groups - 1 when paired).
        p: two-sided p of t (null: equal condition means).
        q: Benjamini-Hochberg q over all active units (statsmodels fdr_bh).
        g: Hedges g (bias-corrected standardized mean difference) over the observations.
        auroc: P(target observation > reference observation) + 0.5 P(tie); 0.5 = none.
        mean_target: mean of the target items.
        mean_reference: mean of the reference items.
        active: True where the unit is non-zero on some item; inactive units are untested.
        p_fwe: max-|t| permutation family-wise p (None unless permutations were run).
        n_permutations: number of label permutations behind ``p_fwe`` (0 if none).
        unit_of_analysis: "item" (items independent), "group" (one observation per group
            and condition: the mean of its items) or "paired-group" (every group holds both
            conditions; one within-group difference per group).
        n_observations: number of independent observations behind t (items, group means
            or groups).
    """

    t: np.ndarray
    df: np.ndarray
    p: np.ndarray
    q: np.ndarray
    g: np.ndarray
    auroc: np.ndarray
    mean_target: np.ndarray
    mean_reference: np.ndarray
    active: np.ndarray
    p_fwe: np.ndarray | None = None
    n_permutations: int = 0
    unit_of_analysis: UnitOfAnalysis = "item"
    n_observations: int = 0

    def to_frame(self) -> pd.DataFrame:
        """One row per unit (index ``unit``), one column per statistic."""
        columns = {
            name: getattr(self, name)
            for name in ("t", "df", "p", "q", "g", "auroc", "mean_target", "mean_reference")
        }
        columns["active"] = self.active
        if self.p_fwe is not None:
            columns["p_fwe"] = self.p_fwe
        return pd.DataFrame(columns, index=pd.RangeIndex(len(self.t), name="unit"))


def group_condition_means(
    means: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_levels: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average the items of each (group, condition) cell.

    Returns cell means [cells, units], their labels [cells] and group index [cells]; cells
    are sorted by group, then condition (reference before target; with ``n_levels``
    conditions 0 .. n_levels - 1, by level index).
    """
    _, group_index = np.unique(groups, return_inverse=True)
    cells, cell_of_item = np.unique(group_index * n_levels + labels, return_inverse=True)
    onehot = np.zeros((len(cells), len(labels)))
    onehot[cell_of_item, np.arange(len(labels))] = 1.0
    onehot /= onehot.sum(axis=1, keepdims=True)
    return onehot @ means, (cells % n_levels).astype(np.int8), cells // n_levels


def paired_t(d: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sample t of within-group differences ``d`` [groups, units] and its df (groups - 1).

    ``scale`` [units] (the size of the condition means) decides when a zero standard error
    is round-off, as in ``welch_t``.
    """
    n = d.shape[0]
    t = _t_from_estimate(d.mean(0), d.std(0, ddof=1) / np.sqrt(n), scale)
    return t, np.full(d.shape[1], n - 1.0)


def univariate_contrast(
    means: np.ndarray,
    labels: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_permutations: int = 0,
    seed: int = 0,
) -> ContrastResult:
    """Target-vs-reference contrast of every unit at once (docs/methods.md, "Univariate
    contrasts").

    Args:
        means: [items, units] window-mean activations (float16/32/64).
        labels: [items] 1 target / 0 reference.
        groups: [items] optional group ids of dependent items (same template). Items of a
            group are not independent, so the test runs on the groups
            (``unit_of_analysis``): with label-pure groups (or a mix), each (group,
            condition) cell's mean is one observation and Welch t / Hedges g / AUROC run
            across those means; when every group holds both conditions (matched designs),
            the observation is each group's mean target minus mean reference, tested with a
            one-sample t (df = groups - 1), and g / AUROC describe the cell means.
        n_permutations: if > 0, also compute the max-|t| permutation family-wise p: for
            each permutation the largest |t| over active units forms the null of the
            maximum, and p_fwe = (1 + #{max >= |t|}) / (1 + n). Labels are permuted across
            observations (``permute_labels``; within a group for mixed designs) or, paired,
            the signs of the within-group differences are flipped.
        seed: root seed of the permutations (stream ``Stream.CONTRAST_NULL``).

    Inactive units (zero everywhere) get NaN statistics and are left out of the BH family
    and of the permutation maximum.
    """
    x = np.asarray(means, dtype=np.float64)
    if x.ndim != 2:
        raise CogsaeError(f"means must be [items, units], got shape {x.shape}", field="means")
    labels = check_labels(labels, x.shape[0])
    active = active_units(x)
    mean_target, mean_reference = x[labels == 1].mean(0), x[labels == 0].mean(0)
    unit = unit_of_analysis(labels, groups)
    obs, obs_labels, obs_groups = x, labels, None
    if unit != "item":
        obs, obs_labels, obs_groups = group_condition_means(x, labels, np.asarray(groups))
        check_labels(obs_labels, len(obs_labels))
    if unit == "paired-group":
        diff = obs[obs_labels == 1] - obs[obs_labels == 0]
        scale = np.maximum(np.abs(mean_target), np.abs(mean_reference))
        t, df = paired_t(diff, scale)
        n_obs = len(diff)
    else:
        t, df = welch_t(obs, obs_labels)
        n_obs = len(obs)
    p = two_sided_p(t, df)
    result = ContrastResult(
        t=t,
        df=df,
        p=p,
        q=bh_q(p, active),
        g=hedges_g(obs, obs_labels),
        auroc=auroc(obs, obs_labels),
        mean_target=mean_target,
        mean_reference=mean_reference,
        active=active,
        unit_of_analysis=unit,
        n_observations=n_obs,
    )
    for name in ("t", "df", "p", "g", "auroc"):
        getattr(result, name)[~active] = np.nan
    if n_permutations > 0:
        if unit == "paired-group":
            null_max = _max_abs_paired_t_null(diff[:, active], n_permutations, seed)
        else:
            null_max = _max_abs_t_null(obs[:, active], obs_labels, obs_groups, n_permutations, seed)
        exceed = n_permutations - np.searchsorted(np.sort(null_max), np.abs(t[active]), "left")
        result.p_fwe = np.full(x.shape[1], np.nan)
        result.p_fwe[active] = (1.0 + exceed) / (1.0 + n_permutations)
        result.n_permutations = n_permutations
    return result


def _max_abs_t_null(
    x: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, n_permutations: int, seed: int
) -> np.ndarray:
    """[n_permutations] max over units of |Welch t| under label permutations (batched GEMMs)."""
    draws = rng(seed, Stream.CONTRAST_NULL)
    x = x - x.mean(axis=0)  # t is shift invariant; centring keeps the moment sums accurate
    x2 = x * x
    total, total2, n = x.sum(0), x2.sum(0), x.shape[0]
    null = np.empty(n_permutations)
    for start in range(0, n_permutations, _PERMUTATION_BATCH):
        stop = min(start + _PERMUTATION_BATCH, n_permutations)
        perm = np.stack([permute_labels(labels, draws, groups) for _ in range(start, stop)])
        perm = perm.astype(np.float64)
        n1 = perm.sum(1, keepdims=True)
        n0 = n - n1
        s1, q1 = perm @ x, perm @ x2
        m1, m0 = s1 / n1, (total - s1) / n0
        v1 = (q1 - n1 * m1**2) / (n1 - 1)
        v0 = (total2 - q1 - n0 * m0**2) / (n0 - 1)
        t, _ = _welch_from_moments(m1, np.maximum(v1, 0), n1, m0, np.maximum(v0, 0), n0)
        null[start:stop] = np.abs(t).max(axis=1)
    return null


def _max_abs_paired_t_null(d: np.ndarray, n_permutations: int, seed: int) -> np.ndarray:
    """[n_permutations] max over units of |paired t| when each group's difference flips sign.

    ``d`` [groups, units]: under the null a group's target and reference are exchangeable,
    so its difference is symmetric about 0. Sum of squares is sign-invariant, so each batch
    of sign patterns is one GEMM.
    """
    draws = rng(seed, Stream.CONTRAST_NULL)
    n = d.shape[0]
    ss = (d * d).sum(0)
    null = np.empty(n_permutations)
    for start in range(0, n_permutations, _PERMUTATION_BATCH):
        stop = min(start + _PERMUTATION_BATCH, n_permutations)
        signs = draws.choice([-1.0, 1.0], size=(stop - start, n))
        mean = signs @ d / n
        var = np.maximum(ss - n * mean**2, 0.0) / (n - 1)
        scale = np.sqrt(ss / n)
        t = _t_from_estimate(mean, np.sqrt(var / n), np.broadcast_to(scale, mean.shape))
        null[start:stop] = np.abs(t).max(axis=1)
    return null


@dataclass
class GLMResult:
    """Per-unit OLS GLM of a factorial design; contrast arrays are [contrasts, units].

    Attributes:
        contrasts: contrast names, one per row ("outcome", "tense", "outcome:tense", ...).
        columns: design-matrix column names ("intercept", then effect-coded columns).
        weights: [contrasts, columns] contrast vectors over the design columns.
        beta: [columns, units] OLS coefficients.
        estimate: c'beta per contrast and unit.
        t: estimate / its standard error (residual variance with df = items - rank).
        p: two-sided p of t (null: c'beta = 0; Gaussian iid residuals assumed).
        q: Benjamini-Hochberg q within each contrast over the active units.
        df: residual degrees of freedom.
        active: [units] True where the unit is non-zero on some item.
    """

    contrasts: list[str]
    columns: list[str]
    weights: np.ndarray
    beta: np.ndarray
    estimate: np.ndarray
    t: np.ndarray
    p: np.ndarray
    q: np.ndarray
    df: int
    active: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """Long format: one row per (contrast, unit) with estimate, t, p, q."""
        n_units = self.t.shape[1]
        return pd.DataFrame(
            {
                "contrast": np.repeat(self.contrasts, n_units),
                "unit": np.tile(np.arange(n_units), len(self.contrasts)),
                "estimate": self.estimate.ravel(),
                "t": self.t.ravel(),
                "p": self.p.ravel(),
                "q": self.q.ravel(),
            }
        )


def effect_coded_design(
    design: Mapping[str, np.ndarray], levels: Mapping[str, Sequence] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Design matrix [items, columns] of a 2-level factorial design with effect coding.

    Each factor's first level codes +1 and its second -1 (level order from ``levels`` or
    first appearance); interaction columns are products of the factor codes, for every
    subset of two or more factors. Returns the matrix and its column names.
    """
    if not design:
        raise CogsaeError("a factorial design needs at least one factor", field="design")
    codes, names = [], []
    for factor, values in design.items():
        values = np.asarray(values)
        order = (
            list(levels[factor])
            if levels and factor in levels
            else list(dict.fromkeys(values.tolist()))
        )
        if len(order) != 2 or not np.isin(values, order).all():
            raise CogsaeError(
                f"factor {factor!r} must have exactly 2 levels, got {sorted(set(values.tolist()))}",
                field=factor,
            )
        codes.append(np.where(values == order[0], 1.0, -1.0))
        names.append(factor)
    columns, matrix = ["intercept"], [np.ones(len(codes[0]))]
    for size in range(1, len(codes) + 1):
        for subset in combinations(range(len(codes)), size):
            columns.append(":".join(names[i] for i in subset))
            matrix.append(np.prod([codes[i] for i in subset], axis=0))
    return np.column_stack(matrix), columns


def factorial_glm(
    means: np.ndarray,
    design: Mapping[str, np.ndarray],
    *,
    levels: Mapping[str, Sequence] | None = None,
    contrasts: Mapping[str, Sequence[float]] | None = None,
) -> GLMResult:
    """Per-unit OLS GLM of a 2-level factorial design, one least-squares solve for all units.

    Args:
        means: [items, units] window-mean activations.
        design: factor name -> [items] level of each item (exactly 2 levels per factor).
        levels: optional factor -> (first, second) level order; first codes +1.
        contrasts: optional extra contrasts, name -> weights over the design columns
            (see ``effect_coded_design``); every main effect and interaction is always tested.

    Each effect's t tests its coefficient (null: no effect), with the residual variance of
    the full model (Gaussian iid residuals assumed, df = items - rank). BH q is computed
    within each contrast over active units.
    """
    y = np.asarray(means, dtype=np.float64)
    x, columns = effect_coded_design(design, levels)
    if x.shape[0] != y.shape[0]:
        raise CogsaeError(
            f"design has {x.shape[0]} items but means has {y.shape[0]}", field="design"
        )
    names = columns[1:]
    weights = [np.eye(len(columns))[i] for i in range(1, len(columns))]
    for name, w in (contrasts or {}).items():
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (len(columns),):
            raise CogsaeError(
                f"contrast {name!r} needs {len(columns)} weights ({', '.join(columns)})",
                field="contrasts",
            )
        names.append(name)
        weights.append(w)
    c = np.stack(weights)
    beta, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    df = x.shape[0] - rank
    if df < 1:
        raise CogsaeError("the design leaves no residual degrees of freedom", field="design")
    sigma2 = ((y - x @ beta) ** 2).sum(0) / df
    c_var = np.einsum("ci,ij,cj->c", c, np.linalg.pinv(x.T @ x), c)
    estimate = c @ beta
    se = np.sqrt(c_var[:, None] * sigma2[None, :])
    t = _t_from_estimate(estimate, se, np.abs(beta).max(axis=0)[None, :])
    p = two_sided_p(t, df)
    active = active_units(y)
    t[:, ~active] = np.nan
    p[:, ~active] = np.nan
    q = np.stack([bh_q(row, active) for row in p])
    return GLMResult(names, columns, c, beta, estimate, t, p, q, int(df), active)
