"""Set-level RSA selectors: where each selection method should win, and null calibration.

Planted data: eight redundant copies of one strong unit against complementary weaker
units (the set-level selectors must skip the copies, the per-unit contrast cannot), and a
plain mean shift in independent units (the contrast, the optimal per-unit test there,
must at least tie). Calibration: on label-shuffled noise the permutation p of the RSA
readouts (selection re-run inside every fold and permutation) rejects at the nominal rate.
"""

from __future__ import annotations

import numpy as np
import pytest

from cogsae.activations import Activations
from cogsae.analysis.cv import make_plan
from cogsae.analysis.ensemble import MethodResult, SelectedL1, evaluate
from cogsae.analysis.selection import SELECTORS
from cogsae.constants import CONTRAST, RSA_CATEGORICAL, RSA_DISCRIMINATIVE
from tests.helpers import binomial_band, permutation_ks_p

RSA = (RSA_DISCRIMINATIVE, RSA_CATEGORICAL)
COPIES = np.arange(8)
COMPLEMENTARY = np.arange(8, 16)


def redundant_set(seed: int, n_items: int = 80, n_units: int = 60) -> Activations:
    """Units 0-7: one strong signal (shift 1.2 SD) plus tiny private noise; units 8-15:
    independent weaker signals (0.8 SD); the rest noise. Labels: first half target."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([1, 0], n_items // 2)
    values = rng.standard_normal((n_items, n_units))
    shared = rng.standard_normal(n_items) + 1.2 * labels
    values[:, COPIES] = shared[:, None] + 0.05 * rng.standard_normal((n_items, COPIES.size))
    values[:, COMPLEMENTARY] += 0.8 * labels[:, None]
    return Activations(values[:, None, :].astype(np.float32), np.ones((n_items, 1), bool), "raw")


def _evaluate(acts: Activations, labels: np.ndarray, seed: int) -> dict[str, MethodResult]:
    plan = make_plan(labels, n_repeats=2, n_permutations=0, seed=seed)
    readouts = [SelectedL1(method) for method in (CONTRAST, *RSA)]
    return {r.method: r for r in evaluate(readouts, acts, plan, progress=False)}


def test_set_level_selection_skips_redundant_copies_and_decodes_better() -> None:
    """Top-|t| takes (nearly) all eight copies (one signal); the set-level RSA selectors take
    a few and fill the set with complementary units, which decode the concept better."""
    labels = np.repeat([1, 0], 40)
    gains = {method: [] for method in RSA}
    for seed in range(4):
        results = _evaluate(redundant_set(seed), labels, seed)
        copies = {
            m: np.mean([np.isin(u, COPIES).sum() for u in r.selected_units])
            for m, r in results.items()
        }
        assert copies[CONTRAST] >= 6
        for method in RSA:
            assert copies[method] <= 4, (method, copies)
            gains[method].append(results[method].auroc - results[CONTRAST].auroc)
    for method in RSA:
        assert np.mean(gains[method]) > 0.04, (method, gains[method])


def test_contrast_at_least_ties_on_a_plain_mean_shift() -> None:
    """Independent units with a mean shift and independent noise: no geometry beyond the
    shift, so the per-unit contrast is as good as it gets and set-level RSA cannot beat it."""
    n_items, n_units = 80, 60
    labels = np.repeat([1, 0], n_items // 2)
    diffs = {method: [] for method in RSA}
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        values = rng.standard_normal((n_items, 1, n_units))
        values[:, :, :8] += 0.6 * labels[:, None, None]
        acts = Activations(values.astype(np.float32), np.ones((n_items, 1), bool), "raw")
        results = _evaluate(acts, labels, seed)
        for method in RSA:
            diffs[method].append(results[CONTRAST].auroc - results[method].auroc)
    for method in RSA:
        assert np.mean(diffs[method]) > -0.02, (method, diffs[method])


def test_single_set_selectors_match_the_planted_structure() -> None:
    """The single-set RSA selectors (the shared signature) see the same geometry."""
    acts = redundant_set(0)
    labels = np.repeat([1, 0], 40)
    rng = np.random.default_rng(0)
    contrast = SELECTORS[CONTRAST](acts.values, acts.mask, labels, 8, rng=rng).units
    assert set(contrast.tolist()) == set(COPIES.tolist())
    for method in RSA:
        units = SELECTORS[method](acts.values, acts.mask, labels, 8, rng=rng).units
        assert np.isin(units, COPIES).sum() <= 4, (method, units)
        assert np.isin(units, COMPLEMENTARY).sum() >= 4, (method, units)


@pytest.mark.parametrize("method", RSA)
def test_rsa_readouts_are_calibrated_on_label_shuffled_data(method: str) -> None:
    """Label-shuffled noise with correlated units (so the noise covariance matters): the
    upper-tail permutation p of the RSA readout rejects at the nominal 5% (binomial band)
    and is uniform (KS), so nothing leaks from selection into the test."""
    n_nulls, n_perm, n_items, n_units = 60, 19, 40, 40
    p_values = []
    for seed in range(n_nulls):
        rng = np.random.default_rng(1000 + seed)
        labels = rng.permutation(np.repeat([1, 0], n_items // 2))
        common = rng.standard_normal((n_items, 1))
        values = rng.standard_normal((n_items, 2, n_units)) + 0.7 * common[:, :, None]
        acts = Activations(values.astype(np.float32), np.ones((n_items, 2), bool), "raw")
        plan = make_plan(labels, n_repeats=1, n_permutations=n_perm, seed=seed)
        (result,) = evaluate([SelectedL1(method)], acts, plan, stop_after=None, progress=False)
        p_values.append(result.p_value)
    rejected = sum(p <= 0.05 for p in p_values)
    low, high = binomial_band(n_nulls)
    assert low <= rejected <= high, (rejected, p_values)
    assert permutation_ks_p(p_values, n_perm) > 0.001
