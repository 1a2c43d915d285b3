"""Omnibus analysis of three levels: the per-unit Welch ANOVA and the one-vs-rest readouts
agree with reference implementations, are calibrated on null data (binomial bands around
the nominal 5%, interval coverage) and find a planted effect."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.oneway import anova_oneway

from cogsae.activations import Activations
from cogsae.analysis.cv import _cluster_strata, make_plan
from cogsae.analysis.ensemble import compare
from cogsae.analysis.omnibus import (
    LEVEL_SCORES,
    DenseOvR,
    LevelMoments,
    LevelSelectedL1,
    evaluate_levels,
    omnibus_anova,
)
from cogsae.analysis.resampling import permute_labels
from cogsae.analysis.selection import Standardized
from cogsae.errors import CogsaeError
from tests.helpers import binomial_band, permutation_ks_p

LEVELS = ["positive", "neutral", "negative"]


def _acts(x: np.ndarray) -> Activations:
    """Window means [items, units] as one-position activations of space "raw"."""
    return Activations(x[:, None, :].astype(np.float32), np.ones((len(x), 1), bool), "raw")


def _planted(
    seed: int,
    per_level: int = 12,
    n_units: int = 40,
    effect: float = 0.0,
    sds: tuple[float, float, float] = (0.5, 1.0, 2.0),
) -> tuple[np.ndarray, np.ndarray]:
    """[items, units] noise with level-specific SDs ``sds``; units 0-2 shift one level each
    by ``effect``. Returns (x, labels)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), per_level)
    x = rng.standard_normal((labels.size, n_units)) * np.array(sds)[labels, None]
    x[:, :3] += effect * (labels[:, None] == np.arange(3)[None, :])
    return x, labels


def test_welch_anova_matches_statsmodels_and_is_vectorized() -> None:
    x, labels = _planted(0, effect=3.0)
    x[:, 5] = 0.0  # inactive: untested
    result = omnibus_anova(x, labels, LEVELS)
    for u in (0, 1, 10):
        ref = anova_oneway([x[labels == lv, u] for lv in range(3)], use_var="unequal")
        assert result.F[u] == pytest.approx(ref.statistic, rel=1e-9)
        assert result.p[u] == pytest.approx(ref.pvalue, rel=1e-7)
        assert result.df2[u] == pytest.approx(ref.df[1], rel=1e-9)
    assert np.isnan(result.F[5]) and np.isnan(result.q[5]) and not result.active[5]
    assert result.df1 == 2 and result.unit_of_analysis == "item"
    assert set(np.flatnonzero(result.q < 0.05)) >= {0, 1, 2}
    assert list(result.to_frame().columns)[-3:] == [f"mean_{lv}" for lv in LEVELS]


def test_welch_anova_p_values_are_uniform_under_the_null() -> None:
    """Unequal level SDs (0.5, 1, 2), 12 items a level, 20 x 500 null units: rejections at 5%
    within the binomial band, and the p-values pass a KS test against U(0, 1)."""
    p = np.concatenate([omnibus_anova(_planted(s, n_units=500)[0], _planted(s)[1], LEVELS).p
                        for s in range(20)])  # fmt: skip
    low, high = binomial_band(p.size)
    assert low <= int((p <= 0.05).sum()) <= high, (p <= 0.05).mean()
    assert permutation_ks_p(list(p[:2000]), 10**9) > 0.001


def test_grouped_anova_uses_cell_means_and_stays_calibrated() -> None:
    """Label-pure groups of 4 items sharing a strong group offset: item-level F would reject
    far too often; F on group means keeps the nominal rate."""
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 16)
    groups = np.repeat(np.arange(12), 4)
    rejections, n_tests = 0, 0
    for _ in range(20):
        x = rng.standard_normal((48, 300)) + 2.0 * rng.standard_normal((12, 300))[groups]
        result = omnibus_anova(x, labels, LEVELS, groups=groups)
        assert result.unit_of_analysis == "group" and result.n_observations == 12
        rejections += int((result.p <= 0.05).sum())
        n_tests += 300
    low, high = binomial_band(n_tests)
    assert low <= rejections <= high, rejections / n_tests


def test_level_scores_match_their_definitions() -> None:
    """Batched F equals the per-unit ANOVA of the training items; the categorical score is
    the Pearson r of the unit's squared-difference RDM with the 0/1 category RDM."""
    x, labels = _planted(1, per_level=6, n_units=8, effect=1.0)
    data = Standardized.of(x)
    train = np.ones((1, labels.size), bool)
    train[0, [0, 7, 13]] = False
    moments = LevelMoments(data, train, labels[None], 3)
    idx = np.flatnonzero(train[0])
    f = LEVEL_SCORES["anova_f"](moments)[0]
    np.testing.assert_allclose(f, omnibus_anova(data.x[idx], labels[idx], LEVELS).F, rtol=1e-4)
    r = LEVEL_SCORES["rsa_categorical"](moments)[0]
    i, j = np.nonzero(~np.eye(idx.size, dtype=bool))
    model = labels[idx][i] != labels[idx][j]
    for u in range(8):
        z = data.x[idx, u]
        assert r[u] == pytest.approx(np.corrcoef((z[i] - z[j]) ** 2, model)[0, 1], abs=1e-5)
    top = LEVEL_SCORES["max_activation"](moments)[0]
    np.testing.assert_allclose(
        top, np.max([x[idx][labels[idx] == lv].mean(0) for lv in range(3)], axis=0), rtol=1e-5
    )


def test_multi_level_plans_stratify_by_level_and_keep_binary_folds() -> None:
    labels = np.repeat(np.arange(3), 10)
    plan = make_plan(labels, n_splits=5, n_repeats=3, n_permutations=20, seed=0, n_levels=3)
    for b in range(plan.n_permutations + 1):
        for split in plan.splits(b):
            for train, test in split:
                assert (
                    set(plan.labels_perm[b, test]) == set(plan.labels_perm[b, train]) == {0, 1, 2}
                )
    assert (np.bincount(plan.labels_perm[5], minlength=3) == 10).all()
    # two levels: the strata are those of the former rule (label if pure, else 2)
    rng = np.random.default_rng(0)
    binary = rng.integers(0, 2, 40)
    clusters = np.unique(rng.integers(0, 12, 40), return_inverse=True)[1]
    size, pos = np.bincount(clusters), np.bincount(clusters, weights=binary)
    former = np.where(pos == 0, 0, np.where(pos == size, 1, 2))
    np.testing.assert_array_equal(_cluster_strata(binary, clusters), former)
    with pytest.raises(CogsaeError, match="level indices"):
        make_plan(np.repeat([0, 1, 3], 10), n_levels=3)


def test_permutations_within_blocks_keep_each_blocks_levels() -> None:
    labels = np.tile(np.repeat(np.arange(3), 4), 2)
    blocks = np.repeat([0, 1], 12)
    groups = np.arange(24) // 2  # label-pure pairs, moved whole
    shuffled = permute_labels(labels, np.random.default_rng(0), groups, blocks=blocks)
    for block in (0, 1):
        members = blocks == block
        assert sorted(shuffled[members]) == sorted(labels[members])
    assert (shuffled[::2] == shuffled[1::2]).all()


@pytest.fixture(scope="module")
def planted() -> list:
    x, labels = _planted(7, per_level=15, n_units=60, effect=2.0, sds=(1.0, 1.0, 1.0))
    plan = make_plan(labels, n_splits=5, n_repeats=2, n_permutations=99, seed=0, n_levels=3)
    readouts = [LevelSelectedL1(m, 3) for m in (*LEVEL_SCORES, "random")] + [DenseOvR()]
    return evaluate_levels(readouts, _acts(x), plan, progress=False)


def test_a_planted_effect_is_found(planted: list) -> None:
    by_name = {r.method: r for r in planted}
    f = by_name["anova_f"]
    found = np.mean([len({0, 1, 2} & set(units.tolist())) / 3 for units in f.selected_units])
    assert found >= 0.9
    assert f.auroc > 0.8 and f.p_value <= 0.02 and f.auroc_ci[0] > 0.5
    assert by_name["rsa_categorical"].auroc > 0.75
    assert by_name["random"].auroc < f.auroc
    assert f.model.coef.shape == (3, 3) and f.model.intercept.shape == (3,)
    assert f.scores.shape == (2, 45)
    table = compare(planted, [("raw:anova_f", "raw:random")])
    assert table["diff"].iloc[0] > 0.2 and table["p"].iloc[0] < 0.05


def test_a_label_shuffle_run_is_not_significant() -> None:
    x, labels = _planted(7, per_level=15, n_units=60, effect=2.0, sds=(1.0, 1.0, 1.0))
    shuffled = np.random.default_rng(5).permutation(labels)
    plan = make_plan(shuffled, n_splits=5, n_repeats=2, n_permutations=99, seed=0, n_levels=3)
    (result,) = evaluate_levels([LevelSelectedL1("anova_f", 3)], _acts(x), plan, progress=False)
    assert result.p_value > 0.05 and result.auroc_ci[0] <= 0.5 <= result.auroc_ci[1]


def test_omnibus_permutation_p_and_interval_are_calibrated_under_the_null() -> None:
    """100 exchangeable null datasets (3 levels x 10 items, 20 units; a permutation null
    needs equal level distributions, unlike Welch's F), F selection re-run in every one of
    up to 39 permutations (stopping early as in a run): rejections at 5% within the
    binomial band, and the interval covers macro AUROC 0.5 at least at its nominal 95%
    minus the band's slack."""
    p_values, covered = [], []
    for seed in range(100):
        x, labels = _planted(100 + seed, per_level=10, n_units=20, sds=(1.0, 1.0, 1.0))
        plan = make_plan(labels, n_splits=3, n_repeats=1, n_permutations=39, seed=seed, n_levels=3)
        (result,) = evaluate_levels([LevelSelectedL1("anova_f", 2)], _acts(x), plan, progress=False)
        p_values.append(result.p_value)
        covered.append(result.auroc_ci[0] <= 0.5 <= result.auroc_ci[1])
    rejections = int(np.sum(np.asarray(p_values) <= 0.05))
    low, high = binomial_band(len(p_values))
    assert low <= rejections <= high, rejections / len(p_values)
    assert np.sum(covered) >= binomial_band(len(covered), rate=0.95)[0], np.mean(covered)
