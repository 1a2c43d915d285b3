"""A factor with three levels through `cogsae run` on the tiny model: the omnibus entry is in
results.json with every level, no level's items are dropped, and the report shows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cogsae.pipeline import RunResult, execute
from cogsae.report import write_report
from tests.helpers import run_config, three_level_set


@pytest.fixture(scope="module")
def three_level_run(tiny_assets: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of the three-level set, run twice: the second reuses every stage."""
    folder = tmp_path_factory.mktemp("three")
    config = run_config(
        {**tiny_assets, "stimuli": three_level_set(folder)},
        folder / "results",
        k=(4,),
        methods=("contrast",),  # the two-level entry is not under test here
        n_permutations=19,
        n_bootstrap=50,
        figures=False,
    )
    directory = execute(config, progress=False)
    first = (directory / "results.json").read_text()
    assert execute(config, progress=False) == directory  # the stored omnibus stage reloads
    assert (directory / "results.json").read_text() == first
    write_report(directory)
    return directory


def test_three_levels_get_an_omnibus_entry_with_every_item(three_level_run: Path) -> None:
    results = json.loads((three_level_run / "results.json").read_text())
    assert RunResult.from_dict(results).to_dict() == results
    contrast, omnibus = results["concepts"]
    assert contrast["kind"] == "contrast" and contrast["levels"] == ["gain", "neutral"]
    assert contrast["n_items"] == 40  # target vs reference, as before
    assert omnibus["kind"] == "omnibus" and omnibus["factor"] == "outcome"
    assert omnibus["levels"] == ["gain", "neutral", "loss"]
    assert omnibus["n_items"] == 60  # no level's items dropped
    assert omnibus["n_per_level"] == {"gain": 20, "neutral": 20, "loss": 20}
    labels = {f"{m['space']}:{m['method']}" for m in omnibus["methods"]}
    assert labels == {
        *(f"{s}:{m}" for s in ("raw", "sae") for m in ("anova_f", "rsa_categorical")),
        *(f"{s}:{m}" for s in ("raw", "sae") for m in ("max_activation", "random")),
        "raw:dense_l2",
        "nuisance:confound",
    }
    assert all(0 <= m["auroc"] <= 1 and m["n_permutations_run"] <= 19 for m in omnibus["methods"])
    assert {(c["a"], c["b"]) for c in omnibus["comparisons"]} >= {("sae:anova_f", "raw:anova_f")}
    anova = omnibus["anova"]["raw"]
    assert anova["n_units"] == 64 and anova["n_active"] == 64
    # the verb window separates the levels even in a random model
    assert anova["n_q05"] + omnibus["anova"]["sae"]["n_q05"] > 0
    best = max(omnibus["methods"], key=lambda m: m["auroc"])
    assert best["auroc"] > 0.8 and best["p_value"] < 0.1
    tables = three_level_run / "tables"
    assert (tables / "anova_outcome-omnibus_raw.csv").is_file()
    report = (three_level_run / "report.md").read_text()
    assert "## Omnibus: gain / neutral / loss" in report and "macro AUROC" in report
    assert "no readout is crowned" in report  # every item looks paired: no verdict
    assert "units q<0.05" in report
