"""The sweep report from results.json files alone: one row per layer, method and space."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cogsae._io import write_json
from cogsae.report.sweep import combine_seeds, is_sweep, sweep_records, write_sweep_report

INTERVAL = "corrected repeated-CV t interval (Nadeau & Bengio 2003)"


def fake_run(root: Path, layer: int, seed: int, sae: bool) -> str:
    """A run folder with a minimal results.json: AUROC = layer / 10 + seed / 100."""
    spaces = ["raw", "sae"] if sae else ["raw"]
    auroc = layer / 10 + seed / 100
    methods = [
        {"space": s, "method": "contrast", "auroc": auroc, "auroc_ci": [auroc - 0.1, auroc + 0.1],
         "p_corrected": 0.01 if seed else 0.2}
        for s in spaces
    ]  # fmt: skip
    results = {
        "stimuli": {"name": "toy"},
        "model": {"layer": layer},
        "config": {"seed": seed},
        "concepts": [{"target": "a", "reference": "b", "interval": INTERVAL, "methods": methods}],
    }
    run = f"toy/run-{layer}-{seed}"
    write_json(root / run / "results.json", results)
    return run


@pytest.fixture()
def sweep_folder(tmp_path: Path) -> Path:
    """A sweep over layers 5 and 7 (an SAE only at 5) and seeds 0 and 1."""
    cells = [
        {"layer": layer, "seed": seed, "run": fake_run(tmp_path, layer, seed, layer == 5)}
        for layer in (5, 7)
        for seed in (0, 1)
    ]
    folder = tmp_path / "sweeps" / "sweep-x"
    manifest = {"sweep": "sweep-x", "sets": ["toy.yaml"], "layers": [5, 7], "seeds": [0, 1]}
    write_json(folder / "sweep.json", {**manifest, "cells": cells})
    return folder


def test_seeds_combine_into_one_row_per_layer_method_and_space(sweep_folder: Path) -> None:
    assert is_sweep(sweep_folder) and not is_sweep(sweep_folder.parent)
    combined = combine_seeds(sweep_records(sweep_folder))
    assert list(zip(combined["layer"], combined["space"], strict=True)) == [
        (5, "raw"), (5, "sae"), (7, "raw")
    ]  # fmt: skip
    row = combined.iloc[2]
    assert row["mean_auroc"] == pytest.approx(0.705)
    assert (row["min_auroc"], row["max_auroc"]) == pytest.approx((0.7, 0.71))
    assert row["seed_intervals"] == "0: [0.60, 0.80]; 1: [0.61, 0.81]"
    assert row["significant_seeds"] == "1/2"


def test_sweep_report_files(sweep_folder: Path) -> None:
    page = write_sweep_report(sweep_folder)
    html = page.read_text()
    assert "data:image/png;base64" in html and "Nadeau &amp; Bengio" in html
    assert len(pd.read_csv(sweep_folder / "combined.csv")) == 3
    assert len(pd.read_csv(sweep_folder / "sweep.csv")) == 6
    assert json.loads((sweep_folder / "sweep.json").read_text())["sweep"] in html


def test_sweep_report_follows_each_model_across_layers(sweep_folder: Path) -> None:
    """With a geometry entry in each run, the report gets one trajectory per space: each
    model's fit against layer, from results.json alone."""
    root = sweep_folder.parents[1]
    for cell in json.loads((sweep_folder / "sweep.json").read_text())["cells"]:
        path = root / cell["run"] / "results.json"
        results = json.loads(path.read_text())
        r = cell["layer"] / 10
        results["geometry"] = {
            "models": [
                {"space": space, "model": model, "r": r + shift, "ci_low": r - 0.1,
                 "ci_high": r + 0.1, "p": 0.01}
                for space in ("raw", "sae", "raw:contrast")
                for model, shift in (("category:x", 0.0), ("length", -0.2))
            ],
            "comparisons": [],
        }  # fmt: skip
        write_json(path, results)
    write_sweep_report(sweep_folder)
    text = (sweep_folder / "report.md").read_text()
    assert "## Representational trajectory" in text
    assert "### toy: raw" in text and "### toy: sae" in text and "raw:contrast" not in text
    assert (sweep_folder / "figures" / "trajectory_0.png").is_file()
    assert (sweep_folder / "figures" / "trajectory_1.png").is_file()
