"""The permutation loop of cross-validated readouts, shared by two-level and omnibus readouts.

Each label permutation of a :class:`CVPlan` re-runs a readout's whole procedure (selection
and fit on every training set) and yields its mean held-out score; training sets of many
permutations are fitted in one batch, and the chunks of a batch run in parallel threads.
A readout stops permuting once both tails of its null have reached the observed score
``stop_after`` times (Besag & Clifford 1991 sequential p-values stay valid at that stopping
time).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from cogsae.analysis.cv import CVPlan, FoldSets

TIE = 1e-12
"""Statistics computed on permuted data count as ">= observed" within this float tolerance."""


def permutation_nulls(
    plan: CVPlan,
    statistic: np.ndarray,
    fold_scores_of: Callable[[FoldSets, np.ndarray], list[np.ndarray]],
    *,
    per_batch: int,
    stop_after: int | None,
    progress: bool,
    desc: str,
) -> list[np.ndarray]:
    """[readouts] null distributions of each readout's mean held-out score.

    Args:
        plan: the CV plan whose permutations 1 .. n_permutations are run, in order.
        statistic: [readouts] observed mean held-out scores.
        fold_scores_of: (sets, running readout indices) -> per running readout, its
            held-out score [sets] on each training set of the batch.
        per_batch: permutations fitted per batch.
        stop_after: exceedances of both tails after which a readout stops (None: never).
    """
    n_folds = plan.n_repeats * plan.n_splits
    nulls: list[list[float]] = [[] for _ in statistic]
    active = np.ones(len(statistic), dtype=bool)
    bar = tqdm(total=plan.n_permutations, desc=desc, disable=not progress)
    b = 1
    workers = len(os.sched_getaffinity(0))
    # Chunks of a batch run in parallel threads (numpy releases the GIL), one BLAS thread each.
    with ThreadPoolExecutor(workers) as pool, threadpool_limits(1):
        while b <= plan.n_permutations and active.any():
            perms = range(b, min(plan.n_permutations, b + per_batch - 1) + 1)
            running = np.flatnonzero(active)
            chunks = FoldSets.of(plan, perms).split(workers)
            parts = list(pool.map(fold_scores_of, chunks, [running] * len(chunks)))
            for j, i in enumerate(running):
                scores = np.concatenate([part[j] for part in parts])
                nulls[i].extend(scores.reshape(len(perms), n_folds).mean(axis=1).tolist())
                if stop_after is None:
                    continue
                null = np.asarray(nulls[i])
                high = np.cumsum(null >= statistic[i] - TIE)
                low = np.cumsum(null <= statistic[i] + TIE)
                done = np.flatnonzero((high >= stop_after) & (low >= stop_after))
                if done.size:
                    del nulls[i][int(done[0]) + 1 :]
                    active[i] = False
            bar.update(len(perms))
            bar.set_postfix(active=int(active.sum()))
            b = perms.stop
    bar.close()
    return [np.asarray(null) for null in nulls]


def sequential_p(exceed: np.ndarray, h: int | None) -> float:
    """Besag-Clifford p of one tail from the 0/1 exceedance sequence of the nulls run:
    h / L when the h-th exceedance came at permutation L, else
    (1 + exceedances) / (1 + permutations run)."""
    counts = np.cumsum(exceed)
    if h is not None and counts.size and counts[-1] >= h:
        return h / (int(np.searchsorted(counts, h)) + 1)
    return (1 + int(counts[-1] if counts.size else 0)) / (1 + counts.size)


def mean_jaccard(unit_sets: list[np.ndarray]) -> float:
    """Mean pairwise Jaccard index of the unit sets (1 = the same units in every fold)."""
    sets = [set(units.tolist()) for units in unit_sets]
    pairs = [len(a & b) / len(a | b) for i, a in enumerate(sets) for b in sets[i + 1 :] if a | b]
    return float(np.mean(pairs)) if pairs else 1.0
