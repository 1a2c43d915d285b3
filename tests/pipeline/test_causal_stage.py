"""The causal stage: first-order effects match exact edits, the random null is calibrated
under shuffled labels, excludes the readout's own units, and finds a planted direction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cogsae.analysis.causal import Resamples, random_null_test, sensitivity, unit_rows
from cogsae.interventions import Steer, mean_logprobs
from cogsae.model import LoadedModel
from cogsae.pipeline.stages import execute
from tests.helpers import TEXTS, run_config


def test_first_order_steering_matches_exact_edit(tiny_model: LoadedModel) -> None:
    sens = sensitivity(tiny_model, TEXTS, progress=False)
    u = unit_rows(np.random.default_rng(0).standard_normal((1, tiny_model.d_model)))
    coef = 1e-2 * sens.mean_norm
    predicted = coef * sens.steer(u)[:, 0]
    edit = Steer(torch.from_numpy(u[0].astype(np.float32)), coef)
    exact = mean_logprobs(tiny_model, TEXTS, [edit]) - mean_logprobs(tiny_model, TEXTS)
    assert np.abs(predicted).min() > 0
    np.testing.assert_allclose(predicted, exact, rtol=0.05, atol=0.05 * np.abs(exact).max())


def test_causal_rows_in_results(tiny_assets: dict, tmp_path: Path) -> None:
    directory = execute(
        run_config(tiny_assets, tmp_path, causal=True, causal_null=50), progress=False
    )
    concept = json.loads((directory / "results.json").read_text())["concepts"][0]
    rows = concept["causal"]
    readouts = {r["readout"] for r in rows}
    assert "raw:diff_means" in readouts and "raw:dense_l2" in readouts
    assert "nuisance:confound" not in readouts
    assert {r["intervention"] for r in rows} == {"steer", "ablate"}
    for r in rows:
        assert r["ci_low"] <= r["effect"] <= r["ci_high"]
        assert 1 / 51 <= r["p_random"] <= r["p_corrected"] <= 1
    assert concept["steering_examples"]
    assert concept["causal_comparisons"]


@pytest.fixture(scope="module")
def tiny_sensitivity(tiny_model: LoadedModel):
    texts = [f"{s} {v} {o} in round {i}." for i, (s, v, o) in enumerate(_sentences())]
    return sensitivity(tiny_model, texts, progress=False)


def _sentences() -> list[tuple[str, str, str]]:
    from tests.helpers import GAIN, LOSS, OBJECTS, SUBJECTS

    verbs = GAIN + LOSS
    return [(SUBJECTS[i % 6], verbs[i % 8], OBJECTS[(i // 6) % 6]) for i in range(40)]


def _diff_means_direction(sens, labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """[items, d] cross-fitted unit difference-of-means direction of window means."""
    edited = sens.edited[..., None]
    means = (sens.residual * edited).sum(1) / edited.sum(1)
    out = np.empty_like(means)
    for f in np.unique(folds):
        train = folds != f
        d = means[train & (labels == 1)].mean(0) - means[train & (labels == 0)].mean(0)
        out[folds == f] = unit_rows(d[None])[0]
    return out


def test_causal_p_is_uniform_under_shuffled_labels(tiny_sensitivity) -> None:
    from tests.helpers import binomial_band, permutation_ks_p

    sens, n_null, n_runs = tiny_sensitivity, 49, 200
    n = sens.residual.shape[0]
    rng = np.random.default_rng(0)
    p_values = []
    for _ in range(n_runs):
        labels = rng.permutation(np.arange(n) % 2)
        folds = np.empty(n, dtype=int)
        for c in (0, 1):
            members = np.flatnonzero(labels == c)
            folds[rng.permutation(members)] = np.arange(members.size) % 5
        resamples = Resamples.draw(labels, None, rng, 200)
        directions = _diff_means_direction(sens, labels, folds)
        null = unit_rows(rng.standard_normal((n_null, sens.residual.shape[2])))
        for delta, null_delta in (
            (sens.steer_each(directions), sens.steer(null)),
            (sens.project_out_each(directions), sens.project_out(null)),
        ):
            p_values.append(random_null_test(delta, null_delta, resamples).p_random)
    low, high = binomial_band(len(p_values))
    assert low <= sum(p <= 0.05 for p in p_values) <= high
    assert permutation_ks_p(p_values, n_null) > 1e-3


def test_planted_causal_direction_beats_random_directions(tiny_sensitivity) -> None:
    sens = tiny_sensitivity
    n = sens.residual.shape[0]
    labels = np.arange(n) % 2
    rng = np.random.default_rng(1)
    total = sens.gradient.sum(1)
    planted = unit_rows((total[labels == 1].mean(0) - total[labels == 0].mean(0))[None])
    null = unit_rows(rng.standard_normal((99, sens.residual.shape[2])))
    resamples = Resamples.draw(labels, None, rng, 200)
    test = random_null_test(sens.steer(planted)[:, 0], sens.steer(null), resamples)
    assert test.p_random == pytest.approx(1 / 100)
    assert test.effect > test.null_high and test.ci_low > 0


def test_null_sets_never_hold_the_readout_units() -> None:
    from cogsae.analysis.causal import random_unit_sets

    own = np.array([3, 5, 8])
    sets = random_unit_sets(np.arange(12), own, 3, 500, np.random.default_rng(0))
    assert sets.shape == (500, 3)
    assert not np.isin(sets, own).any()
    assert set(np.unique(sets)) == set(range(12)) - set(own.tolist())
