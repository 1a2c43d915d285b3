"""The random-stream registry: one tag per stream, and the readouts' streams unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from cogsae.streams import Stream, collisions, rng


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31 - 1, 2**40 + 3])
def test_cv_streams_keep_their_former_seeding(seed: int) -> None:
    """Folds, permutations, random units and label shuffles draw as before the registry,
    so the readouts' numbers did not move when the other streams got their own tags."""
    former = {
        Stream.FOLDS: [seed, 0],
        Stream.PERMUTATIONS: [seed, 1],
        Stream.FINAL_UNITS: [seed, 3],
        Stream.SHUFFLE_LABELS: [seed, 7],
    }
    for stream, entropy in former.items():
        expected = np.random.default_rng(entropy).integers(2**62, size=8)
        np.testing.assert_array_equal(rng(seed, stream).integers(2**62, size=8), expected)
    old = np.random.default_rng([seed, 2, 4, 1]).integers(2**62, size=8)
    np.testing.assert_array_equal(rng(seed, Stream.RANDOM_UNITS, 4, 1).integers(2**62, size=8), old)


@pytest.mark.parametrize("seed", [0, 3, 2**31 - 1])
def test_no_two_streams_draw_the_same_numbers(seed: int) -> None:
    assert len({stream.tag for stream in Stream}) == len(Stream)
    assert collisions(seed) == []
    first = {stream: rng(seed, stream).integers(2**62) for stream in Stream}
    assert len(set(first.values())) == len(Stream)
