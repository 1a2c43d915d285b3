"""Inference on model RDMs: which hypothesis does a unit space's item geometry follow?

Every model RDM (`cogsae.analysis.rdm_models`) is evaluated against the data RDM of each
space by rho-a, the tie-aware rank correlation of rsatoolbox (``compare(..., 'rho-a')``;
docs/methods.md, "Model RDMs and their inference"). Three procedures, all on the same data
RDM vectors:

- **Bootstrap over stimuli** (the interval, and model-vs-model): groups (items without
  groups) are resampled whole with replacement and both RDMs are subsampled with the same
  indices; pairs of an item with its own copy are dropped (rsatoolbox's
  ``bootstrap_sample_pattern`` + ``subsample_pattern``, whose semantics this reproduces).
  A resample is a weight per original pair, w_ij = c_i c_j (c: copies of each item), so
  the rank of a pair in the resampled vector is the weight of the pairs below it plus half
  the weight of its ties (plus 1/2): rho-a of all resamples and models comes from matrix
  operations on precomputed sort orders, not from one rsatoolbox call per resample
  (`bootstrap_fits`; a test checks it against rsatoolbox on the same resamples).
- **Permutation against no relation** (the p of each model): item labels are permuted,
  rows and columns of the model RDM together; groups move whole, onto groups of the same
  size (`group_permutations`); p = (1 + #{null >= r}) / (1 + n).
- **Model comparison**: the bootstrap distribution of r_a - r_b on the same resamples; a
  percentile interval and a two-sided bootstrap p, Holm-corrected over the pairs of a space.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from rsatoolbox.model import ModelFixed
from rsatoolbox.rdm import RDMs, compare
from tqdm import tqdm

from cogsae.errors import CogsaeError

BOOTSTRAP_BATCH = 250
"""Resamples per batch of the vectorized bootstrap ([batch, pairs] float64 arrays)."""


def group_ids(groups: np.ndarray | None, n_items: int) -> np.ndarray:
    """[items] dense group ids (0..G-1); each item its own group when ``groups`` is None."""
    if groups is None:
        return np.arange(n_items)
    return np.unique(np.asarray(groups).astype(str), return_inverse=True)[1].ravel()


def bootstrap_counts(group: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples, items] copies of each item in bootstrap samples that draw G groups from
    the G groups of ``group`` [items] with replacement (a group's items come and go whole)."""
    n_groups = int(group.max()) + 1
    draws = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    per_group = np.zeros((n_resamples, n_groups), dtype=np.int64)
    np.add.at(per_group, (np.arange(n_resamples)[:, None], draws), 1)
    return per_group[:, group]


def group_permutations(
    group: np.ndarray, n_permutations: int, rng: np.random.Generator
) -> np.ndarray:
    """[permutations, items] item permutations that map whole groups onto groups of the same
    size (and shuffle the items within each): ``perm[r, i]`` is the item whose model row
    item i takes in permutation r. Without groups (each item its own) any permutation."""
    perms = np.empty((n_permutations, len(group)), dtype=np.int64)
    if n_permutations == 0:
        return perms
    sizes = np.bincount(group)
    for size in np.unique(sizes):
        same = np.flatnonzero(sizes == size)
        # [groups of this size, size] their items, in item order
        members = np.stack([np.flatnonzero(group == g) for g in same])
        onto = np.argsort(rng.random((n_permutations, len(same))), axis=1)
        within = np.argsort(rng.random((n_permutations, len(same), size)), axis=2)
        perms[:, members.ravel()] = members[onto[:, :, None], within].reshape(n_permutations, -1)
    return perms


FEW_TIES = 64
"""A vector with at most this many distinct values (a category, graded or length model) is
ranked through its [pairs, values] indicator matrix: matrix products, no [batch, pairs]
rank array."""


class RankedVector:
    """One RDM vector [pairs] prepared for weighted ranks: its sort order and tie groups.

    Attributes:
        order: [pairs] stable sort order of the vector.
        starts: [values] first sorted position of each distinct value.
        tie: [pairs] distinct-value id of each sorted position.
        indicator: [pairs, values] 0/1 value membership (original order) when the vector
            has at most `FEW_TIES` distinct values, else None.
        plain: [pairs] ordinary average ranks (every weight 1).
    """

    def __init__(self, vector: np.ndarray) -> None:
        self.order = np.argsort(vector, kind="stable")
        ordered = vector[self.order]
        self.starts = np.concatenate([[0], np.flatnonzero(np.diff(ordered) != 0) + 1])
        self.tie = np.repeat(np.arange(len(self.starts)), np.diff([*self.starts, len(vector)]))
        self.indicator = None
        if len(self.starts) <= FEW_TIES:
            self.indicator = np.zeros((len(vector), len(self.starts)))
            self.indicator[self.order, self.tie] = 1.0
        self.plain = self.weighted_ranks(np.ones((1, len(vector))))[0]

    @staticmethod
    def tie_ranks(tie_weights: np.ndarray) -> np.ndarray:
        """[batch, values] average rank of each distinct value given its total weight."""
        ranks = np.cumsum(tie_weights, axis=1)
        ranks -= 0.5 * tie_weights
        ranks += 0.5
        return ranks

    def weighted_ranks(self, weights: np.ndarray) -> np.ndarray:
        """[batch, pairs] average ranks of each pair (original order) in the multiset in
        which pair p appears ``weights[:, p]`` times (ties share their average rank)."""
        sorted_w = weights[:, self.order]
        if len(self.starts) < weights.shape[1]:
            value_ranks = self.tie_ranks(np.add.reduceat(sorted_w, self.starts, axis=1))
            sorted_w = value_ranks[:, self.tie]
        else:
            sorted_w = self.tie_ranks(sorted_w)
        ranks = np.empty_like(weights)
        ranks[:, self.order] = sorted_w
        return ranks


def rho_a_weighted(
    data: list[RankedVector], models: list[RankedVector], weights: np.ndarray
) -> np.ndarray:
    """[batch, spaces, models] rsatoolbox's rho-a between each data and each model vector on
    resampled vectors given by pair ``weights`` [batch, pairs]:
    12 sum_p w_p (r_p - m)(s_p - m) / (N^3 - N) with N = sum_p w_p and m = (N + 1) / 2
    (rho-a of the expanded vectors, whose ranks `RankedVector.weighted_ranks` gives).
    Since sum_p w_p = N, the data side needs no centring: sum_p w_p (r_p - m) = 0."""
    n = weights.sum(1, keepdims=True)
    centre = (n + 1.0) / 2.0
    few = [m.indicator is not None for m in models]
    value_ranks = [  # [batch, values] centred rank of each model value
        m.tie_ranks(weights @ m.indicator) - centre if f else None
        for m, f in zip(models, few, strict=True)
    ]
    full = [m.weighted_ranks(weights) - centre for m, f in zip(models, few, strict=True) if not f]
    out = np.empty((len(weights), len(data), len(models)))
    for s, ranked in enumerate(data):
        weighted = weights * ranked.weighted_ranks(weights)  # [batch, pairs]
        rest = iter(full)
        for k, model in enumerate(models):
            if few[k]:
                out[:, s, k] = ((weighted @ model.indicator) * value_ranks[k]).sum(1)
            else:
                out[:, s, k] = np.einsum("bp,bp->b", weighted, next(rest))
    return out * (12.0 / (n**3 - n))[:, :, None]


def bootstrap_fits(
    data: np.ndarray,
    models: np.ndarray,
    counts: np.ndarray,
    *,
    progress: bool = False,
) -> np.ndarray:
    """[resamples, spaces, models] rho-a of every model with every data RDM in each bootstrap
    resample (NaN for a resample of fewer than 3 distinct items, as rsatoolbox).

    Args:
        data: [spaces, pairs] data RDM vectors (upper triangle, rsatoolbox order).
        models: [models, pairs] model RDM vectors.
        counts: [resamples, items] copies of each item (`bootstrap_counts`).
    """
    n_items = counts.shape[1]
    iu, ju = np.triu_indices(n_items, k=1)
    ranked_models = [RankedVector(m) for m in models]
    ranked_data = [RankedVector(d) for d in data]
    out = np.full((len(counts), len(data), len(models)), np.nan)
    starts = range(0, len(counts), BOOTSTRAP_BATCH)
    for start in tqdm(starts, desc="geometry bootstrap", disable=not progress, leave=False):
        batch = counts[start : start + BOOTSTRAP_BATCH].astype(np.float64)
        weights = batch[:, iu] * batch[:, ju]
        out[start : start + len(batch)] = rho_a_weighted(ranked_data, ranked_models, weights)
    out[(counts > 0).sum(1) < 3] = np.nan
    return out


def permutation_fits(data: np.ndarray, model_matrices: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """[permutations, spaces, models] rho-a with the models' rows and columns permuted.

    Permuting a model's rows and columns by perm is permuting the data's by its inverse,
    so the (few) data rank vectors are permuted and the model ranks stay put.

    Args:
        data: [spaces, pairs] data RDM vectors.
        model_matrices: [models, items, items] model RDMs.
        perms: [permutations, items] item permutations (`group_permutations`).
    """
    n_items = model_matrices.shape[1]
    iu, ju = np.triu_indices(n_items, k=1)
    n_pairs = len(iu)
    centre = (n_pairs + 1) / 2.0
    model_ranks = np.stack([RankedVector(m[iu, ju]).plain for m in model_matrices]) - centre
    inverse = np.argsort(perms, axis=1)
    out = np.empty((len(perms), len(data), len(model_matrices)))
    for s, vector in enumerate(data):
        ranks = np.zeros((n_items, n_items))
        ranks[iu, ju] = RankedVector(vector).plain - centre
        ranks = (ranks + ranks.T).ravel()
        for start in range(0, len(perms), BOOTSTRAP_BATCH):
            inv = inverse[start : start + BOOTSTRAP_BATCH]
            permuted = ranks[inv[:, iu] * n_items + inv[:, ju]]  # [batch, pairs]
            out[start : start + len(inv), s] = permuted @ model_ranks.T
    return out * 12.0 / (n_pairs**3 - n_pairs)


@dataclass
class GeometryResult:
    """Model fits and comparisons of every space (the ``geometry`` entry of results.json).

    Attributes:
        spaces: space names, in order.
        models: model names, in order.
        r: [spaces, models] rho-a of each model with each space's data RDM (rsatoolbox).
        bootstrap: [resamples, spaces, models] rho-a in each bootstrap resample.
        null: [permutations, spaces, models] rho-a with permuted model rows and columns.
        ci: interval coverage.
    """

    spaces: list[str]
    models: list[str]
    r: np.ndarray
    bootstrap: np.ndarray
    null: np.ndarray
    ci: float = 0.95

    def model_rows(self) -> list[dict]:
        """{space, model, r, ci_low, ci_high, p} per space and model."""
        alpha = (1.0 - self.ci) / 2.0
        low, high = np.nanquantile(self.bootstrap, [alpha, 1.0 - alpha], axis=0)
        n_perm = len(self.null)
        exceed = (self.null >= self.r[None] - 1e-12).sum(0)
        p = (1.0 + exceed) / (1.0 + n_perm) if n_perm else np.full(self.r.shape, np.nan)
        return [
            {
                "space": space,
                "model": model,
                "r": float(self.r[s, k]),
                "ci_low": float(low[s, k]),
                "ci_high": float(high[s, k]),
                "p": float(p[s, k]),
            }
            for s, space in enumerate(self.spaces)
            for k, model in enumerate(self.models)
        ]

    def comparison_rows(self) -> list[dict]:
        """{space, a, b, diff, ci_low, ci_high, p, p_corrected} per space and model pair;
        Holm over the pairs of a space."""
        from statsmodels.stats.multitest import multipletests

        alpha = (1.0 - self.ci) / 2.0
        rows = []
        for s, space in enumerate(self.spaces):
            block = []
            for a, b in combinations(range(len(self.models)), 2):
                diffs = self.bootstrap[:, s, a] - self.bootstrap[:, s, b]
                diffs = diffs[np.isfinite(diffs)]
                low, high = np.quantile(diffs, [alpha, 1.0 - alpha])
                p = bootstrap_p(diffs)
                block.append(
                    {
                        "space": space,
                        "a": self.models[a],
                        "b": self.models[b],
                        "diff": float(self.r[s, a] - self.r[s, b]),
                        "ci_low": float(low),
                        "ci_high": float(high),
                        "p": p,
                    }
                )
            if block:
                holm = multipletests([row["p"] for row in block], method="holm")[1]
                for row, q in zip(block, holm, strict=True):
                    row["p_corrected"] = float(q)
            rows += block
        return rows

    def to_record(self) -> dict:
        """The ``geometry`` entry of results.json: model and comparison rows."""
        return {
            "method": "rho-a",
            "ci": self.ci,
            "n_bootstrap": len(self.bootstrap),
            "n_permutations": len(self.null),
            "models": self.model_rows(),
            "comparisons": self.comparison_rows(),
        }


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p of a difference being 0: twice the smaller share of resampled
    differences on either side of 0 (each count + 1 over resamples + 1), at most 1."""
    n = len(diffs)
    below, above = (diffs <= 0).sum(), (diffs >= 0).sum()
    return float(min(1.0, 2.0 * (1.0 + min(below, above)) / (1.0 + n)))


def evaluate_models(
    data: dict[str, RDMs],
    models: list[ModelFixed],
    *,
    groups: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
    ci: float = 0.95,
    rng: np.random.Generator,
    progress: bool = False,
) -> GeometryResult:
    """Fit, bootstrap interval, permutation p and comparisons of ``models`` in each space.

    Args:
        data: space -> its data RDM (rsatoolbox ``RDMs``, one RDM over the items).
        models: rsatoolbox fixed models over the same items.
        groups: [items] item groups (resampled and permuted whole), or None.
        n_bootstrap, n_permutations: resamples and permutations.
        ci: interval coverage.
        rng: the random stream (bootstrap first, then permutations).
    """
    spaces = list(data)
    vectors = np.stack([data[s].get_vectors()[0] for s in spaces])
    matrices = np.stack([m.predict_rdm().get_matrices()[0] for m in models])
    n_items = matrices.shape[1]
    if vectors.shape[1] != n_items * (n_items - 1) // 2:
        raise CogsaeError("data and model RDMs cover different items", field="models")
    r = np.stack([compare(data[s], RDMs(matrices), method="rho-a")[0] for s in spaces])
    group = group_ids(groups, n_items)
    counts = bootstrap_counts(group, n_bootstrap, rng)
    iu, ju = np.triu_indices(n_items, k=1)
    boot = bootstrap_fits(vectors, matrices[:, iu, ju], counts, progress=progress)
    null = permutation_fits(vectors, matrices, group_permutations(group, n_permutations, rng))
    return GeometryResult(spaces, [m.name for m in models], r, boot, null, ci)
