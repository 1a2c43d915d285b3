"""Design diagnostics: hidden pairing across conditions, grouped copies, nuisance variables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cogsae.analysis.design import NUISANCE_NAMES, find_pairs, nuisance_features, write_grouped
from cogsae.analysis.resampling import permutation_blocks
from cogsae.cli import main
from cogsae.errors import CogsaeError
from cogsae.extract import Window, check_window_fillable
from cogsae.stimuli import load_stimuli
from tests.helpers import REPO, write

PAIRED = """\
name: paired
concept: a true statement
window: {align: start, size: 4}
conditions:
  true_fact:
    - "Paris is the capital of France."
    - "Water boils at one hundred degrees at sea level."
    - "The heart pumps blood through the body."
    - "Owls hunt mostly at night in the forest."
    - "My neighbour painted her fence bright green last summer."
  false_fact:
    - "Paris is the capital of Italy."
    - "Water boils at ten degrees at sea level."
    - "The heart pumps air through the body."
    - "Bread dough rises faster in a warm kitchen."
    - "The train to the coast was cancelled again."
test:
  true_fact: ["Rome is the capital of Italy."]
  false_fact: ["Rome is the capital of Spain."]
"""


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two labelings of the same items group them identically."""
    pairs = np.unique(np.column_stack([a, b]), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_minimal_pairs_are_found_and_unrelated_items_are_not(tmp_path: Path) -> None:
    pairing = find_pairs(load_stimuli(write(tmp_path, PAIRED)))
    found = {(int(i), int(j)) for i, j in zip(pairing.first, pairing.second, strict=True)}
    assert found == {(0, 5), (1, 6), (2, 7)}
    assert pairing.n_paired == 6
    paris = pairing.similarity[pairing.first == 0][0]
    assert paris == pytest.approx(5 / 6)  # one word of six substituted
    assert pairing.similarity[0] == pytest.approx(7 / 8)  # "one hundred" -> "ten": 7 of 8
    groups = pairing.suggested_groups()
    assert list(groups[:3]) == list(groups[5:8]) and len(set(groups)) == 7
    assert "6 of 10 items look paired" in pairing.message()
    assert "line 7 / line 13" in pairing.message()  # the most similar pair
    test = find_pairs(load_stimuli(write(tmp_path, PAIRED)), test=True)
    assert test.n_paired == 2 and len(set(test.suggested_groups())) == 1


def test_pairs_chain_into_one_group_and_factor_restricts_comparisons(tmp_path: Path) -> None:
    text = "factors: {outcome: [win, loss], tense: [past, future]}\nitems:\n"
    cells = [("win", "past"), ("win", "future"), ("loss", "past"), ("loss", "future")]
    others = ["Owls hunt at night.", "Bread rises slowly.", "Rain fell all day.", "I like tea."]
    for (outcome, tense), other in zip(cells, others, strict=True):
        text += (
            f'  - {{text: "{other}", outcome: {outcome}, tense: {tense}}}\n'
            f'  - {{text: "The club won the cup in {tense} {outcome} games.", '
            f"outcome: {outcome}, tense: {tense}}}\n"
        )
    stimuli = load_stimuli(write(tmp_path, text))
    # the 4 "club" items form one template across all cells; the others match nothing
    groups = find_pairs(stimuli).suggested_groups()
    assert len(set(groups[1::2])) == 1 and len(set(groups)) == 5
    by_tense = find_pairs(stimuli, "tense")
    tense = np.array([it.levels["tense"] for it in stimuli.items])
    assert (tense[by_tense.first] != tense[by_tense.second]).all() and len(by_tense.first) == 4
    with pytest.raises(CogsaeError, match="threshold"):
        find_pairs(stimuli, threshold=0)


def test_project_sets_pairing() -> None:
    capitals = load_stimuli(REPO / "stimuli" / "capitals_paired.yaml")
    assert capitals.groups() is None
    for test in (False, True):
        groups = find_pairs(capitals, test=test).suggested_groups()
        half = len(groups) // 2  # every correct item is followed, n later, by its pair
        assert (groups[:half] == groups[half:]).all() and len(set(groups)) == half

    negation = load_stimuli(REPO / "stimuli" / "negation.yaml")
    assert _same_partition(find_pairs(negation).suggested_groups(), negation.groups())

    success = find_pairs(load_stimuli(REPO / "stimuli" / "success.yaml"))
    assert success.n_paired == 0 and success.message() is None


def test_write_grouped_reads_back_the_same_set(tmp_path: Path) -> None:
    stimuli = load_stimuli(write(tmp_path, PAIRED))
    copy = load_stimuli(write_grouped(stimuli, tmp_path / "grouped.yaml"))
    assert (copy.name, copy.concept, copy.factors) == (
        stimuli.name,
        stimuli.concept,
        stimuli.factors,
    )
    assert (copy.target, copy.reference) == (stimuli.target, stimuli.reference)
    for test in (False, True):
        assert copy.texts(test=test) == stimuli.texts(test=test)
        np.testing.assert_array_equal(copy.labels(test=test), stimuli.labels(test=test))
    groups = copy.groups()
    assert list(groups[:3]) == list(groups[5:8]) and len(set(groups)) == 7
    assert len(set(copy.groups(test=True))) == 1
    with pytest.raises(CogsaeError, match="already has group"):
        write_grouped(copy, tmp_path / "again.yaml")


def test_cli_validate_warns_and_writes_groups(tmp_path: Path, tiny_assets: dict) -> None:
    model = ["--model", tiny_assets["model"]]
    paired = write(tmp_path, PAIRED)
    result = CliRunner().invoke(main, ["validate", str(paired), *model])
    assert result.exit_code == 0, result.output
    assert "warning: 6 of 10 items look paired across conditions" in result.output

    out = tmp_path / "grouped.yaml"
    result = CliRunner().invoke(main, ["validate", str(paired), "--write-groups", str(out), *model])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and load_stimuli(out).groups() is not None
    result = CliRunner().invoke(main, ["validate", str(out), *model])
    assert "look paired" not in result.output  # the grouped copy needs no advice

    result = CliRunner().invoke(
        main, ["validate", str(paired), str(out), "--write-groups", str(tmp_path / "x.yaml")]
    )
    assert result.exit_code == 2 and "single FILE" in result.output


def test_nuisance_features_match_extraction(tmp_path: Path, tiny_tokenizer) -> None:
    stimuli = load_stimuli(write(tmp_path, PAIRED))
    window = Window("end", 4)
    features = nuisance_features(stimuli, tiny_tokenizer, window)
    assert features.shape == (10, len(NUISANCE_NAMES))
    n_tokens = np.array([len(ids) for ids in tiny_tokenizer(stimuli.texts())["input_ids"]])
    np.testing.assert_array_equal(features[:, 0], n_tokens)
    np.testing.assert_array_equal(
        features[:, 1], check_window_fillable(tiny_tokenizer, stimuli, window)
    )
    np.testing.assert_array_equal(features[:, 2], n_tokens - 1)  # an end window ends last
    start = nuisance_features(stimuli, tiny_tokenizer, Window("start", 3))
    np.testing.assert_array_equal(start[:, 2], 3)  # slots 1, 2, 3 after position 0
    assert features[0, 3] == pytest.approx(np.mean([5, 2, 3, 7, 2, 6]))  # Paris ... France
    test = nuisance_features(stimuli, tiny_tokenizer, window, test=True)
    assert test.shape == (2, len(NUISANCE_NAMES))


def test_permutation_blocks_of_a_factorial_set(tmp_path: Path) -> None:
    text = "factors: {outcome: [win, loss], tense: [past, future]}\nitems:\n"
    for g in range(4):
        for outcome, tense, verb in [
            ("win", "past", "won"),
            ("win", "future", "will win"),
            ("loss", "past", "lost"),
            ("loss", "future", "will lose"),
        ]:
            text += (
                f'  - {{text: "Team {g} {verb}.", outcome: {outcome}, tense: {tense}, '
                f"group: g{g}}}\n"
            )
    stimuli = load_stimuli(write(tmp_path, text))
    blocks = permutation_blocks(stimuli.design(), stimuli.primary_factor, stimuli.groups())
    cells = np.array([f"{it.group}/{it.levels['tense']}" for it in stimuli.items])
    assert _same_partition(blocks, cells)  # outcome is permuted within template x tense
    paired = load_stimuli(write(tmp_path, PAIRED))
    assert permutation_blocks(paired.design(), paired.primary_factor, paired.groups()) is None
