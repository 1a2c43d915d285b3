"""Relevance against its base rate: how much more relevant a readout's top corpus snippets
are than random snippets of the same snippet sample.

Enrichment = mean judged relevance of the readout's top-n snippets minus that of n
snippets drawn at random (once per run, shared by all readouts) from the same scanned
sample. Its p-value permutes which snippets count as "top" within the pool of those two
groups: under the null that the top snippets' scores are exchangeable with random
snippets' scores, every split of the pool into groups of the observed sizes is equally
likely. One-sided (enrichment > 0), with ties broken at random: judged scores are small
integers, so many splits give exactly the observed enrichment, and the usual
(1 + #{null >= observed}) / (1 + B) would reject far less often than its nominal rate
(about half as often with 10 + 10 snippets); the randomized
p = (#{null > observed} + U (1 + #{null = observed})) / (1 + B), U uniform on (0, 1),
is uniform under the null, and never smaller than #{null > observed} / (1 + B). Scores
the judge could not give (`NO_SCORE`) are left out of both groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cogsae.judges.base import NO_SCORE

N_PERMUTATIONS = 10_000
"""Label permutations of an enrichment p-value (its smallest value is 1 / 10001)."""


@dataclass(frozen=True)
class Enrichment:
    """A readout's top-snippet relevance against the base rate.

    Attributes:
        top: mean valid score of the top snippets (NaN if none).
        base: mean valid score of the random snippets (NaN if none).
        enrichment: ``top - base``.
        p: one-sided permutation p of ``enrichment > 0`` (NaN without scores in both groups).
    """

    top: float
    base: float
    enrichment: float
    p: float


def relevance_enrichment(
    top: np.ndarray,
    base: np.ndarray,
    rng: np.random.Generator,
    n_permutations: int = N_PERMUTATIONS,
) -> Enrichment:
    """Enrichment of ``top`` [n_top] over ``base`` [n_base] judged scores, with its p.

    Args:
        top: the readout's top snippets' scores (int 0..3 or `NO_SCORE`).
        base: the random snippets' scores.
        rng: the permutations' generator.
    """
    top = np.asarray(top)[np.asarray(top) != NO_SCORE].astype(np.float64)
    base = np.asarray(base)[np.asarray(base) != NO_SCORE].astype(np.float64)
    if top.size == 0 or base.size == 0:
        nan = float("nan")
        return Enrichment(_mean(top), _mean(base), nan, nan)
    observed = top.mean() - base.mean()
    pool = np.concatenate([top, base])
    order = rng.random((n_permutations, pool.size)).argsort(axis=1)  # [B, pool] permutations
    shuffled = pool[order]
    null = shuffled[:, : top.size].mean(1) - shuffled[:, top.size :].mean(1)
    tied = np.abs(null - observed) <= 1e-9  # means of small integers: exact ties
    above = int((null > observed).sum() - (tied & (null > observed)).sum())
    p = (above + rng.random() * (1 + int(tied.sum()))) / (1 + n_permutations)
    return Enrichment(float(top.mean()), float(base.mean()), float(observed), float(p))


def _mean(x: np.ndarray) -> float:
    """Mean of ``x``; NaN when empty."""
    return float(x.mean()) if x.size else float("nan")
