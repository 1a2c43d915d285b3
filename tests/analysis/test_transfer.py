"""Held-out transfer: AUROC and balanced accuracy of a final ensemble on test items."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from cogsae.activations import Activations
from cogsae.analysis.ensemble import LinearModel
from cogsae.analysis.resampling import bootstrap_indices
from cogsae.analysis.transfer import percentile_ci, transfer_score
from cogsae.errors import CogsaeError
from tests.helpers import linear


def test_transfer_matches_sklearn_and_drops_other_levels() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([1] * 12 + [0] * 12 + [-1] * 4)
    values = rng.normal(size=(28, 3, 5)).astype(np.float32)
    values[labels == 1, :, 2] += 0.8
    mask = np.ones((28, 3), dtype=bool)
    mask[::3, 2] = False
    acts = Activations(values, mask)
    model = LinearModel(
        np.array([2, 4]), np.full(2, 0.1), np.full(2, 2.0), np.array([1.5, -0.2]), -0.05
    )

    result = transfer_score(model, acts, labels, n_bootstrap=200, seed=3)

    keep = labels >= 0
    expected = model.decision_function(acts.window_mean()[keep])
    np.testing.assert_allclose(result.scores, expected, rtol=1e-6)
    assert result.auroc == pytest.approx(roc_auc_score(labels[keep], expected))
    assert result.balanced_accuracy == pytest.approx(
        balanced_accuracy_score(labels[keep], expected > 0)
    )
    assert (result.n_target, result.n_reference) == (12, 12)
    assert result.auroc_ci[0] <= result.auroc <= result.auroc_ci[1]
    assert result.balanced_accuracy_ci[0] <= result.balanced_accuracy_ci[1]
    again = transfer_score(model, acts, labels, n_bootstrap=200, seed=3)
    assert again.auroc_ci == result.auroc_ci
    record = json.loads(json.dumps(result.to_record()))
    assert record["auroc"] == result.auroc and len(record["scores"]) == 24


def test_transfer_bootstrap_keeps_test_groups_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import cogsae.analysis.transfer

    labels = np.tile([1, 0], 10)  # 10 matched test groups: one target, one reference
    groups = np.repeat([f"t{g}" for g in range(10)], 2)
    values = np.random.default_rng(1).normal(size=(20, 2, 3)).astype(np.float32)
    acts = Activations(values, np.ones((20, 2), dtype=bool))
    drawn: list[np.ndarray] = []

    def recording(*args: object, **kwargs: object) -> np.ndarray:
        drawn.append(bootstrap_indices(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(cogsae.analysis.transfer, "bootstrap_indices", recording)
    transfer_score(linear([0], [1.0]), acts, labels, groups, n_bootstrap=50)
    assert len(drawn) == 50
    for idx in drawn:
        # every drawn group comes with both of its items, once per draw
        _, counts = np.unique(groups[idx], return_counts=True)
        assert (counts % 2 == 0).all() and (labels[idx] == 1).sum() == 10


def test_transfer_needs_both_conditions() -> None:
    acts = Activations(np.zeros((4, 1, 2), np.float32), np.ones((4, 1), bool))
    with pytest.raises(CogsaeError, match="both"):
        transfer_score(linear([0], [1.0]), acts, np.array([1, 1, -1, -1]))


def test_percentile_ci_is_the_central_interval() -> None:
    samples = np.arange(101, dtype=float)
    assert percentile_ci(samples, 0.9) == pytest.approx((5.0, 95.0))
