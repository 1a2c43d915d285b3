"""Per-unit RSA scores over window positions (docs/methods.md, "Per-unit RSA scores").

``unit_rsa_scores`` builds, for every unit, the item x item RDM of its activation profile
over window positions and reduces it to a categorical or a discriminative score, for all
units at once and without materializing the RDMs. This is the per-position profile
variant used by the ``*_profile`` selectors; the default selectors score window means
(``cogsae.analysis.selection``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Literal

import numpy as np
from threadpoolctl import threadpool_limits

from cogsae.analysis.contrasts import check_labels
from cogsae.errors import CogsaeError

# A unit whose spread is below this fraction of its mean is a constant plus float round-off.
_CONSTANT_REL_TOL = 1e-6


def unit_rsa_scores(
    values: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray,
    kind: Literal["categorical", "discriminative"] = "categorical",
    *,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Per-unit RSA score of every unit, from its item x item RDM over window positions.

    A unit's RDM: d_ij = mean over the positions both items have of (x_ip - x_jp)^2
    (masked positions never enter; pairs sharing no position are left out). It equals
    rsatoolbox's "euclidean" RDM of the unit's [items, positions] profile when no position
    is masked, and is defined for all-zero rows (unlike correlation distance).

    Scores (0 for a unit that is constant over items, never NaN):
    - "categorical": Pearson r between the unit's RDM and the category model RDM (0 same,
      1 different condition) over all item pairs (point-biserial r). Pearson, not a rank
      correlation, because it reduces exactly to per-cell moments (below); a rank fit
      would need every unit's full RDM.
    - "discriminative": (B - (W_t + W_r) / 2) / A, with B the mean between-condition
      distance, W_t and W_r the mean within-target and within-reference distances and A
      the mean over all pairs. Without masking, B - (W_t + W_r)/2 equals
      ||m_t - m_r||^2 / P - tr(S_t)/(P n_t) - tr(S_r)/(P n_r), the average over all
      disjoint item pairs (i, i' target; j, j' reference) of (x_i - x_j).(x_i' - x_j') / P:
      the exhaustive leave-items-out cross-validated (crossnobis-type) distance between
      condition mean profiles. It is unbiased, ~0 when conditions do not differ, and uses
      both conditions' within pairs. Dividing by A (twice the unit's profile variance
      plus any effect) makes scores comparable across units of any scale.

    Computation: items are sorted into cells of equal (mask, condition); a pair's overlap
    count is constant within a pair of cells, so the pair sums of d and d^2 follow from
    per-cell moments (sums, squared-profile sums, position Gram matrices), O(items x
    positions^2) per unit, never an [items x items] matrix per unit. Units are processed
    in float32 chunks of ``chunk_size`` after centring and scaling each unit (scores are
    shift and scale invariant).

    Args:
        values: [items, positions, units] activations (any float dtype).
        mask: [items, positions] bool validity mask.
        labels: [items] 1 target / 0 reference.
        kind: "categorical" or "discriminative".
        chunk_size: units per chunk (memory ~40 kB per unit).

    Returns:
        [units] float64 scores; larger = more condition-related.
    """
    if kind not in ("categorical", "discriminative"):
        raise CogsaeError(f"unknown per-unit RSA kind {kind!r}", field="kind")
    values = np.asarray(values)
    mask = np.asarray(mask, dtype=bool)
    if values.ndim != 3 or mask.shape != values.shape[:2]:
        raise CogsaeError(
            f"values [items, positions, units] {values.shape} and mask {mask.shape} disagree",
            field="values",
        )
    labels = check_labels(labels, values.shape[0])
    pairs = _ItemPairs(mask, labels)
    scores = np.empty(values.shape[2])

    def score_chunk(start: int) -> None:
        stop = min(start + chunk_size, values.shape[2])
        x = _standardized_profiles(values, mask, slice(start, stop), pairs.order)
        alpha = pairs.alpha(x)
        sums = pairs.distance_sums(x, alpha)
        if kind == "discriminative":
            scores[start:stop] = pairs.discriminative(sums)
        else:
            scores[start:stop] = pairs.categorical(sums, pairs.squared_sum(x, alpha))

    # Chunks are many small matrix products: one BLAS thread each, chunks spread over cores.
    with threadpool_limits(1), ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(score_chunk, range(0, values.shape[2], chunk_size)))
    return scores


def _standardized_profiles(
    values: np.ndarray, mask: np.ndarray, units: slice, order: np.ndarray
) -> np.ndarray:
    """[units, items, positions] float32 profiles of ``values[:, :, units]``, items in ``order``.

    Each unit is centred and scaled over its valid entries; masked entries are 0, and a
    unit whose spread is round-off of a constant comes out all zero.
    """
    n_items, n_positions = mask.shape
    chunk = values[:, :, units].reshape(n_items * n_positions, -1)
    x = np.ascontiguousarray(chunk.T, dtype=np.float32)  # [units, items * positions]
    weight = mask.ravel().astype(np.float32)
    count = float(weight.sum())
    mean = x @ weight / count
    x -= mean[:, None]
    x *= weight
    rms = np.sqrt(np.einsum("ij,ij->i", x, x) / count)
    varies = rms > _CONSTANT_REL_TOL * np.abs(mean)
    x *= np.where(varies, 1.0 / np.where(varies, rms, 1.0), 0.0).astype(np.float32)[:, None]
    return np.take(x.reshape(-1, n_items, n_positions), order, axis=1)


class _ItemPairs:
    """Unit-independent bookkeeping of item pairs for ``unit_rsa_scores``.

    Items are sorted by mask pattern, then condition, so that every cell (pattern,
    condition) and every pattern is a contiguous run. For cells k, l: overlap c_kl =
    m_k . m_l positions, ordered pair count n_k n_l - [k == l] n_k, and selectors of
    all / between / within-target / within-reference pairs (pairs with c_kl = 0 excluded).
    """

    def __init__(self, mask: np.ndarray, labels: np.ndarray) -> None:
        patterns, pattern_of = np.unique(mask, axis=0, return_inverse=True)
        n_patterns = len(patterns)
        key = pattern_of.ravel() * 2 + labels
        self.order = np.argsort(key, kind="stable")
        cell_keys, cell_of = np.unique(key[self.order], return_inverse=True)
        self.cell_pattern = cell_keys // 2
        cell_label = cell_keys % 2
        self.cell_starts = np.searchsorted(cell_of, np.arange(len(cell_keys)))
        self.pattern_starts = np.searchsorted(self.cell_pattern[cell_of], np.arange(n_patterns))
        self.patterns = patterns.astype(np.float32)
        overlap = patterns.astype(np.float64) @ patterns.T.astype(np.float64)
        inv_overlap = np.where(overlap > 0, 1.0 / np.maximum(overlap, 1.0), 0.0)

        self.cell_counts = np.bincount(cell_of).astype(np.float32)
        cell_pairs = np.outer(self.cell_counts, self.cell_counts) - np.diag(self.cell_counts)
        cell_inv = inv_overlap[np.ix_(self.cell_pattern, self.cell_pattern)]
        same = cell_label[:, None] == cell_label[None, :]
        selectors = np.stack(
            [
                np.ones_like(same),
                ~same,
                same & (cell_label[:, None] == 1),
                same & (cell_label[:, None] == 0),
            ]
        ) & (cell_inv > 0)
        self.pair_counts = selectors.reshape(4, -1) @ cell_pairs.ravel()
        if np.any(self.pair_counts == 0):
            raise CogsaeError(
                "each condition needs item pairs that share a window position", field="mask"
            )
        self.linear_weights = (selectors * cell_inv).reshape(4, -1).T.astype(np.float32)
        self.pattern_counts = np.bincount(pattern_of.ravel(), minlength=n_patterns).astype(
            np.float32
        )
        self.square_weights = (inv_overlap**2).ravel().astype(np.float32)

    def distance_sums(self, x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """[units, 4] sums of d_ij over ordered pairs: all, between, within target, within ref.

        With a_i = x_i^2 and alpha_ih = a_i . m_h (m_h the mask of pattern h), the overlap
        times distance of pair (i, j) is num_ij = alpha_i,p(j) + alpha_j,p(i) - 2 x_i . x_j, so
        over cells k, l: sum num_ij = n_l R_kl + n_k R_lk - 2 S_k . S_l, with
        R_kl = sum_{i in k} alpha_i,p(l) and S_k = sum_{i in k} x_i. Self pairs add 0.
        """
        r = np.add.reduceat(alpha, self.cell_starts, axis=1)[:, :, self.cell_pattern]
        s = np.add.reduceat(x, self.cell_starts, axis=1)
        n = self.cell_counts
        num = n[None, None, :] * r + n[None, :, None] * r.transpose(0, 2, 1)
        num -= 2 * (s @ s.transpose(0, 2, 1))
        return num.reshape(len(x), -1) @ self.linear_weights

    def squared_sum(self, x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """[units] sum of d_ij^2 over ordered valid pairs, from per-pattern moments.

        Over patterns g, h (overlap c_gh): sum num_ij^2 = n_h Q_gh + n_g Q_hg + 2 R_gh R_hg
        - 4 (Y_gh + Y_hg) + 4 <G_g, G_h>, with R_gh = sum_{i in g} alpha_ih, Q_gh = sum_{i in g}
        alpha_ih^2, Y_gh = sum_{i in g} alpha_ih x_i . S_h, S_h = sum_{j in h} x_j and
        G_g = sum_{i in g} x_i x_i^T; then d^2 = num^2 / c_gh^2.
        """
        starts = self.pattern_starts
        r = np.add.reduceat(alpha, starts, axis=1)
        q = np.add.reduceat(alpha * alpha, starts, axis=1)
        s = np.add.reduceat(x, starts, axis=1)
        y = np.add.reduceat(alpha * (x @ s.transpose(0, 2, 1)), starts, axis=1)
        bounds = np.append(starts, x.shape[1])
        gram = np.stack(
            [x[:, lo:hi].transpose(0, 2, 1) @ x[:, lo:hi] for lo, hi in pairwise(bounds)],
            axis=1,
        ).reshape(len(x), len(starts), -1)
        n = self.pattern_counts
        num_sq = n[None, None, :] * q + n[None, :, None] * q.transpose(0, 2, 1)
        num_sq += 2 * r * r.transpose(0, 2, 1) - 4 * (y + y.transpose(0, 2, 1))
        num_sq += 4 * (gram @ gram.transpose(0, 2, 1))
        return num_sq.reshape(len(x), -1) @ self.square_weights

    def alpha(self, x: np.ndarray) -> np.ndarray:
        """[units, items, patterns] alpha_ih = sum_p x_ip^2 m_hp."""
        n_units, n_items, n_positions = x.shape
        return ((x * x).reshape(-1, n_positions) @ self.patterns.T).reshape(n_units, n_items, -1)

    def discriminative(self, sums: np.ndarray) -> np.ndarray:
        """(mean between - mean of the two within means) / mean over all pairs; 0 if constant."""
        mean_all, mean_between, mean_wt, mean_wr = (sums / self.pair_counts).T
        ok = mean_all > np.finfo(np.float32).eps
        return np.where(
            ok, (mean_between - (mean_wt + mean_wr) / 2) / np.where(ok, mean_all, 1), 0.0
        )

    def categorical(self, sums: np.ndarray, squared_sum: np.ndarray) -> np.ndarray:
        """Point-biserial r of d with the between-condition indicator; 0 if d is constant."""
        n_all, n_between, n_wt, n_wr = self.pair_counts
        mean_all, mean_between = sums[:, 0] / n_all, sums[:, 1] / n_between
        mean_within = (sums[:, 2] + sums[:, 3]) / (n_wt + n_wr)
        var = squared_sum / n_all - mean_all**2
        ok = var > np.finfo(np.float32).eps * np.maximum(mean_all**2, np.finfo(np.float32).eps)
        share = n_between / n_all
        fit = (mean_between - mean_within) * np.sqrt(share * (1 - share))
        return np.where(ok, fit / np.sqrt(np.where(ok, var, 1)), 0.0)
