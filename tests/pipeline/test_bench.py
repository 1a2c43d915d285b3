"""Benches: two tiny sets run as ordinary runs, pooled into bench.json and its report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cogsae.analysis.pooling import paired_difference
from cogsae.cli import main
from cogsae.errors import CogsaeError
from cogsae.pipeline.bench import (
    BENCH_MANIFEST,
    bench_configs,
    bench_sets,
    claim_pairs,
    summarize,
)
from cogsae.pipeline.bench import bench as run_bench
from tests.helpers import TINY_LAYER, planted_factorial_set, run_config

SETTINGS = {"k": (2,), "n_splits": 3, "n_repeats": 2, "n_permutations": 9, "n_bootstrap": 99}
SETTINGS |= {"n_snippets": 0, "figures": False, "dtype": "float32", "layer": None}
FAST = ["--k", "2", "--folds", "3", "--repeats", "2", "--permutations", "9", "--bootstrap", "99"]
# the SAE's layer is read; the causal stage is not what this test tests
FAST += ["--snippets", "0", "--no-figures", "--dtype", "float32", "--no-causal"]


def test_bench_runs_pools_reports_and_reuses(
    tiny_assets: dict, tmp_path: Path, isolated_cache: Path
) -> None:
    sets = tmp_path / "sets"
    sets.mkdir()
    planted_factorial_set(sets)
    (sets / "planted.yaml").write_text(Path(tiny_assets["stimuli"]).read_text())
    output = tmp_path / "out"
    options = [*FAST, "--model", tiny_assets["model"], "--sae", tiny_assets["sae"]]
    command = ["bench", str(sets), *options, "--output", str(output), "--quiet"]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    (folder,) = (output / "bench").iterdir()
    bench = json.loads((folder / BENCH_MANIFEST).read_text())
    assert [Path(s).name for s in bench["sets"]] == ["planted.yaml", "planted_place.yaml"]
    assert all(run["done"] and run["layer"] == TINY_LAYER for run in bench["runs"])
    # a factor of the factorial set is one concept: 1 + 2 concepts
    concepts = [c["concept"] for c in bench["concepts"]]
    assert concepts == ["planted/condition", "planted_place/condition", "planted_place/place"]

    readouts = {r["readout"]: r for r in bench["readouts"]}
    assert {"sae:rsa_discriminative", "raw:dense_l2", "raw:diff_means"} <= set(readouts)
    for row in readouts.values():
        assert set(row) == {"readout", "n_concepts", "mean_auroc", "ci_low", "ci_high", "mean_rank"}
        values = [bench["aurocs"][c][row["readout"]] for c in concepts]
        assert row["n_concepts"] == 3 and row["mean_auroc"] == pytest.approx(np.mean(values))
        assert row["ci_low"] is None and row["ci_high"] is None  # 3 < MIN_CONCEPTS
        assert 1 <= row["mean_rank"] <= len(readouts)
    wins = np.array(bench["wins"]["matrix"])
    assert (wins + wins.T <= 3).all() and np.trace(wins) == 0

    claims = {c["claim"]: c for c in bench["claims"]}
    expected = {
        "sae_vs_raw:rsa_discriminative",
        "rsa_categorical_vs_max_activation:sae",
        "rsa_discriminative_vs_max_activation:raw",
        "discriminative_vs_categorical:sae",
        "sae:contrast_vs_dense_l2",
        "raw:diff_means_vs_dense_l2",
    }
    assert expected <= set(claims)
    keys = {"claim", "a", "b", "n_concepts", "effect", "ci_low", "ci_high", "p", "p_corrected"}
    keys |= {"tau2", "i2", "wins", "ties", "losses", "sign_p"}
    claim = claims["sae_vs_raw:rsa_discriminative"]
    assert keys <= set(claim) and claim["n_concepts"] == 3
    assert claim["wins"] + claim["ties"] + claim["losses"] == 3
    # the per-concept difference is the run's own paired test on its stored fold AUROCs
    run = json.loads((output / bench["runs"][0]["run"] / "results.json").read_text())
    methods = {f"{m['space']}:{m['method']}": m for m in run["concepts"][0]["methods"]}
    own = paired_difference(
        np.array(methods[claim["a"]]["fold_aurocs"]),
        np.array(methods[claim["b"]]["fold_aurocs"]),
        run["concepts"][0]["cv"]["test_fraction"],
    )
    assert claim["concepts"][0]["d"] == pytest.approx(own.d)
    comparison = next(
        c for c in run["concepts"][0]["comparisons"] if (c["a"], c["b"]) == (claim["a"], claim["b"])
    )
    assert own.d == pytest.approx(comparison["diff"], abs=1e-4)  # fold AUROCs are rounded
    assert own.p == pytest.approx(comparison["p"], abs=0.02)
    finite = [c["p"] for c in bench["claims"] if c["p"] is not None]
    assert finite and all(c["p_corrected"] >= c["p"] for c in bench["claims"] if c["p"] is not None)
    assert [r["method"] for r in bench["axbench"]["rows"]] == ["DiffMean", "linear probe", "SAE"]

    page = folder / "report.html"
    assert page.is_file() and "sae_vs_raw:rsa_discriminative" in (folder / "report.md").read_text()
    forests = sorted((folder / "figures").glob("forest_*.png"))
    assert len(forests) == len(claims)
    assert "AxBench" in page.read_text()

    # re-running reuses every finished run: same numbers, no stage recomputed
    stages = {p: p.stat().st_mtime_ns for p in output.glob("*/run-*/stages/*.npz")}
    assert len(stages) == 2 * 2 + 1 + 2  # activations, geometry + a stage per concept, per run
    base = run_config(tiny_assets, output, **SETTINGS)
    configs = bench_configs(base, bench_sets([str(sets)]))
    assert run_bench(configs, progress=False) == folder  # what the command ran, not rendered
    assert json.loads((folder / BENCH_MANIFEST).read_text()) == bench
    assert {p: p.stat().st_mtime_ns for p in stages} == stages

    rebuilt = CliRunner().invoke(main, ["report", str(folder)])
    assert rebuilt.exit_code == 0 and str(page) in rebuilt.output


def test_bench_sets_and_claims(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("")
    (tmp_path / "a.yaml").write_text("")
    (tmp_path / "notes.txt").write_text("")
    one = str(tmp_path / "b.yaml")
    assert bench_sets([str(tmp_path), one]) == [str(tmp_path / "a.yaml"), one]
    with pytest.raises(CogsaeError, match="no such"):
        bench_sets([str(tmp_path / "missing.yaml")])
    missing = CliRunner().invoke(main, ["bench", str(tmp_path / "missing.yaml")])
    last = missing.output.splitlines()[-1]
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    assert last.startswith("error:") and "no such stimulus file" in last
    (tmp_path / "empty").mkdir()
    with pytest.raises(CogsaeError, match=r"no \*\.yaml"):
        bench_sets([str(tmp_path / "empty")])
    raw_only = claim_pairs(["raw:rsa_categorical", "raw:max_activation", "raw:dense_l2"])
    assert raw_only == [
        ("rsa_categorical_vs_max_activation:raw", "raw:rsa_categorical", "raw:max_activation"),
        ("raw:rsa_categorical_vs_dense_l2", "raw:rsa_categorical", "raw:dense_l2"),
        ("raw:max_activation_vs_dense_l2", "raw:max_activation", "raw:dense_l2"),
    ]


def fake_concept(factor: str, aurocs: dict[str, float], kind: str | None = None) -> dict:
    """A results.json concept entry: per readout label its AUROC, 2 x 5 fold AUROCs
    spread around it (one fold off, so the variance is positive)."""
    methods = []
    for i, (label, auroc) in enumerate(aurocs.items()):
        space, method = label.split(":")
        folds = np.full((2, 5), auroc)
        folds[0, i % 5] += 0.01 * (i + 1)
        methods.append(
            {"space": space, "method": method, "auroc": float(folds.mean()), "fold_aurocs": folds}
        )
    entry = {"factor": factor, "target": "a", "reference": "b", "n_items": 40, "n_target": 20}
    entry |= {"cv": {"test_fraction": 0.2}, "methods": methods}
    return entry | ({"kind": kind} if kind else {})


def test_summarize_keeps_omnibus_apart_and_skips_missing_readouts() -> None:
    binary = {"sae:contrast": 0.9, "raw:contrast": 0.8, "raw:dense_l2": 0.95}
    results = [
        {"stimuli": {"name": "one"}, "concepts": [fake_concept("f", binary)]},
        {
            "stimuli": {"name": "two"},
            "concepts": [
                fake_concept("f", {"sae:contrast": 0.7, "raw:dense_l2": 0.6}),  # no raw:contrast
                fake_concept("g", {"sae:contrast": 0.6, "raw:contrast": 0.7}, kind="omnibus"),
            ],
        },
    ]
    summary = summarize(results, seed=0, n_boot=99)
    assert [c["concept"] for c in summary["concepts"]] == ["one/f", "two/f", "two/g (omnibus)"]
    readouts = {r["readout"]: r["n_concepts"] for r in summary["readouts"]}
    assert readouts == {
        "sae:contrast": 2,
        "raw:contrast": 1,
        "raw:dense_l2": 2,
        "sae:contrast (omnibus)": 1,
        "raw:contrast (omnibus)": 1,
    }
    claims = {c["claim"]: c for c in summary["claims"]}
    sae_raw = claims["sae_vs_raw:contrast"]  # one/f and the omnibus entry; two/f lacks raw
    assert [c["concept"] for c in sae_raw["concepts"]] == ["one/f", "two/g (omnibus)"]
    assert sae_raw["concepts"][1]["kind"] == "omnibus"
    assert sae_raw["n_concepts"] == 2 and sae_raw["effect"] is not None
    assert claims["sae:contrast_vs_dense_l2"]["n_concepts"] == 2
    assert summary["readouts"][0]["ci_low"] is None  # two concepts: no bootstrap interval
    loco = next(r for r in summary["axbench"]["rows"] if r["method"] == "SAE")
    assert loco["n_concepts"] == 2 and loco["mean_auroc"] == pytest.approx(0.8, abs=0.01)
    json.dumps(summary, allow_nan=False)  # undefined numbers are null, not NaN
