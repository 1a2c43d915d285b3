"""Univariate contrasts, GLM and resampling helpers against scipy, sklearn and statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import special, stats
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests

from cogsae.analysis.contrasts import (
    average_ranks,
    check_labels,
    effect_coded_design,
    factorial_glm,
    univariate_contrast,
)
from cogsae.analysis.resampling import bootstrap_indices, permute_labels
from cogsae.errors import CogsaeError
from tests.helpers import permutation_ks_p


def _data(n_target: int = 14, n_reference: int = 17, n_units: int = 60, seed: int = 0):
    """Window means with a planted effect on units 0-4, an inactive unit 10, ties in unit 11."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_target), np.zeros(n_reference)].astype(int)
    x = rng.standard_normal((len(labels), n_units))
    x[:, :5] += 2.5 * labels[:, None]
    x[:, 10] = 0.0
    x[:, 11] = np.round(x[:, 11])
    return x, labels


def test_welch_t_and_p_equal_scipy_per_unit() -> None:
    x, labels = _data()
    result = univariate_contrast(x.astype(np.float16), labels)
    ref = stats.ttest_ind(
        x.astype(np.float16)[labels == 1].astype(np.float64),
        x.astype(np.float16)[labels == 0].astype(np.float64),
        equal_var=False,
    )
    active = result.active
    assert not active[10] and active.sum() == x.shape[1] - 1
    np.testing.assert_allclose(result.t[active], ref.statistic[active], rtol=1e-10)
    np.testing.assert_allclose(result.p[active], ref.pvalue[active], rtol=1e-9)
    assert np.isnan(result.t[10]) and np.isnan(result.q[10])


def test_bh_q_equals_statsmodels_over_active_units_only() -> None:
    x, labels = _data()
    result = univariate_contrast(x, labels)
    expected = multipletests(result.p[result.active], method="fdr_bh")[1]
    np.testing.assert_allclose(result.q[result.active], expected)


def test_auroc_equals_sklearn_with_ties() -> None:
    x, labels = _data()
    result = univariate_contrast(x, labels)
    for u in np.flatnonzero(result.active):
        assert result.auroc[u] == pytest.approx(roc_auc_score(labels, x[:, u]))


def test_average_ranks_equal_scipy_rankdata() -> None:
    values = np.random.default_rng(1).integers(0, 4, size=(9, 5, 3)).astype(float)
    np.testing.assert_array_equal(average_ranks(values), stats.rankdata(values, axis=0))


def test_hedges_g_uses_exact_small_sample_correction() -> None:
    x, labels = _data()
    g = univariate_contrast(x, labels).g
    x1, x0 = x[labels == 1, 3], x[labels == 0, 3]
    df = len(x1) + len(x0) - 2
    pooled = np.sqrt(((len(x1) - 1) * x1.var(ddof=1) + (len(x0) - 1) * x0.var(ddof=1)) / df)
    j = special.gamma(df / 2) / (np.sqrt(df / 2) * special.gamma((df - 1) / 2))
    assert g[3] == pytest.approx(j * (x1.mean() - x0.mean()) / pooled)


def test_constant_units_give_finite_or_signed_infinite_t() -> None:
    labels = np.r_[np.ones(5), np.zeros(5)].astype(int)
    x = np.column_stack([np.full(10, 0.1), labels * 2.0, np.arange(10.0)])
    result = univariate_contrast(x, labels)
    assert result.t[0] == 0 and result.p[0] == 1
    assert result.t[1] == np.inf and result.p[1] == 0


def test_random_labels_give_almost_no_discoveries() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 3000))
    labels = rng.permutation(np.r_[np.ones(20), np.zeros(20)]).astype(int)
    assert np.mean(univariate_contrast(x, labels).q < 0.05) < 0.002


def test_max_t_permutation_finds_planted_units_and_is_uniform_under_null() -> None:
    x, labels = _data(n_units=200)
    result = univariate_contrast(x, labels, n_permutations=199, seed=1)
    assert (result.p_fwe[:5] < 0.05).all()
    assert result.to_frame()["p_fwe"].notna().sum() == result.active.sum()

    rng = np.random.default_rng(3)
    labels = np.r_[np.ones(10), np.zeros(10)].astype(int)
    min_p = [
        np.nanmin(
            univariate_contrast(
                rng.standard_normal((20, 30)), labels, n_permutations=19, seed=s
            ).p_fwe
        )
        for s in range(200)
    ]
    assert permutation_ks_p(min_p, 19) > 0.01


def test_permute_labels_respects_groups_and_strata() -> None:
    rng = np.random.default_rng(4)
    labels = np.repeat([1, 0, 1, 0, 1, 0], 2)
    pure = np.repeat(np.arange(6), 2)
    for _ in range(20):
        perm = permute_labels(labels, rng, pure)
        assert (perm[::2] == perm[1::2]).all() and perm.sum() == labels.sum()
    matched = np.arange(12) // 2  # every group has one target and one reference item
    labels_m = np.tile([1, 0], 6)
    perm = permute_labels(labels_m, rng, matched)
    assert (perm[::2] + perm[1::2] == 1).all()
    strata = np.arange(12) % 3
    perm = permute_labels(labels, rng, strata=strata)
    for s in range(3):
        assert perm[strata == s].sum() == labels[strata == s].sum()


def test_bootstrap_indices_stratify_and_keep_groups_whole() -> None:
    rng = np.random.default_rng(5)
    labels = np.repeat([1, 0], 6)
    groups = np.arange(12) // 2
    for _ in range(20):
        idx = bootstrap_indices(labels, rng, groups)
        assert (labels[idx] == 1).sum() == 6 and len(idx) == 12
        assert (groups[idx][::2] == groups[idx][1::2]).all()


def test_check_labels_rejects_bad_input() -> None:
    with pytest.raises(CogsaeError):
        check_labels(np.array([1, 0, 2, 0]), 4)
    with pytest.raises(CogsaeError):
        check_labels(np.array([1, 0, 0, 0]), 4)
    with pytest.raises(CogsaeError):
        check_labels(np.array([1, 0]), 4)


def test_factorial_glm_equals_statsmodels_ols() -> None:
    rng = np.random.default_rng(6)
    outcome = np.repeat(["success", "failure"], 12)
    tense = np.tile(["past", "future"], 12)
    y = rng.standard_normal((24, 5))
    y[:, 0] += 2 * (outcome == "success") + (outcome == "success") * (tense == "past")
    y[:, 4] = 0
    design = {"outcome": outcome, "tense": tense}
    result = factorial_glm(y, design, contrasts={"success_past": [0, 1, 1, 1]})
    assert result.contrasts == ["outcome", "tense", "outcome:tense", "success_past"]
    x, columns = effect_coded_design(design)
    assert columns == ["intercept", "outcome", "tense", "outcome:tense"]
    for u in (0, 2):
        fit = sm.OLS(y[:, u], x).fit()
        np.testing.assert_allclose(result.t[:3, u], fit.tvalues[1:])
        np.testing.assert_allclose(result.p[:3, u], fit.pvalues[1:])
        test = fit.t_test([0, 1, 1, 1])
        assert result.t[3, u] == pytest.approx(test.tvalue.item())
    assert np.isnan(result.t[:, 4]).all() and result.df == 20
    frame = result.to_frame()
    assert len(frame) == 4 * 5
    q_outcome = multipletests(result.p[0, :4], method="fdr_bh")[1]
    np.testing.assert_allclose(result.q[0, :4], q_outcome)


def test_factorial_glm_rejects_factor_without_two_levels() -> None:
    with pytest.raises(CogsaeError, match="exactly 2 levels"):
        factorial_glm(np.zeros((6, 2)), {"f": np.array(list("abcabc"))})
