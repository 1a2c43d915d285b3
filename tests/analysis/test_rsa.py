"""Population RSA and per-unit RSA scores against rsatoolbox and brute force; null calibration."""

from __future__ import annotations

import numpy as np
import pytest
from rsatoolbox.data import Dataset
from rsatoolbox.rdm import calc_rdm, compare

from cogsae.analysis.rsa import (
    _Crossnobis,
    categorical_rsa,
    discriminative_rsa,
    unit_rdm,
)
from cogsae.analysis.unit_rsa import unit_rsa_scores
from cogsae.errors import CogsaeError
from tests.helpers import permutation_ks_p, ragged_profiles


def _profiles(n_items: int = 40, n_positions: int = 6, n_units: int = 80, seed: int = 0):
    """[items, positions, units] masked noise profiles (`ragged_profiles`)."""
    values, mask, labels = ragged_profiles(n_items, n_positions, n_units, seed=seed)
    return values * mask[:, :, None], mask, labels


def _brute_force_scores(values: np.ndarray, mask: np.ndarray, labels: np.ndarray, kind: str):
    """Per-unit scores from explicit RDMs (mean squared difference over shared positions)."""
    i, j = np.triu_indices(len(labels), k=1)
    shared = mask[i] & mask[j]
    keep = shared.any(1)
    i, j, shared = i[keep], j[keep], shared[keep]
    between = labels[i] != labels[j]
    out = []
    for u in range(values.shape[2]):
        x = values[:, :, u].astype(np.float64)
        d = (((x[i] - x[j]) ** 2) * shared).sum(1) / shared.sum(1)
        if kind == "categorical":
            out.append(np.corrcoef(d, between)[0, 1] if d.std() > 1e-12 else 0.0)
        else:
            within = [d[~between & (labels[i] == c)].mean() for c in (1, 0)]
            out.append((d[between].mean() - np.mean(within)) / d.mean() if d.mean() > 0 else 0.0)
    return np.array(out)


@pytest.mark.parametrize("kind", ["categorical", "discriminative"])
def test_unit_scores_equal_brute_force_with_masks(kind: str) -> None:
    values, mask, labels = _profiles()
    values[:, :, 5] = 0.0  # dead unit
    values[:, :, 6] = 3.0 * mask  # constant over items
    values[:, :, 7] += 100.0 * mask  # large offset
    values[labels == 1, :, 10:20] += mask[labels == 1, :, None]
    scores = unit_rsa_scores(values.astype(np.float16), mask, labels, kind, chunk_size=32)
    expected = _brute_force_scores(values.astype(np.float16), mask, labels, kind)
    np.testing.assert_allclose(scores, expected, atol=2e-5)
    assert scores[5] == 0 and scores[6] == 0 and np.isfinite(scores).all()


def test_unit_categorical_score_equals_rsatoolbox_without_masks() -> None:
    values, _, labels = _profiles(n_units=10)
    mask = np.ones(values.shape[:2], dtype=bool)
    values = np.random.default_rng(1).standard_normal(values.shape)
    model = (labels[:, None] != labels[None, :]).astype(float)
    model_rdm = unit_rdm(model, "euclidean")  # any RDMs container; replaced below
    model_rdm.dissimilarities = model[np.triu_indices(len(labels), k=1)][None, :]
    expected = [
        compare(calc_rdm(Dataset(values[:, :, u]), method="euclidean"), model_rdm, "corr")[0, 0]
        for u in range(values.shape[2])
    ]
    np.testing.assert_allclose(unit_rsa_scores(values, mask, labels), expected, atol=1e-5)


def test_unit_discriminative_score_is_centred_on_zero_under_null() -> None:
    values, mask, labels = _profiles(n_units=2000, seed=2)
    scores = unit_rsa_scores(values, mask, labels, "discriminative")
    assert abs(scores.mean()) < 4 * scores.std() / np.sqrt(len(scores))


def test_unit_rdm_metric_defaults_by_space() -> None:
    means = np.random.default_rng(3).standard_normal((8, 5))
    assert unit_rdm(means).dissimilarity_measure == "correlation"
    assert unit_rdm(means, space="sae").dissimilarity_measure == "squared euclidean"
    means[2] = 0.0
    with pytest.raises(CogsaeError, match="euclidean"):
        unit_rdm(means, space="raw")


@pytest.mark.parametrize("method", ["rho-a", "pearson"])
def test_categorical_rsa_equals_rsatoolbox_compare(method: str) -> None:
    values, mask, labels = _profiles(n_units=30)
    means = values.sum(1) / mask.sum(1)[:, None]
    means[labels == 1, :10] += 0.7
    result = categorical_rsa(means, labels, method=method, n_permutations=99, n_bootstrap=50)
    expected = compare(result.rdms, result.model.rdm_obj, "rho-a" if method == "rho-a" else "corr")
    assert result.r == pytest.approx(expected[0, 0])
    assert result.p < 0.05 and result.ci_low < result.r < result.ci_high
    assert np.isfinite(result.bootstrap).all()


def test_categorical_rsa_permutation_p_is_uniform_under_null() -> None:
    rng = np.random.default_rng(4)
    labels = np.arange(16) % 2
    p = [
        categorical_rsa(
            rng.standard_normal((16, 12)), labels, n_permutations=19, n_bootstrap=0, seed=s
        ).p
        for s in range(200)
    ]
    assert permutation_ks_p(p, 19, seed=99) > 0.01


# rsatoolbox's _build_rdms casts a NaN placeholder to int for integer descriptors.
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_crossnobis_equals_rsatoolbox_with_diagonal_training_noise() -> None:
    rng = np.random.default_rng(5)
    n_items, n_units, n_folds = 24, 7, 3
    labels = np.arange(n_items) % 2
    folds = np.arange(n_items) // 2 % n_folds
    halves = np.arange(n_items) // 6 % 2
    x = rng.standard_normal((n_items, n_units)) + 0.8 * labels[:, None] * (np.arange(n_units) < 3)
    x -= x.mean(0)
    between, within_target, _ = (
        d[0] for d in _Crossnobis(x, folds, n_units)(labels[None], halves[None])
    )
    for f in range(n_folds):
        train = folds != f
        resid = (
            x[train] - np.array([x[train & (labels == c)].mean(0) for c in (0, 1)])[labels[train]]
        )
        noise = np.diag(1 / ((resid**2).sum(0) / (train.sum() - 2)))
        split = {"split": (folds == f).astype(int)}
        data = Dataset(x, obs_descriptors={"cond": labels, **split})
        rdm = calc_rdm(data, "crossnobis", "cond", noise=noise, cv_descriptor="split")
        assert between[f] == pytest.approx(rdm.dissimilarities[0, 0], rel=1e-5)
        target = labels == 1
        half_data = Dataset(
            x[target],
            obs_descriptors={"cond": halves[target], "split": split["split"][target]},
        )
        rdm = calc_rdm(half_data, "crossnobis", "cond", noise=noise, cv_descriptor="split")
        assert within_target[f] == pytest.approx(rdm.dissimilarities[0, 0], rel=1e-5)


def test_discriminative_rsa_detects_effect_and_positive_edi() -> None:
    values, mask, labels = _profiles(n_items=40, n_units=50, seed=6)
    rng = np.random.default_rng(6)
    values += (
        rng.standard_normal((40, 1, 50)).astype(np.float32) * mask[:, :, None]
    )  # item identity
    values[labels == 1, :, :10] += 0.8 * mask[labels == 1, :, None]
    result = discriminative_rsa(values, labels, mask=mask, n_folds=4, n_permutations=99)
    assert result.between > result.within and result.p_between < 0.05 and result.p_difference < 0.05
    assert result.edi > 0 and result.fold_between.shape == (4,)
    groups = np.arange(40) // 2  # matched pairs: one target and one reference item each
    grouped = discriminative_rsa(values, labels, mask=mask, groups=groups, n_permutations=19)
    assert grouped.between > 0


def test_discriminative_rsa_is_unbiased_and_calibrated_under_null() -> None:
    rng = np.random.default_rng(7)
    labels = np.arange(20) % 2
    nulls = [
        discriminative_rsa(
            rng.standard_normal((20, 15)), labels, n_folds=2, n_permutations=19, seed=s
        )
        for s in range(200)
    ]
    between = np.array([r.between for r in nulls])
    assert abs(between.mean()) < 4 * between.std() / np.sqrt(len(between))
    for p in ([r.p_between for r in nulls], [r.p_difference for r in nulls]):
        assert permutation_ks_p(p, 19, seed=99) > 0.01


def test_edi_is_centred_on_zero_without_item_identity() -> None:
    rng = np.random.default_rng(8)
    labels = np.arange(30) % 2
    mask = np.ones((30, 6), dtype=bool)
    edi = np.array(
        [
            discriminative_rsa(
                rng.standard_normal((30, 6, 40), dtype=np.float32),
                labels,
                mask=mask,
                n_folds=2,
                n_permutations=0,
            ).edi
            for _ in range(40)
        ]
    )
    assert abs(edi.mean()) < 4 * edi.std() / np.sqrt(len(edi))
