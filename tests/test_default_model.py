"""The embedded default model, end to end (slow: loads SmolLM2-135M-Instruct)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cogsae.cli import main
from cogsae.extract import extract_activations
from cogsae.model import LoadedModel, load_model
from cogsae.stimuli import load_stimuli
from tests.helpers import REPO

pytestmark = pytest.mark.slow


def test_default_model_shape(default_model: LoadedModel) -> None:
    assert default_model.n_layers == 30 and default_model.d_model == 576
    assert default_model.layer == 15 and default_model.dtype == torch.bfloat16
    assert type(default_model.model).__name__ == "LlamaForCausalLM"


def test_bf16_extraction_close_to_fp32(
    default_model: LoadedModel, default_model_path: Path, isolated_cache: Path
) -> None:
    stim = load_stimuli(REPO / "stimuli" / "success.yaml")
    bf16 = extract_activations(stim, default_model, progress=False)
    assert bf16.values.shape == (128, 12, 576)
    fp32_model = load_model(str(default_model_path), dtype="float32")
    fp32_model.name = default_model.name
    fp32 = extract_activations(stim, fp32_model, progress=False)
    assert bf16.meta["cache"] != fp32.meta["cache"]
    diff = np.linalg.norm(bf16.values - fp32.values, axis=-1)[bf16.mask]
    norm = np.linalg.norm(fp32.values, axis=-1)[bf16.mask]
    assert np.median(diff / norm) < 0.05
    # window means correlate almost perfectly across units
    a, b = bf16.window_mean().ravel(), fp32.window_mean().ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.99


def test_cli_extract(default_model: LoadedModel, default_model_cache: Path) -> None:
    result = CliRunner().invoke(main, ["extract", str(REPO / "stimuli" / "negation.yaml")])
    assert result.exit_code == 0, result.output
    assert "96 items x 3 positions x 576 units (layer 15" in result.output
    cached = list((default_model_cache / "activations").glob("negation-*.npz"))
    assert len(cached) == 1


def test_paired_set_without_groups_is_diagnosed_end_to_end(
    default_model_cache: Path, tmp_path: Path
) -> None:
    """capitals_paired.yaml (minimal pairs, no groups) on the real model: validate warns and
    offers groups; the run's report names the cause instead of crowning a best readout; the
    grouped copy written by --write-groups runs without the warning."""
    source = str(REPO / "stimuli" / "capitals_paired.yaml")
    grouped = tmp_path / "grouped.yaml"
    checked = CliRunner().invoke(main, ["validate", source, "--write-groups", str(grouped)])
    assert checked.exit_code == 0, checked.output
    assert "80 of 80 items look paired" in checked.output and grouped.exists()
    options = ["--repeats", "2", "--permutations", "19", "--snippets", "0", "--no-figures"]
    for stimuli, paired in ((source, True), (str(grouped), False)):
        out = tmp_path / ("paired" if paired else "grouped")
        ran = CliRunner().invoke(main, ["run", stimuli, "--output", str(out), "--quiet", *options])
        assert ran.exit_code == 0, ran.output
        report = next(out.glob("*/run-*/report.md")).read_text()
        finding = report.split("### Main finding")[1].split("###")[0]
        assert ("items look paired across conditions" in finding) is paired
        assert ("The highest held-out AUROC" in finding) is not paired or "No readout" in finding


def test_minimal_set_runs_end_to_end(default_model_cache: Path, tmp_path: Path) -> None:
    """stimuli/minimal.yaml (short form, 10 items a level, no window, no groups, no
    description) with the README's command on the real model and SAE: a set without
    `window:` used to crash the run, and 10 items a level were refused at 5 folds."""
    out = tmp_path / "out"
    options = ["--permutations", "50", "--repeats", "2", "--snippets", "0", "--k", "4"]
    ran = CliRunner().invoke(
        main, ["run", str(REPO / "stimuli" / "minimal.yaml"), "--output", str(out), *options]
    )
    assert ran.exit_code == 0, ran.output
    directory = next(out.glob("minimal/run-*"))
    results = json.loads((directory / "results.json").read_text())
    (concept,) = results["concepts"]
    assert concept["levels"] == ["happy", "sad"] and concept["cv"]["folds"] == 5
    assert results["model"]["window"]["size"] == 13
    assert {m["space"] for m in concept["methods"]} == {"raw", "sae", "nuisance"}
    assert (directory / "report.html").is_file()
