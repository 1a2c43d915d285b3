"""The random-stream registry reproduces the draws made before it existed."""

from __future__ import annotations

import numpy as np
import pytest

from cogsae.streams import Stream, collisions, rng


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31 - 1, 2**40 + 3])
def test_streams_reproduce_the_former_seeding(seed: int) -> None:
    former = {
        Stream.FOLDS: [seed, 0],
        Stream.PERMUTATIONS: [seed, 1],
        Stream.FINAL_UNITS: [seed, 3],
        Stream.SNIPPET_SAMPLE: [seed, 0],
        Stream.BOOTSTRAP: [seed, 1],
        Stream.TRANSFER_BOOTSTRAP: [seed, 1],
        Stream.SHUFFLE_LABELS: [seed, 7],
        Stream.CONTRAST_NULL: seed,
        Stream.CATEGORICAL_RSA: seed,
        Stream.DISCRIMINATIVE_RSA: seed,
        Stream.INTERVENTION_BOOTSTRAP: seed,
        Stream.EXAMPLE_SAMPLE: seed,
    }
    for stream, entropy in former.items():
        expected = np.random.default_rng(entropy).integers(2**62, size=8)
        np.testing.assert_array_equal(rng(seed, stream).integers(2**62, size=8), expected)
    old = np.random.default_rng([seed, 2, 4, 1]).integers(2**62, size=8)
    np.testing.assert_array_equal(rng(seed, Stream.RANDOM_UNITS, 4, 1).integers(2**62, size=8), old)


def test_known_collisions_are_listed() -> None:
    """The collisions the module docstring names; update both when a tag changes."""
    assert collisions() == [
        (
            Stream.FOLDS,
            Stream.CONTRAST_NULL,
            Stream.CATEGORICAL_RSA,
            Stream.DISCRIMINATIVE_RSA,
            Stream.SNIPPET_SAMPLE,
            Stream.INTERVENTION_BOOTSTRAP,
            Stream.EXAMPLE_SAMPLE,
            Stream.SAE_SHUFFLE,
        ),
        (Stream.PERMUTATIONS, Stream.BOOTSTRAP, Stream.TRANSFER_BOOTSTRAP),
    ]
