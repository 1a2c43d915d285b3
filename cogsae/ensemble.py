"""Held-out decoding of a concept from a few selected units, with nulls that cannot leak.

A *readout* maps the training items of one outer fold to a linear model on window-mean
activations: either "select k units with a selection method, standardize, L1 logistic"
(:class:`SelectedL1`) or a baseline on all units (:class:`DiffMeans`, :class:`DenseL2`).
One engine, :func:`evaluate`, runs every readout on the same outer folds
(:class:`CVPlan`): selection sees training items only, the held-out items are scored,
and the whole procedure (selection included) is re-run on label permutations for the
p-value. :func:`compare` tests readouts against each other on the same held-out items.

Items are resampled, permuted and flipped in *clusters*: an item group when the
stimulus set gives groups (items sharing a template are not independent), otherwise
each item on its own. A cluster's *stratum* is its label when all its items share one
label and 2 ("mixed") otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn import config_context
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from statsmodels.stats.multitest import multipletests
from tqdm.auto import tqdm

from cogsae.activations import Activations
from cogsae.contrasts import auroc, bootstrap_indices, check_labels, permute_labels
from cogsae.errors import CogsaeError
from cogsae.selection import SELECTORS, Selection

# Independent random streams derived from a plan's seed: np.random.default_rng([seed, tag, ...]).
_FOLDS, _PERMS, _FIT, _FINAL, _BOOT, _SWAP = range(6)
# Statistics computed on permuted data count as ">= observed" within this float tolerance.
_TIE = 1e-12


@dataclass(eq=False)
class CVPlan:
    """Outer folds and label permutations shared by every readout (the paired design).

    Row 0 of ``labels_perm`` / ``fold_ids`` is the observed analysis; row b > 0 is the
    b-th label permutation with folds re-derived from the permuted labels by the very
    same rule and seeds, so a null replicate is the observed analysis applied verbatim
    to permuted labels (which is what makes the permutation p-value exact).

    Attributes:
        labels: [items] int, 1 = target condition, 0 = reference (observed).
        groups: [items] group of each item (items of a group are not independent), or None.
        n_splits: outer folds per repeat.
        labels_perm: [1 + n_permutations, items] int, row 0 == ``labels``.
        fold_ids: [1 + n_permutations, repeats, items] int, the test fold of each item.
        seed: root of every random stream used with this plan (folds, permutations,
            selector and solver seeds, bootstrap resamples, sign flips).
    """

    labels: np.ndarray
    groups: np.ndarray | None
    n_splits: int
    labels_perm: np.ndarray
    fold_ids: np.ndarray
    seed: int

    @property
    def n_items(self) -> int:
        return int(self.labels.shape[0])

    @cached_property
    def clusters(self) -> np.ndarray:
        """[items] int in [0, n_clusters): the item's group, or the item itself."""
        return _clusters(self.labels.size, self.groups)

    @property
    def n_repeats(self) -> int:
        return int(self.fold_ids.shape[1])

    @property
    def n_permutations(self) -> int:
        return int(self.labels_perm.shape[0] - 1)

    def splits(self, b: int = 0) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """[repeats][folds] (train, test) item indices under permutation ``b`` (0 = observed)."""
        return [
            [(np.flatnonzero(ids != f), np.flatnonzero(ids == f)) for f in range(self.n_splits)]
            for ids in self.fold_ids[b]
        ]


def make_plan(
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    n_splits: int = 5,
    n_repeats: int = 2,
    n_permutations: int = 200,
    seed: int = 0,
) -> CVPlan:
    """Repeated stratified (group) k-fold and label permutations for ``labels`` [items].

    Folds: clusters (groups, else items) are dealt to folds by sklearn's StratifiedKFold
    on their stratum, so a group never straddles train and test and every fold keeps the
    condition balance. (sklearn's StratifiedGroupKFold would do too, but costs ~25 ms per
    split and a plan needs repeats x (1 + n_permutations) of them.)

    Permutations (``cogsae.contrasts.permute_labels``) only exchange what is exchangeable
    under "labels carry no information": labels over items without groups; whole groups'
    labels among groups when every group is label-pure; labels within each group when a
    group holds both conditions (matched designs; label-pure groups then stay fixed, which
    keeps the test exact at the cost of some power).

    Defaults: 5 folds x 2 repeats (repeats average out the luck of one partition) and
    200 permutations (smallest attainable p = 1/201 < 0.05 / 10, so Holm over ~10
    readouts can still reject; :func:`evaluate` stops early for readouts that are null).
    """
    labels = check_labels(labels, len(labels)).astype(np.int64)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != labels.shape:
            raise CogsaeError("groups must give one group per item", field="group")
    clusters = _clusters(labels.size, groups)
    n_clusters = int(clusters.max()) + 1
    if n_splits < 2 or n_clusters < n_splits:
        raise CogsaeError(
            f"need 2 <= n_splits <= number of items/groups ({n_clusters}), got {n_splits}",
            field="n_splits",
        )
    perm_rng = np.random.default_rng([seed, _PERMS])
    labels_perm = np.stack(
        [labels] + [permute_labels(labels, perm_rng, groups) for _ in range(n_permutations)]
    )
    fold_seeds = np.random.default_rng([seed, _FOLDS]).integers(2**31 - 1, size=n_repeats)
    fold_ids = np.stack([_fold_ids(lab, clusters, n_splits, fold_seeds) for lab in labels_perm])
    _check_training_sets(labels_perm, fold_ids, n_splits)
    return CVPlan(labels, groups, n_splits, labels_perm, fold_ids, seed)


def _clusters(n_items: int, groups: np.ndarray | None) -> np.ndarray:
    """[items] int cluster index: the item's group, or the item itself without groups."""
    if groups is None:
        return np.arange(n_items)
    return np.unique(groups, return_inverse=True)[1].ravel()


def _cluster_strata(labels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """[n_clusters] stratum of each cluster: its label if label-pure, else 2 (mixed)."""
    size = np.bincount(clusters)
    pos = np.bincount(clusters, weights=labels)
    return np.where(pos == 0, 0, np.where(pos == size, 1, 2))


def _fold_ids(
    labels: np.ndarray, clusters: np.ndarray, n_splits: int, seeds: np.ndarray
) -> np.ndarray:
    """[repeats, items] test-fold index of each item, clusters stratified by their stratum."""
    strata = _cluster_strata(labels, clusters)
    out = np.empty((seeds.size, labels.size), dtype=np.int64)
    cluster_fold = np.empty(strata.size, dtype=np.int64)
    for r, seed in enumerate(seeds):
        splitter = StratifiedKFold(n_splits, shuffle=True, random_state=int(seed))
        for f, (_, test) in enumerate(splitter.split(strata, strata)):
            cluster_fold[test] = f
        out[r] = cluster_fold[clusters]
    return out


def _check_training_sets(labels_perm: np.ndarray, fold_ids: np.ndarray, n_splits: int) -> None:
    """Every training set (all permutations, repeats, folds) must hold both conditions."""
    for labels, ids in zip(labels_perm, fold_ids, strict=True):
        for fold in ids:
            n_test = np.bincount(fold, minlength=n_splits)
            pos_test = np.bincount(fold, weights=labels, minlength=n_splits)
            pos_train = labels.sum() - pos_test
            if np.any(pos_train == 0) or np.any(pos_train == labels.size - n_test):
                raise CogsaeError(
                    "a training fold lacks one condition; use fewer folds or more items/groups",
                    field="n_splits",
                )


@dataclass(frozen=True)
class LinearModel:
    """A linear readout on window means: decision = ((x[units] - mean) / scale) @ coef + intercept.

    Positive decision = target condition; threshold 0 is the class boundary (the logistic
    fits use balanced class weights, the difference of means puts it at the midpoint).

    Attributes:
        units: [m] int, indices of the units used (into the space's units).
        mean: [m] standardization centre fitted on training items (0 when unstandardized).
        scale: [m] standardization scale fitted on training items (1 when unstandardized).
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
class TrainingSet:
    """The training items of one outer fold: all that a readout may look at.

    Attributes:
        idx: [n_train] indices of the training items.
        labels: [n_train] their labels (permuted ones in a null replicate).
    ``values``, ``mask`` and ``means`` are sliced from the private full arrays lazily and
    once, then shared by every readout of the fold.
    """

    _acts: Activations
    _means: np.ndarray
    idx: np.ndarray
    labels: np.ndarray

    @property
    def n_units(self) -> int:
        return int(self._means.shape[1])

    @cached_property
    def values(self) -> np.ndarray:
        """[n_train, positions, units] windowed activations."""
        return self._acts.values[self.idx]

    @cached_property
    def mask(self) -> np.ndarray:
        """[n_train, positions] validity mask."""
        return self._acts.mask[self.idx]

    @cached_property
    def means(self) -> np.ndarray:
        """[n_train, units] window means."""
        return self._means[self.idx]


class Readout(Protocol):
    """Anything that fits a :class:`LinearModel` on a :class:`TrainingSet`; ``name`` labels it."""

    @property
    def name(self) -> str: ...

    def fit(self, train: TrainingSet, rng: np.random.Generator) -> LinearModel: ...


def _logistic(
    means: np.ndarray,
    labels: np.ndarray,
    units: np.ndarray,
    *,
    C: float,
    l1: bool,
    rng: np.random.Generator,
) -> LinearModel:
    """Standardize ``means[:, units]`` and fit a class-balanced L1 or L2 logistic regression.

    liblinear: L1 in the primal (k is small), L2 in the dual (fast when units >> items).
    Balanced per-item weights (n / (2 n_class)), numpy standardization (sklearn's
    StandardScaler rule: zero spread -> scale 1) and skipped parameter/finiteness checks
    (``evaluate`` checks finiteness once) halve sklearn's per-fit overhead, which
    dominates ~10^4 fits of ~100 x 8 problems.
    """
    x = means[:, units].astype(np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    weight = labels.size / (2.0 * np.bincount(labels, minlength=2))[labels]
    clf = LogisticRegression(
        C=C,
        l1_ratio=1.0 if l1 else 0.0,
        solver="liblinear",
        dual=not l1,
        random_state=int(rng.integers(2**31 - 1)),
    )
    with config_context(assume_finite=True, skip_parameter_validation=True):
        clf.fit((x - mean) / scale, labels, sample_weight=weight)
    return LinearModel(units, mean, scale, clf.coef_[0], float(clf.intercept_[0]))


@dataclass(frozen=True)
class SelectedL1:
    """k units chosen by a selection method on the training items -> standardize -> L1 logistic.

    C is fixed (default 1.0, i.e. mild shrinkage for ~100 items on k = 8 standardized
    units) rather than tuned by an inner CV: inner CV would multiply the cost by its
    folds, k is already small, and validity does not depend on C because the permutation
    null re-runs the same fixed procedure. ``selector`` defaults to
    ``cogsae.selection.SELECTORS[method]``; method "random" is the k-random-units baseline.
    """

    method: str
    k: int = 8
    C: float = 1.0
    selector: Callable[..., Selection] | None = None

    @property
    def name(self) -> str:
        return self.method

    def fit(self, train: TrainingSet, rng: np.random.Generator) -> LinearModel:
        select = self.selector or SELECTORS[self.method]
        units = np.asarray(
            select(train.values, train.mask, train.labels, self.k, rng=rng).units, dtype=np.int64
        )
        n_units = train.n_units
        if units.size == 0 or units.size > self.k or np.unique(units).size != units.size:
            raise ValueError(f"selector {self.method!r} returned {units.size} units for k={self.k}")
        if units.min() < 0 or units.max() >= n_units:
            raise ValueError(f"selector {self.method!r} returned a unit outside [0, {n_units})")
        return _logistic(train.means, train.labels, units, C=self.C, l1=True, rng=rng)


@dataclass(frozen=True)
class DiffMeans:
    """Baseline: project window means of all units on mean(target) - mean(reference).

    Both means are computed on the training items; the threshold sits at the midpoint of
    the two class means' projections. No standardization (mean 0, scale 1).
    """

    name: str = "diff_means"

    def fit(self, train: TrainingSet, rng: np.random.Generator) -> LinearModel:
        target = train.means[train.labels == 1].mean(axis=0, dtype=np.float64)
        reference = train.means[train.labels == 0].mean(axis=0, dtype=np.float64)
        direction = target - reference
        n_units = direction.size
        return LinearModel(
            np.arange(n_units),
            np.zeros(n_units),
            np.ones(n_units),
            direction,
            float(-direction @ (target + reference) / 2),
        )


@dataclass(frozen=True)
class DenseL2:
    """Baseline: standardized all-unit L2 logistic probe (fixed C, class-balanced)."""

    name: str = "dense_l2"
    C: float = 1.0

    def fit(self, train: TrainingSet, rng: np.random.Generator) -> LinearModel:
        units = np.arange(train.n_units)
        return _logistic(train.means, train.labels, units, C=self.C, l1=False, rng=rng)


@dataclass
class MethodResult:
    """Held-out evaluation of one readout in one space.

    Attributes:
        method: readout name (a selection method, "random", "diff_means", "dense_l2").
        space: unit space ("raw", "sae", ...).
        k: number of units the final model uses.
        auroc: held-out AUROC, pooled over folds within a repeat, averaged over repeats.
        auroc_repeats: [repeats] the per-repeat AUROCs.
        auroc_ci: percentile bootstrap CI over clusters, held-out scores held fixed.
        balanced_accuracy: held-out balanced accuracy at decision 0, averaged over repeats.
        balanced_accuracy_ci: its bootstrap CI (same resamples).
        p_value: label-permutation p of ``auroc`` (selection re-run in every permutation),
            H0: labels are exchangeable with the activations within the plan's clusters.
            (1 + #{null >= observed}) / (1 + n) after all n permutations, or h / L when
            stopped early after h exceedances in L permutations (Besag & Clifford 1991).
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
    auroc_repeats: np.ndarray
    auroc_ci: tuple[float, float]
    balanced_accuracy: float
    balanced_accuracy_ci: tuple[float, float]
    p_value: float
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
    readouts: Sequence[Readout],
    acts: Activations,
    plan: CVPlan,
    *,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    stop_after: int | None = 10,
    progress: bool = True,
) -> list[MethodResult]:
    """Cross-validate every readout on ``acts`` over ``plan``'s folds and permutations.

    Window means are computed once; within a fold the training slice of ``acts.values``
    (as float32) is taken once and shared by all readouts, which see the same folds and
    the same permuted labels. Each permutation re-runs the full procedure (selection
    included) on the permuted labels and the folds derived from them. A readout stops
    permuting once its null has reached the observed AUROC ``stop_after`` times (Besag &
    Clifford 1991 sequential p-value, valid at every stopping time; None runs all
    permutations): a clearly null readout then costs ~2 x stop_after permutations.

    Bootstrap CIs resample the held-out scores by cluster, stratified by condition when
    clusters are label-pure (both conditions always present), with the same resamples
    for every readout of the plan; the fold models are held fixed.
    """
    names = [readout.name for readout in readouts]
    if len(set(names)) != len(names):
        raise CogsaeError(f"readout names must be unique, got {names}")
    if acts.n_items != plan.n_items:
        raise CogsaeError(f"{acts.n_items} items in activations but {plan.n_items} in the plan")
    # Selectors get float32 slices: numpy arithmetic on float16 is ~6x slower (window mean).
    full = Activations(np.asarray(acts.values, dtype=np.float32), acts.mask, acts.space)
    means = full.window_mean()
    if not np.isfinite(means).all():
        raise CogsaeError(f"non-finite window-mean activations in space {acts.space!r}")
    exceed = np.zeros(len(readouts), dtype=np.int64)
    active = np.ones(len(readouts), dtype=bool)
    nulls: list[list[float]] = [[] for _ in readouts]
    bar = tqdm(
        range(plan.n_permutations + 1), desc=f"ensembles [{acts.space}]", disable=not progress
    )
    for b in bar:
        run = np.flatnonzero(active)
        scores, units = _cross_validate([readouts[i] for i in run], full, means, plan, b)
        stat = _auroc(scores, plan.labels_perm[b]).mean(axis=-1)
        if b == 0:
            observed, observed_scores, observed_units = stat, scores, units
            continue
        for i, value in zip(run, stat, strict=True):
            nulls[i].append(float(value))
        exceed[run] += stat >= observed[run] - _TIE
        if stop_after is not None:
            active &= exceed < stop_after
        bar.set_postfix(active=int(active.sum()))
        if not active.any():
            break
    everything = TrainingSet(full, means, np.arange(plan.n_items), plan.labels)
    boot_auroc, boot_bacc = _bootstrap(observed_scores, plan, n_bootstrap)
    results = []
    for i, readout in enumerate(readouts):
        model = readout.fit(everything, np.random.default_rng([plan.seed, _FINAL]))
        auroc_repeats = _auroc(observed_scores[i], plan.labels)
        n_done = len(nulls[i])
        stopped = stop_after is not None and exceed[i] >= stop_after
        results.append(
            MethodResult(
                method=readout.name,
                space=acts.space,
                k=int(model.units.size),
                auroc=float(auroc_repeats.mean()),
                auroc_repeats=auroc_repeats,
                auroc_ci=_percentile_ci(boot_auroc[:, i].mean(axis=-1), level),
                balanced_accuracy=float(balanced_accuracy(observed_scores[i], plan.labels).mean()),
                balanced_accuracy_ci=_percentile_ci(boot_bacc[:, i].mean(axis=-1), level),
                p_value=float(exceed[i] / n_done if stopped else (1 + exceed[i]) / (1 + n_done)),
                null_aurocs=np.asarray(nulls[i]),
                selected_units=observed_units[i],
                stability=_mean_jaccard(observed_units[i], means.shape[1]),
                scores=observed_scores[i],
                model=model,
                plan=plan,
            )
        )
    return results


def _cross_validate(
    readouts: Sequence[Readout], acts: Activations, means: np.ndarray, plan: CVPlan, b: int
) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """Held-out decisions [readouts, repeats, items] and per-fold units under permutation b.

    The generator handed to a readout depends only on (seed, repeat, fold), so the
    procedure is the same deterministic function of the labels in every permutation.
    """
    labels = plan.labels_perm[b]
    scores = np.empty((len(readouts), plan.n_repeats, plan.n_items))
    units: list[list[np.ndarray]] = [[] for _ in readouts]
    for r, folds in enumerate(plan.splits(b)):
        for f, (train, test) in enumerate(folds):
            fold = TrainingSet(acts, means, train, labels[train])
            for i, readout in enumerate(readouts):
                model = readout.fit(fold, np.random.default_rng([plan.seed, _FIT, r, f]))
                scores[i, r, test] = model.decision_function(means[test])
                units[i].append(model.units)
    return scores, units


def _auroc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``scores`` [..., items] for ``labels`` [items] -> [...].

    ``cogsae.contrasts.auroc`` (rank-based, ties 1/2), batched over all leading axes.
    """
    return auroc(scores.reshape(-1, labels.size).T, labels).reshape(scores.shape[:-1])


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Balanced accuracy of decisions ``scores`` [..., items] > 0 for ``labels`` -> [...]."""
    hit = (scores > 0) == (labels == 1)
    return (hit[..., labels == 1].mean(axis=-1) + hit[..., labels == 0].mean(axis=-1)) / 2


def _bootstrap(scores: np.ndarray, plan: CVPlan, n: int) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and balanced accuracy [n, ...] of held-out ``scores`` [..., items] on n resamples.

    Resamples are ``cogsae.contrasts.bootstrap_indices`` (groups whole, stratified by
    condition when groups are label-pure) drawn from the plan's seed, so every readout and
    every comparison of a plan sees the same resamples; the fold models stay fixed.
    """
    rng = np.random.default_rng([plan.seed, _BOOT])
    aurocs, baccs = [], []
    for _ in range(n):
        idx = bootstrap_indices(plan.labels, rng, plan.groups)
        aurocs.append(_auroc(scores[..., idx], plan.labels[idx]))
        baccs.append(balanced_accuracy(scores[..., idx], plan.labels[idx]))
    return np.stack(aurocs), np.stack(baccs)


def _percentile_ci(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Two-sided percentile interval of bootstrap ``samples`` [n]."""
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _mean_jaccard(unit_sets: list[np.ndarray], n_units: int) -> float:
    """Mean pairwise Jaccard index of the unit sets (1 = the same units in every fold)."""
    member = np.zeros((len(unit_sets), n_units))
    for i, units in enumerate(unit_sets):
        member[i, units] = 1
    inter = member @ member.T
    sizes = member.sum(axis=1)
    jaccard = inter / (sizes[:, None] + sizes[None, :] - inter)
    return float(jaccard[np.triu_indices(len(unit_sets), 1)].mean())


def compare(
    results: Sequence[MethodResult],
    pairs: Sequence[tuple[str, str]],
    *,
    n_resamples: int = 2000,
    level: float = 0.95,
    correction: str = "holm",
) -> pd.DataFrame:
    """Paired tests of held-out AUROC between readouts evaluated on the same plan.

    ``pairs`` name results by ``MethodResult.label`` ("space:method"). For each (a, b):
    - diff = AUROC_a - AUROC_b (mean over repeats of per-repeat differences);
    - CI: paired percentile bootstrap over clusters (both readouts scored on the same
      resamples as in :func:`evaluate`);
    - p: two-sided paired permutation test (Venkatraman & Begg 1996; Bandos, Rockette &
      Gur 2005). Each readout's held-out scores are rank-transformed within a repeat
      (AUROC is rank-invariant; ranks put the two readouts on one scale), then a random
      subset of clusters swaps its a/b ranks, in all repeats alike. H0: the two ranks of
      each cluster are exchangeable (which implies equal AUROC); assumes clusters are
      independent. p = (1 + #{|null diff| >= |diff|}) / (1 + n_resamples).
    Both the CI and the test hold the fitted fold models fixed: they compare how well
    the two cross-validated readouts ranked these items, not variability over training
    sets (no unbiased estimate of that exists for k-fold CV, Bengio & Grandvalet 2004).
    A readout compared with itself gives diff 0, CI [0, 0] and p 1.

    p_corrected: ``multipletests(p, method=correction)`` over all pairs (default Holm,
    family-wise, since method comparisons are the confirmatory claims).

    Returns one row per pair: a, b, auroc_a, auroc_b, diff, ci_low, ci_high, p,
    p_corrected, correction.
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
    labels = sorted({label for pair in pairs for label in pair})
    column = {label: i for i, label in enumerate(labels)}
    boot = _bootstrap(np.stack([by_label[label].scores for label in labels]), plan, n_resamples)[0]
    flip = np.random.default_rng([plan.seed, _SWAP]).random((n_resamples, plan.clusters.max() + 1))
    swap = (flip < 0.5)[:, plan.clusters][:, None, :]
    rows = []
    for a, b in pairs:
        res_a, res_b = by_label[a], by_label[b]
        diff = res_a.auroc - res_b.auroc
        ci_low, ci_high = _percentile_ci((boot[:, column[a]] - boot[:, column[b]]).mean(-1), level)
        rank_a, rank_b = rankdata(res_a.scores, axis=-1), rankdata(res_b.scores, axis=-1)
        null = _auroc(np.where(swap, rank_b, rank_a), plan.labels) - _auroc(
            np.where(swap, rank_a, rank_b), plan.labels
        )
        extreme = np.abs(null.mean(axis=-1)) >= abs(diff) - _TIE
        rows.append(
            {
                "a": a,
                "b": b,
                "auroc_a": res_a.auroc,
                "auroc_b": res_b.auroc,
                "diff": diff,
                "ci_low": ci_low,
                "ci_high": ci_high,
                "p": (1 + extreme.sum()) / (1 + n_resamples),
            }
        )
    table = pd.DataFrame(rows)
    table["p_corrected"] = multipletests(table["p"], method=correction)[1]
    table["correction"] = correction
    return table
