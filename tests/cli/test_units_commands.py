"""`cogsae inspect` and `cogsae attribute` on the tiny model and SAE."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cogsae.cli import main
from tests.helpers import TINY_LAYER


def test_inspect_a_feature_at_the_sae_layer(tiny_flags: list[str], tmp_path: Path) -> None:
    page = tmp_path / "page"
    result = CliRunner().invoke(
        main, ["inspect", *tiny_flags, "--feature", "4", "--out", str(page)]
    )
    assert result.exit_code == 0, result.output
    assert f"layer {TINY_LAYER}" in result.output and (page / "index.html").is_file()


def test_inspect_refuses_an_sae_of_another_layer(tiny_flags: list[str]) -> None:
    args = ["inspect", *tiny_flags, "--feature", "4", "--layer", str(TINY_LAYER + 1)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"trained on layer {TINY_LAYER}" in result.output and "[--layer]" in result.output


def test_inspect_feature_needs_an_sae(tiny_flags: list[str]) -> None:
    args = ["inspect", *tiny_flags, "--feature", "4", "--sae", "none"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "need an SAE" in result.output


def test_attribute_writes_its_table(tiny_flags: list[str], tmp_path: Path) -> None:
    table = tmp_path / "attribution.csv"
    args = ["attribute", *tiny_flags, "--feature", "2", "--feature", "3", "--out", str(table)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "correlation: Pearson" in result.output and table.is_file()
    empty = CliRunner().invoke(main, ["attribute", *tiny_flags])
    assert empty.exit_code == 2 and "give --feature and/or --ensemble" in empty.output


def test_inspect_a_feature_reads_the_feature_scan(tiny_flags: list[str], tmp_path: Path) -> None:
    """The page of a feature is the feature scan's (density over every scanned token)."""
    import json

    page = tmp_path / "page"
    args = ["inspect", *tiny_flags, "--feature", "4", "--examples", "3", "--out", str(page)]
    assert CliRunner().invoke(main, args).exit_code == 0
    record = json.loads((page / "inspection.json").read_text())
    assert record["n_tokens"] >= 60 and 0 <= record["density"] <= 1
    assert len(record["top"]) <= 3


def test_inspect_refuses_ray_for_a_raw_unit(tiny_flags: list[str]) -> None:
    args = ["inspect", *tiny_flags, "--unit", "3", "--engine", "ray"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "[--engine]" in result.output
