"""Calibration of group-respecting statistics (grouped contrasts, permutations) on null data.

Each test counts rejections at alpha = 0.05 over many independent null tests and accepts
when the count lies inside the central 99.9% binomial band around 0.05, with fixed seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cogsae.analysis.contrasts import (
    groups_warning,
    two_sided_p,
    unit_of_analysis,
    univariate_contrast,
    welch_t,
)
from cogsae.analysis.resampling import label_pure, permutation_blocks, permute_labels
from cogsae.analysis.rsa import categorical_rsa, discriminative_rsa
from tests.helpers import binomial_band, permutation_ks_p

ALPHA = 0.05


def _grouped_null(
    labels: np.ndarray, groups: np.ndarray, n_units: int, rng: np.random.Generator
) -> np.ndarray:
    """[items, units] null data: item noise, a strong group effect (SD 2), no condition effect."""
    n_groups = int(groups.max()) + 1
    return (
        rng.standard_normal((len(labels), n_units))
        + 2.0 * rng.standard_normal((n_groups, n_units))[groups]
    )


@pytest.mark.parametrize(
    ("design", "labels", "unit"),
    [
        ("label-pure", np.repeat([1, 0], 24), "group"),  # 12 groups of 4, one condition each
        ("matched", np.tile([1, 1, 0, 0], 12), "paired-group"),  # 12 groups, 2 + 2 items
    ],
)
def test_grouped_contrast_is_calibrated_under_the_null(
    design: str, labels: np.ndarray, unit: str
) -> None:
    groups = np.repeat(np.arange(12), 4)
    rng = np.random.default_rng(11)
    n_sets, n_units = 20, 1000
    new = old = 0
    for _ in range(n_sets):
        x = _grouped_null(labels, groups, n_units, rng)
        result = univariate_contrast(x, labels, groups=groups)
        assert result.unit_of_analysis == unit
        new += int((result.p <= ALPHA).sum())
        old += int((two_sided_p(*welch_t(x, labels)) <= ALPHA).sum())
    low, high = binomial_band(n_sets * n_units)
    assert low <= new <= high, f"{design}: {new / (n_sets * n_units):.3f} rejected"
    # the item-level Welch test ignores the groups: anti-conservative with label-pure
    # groups, conservative with matched ones (the group effect cancels in the difference)
    assert not low <= old <= high


def test_grouped_max_t_permutation_is_uniform_under_the_null() -> None:
    rng = np.random.default_rng(12)
    groups = np.repeat(np.arange(12), 4)
    for labels in (np.repeat([1, 0], 24), np.tile([1, 1, 0, 0], 12)):
        min_p = [
            np.nanmin(
                univariate_contrast(
                    _grouped_null(labels, groups, 20, rng),
                    labels,
                    groups=groups,
                    n_permutations=19,
                    seed=s,
                ).p_fwe
            )
            for s in range(150)
        ]
        assert permutation_ks_p(min_p, 19) > 0.01


def test_paired_contrast_equals_scipy_on_group_differences() -> None:
    rng = np.random.default_rng(13)
    labels = np.tile([1, 0, 0], 8)  # 8 groups: one target and two reference items each
    groups = np.repeat(np.arange(8), 3)
    x = rng.standard_normal((24, 5))
    result = univariate_contrast(x, labels, groups=groups)
    diff = x[labels == 1] - (x[1::3] + x[2::3]) / 2
    ref = stats.ttest_1samp(diff, 0.0)
    np.testing.assert_allclose(result.t, ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(result.p, ref.pvalue, rtol=1e-9)
    assert (result.df == 7).all() and result.n_observations == 8


def test_label_pure_contrast_equals_welch_on_group_means() -> None:
    rng = np.random.default_rng(14)
    labels = np.repeat([1, 0], [9, 12])
    groups = np.repeat(np.arange(7), 3)  # groups 0-2 target, 3-6 reference
    x = rng.standard_normal((21, 4))
    result = univariate_contrast(x, labels, groups=groups)
    group_means = x.reshape(7, 3, 4).mean(1)
    ref = stats.ttest_ind(group_means[:3], group_means[3:], equal_var=False)
    np.testing.assert_allclose(result.t, ref.statistic, rtol=1e-10)
    assert result.unit_of_analysis == "group" and result.n_observations == 7


def test_label_purity_helpers() -> None:
    labels = np.repeat([1, 0], 4)
    pure, matched = np.repeat(np.arange(4), 2), np.tile(np.arange(4), 2)
    assert label_pure(labels, pure) and not label_pure(labels, matched)
    assert unit_of_analysis(labels, None) == "item"
    assert unit_of_analysis(labels, pure) == "group"
    assert unit_of_analysis(labels, matched) == "paired-group"
    assert unit_of_analysis(labels, np.array([0, 0, 1, 1, 2, 3, 3, 3])) == "group"
    assert "4 groups (not the 8 items)" in groups_warning(labels, pure)
    assert groups_warning(labels, matched) is None and groups_warning(labels, None) is None


# --------------------------------------------------------------------------- factorial


def _factorial(n_templates: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 2x2 with every template in all four cells: factor A, factor B, template ids [items]."""
    a = np.tile([1, 1, 0, 0], n_templates)
    b = np.tile([1, 0, 1, 0], n_templates)
    return a, b, np.repeat(np.arange(n_templates), 4)


def test_permutation_blocks_keep_the_other_factor_balanced() -> None:
    a, b, templates = _factorial(6)
    design = {"a": a, "b": b}
    blocks = permutation_blocks(design, "a", templates)
    assert len(np.unique(blocks)) == 12  # template x level of b
    rng = np.random.default_rng(15)
    for _ in range(20):
        perm = permute_labels(a, rng, templates, blocks=blocks)
        for block in np.unique(blocks):
            assert perm[blocks == block].sum() == 1  # one a-level each per (template, b)
        folds = templates % 3  # strata (cross-validation folds) hold whole templates
        perm = permute_labels(a, rng, templates, strata=folds, blocks=blocks)
        assert all(perm[blocks == block].sum() == 1 for block in np.unique(blocks))
    assert {tuple(permute_labels(a, rng, templates, blocks=blocks)[:4]) for _ in range(40)} == {
        (1, 0, 0, 1),
        (1, 1, 0, 0),
        (0, 1, 1, 0),
        (0, 0, 1, 1),
    }  # the 2 x 2 swaps of one template, each reached
    assert permutation_blocks({"a": a}, "a", templates) is None
    np.testing.assert_array_equal(permutation_blocks(design, "a"), b)  # cells of b

    # groups label-pure for a (each holds one a level, both b levels) move whole together
    pure_groups = np.repeat(np.arange(12), 2)
    a_pure, b_pure = np.repeat([1, 0], 12), np.tile([1, 0], 12)
    blocks = permutation_blocks({"a": a_pure, "b": b_pure}, "a", pure_groups)
    assert len(np.unique(blocks)) == 1
    perm = permute_labels(a_pure, rng, pure_groups, blocks=blocks)
    assert (perm[::2] == perm[1::2]).all() and perm.sum() == 12


def _permutation_rejections(blocks_of: str, n_sets: int, n_units: int) -> int:
    """Rejections of H0 (no effect of factor A) by a mean-difference permutation test.

    Null data: a strong template effect and a strong effect of factor B (3 SD), none of A.
    ``blocks_of`` "other factors" permutes A within template x B (``permutation_blocks``);
    "none" is the old scheme (within template only), which lets B leak into A's null.
    """
    a, b, templates = _factorial(12)
    blocks = permutation_blocks({"a": a, "b": b}, "a", templates) if blocks_of != "none" else None
    rng = np.random.default_rng(16)
    n_perm = 99
    rejections = 0
    for _ in range(n_sets):
        x = (
            rng.standard_normal((len(a), n_units))
            + 2.0 * rng.standard_normal((12, n_units))[templates]
            + 3.0 * b[:, None]
        )
        perms = np.stack([permute_labels(a, rng, templates, blocks=blocks) for _ in range(n_perm)])
        contrast = (2.0 * np.vstack([a, perms]) - 1.0) / (len(a) / 2)
        stat = np.abs(contrast @ x)  # |mean of A=1 minus mean of A=0| per unit
        p = (1 + (stat[1:] >= stat[0]).sum(0)) / (1 + n_perm)
        rejections += int((p <= ALPHA).sum())
    return rejections


def test_factorial_permutation_within_other_factor_is_calibrated() -> None:
    n_sets, n_units = 40, 50
    low, high = binomial_band(n_sets * n_units)
    new = _permutation_rejections("other factors", n_sets, n_units)
    assert low <= new <= high, f"{new / (n_sets * n_units):.3f} rejected"
    # the old scheme's null is inflated by the B effect, so it (almost) never rejects
    assert _permutation_rejections("none", n_sets, n_units) < low


def test_population_rsa_permutes_within_factorial_blocks(monkeypatch) -> None:
    """Categorical and discriminative RSA hand the factorial blocks to every permutation, so
    permuting factor A keeps factor B balanced; on null data for A with a strong B effect
    the categorical-RSA p stays calibrated."""
    a, b, templates = _factorial(12)
    blocks = permutation_blocks({"a": a, "b": b}, "a", templates)
    seen = []

    def spy(labels, rng, groups=None, strata=None, blocks=None):
        perm = permute_labels(labels, rng, groups, strata=strata, blocks=blocks)
        seen.append(perm)
        return perm

    rng = np.random.default_rng(21)
    p_values = []
    with monkeypatch.context() as patch:
        patch.setattr("cogsae.analysis.rsa.permute_labels", spy)
        for seed in range(30):
            x = rng.standard_normal((len(a), 20)) + 3.0 * b[:, None]
            rsa = categorical_rsa(
                x, a, groups=templates, blocks=blocks, n_permutations=99, n_bootstrap=1, seed=seed
            )
            p_values.append(rsa.p)
        discriminative_rsa(x, a, groups=templates, blocks=blocks, n_folds=3, n_permutations=9)
    assert len(seen) == 30 * 99 + 9
    for perm in seen:  # every null keeps one A=1 item per (template, B) cell
        assert all(perm[blocks == block].sum() == 1 for block in np.unique(blocks))
    assert 0.35 < np.mean(p_values) < 0.65 and np.mean(np.array(p_values) <= 0.05) <= 0.1
