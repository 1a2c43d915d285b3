"""`cogsae validate` and `cogsae extract` on the tiny model."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cogsae.cli import main
from tests.helpers import TINY_LAYER


def test_validate_counts_tokens_with_the_given_model(tiny_assets: dict, tmp_path: Path) -> None:
    args = ["validate", str(tiny_assets["stimuli"]), "--model", tiny_assets["model"]]
    grouped = tmp_path / "grouped.yaml"
    result = CliRunner().invoke(main, [*args, "--write-groups", str(grouped)])
    assert result.exit_code == 0, result.output
    assert "window: target, 2 tokens" in result.output and grouped.is_file()
    two = CliRunner().invoke(main, [*args, str(tiny_assets["stimuli"]), "--write-groups", "x.yaml"])
    assert two.exit_code == 2 and "--write-groups takes a single FILE" in two.output


def test_extract_reads_the_resolved_layer(tiny_assets: dict, isolated_cache: Path) -> None:
    args = ["extract", str(tiny_assets["stimuli"]), "--model", tiny_assets["model"]]
    result = CliRunner().invoke(main, [*args, "--layer", str(TINY_LAYER), "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert f"(layer {TINY_LAYER}," in result.output and "test items" in result.output
    assert "dtype: float32" in result.stderr
