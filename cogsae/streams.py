"""The one registry of random streams: every random draw comes from a named stream.

A stream is ``np.random.default_rng([seed, tag, *more])``: the root ``seed`` (the run's
seed unless a stream says otherwise), the stream's integer ``tag`` and optional indices
(e.g. repeat and fold). Naming each stream here keeps independent draws independent and
lets a reader see every source of randomness of a run in one place.

The tags reproduce the draws the package made before this registry existed, bit for
bit. ``np.random.SeedSequence`` pads entropy shorter than four words with zeros, so
``default_rng(seed)``, ``default_rng([seed])`` and ``default_rng([seed, 0])`` are one and
the same generator: the streams that used to be seeded by ``seed`` alone carry tag 0.

Known collisions (identical generators for the same root seed; :func:`collisions`
finds them). These are left as they are because changing a tag changes the run's
numbers; they are to be removed in a separate, measured commit:

- tag 0: ``FOLDS``, ``CONTRAST_NULL``, ``CATEGORICAL_RSA``, ``DISCRIMINATIVE_RSA`` and
  ``SNIPPET_SAMPLE`` all start from the run seed (``analyse_concept`` passes
  ``config.seed`` to both RSAs, to the contrast and to the CV plan; judges sample snippets
  with it), so the two RSAs draw the same numbers and the fold seeds are the first draws
  of the RSA streams. ``INTERVENTION_BOOTSTRAP`` and ``EXAMPLE_SAMPLE`` have tag 0 too,
  but belong to other commands (their own ``--seed``).
- tag 1: ``PERMUTATIONS`` (CV plan label permutations) and ``BOOTSTRAP`` /
  ``TRANSFER_BOOTSTRAP`` (judges' bootstrap of relevance scores and of the transfer
  metrics, also seeded by the run seed). ``BOOTSTRAP`` and ``TRANSFER_BOOTSTRAP`` share
  one generator as well.
"""

from __future__ import annotations

from enum import Enum

import numpy as np


class Stream(Enum):
    """A named random stream: ``tag`` (its entropy word after the seed) and its use."""

    FOLDS = (0, "cogsae.analysis.cv.make_plan: seeds of the repeated outer CV folds")
    PERMUTATIONS = (1, "cogsae.analysis.cv.make_plan: label permutations of a CV plan")
    RANDOM_UNITS = (
        2,
        "cogsae.analysis.ensemble: selector draws per training set (the k-random-units "
        "baseline), more = (repeat, fold)",
    )
    FINAL_UNITS = (3, "cogsae.analysis.ensemble: selector draw of the final model on all items")
    CONTRAST_NULL = (0, "cogsae.analysis.contrasts: max-|t| permutation null (p_fwe)")
    CATEGORICAL_RSA = (0, "cogsae.analysis.rsa.categorical_rsa: permutations and bootstrap")
    DISCRIMINATIVE_RSA = (
        0,
        "cogsae.analysis.rsa.discriminative_rsa: folds, halves, permutations and the EDI halves",
    )
    SNIPPET_SAMPLE = (0, "cogsae.judges: the sample of corpus sentences scanned")
    BOOTSTRAP = (1, "cogsae.judges: bootstrap of judged relevance scores")
    TRANSFER_BOOTSTRAP = (1, "cogsae.judges.transfer_score: bootstrap of held-out test items")
    SHUFFLE_LABELS = (7, "cogsae.pipeline: --shuffle-labels, rooted in that option's seed")
    INTERVENTION_BOOTSTRAP = (0, "cogsae.interventions: bootstrap of a steering sweep's items")
    EXAMPLE_SAMPLE = (0, "cogsae.inspect: random examples inside each activation quantile bin")
    SAE_SHUFFLE = (0, "cogsae.sae.data.shuffled_batches: shard order and shuffle buffer")

    def __init__(self, tag: int, purpose: str) -> None:
        self.tag = tag
        self.purpose = purpose


def entropy(seed: int, stream: Stream, *more: int) -> list[int]:
    """The seed sequence words [seed, tag, *more] of ``stream`` under root ``seed``."""
    return [int(seed), stream.tag, *map(int, more)]


def rng(seed: int, stream: Stream, *more: int) -> np.random.Generator:
    """The generator of ``stream`` under root ``seed`` (``more``: indices within the stream)."""
    return np.random.default_rng(entropy(seed, stream, *more))


def collisions(seed: int = 0) -> list[tuple[Stream, ...]]:
    """Groups of two or more streams whose generators are identical under one root ``seed``."""
    by_state: dict[str, list[Stream]] = {}
    for stream in Stream:
        by_state.setdefault(repr(rng(seed, stream).bit_generator.state), []).append(stream)
    return [tuple(group) for group in by_state.values() if len(group) > 1]
