"""The one registry of random streams: every random draw comes from a named stream.

A stream is ``np.random.default_rng([seed, tag, *more])``: the root ``seed`` (the run's
seed unless a stream says otherwise), the stream's integer ``tag`` and optional indices
(e.g. repeat and fold). Naming each stream here keeps independent draws independent and
lets a reader see every source of randomness of a run in one place.

Every stream has its own tag, so no two streams draw the same numbers under one root seed
(``tests/test_streams.py`` checks it). The CV streams (``FOLDS``, ``PERMUTATIONS``,
``RANDOM_UNITS``, ``FINAL_UNITS``) and ``SHUFFLE_LABELS`` keep the tags they had before
this registry; the others collided with them and got new tags in cogsae 0.2.0: the two
population RSAs, the contrast null and the snippet sample drew from the bare run seed
like the folds (so both RSAs drew the same numbers), and the judges' and the transfer
bootstraps drew from the permutations' tag.
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
    CONTRAST_NULL = (4, "cogsae.analysis.contrasts: max-|t| permutation null (p_fwe)")
    CATEGORICAL_RSA = (5, "cogsae.analysis.rsa.categorical_rsa: permutations and bootstrap")
    DISCRIMINATIVE_RSA = (
        6,
        "cogsae.analysis.rsa.discriminative_rsa: folds, halves, permutations and the EDI halves",
    )
    SNIPPET_SAMPLE = (8, "cogsae.corpus.scan.sample_snippets: the corpus sentences scanned")
    BOOTSTRAP = (9, "cogsae.judges: bootstrap of judged relevance scores")
    TRANSFER_BOOTSTRAP = (10, "cogsae.analysis.transfer: bootstrap of held-out test items")
    SHUFFLE_LABELS = (7, "cogsae.pipeline: --shuffle-labels, rooted in that option's seed")
    INTERVENTION_BOOTSTRAP = (11, "cogsae.interventions: bootstrap of a steering sweep's items")
    EXAMPLE_SAMPLE = (12, "cogsae.inspect: random examples inside each activation quantile bin")
    SAE_SHUFFLE = (13, "cogsae.sae.data.shuffled_batches: shard order and shuffle buffer")
    RELEVANCE_BASE = (
        16,
        "cogsae.pipeline.corpus_stage: the random snippets of the relevance base rate "
        "(more = 0) and the enrichment permutations (more = 1)",
    )
    BENCH_BOOTSTRAP = (
        21,
        "cogsae.pipeline.bench: bootstrap over concepts of a readout's mean AUROC, more = "
        "(readout index,)",
    )
    GEOMETRY = (
        14,
        "cogsae.pipeline.geometry_stage: model-RDM bootstrap and permutations; more = 1: MDS",
    )
    CAUSAL_NULL = (
        15,
        "cogsae.pipeline.causal_stage: random unit sets and directions of the causal null, "
        "more = readout index",
    )

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
