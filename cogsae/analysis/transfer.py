"""Held-out transfer: a fitted ensemble scored on the set's ``test:`` items.

`transfer_score` gives AUROC and balanced accuracy (decision > 0) on items that no
selection or fit has seen, with seeded percentile bootstrap CIs over items (or item
groups, resampled whole; `cogsae.analysis.contrasts.bootstrap_indices`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cogsae import streams
from cogsae.activations import Activations
from cogsae.analysis.ensemble import LinearModel, fold_scores
from cogsae.analysis.resampling import bootstrap_indices
from cogsae.errors import CogsaeError


@dataclass
class Transfer:
    """A final ensemble scored on held-out test items.

    Attributes:
        auroc: AUROC of the decision values for target (1) against reference (0) items.
        auroc_ci: percentile bootstrap CI over items (item groups when given).
        balanced_accuracy: balanced accuracy of decision > 0 (the class boundary).
        balanced_accuracy_ci: its CI over the same resamples.
        n_target: test items of the target condition.
        n_reference: test items of the reference condition.
        scores: [n_target + n_reference] decision value of each scored test item.
    """

    auroc: float
    auroc_ci: tuple[float, float]
    balanced_accuracy: float
    balanced_accuracy_ci: tuple[float, float]
    n_target: int
    n_reference: int
    scores: np.ndarray

    def to_record(self) -> dict[str, Any]:
        """JSON-ready fields (``scores`` as a list)."""
        return {**asdict(self), "scores": self.scores.tolist()}


def transfer_score(
    model: LinearModel,
    acts: Activations,
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Transfer:
    """Score a final ensemble on test-item activations of its own space.

    Args:
        model: the ensemble fitted on all (non-test) items.
        acts: test-item activations [items, positions, units] in the model's space.
        labels: [items] 1 target, 0 reference, -1 other levels (left out), as given by
            ``StimulusSet.labels(test=True)``.
        groups: [items] item groups (``StimulusSet.groups(test=True)``), resampled whole.
        n_bootstrap: bootstrap resamples (seeded by ``seed``).
        level: CI coverage.
    """
    labels = np.asarray(labels)
    if labels.shape != (acts.n_items,):
        raise CogsaeError(f"{labels.size} labels for {acts.n_items} test items", field="test")
    keep = labels >= 0
    y = labels[keep]
    if min((y == 1).sum(), (y == 0).sum()) < 1:
        raise CogsaeError("the test items need both the target and the reference", field="test")
    scores = model.decision_function(acts.subset(keep).window_mean())
    groups = None if groups is None else np.asarray(groups)[keep]
    rng = streams.rng(seed, streams.Stream.TRANSFER_BOOTSTRAP)
    resamples = (bootstrap_indices(y, rng, groups) for _ in range(n_bootstrap))
    boot = np.array([_auroc_and_bacc(scores[idx], y[idx]) for idx in resamples])
    value = _auroc_and_bacc(scores, y)
    return Transfer(
        auroc=value[0],
        auroc_ci=percentile_ci(boot[:, 0], level),
        balanced_accuracy=value[1],
        balanced_accuracy_ci=percentile_ci(boot[:, 1], level),
        n_target=int((y == 1).sum()),
        n_reference=int((y == 0).sum()),
        scores=scores,
    )


def _auroc_and_bacc(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(AUROC, balanced accuracy at decision 0) of ``scores`` [n] for ``labels`` [n]: the
    held-out metrics of `cogsae.analysis.ensemble.fold_scores`, with every item held out."""
    auc, bacc = fold_scores(scores[None], np.zeros((1, scores.size), bool), labels[None])
    return float(auc[0]), float(bacc[0])


def percentile_ci(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Two-sided percentile interval of bootstrap ``samples`` [n]."""
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
