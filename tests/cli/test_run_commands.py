"""`cogsae run` and `cogsae report` on the tiny model (a minimal, fast run)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from cogsae.cli import main

FAST = ["--permutations", "0", "--repeats", "1", "--bootstrap", "1", "--snippets", "0"]


def test_run_then_rebuild_the_report(
    tiny_flags: list[str], tiny_assets: dict, tmp_path: Path
) -> None:
    flags = [f for f in tiny_flags if f not in ("--tokens", "60")]
    args = [
        "run",
        str(tiny_assets["stimuli"]),
        *flags,
        *FAST,
        "--k",
        "2",
        "--no-figures",
        "--quiet",
    ]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    page = Path(result.stdout.split("report: ")[1].strip())
    assert page.is_file() and (page.parent / "report.md").is_file()
    assert (page.parent / "tables" / "methods_condition.csv").is_file()
    results = json.loads((page.parent / "results.json").read_text())
    assert results["concepts"][0]["methods"]
    page.unlink()
    (page.parent / "tables" / "methods_condition.csv").unlink()
    again = CliRunner().invoke(main, ["report", str(page.parent)])
    assert again.exit_code == 0, again.output
    assert page.is_file() and (page.parent / "tables" / "methods_condition.csv").is_file()


def test_run_refuses_a_layer_its_sae_was_not_trained_on(
    tiny_flags: list[str], tiny_assets: dict, tmp_path: Path
) -> None:
    args = ["run", str(tiny_assets["stimuli"]), "--model", tiny_assets["model"]]
    args += ["--sae", tiny_assets["sae"], "--layer", "2", "--output", str(tmp_path / "results")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "trained on layer 1" in result.output
    assert not (tmp_path / "results").exists()  # refused before any work


def test_sweep_then_report_the_sweep(
    tiny_flags: list[str], tiny_assets: dict, tmp_path: Path
) -> None:
    flags = [f for f in tiny_flags if f not in ("--tokens", "60")]  # --sae: serves layer 1
    args = ["sweep", str(tiny_assets["stimuli"]), "--layers", "1,2", *flags, *FAST]
    args += ["--k", "2", "--no-figures", "--quiet", "--out", str(tmp_path / "results")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    page = Path(result.stdout.split("report: ")[1].strip())
    manifest = json.loads((page.parent / "sweep.json").read_text())
    assert [(c["layer"], c["sae"] != "none") for c in manifest["cells"]] == [(1, True), (2, False)]
    for cell in manifest["cells"]:  # each cell is an ordinary run, with its own report
        assert (tmp_path / "results" / cell["run"] / "report.html").is_file()
    again = CliRunner().invoke(main, ["report", str(page.parent)])
    assert again.exit_code == 0 and "report: " in again.output, again.output
    rows = re.findall(r"^\|\s+(\d+) \| (\w+)", page.with_suffix(".md").read_text(), re.M)
    assert ("2", "raw") in rows and {layer for layer, space in rows if space == "sae"} == {"1"}


def test_sweep_refuses_an_sae_of_a_layer_not_swept(tiny_assets: dict, tmp_path: Path) -> None:
    args = ["sweep", str(tiny_assets["stimuli"]), "--layers", "2", "--model", tiny_assets["model"]]
    args += ["--sae", f"1={tiny_assets['sae']}", "--output", str(tmp_path / "results")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "not one of --layers" in result.output
    assert not (tmp_path / "results").exists()
