"""`cogsae train-sae` and `cogsae sae-metrics` on the tiny model (a few hundred tokens)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cogsae.cli import main
from cogsae.sae.io import read_sae_config
from tests.helpers import TINY_LAYER


def test_train_then_measure(
    tiny_assets: dict, corpus: Path, isolated_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sae"
    common = ["--model", tiny_assets["model"], "--corpus", str(corpus), "--quiet"]
    train = ["train-sae", *common, "--layer", str(TINY_LAYER), "--out", str(out)]
    train += ["--d-sae", "16", "--k", "2", "--tokens", "400", "--batch-size", "100"]
    result = CliRunner().invoke(main, [*train, "--context-length", "16"])
    assert result.exit_code == 0, result.output
    cfg = read_sae_config(out)
    assert (cfg.d_sae, cfg.k, cfg.layer) == (16, 2, TINY_LAYER)
    # no --layer: sae-metrics reads the SAE's own layer
    metrics = ["sae-metrics", str(out), *common, "--tokens", "100", "--subset", "all"]
    result = CliRunner().invoke(main, [*metrics, "--context-length", "16"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["layer"] == TINY_LAYER
