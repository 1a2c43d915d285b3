"""Batched solvers of the readouts' fits: many small logistic regressions at once.

:func:`fit_l1_logistic` (proximal Newton with coordinate descent) and
:func:`fit_kernel_logistic` (Newton-CG on a shared kernel) solve exactly the objectives
of scikit-learn's liblinear solver for every training set of a batch.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def weighted_standardize(
    x: np.ndarray, train: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardize x [sets, items, m] by each set's training items (sklearn's rule: zero
    spread -> scale 1). Returns (z, mean [sets, m], scale [sets, m])."""
    w = train[:, :, None].astype(np.float64)
    n = w.sum(axis=1)
    mean = (w * x).sum(axis=1) / n
    scale = np.sqrt((w * (x - mean[:, None, :]) ** 2).sum(axis=1) / n)
    scale[scale == 0] = 1.0
    return (x - mean[:, None, :]) / scale[:, None, :], mean, scale


def _logistic_loss(z: np.ndarray, y: np.ndarray, cw: np.ndarray) -> np.ndarray:
    """[sets] sum_i cw_i (log(1 + e^z_i) - y_i z_i)."""
    return (cw * (np.logaddexp(0.0, z) - y * z)).sum(axis=1)


def fit_l1_logistic(
    x: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    C: float = 1.0,
    *,
    tol: float = 1e-7,
    max_iter: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """Many small L1 logistic regressions at once, by proximal Newton with coordinate descent.

    Minimizes, for every set s, ||beta||_1 + C sum_i w_si log(1 + exp(-y'_si (x_si . beta))),
    with x augmented by a constant 1 whose coefficient (the intercept) is penalized too:
    exactly the objective of scikit-learn's ``LogisticRegression(l1_ratio=1,
    solver="liblinear")`` (intercept_scaling 1), whose solver is also a Newton method with
    coordinate descent (newGLMNET). Each Newton step minimizes the quadratic model plus
    the L1 term by cyclic coordinate descent, then a backtracking line search keeps the
    objective decreasing.

    Args:
        x: [sets, items, m] standardized features.
        labels: [sets, items] 0/1.
        weights: [sets, items] sample weights (0 = not a training item).
        C: inverse regularization strength.

    Returns:
        coef [sets, m] and intercept [sets].
    """
    n_sets, n_items, m = x.shape
    xt = np.concatenate([x, np.ones((n_sets, n_items, 1))], axis=2)
    y = labels.astype(np.float64)
    cw = C * weights
    beta = np.zeros((n_sets, m + 1))
    todo = np.arange(n_sets)
    objective = np.full(n_sets, np.nan)
    objective[todo] = _logistic_loss(np.zeros((n_sets, n_items)), y, cw)
    for _ in range(max_iter):
        xs, ys, cs, bs = xt[todo], y[todo], cw[todo], beta[todo]
        xs_t = xs.transpose(0, 2, 1)
        p = special.expit((xs @ bs[:, :, None])[:, :, 0])
        grad = (xs_t @ (cs * (p - ys))[:, :, None])[:, :, 0]
        hess = (xs_t * (cs * p * (1 - p))[:, None, :]) @ xs
        inverse_diag = 1.0 / np.maximum(np.diagonal(hess, axis1=1, axis2=2), 1e-12)
        columns = np.ascontiguousarray(hess.transpose(2, 0, 1))  # [m + 1, sets, m + 1]
        # Coordinate descent on grad.s + s'Hs/2 + |bs + s|_1 over u = bs + s; h_step = H s.
        u = bs.copy()
        h_step = np.zeros_like(bs)
        first_change = None
        for _sweep in range(50):
            before = u.copy()
            for j in range(m + 1):
                target = u[:, j] - (grad[:, j] + h_step[:, j]) * inverse_diag[:, j]
                threshold = inverse_diag[:, j]
                new = target - np.minimum(np.maximum(target, -threshold), threshold)
                h_step += columns[j] * (new - u[:, j])[:, None]
                u[:, j] = new
            change = float(np.abs(u - before).max())
            first_change = change if first_change is None else first_change
            # Inexact inner solves (newGLMNET): the outer Newton loop mops up the rest.
            if change < max(tol, 1e-3 * first_change):
                break
        step = u - bs
        l1 = np.abs(bs).sum(axis=1)
        predicted = (grad * step).sum(axis=1) + np.abs(u).sum(axis=1) - l1
        old = objective[todo]
        t = np.ones(len(todo))
        for _halving in range(30):
            trial = bs + t[:, None] * step
            z = (xs @ trial[:, :, None])[:, :, 0]
            new_obj = np.abs(trial).sum(axis=1) + _logistic_loss(z, ys, cs)
            accept = new_obj <= old + 1e-4 * t * predicted + 1e-12 * np.abs(old)
            if accept.all():
                break
            t = np.where(accept, t, t / 2)
        beta[todo] = bs + t[:, None] * step
        objective[todo] = new_obj
        moved = np.abs(t[:, None] * step).max(axis=1)
        todo = todo[moved > tol]
        if todo.size == 0:
            break
    return beta[:, :m], beta[:, m]


def fit_kernel_logistic(
    kernel: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    C: float = 1.0,
    *,
    tol: float = 1e-6,
    max_iter: int = 50,
) -> np.ndarray:
    """Many L2 logistic regressions sharing one kernel, by inexact Newton-CG.

    Minimizes 1/2 ||w||^2 + C sum_i w_si log(1 + exp(-y'_si (w . phi_i))) per set s, where
    ``kernel`` = Phi Phi^T holds the features of every item (a constant feature 1 included,
    so the intercept is penalized as in liblinear). The problem is solved in the
    eigenbasis of the shared kernel (features V sqrt(Lambda), exact since w lies in the
    span of the items), so every Hessian-vector product of every set is two matrix
    products with one shared matrix; conjugate gradients, preconditioned by the Hessian's
    diagonal (Jacobi) and stopped at the Eisenstat-Walker forcing term
    min(0.1, sqrt|g|) |g|, solve each Newton step.

    Args:
        kernel: [items, items] symmetric PSD kernel.
        labels: [sets, items] 0/1.
        weights: [sets, items] sample weights (0 = not a training item).

    Returns:
        [sets, items] coefficients a with w = Phi^T a; decisions = a @ kernel.
    """
    eigenvalues, vectors = np.linalg.eigh(kernel)
    keep = eigenvalues > eigenvalues.max() * 1e-12
    eigenvalues, vectors = eigenvalues[keep], vectors[:, keep]
    features = vectors * np.sqrt(eigenvalues)  # [items, rank], features @ features.T = kernel
    y = labels.astype(np.float64)
    cw = C * weights
    beta = np.zeros((labels.shape[0], eigenvalues.size))
    f = np.zeros(labels.shape)
    for _ in range(max_iter):
        p = special.expit(f)
        grad = beta + (cw * (p - y)) @ features
        curvature = cw * p * (1 - p)
        precondition = 1.0 / (1.0 + (curvature @ vectors**2) * eigenvalues)  # Jacobi
        norm = np.sqrt((grad**2).sum(axis=1))
        forcing = np.minimum(0.1, np.sqrt(norm)) * norm
        step = np.zeros_like(beta)
        residual = -grad
        z = precondition * residual
        direction = z.copy()
        rz = (residual * z).sum(axis=1)
        for _cg in range(beta.shape[1]):
            product = direction + (curvature * (direction @ features.T)) @ features
            alpha = rz / np.maximum((direction * product).sum(axis=1), 1e-300)
            step += alpha[:, None] * direction
            residual -= alpha[:, None] * product
            if np.all(np.sqrt((residual**2).sum(axis=1)) <= forcing):
                break
            z = precondition * residual
            rz_new = (residual * z).sum(axis=1)
            direction = z + (rz_new / np.maximum(rz, 1e-300))[:, None] * direction
            rz = rz_new
        beta += step
        f_new = beta @ features.T
        change = float(np.abs(f_new - f).max())
        f = f_new
        if change < tol:
            break
    return (beta / np.sqrt(eigenvalues)) @ vectors.T
