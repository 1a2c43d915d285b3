"""Model RDMs and their inference: the vectorized bootstrap and permutation reproduce
rsatoolbox on the same resamples, and the procedures are calibrated on synthetic data
(equal models differ at the nominal rate, an unrelated model is rejected at the nominal
rate, bootstrap intervals cover the true fit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rsatoolbox.data import Dataset
from rsatoolbox.model import ModelFixed
from rsatoolbox.rdm import RDMs, calc_rdm, compare

from cogsae.analysis.geometry import (
    bootstrap_counts,
    bootstrap_fits,
    bootstrap_p,
    evaluate_models,
    group_ids,
    group_permutations,
    permutation_fits,
)
from cogsae.analysis.rdm_models import chosen_models, model_matrix
from cogsae.stimuli import load_stimuli
from tests.helpers import binomial_band, write


def _absolute(values: np.ndarray) -> np.ndarray:
    return np.abs(values[:, None] - values[None, :])


def test_bootstrap_fits_equal_rsatoolbox_on_the_same_resamples() -> None:
    """rho-a of every resample equals rsatoolbox's compare on subsample_pattern of both RDMs,
    for a tied (category), a graded and a continuous model, with groups resampled whole."""
    rng = np.random.default_rng(0)
    n = 30
    level = np.repeat([0, 1, 2], 10)
    x = rng.normal(size=(n, 12)) + level[:, None] * 0.5
    data = calc_rdm(Dataset(x), method="correlation")
    data.pattern_descriptors["index"] = list(range(n))
    matrices = np.stack(
        [(level[:, None] != level).astype(float), _absolute(level), _absolute(rng.normal(size=n))]
    )
    models = RDMs(matrices, pattern_descriptors={"index": list(range(n))})
    group = group_ids(np.repeat(np.arange(15), 2), n)
    counts = bootstrap_counts(group, 25, rng)
    assert (counts[:, ::2] == counts[:, 1::2]).all()  # a group comes and goes whole
    iu, ju = np.triu_indices(n, k=1)
    boot = bootstrap_fits(data.get_vectors(), matrices[:, iu, ju], counts)
    for b in range(len(counts)):
        idx = np.repeat(np.arange(n), counts[b])
        expected = compare(
            models.subsample_pattern("index", idx), data.subsample_pattern("index", idx), "rho-a"
        )[:, 0]
        np.testing.assert_allclose(boot[b, 0], expected, atol=1e-12)


def test_permutation_fits_equal_rsatoolbox_with_permuted_models() -> None:
    rng = np.random.default_rng(1)
    n = 14
    matrices = np.stack([_absolute(v) for v in rng.normal(size=(2, n))])
    data = rng.normal(size=(2, n * (n - 1) // 2))
    group = group_ids(np.repeat(np.arange(7), 2), n)
    perms = group_permutations(group, 6, rng)
    for perm in perms:  # whole groups onto whole groups
        assert (group[perm[::2]] == group[perm[1::2]]).all()
    null = permutation_fits(data, matrices, perms)
    for r, perm in enumerate(perms):
        permuted = RDMs(matrices[:, perm][:, :, perm])
        np.testing.assert_allclose(null[r], compare(RDMs(data), permuted, "rho-a"), atol=1e-12)


def test_evaluate_models_rows_and_holm() -> None:
    rng = np.random.default_rng(2)
    n = 24
    level = np.repeat([0, 1], 12)
    x = rng.normal(size=(n, 10)) + 2.0 * level[:, None]
    data = {"raw": calc_rdm(Dataset(x), method="euclidean")}
    models = [
        ModelFixed("category", (level[:, None] != level).astype(float)),
        ModelFixed("noise", _absolute(rng.normal(size=n))),
    ]
    result = evaluate_models(data, models, n_bootstrap=200, n_permutations=200, rng=rng)
    rows = {row["model"]: row for row in result.model_rows()}
    assert rows["category"]["p"] < 0.01 < rows["noise"]["p"]
    assert rows["category"]["ci_low"] < rows["category"]["r"] < rows["category"]["ci_high"]
    expected = compare(data["raw"], models[0].rdm_obj, "rho-a")[0, 0]
    assert np.isclose(rows["category"]["r"], expected)
    (comparison,) = result.comparison_rows()
    assert comparison["a"] == "category" and comparison["diff"] > 0
    assert comparison["p_corrected"] == comparison["p"] < 0.05  # one pair: Holm changes nothing


def _simulated(
    rng: np.random.Generator, n: int, units: int = 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items in pairs (groups of 2, exchangeable within) with three latent features, each
    shared by a pair plus the item's own part; the data follow
    features 0 and 1 equally, feature 2 not at all. Returns the data RDM vector [pairs],
    the three feature model matrices [3, n, n] and the groups [n]."""
    groups = np.repeat(np.arange(n // 2), 2)
    f = rng.normal(size=(n // 2, 3))[groups] + 0.5 * rng.normal(size=(n, 3))
    x = rng.normal(size=(n, units))
    x[:, :2] += 2.0 * f[:, :2]
    data = calc_rdm(Dataset(x), method="euclidean").get_vectors()
    return data, np.stack([_absolute(f[:, k]) for k in range(3)]), groups


def test_model_inference_is_calibrated() -> None:
    """On 200 synthetic grouped sets of 30 items: the two equally good models differ
    (bootstrap p < .05) at the nominal rate, the unrelated model is rejected against no
    relation (permutation p < .05) at the nominal rate, and the 95% bootstrap interval of
    a model's fit covers its true value in >= 93%. The true value is the expected fit of
    the design: the mean fit over 400 further independent sets of the same size (rho-a of
    30 items lies a little below its large-sample limit, which the intervals cover in about
    93.5% of sets)."""
    rng = np.random.default_rng(3)
    n_sets, n, n_boot, n_perm = 200, 30, 400, 200
    truth = np.mean(
        [
            compare(RDMs(d), RDMs(m[:1]), "rho-a")[0, 0]
            for d, m, _ in (_simulated(rng, n) for _ in range(400))
        ]
    )
    differ = rejected = covered = 0
    for _ in range(n_sets):
        data, matrices, groups = _simulated(rng, n)
        group = group_ids(groups, n)
        iu, ju = np.triu_indices(n, k=1)
        boot = bootstrap_fits(data, matrices[:, iu, ju], bootstrap_counts(group, n_boot, rng))[:, 0]
        null = permutation_fits(data, matrices[2:], group_permutations(group, n_perm, rng))
        observed = compare(RDMs(data), RDMs(matrices[2:]), "rho-a")[0, 0]
        differ += bootstrap_p(boot[:, 0] - boot[:, 1]) < 0.05
        rejected += (1 + np.sum(null[:, 0, 0] >= observed)) / (1 + n_perm) < 0.05
        low, high = np.quantile(boot[:, 0], [0.025, 0.975])
        covered += low <= truth <= high
    low, high = binomial_band(n_sets)
    assert low <= differ <= high, (differ, rejected, covered)
    assert low <= rejected <= high, rejected
    assert covered >= 0.93 * n_sets, covered


def test_model_rdms_of_a_factorial_rated_set(tmp_path: Path) -> None:
    """category per factor, graded for the ordered factor, the 2 x 2 interaction (same
    diagonal of the design = 0), |a_i - a_j| per feature and z-scored Euclidean over both."""
    lines = ["factors: {tone: [low, high], tense: [past, future]}", "ordered: [tone]"]
    lines += ["features: [a, b]", "items:"]
    for g in range(4):
        for tone in ("low", "high"):
            for tense in ("past", "future"):
                lines.append(
                    f'  - {{text: "{tone} {tense} {g}.", tone: {tone}, tense: {tense}, '
                    f"a: {g}, b: {2 * g + (tone == 'high')}}}"
                )
    stim = load_stimuli(write(tmp_path, "\n".join(lines) + "\n"))
    names = chosen_models(stim)
    assert names[:4] == ["category:tone", "category:tense", "graded:tone", "interaction"]
    n_tokens = np.arange(len(stim.items))
    design = stim.design()
    inter = model_matrix("interaction", stim, n_tokens)
    diagonal = (design["tone"] == "low") == (design["tense"] == "past")
    np.testing.assert_array_equal(inter, diagonal[:, None] != diagonal[None, :])
    np.testing.assert_array_equal(
        model_matrix("feature:a", stim, n_tokens), _absolute(stim.features["a"])
    )
    z = np.column_stack([(v - v.mean()) / v.std() for v in stim.features.values()])
    expected = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
    np.testing.assert_allclose(model_matrix("feature:all", stim, n_tokens), expected)
    np.testing.assert_array_equal(model_matrix("length", stim, n_tokens), _absolute(n_tokens))


def test_no_permutations_give_no_p_value() -> None:
    """``--permutations 0`` is a valid run: no permutations (the geometry p is then NaN)."""
    from cogsae.analysis.geometry import group_permutations

    assert group_permutations(np.arange(6), 0, np.random.default_rng(0)).shape == (0, 6)
