"""``ordered:``, ``features:`` and ``models:`` in the stimulus YAML: parsed, and every bad
entry is an error naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cogsae.errors import CogsaeError
from cogsae.hypotheses import model_rdm_names
from cogsae.stimuli import load_stimuli
from tests.helpers import REPO, write


def graded_set(extra: str = "", item_extra: str = "") -> str:
    """A 3-level long-form set whose items carry an ``intensity`` rating (declared as a
    feature unless ``extra`` declares the features)."""
    if "features:" not in extra:
        extra += "features: [intensity]\n"
    text = "factors: {praise: [weak, moderate, strong]}\n" + extra + "items:\n"
    for g in range(4):
        for rank, level in enumerate(("weak", "moderate", "strong")):
            text += (
                f'  - {{text: "Item {g} is {level} number {rank}.", praise: {level}, '
                f"group: g{g}, intensity: {rank + g / 10}{item_extra}}}\n"
            )
    return text


def test_ordered_features_and_models_parse(tmp_path: Path) -> None:
    extra = "ordered: [praise]\nmodels: [graded:praise, length]\n"
    stim = load_stimuli(write(tmp_path, graded_set(extra)))
    assert stim.ordered == ["praise"]
    assert stim.models == ["graded:praise", "length"]
    np.testing.assert_allclose(stim.features["intensity"][:3], [0.0, 1.0, 2.0])
    assert stim.items[4].features == {"intensity": 1.1}
    names = model_rdm_names(stim.factors, stim.ordered, list(stim.features))
    assert names == ["category:praise", "graded:praise", "feature:intensity", "semantic", "length"]


def test_the_shipped_intensity_set_declares_its_hypotheses() -> None:
    stim = load_stimuli(REPO / "stimuli" / "intensity.yaml")
    assert stim.ordered == ["praise"] and len(stim.features["intensity"]) == 120


@pytest.mark.parametrize(
    ("extra", "item_extra", "match", "field"),
    [
        ("ordered: [tone]\n", "", "not a declared factor", "ordered"),
        ("features: [intensity, intensity]\n", "", "listed twice", "features"),
        ("features: [praise]\n", "", "taken name", "features"),
        ("features: [intensity, arousal]\n", "", "missing value of feature 'arousal'", None),
        ("", ", arousal: 2", "unknown field 'arousal'", None),
        ("models: [graded:praise]\n", "", "unknown model RDM 'graded:praise'", "models"),
        ("models: [interaction]\n", "", "unknown model RDM 'interaction'", "models"),
    ],
)
def test_bad_hypotheses_name_file_line_and_field(
    tmp_path: Path, extra: str, item_extra: str, match: str, field: str | None
) -> None:
    path = write(tmp_path, graded_set(extra, item_extra))
    with pytest.raises(CogsaeError, match=match) as info:
        load_stimuli(path)
    assert info.value.path == str(path) and info.value.line is not None
    if field is not None:
        assert info.value.field == field


def test_a_feature_value_must_be_a_number(tmp_path: Path) -> None:
    text = graded_set().replace("intensity: 1.0}", 'intensity: "high"}')
    with pytest.raises(CogsaeError, match="must be a number") as info:
        load_stimuli(write(tmp_path, text))
    assert info.value.field == "items[1].intensity" and info.value.line == 5


def test_features_need_the_long_form(tmp_path: Path) -> None:
    short = "features: [x]\nconditions:\n  a: [a1, a2, a3, a4]\n  b: [b1, b2, b3, b4]\n"
    with pytest.raises(CogsaeError, match="long form"):
        load_stimuli(write(tmp_path, short))
