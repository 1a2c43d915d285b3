"""Representational similarity analysis of a unit set (population RSA).

Population RSA (docs/methods.md, "Population RSA"):
- ``unit_rdm`` / ``category_model_rdm`` / ``categorical_rsa``: an item x item RDM of a unit
  set, compared with the category model RDM, on rsatoolbox objects so results can be
  passed on to rsatoolbox (inference, plotting).
- ``discriminative_rsa``: cross-validated, diagonally noise-normalized distances
  (crossnobis / linear discriminant contrast) between condition means, computed in item
  space so it works at SAE widths without a [units x units] matrix.

Per-unit RSA scores for feature selection are in ``cogsae.analysis.unit_rsa``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rsatoolbox.data import Dataset
from rsatoolbox.model import ModelFixed
from rsatoolbox.rdm import RDMs, calc_rdm, compare
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from cogsae import streams
from cogsae.activations import window_mean
from cogsae.analysis.contrasts import check_labels
from cogsae.analysis.resampling import bootstrap_indices, permute_labels
from cogsae.errors import CogsaeError
from cogsae.streams import Stream

# rsatoolbox names of the RDM comparison methods; "pearson" is rsatoolbox's "corr".
_COMPARE_METHODS = {
    "rho-a": "rho-a",
    "pearson": "corr",
    "spearman": "spearman",
    "tau-a": "tau-a",
    "kendall": "kendall",
    "cosine": "cosine",
}
_RDM_METRICS = ("correlation", "euclidean")
# Noise variances below this fraction of the largest one get zero weight (numerical guard).
_VARIANCE_FLOOR = 1e-12


def default_metric(space: str) -> str:
    """RDM metric for a unit space: correlation distance for dense "raw" residual dims,
    (squared) Euclidean for SAE features, where all-zero rows make correlation undefined."""
    return "correlation" if space == "raw" else "euclidean"


def unit_rdm(
    means: np.ndarray,
    metric: str | None = None,
    *,
    space: str = "raw",
    labels: np.ndarray | None = None,
) -> RDMs:
    """Item x item RDM of a unit set, as an rsatoolbox ``RDMs`` (one RDM, one pattern per item).

    Args:
        means: [items, units] window-mean activations.
        metric: "correlation" (1 - Pearson r between item patterns) or "euclidean"
            (rsatoolbox's squared Euclidean distance divided by the number of units);
            default by ``space`` (see ``default_metric``).
        space: the unit space, used only for the default metric.
        labels: optional [items] condition labels, stored as pattern descriptor "condition".
    """
    metric = metric or default_metric(space)
    if metric not in _RDM_METRICS:
        raise CogsaeError(
            f"unknown RDM metric {metric!r}; use one of {_RDM_METRICS}", field="metric"
        )
    x = np.asarray(means, dtype=np.float64)
    if metric == "correlation" and np.any(x.std(axis=1) == 0):
        raise CogsaeError(
            "correlation distance is undefined for an item whose units are all equal "
            "(e.g. an all-zero SAE row); use metric='euclidean'",
            field="metric",
        )
    rdms = calc_rdm(Dataset(x), method=metric)
    if labels is not None:
        rdms.pattern_descriptors["condition"] = list(np.asarray(labels))
    return rdms


def category_model_rdm(labels: np.ndarray) -> ModelFixed:
    """rsatoolbox ``ModelFixed`` predicting 0 for same-condition pairs and 1 for different."""
    labels = np.asarray(labels)
    return ModelFixed("category", (labels[:, None] != labels[None, :]).astype(np.float64))


@dataclass
class CategoricalRSA:
    """Population categorical RSA of one unit set.

    Attributes:
        r: RDM-model fit (``method``) of the data RDM with the category model RDM.
        p: one-sided permutation p of r (null: condition labels exchangeable), from
            permuting item labels (rows and columns of the RDM together, never pair values).
        ci_low, ci_high: percentile bootstrap CI of r over items (groups when given).
        null: [n_permutations] r under permuted labels.
        bootstrap: [n_bootstrap] r over bootstrap samples of items.
        method: RDM comparison method ("rho-a", "pearson", ...).
        metric: RDM metric of the data RDM.
        rdms: the data RDM (rsatoolbox ``RDMs``).
        model: the category model (rsatoolbox ``ModelFixed``).
    """

    r: float
    p: float
    ci_low: float
    ci_high: float
    null: np.ndarray
    bootstrap: np.ndarray
    method: str
    metric: str
    rdms: RDMs
    model: ModelFixed


def categorical_rsa(
    means: np.ndarray,
    labels: np.ndarray,
    *,
    method: str = "rho-a",
    metric: str | None = None,
    space: str = "raw",
    groups: np.ndarray | None = None,
    blocks: np.ndarray | None = None,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> CategoricalRSA:
    """Fit of a unit set's item RDM to the category model RDM, with permutation p and bootstrap CI.

    Args:
        means: [items, units] window-mean activations of the unit set.
        labels: [items] 1 target / 0 reference.
        method: "rho-a" (tie-aware rank correlation, default: the category model is all
            ties), "pearson", or another ``rsatoolbox.rdm.compare`` method.
        metric, space: RDM metric, see ``unit_rdm``.
        groups: [items] optional groups; permutations and bootstrap keep groups whole.
        blocks: [items] optional permutation blocks (factorial designs: template x the other
            factors, ``cogsae.analysis.resampling.permutation_blocks``); labels move only
            within a block.
        n_permutations: label permutations for p = (1 + #{null >= r}) / (1 + n).
        n_bootstrap: item bootstrap samples for the CI. Resampled copies of one item would
            form zero-distance "same item" pairs that no model can miss, so those pairs are
            dropped (NaN, as rsatoolbox's ``subsample_pattern`` does).
        ci: CI coverage.
        seed: root seed of permutations and bootstrap (stream ``Stream.CATEGORICAL_RSA``).
    """
    if method not in _COMPARE_METHODS:
        raise CogsaeError(
            f"unknown method {method!r}; use one of {list(_COMPARE_METHODS)}", field="method"
        )
    x = np.asarray(means, dtype=np.float64)
    labels = check_labels(labels, x.shape[0])
    rsa_method = _COMPARE_METHODS[method]
    metric = metric or default_metric(space)
    rdms = unit_rdm(x, metric, labels=labels)
    model = category_model_rdm(labels)
    r = float(compare(rdms, model.rdm_obj, method=rsa_method)[0, 0])
    rng = streams.rng(seed, Stream.CATEGORICAL_RSA)
    iu, ju = np.triu_indices(len(labels), k=1)

    null = np.empty(0)
    if n_permutations:
        perms = np.stack(
            [permute_labels(labels, rng, groups, blocks=blocks) for _ in range(n_permutations)]
        )
        null = compare(rdms, (perms[:, iu] != perms[:, ju]).astype(np.float64), rsa_method)[0]

    matrix = rdms.get_matrices()[0]
    boot = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        idx = bootstrap_indices(labels, rng, groups)  # groups of unequal size: any length
        bi, bj = np.triu_indices(idx.size, k=1)
        same_item = idx[bi] == idx[bj]
        data = np.where(same_item, np.nan, matrix[idx[bi], idx[bj]])
        model_vec = np.where(same_item, np.nan, labels[idx[bi]] != labels[idx[bj]])
        boot[b] = compare(data, model_vec, method=rsa_method)[0, 0]
    alpha = (1.0 - ci) / 2.0
    low, high = np.nanquantile(boot, [alpha, 1.0 - alpha]) if n_bootstrap else (np.nan, np.nan)
    p = (1.0 + np.sum(null >= r)) / (1.0 + n_permutations) if n_permutations else np.nan
    return CategoricalRSA(
        r, float(p), float(low), float(high), null, boot, method, metric, rdms, model
    )


@dataclass
class DiscriminativeRSA:
    """Cross-validated (crossnobis, diagonal noise) distances of a unit set.

    Distances are squared Mahalanobis distances with a diagonal noise model, divided by
    the number of units (rsatoolbox's convention); each is ~0 in expectation when the
    two sides do not differ, and can be negative.

    Attributes:
        between: target vs reference distance, averaged over test folds.
        within: mean of ``within_target`` and ``within_reference``.
        within_target, within_reference: distance between two disjoint halves (of items
            or groups) of one condition: the size a distance has without a condition effect.
        difference: between - within.
        p_between: permutation p for between > 0.
        p_difference: permutation p for between > within.
        edi: exemplar discriminability index (mean between-item minus mean same-item
            cross-validated distance, position halves as the two measurements); NaN without
            a position axis.
        fold_between: [n_folds] between-condition distance of each test fold.
        null_between, null_difference: [n_permutations] statistics under permuted labels.
        n_folds: number of cross-validation folds.
    """

    between: float
    within: float
    within_target: float
    within_reference: float
    difference: float
    p_between: float
    p_difference: float
    edi: float
    fold_between: np.ndarray
    null_between: np.ndarray
    null_difference: np.ndarray
    n_folds: int


def discriminative_rsa(
    values: np.ndarray,
    labels: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    blocks: np.ndarray | None = None,
    n_folds: int = 5,
    n_permutations: int = 1000,
    seed: int = 0,
) -> DiscriminativeRSA:
    """Cross-validated distance between condition means and within conditions (crossnobis / LDC).

    Items are partitioned into ``n_folds`` folds, stratified by condition, keeping each
    group in one fold (sklearn ``StratifiedKFold`` / ``StratifiedGroupKFold``). For each test
    fold, the training folds give the condition-mean difference and a per-unit noise
    variance (pooled residual variance of training items about their condition means,
    df = n_train - 2); the distance is sum_u d_train,u d_test,u / var_u / n_units. This is
    rsatoolbox's leave-one-fold-out crossnobis with a diagonal precision (equivalent to
    averaging over fold pairs when folds are balanced): training and test are independent,
    so the estimate is unbiased, ~0 when the conditions do not differ. Units without
    training variance get zero weight.

    The within-condition distance applies the same estimator to two random disjoint halves
    of each condition inside every fold (same folds, same noise), giving the size of a
    distance between exchangeable item sets.

    Tests use label permutation (within folds, groups kept whole, see ``permute_labels``),
    recomputing halves and noise each time: p = (1 + #{null >= observed}) / (1 + n).
    A t-test over folds is not used because fold estimates share training data and are
    dependent, which makes it anti-conservative.

    Args:
        values: [items, units] window means, or [items, positions, units] with ``mask``
            (window means are taken; positions also give the EDI's two measurements: each
            item's even- and odd-ranked valid positions).
        labels: [items] 1 target / 0 reference.
        mask: [items, positions] validity mask, required with 3-D values.
        groups: [items] optional group ids (not independent items).
        blocks: [items] optional permutation blocks (factorial designs, see
            ``categorical_rsa``); permutations stay within fold x block.
        n_folds: number of folds; each fold needs two items (groups) per condition.
        n_permutations: label permutations for the p-values (0: p is NaN).
        seed: root seed of folds, halves and permutations (``Stream.DISCRIMINATIVE_RSA``).
    """
    values = np.asarray(values)
    if values.ndim == 3:
        if mask is None:
            raise CogsaeError("3-D values need a mask [items, positions]", field="mask")
        x = window_mean(values, mask).astype(np.float64)
    elif values.ndim == 2:
        x = values.astype(np.float64)
    else:
        raise CogsaeError(f"values must be 2-D or 3-D, got shape {values.shape}", field="values")
    labels = check_labels(labels, x.shape[0], min_per_condition=2 * n_folds)
    rng = streams.rng(seed, Stream.DISCRIMINATIVE_RSA)
    folds = _stratified_folds(labels, groups, n_folds, rng)
    n_units = x.shape[1]
    crossnobis = _Crossnobis(x[:, x.std(axis=0) > 0], folds, n_units)

    def halves_of(perm_labels: np.ndarray) -> np.ndarray:
        return _split_halves(perm_labels, folds, groups, rng)

    fold_between, within_t, within_r = (
        d[0] for d in crossnobis(labels[None], halves_of(labels)[None])
    )
    between, within = fold_between.mean(), (within_t.mean() + within_r.mean()) / 2
    null_between, null_difference = np.empty(n_permutations), np.empty(n_permutations)
    batch = max(1, 2**23 // (n_folds * 6 * max(crossnobis.x.shape[1], 1)))
    for start in range(0, n_permutations, batch):
        perms = [
            permute_labels(labels, rng, groups, strata=folds, blocks=blocks)
            for _ in range(min(batch, n_permutations - start))
        ]
        fb, wt, wr = crossnobis(np.stack(perms), np.stack([halves_of(p) for p in perms]))
        null_between[start : start + len(perms)] = fb.mean(1)
        null_difference[start : start + len(perms)] = fb.mean(1) - (wt.mean(1) + wr.mean(1)) / 2
    p_between, p_difference = (
        ((1.0 + np.sum(null >= obs)) / (1.0 + n_permutations) if n_permutations else np.nan)
        for null, obs in ((null_between, between), (null_difference, between - within))
    )
    edi = np.nan
    if values.ndim == 3:
        edi = _exemplar_discriminability(values, mask, labels, groups, rng, n_units)
    return DiscriminativeRSA(
        between=float(between),
        within=float(within),
        within_target=float(within_t.mean()),
        within_reference=float(within_r.mean()),
        difference=float(between - within),
        p_between=float(p_between),
        p_difference=float(p_difference),
        edi=float(edi),
        fold_between=fold_between,
        null_between=null_between,
        null_difference=null_difference,
        n_folds=n_folds,
    )


def _stratified_folds(
    labels: np.ndarray, groups: np.ndarray | None, n_folds: int, rng: np.random.Generator
) -> np.ndarray:
    """[items] fold id: stratified by condition, each group in a single fold."""
    state = int(rng.integers(2**31 - 1))
    if groups is None:
        splitter = StratifiedKFold(n_folds, shuffle=True, random_state=state)
    else:
        splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=state)
    folds = np.empty(len(labels), dtype=np.int64)
    for f, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        folds[test] = f
    return folds


def _split_halves(
    labels: np.ndarray, folds: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """[items] 0/1: a random split of every (fold, condition) cell into two halves by group."""
    blocks = np.arange(len(labels)) if groups is None else np.unique(groups, return_inverse=True)[1]
    halves = np.empty(len(labels), dtype=np.int64)
    for cell in range(2 * (int(folds.max()) + 1)):
        idx = np.flatnonzero(folds * 2 + labels == cell)
        members = np.unique(blocks[idx])
        if len(members) < 2:
            raise CogsaeError(
                "a fold holds fewer than two items (groups) of a condition; lower n_folds",
                field="n_folds",
            )
        side = np.empty(blocks.max() + 1, dtype=np.int64)
        side[rng.permutation(members)] = np.arange(len(members)) % 2
        halves[idx] = side[blocks[idx]]
    return halves


class _Crossnobis:
    """Leave-one-fold-out diagonal crossnobis for batches of labelings, with fixed folds.

    Every fold-condition(-half) mean difference is a linear function of the items, so one
    matrix product [batch x folds x 6, items] @ [items, units] gives, per test fold, the
    training and test differences of the between and the two within contrasts. The
    training residual variance per unit (about the training condition means) is
    TSS - n1 n0 / n (m1 - m0)^2, with the label-free total sum of squares TSS about the
    training mean computed once.
    """

    def __init__(self, x: np.ndarray, folds: np.ndarray, n_units: int) -> None:
        """x: [items, units] window means of the units with variance; n_units: all units."""
        self.n_folds = int(folds.max()) + 1
        self.test = folds[None, :] == np.arange(self.n_folds)[:, None]  # [folds, items]
        x = x - x.mean(axis=0)
        self.x = x.astype(np.float32)
        train = (~self.test).astype(np.float64)
        n_train = train.sum(1, keepdims=True)
        self.tss = train @ (x * x) - (train @ x) ** 2 / n_train  # [folds, units]
        self.df = n_train - 2
        self.n_units = n_units

    def __call__(
        self, labels: np.ndarray, halves: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """[batch, folds] between, within-target and within-reference distances.

        labels, halves: [batch, items] condition labels and within-condition half ids.
        """
        test, train = self.test[None], ~self.test[None]
        target = (labels == 1)[:, None, :]
        first = (halves == 0)[:, None, :]
        sides = [(target, ~target)] + [(cond & first, cond & ~first) for cond in (target, ~target)]
        rows = np.stack(
            [
                _mean_difference_weights(part & a, part & b)
                for a, b in sides
                for part in (train, test)
            ],
            axis=2,
        )  # [batch, folds, 6, items]: (train, test) x (between, within target, within ref)
        batch, n_folds, n_rows, n_items = rows.shape
        diff = (rows.reshape(-1, n_items).astype(np.float32) @ self.x).reshape(
            batch, n_folds, n_rows, -1
        )
        train_diff = diff[:, :, 0].astype(np.float64)
        n1, n0 = (train & target).sum(-1), (train & ~target).sum(-1)
        rss = self.tss[None] - (n1 * n0 / (n1 + n0))[..., None] * train_diff**2
        var = np.maximum(rss, 0.0) / self.df[None]
        floor = _VARIANCE_FLOOR * var.max(axis=-1, keepdims=True, initial=0.0)
        precision = np.where(var > floor, 1.0 / np.maximum(var, floor), 0.0) / self.n_units
        between, within_t, within_r = (
            (diff[:, :, 2 * s] * diff[:, :, 2 * s + 1] * precision).sum(-1) for s in range(3)
        )
        return between, within_t, within_r


def _mean_difference_weights(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Item weights of mean(items in a) - mean(items in b), for boolean masks [..., items]."""
    return a / a.sum(-1, keepdims=True) - b / b.sum(-1, keepdims=True)


def _exemplar_discriminability(
    values: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    rng: np.random.Generator,
    n_units: int,
) -> float:
    """EDI: mean cross-measurement distance between different items minus that of the same item.

    Each item's valid positions are split into even- and odd-ranked halves, giving two
    measurements a_i, b_i (window means; items with one valid position are skipped). With
    a diagonal noise precision w, D_ij = sum_u w_u (a_iu - b_ju)^2 / U and
    EDI = mean_{i != j} D_ij - mean_i D_ii, which estimates the mean squared distance
    between item patterns beyond measurement noise (> 0: items are discriminable).
    w must not depend on the items it weights (else EDI is biased by O(1/items)), so items
    are split into two halves by group within condition, w is the inverse pooled
    within-condition variance of one half's item means, applied to the other half, and
    the two halves' EDIs are averaged.
    """
    rank = np.cumsum(mask, axis=1) - 1
    single = mask.sum(1, keepdims=True) < 2  # such items are skipped; keep window_mean defined
    a = window_mean(values, mask & ((rank % 2 == 0) | single))
    b = window_mean(values, mask & ((rank % 2 == 1) | single))
    means = window_mean(values, mask).astype(np.float64)
    halves = _split_halves(labels, np.zeros(len(labels), dtype=np.int64), groups, rng)
    usable = mask.sum(1) >= 2
    edis = []
    for half in (0, 1):
        fit, test = halves != half, (halves == half) & usable
        if test.sum() < 2:
            return np.nan
        scale = np.sqrt(_noise_precision(means[fit], labels[fit]) / n_units)
        x, y = a[test] * scale, b[test] * scale
        n = len(x)
        total = n * (x * x).sum() + n * (y * y).sum() - 2 * x.sum(0) @ y.sum(0)
        same = ((x - y) ** 2).sum()
        edis.append((total - same) / (n * (n - 1)) - same / n)
    return float(np.mean(edis))


def _noise_precision(means: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[units] inverse pooled within-condition variance of item means (df = items - 2).

    Units without variance get precision 0.
    """
    resid = means.copy()
    for c in (0, 1):
        resid[labels == c] -= means[labels == c].mean(0)
    var = (resid**2).sum(0) / (len(labels) - 2)
    floor = _VARIANCE_FLOOR * np.max(var, initial=0.0)
    return np.where(var > floor, 1.0 / np.maximum(var, floor), 0.0)
