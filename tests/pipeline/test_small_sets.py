"""Small sets: fewer folds where the requested ones do not fit, recorded and reported; a
refusal only below the minimum; the repeated-CV interval and permutation p stay valid at
small K."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cogsae.activations import Activations
from cogsae.analysis.cv import make_plan
from cogsae.analysis.ensemble import DiffMeans, evaluate
from cogsae.errors import CogsaeError
from cogsae.pipeline import execute
from cogsae.pipeline.plan import build_plan, cv_size
from cogsae.report import write_report
from cogsae.stimuli import load_stimuli
from tests.helpers import binomial_band, run_config, write
from tests.pipeline.test_plan import FAST, short_set


def test_six_items_a_level_run_with_three_folds(
    tiny_assets: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """5 folds need 10 items a level (two per test fold); a set of 6 used to be refused."""
    path = short_set(tmp_path, n=6)
    cfg = run_config(tiny_assets, tmp_path / "out", stimuli=str(path), sae="none", **FAST)
    directory = execute(cfg, progress=False)
    concept = json.loads((directory / "results.json").read_text())["concepts"][0]
    assert concept["cv"]["folds"] == 3 and concept["cv"]["requested"] == 5
    assert "condition=gain has 6 items" in concept["cv"]["reason"]
    assert [r.message for r in caplog.records if "folds" in r.message] == [
        f"{path}: {concept['cv']['reason']}"
    ]
    write_report(directory)
    report = (directory / "report.md").read_text()
    assert f"Folds: {concept['cv']['reason']}." in report


def test_fold_choice_counts_groups_and_refuses_only_below_the_minimum(tmp_path: Path) -> None:
    lines = ["factors: {condition: [a, b]}", "items:"]
    for level in ("a", "b"):
        lines += [
            f'  - {{text: "{level} item {i}", condition: {level}, group: "{level}{i // 2}"}}'
            for i in range(10)
        ]  # 5 label-pure groups of 2 per level
    stimuli = load_stimuli(write(tmp_path, "\n".join(lines) + "\n"))
    assert cv_size(stimuli, "condition", ("a", "b"), 5).n_splits == 2  # 5 groups: 2 folds
    assert cv_size(stimuli, "condition", ("a", "b"), 2).reason == ""
    lines = ["factors: {condition: [a, b]}", "items:"]
    for level in ("a", "b"):
        lines += [
            f'  - {{text: "{level} item {i}", condition: {level}, group: "{level}{i // 4}"}}'
            for i in range(12)
        ]  # 3 groups per level: no two folds of two groups
    path = write(tmp_path, "\n".join(lines) + "\n", "few.yaml")
    with pytest.raises(CogsaeError) as err:  # validate refuses it: no run could
        load_stimuli(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 3, "group")
    assert "in 3 independent groups" in str(err.value)


def test_small_k_interval_and_permutation_p_are_calibrated() -> None:
    """K = 3 on 6 items a level (n_test / n_train = 1/2): on null data the permutation p
    rejects at the nominal rate and the corrected repeated-CV interval covers chance."""
    n_sets, n_perm = 120, 39
    p_values, covered = [], []
    for seed in range(n_sets):
        rng = np.random.default_rng(seed)
        labels = rng.permutation(np.repeat([1, 0], 6))
        values = rng.normal(size=(12, 1, 10)).astype(np.float32)
        acts = Activations(values, np.ones((12, 1), bool), "raw")
        plan = make_plan(labels, n_splits=3, n_repeats=2, n_permutations=n_perm, seed=seed)
        (result,) = evaluate([DiffMeans()], acts, plan, stop_after=None, progress=False)
        p_values.append(result.p_value)
        covered.append(result.auroc_ci[0] <= 0.5 <= result.auroc_ci[1])
    low, high = binomial_band(n_sets)
    assert low <= int(np.sum(np.asarray(p_values) <= 0.05)) <= high
    assert np.mean(covered) >= 0.93, np.mean(covered)


def test_plan_records_the_folds_of_every_analysis(tiny_assets: dict, tmp_path: Path) -> None:
    path = short_set(tmp_path, n=8)
    plan = build_plan(run_config(tiny_assets, tmp_path, stimuli=str(path), sae="none", **FAST))
    (analysis,) = plan.analyses
    assert (analysis.cv.n_splits, analysis.cv.requested) == (4, 5)
