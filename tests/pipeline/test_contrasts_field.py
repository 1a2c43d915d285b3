"""Every level is accounted for: the ``contrasts:`` field adds pairwise contrasts, each an
ordinary concept entry with its levels; a level no analysis uses is named in a warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cogsae.cli import main
from cogsae.pipeline import execute
from cogsae.report import write_report
from tests.helpers import SUBJECTS, run_config, write
from tests.pipeline.test_plan import FAST

VERBS = {"positive": "praised", "neutral": "noticed", "negative": "blamed"}


def three_levels(folder: Path, contrasts: str = "") -> Path:
    """A short-form set with three levels (positive, neutral, negative), 8 items each."""
    lines = [contrasts] if contrasts else []
    lines.append("conditions:")
    for level, verb in VERBS.items():
        lines.append(f"  {level}:")
        lines += [f'    - "{SUBJECTS[i % 6]} {verb} the plan on day {i}."' for i in range(8)]
    return write(folder, "\n".join(lines) + "\n", "valence.yaml")


def run(tiny_assets: dict, folder: Path, path: Path) -> tuple[dict, str]:
    cfg = run_config(tiny_assets, folder / "out", stimuli=str(path), sae="none", **FAST)
    directory = execute(cfg, progress=False)
    write_report(directory)
    results = json.loads((directory / "results.json").read_text())
    return results, (directory / "report.md").read_text()


def test_every_level_is_analysed(tiny_assets: dict, tmp_path: Path) -> None:
    """A third level used to be dropped silently (only `validate`'s design line hinted):
    now the declared contrast is joined by an omnibus entry over all three levels."""
    results, report = run(tiny_assets, tmp_path, three_levels(tmp_path))
    contrast, omnibus = results["concepts"]
    assert contrast["kind"] == "contrast" and contrast["levels"] == ["positive", "neutral"]
    assert contrast["n_items"] == 16
    assert omnibus["kind"] == "omnibus"
    assert omnibus["levels"] == ["positive", "neutral", "negative"]
    assert omnibus["n_items"] == 24
    assert results["warnings"] == []  # no level is left unused
    assert "levels used" in report


def test_unused_level_warning_names_the_level() -> None:
    from cogsae.pipeline.plan import unused_warning

    warning = unused_warning("valence", ["negative"])
    assert "'negative'" in warning and "no analysis" in warning


@pytest.mark.parametrize(
    ("contrasts", "field", "words"),
    [
        ("contrasts: [[negative, sad]]", "contrasts[0]", "'sad' is not a level"),
        ("contrasts: [[negative, negative]]", "contrasts[0]", "with itself"),
        ("contrasts: [[negative]]", "contrasts[0]", "[target, reference]"),
        ("contrasts: negative", "contrasts", "must be a list"),
        ("contrasts: [[neutral, positive]]", "contrasts[0]", "analysed already"),
        ("contrasts: [{target: negative}]", "contrasts[0]", "missing field 'reference'"),
        ("contrasts: [{factor: mood, target: a, reference: b}]", "contrasts[0].factor", "unknown"),
        (
            "contrasts: [{target: negative, reference: neutral, to: x}]",
            "contrasts[0].to",
            "unknown",
        ),
    ],
)
def test_bad_contrasts_exit_2_naming_file_line_field(
    tmp_path: Path, contrasts: str, field: str, words: str
) -> None:
    path = three_levels(tmp_path, contrasts)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    (line,) = [x for x in result.output.splitlines() if x.strip()]
    assert f"{path}:1 [{field}]" in line and words in line, line


def test_three_level_secondary_factor_skips_the_glm(tiny_assets: dict, tmp_path: Path) -> None:
    """The factorial GLM codes 2 levels per factor; a 2 x 3 design skips it with a design
    warning instead of failing, each factor still gets its contrast and the 3-level factor
    its omnibus entry."""
    lines = ["factors: {outcome: [gain, loss], time: [past, now, later]}", "items:"]
    for i in range(2):
        for outcome, verb in (("gain", "won"), ("loss", "lost")):
            for time in ("past", "now", "later"):
                text = f"{SUBJECTS[i]} {verb} it {time} in round {i}."
                lines.append(f'  - {{text: "{text}", outcome: {outcome}, time: {time}}}')
    results, report = run(tiny_assets, tmp_path, write(tmp_path, "\n".join(lines) + "\n"))
    primary, secondary, omnibus = results["concepts"]
    assert primary["glm"] == {} and any("GLM" in w for w in primary["warnings"])
    assert secondary["levels"] == ["past", "now"] and secondary["n_items"] == 8
    assert omnibus["levels"] == ["past", "now", "later"] and omnibus["n_items"] == 12
    assert "GLM needs 2 levels" in report
