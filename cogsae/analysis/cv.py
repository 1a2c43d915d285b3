"""Outer cross-validation folds and label permutations shared by every readout (the CV plan).

A :class:`CVPlan` holds, for the observed labels and each label permutation, the test
fold of every item in every repeat; :class:`FoldSets` turns a plan into batches of
training sets for the batched readouts of ``cogsae.analysis.ensemble``.

Items are permuted and dealt to folds in *clusters*: an item group when the stimulus set
gives groups (items sharing a template are not independent), otherwise each item alone.
Every random draw comes from ``cogsae.streams`` under the plan's seed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from sklearn.model_selection import StratifiedKFold

from cogsae.analysis.contrasts import check_labels
from cogsae.analysis.resampling import permute_labels
from cogsae.analysis.selection import Standardized, TrainingMoments
from cogsae.errors import CogsaeError
from cogsae.streams import Stream, entropy, rng


@dataclass(eq=False)
class CVPlan:
    """Outer folds and label permutations shared by every readout (the paired design).

    Row 0 of ``labels_perm`` / ``fold_ids`` is the observed analysis; row b > 0 is the
    b-th label permutation with folds re-derived from the permuted labels by the very
    same rule and seeds, so a null replicate is the observed analysis applied verbatim
    to permuted labels (which is what makes the permutation p-value exact).

    Attributes:
        labels: [items] int, 1 = target condition, 0 = reference (observed); with
            ``n_levels`` > 2 the level index 0 .. n_levels - 1 of each item.
        groups: [items] group of each item (items of a group are not independent), or None.
        n_splits: outer folds per repeat.
        labels_perm: [1 + n_permutations, items] int, row 0 == ``labels``.
        fold_ids: [1 + n_permutations, repeats, items] int, the test fold of each item.
        seed: root of every random stream used with this plan (folds, permutations,
            random units, final models).
    """

    labels: np.ndarray
    groups: np.ndarray | None
    n_splits: int
    labels_perm: np.ndarray
    fold_ids: np.ndarray
    seed: int
    n_levels: int = 2

    @property
    def n_items(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_repeats(self) -> int:
        return int(self.fold_ids.shape[1])

    @property
    def n_permutations(self) -> int:
        return int(self.labels_perm.shape[0] - 1)

    @cached_property
    def test_fraction(self) -> float:
        """Mean share of items held out per fold (n_test / n in the corrected variance)."""
        counts = np.stack([np.bincount(ids, minlength=self.n_splits) for ids in self.fold_ids[0]])
        return float(counts.mean() / self.n_items)

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
    blocks: np.ndarray | None = None,
    n_splits: int = 5,
    n_repeats: int = 10,
    n_permutations: int = 1000,
    seed: int = 0,
    n_levels: int = 2,
) -> CVPlan:
    """Repeated stratified (group) k-fold and label permutations for ``labels`` [items].

    ``labels`` are 1 target / 0 reference, or with ``n_levels`` > 2 level indices
    0 .. n_levels - 1 (an omnibus analysis): folds then stratify by level and every training
    set and test fold must hold every level.

    Folds: clusters (groups, else items) are dealt to folds by sklearn's StratifiedKFold
    on their stratum (label, or "mixed" for groups holding both conditions), so a group
    never straddles train and test and every fold keeps the condition balance.

    Permutations (``cogsae.analysis.resampling.permute_labels``) only exchange what is exchangeable
    under "labels carry no information": labels over items without groups; whole groups'
    labels among groups when every group is label-pure; labels within each group when a
    group holds both conditions. ``blocks`` [items] restricts every exchange to within a
    block: in factorial designs the cells of template x the other factors, so permuting
    one factor never mixes in another.

    Defaults: 10 x 5-fold (enough repeats for stable verdicts) and up to 1000 permutations
    (smallest p 1/1001, so corrections over ~15 readouts can reject); :func:`evaluate`
    stops early for readouts whose both tails are clearly null.
    """
    labels = check_levels(labels, n_levels)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != labels.shape:
            raise CogsaeError("groups must give one group per item", field="group")
    clusters = _clusters(labels.size, groups)
    n_clusters = int(clusters.max()) + 1
    if n_splits < 2 or n_clusters < n_splits:
        raise CogsaeError(
            f"need 2 <= folds <= number of items/groups ({n_clusters}), got {n_splits}",
            field="--folds",
        )
    if n_repeats < 1 or n_permutations < 0:
        raise CogsaeError("need repeats >= 1 and permutations >= 0", field="--repeats")
    perm_rng = rng(seed, Stream.PERMUTATIONS)
    labels_perm = np.stack(
        [labels]
        + [permute_labels(labels, perm_rng, groups, blocks=blocks) for _ in range(n_permutations)]
    )
    fold_seeds = rng(seed, Stream.FOLDS).integers(2**31 - 1, size=n_repeats)
    fold_ids = np.stack(
        [_fold_ids(lab, clusters, n_splits, fold_seeds, n_levels) for lab in labels_perm]
    )
    _check_folds(labels_perm, fold_ids, n_splits, n_levels)
    return CVPlan(labels, groups, n_splits, labels_perm, fold_ids, seed, n_levels)


def check_levels(labels: np.ndarray, n_levels: int = 2) -> np.ndarray:
    """Validate labels [items] as int64: 0/1 (``check_labels``) for two levels, else level
    indices 0 .. n_levels - 1 with at least 2 items each."""
    if n_levels == 2:
        return check_labels(labels, len(labels)).astype(np.int64)
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.isin(labels, np.arange(n_levels)).all():
        raise CogsaeError(f"labels must be level indices 0 .. {n_levels - 1}", field="labels")
    counts = np.bincount(labels.astype(np.int64), minlength=n_levels)
    if counts.min() < 2:
        raise CogsaeError(
            f"each level needs at least 2 items, got {counts.tolist()}", field="labels"
        )
    return labels.astype(np.int64)


def _clusters(n_items: int, groups: np.ndarray | None) -> np.ndarray:
    """[items] int cluster index: the item's group, or the item itself without groups."""
    if groups is None:
        return np.arange(n_items)
    return np.unique(groups, return_inverse=True)[1].ravel()


def _cluster_strata(labels: np.ndarray, clusters: np.ndarray, n_levels: int = 2) -> np.ndarray:
    """[n_clusters] stratum of each cluster: its label if label-pure, else n_levels (mixed)."""
    n_clusters = int(clusters.max()) + 1
    lowest = np.full(n_clusters, n_levels)
    highest = np.full(n_clusters, -1)
    np.minimum.at(lowest, clusters, labels)
    np.maximum.at(highest, clusters, labels)
    return np.where(lowest == highest, lowest, n_levels)


def _fold_ids(
    labels: np.ndarray, clusters: np.ndarray, n_splits: int, seeds: np.ndarray, n_levels: int
) -> np.ndarray:
    """[repeats, items] test-fold index of each item, clusters stratified by their stratum."""
    strata = _cluster_strata(labels, clusters, n_levels)
    out = np.empty((seeds.size, labels.size), dtype=np.int64)
    cluster_fold = np.empty(strata.size, dtype=np.int64)
    for r, seed in enumerate(seeds):
        splitter = StratifiedKFold(n_splits, shuffle=True, random_state=int(seed))
        for f, (_, test) in enumerate(splitter.split(strata, strata)):
            cluster_fold[test] = f
        out[r] = cluster_fold[clusters]
    return out


def _check_folds(
    labels_perm: np.ndarray, fold_ids: np.ndarray, n_splits: int, n_levels: int = 2
) -> None:
    """Every training set needs every condition, every test fold too (for its AUROC)."""
    for labels, ids in zip(labels_perm, fold_ids, strict=True):
        for fold in ids:
            cells = fold * n_levels + labels
            test = np.bincount(cells, minlength=n_splits * n_levels).reshape(n_splits, n_levels)
            train = test.sum(axis=0) - test
            if not ((test > 0).all() and (train > 0).all()):
                raise CogsaeError(
                    "a fold lacks one condition; use fewer folds or more items/groups",
                    field="--folds",
                )


@dataclass
class FoldSets:
    """A batch of training sets: set s is (permutation b, repeat r, fold f).

    Attributes:
        train: [sets, items] bool, the training items.
        labels: [sets, items] labels of every item under the set's permutation.
        streams: [sets] seed sequence words of each set's random stream
            (``Stream.RANDOM_UNITS`` with (repeat, fold), ``Stream.FINAL_UNITS``).
    """

    train: np.ndarray
    labels: np.ndarray
    streams: list[list[int]]
    _moments: dict[int, TrainingMoments] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, plan: CVPlan, perms: Sequence[int]) -> FoldSets:
        """All (repeat, fold) training sets of the permutations ``perms``, perm-major."""
        ids = plan.fold_ids[list(perms)]  # [perms, repeats, items]
        folds = np.arange(plan.n_splits)
        train = ids[:, :, None, :] != folds[None, None, :, None]
        labels = np.broadcast_to(plan.labels_perm[list(perms)][:, None, None, :], train.shape)
        streams = [
            entropy(plan.seed, Stream.RANDOM_UNITS, r, f)
            for _ in perms
            for r in range(plan.n_repeats)
            for f in range(plan.n_splits)
        ]
        n = plan.n_items
        return cls(train.reshape(-1, n), labels.reshape(-1, n).astype(np.int8), streams)

    @classmethod
    def everything(cls, plan: CVPlan) -> FoldSets:
        """One training set of all items with the observed labels (the final model)."""
        train = np.ones((1, plan.n_items), dtype=bool)
        return cls(
            train, plan.labels[None, :].astype(np.int8), [entropy(plan.seed, Stream.FINAL_UNITS)]
        )

    @property
    def n_sets(self) -> int:
        return int(self.train.shape[0])

    def split(self, parts: int) -> list[FoldSets]:
        """The sets in ``parts`` consecutive chunks (for parallel fitting)."""
        bounds = np.linspace(0, self.n_sets, parts + 1).astype(int)
        return [
            FoldSets(self.train[lo:hi], self.labels[lo:hi], self.streams[lo:hi])
            for lo, hi in itertools.pairwise(bounds)
            if hi > lo
        ]

    def moments(self, data: Standardized) -> TrainingMoments:
        """Window-mean moments of ``data`` over these sets, shared by every selector."""
        if id(data) not in self._moments:
            self._moments[id(data)] = TrainingMoments(data, self.train, self.labels)
        return self._moments[id(data)]

    @cached_property
    def weights(self) -> np.ndarray:
        """[sets, items] balanced class weights n / (2 n_class) on training items, else 0."""
        n = self.train.sum(axis=1, keepdims=True)
        n_target = (self.train & (self.labels == 1)).sum(axis=1, keepdims=True)
        per_class = np.where(self.labels == 1, n / (2.0 * n_target), n / (2.0 * (n - n_target)))
        return np.where(self.train, per_class, 0.0)
