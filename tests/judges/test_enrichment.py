"""Relevance enrichment over the base rate: its permutation p is calibrated under the null
(binomial band of the nominal rate) and rejects a planted enrichment."""

from __future__ import annotations

import numpy as np
import pytest

from cogsae.judges import NO_SCORE
from cogsae.judges.enrichment import relevance_enrichment
from tests.helpers import binomial_band

SCORE_MIXES = ([0.5, 0.3, 0.15, 0.05], [0.8, 0.15, 0.05, 0.0])


@pytest.mark.parametrize("probs", SCORE_MIXES)
def test_enrichment_p_rejects_at_the_nominal_rate_without_enrichment(probs: list[float]) -> None:
    """Top and random snippets' scores from one distribution of 0-3 scores (heavily tied):
    the one-sided p <= 0.05 in 5% of datasets, within a binomial band."""
    rng = np.random.default_rng(0)
    n_datasets = 600
    rejected = 0
    for _ in range(n_datasets):
        scores = rng.choice(4, size=20, p=probs)
        rejected += relevance_enrichment(scores[:10], scores[10:], rng, 100).p <= 0.05
    low, high = binomial_band(n_datasets)
    assert low <= rejected <= high


def test_enrichment_p_rejects_planted_enrichment() -> None:
    rng = np.random.default_rng(1)
    rejected = 0
    for _ in range(100):
        top = rng.choice(4, size=10, p=[0.1, 0.2, 0.3, 0.4])
        base = rng.choice(4, size=10, p=[0.6, 0.3, 0.1, 0.0])
        found = relevance_enrichment(top, base, rng, 200)
        assert found.enrichment == pytest.approx(top.mean() - base.mean())
        rejected += found.p <= 0.05
    assert rejected >= 90


def test_enrichment_leaves_out_missing_scores() -> None:
    rng = np.random.default_rng(2)
    found = relevance_enrichment(np.array([3, NO_SCORE, 3]), np.array([0, 0, NO_SCORE]), rng, 50)
    assert (found.top, found.base, found.enrichment) == (3.0, 0.0, 3.0)
    assert 0 < found.p <= 1
    none = relevance_enrichment(np.array([NO_SCORE]), np.array([1]), rng, 50)
    assert np.isnan(none.p) and np.isnan(none.top) and none.base == 1.0
