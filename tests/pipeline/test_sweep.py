"""Sweeps: the grid of runs, its manifest, its combined report, local and Ray engines alike."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from cogsae.errors import CogsaeError
from cogsae.pipeline import RunConfig
from cogsae.pipeline.sweep import SWEEP_MANIFEST, grid, sae_by_layer, sweep
from cogsae.report.sweep import sweep_records, write_sweep_report
from cogsae.sae.io import RELEASE_DIR
from tests.helpers import TINY_LAYER

LAYERS = (TINY_LAYER, TINY_LAYER + 1)
SEEDS = (0, 1)


def small_config(tiny_assets: dict, output: Path) -> RunConfig:
    """The tiny model with settings that make a run take a second or two."""
    return RunConfig(
        stimuli="",
        model=tiny_assets["model"],
        dtype="float32",
        k=(2,),
        n_repeats=2,
        n_permutations=19,
        n_bootstrap=19,
        n_snippets=0,
        figures=False,
        output=str(output),
    )


def numbers(folder: Path) -> list[dict]:
    """The concept records of every run a sweep folder lists (what the run computed)."""
    manifest = json.loads((folder / SWEEP_MANIFEST).read_text())
    root = folder.parents[1]
    return [
        json.loads((root / c["run"] / "results.json").read_text())["concepts"]
        for c in manifest["cells"]
    ]


def test_sweep_grid_manifest_report_and_ray(
    tiny_assets: dict, tmp_path: Path, isolated_cache: Path, request: pytest.FixtureRequest
) -> None:
    saes = sae_by_layer([tiny_assets["sae"]], LAYERS)  # a single SAE folder serves its layer
    assert saes == {TINY_LAYER: tiny_assets["sae"]}
    configs = grid(
        small_config(tiny_assets, tmp_path / "local"),
        [str(tiny_assets["stimuli"])],
        LAYERS,
        SEEDS,
        saes,
    )
    assert [(c.layer, c.seed, c.sae) for c in configs] == [
        (TINY_LAYER, 0, tiny_assets["sae"]),
        (TINY_LAYER, 1, tiny_assets["sae"]),
        (TINY_LAYER + 1, 0, "none"),
        (TINY_LAYER + 1, 1, "none"),
    ]
    folder = sweep(configs, progress=False)
    manifest = json.loads((folder / SWEEP_MANIFEST).read_text())
    assert folder.parent.name == "sweeps" and manifest["sweep"] == folder.name
    assert [(c["layer"], c["seed"], c["done"]) for c in manifest["cells"]] == [
        (c.layer, c.seed, True) for c in configs
    ]
    assert len({c["run"] for c in manifest["cells"]}) == 4

    page = write_sweep_report(folder)
    assert page.is_file() and (folder / "figures" / "auroc_vs_layer_0.png").is_file()
    combined = pd.read_csv(folder / "combined.csv")
    assert not combined.duplicated(["layer", "space", "method"]).any()
    assert set(combined.loc[combined["space"] == "sae", "layer"]) == {TINY_LAYER}
    assert set(combined.loc[combined["space"] == "raw", "layer"]) == set(LAYERS)
    assert (combined["significant_seeds"].str.endswith("/2")).all()
    records = sweep_records(folder)
    mean = (
        records[(records.layer == TINY_LAYER) & (records.space == "raw")]
        .groupby("method")["auroc"]
        .mean()
    )
    raw = combined[(combined.layer == TINY_LAYER) & (combined.space == "raw")].set_index("method")
    assert raw["mean_auroc"].to_dict() == pytest.approx(mean.to_dict())

    again = sweep(configs, progress=False)  # resumed: every run reused, nothing recomputed
    assert again == folder and numbers(again) == numbers(folder)

    request.getfixturevalue("ray_cluster")  # the session's local cluster (skips without Ray)
    first_seed = [replace(c, output=str(tmp_path / "ray")) for c in configs if c.seed == 0]
    # one seed per layer keeps the test short: the cells are independent tasks
    distributed = sweep(first_seed, engine="ray", progress=False)
    assert numbers(distributed) == numbers(folder)[::2]  # the same numbers as local


def test_sae_by_layer_specs(tiny_assets: dict, tmp_path: Path) -> None:
    release = tmp_path / "release"
    release.mkdir()
    (release / "layers.1").symlink_to(tiny_assets["sae"])
    assert sae_by_layer([str(release)], LAYERS) == {TINY_LAYER: str(release / "layers.1")}
    assert sae_by_layer([f"{TINY_LAYER}={tiny_assets['sae']}", "none"], LAYERS) == {
        TINY_LAYER: tiny_assets["sae"]
    }
    with pytest.raises(CogsaeError, match="not one of --layers"):
        sae_by_layer([f"3={tiny_assets['sae']}"], LAYERS)
    with pytest.raises(CogsaeError, match="two SAEs"):
        sae_by_layer([tiny_assets["sae"], str(release)], LAYERS)
    with pytest.raises(CogsaeError, match="holds no SAE"):
        sae_by_layer([tiny_assets["sae"]], (TINY_LAYER + 1,))


def test_a_sweep_without_sae_uses_the_shipped_saes(
    tiny_assets: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --sae: the shipped SAEs at the layers they serve (the release's layer 6, the
    default SAE's layer 15); other layers run raw only, and "none" turns SAEs off."""
    layer_6 = str(RELEASE_DIR / "blocks.6.hook_resid_post")
    assert sae_by_layer([], (6, 15, 20)) == {6: layer_6, 15: "default"}
    assert sae_by_layer([], (20,)) == {}
    assert sae_by_layer(["none"], (6, 15)) == {}
    release = tmp_path / "release"
    release.mkdir()
    (release / "layers.1").symlink_to(tiny_assets["sae"])
    monkeypatch.setattr("cogsae.pipeline.sweep.SHIPPED_SAES", (str(release), "default"))
    assert sae_by_layer([], (TINY_LAYER, 15)) == {
        TINY_LAYER: str(release / "layers.1"),
        15: "default",
    }
