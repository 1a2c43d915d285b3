"""Held-out decoding of a concept from a few selected units, with nulls that cannot leak.

A *readout* maps the training items of one outer fold to a linear model on window-mean
activations: "select k units with a selection method, standardize, L1 logistic"
(:class:`SelectedL1`) or a baseline on all units (:class:`DiffMeans`, :class:`DenseL2`;
a :class:`DenseL2` on nuisance variables is the confound baseline). One engine,
:func:`evaluate`, runs every readout on the same outer folds (:class:`CVPlan`): selection
sees training items only, the held-out items are scored, and the whole procedure
(selection included) is re-run on label permutations for the p-values.

The engine is batched: the training sets of many (permutation, repeat, fold) triples are
fitted together. Window-mean selections are matrix products of per-unit moments
(``cogsae.analysis.selection.TrainingMoments``), the L1 logistic fits are one vectorized proximal
Newton solver (:func:`fit_l1_logistic`), and the dense probe is a kernel logistic
regression on a fold-invariant kernel (:func:`fit_kernel_logistic`); both solve exactly
the objective of scikit-learn's liblinear solver.

Inference is about the PROCEDURE, not one fitted model. Each readout is scored per
held-out fold (AUROC a_j over J = repeats x folds); its AUROC is the mean of a_j, its
interval the corrected repeated-CV t interval and paired comparisons the corrected
resampled t-test (Nadeau & Bengio 2003; Bouckaert & Frank 2004), whose variance term
(1/J + n_test/n_train) s^2 accounts for the overlap of training sets. Permutation
p-values in both tails test the readout against chance; a readout far below chance
signals paired items split across folds.

The CV plan and its training-set batches are in ``cogsae.analysis.cv``, the batched
solvers in ``cogsae.analysis.solvers``, the permutation loop in ``cogsae.analysis.nulls``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cogsae.activations import Activations
from cogsae.analysis.contrasts import average_ranks
from cogsae.analysis.cv import CVPlan, FoldSets
from cogsae.analysis.nulls import TIE as _TIE
from cogsae.analysis.nulls import mean_jaccard as _mean_jaccard
from cogsae.analysis.nulls import permutation_nulls
from cogsae.analysis.nulls import sequential_p as _sequential_p
from cogsae.analysis.selection import (
    SELECTORS,
    WINDOW_MEAN_SELECTORS,
    Selection,
    Standardized,
    batched_selection,
)
from cogsae.analysis.solvers import fit_kernel_logistic, fit_l1_logistic, weighted_standardize
from cogsae.constants import DENSE_L2, DIFF_MEANS, RANDOM
from cogsae.errors import CogsaeError

# Memory budget of one batch of training sets (bytes of one [sets, units] float64 array x 10).
_BATCH_BYTES = 2**27
_INFERENCE = "corrected repeated-CV t (Nadeau & Bengio 2003)"


@dataclass(frozen=True)
class LinearModel:
    """A linear readout on window means: decision = ((x[units] - mean) / scale) @ coef + intercept.

    Positive decision = target condition; threshold 0 is the class boundary (the logistic
    fits use balanced class weights, the difference of means puts it at the midpoint).

    Attributes:
        units: [m] int, indices of the units used (into the space's units).
        mean: [m] standardization centre (0 when unstandardized).
        scale: [m] standardization scale (1 when unstandardized).
        coef: [m] weights on standardized activations.
        intercept: bias of the decision.
    """

    units: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @property
    def weights(self) -> np.ndarray:
        """[m] weights on raw window means of ``units`` (a steering direction)."""
        return self.coef / self.scale

    @property
    def bias(self) -> float:
        """Decision bias on raw window means: decision = x[units] @ weights + bias."""
        return float(self.intercept - self.mean @ self.weights)

    def decision_function(self, means: np.ndarray) -> np.ndarray:
        """[items] decision of window means [items, units of the space]."""
        return means[:, self.units] @ self.weights + self.bias


@dataclass
class LinearModels:
    """A batch of linear readouts, one per training set (see :class:`LinearModel`).

    Attributes:
        units: [sets, m] unit indices, or None for all units of the space in order.
        mean, scale: [sets, m] (or [m], shared) standardization of the units.
        coef: [sets, m] weights on standardized activations.
        intercept: [sets] biases.
    """

    units: np.ndarray | None
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    def decisions(self, means: np.ndarray) -> np.ndarray:
        """[sets, items] decision of every set's model on window means [items, units]."""
        weights = self.coef / self.scale
        bias = self.intercept - (self.mean * weights).sum(axis=-1)
        if self.units is None:
            return weights @ means.T + bias[:, None]
        gathered = means.T[self.units]  # [sets, m, items]
        return np.einsum("smi,sm->si", gathered, weights) + bias[:, None]

    def model(self, s: int) -> LinearModel:
        """The s-th model on its own."""
        units = np.arange(self.coef.shape[1]) if self.units is None else self.units[s]
        pick = lambda a: a[s] if a.ndim == 2 else a  # noqa: E731
        return LinearModel(
            units, pick(self.mean), pick(self.scale), self.coef[s], float(self.intercept[s])
        )


class SpaceData:
    """Fold-invariant data of one unit space, computed once and shared by every readout.

    Attributes:
        acts: the activations (float32 values, for selectors that need positions).
        means: [items, units] float64 window means.
    """

    def __init__(self, acts: Activations) -> None:
        self.acts = Activations(np.asarray(acts.values, dtype=np.float32), acts.mask, acts.space)
        self.means = self.acts.window_mean().astype(np.float64)
        if not np.isfinite(self.means).all():
            raise CogsaeError(f"non-finite window-mean activations in space {acts.space!r}")

    @cached_property
    def active(self) -> np.ndarray:
        """[a] units non-zero on some item (label-free; others can never be selected)."""
        return np.flatnonzero(np.any(self.means != 0, axis=0))

    @cached_property
    def standardized(self) -> Standardized:
        """Window means of the active units standardized over all items (label-free)."""
        return Standardized.of(self.means[:, self.active])

    @cached_property
    def all_standardized(self) -> Standardized:
        """Window means of every unit standardized over all items (the dense probe's input)."""
        return Standardized.of(self.means)

    @cached_property
    def kernel(self) -> np.ndarray:
        """[items, items] Z Z^T + 1: the dense probe's linear kernel plus the intercept feature."""
        z = self.all_standardized.x
        return z @ z.T + 1.0


class ReadoutProcedure(Protocol):
    """A readout procedure (:class:`SelectedL1`, :class:`DiffMeans`, :class:`DenseL2`): fits
    one linear model per training set of a batch; ``name`` labels it in results."""

    @property
    def name(self) -> str: ...

    def fit(self, data: SpaceData, sets: FoldSets) -> LinearModels: ...


@dataclass(frozen=True)
class SelectedL1:
    """k units chosen by a selection method on the training items -> standardize -> L1 logistic.

    C is fixed (default 1.0, mild shrinkage for ~100 items on k = 8 standardized units)
    rather than tuned by an inner CV: k is already small, and validity does not depend on
    C because the permutation null re-runs the same fixed procedure. ``selector``
    defaults to ``cogsae.analysis.selection.SELECTORS[method]``; method "random" is the
    k-random-units baseline. The window-mean selectors run batched on moments; any other
    selector is called once per training set with that set's items only.
    """

    method: str
    k: int = 8
    C: float = 1.0
    selector: Callable[..., Selection] | None = None

    @property
    def name(self) -> str:
        return self.method

    def select(self, data: SpaceData, sets: FoldSets) -> np.ndarray:
        """[sets, k] units chosen on each set's training items."""
        n_units = data.means.shape[1]
        if self.selector is None and self.method in WINDOW_MEAN_SELECTORS:
            if self.k > data.active.size:
                raise CogsaeError(
                    f"k = {self.k} exceeds the {data.active.size} active units of space "
                    f"{data.acts.space!r}",
                    field="--k",
                )
            moments = sets.moments(data.standardized)
            return data.active[batched_selection(self.method, moments, self.k)]
        if self.k > n_units:
            raise CogsaeError(f"k = {self.k} exceeds the {n_units} units", field="--k")
        if self.selector is None and self.method == RANDOM:
            # Label-free: each set's draw depends on its (repeat, fold) stream only.
            draws: dict[tuple[int, ...], np.ndarray] = {}
            for stream in map(tuple, sets.streams):
                if stream not in draws:
                    rng = np.random.default_rng(list(stream))
                    draws[stream] = rng.choice(n_units, size=self.k, replace=False)
            return np.stack([draws[tuple(stream)] for stream in sets.streams])
        select = self.selector or SELECTORS[self.method]
        chosen = np.empty((sets.n_sets, self.k), dtype=np.int64)
        values, mask = data.acts.values, data.acts.mask
        for s in range(sets.n_sets):
            train = np.flatnonzero(sets.train[s])
            units = np.asarray(
                select(
                    values[train],
                    mask[train],
                    sets.labels[s, train],
                    self.k,
                    rng=np.random.default_rng(sets.streams[s]),
                ).units,
                dtype=np.int64,
            )
            if units.size != self.k or np.unique(units).size != units.size:
                raise ValueError(
                    f"selector {self.method!r} returned {units.size} units, k={self.k}"
                )
            if units.min() < 0 or units.max() >= n_units:
                raise ValueError(f"selector {self.method!r} returned a unit outside [0, {n_units})")
            chosen[s] = units
        return chosen

    def fit(self, data: SpaceData, sets: FoldSets) -> LinearModels:
        units = self.select(data, sets)
        x = data.means.T[units].transpose(0, 2, 1)  # [sets, items, k]
        z, mean, scale = weighted_standardize(x, sets.train)
        coef, intercept = fit_l1_logistic(z, sets.labels, sets.weights, self.C)
        return LinearModels(units, mean, scale, coef, intercept)


@dataclass(frozen=True)
class DiffMeans:
    """Baseline: project window means of all units on mean(target) - mean(reference).

    Both means are computed on the training items; the threshold sits at the midpoint of
    the two class means' projections. No standardization.
    """

    name: str = DIFF_MEANS

    def fit(self, data: SpaceData, sets: FoldSets) -> LinearModels:
        target = sets.train & (sets.labels == 1)
        reference = sets.train & (sets.labels == 0)
        mean_t = target @ data.means / target.sum(axis=1, keepdims=True)
        mean_r = reference @ data.means / reference.sum(axis=1, keepdims=True)
        direction = mean_t - mean_r
        n_units = direction.shape[1]
        intercept = -(direction * (mean_t + mean_r)).sum(axis=1) / 2
        return LinearModels(None, np.zeros(n_units), np.ones(n_units), direction, intercept)


@dataclass(frozen=True)
class DenseL2:
    """Baseline: L2 logistic probe on all units (fixed C, class-balanced).

    Units are standardized with the mean and SD of all items of the analysis: label-free,
    so nothing about the held-out labels leaks, and the kernel is then fold-invariant
    (computed once for every fold and permutation). The fit is a kernel logistic
    regression (:func:`fit_kernel_logistic`), exact for liblinear's L2 objective.
    Named "confound" and given nuisance variables instead of activations, it is the
    confound baseline.
    """

    name: str = DENSE_L2
    C: float = 1.0

    def fit(self, data: SpaceData, sets: FoldSets) -> LinearModels:
        dual = fit_kernel_logistic(data.kernel, sets.labels, sets.weights, self.C)
        coef = dual @ data.all_standardized.x
        scaled = data.all_standardized
        return LinearModels(None, scaled.centre, scaled.scale, coef, dual.sum(axis=1))


def fold_scores(
    decisions: np.ndarray, train: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out AUROC and balanced accuracy [sets] of each set's decisions [sets, items].

    Only the set's test items (``~train``) count. AUROC is rank-based (ties 1/2): training
    items are given +inf so they rank above every test item and leave test ranks unchanged.
    """
    test = ~train
    pos, neg = test & (labels == 1), test & (labels == 0)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    ranks = average_ranks(np.where(test, decisions, np.inf).T).T
    auc = ((ranks * pos).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    hit = (decisions > 0) == (labels == 1)
    bacc = ((hit & pos).sum(axis=1) / n_pos + (hit & neg).sum(axis=1) / n_neg) / 2
    return auc, bacc


def corrected_t_interval(
    values: np.ndarray,
    test_fraction: float,
    level: float = 0.95,
    null: np.ndarray | None = None,
    chance: float = 0.5,
) -> tuple[float, float]:
    """Interval for the procedure's mean performance from per-fold values [J] of repeated CV.

    mean +- t_{J-1} sqrt((1/J + n_test/n_train) s^2): the corrected repeated-CV variance
    (Nadeau & Bengio 2003), which inflates the naive 1/J by the overlap of training sets.
    With the permutation ``null`` of the mean, the half-width is at least the ``level``
    quantile of |null - chance|: then the interval excludes chance only when the exact
    permutation test rejects (two-sided), which the corrected variance alone does not
    guarantee (on null data it covered chance ~90% of the time at 95%).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    half = stats.t.ppf((1 + level) / 2, values.size - 1) * _corrected_se(values, test_fraction)
    if null is not None and null.size:
        half = max(half, float(np.quantile(np.abs(null - chance), level)))
    mean = float(values.mean())
    return max(mean - half, 0.0), min(mean + half, 1.0)  # AUROC and accuracy lie in [0, 1]


def _corrected_se(values: np.ndarray, test_fraction: float) -> float:
    """sqrt((1/J + n_test/n_train) s^2) of per-fold values [J]."""
    ratio = test_fraction / (1 - test_fraction)
    return float(np.sqrt((1 / values.size + ratio) * values.var(ddof=1)))


@dataclass
class MethodResult:
    """Held-out evaluation of one readout in one space.

    Attributes:
        method: readout name (a selection method, "random", "diff_means", "dense_l2",
            "confound").
        space: unit space ("raw", "sae", "nuisance", ...).
        k: number of units the final model uses.
        auroc: held-out AUROC, mean over the repeats x folds held-out folds.
        fold_aurocs: [repeats, folds] the per-fold AUROCs.
        auroc_ci: corrected repeated-CV t interval widened to the permutation null's
            spread (``corrected_t_interval``): an interval for the procedure, not for one
            fitted model.
        balanced_accuracy: held-out balanced accuracy at decision 0, mean over folds.
        fold_balanced_accuracies: [repeats, folds].
        balanced_accuracy_ci: its corrected repeated-CV t interval (descriptive).
        p_value: upper-tail label-permutation p of ``auroc`` (selection re-run in every
            permutation), H0: labels exchangeable with the activations within the plan's
            clusters. (1 + #{null >= observed}) / (1 + n) after all n permutations, or
            h / L when the h-th exceedance came at permutation L (Besag & Clifford 1991).
        p_lower: the same in the lower tail (null <= observed): small = below chance.
        null_aurocs: [permutations run] the null distribution of ``auroc``.
        selected_units: [repeats * folds] unit indices used in each fold (repeat-major).
        stability: mean pairwise Jaccard index of ``selected_units`` across folds.
        scores: [repeats, items] held-out decision of each item in each repeat.
        model: the readout fitted on all items (for transfer tests and steering; its
            in-sample performance is never reported).
        plan: the :class:`CVPlan` evaluated on (paired comparisons require the same one).
    """

    method: str
    space: str
    k: int
    auroc: float
    fold_aurocs: np.ndarray
    auroc_ci: tuple[float, float]
    balanced_accuracy: float
    fold_balanced_accuracies: np.ndarray
    balanced_accuracy_ci: tuple[float, float]
    p_value: float
    p_lower: float
    null_aurocs: np.ndarray
    selected_units: list[np.ndarray]
    stability: float
    scores: np.ndarray
    model: LinearModel
    plan: CVPlan

    @property
    def label(self) -> str:
        """``space:method``, the key :func:`compare` uses."""
        return f"{self.space}:{self.method}"


def evaluate(
    readouts: Sequence[ReadoutProcedure],
    acts: Activations,
    plan: CVPlan,
    *,
    level: float = 0.95,
    stop_after: int | None = 10,
    progress: bool = True,
) -> list[MethodResult]:
    """Cross-validate every readout on ``acts`` over ``plan``'s folds and permutations.

    Each permutation re-runs the full procedure (selection included) on the permuted
    labels and the folds derived from them; training sets of many permutations are fitted
    in one batch. A readout stops permuting once BOTH tails of its null have reached the
    observed AUROC ``stop_after`` times (a clearly null readout then costs ~2 x stop_after
    permutations); each tail's p is the Besag & Clifford (1991) sequential p-value of the
    same null sequence, valid at every stopping time. None runs all permutations.
    """
    names = [readout.name for readout in readouts]
    if len(set(names)) != len(names):
        raise CogsaeError(f"readout names must be unique, got {names}")
    return cross_validate(
        readouts,
        acts,
        plan,
        fit=lambda readout, data, sets: readout.fit(data, sets),
        score=fold_scores,
        held_out=lambda decisions, labels: decisions,
        desc=f"permutations [{acts.space}]",
        level=level,
        stop_after=stop_after,
        progress=progress,
    )


def cross_validate(
    readouts: Sequence[ReadoutProcedure],
    acts: Activations,
    plan: CVPlan,
    *,
    fit: Callable[[ReadoutProcedure, SpaceData, FoldSets], LinearModels],
    score: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    held_out: Callable[[np.ndarray, np.ndarray], np.ndarray],
    desc: str,
    outputs: int = 1,
    level: float = 0.95,
    stop_after: int | None = 10,
    progress: bool = True,
) -> list[MethodResult]:
    """The procedure behind :func:`evaluate` and the omnibus ``evaluate_levels``: fit every
    readout on the observed folds, score them, permute (the whole procedure re-run each
    time) and collect one :class:`MethodResult` per readout.

    ``fit(readout, data, sets)`` fits a readout on a batch of training sets; ``score(
    decisions, train, labels)`` gives [sets] held-out AUROCs and balanced accuracies;
    ``held_out(decisions, labels)`` the per-item held-out score kept in ``scores``;
    ``outputs`` is the number of decision columns per item (1, or one per level), which
    sizes the permutation batches.
    """
    if acts.n_items != plan.n_items:
        raise CogsaeError(f"{acts.n_items} items in activations but {plan.n_items} in the plan")
    data = SpaceData(acts)
    n_folds = plan.n_repeats * plan.n_splits
    observed_sets = FoldSets.of(plan, [0])
    fitted = [fit(readout, data, observed_sets) for readout in readouts]
    decisions = [models.decisions(data.means) for models in fitted]
    observed = [score(d, observed_sets.train, observed_sets.labels) for d in decisions]
    statistic = np.array([auc.mean() for auc, _ in observed])

    width = max(data.means.shape[1], plan.n_items) * outputs
    per_batch = int(np.clip(_BATCH_BYTES // (8 * width * n_folds), 1, 100))

    def null_aurocs(sets: FoldSets, running: np.ndarray) -> list[np.ndarray]:
        """Held-out fold AUROCs [sets] of every running readout on these sets."""
        out = []
        for i in running:
            models = fit(readouts[i], data, sets)
            out.append(score(models.decisions(data.means), sets.train, sets.labels)[0])
        return out

    nulls = permutation_nulls(
        plan,
        statistic,
        null_aurocs,
        per_batch=per_batch,
        stop_after=stop_after,
        progress=progress,
        desc=desc,
    )

    final_sets = FoldSets.everything(plan)
    results = []
    for i, readout in enumerate(readouts):
        null = nulls[i]
        p_upper = _sequential_p(null >= statistic[i] - _TIE, stop_after)
        p_lower = _sequential_p(null <= statistic[i] + _TIE, stop_after)
        auc, bacc = observed[i]
        model = fit(readout, data, final_sets).model(0)
        fold_models = fitted[i]
        units = (
            [np.arange(data.means.shape[1])] * n_folds
            if fold_models.units is None
            else list(fold_models.units)
        )
        kept = np.where(observed_sets.train, np.nan, held_out(decisions[i], observed_sets.labels))
        scores = np.nanmax(kept.reshape(plan.n_repeats, plan.n_splits, -1), axis=1)
        results.append(
            MethodResult(
                method=readout.name,
                space=acts.space,
                k=int(model.units.size),
                auroc=float(auc.mean()),
                fold_aurocs=auc.reshape(plan.n_repeats, plan.n_splits),
                auroc_ci=corrected_t_interval(auc, plan.test_fraction, level, null),
                balanced_accuracy=float(bacc.mean()),
                fold_balanced_accuracies=bacc.reshape(plan.n_repeats, plan.n_splits),
                balanced_accuracy_ci=corrected_t_interval(bacc, plan.test_fraction, level),
                p_value=p_upper,
                p_lower=p_lower,
                null_aurocs=null,
                selected_units=units,
                stability=_mean_jaccard(units),
                scores=scores,
                model=model,
                plan=plan,
            )
        )
    return results


def compare(
    results: Sequence[MethodResult],
    pairs: Sequence[tuple[str, str]],
    *,
    level: float = 0.95,
    correction: str = "holm",
) -> pd.DataFrame:
    """Paired procedure-level tests of held-out AUROC between readouts on the same plan.

    ``pairs`` name results by ``MethodResult.label`` ("space:method"). For each (a, b) the
    per-fold differences d_j = AUROC_a,j - AUROC_b,j over the J = repeats x folds shared
    held-out folds give diff = mean d_j, the corrected resampled t statistic
    t = diff / sqrt((1/J + n_test/n_train) s_d^2) with J - 1 degrees of freedom
    (Nadeau & Bengio 2003; Bouckaert & Frank 2004), its two-sided p and t interval. The
    variance term accounts for the overlapping training sets of repeated CV, so the test
    is about the two PROCEDURES (selection and fit re-run on each training set), not
    about two fitted models. A readout compared with itself gives diff 0 and p 1.

    p_corrected: ``multipletests(p, method=correction)`` over all pairs (default Holm,
    family-wise, since method comparisons are the confirmatory claims).

    Returns one row per pair: a, b, auroc_a, auroc_b, diff, ci_low, ci_high, t, df, p,
    p_corrected, correction, test.
    """
    if not results or not pairs:
        raise CogsaeError("compare needs results and at least one pair")
    plan = results[0].plan
    if any(result.plan is not plan for result in results):
        raise CogsaeError("paired comparisons need every result evaluated on the same plan")
    by_label = {result.label: result for result in results}
    missing = {label for pair in pairs for label in pair} - by_label.keys()
    if missing:
        raise CogsaeError(f"no result for {sorted(missing)}; have {sorted(by_label)}")
    rows = []
    for a, b in pairs:
        res_a, res_b = by_label[a], by_label[b]
        d = (res_a.fold_aurocs - res_b.fold_aurocs).ravel()
        diff = float(d.mean())
        se = _corrected_se(d, plan.test_fraction)
        df = d.size - 1
        if se > 0:
            t = diff / se
            p = float(2 * stats.t.sf(abs(t), df))
            half = float(stats.t.ppf((1 + level) / 2, df) * se)
        else:
            t, p, half = (0.0, 1.0, 0.0) if diff == 0 else (np.copysign(np.inf, diff), 0.0, 0.0)
        rows.append(
            {
                "a": a,
                "b": b,
                "auroc_a": res_a.auroc,
                "auroc_b": res_b.auroc,
                "diff": diff,
                "ci_low": diff - half,
                "ci_high": diff + half,
                "t": float(t),
                "df": df,
                "p": p,
            }
        )
    table = pd.DataFrame(rows)
    table["p_corrected"] = multipletests(table["p"], method=correction)[1]
    table["correction"] = correction
    table["test"] = _INFERENCE
    return table
