"""Stimulus YAML: both forms parse, and every bad input gives file, line and field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cogsae.cli import main
from cogsae.errors import CogsaeError
from cogsae.extract import MAX_WINDOW_SIZE, Window, check_window_fillable
from cogsae.stimuli import Item, load_stimuli
from tests.helpers import REPO, write

SHORT = """\
name: demo
concept: winning
window: {align: start, size: 3}
conditions:
  win:
    - "We won the match."
    - "She passed the exam."
    - "They closed the deal."
    - "He finished the race first."
  lose:
    - "We lost the match."
    - "She failed the exam."
    - "They lost the deal."
    - "He finished the race last."
test:
  win: ["The plan worked."]
  lose: ["The plan collapsed."]
"""

LONG = """\
factors: {outcome: [success, failure], tense: [past, future]}
items:
"""
for g in range(4):
    LONG += (
        f'  - {{text: "Team {g} won.", outcome: success, tense: past, group: g{g}, '
        f'target: "won"}}\n'
        f'  - {{text: "Team {g} will win.", outcome: success, tense: future, group: g{g}}}\n'
        f'  - {{text: "Team {g} lost.", outcome: failure, tense: past, group: g{g}}}\n'
        f'  - {{text: "Team {g} will lose.", outcome: failure, tense: future, group: g{g}}}\n'
    )


def test_short_form(tmp_path: Path) -> None:
    stim = load_stimuli(write(tmp_path, SHORT))
    assert stim.name == "demo" and stim.concept == "winning"
    assert (stim.target, stim.reference) == ("win", "lose")
    np.testing.assert_array_equal(stim.labels(), [1] * 4 + [0] * 4)
    np.testing.assert_array_equal(stim.labels(test=True), [1, 0])
    assert stim.groups() is None
    assert stim.items[0].line == 6


def test_long_form_factorial(tmp_path: Path) -> None:
    stim = load_stimuli(write(tmp_path, LONG, "factorial.yaml"))
    assert stim.name == "factorial" and stim.is_factorial
    assert stim.factors == {"outcome": ["success", "failure"], "tense": ["past", "future"]}
    np.testing.assert_array_equal(stim.labels()[:4], [1, 1, 0, 0])
    np.testing.assert_array_equal(stim.labels("tense")[:4], [1, 0, 1, 0])
    assert list(stim.groups()[:5]) == ["g0"] * 4 + ["g1"]
    assert stim.items[0].target == "won"


@pytest.mark.parametrize("path", sorted((REPO / "stimuli").glob("*.yaml")), ids=lambda p: p.stem)
def test_project_sets_are_valid(path: Path, tokenizer) -> None:
    stim = load_stimuli(path)
    counts = np.bincount(stim.labels() + 1)
    least = 10 if path.stem == "minimal" else 40  # minimal.yaml: the smallest newcomer's set
    assert counts[1] >= least and counts[2] >= least
    check_window_fillable(tokenizer, stim, Window.for_stimuli(stim))


def _bad(text: str, line: int | None, field: str | None, tmp_path: Path, match: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CogsaeError, match=match) as info:
        load_stimuli(path)
    err = info.value
    assert err.path == str(path)
    assert err.line == line
    assert err.field == field


FOUR = '["a one.", "a two.", "a three.", "a four."]'
FOUR_B = '["b one.", "b two.", "b three.", "b four."]'


@pytest.mark.parametrize(
    ("text", "line", "field", "match"),
    [
        ("name: x\nconditions: {a: [1\n", 3, None, "invalid YAML"),
        ("name: x\n", 1, "conditions", "exactly one of"),
        (f"conditions:\n  a: {FOUR}\n  b: {FOUR_B}\ncolour: red\n", 4, "colour", "unknown field"),
        (f"conditions:\n  a: {FOUR}\n", 2, "conditions", "at least 2 conditions"),
        (f'conditions:\n  a: ["x.", "y.", "z."]\n  b: {FOUR_B}\n', 2, "condition.a", "3 items"),
        (
            f'conditions:\n  a: ["", "x.", "y.", "z."]\n  b: {FOUR_B}\n',
            2,
            "conditions.a[0]",
            "empty",
        ),
        (f"conditions:\n  a: [12, x, y, z]\n  b: {FOUR_B}\n", 2, "conditions.a[0]", "string"),
        (
            f'conditions:\n  a: {FOUR}\n  b: ["a one.", "b2.", "b3.", "b4."]\n',
            3,
            "text",
            "duplicate text",
        ),
        (
            f"conditions:\n  a: {FOUR}\n  b: {FOUR_B}\ntarget: c\n",
            4,
            "target",
            "not a level",
        ),
        (
            "factors: {f: [a, b]}\nitems:\n"
            + "".join(f"  - {{text: 'a{i}.', f: a}}\n" for i in range(4))
            + "".join(f"  - {{text: 'b{i}.', f: b}}\n" for i in range(3))
            + "  - {text: 'c.', f: c}\n",
            10,
            "items[7].f",
            "not a declared level",
        ),
        (
            "factors: {f: [a, b]}\nitems:\n"
            + "  - {text: 'the cat sat.', f: a, target: dog}\n"
            + "".join(f"  - {{text: 'a{i}.', f: a}}\n" for i in range(3))
            + "".join(f"  - {{text: 'b{i}.', f: b}}\n" for i in range(4)),
            3,
            "target",
            "not a substring",
        ),
        (
            "factors: {f: [a, b]}\nitems:\n  - {f: a}\n",
            3,
            "items[0]",
            "missing field 'text'",
        ),
        (
            f"conditions:\n  a: {FOUR}\n  b: {FOUR_B}\nwindow: {{align: middle}}\n",
            4,
            "window.align",
            "unknown window align",
        ),
    ],
    ids=[
        "invalid-yaml",
        "no-conditions",
        "unknown-field",
        "one-condition",
        "too-few-items",
        "empty-text",
        "non-string-text",
        "duplicate",
        "bad-target-level",
        "undeclared-level",
        "target-not-substring",
        "missing-text",
        "bad-window",
    ],
)
def test_bad_input(text: str, line: int, field: str, match: str, tmp_path: Path) -> None:
    _bad(text, line, field, tmp_path, match)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(CogsaeError, match="cannot read file") as info:
        load_stimuli(tmp_path / "missing.yaml")
    assert info.value.path.endswith("missing.yaml")


def test_window_no_item_can_fill(tmp_path: Path, tiny_tokenizer) -> None:
    stim = load_stimuli(write(tmp_path, SHORT))
    assert Window.for_stimuli(stim) == Window("start", 3)
    with pytest.raises(CogsaeError, match="no item can fill") as info:
        check_window_fillable(tiny_tokenizer, stim, Window("start", 40))
    assert info.value.field == "window.size"
    check_window_fillable(tiny_tokenizer, stim, Window("start", 3))


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, f"conditions:\n  a: {FOUR}\n  b: {FOUR_B}\ncolour: red\n")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert f"{path}:4 [colour]" in result.output
    assert "Traceback" not in result.output


def test_cli_validate_summary(tmp_path: Path, tiny_assets: dict) -> None:
    path = write(tmp_path, SHORT)
    result = CliRunner().invoke(main, ["validate", str(path), "--model", tiny_assets["model"]])
    assert result.exit_code == 0, result.output
    assert "n=  4" in result.output and "test=  1" in result.output
    assert "Welch t" in result.output


def test_cli_validate_parses_before_loading_a_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A malformed file is reported from parsing alone: no tokenizer is loaded (that takes
    seconds), also when a well-formed file comes first."""
    import cogsae.model

    def no_tokenizer(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("tokenizer loaded before the files were parsed")

    monkeypatch.setattr(cogsae.model, "load_tokenizer", no_tokenizer)
    good = write(tmp_path, SHORT, "good.yaml")
    bad = write(tmp_path, f"conditions:\n  a: {FOUR}\n  b: {FOUR_B}\ncolour: red\n", "bad.yaml")
    result = CliRunner().invoke(main, ["validate", str(good), str(bad)])
    assert result.exit_code == 2, result.output
    assert f"{bad}:4 [colour]" in result.output and "Traceback" not in result.output


SHORT_NO_WINDOW = """\
conditions:
  win: ["We won.", "She passed.", "They closed the deal.", "He won it."]
  lose: ["We lost.", "She failed.", "They lost the deal.", "He lost it."]
"""


def test_window_without_size_fits_the_longest_item(tmp_path: Path, tiny_tokenizer) -> None:
    """No window: in a set of sentences shorter than 16 tokens: the window is the longest
    item's length (minus position 0), so the set validates; a given size still errors."""
    stim = load_stimuli(write(tmp_path, SHORT_NO_WINDOW))
    window = Window.for_stimuli(stim)
    assert window.size is None
    longest = max(len(ids) for ids in tiny_tokenizer(stim.texts())["input_ids"])
    assert longest - 1 < 16
    assert window.fit(tiny_tokenizer, stim) == Window("start", longest - 1)
    valid = check_window_fillable(tiny_tokenizer, stim, window)
    assert valid.max() == longest - 1
    with pytest.raises(CogsaeError, match="no item can fill"):
        check_window_fillable(tiny_tokenizer, stim, Window("start", 16))
    long_text = " ".join(["word"] * 60)
    stim.test_items = [Item(long_text, {"condition": "win"})]
    assert window.fit(tiny_tokenizer, stim).size == MAX_WINDOW_SIZE


def test_cli_validate_reports_the_fitted_window(tmp_path: Path, tiny_assets: dict) -> None:
    path = write(tmp_path, SHORT_NO_WINDOW)
    result = CliRunner().invoke(main, ["validate", str(path), "--model", tiny_assets["model"]])
    assert result.exit_code == 0, result.output
    assert "window: start, 4 tokens (no window.size: the longest item's length, at most 32)" in (
        result.output
    )
