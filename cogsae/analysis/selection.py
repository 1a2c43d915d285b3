"""Unit selection methods with one shared signature, for cross-validated ensembles.

Every selector is ``f(values, mask, labels, k, *, rng) -> Selection`` with values
[items, positions, units], mask [items, positions] and labels [items] (1 target,
0 reference). A selector fits only on the items it is given: the caller passes training
items only (selection happens inside each outer fold). Units are ranked best first; ties
are broken by the lower unit index, so selection is deterministic (except ``random``,
which draws from ``rng``).

Representation: the default selectors work on WINDOW MEANS, the very representation the
readout (standardize + L1 logistic on window means) is fitted on, so selection cannot
prefer a unit for something the readout never sees (e.g. a feature whose firing position
shifts with sentence length). ``contrast`` and ``max_activation`` score each unit on its
own; the RSA selectors ``rsa_discriminative`` and ``rsa_categorical`` score the geometry
of the selected SET (greedy forward selection, ``cogsae.analysis.set_selection``),
because a per-unit RSA score on one value per item is a monotone function of the Welch t.
The per-position profile RSA of ``cogsae.analysis.unit_rsa.unit_rsa_scores`` stays
available as the named variants ``rsa_discriminative_profile`` and
``rsa_categorical_profile``.

Window-mean scores are closed-form functions of per-unit moments of the training items
(:class:`TrainingMoments`), so the cross-validation engine computes them for thousands of
training sets (folds x label permutations) with a few matrix products; the single-set
selectors below call the same formulas with one training set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from cogsae.activations import window_mean
from cogsae.analysis.contrasts import active_units, auroc, check_labels
from cogsae.analysis.set_selection import SET_SELECTORS
from cogsae.analysis.unit_rsa import unit_rsa_scores
from cogsae.constants import (
    CONTRAST,
    MAX_ACTIVATION,
    RANDOM,
    RSA_CATEGORICAL,
    RSA_CATEGORICAL_PROFILE,
    RSA_DISCRIMINATIVE,
    RSA_DISCRIMINATIVE_PROFILE,
    SET_SELECTION_POOL,
)
from cogsae.errors import CogsaeError

# A unit whose spread over the training items is below this (on globally standardized
# values) is constant there: it gets score 0 (RSA) or NaN (contrast, ranked last).
_CONSTANT_VAR = 1e-10


@dataclass
class Selection:
    """k selected units.

    Attributes:
        units: [k] int unit indices, ranked best first.
        scores: [k] float, the method's score of those units (0 for ``random``).
    """

    units: np.ndarray
    scores: np.ndarray


def top_k(scores: np.ndarray, k: int) -> Selection:
    """The k highest ``scores`` [units], best first; NaN ranks last, ties go to the lower index."""
    if not 1 <= k <= len(scores):
        raise CogsaeError(f"k must be between 1 and {len(scores)} units, got {k}", field="k")
    units = top_k_batch(scores[None, :], k)[0]
    return Selection(units, scores[units])


def top_k_batch(scores: np.ndarray, k: int) -> np.ndarray:
    """[sets, k] indices of the k highest of each row of ``scores`` [sets, units], best first.

    Same order as a stable argsort of -scores per row (NaN last, ties to the lower index),
    without sorting whole rows: argpartition finds the k-th value, ties at it go by index.
    """
    key = np.where(np.isnan(scores), -np.inf, scores)
    n_units = key.shape[1]
    if k >= n_units:
        return np.argsort(-key, axis=1, kind="stable")[:, :k]
    units = np.argpartition(-key, k - 1, axis=1)[:, :k]
    # Rows where the k-th value is tied with an unchosen unit: take the lowest indices.
    kth = np.take_along_axis(key, units, axis=1).min(axis=1, keepdims=True)
    tied = np.flatnonzero((key >= kth).sum(axis=1) > k)
    if tied.size:
        rows, row_kth = key[tied], kth[tied]
        ties = rows == row_kth
        need = k - (rows > row_kth).sum(axis=1, keepdims=True)
        chosen = (rows > row_kth) | (ties & (np.cumsum(ties, axis=1) <= need))
        units[tied] = np.nonzero(chosen)[1].reshape(-1, k)
    units = np.sort(units, axis=1)
    order = np.argsort(-np.take_along_axis(key, units, axis=1), axis=1, kind="stable")
    return np.take_along_axis(units, order, axis=1)


@dataclass
class Standardized:
    """Window means standardized over all items of an analysis (label-free, fold-invariant).

    Attributes:
        x: [items, units] float64 (means - centre) / scale; all window-mean scores are
            shift and scale invariant per unit, and centring keeps the moment sums accurate.
        centre: [units] mean over items.
        scale: [units] standard deviation over items (1 where a unit is constant).
    """

    x: np.ndarray
    centre: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, means: np.ndarray) -> Standardized:
        means = np.asarray(means, dtype=np.float64)
        centre = means.mean(axis=0)
        scale = means.std(axis=0)
        scale[scale == 0] = 1.0
        return cls((means - centre) / scale, centre, scale)

    @cached_property
    def powers(self) -> np.ndarray:
        """[4, items, units] float32 x, x^2, x^3, x^4 (the moment products run in float32:
        standardized values keep them accurate, and they are twice as fast as float64)."""
        x = self.x.astype(np.float32)
        return np.stack([x, x**2, x**3, x**4])


class TrainingMoments:
    """Per-unit moments of standardized window means over a batch of training sets.

    Args:
        data: the standardized window means of every item.
        train: [sets, items] bool, the training items of each set.
        labels: [sets, items] 0/1 labels of each set (permuted ones in a null replicate).

    Every quantity is a [sets, units] float32 tensor built from matrix products of the
    sets' target and reference indicators with x, x^2 (and x^3, x^4 for the categorical
    score), computed on first use and shared by every score of the batch. Set sizes
    (``n``, ``n_target``, ``n_reference``) are [sets, 1].
    """

    def __init__(self, data: Standardized, train: np.ndarray, labels: np.ndarray) -> None:
        self.data = data
        train = np.asarray(train, dtype=np.float32)
        self.target = train * np.asarray(labels, dtype=np.float32)
        self.reference = train - self.target
        self.n_target = self.target.sum(axis=1, keepdims=True)
        self.n_reference = self.reference.sum(axis=1, keepdims=True)
        self.n = self.n_target + self.n_reference

    @cached_property
    def _target_sums(self) -> np.ndarray:
        """[2, sets, units] sums of x and x^2 over each set's target items."""
        return self.target @ self.data.powers[:2]

    @cached_property
    def _reference_sums(self) -> np.ndarray:
        """[2, sets, units] sums of x and x^2 over each set's reference items."""
        return self.reference @ self.data.powers[:2]

    @cached_property
    def mean_target(self) -> np.ndarray:
        return self._target_sums[0] / self.n_target

    @cached_property
    def difference(self) -> np.ndarray:
        """D = mean(target) - mean(reference)."""
        return self.mean_target - self._reference_sums[0] / self.n_reference

    @cached_property
    def centred_squares(self) -> tuple[np.ndarray, np.ndarray]:
        """Within-condition sums of squared deviations (n - 1) s^2, target and reference."""
        t1, t2 = self._target_sums
        r1, r2 = self._reference_sums
        return t2 - t1 * self.mean_target, r2 - r1 * (r1 / self.n_reference)

    @cached_property
    def squared_se(self) -> np.ndarray:
        """s_t^2 / n_t + s_r^2 / n_r, the squared standard error of D (Welch)."""
        ct, cr = self.centred_squares
        nt, nr = self.n_target, self.n_reference
        return np.maximum(ct, 0) / (nt * (nt - 1)) + np.maximum(cr, 0) / (nr * (nr - 1))

    @cached_property
    def variance(self) -> np.ndarray:
        """Unbiased variance over all training items of the set."""
        ct, cr = self.centred_squares
        share = self.n_target * self.n_reference / self.n
        return (ct + cr + share * self.difference**2) / (self.n - 1)

    @cached_property
    def raw_sums(self) -> tuple[np.ndarray, ...]:
        """Sums of x, x^2, x^3, x^4 over all training items, each [sets, units]."""
        t1, t2 = self._target_sums
        r1, r2 = self._reference_sums
        train = self.target + self.reference
        return (t1 + r1, t2 + r2, train @ self.data.powers[2], train @ self.data.powers[3])


def _discriminative(m: TrainingMoments) -> np.ndarray:
    """(B - (W_t + W_r)/2) / A: mean between-condition minus mean within-condition pair
    distance (both conditions' within pairs) over the mean of all pairs, for the unit's
    item x item RDM d_ij = (x_i - x_j)^2 on window means; 0 for a constant unit.

    With d_ij = (x_i - x_j)^2 this is (D^2 - s_t^2/n_t - s_r^2/n_r) / (2 s^2): the
    leave-items-out cross-validated (unbiased) squared distance between the condition
    means, ~0 when they do not differ, over twice the unit's variance.
    """
    variance = m.variance
    ok = variance > _CONSTANT_VAR
    score = (m.difference**2 - m.squared_se) / (2 * np.where(ok, variance, 1.0))
    return np.where(ok, score, 0.0)


def _categorical(m: TrainingMoments) -> np.ndarray:
    """Pearson r between the unit's RDM d_ij = (x_i - x_j)^2 and the category model RDM
    (0 same, 1 different condition) over all ordered pairs of training items (0 if constant).

    Point-biserial form (mean between - mean within) sqrt(share (1 - share)) / SD(d), with
    mean between = ct/n_t + cr/n_r + D^2, mean within = 2 (n_t ct + n_r cr) / within pairs,
    mean over all pairs 2 s^2 and sum of d^2 = 2 n S4 - 8 S1 S3 + 6 S2^2.
    """
    nt, nr, n = m.n_target, m.n_reference, m.n
    ct, cr = m.centred_squares
    pairs_all, pairs_between = n * (n - 1), 2 * nt * nr
    mean_between = ct / nt + cr / nr + m.difference**2
    mean_within = 2 * (nt * ct + nr * cr) / (pairs_all - pairs_between)
    s1, s2, s3, s4 = m.raw_sums
    squares = 2 * n * s4 - 8 * s1 * s3 + 6 * s2**2
    var = squares / pairs_all - (2 * m.variance) ** 2
    ok = var > _CONSTANT_VAR
    share = pairs_between / pairs_all
    fit = (mean_between - mean_within) * np.sqrt(share * (1 - share))
    return np.where(ok, fit / np.sqrt(np.where(ok, var, 1.0)), 0.0)


def _contrast(m: TrainingMoments) -> np.ndarray:
    """|Welch t| between the training items' conditions; NaN where the unit is constant."""
    se2 = m.squared_se
    ok = se2 > _CONSTANT_VAR
    return np.where(ok, np.abs(m.difference) / np.sqrt(np.where(ok, se2, 1.0)), np.nan)


def _max_activation(m: TrainingMoments) -> np.ndarray:
    """Mean raw window-mean activation over the training target items."""
    return m.data.centre + m.data.scale * m.mean_target


WINDOW_MEAN_SCORES: dict[str, Callable[[TrainingMoments], np.ndarray]] = {
    MAX_ACTIVATION: _max_activation,
    CONTRAST: _contrast,
}
"""Per-unit window-mean scores [sets, units] of the per-unit default selectors, from moments."""

UNIT_RSA_SCORES: dict[str, Callable[[TrainingMoments], np.ndarray]] = {
    RSA_DISCRIMINATIVE: _discriminative,
    RSA_CATEGORICAL: _categorical,
}
"""Per-unit window-mean RSA scores [sets, units]: monotone in the Welch t for the
discriminative one, so not a selector on their own; the set-level RSA selectors'
pre-screen (``cogsae.analysis.set_selection``)."""

WINDOW_MEAN_SELECTORS = (RSA_DISCRIMINATIVE, RSA_CATEGORICAL, *WINDOW_MEAN_SCORES)
"""Default selectors the engine runs batched on window-mean moments (``batched_selection``)."""


def batched_selection(method: str, moments: TrainingMoments, k: int) -> np.ndarray | None:
    """[sets, k] units (indices into ``moments.data``) of a default window-mean selector on
    every training set of ``moments``, best first (greedy order for the set-level RSA
    selectors); None if ``method`` is not one."""
    if method in SET_SELECTORS:
        return set_selection(method, moments, k)[0]
    if method in WINDOW_MEAN_SCORES:
        return top_k_batch(WINDOW_MEAN_SCORES[method](moments), k)
    return None


def set_selection(method: str, m: TrainingMoments, k: int) -> tuple[np.ndarray, np.ndarray]:
    """[sets, k] units of the set-level RSA selector ``method`` and [sets, k] its gains.

    Each set's candidates are its ``SET_SELECTION_POOL`` best units by the per-unit score
    ``UNIT_RSA_SCORES[method]`` (at least k), with their window means standardized on the
    set's training items alone (0 elsewhere), so a set's selection is the one the selector
    makes given only its training items.
    """
    score = UNIT_RSA_SCORES[method](m)
    pool = top_k_batch(score, min(max(k, SET_SELECTION_POOL), score.shape[1]))
    train = (m.target + m.reference)[:, :, None]
    x = m.data.powers[0].T[pool].transpose(0, 2, 1) * train  # [sets, items, M]
    x -= train * (x.sum(axis=1, keepdims=True) / m.n[:, :, None])
    sd = np.sqrt((x * x).sum(axis=1, keepdims=True) / m.n[:, :, None])
    chosen, gains = SET_SELECTORS[method](x / np.where(sd > 0, sd, 1.0), m.target, m.reference, k)
    return np.take_along_axis(pool, chosen, axis=1), gains


def _checked(values: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Validate the shared inputs; return labels as int8."""
    if values.ndim != 3 or mask.shape != values.shape[:2]:
        raise CogsaeError(
            f"values [items, positions, units] {values.shape} and mask {mask.shape} disagree",
            field="values",
        )
    return check_labels(labels, values.shape[0])


def _window_mean_selection(
    method: str, values: np.ndarray, mask: np.ndarray, labels: np.ndarray, k: int
) -> Selection:
    """Top k units of one training set (all given items) by ``batched_selection``; scores
    are the per-unit score, or for a set-level RSA selector the gain of each greedy step."""
    labels = _checked(values, mask, labels)
    data = Standardized.of(window_mean(values, mask))
    train = np.ones((1, labels.size), dtype=bool)
    moments = TrainingMoments(data, train, labels[None, :])
    if method in SET_SELECTORS:
        if not 1 <= k <= data.x.shape[1]:
            raise CogsaeError(
                f"k must be between 1 and {data.x.shape[1]} units, got {k}", field="k"
            )
        units, gains = set_selection(method, moments, k)
        return Selection(units[0], gains[0])
    scores = WINDOW_MEAN_SCORES[method](moments)[0]
    return top_k(scores.astype(np.float64), k)


def rsa_discriminative(
    values: np.ndarray, mask: np.ndarray, labels: np.ndarray, k: int, *, rng: np.random.Generator
) -> Selection:
    """k units by greedy set-level discriminative RSA on window means: each step adds the
    unit that most raises the crossnobis distance between the condition means of the set
    (``cogsae.analysis.set_selection.greedy_crossnobis``) among the best units by the
    per-unit window-mean score (``_discriminative``). Scores are each step's gain.
    ``rng`` is unused (kept for the shared signature)."""
    return _window_mean_selection(RSA_DISCRIMINATIVE, values, mask, labels, k)


def rsa_categorical(
    values: np.ndarray, mask: np.ndarray, labels: np.ndarray, k: int, *, rng: np.random.Generator
) -> Selection:
    """k units by greedy set-level categorical RSA on window means: each step adds the unit
    that gives the set's item x item RDM the best Pearson fit to the category model RDM
    (``cogsae.analysis.set_selection.greedy_category_fit``) among the best units by the
    per-unit window-mean score (``_categorical``). Scores are the set's fit after each
    step. ``rng`` is unused."""
    return _window_mean_selection(RSA_CATEGORICAL, values, mask, labels, k)


def max_activation(
    values: np.ndarray, mask: np.ndarray, labels: np.ndarray, k: int, *, rng: np.random.Generator
) -> Selection:
    """Top k units by mean window-mean activation over the target items.

    The naive baseline of prior work: the units that fire most on the concept's texts,
    blind to the reference condition. ``rng`` is unused.
    """
    return _window_mean_selection(MAX_ACTIVATION, values, mask, labels, k)


def contrast(
    values: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray,
    k: int,
    *,
    rng: np.random.Generator,
    statistic: Literal["t", "auroc"] = "t",
) -> Selection:
    """Top k units by univariate contrast on window means: |Welch t| (default) or
    |AUROC - 0.5| (``statistic="auroc"``, rank-based, robust to outliers). Units that are
    constant on the given items rank last. ``rng`` is unused."""
    if statistic == "t":
        return _window_mean_selection(CONTRAST, values, mask, labels, k)
    if statistic != "auroc":
        raise CogsaeError(f"unknown contrast statistic {statistic!r}", field="statistic")
    labels = _checked(values, mask, labels)
    means = window_mean(values, mask)
    score = np.abs(auroc(means, labels) - 0.5)
    return top_k(np.where(active_units(means), score, np.nan), k)


def _profile_selector(kind: Literal["categorical", "discriminative"]) -> Callable[..., Selection]:
    """Selector by ``unit_rsa_scores`` over each unit's per-position profile (named variant)."""

    def select(
        values: np.ndarray,
        mask: np.ndarray,
        labels: np.ndarray,
        k: int,
        *,
        rng: np.random.Generator,
    ) -> Selection:
        labels = _checked(values, mask, labels)
        # Units zero on every given item have a constant profile (score 0): skip them.
        active = np.flatnonzero(np.any(values != 0, axis=(0, 1)))
        scores = np.zeros(values.shape[2])
        scores[active] = unit_rsa_scores(values[:, :, active], mask, labels, kind)
        return top_k(scores, k)

    select.__name__ = f"rsa_{kind}_profile"
    select.__doc__ = (
        f"Top k units by per-unit {kind} RSA over the per-position profile of the window "
        "(``cogsae.analysis.unit_rsa.unit_rsa_scores``). Pair it with a readout on the same "
        "representation: "
        "the default L1 readout sees window means only. ``rng`` is unused."
    )
    return select


def random_units(
    values: np.ndarray, mask: np.ndarray, labels: np.ndarray, k: int, *, rng: np.random.Generator
) -> Selection:
    """k units drawn uniformly without replacement from ``rng`` (the random-units baseline)."""
    _checked(values, mask, labels)
    if not 1 <= k <= values.shape[2]:
        raise CogsaeError(f"k must be between 1 and {values.shape[2]} units, got {k}", field="k")
    return Selection(rng.choice(values.shape[2], size=k, replace=False), np.zeros(k))


SELECTORS: dict[str, Callable[..., Selection]] = {
    RSA_DISCRIMINATIVE: rsa_discriminative,
    RSA_CATEGORICAL: rsa_categorical,
    MAX_ACTIVATION: max_activation,
    CONTRAST: contrast,
    RANDOM: random_units,
    RSA_DISCRIMINATIVE_PROFILE: _profile_selector("discriminative"),
    RSA_CATEGORICAL_PROFILE: _profile_selector("categorical"),
}
"""Every selector by name: ``SELECTION_METHODS`` and ``RANDOM`` (the k-random-units
baseline) are the run's defaults; the ``*_profile`` variants score per-position profiles."""
