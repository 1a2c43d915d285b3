"""Selectors: shared signature, planted-signal recovery, masking, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from cogsae.activations import window_mean
from cogsae.analysis.selection import (
    SELECTORS,
    UNIT_RSA_SCORES,
    WINDOW_MEAN_SELECTORS,
    Selection,
    Standardized,
    TrainingMoments,
    batched_selection,
    contrast,
    max_activation,
    top_k,
)
from cogsae.analysis.set_selection import SET_SELECTORS
from cogsae.analysis.unit_rsa import unit_rsa_scores
from cogsae.errors import CogsaeError
from tests.helpers import ragged_profiles

PLANTED = np.array([3, 17, 42, 77, 120])
HIGH_MEAN = np.array([5, 60, 99])


def _data(seed: int = 0):
    """[60 items, 8 positions, 150 units] with masks, planted effects and high-mean units."""
    values, mask, labels = ragged_profiles(60, 8, 150, min_positions=3, seed=seed)
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
    if name not in SET_SELECTORS:  # set-level: greedy order, scores are each step's gain
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
    first = SELECTORS["contrast"](values, mask, labels, 6, rng=np.random.default_rng(0))
    again = SELECTORS["contrast"](values, mask, labels, 6, rng=np.random.default_rng(1))
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


def test_window_mean_scores_equal_rsa_scores_of_window_means() -> None:
    """The per-unit RSA scores of the set-level selectors' pre-screen are unit_rsa_scores
    with one position per item, on means; the *_profile variants score the profile."""
    rng = np.random.default_rng(5)
    values = rng.gamma(1.0, size=(24, 5, 40)).astype(np.float32)
    values[:, :, ::3] = 0.0  # silent units, as most SAE features are on a small set
    values[:12, :, 1] += 2.0  # one planted unit
    mask = np.ones((24, 5), dtype=bool)
    mask[::4, -1] = False
    labels = np.repeat([1, 0], 12)
    means = window_mean(values, mask)
    moments = TrainingMoments(Standardized.of(means), np.ones((1, 24), bool), labels[None])
    for kind in ("categorical", "discriminative"):
        got = top_k(UNIT_RSA_SCORES[f"rsa_{kind}"](moments)[0].astype(np.float64), 6)
        want = top_k(unit_rsa_scores(means[:, None], np.ones((24, 1), bool), labels, kind), 6)
        np.testing.assert_array_equal(got.units, want.units)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-4, atol=1e-6)
        assert SELECTORS[f"rsa_{kind}"](values, mask, labels, 6, rng=rng).units[0] == 1
        profile = SELECTORS[f"rsa_{kind}_profile"](values, mask, labels, 6, rng=rng)
        full = top_k(unit_rsa_scores(values, mask, labels, kind), 6)
        np.testing.assert_array_equal(profile.units, full.units)


def test_position_shift_unit_is_not_selected_for_a_window_mean_readout() -> None:
    """A unit that fires once per item at the sentence's last token, which sits two positions
    later in reference items, has identical window means in both conditions: the readout
    cannot use it. Window-mean selectors must pick the planted window-mean unit instead;
    the per-position profile variant is fooled by the shift."""
    rng = np.random.default_rng(0)
    n_items, n_positions, n_units = 40, 10, 30
    labels = np.repeat([1, 0], n_items // 2)
    values = 0.05 * rng.standard_normal((n_items, n_positions, n_units)).astype(np.float32)
    shift, mean_unit = 7, 12
    last = np.where(labels == 1, 5, 7)
    values[np.arange(n_items), last, shift] += 4.0
    values[labels == 1, :, mean_unit] += 0.15
    mask = np.ones((n_items, n_positions), dtype=bool)
    window_means = window_mean(values, mask)
    assert (
        abs(window_means[labels == 1, shift].mean() - window_means[labels == 0, shift].mean())
        < 0.02
    )
    for name in ("rsa_discriminative", "rsa_categorical", "contrast"):
        chosen = SELECTORS[name](values, mask, labels, 1, rng=rng).units
        assert chosen[0] == mean_unit, name
    profile = SELECTORS["rsa_categorical_profile"](values, mask, labels, 1, rng=rng).units
    assert profile[0] == shift


def test_batched_scores_equal_single_set_selection() -> None:
    """Scores over many training sets at once equal the selector run on each subset."""
    values, mask, labels = _data()
    means = window_mean(values, mask)
    rng = np.random.default_rng(3)
    train = rng.random((6, labels.size)) < 0.7
    perms = np.stack([rng.permutation(labels) for _ in range(6)])
    moments = TrainingMoments(Standardized.of(means), train, perms)
    for name in WINDOW_MEAN_SELECTORS:
        batched = batched_selection(name, moments, 5)
        for s in range(6):
            idx = np.flatnonzero(train[s])
            single = SELECTORS[name](values[idx], mask[idx], perms[s, idx], 5, rng=rng)
            np.testing.assert_array_equal(batched[s], single.units, err_msg=name)
