"""Pooling across concepts: calibration of the pooled claim test, its interval, the sign
test and the per-concept test on synthetic concepts, and the readout summaries.

Calibration tests count rejections at alpha = 0.05 over many independent synthetic banks
of concepts and accept when the count lies inside the central 99.9% binomial band around
0.05, with fixed seeds. Two generators: the normal model itself (d_c ~ N(mu_c, v_c),
the reported variance estimated on J - 1 degrees of freedom) and per-fold AUROC
differences of repeated cross-validation, equicorrelated across the J folds with the
correlation n_test / n that the corrected variance assumes (under it the naive variance
s^2 / J is far too small, as the last test shows).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cogsae.analysis.pooling import (
    PairedDifference,
    holm_corrected,
    leave_one_out_best,
    mean_interval,
    mean_ranks,
    paired_difference,
    pool,
    win_counts,
)
from tests.helpers import binomial_band

ALPHA = 0.05
REPEATS, FOLDS = 10, 5
J = REPEATS * FOLDS
TEST_FRACTION = 1 / FOLDS
N_BANKS = 600
N_CONCEPTS = 24


def normal_bank(
    rng: np.random.Generator, mean: float, tau: float, k: int = N_CONCEPTS
) -> list[PairedDifference]:
    """k concepts from the random-effects model: true differences N(mean, tau^2), sampling
    SDs between 0.01 and 0.06, each variance reported as a chi^2_{J-1} estimate."""
    true = rng.normal(mean, tau, k)
    v = rng.uniform(0.01, 0.06, k) ** 2
    d = rng.normal(true, np.sqrt(v))
    v_hat = v * rng.chisquare(J - 1, k) / (J - 1)
    p = 2 * stats.t.sf(np.abs(d) / np.sqrt(v_hat), J - 1)
    return [PairedDifference(*x, np.nan, np.nan) for x in zip(d, v_hat, p, strict=True)]


def fold_bank(
    rng: np.random.Generator, mean: float, tau: float, k: int = N_CONCEPTS
) -> list[PairedDifference]:
    """k concepts as two readouts' per-fold AUROCs [repeats, folds]: readout B's scores
    around 0.8, A's = B's + the concept's true difference + fold noise whose correlation
    between folds is n_test / n (a shared component of variance rho sigma^2), so the
    corrected variance is unbiased."""
    return [paired_difference(a, b, TEST_FRACTION) for a, b in fold_scores(rng, mean, tau, k)]


def fold_scores(
    rng: np.random.Generator, mean: float, tau: float, k: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The per-fold AUROCs (A, B) [repeats, folds] of `fold_bank`'s k concepts."""
    rho = TEST_FRACTION
    sigma = rng.uniform(0.02, 0.1, (k, 1, 1))
    shared = rng.normal(0, 1, (k, 1, 1)) * sigma * np.sqrt(rho)
    noise = shared + rng.normal(0, 1, (k, REPEATS, FOLDS)) * sigma * np.sqrt(1 - rho)
    b = 0.8 + rng.normal(0, 0.03, (k, REPEATS, FOLDS))
    a = b + rng.normal(mean, tau, (k, 1, 1)) + noise
    return list(zip(a, b, strict=True))


BANKS = {"normal": normal_bank, "folds": fold_bank}


@pytest.mark.parametrize(("generator", "tau"), [("normal", 0.0), ("normal", 0.04), ("folds", 0.04)])
def test_pooled_test_rejects_at_the_nominal_rate(generator: str, tau: float) -> None:
    """No true difference (tau 0), or heterogeneous true differences averaging zero."""
    rng = np.random.default_rng(21 + int(100 * tau) + len(generator))
    pooled = [pool(BANKS[generator](rng, 0.0, tau)) for _ in range(N_BANKS)]
    rejected = sum(p.p < ALPHA for p in pooled)
    low, high = binomial_band(N_BANKS)
    assert low <= rejected <= high, f"{rejected / N_BANKS:.3f} rejected"
    # the interval is the test's: it excludes 0 exactly when p < alpha
    assert sum(not p.ci_low <= 0 <= p.ci_high for p in pooled) == rejected
    if tau > 0:
        assert np.median([p.tau2 for p in pooled]) > tau**2 / 2  # heterogeneity is seen
        assert np.median([p.i2 for p in pooled]) > 0.3


@pytest.mark.parametrize(("mean", "tau", "k"), [(0.05, 0.03, N_CONCEPTS), (-0.02, 0.05, 8)])
def test_pooled_interval_covers_the_true_mean(mean: float, tau: float, k: int) -> None:
    rng = np.random.default_rng(5 + k)
    pooled = [pool(normal_bank(rng, mean, tau, k)) for _ in range(N_BANKS)]
    covered = np.mean([p.ci_low <= mean <= p.ci_high for p in pooled])
    assert covered >= 0.93, f"coverage {covered:.3f}"
    assert abs(np.mean([p.effect for p in pooled]) - mean) < 0.01  # unbiased for the mean


def test_sign_and_per_concept_tests_are_calibrated_under_the_null() -> None:
    """The sign test (discrete: at most nominal) and the per-concept corrected t-test that
    counts wins and losses (exactly t_{J-1} under equicorrelated folds); the naive
    variance s^2 / J of the same folds rejects far too often, so the simulated correlation
    between folds is what the corrected variance corrects."""
    rng = np.random.default_rng(3)
    n_banks = N_BANKS // 3
    decided = naive = signs = 0
    for _ in range(n_banks):
        scores = fold_scores(rng, 0.0, 0.0, N_CONCEPTS)
        pooled = pool([paired_difference(a, b, TEST_FRACTION) for a, b in scores])
        assert pooled.wins + pooled.ties + pooled.losses == pooled.n_concepts == N_CONCEPTS
        decided += pooled.wins + pooled.losses
        signs += pooled.sign_p < ALPHA
        d = np.stack([(a - b).ravel() for a, b in scores])  # [concepts, folds]
        t = d.mean(axis=1) / np.sqrt(d.var(axis=1, ddof=1) / J)
        naive += int((2 * stats.t.sf(np.abs(t), J - 1) < ALPHA).sum())
    low, high = binomial_band(N_CONCEPTS * n_banks)
    assert low <= decided <= high, f"{decided / (N_CONCEPTS * n_banks):.3f} decided"
    assert naive > 3 * high
    assert signs <= binomial_band(n_banks)[1]


def test_pool_edge_cases() -> None:
    same = PairedDifference(0.1, 0.01, 0.3, np.nan, np.nan)
    flat = pool([same] * 5)  # identical concepts: no heterogeneity, mean = the value
    assert flat.effect == pytest.approx(0.1) and flat.tau2 == 0 and flat.i2 == 0
    assert flat.sign_p == pytest.approx(2 * 0.5**5)
    degenerate = PairedDifference(0.0, 0.0, 1.0, 0.0, 0.0)  # readouts agree on every fold
    one = pool([same, degenerate])
    assert one.n_pooled == 1 and np.isnan(one.p) and one.ties == 2
    # a paired difference of identical folds follows ensemble.compare's conventions
    folds = np.full((2, 5), 0.7)
    assert paired_difference(folds, folds, 0.2).p == 1.0
    assert paired_difference(folds + 0.1, folds, 0.2).p == 0.0
    # with the AUROC step of a test fold, equal folds get the variance of one step apart
    ceiling = paired_difference(folds, folds, 0.2, step=0.01)
    assert ceiling.v == pytest.approx((1 / 10 + 0.25) * 0.01**2 / 10) and ceiling.p == 1.0
    assert 0 < paired_difference(folds + 0.1, folds, 0.2, step=0.01).p < 1e-6
    spread = np.random.default_rng(1).normal(0.7, 0.05, (2, 5))
    assert paired_difference(spread, folds, 0.2, step=0.01) == paired_difference(spread, folds, 0.2)
    assert holm_corrected([0.01, np.nan, 0.04]) == pytest.approx([0.02, np.nan, 0.04], nan_ok=True)


def test_paired_difference_uses_the_corrected_variance() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.8, 0.05, (REPEATS, FOLDS)), rng.normal(0.75, 0.05, (REPEATS, FOLDS))
    diff = paired_difference(a, b, TEST_FRACTION)
    d = (a - b).ravel()
    assert diff.d == pytest.approx(d.mean())
    assert diff.v == pytest.approx((1 / J + 0.25) * d.var(ddof=1))
    assert diff.p == pytest.approx(2 * stats.t.sf(abs(d.mean()) / np.sqrt(diff.v), J - 1))


@pytest.mark.parametrize(("k", "shape"), [(24, (3.0, 1.0)), (8, (8.0, 2.0))])
def test_bootstrap_mean_interval_covers(k: int, shape: tuple[float, float]) -> None:
    """Mean AUROC over concepts (skewed per-concept AUROCs): the studentized bootstrap
    over concepts covers the population mean at about the nominal level."""
    rng = np.random.default_rng(k)
    a, b = shape
    true = a / (a + b)
    hits = []
    for _ in range(N_BANKS):
        _, low, high = mean_interval(rng.beta(a, b, k), rng, n_boot=999)
        hits.append(low <= true <= high)
    low_band, _ = binomial_band(N_BANKS, 0.95)
    assert sum(hits) >= low_band, f"coverage {np.mean(hits):.3f}"
    assert np.isnan(mean_interval(np.array([0.7, 0.8, 0.9, 0.6]), rng)[1])  # too few concepts


def test_bootstrap_mean_interval_with_ceiling_ties() -> None:
    """Concepts at the AUROC ceiling (ties): resamples of tied values have no spread and
    are dropped, so the interval stays finite, inside [0, 1] and around the mean."""
    rng = np.random.default_rng(0)
    for values in ([1.0, 1.0, 1.0, 0.99, 0.99], [1.0] * 20 + [0.9, 0.95, 0.97]):
        mean, low, high = mean_interval(np.array(values), rng)
        assert 0.5 < low <= mean <= high <= 1.0
    assert mean_interval(np.full(6, 0.98), rng) == pytest.approx((0.98, 0.98, 0.98))


def test_readout_summaries() -> None:
    table = pd.DataFrame(
        {"a": [0.9, 0.8, 0.7], "b": [0.6, 0.85, np.nan], "c": [0.5, 0.5, 0.6]},
        index=["x", "y", "z"],
    )
    assert mean_ranks(table).to_dict() == pytest.approx({"a": 4 / 3, "b": 1.5, "c": 8 / 3})
    wins = win_counts(table)
    assert wins.loc["a", "b"] == 1 and wins.loc["b", "a"] == 1 and wins.loc["a", "c"] == 3
    assert wins.loc["c", "b"] == 0 and np.diag(wins).sum() == 0
    best = leave_one_out_best(table)
    assert best["x"] == 0.6  # b's mean over y, z is 0.85 > a's 0.75: b is scored on x
    assert best["y"] == 0.8 and best["z"] == 0.7  # over x, z or x, y: a wins
