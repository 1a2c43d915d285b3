"""Set-level RSA selectors: greedy forward selection on the geometry of the selected SET.

A per-unit RSA score on one window-mean value per item is a monotone function of the
unit's mean difference over its spread (the Welch t), so it selects what the contrast
selects. These selectors score the representational geometry of the set of units chosen
so far, on the same window means the readout is fitted on, so a unit that repeats what
the set already carries adds nothing (docs/methods.md, "RSA selectors"):

- ``rsa_discriminative``: the cross-validated (unbiased) Mahalanobis distance between the
  two condition means of the set's window means (crossnobis) under a shrinkage estimate
  of the within-condition noise covariance; each step adds the unit with the largest
  increase of that distance.
- ``rsa_categorical``: the Pearson fit of the set's item x item RDM (squared Euclidean
  distance of the standardized window means of the set's units, i.e. the sum of the
  units' RDMs) to the category model RDM (0 same, 1 different condition) over all pairs
  of training items; each step adds the unit that gives the best fit.

Both are batched over training sets (folds x permutations) like the per-unit scores:
``cogsae.analysis.selection`` pre-screens each set's ``SET_SELECTION_POOL`` best units by
the method's per-unit window-mean score and standardizes them on the set's training
items; the greedy steps here run on [sets, pool, pool] moment matrices of those units, a
few small tensor products per set.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cogsae.constants import RSA_CATEGORICAL, RSA_DISCRIMINATIVE

# A variance below this (on standardized window means) is a constant or a unit the set
# already determines exactly: such a candidate adds nothing.
_SINGULAR = 1e-10


def _greedy(
    gain: Callable[[np.ndarray], np.ndarray], n_sets: int, size: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy forward selection of k of each set's ``size`` candidates.

    At each step the candidate with the largest ``gain(chosen)`` [sets, size] (chosen:
    [sets, j] candidates so far) joins; ties go to the lower candidate index. Returns the
    [sets, k] candidates and [sets, k] gains at the step each joined (greedy order, not
    necessarily decreasing).
    """
    chosen = np.empty((n_sets, 0), dtype=np.int64)
    taken = np.zeros((n_sets, size), dtype=bool)
    gains = np.empty((n_sets, k))
    rows = np.arange(n_sets)
    for step in range(k):
        value = np.where(taken, -np.inf, np.nan_to_num(gain(chosen), nan=-np.inf))
        best = np.argmax(value, axis=1)
        gains[:, step] = value[rows, best]
        taken[rows, best] = True
        chosen = np.concatenate([chosen, best[:, None]], axis=1)
    return chosen, gains


def _gather(matrix: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """[sets, j, M] rows ``chosen`` [sets, j] of ``matrix`` [sets, M, M]."""
    return np.take_along_axis(matrix, chosen[:, :, None], axis=1)


def greedy_crossnobis(
    x: np.ndarray, target: np.ndarray, reference: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """[sets, k] candidates by greedy crossnobis distance, in greedy order, and [sets, k]
    the distance each added, from candidates' window means x [sets, items, M] (0 off the
    set's training items) and 0/1 indicators target, reference [sets, items] of each set.

    For the set's condition-mean difference delta [j], within-condition sums of squares
    W_t, W_r [j, j] and pooled noise covariance C = (W_t + W_r) / (n - 2), the shrunk
    covariance is Sigma = (1 - lambda) C + lambda diag(C) (``shrunk_covariance``) and
    the set's crossnobis distance is delta' A delta - tr(A S_t) / n_t - tr(A S_r) / n_r
    with A = Sigma^-1 and S_t, S_r the unbiased condition covariances: the average over
    disjoint item pairs of the cross-validated products, unbiased for the true distance.
    Adding unit u to the set S raises it by (r_u^2 - e_t / n_t - e_r / n_r) / v_u, with
    b = Sigma_SS^-1 Sigma_Su, r_u = delta_u - b' delta_S, v_u = Sigma_uu - Sigma_uS b
    and e_t, e_r the condition variances of the residual x_u - b' x_S: a unit that the
    set already predicts (a redundant copy) has r_u ~ 0 and adds ~ nothing.
    """
    nt, nr = target.sum(axis=1, keepdims=True), reference.sum(axis=1, keepdims=True)
    target, reference = target[:, :, None], reference[:, :, None]
    mean_t, mean_r = (x * target).sum(axis=1) / nt, (x * reference).sum(axis=1) / nr  # [sets, M]
    delta = mean_t - mean_r
    res_t = (x - mean_t[:, None]) * target
    res_r = (x - mean_r[:, None]) * reference
    w_t, w_r = _gram(res_t), _gram(res_r)
    s_t, s_r = w_t / (nt[:, :, None] - 1), w_r / (nr[:, :, None] - 1)
    sigma = shrunk_covariance(res_t + res_r, nt + nr)
    diag = np.einsum("smm->sm", sigma)
    live = diag > _SINGULAR

    def gain(chosen: np.ndarray) -> np.ndarray:
        if not chosen.shape[1]:
            r, v = delta, diag
            e_t, e_r = np.einsum("smm->sm", s_t), np.einsum("smm->sm", s_r)
        else:
            sigma_su = _gather(sigma, chosen)  # [sets, j, M]
            sigma_ss = np.take_along_axis(sigma_su, chosen[:, None, :], axis=2)
            b = np.linalg.solve(sigma_ss, sigma_su)  # [sets, j, M]
            r = delta - np.einsum("sj,sjm->sm", np.take_along_axis(delta, chosen, 1), b)
            v = diag - np.einsum("sjm,sjm->sm", sigma_su, b)
            e_t, e_r = _residual_variance(s_t, chosen, b), _residual_variance(s_r, chosen, b)
        ok = live & (v > _SINGULAR * np.maximum(diag, 1.0))
        value = (r**2 - e_t / nt - e_r / nr) / np.where(ok, v, 1.0)
        return np.where(ok, value, -np.inf)

    return _greedy(gain, x.shape[0], x.shape[2], k)


def shrunk_covariance(residuals: np.ndarray, n: np.ndarray) -> np.ndarray:
    """[sets, M, M] noise covariance (dof n - 2) of within-condition ``residuals``
    [sets, items, M] (0 off each set's n [sets, 1] training items), shrunk to its diagonal.

    The intensity lambda is Schafer & Strimmer's (2005, target D) estimate, computed as
    rsatoolbox's "shrinkage_diag" noise covariance does: the summed sampling variance of
    the off-diagonal correlations over their summed squares, clipped to [0, 1]; the shrunk
    covariance keeps the variances and scales the covariances by 1 - lambda. Chance
    correlations of noise units (lambda ~ 1) are thus not read as structure that a unit
    could cancel, while real redundancy (copies: lambda small) is kept.
    """
    dof, rows = (n - 2)[:, :, None], n[:, :, None]
    products = _gram(residuals)
    var = np.einsum("smm->sm", products) / dof[:, :, 0]
    var = np.where(var > _SINGULAR, var, 1.0)
    pair_var = var[:, :, None] * var[:, None, :]
    mean_r = products / np.sqrt(pair_var) / (rows - 1)
    mean_r2 = _gram(residuals * residuals) / pair_var / (rows - 1)
    var_r = rows / dof**2 * (mean_r2 - mean_r**2)
    off = ~np.eye(products.shape[1], dtype=bool)
    lam = (var_r * off).sum(axis=(1, 2)) / np.maximum((mean_r**2 * off).sum(axis=(1, 2)), 1e-30)
    lam = np.clip(lam, 0.0, 1.0)[:, None, None]
    return products / dof * np.where(off, 1 - lam, 1.0)


def _gram(x: np.ndarray) -> np.ndarray:
    """[sets, M, M] x' x of x [sets, items, M]."""
    return x.transpose(0, 2, 1) @ x


def _outer(v: np.ndarray) -> np.ndarray:
    """[sets, M, M] v v' of v [sets, M]."""
    return v[:, :, None] * v[:, None, :]


def _residual_variance(cov: np.ndarray, chosen: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[sets, M] variance of x_u - b_u' x_S under ``cov`` [sets, M, M], for b [sets, j, M]:
    cov_uu - 2 b_u' cov_Su + b_u' cov_SS b_u."""
    cov_su = _gather(cov, chosen)
    cov_ss = np.take_along_axis(cov_su, chosen[:, None, :], axis=2)
    quadratic = np.einsum("sjm,sjm->sm", b, cov_ss @ b)
    return np.einsum("smm->sm", cov) - 2 * np.einsum("sjm,sjm->sm", b, cov_su) + quadratic


def greedy_category_fit(
    x: np.ndarray, target: np.ndarray, reference: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """[sets, k] candidates by greedy category-model fit, in greedy order, and [sets, k]
    the set's fit (up to a factor) after each; arguments as ``greedy_crossnobis``.

    The set's RDM over training items i != j is d_ij = sum_{s in S} (x_is - x_js)^2 on
    standardized window means. Its Pearson r with the category model is, up to a factor
    equal for every candidate, sum_s g_s / sqrt(sum_{s, s'} K_ss'), with g_s the unit's
    mean between- minus mean within-condition distance and K_ss' = Cov over pairs of the
    two units' distances, which follows from item moments: sum_{ij} d^s_ij d^s'_ij =
    2 n S(a^2 b^2) + 2 S(a^2) S(b^2) - 4 S(a^2 b) S(b) - 4 S(a b^2) S(a) + 4 S(a b)^2 for
    a = x_s, b = x_s'. A copy of a chosen unit leaves r unchanged; a unit whose distances
    fit the category model on other pairs raises it.
    """
    nt, nr = target.sum(axis=1, keepdims=True), reference.sum(axis=1, keepdims=True)
    n = nt + nr  # [sets, 1]
    x2 = x * x
    s1, s2 = x.sum(axis=1), x2.sum(axis=1)  # [sets, M]
    s11, s22 = _gram(x), _gram(x2)
    s21 = x2.transpose(0, 2, 1) @ x  # S(a^2 b), a = row
    c1, c2 = s1[:, :, None], s2[:, :, None]
    products = (
        2 * n[:, :, None] * s22
        + 2 * c2 * s2[:, None]
        - 4 * s21 * s1[:, None]
        - 4 * s21.transpose(0, 2, 1) * c1
        + 4 * s11**2
    )
    pairs = n * (n - 1)
    mean_d = 2 * (s2 - s1**2 / n) / (n - 1)  # mean distance over ordered pairs, per unit
    cov = products / pairs[:, :, None] - mean_d[:, :, None] * mean_d[:, None]
    # g_s: mean between minus mean within, from the condition moments of the pool units.
    st1 = (x * target[:, :, None]).sum(axis=1)
    st2 = (x2 * target[:, :, None]).sum(axis=1)
    ct, cr = st2 - st1**2 / nt, (s2 - st2) - (s1 - st1) ** 2 / nr
    diff = st1 / nt - (s1 - st1) / nr
    between = ct / nt + cr / nr + diff**2
    within = 2 * (nt * ct + nr * cr) / (pairs - 2 * nt * nr)
    g = between - within
    var_u = np.einsum("smm->sm", cov)
    live = var_u > _SINGULAR
    # Running sums over the chosen set: sum g, sum K and each candidate's row sum of K.
    # ``_greedy`` calls ``gain`` once per step, with one more chosen unit each time.
    state = {"fit": np.zeros_like(s1[:, :1]), "var": np.zeros_like(s1[:, :1]), "row": 0 * s1}

    def gain(chosen: np.ndarray) -> np.ndarray:
        if chosen.shape[1]:
            last = chosen[:, -1:]
            state["fit"] = state["fit"] + np.take_along_axis(g, last, 1)
            state["var"] = state["var"] + (
                np.take_along_axis(var_u, last, 1) + 2 * np.take_along_axis(state["row"], last, 1)
            )
            state["row"] = state["row"] + _gather(cov, last)[:, 0]
        total = state["var"] + var_u + 2 * state["row"]
        ok = live & (total > _SINGULAR)
        return np.where(ok, (state["fit"] + g) / np.sqrt(np.where(ok, total, 1.0)), -np.inf)

    return _greedy(gain, x.shape[0], x.shape[2], k)


SET_SELECTORS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    RSA_DISCRIMINATIVE: greedy_crossnobis,
    RSA_CATEGORICAL: greedy_category_fit,
}
"""Set-level selectors: (x, target, reference, k) -> ([sets, k] candidates, [sets, k] gains)."""
