"""`cogsae run` end to end on a tiny random Llama: planted signal found, nulls calibrated,
stages resumed, results serialized, report written from the run's files alone."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cogsae.cli import main
from cogsae.pipeline import RunResult, execute
from cogsae.report import write_report
from tests.helpers import CHROMIUM, GAIN, LOSS, SUBJECTS, run_config


@pytest.fixture(scope="module")
def planted_run(tiny_assets: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run on the planted set (k = 4 main, 2 for the curve), with its report."""
    output = tmp_path_factory.mktemp("results")
    directory = execute(run_config(tiny_assets, output, k=(4, 2)), progress=False)
    assert not (directory / "report.md").exists()  # the pipeline writes results, not reports
    assert write_report(directory) == directory / "report.html"
    return directory


def test_results_round_trip_through_run_result(planted_run: Path, tmp_path: Path) -> None:
    text = (planted_run / "results.json").read_text()
    loaded = json.loads(text)
    assert RunResult.from_dict(loaded).to_dict() == loaded
    RunResult.from_dict(loaded).write(tmp_path)
    assert (tmp_path / "results.json").read_text() == text


def test_report_needs_only_results_json(planted_run: Path, tmp_path: Path) -> None:
    shutil.copy(planted_run / "results.json", tmp_path / "results.json")
    write_report(tmp_path)
    for name in ("tables/methods_condition.csv", "figures/auroc_condition.png", "report.md"):
        assert (tmp_path / name).is_file(), name
    # the same report, less the figures only the pipeline draws (it has the live results)
    live = re.compile(r"!\[(volcano|rdm|profile) \w+\]\(figures/[^)]+\)\n\n")
    expected = live.sub("", (planted_run / "report.md").read_text())
    assert (tmp_path / "report.md").read_text() == expected


def test_planted_signal_is_found_and_reported(planted_run: Path) -> None:
    directory = planted_run
    results = json.loads((directory / "results.json").read_text())
    concept = results["concepts"][0]
    methods = {f"{m['space']}:{m['method']}": m for m in concept["methods"]}
    assert set(methods) >= {
        f"{s}:{m}"
        for s in ("raw", "sae")
        for m in ("rsa_discriminative", "rsa_categorical", "max_activation", "contrast", "random")
    }
    assert {"raw:diff_means", "raw:dense_l2"} <= set(methods)
    for label in ("raw:contrast", "raw:rsa_discriminative", "raw:dense_l2"):
        assert methods[label]["auroc"] > 0.85, label
        assert methods[label]["p_value"] <= 0.02, label
    for m in concept["methods"]:
        assert {
            "auroc",
            "auroc_ci",
            "balanced_accuracy",
            "p_value",
            "selected_units",
            "stability",
        } <= set(m)
    assert concept["transfer"]["raw:contrast"]["auroc"] > 0.8
    assert {c["a"] for c in concept["comparisons"]} >= {"sae:rsa_discriminative"}
    assert len(concept["k_curve"]) == 2 * 5
    for name in (
        "report.html",
        "report.md",
        "tables/methods_condition.csv",
        "figures/auroc_condition.png",
    ):
        assert (directory / name).exists(), name
    html = (directory / "report.html").read_text()
    assert "data:image/png;base64," in html and "Main finding" in html


def test_rerun_reuses_finished_stages(tiny_assets: dict, tmp_path: Path, monkeypatch) -> None:
    cfg = run_config(tiny_assets, tmp_path, n_permutations=19)
    directory = execute(cfg, progress=False)
    first = json.loads((directory / "results.json").read_text())

    def fail(*_args, **_kwargs):
        raise AssertionError("stage recomputed although it was finished")

    monkeypatch.setattr("cogsae.pipeline.stages.evaluate", fail)
    monkeypatch.setattr("cogsae.pipeline.stages.extract_activations", fail)
    assert execute(cfg, progress=False) == directory
    again = json.loads((directory / "results.json").read_text())
    assert again["concepts"][0]["methods"] == first["concepts"][0]["methods"]
    timings = again["provenance"]["timings_s"]
    assert timings == first["provenance"]["timings_s"] and "activations" in timings


def test_shuffled_labels_are_significant_at_most_at_nominal_rate(
    tiny_assets: dict, tmp_path: Path
) -> None:
    n_shuffles = 10
    significant = 0
    best_aurocs = []
    for seed in range(n_shuffles):
        cfg = run_config(
            tiny_assets,
            tmp_path,
            shuffle_labels=seed,
            n_permutations=299,
            n_splits=4,
            n_bootstrap=100,
            figures=False,
        )
        results = json.loads((execute(cfg, progress=False) / "results.json").read_text())
        assert results["shuffled_labels"]
        methods = results["concepts"][0]["methods"]
        best = max(methods, key=lambda m: m["auroc"])
        best_aurocs.append(best["auroc"])
        significant += min(m["p_corrected"] for m in methods) < 0.05
    # nominal 5%: P(>= 3 of 10 | p = 0.05) = 0.012
    assert significant <= 2
    # held-out AUROC under the null centres on chance even for the best of ~12 readouts
    assert np.mean(best_aurocs) < 0.75


def test_cli_run_bad_option_is_one_line(tiny_assets: dict) -> None:
    result = CliRunner().invoke(main, ["run", str(tiny_assets["stimuli"]), "--k", "0"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make install adds it)")
def test_html_report_renders_figures_in_headless_chromium(
    planted_run: Path, tmp_path: Path
) -> None:
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            (planted_run / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    # the raw-space markers of the AUROC figure (#7570b3) appear only if figures loaded
    raw_purple = np.abs(pixels - [0x75, 0x70, 0xB3]).sum(axis=1) < 30
    assert raw_purple.sum() > 50


def test_factorial_set_analyses_each_factor(tiny_assets: dict, tmp_path: Path) -> None:
    lines = [
        "name: factorial",
        "window: {align: start, size: 4}",
        "factors: {outcome: [gain, loss], tense: [past, future]}",
        "items:",
    ]
    for g in range(8):
        for outcome, verbs in (("gain", GAIN), ("loss", LOSS)):
            verb = verbs[g % 4]
            for tense, text in (("past", verb), ("future", f"will have {verb}")):
                fields = f"outcome: {outcome}, tense: {tense}, group: g{g}"
                lines.append(f'  - {{text: "{SUBJECTS[g % 6]} {text} it in round {g}.", {fields}}}')
    path = tmp_path / "factorial.yaml"
    path.write_text("\n".join(lines) + "\n")
    cfg = run_config(
        tiny_assets, tmp_path, stimuli=str(path), n_permutations=9, n_splits=4, figures=False
    )
    results = json.loads((execute(cfg, progress=False) / "results.json").read_text())
    concepts = {c["factor"]: c for c in results["concepts"]}
    assert set(concepts) == {"outcome", "tense"}
    assert (concepts["tense"]["target"], concepts["tense"]["reference"]) == ("past", "future")
    assert set(concepts["outcome"]["glm"]["raw"]) == {"outcome", "tense", "outcome:tense"}
    assert concepts["tense"]["n_items"] == 32
