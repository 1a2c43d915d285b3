"""Batched solvers: the same fits as scikit-learn's liblinear, many sets at once."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cogsae.analysis.solvers import fit_kernel_logistic, fit_l1_logistic


def test_batched_solvers_match_liblinear() -> None:
    rng = np.random.default_rng(0)
    n_sets, n_items, k = 12, 60, 6
    x = rng.normal(size=(n_sets, n_items, k))
    labels = (rng.random((n_sets, n_items)) < 0.5).astype(np.int8)
    x[:, :, 0] += labels
    train = rng.random((n_sets, n_items)) < 0.8
    weights = np.where(train, rng.uniform(0.5, 2.0, (n_sets, n_items)), 0.0)
    coef, intercept = fit_l1_logistic(x, labels, weights, C=0.5)
    features = rng.normal(size=(n_items, 90))
    dual = fit_kernel_logistic(features @ features.T + 1.0, labels, weights, C=1.0)
    for s in range(n_sets):
        t = train[s]
        l1 = LogisticRegression(C=0.5, l1_ratio=1.0, solver="liblinear", tol=1e-10, max_iter=10**5)
        l1.fit(x[s, t], labels[s, t], sample_weight=weights[s, t])
        np.testing.assert_allclose(coef[s], l1.coef_[0], atol=1e-4)
        assert intercept[s] == pytest.approx(l1.intercept_[0], abs=1e-4)
        assert np.array_equal(coef[s] != 0, np.abs(l1.coef_[0]) > 1e-8)  # same support
        l2 = LogisticRegression(C=1.0, l1_ratio=0.0, solver="liblinear", dual=True, tol=1e-10)
        l2.set_params(max_iter=10**5).fit(features[t], labels[s, t], sample_weight=weights[s, t])
        np.testing.assert_allclose(dual[s] @ features, l2.coef_[0], atol=1e-4)
        assert dual[s].sum() == pytest.approx(l2.intercept_[0], abs=1e-4)
