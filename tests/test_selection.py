"""Selectors: shared signature, planted-signal recovery, masking, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from cogsae.errors import CogsaeError
from cogsae.rsa import unit_rsa_scores
from cogsae.selection import (
    SELECTORS,
    Selection,
    contrast,
    max_activation,
    rsa_categorical,
    rsa_discriminative,
    top_k,
)

PLANTED = np.array([3, 17, 42, 77, 120])
HIGH_MEAN = np.array([5, 60, 99])


def _data(seed: int = 0):
    """[60 items, 8 positions, 150 units] with masks, planted effects and high-mean units."""
    rng = np.random.default_rng(seed)
    n_items, n_positions, n_units = 60, 8, 150
    labels = np.arange(n_items) % 2
    mask = np.arange(n_positions)[None, :] < rng.integers(3, n_positions + 1, n_items)[:, None]
    values = rng.standard_normal((n_items, n_positions, n_units)).astype(np.float32)
    values[:, :, PLANTED] += 1.5 * labels[:, None, None]
    values[:, :, HIGH_MEAN] += np.array([10.0, 12.0, 14.0])
    return values * mask[:, :, None], mask, labels


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_every_selector_has_the_shared_signature(name: str) -> None:
    values, mask, labels = _data()
    selection = SELECTORS[name](values, mask, labels, 6, rng=np.random.default_rng(0))
    assert isinstance(selection, Selection)
    assert selection.units.shape == (6,) and selection.scores.shape == (6,)
    assert len(set(selection.units.tolist())) == 6
    assert np.all(np.diff(selection.scores) <= 0)


@pytest.mark.parametrize("name", ["contrast", "rsa_categorical", "rsa_discriminative"])
def test_condition_selectors_rank_planted_units_first(name: str) -> None:
    values, mask, labels = _data()
    selection = SELECTORS[name](values, mask, labels, len(PLANTED), rng=np.random.default_rng(0))
    assert set(selection.units.tolist()) == set(PLANTED.tolist())


def test_contrast_auroc_option_ranks_planted_units_first() -> None:
    values, mask, labels = _data()
    selection = contrast(values, mask, labels, 5, rng=np.random.default_rng(0), statistic="auroc")
    assert set(selection.units.tolist()) == set(PLANTED.tolist())


def test_max_activation_finds_highest_mean_units() -> None:
    values, mask, labels = _data()
    selection = max_activation(values, mask, labels, 3, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(selection.units, HIGH_MEAN[::-1])


@pytest.mark.parametrize("name", ["contrast", "rsa_categorical", "rsa_discriminative"])
def test_masked_positions_never_enter(name: str) -> None:
    values, mask, labels = _data()
    polluted = values.copy()
    polluted[~mask] = 1e3 * np.random.default_rng(1).standard_normal((int((~mask).sum()), 150))
    rng = np.random.default_rng(0)
    clean = SELECTORS[name](values, mask, labels, 5, rng=rng)
    dirty = SELECTORS[name](polluted, mask, labels, 5, rng=rng)
    np.testing.assert_array_equal(clean.units, dirty.units)


def test_ties_are_broken_by_lower_index_and_selection_is_deterministic() -> None:
    values, mask, labels = _data()
    values[:, :, 130] = values[:, :, 3]  # a duplicate of planted unit 3
    first = SELECTORS["rsa_categorical"](values, mask, labels, 6, rng=np.random.default_rng(0))
    again = SELECTORS["rsa_categorical"](values, mask, labels, 6, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(first.units, again.units)
    assert list(first.units).index(3) == list(first.units).index(130) - 1
    np.testing.assert_array_equal(top_k(np.array([1.0, np.nan, 2.0, 2.0]), 4).units, [2, 3, 0, 1])


def test_random_is_reproducible_from_rng() -> None:
    values, mask, labels = _data()
    a = SELECTORS["random"](values, mask, labels, 10, rng=np.random.default_rng(5))
    b = SELECTORS["random"](values, mask, labels, 10, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a.units, b.units)


def test_k_out_of_range_is_a_user_error() -> None:
    values, mask, labels = _data()
    for select in SELECTORS.values():
        with pytest.raises(CogsaeError, match="k must be"):
            select(values, mask, labels, 151, rng=np.random.default_rng(0))


def test_rsa_selectors_skip_silent_units_without_changing_the_ranking() -> None:
    rng = np.random.default_rng(5)
    values = rng.gamma(1.0, size=(24, 5, 40)).astype(np.float32)
    values[:, :, ::3] = 0.0  # silent units, as most SAE features are on a small set
    values[:12, :, 1] += 2.0  # one planted unit
    mask = np.ones((24, 5), dtype=bool)
    labels = np.repeat([1, 0], 12)
    for selector, kind in (
        (rsa_categorical, "categorical"),
        (rsa_discriminative, "discriminative"),
    ):
        got = selector(values, mask, labels, 6, rng=rng)
        full = top_k(unit_rsa_scores(values, mask, labels, kind), 6)
        np.testing.assert_array_equal(got.units, full.units)
        np.testing.assert_allclose(got.scores, full.scores)
        assert got.units[0] == 1
