"""Omnibus analysis of a factor with three or more levels: every level at once.

Per unit, :func:`omnibus_anova` tests whether the level means of its window means differ
(Welch's one-way ANOVA F, Welch 1951; Benjamini-Hochberg q over the active units). Per
readout, :func:`evaluate_levels` cross-validates "select k units on the training items ->
standardize -> one L1 logistic regression per level (one-vs-rest)" (:class:`LevelSelectedL1`)
and a dense one-vs-rest L2 probe on all units (:class:`DenseOvR`; on nuisance variables the
confound baseline), scored per held-out fold by the macro one-vs-rest AUROC: for each level
the AUROC of its own decision function separating its items from every other level's, the
unweighted mean over levels (0.5 = chance). Selectors score units on window means from
per-level moments of each training set (:class:`LevelMoments`): Welch F, the categorical
RSA fit against the multi-category model RDM (0 same level, 1 different), the highest
level mean (max-activation), or k random units.

Labels are level indices 0 .. L-1 on a :class:`CVPlan` built with ``n_levels = L``; the
permutation loop, intervals and :class:`MethodResult` records are those of two-level
readouts, so ``cogsae.analysis.ensemble.compare`` applies unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
import pandas as pd
from scipy import stats

from cogsae.activations import Activations
from cogsae.analysis.contrasts import active_units, bh_q, group_condition_means
from cogsae.analysis.cv import CVPlan, FoldSets, check_levels
from cogsae.analysis.ensemble import (
    MethodResult,
    SelectedL1,
    SpaceData,
    cross_validate,
    fold_scores,
)
from cogsae.analysis.selection import Standardized, top_k_batch
from cogsae.analysis.solvers import fit_kernel_logistic, fit_l1_logistic, weighted_standardize
from cogsae.constants import ANOVA_F, DENSE_L2, MAX_ACTIVATION, RANDOM, RSA_CATEGORICAL
from cogsae.errors import CogsaeError

# A level variance below this fraction of the unit's variance over all observations is a
# level without spread (a sparse unit silent on every item of the level): it is floored
# there, so its mean counts as known almost exactly instead of dividing by zero.
_VAR_FLOOR = 1e-6
# A unit whose variance over the observations is below this is constant (standardized scale).
_CONSTANT_VAR = 1e-10


# Memory budget of one batch of training sets (bytes), as for two-level readouts.
def welch_f(
    n: np.ndarray, mean: np.ndarray, var: np.ndarray, total: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Welch's F and its denominator df from per-level moments, vectorized.

    Args:
        n: [L, ...] observations per level (>= 2).
        mean, var: [L, ...] level means and unbiased variances.
        total: [...] variance over all observations (sets the variance floor).

    Returns F [...] and df2 [...] (df1 = L - 1): F = A / B with weights w_l = n_l / s_l^2,
    A = sum w_l (m_l - m_w)^2 / (L - 1), B = 1 + 2 (L - 2) / (L^2 - 1) lambda and
    lambda = sum (1 - w_l / W)^2 / (n_l - 1); df2 = (L^2 - 1) / (3 lambda). NaN where the
    unit is constant.
    """
    n_levels = n.shape[0]
    ok = total > _CONSTANT_VAR
    floor = _VAR_FLOOR * np.where(ok, total, 1.0)
    w = n / np.maximum(var, floor)
    w_sum = w.sum(axis=0)
    grand = (w * mean).sum(axis=0) / w_sum
    between = (w * (mean - grand) ** 2).sum(axis=0) / (n_levels - 1)
    lam = ((1 - w / w_sum) ** 2 / (n - 1)).sum(axis=0)
    f = between / (1 + 2 * (n_levels - 2) / (n_levels**2 - 1) * lam)
    df2 = (n_levels**2 - 1) / (3 * np.maximum(lam, 1e-300))
    return np.where(ok, f, np.nan), df2


@dataclass
class AnovaResult:
    """Per-unit omnibus test of all levels on window means; arrays are [units].

    Attributes:
        levels: the factor's levels, in label order (0 .. L-1).
        F: Welch's F over the levels; NaN for inactive units, 0 for constant ones.
        df1, df2: its degrees of freedom (L - 1, Welch's approximation).
        p: upper-tail p of F (null: equal level means).
        q: Benjamini-Hochberg q over the active units (statsmodels fdr_bh).
        level_means: [L, units] mean of each level's items.
        active: True where the unit is non-zero on some item.
        unit_of_analysis: "item", or "group": each (group, level) cell's mean is one
            observation (items of a group are not independent).
        n_observations: observations behind F (items or cells).
    """

    levels: list[str]
    F: np.ndarray
    df1: int
    df2: np.ndarray
    p: np.ndarray
    q: np.ndarray
    level_means: np.ndarray
    active: np.ndarray
    unit_of_analysis: str
    n_observations: int

    def to_frame(self) -> pd.DataFrame:
        """One row per unit (index ``unit``): F, df2, p, q, active and each level's mean."""
        columns = {"F": self.F, "df2": self.df2, "p": self.p, "q": self.q, "active": self.active}
        columns |= {f"mean_{lv}": m for lv, m in zip(self.levels, self.level_means, strict=True)}
        return pd.DataFrame(columns, index=pd.RangeIndex(len(self.F), name="unit"))


def omnibus_anova(
    means: np.ndarray,
    labels: np.ndarray,
    levels: Sequence[str],
    *,
    groups: np.ndarray | None = None,
) -> AnovaResult:
    """Welch's one-way ANOVA of every unit at once over the levels of ``labels``.

    Args:
        means: [items, units] window-mean activations.
        labels: [items] level index 0 .. len(levels) - 1 of each item.
        levels: the level names.
        groups: [items] optional group ids: then the test runs on (group, level) cell
            means, as the two-level contrast does (conservative when groups hold every
            level: a group's shared offset then adds to the within-level spread).
    """
    x = np.asarray(means, dtype=np.float64)
    n_levels = len(levels)
    labels = check_levels(labels, n_levels)
    active = active_units(x)
    obs, obs_labels, unit = x, labels, "item"
    if groups is not None:
        obs, obs_labels, _ = group_condition_means(x, labels, np.asarray(groups), n_levels)
        check_levels(obs_labels, n_levels)
        unit = "group"
    obs = obs - obs.mean(axis=0)  # F is shift invariant; centring keeps the sums accurate
    onehot = (obs_labels[None, :] == np.arange(n_levels)[:, None]).astype(np.float64)  # [L, obs]
    n = onehot.sum(axis=1)[:, None]
    level_mean = (onehot @ obs) / n
    var = (onehot @ obs**2 - n * level_mean**2) / (n - 1)
    f, df2 = welch_f(n, level_mean, np.maximum(var, 0.0), obs.var(axis=0, ddof=1))
    f = np.where(np.isnan(f), 0.0, f)  # constant units: no difference between levels
    p = stats.f.sf(f, n_levels - 1, df2)
    f, p, df2 = (np.where(active, a, np.nan) for a in (f, p, df2))
    level_means = np.stack([x[labels == lv].mean(axis=0) for lv in range(n_levels)])
    return AnovaResult(
        list(levels), f, n_levels - 1, df2, p, bh_q(p, active), level_means, active, unit, len(obs)
    )


class LevelMoments:
    """Per-level moments of standardized window means over a batch of training sets.

    Args:
        data: the standardized window means of every item.
        train: [sets, items] bool, the training items of each set.
        labels: [sets, items] level index of every item in each set (permuted in a null).
        n_levels: L.

    Quantities are float32 [L, sets, units] (per level) or [sets, units] (all training
    items) built from matrix products of the level indicators with x and x^2 (x^3 and x^4
    for the categorical score), as ``cogsae.analysis.selection.TrainingMoments``.
    """

    def __init__(
        self, data: Standardized, train: np.ndarray, labels: np.ndarray, n_levels: int
    ) -> None:
        self.data = data
        self.train = np.asarray(train, dtype=np.float32)
        onehot = np.asarray(labels)[None] == np.arange(n_levels)[:, None, None]
        self.indicators = (onehot & np.asarray(train, dtype=bool)[None]).astype(np.float32)
        self.n = self.indicators.sum(axis=2, keepdims=True)  # [L, sets, 1]
        self.n_total = self.n.sum(axis=0)  # [sets, 1]

    @cached_property
    def sums(self) -> tuple[np.ndarray, np.ndarray]:
        """[L, sets, units] sums of x and x^2 over each level's training items."""
        return self.indicators @ self.data.powers[0], self.indicators @ self.data.powers[1]

    @cached_property
    def mean(self) -> np.ndarray:
        return self.sums[0] / self.n

    @cached_property
    def centred_squares(self) -> np.ndarray:
        """[L, sets, units] within-level sums of squared deviations (n_l - 1) s_l^2."""
        return np.maximum(self.sums[1] - self.sums[0] * self.mean, 0.0)

    @cached_property
    def total_squares(self) -> np.ndarray:
        """[sets, units] sum of squared deviations over all training items."""
        s1, s2 = self.sums[0].sum(axis=0), self.sums[1].sum(axis=0)
        return np.maximum(s2 - s1 * s1 / self.n_total, 0.0)


def _f_score(m: LevelMoments) -> np.ndarray:
    """Welch's F over the levels of the training items (NaN, ranked last, if constant)."""
    var = m.centred_squares / (m.n - 1)
    return welch_f(m.n, m.mean, var, m.total_squares / (m.n_total - 1))[0]


def _categorical(m: LevelMoments) -> np.ndarray:
    """Pearson r between the unit's RDM d_ij = (x_i - x_j)^2 and the multi-category model
    RDM (0 same level, 1 different) over all ordered pairs of training items (0 if constant).

    Point-biserial form (mean between - mean within) sqrt(share (1 - share)) / SD(d): the
    within-level pairs of level l sum to 2 n_l C_l (C_l its centred squares), all pairs to
    2 n C, and the sum of d^2 over all pairs is 2 n S4 - 8 S1 S3 + 6 S2^2 (two levels:
    ``cogsae.analysis.selection``'s categorical score).
    """
    n = m.n_total
    pairs_all = n * (n - 1)
    pairs_within = (m.n * (m.n - 1)).sum(axis=0)
    pairs_between = pairs_all - pairs_within
    sum_all = 2 * n * m.total_squares
    sum_within = 2 * (m.n * m.centred_squares).sum(axis=0)
    mean_between = (sum_all - sum_within) / pairs_between
    mean_within = sum_within / pairs_within
    s1, s2 = m.sums[0].sum(axis=0), m.sums[1].sum(axis=0)
    s3, s4 = m.train @ m.data.powers[2], m.train @ m.data.powers[3]
    var = (2 * n * s4 - 8 * s1 * s3 + 6 * s2**2) / pairs_all - (sum_all / pairs_all) ** 2
    ok = var > _CONSTANT_VAR
    share = pairs_between / pairs_all
    fit = (mean_between - mean_within) * np.sqrt(share * (1 - share))
    return np.where(ok, fit / np.sqrt(np.where(ok, var, 1.0)), 0.0)


def _max_activation(m: LevelMoments) -> np.ndarray:
    """The highest level mean of raw window means over the training items (the units that
    fire most on some level, blind to the others)."""
    return m.data.centre + m.data.scale * m.mean.max(axis=0)


LEVEL_SCORES: dict[str, Callable[[LevelMoments], np.ndarray]] = {
    ANOVA_F: _f_score,
    RSA_CATEGORICAL: _categorical,
    MAX_ACTIVATION: _max_activation,
}
"""Per-unit window-mean scores [sets, units] of the omnibus selectors, from level moments."""

OMNIBUS_METHODS = (*LEVEL_SCORES, RANDOM)
"""The omnibus selection methods of a run (each in every space)."""


@dataclass(frozen=True)
class OvRModel:
    """One-vs-rest linear readout: decision_l = ((x[units] - mean) / scale) @ coef[l] + b_l.

    Attributes:
        units: [m] unit indices; mean, scale: [m] standardization.
        coef: [levels, m] weights on standardized activations; intercept: [levels] b_l.
    """

    units: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    def decision_function(self, means: np.ndarray) -> np.ndarray:
        """[items, levels] decisions on window means [items, units of the space]."""
        z = (means[:, self.units] - self.mean) / self.scale
        return z @ self.coef.T + self.intercept


@dataclass
class OvRModels:
    """A batch of one-vs-rest readouts, one per training set.

    Attributes:
        units: [sets, m] unit indices, or None for all units in order.
        mean, scale: [sets, m] (or [m], shared) standardization.
        coef: [sets, levels, m]; intercept: [sets, levels].
    """

    units: np.ndarray | None
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    def decisions(self, means: np.ndarray) -> np.ndarray:
        """[sets, levels, items] decision of every level's model on window means [items, units]."""
        weights = self.coef / np.expand_dims(self.scale, -2)
        bias = self.intercept - (np.expand_dims(self.mean, -2) * weights).sum(axis=-1)
        if self.units is None:
            return weights @ means.T + bias[..., None]
        gathered = means.T[self.units]  # [sets, m, items]
        return np.einsum("smi,slm->sli", gathered, weights) + bias[..., None]

    def model(self, s: int) -> OvRModel:
        """The s-th model on its own."""
        units = np.arange(self.coef.shape[2]) if self.units is None else self.units[s]
        pick = lambda a: a[s] if a.ndim == 2 else a  # noqa: E731
        return OvRModel(units, pick(self.mean), pick(self.scale), self.coef[s], self.intercept[s])


def one_vs_rest(sets: FoldSets, n_levels: int) -> FoldSets:
    """The L binary problems of each training set, set-major: set s, level l is row
    s L + l with label 1 for the level's items (its ``weights`` balance each problem)."""
    onehot = sets.labels[:, None, :] == np.arange(n_levels)[None, :, None]
    labels = onehot.reshape(-1, sets.labels.shape[1]).astype(np.int8)
    return FoldSets(np.repeat(sets.train, n_levels, axis=0), labels, [])


class LevelReadout(Protocol):
    """An omnibus readout procedure: one :class:`OvRModels` per batch of training sets."""

    @property
    def name(self) -> str: ...

    def fit(self, data: SpaceData, sets: FoldSets, n_levels: int) -> OvRModels: ...


@dataclass(frozen=True)
class LevelSelectedL1:
    """k units chosen on the training items -> standardize -> one L1 logistic per level.

    ``method`` is a key of ``LEVEL_SCORES`` or "random" (the k-random-units draw of
    ``SelectedL1``, label-free). C fixed at 1.0 as for two-level readouts.
    """

    method: str
    k: int = 8
    C: float = 1.0

    @property
    def name(self) -> str:
        return self.method

    def select(self, data: SpaceData, sets: FoldSets, n_levels: int) -> np.ndarray:
        """[sets, k] units chosen on each set's training items."""
        if self.method == RANDOM:
            return SelectedL1(RANDOM, self.k).select(data, sets)
        if self.k > data.active.size:
            raise CogsaeError(
                f"k = {self.k} exceeds the {data.active.size} active units of space "
                f"{data.acts.space!r}",
                field="--k",
            )
        moments = LevelMoments(data.standardized, sets.train, sets.labels, n_levels)
        return data.active[top_k_batch(LEVEL_SCORES[self.method](moments), self.k)]

    def fit(self, data: SpaceData, sets: FoldSets, n_levels: int) -> OvRModels:
        units = self.select(data, sets, n_levels)
        x = data.means.T[units].transpose(0, 2, 1)  # [sets, items, k]
        z, mean, scale = weighted_standardize(x, sets.train)
        binary = one_vs_rest(sets, n_levels)
        z = np.repeat(z, n_levels, axis=0)
        coef, intercept = fit_l1_logistic(z, binary.labels, binary.weights, self.C)
        shape = (sets.n_sets, n_levels)
        return OvRModels(units, mean, scale, coef.reshape(*shape, -1), intercept.reshape(shape))


@dataclass(frozen=True)
class DenseOvR:
    """Baseline: one L2 logistic probe per level (one-vs-rest) on all units, standardized over
    all items (label-free), fitted on the shared kernel as ``DenseL2``."""

    name: str = DENSE_L2
    C: float = 1.0

    def fit(self, data: SpaceData, sets: FoldSets, n_levels: int) -> OvRModels:
        binary = one_vs_rest(sets, n_levels)
        dual = fit_kernel_logistic(data.kernel, binary.labels, binary.weights, self.C)
        scaled = data.all_standardized
        coef = (dual @ scaled.x).reshape(sets.n_sets, n_levels, -1)
        intercept = dual.sum(axis=1).reshape(sets.n_sets, n_levels)
        return OvRModels(None, scaled.centre, scaled.scale, coef, intercept)


def macro_scores(
    decisions: np.ndarray, train: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out macro one-vs-rest AUROC and balanced accuracy [sets].

    Args:
        decisions: [sets, levels, items] one-vs-rest decisions.
        train: [sets, items] bool (only ``~train`` items are scored).
        labels: [sets, items] level indices.

    AUROC: for each level, the rank AUROC of its own decision for its items against all
    other test items (``fold_scores``), averaged over levels with equal weight. Balanced
    accuracy: mean recall of the arg-max level (chance 1 / levels).
    """
    n_sets, n_levels, n_items = decisions.shape
    onehot = labels[:, None, :] == np.arange(n_levels)[None, :, None]  # [sets, L, items]
    auc, _ = fold_scores(
        decisions.reshape(-1, n_items),
        np.repeat(train, n_levels, axis=0),
        onehot.reshape(-1, n_items),
    )
    tested = onehot & ~train[:, None, :]
    hit = decisions.argmax(axis=1)[:, None, :] == np.arange(n_levels)[None, :, None]
    recall = (hit & tested).sum(axis=2) / tested.sum(axis=2)
    return auc.reshape(n_sets, n_levels).mean(axis=1), recall.mean(axis=1)


def _margins(decisions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[sets, items] decision of each item's own level minus the best other level's."""
    own = np.take_along_axis(decisions, labels[:, None, :].astype(np.intp), axis=1)[:, 0]
    others = np.where(
        labels[:, None, :] == np.arange(decisions.shape[1])[None, :, None], -np.inf, decisions
    )
    return own - others.max(axis=1)


def evaluate_levels(
    readouts: Sequence[LevelReadout],
    acts: Activations,
    plan: CVPlan,
    *,
    level: float = 0.95,
    stop_after: int | None = 10,
    progress: bool = True,
) -> list[MethodResult]:
    """Cross-validate every omnibus readout on ``acts`` over ``plan``'s folds and permutations.

    As ``cogsae.analysis.ensemble.evaluate`` (selection inside each fold, the whole
    procedure re-run on every label permutation, sequential two-tailed p, corrected
    repeated-CV interval widened to the null's spread), with the macro one-vs-rest AUROC
    as the score. ``MethodResult.model`` is an :class:`OvRModel` and ``scores`` the
    held-out margin of each item's own level over the best other level.
    """
    n_levels = plan.n_levels
    if n_levels < 3:
        raise CogsaeError("an omnibus analysis needs a plan of 3 or more levels")
    return cross_validate(
        readouts,  # type: ignore[arg-type]  # OvR models carry the same record fields
        acts,
        plan,
        fit=lambda readout, data, sets: readout.fit(data, sets, n_levels),
        score=macro_scores,
        held_out=_margins,
        desc=f"omnibus permutations [{acts.space}]",
        outputs=n_levels,
        level=level,
        stop_after=stop_after,
        progress=progress,
    )
