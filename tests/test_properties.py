"""Property-based tests over the stimulus YAML: every set `validate` accepts runs to a
report; every broken set exits 2 with one line naming file, line and field.

`stimulus_sets` draws sets of every form (short and long form; 2-5 levels; 1-3 factors; no,
some or fully paired groups; target windows; ``test:`` sections; ``window:`` given or not;
``contrasts:``; items of 2-40 words, 4-40 items a level; unicode and YAML-special strings),
written with ``yaml.safe_dump``. The CI profile (tests/conftest.py) bounds the examples;
``--hypothesis-profile=long`` explores more.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from cogsae.analysis.resampling import bootstrap_indices
from cogsae.analysis.rsa import categorical_rsa
from cogsae.cli import main

WORDS = [
    "the", "cat", "sat", "on", "mat", "team", "won", "yes", "no", "null", "~", "true",
    "#hash", "a: b", "- dash", "&anchor", "*star", "{brace}", "[list]", "'quote'", '"dq"',
    "%pct", "@at", "`tick`", "café", "naïve", "日本語", "Ελληνικά", "🎉", "tab\tx", "x|y",
    ">gt", "!bang", "1.5", "0x1F", "2024-01-01", "on", "off", "NaN", "-", "line\nbreak",
]  # fmt: skip
"""Words of generated items: plain, YAML-special (bools, nulls, indicators) and unicode."""
NAMES = [
    "yes", "no", "null", "true", "1", "on", "a b", "é", "日本", "x:y", "#c", "~", "[x]",
    "lvl", " padded ", "NaN", "0.5", "Ünï", "-", "&a",
]  # fmt: skip
"""Factor and level names (distinct within a factor), as special as YAML gets."""
RESERVED = {"text", "group", "target"}
ALIGNS = ("start", "end", "center", "target")
MAX_ITEMS = 80
"""Items of a drawn set at most (beyond the least a design needs), so a run takes seconds."""


@st.composite
def stimulus_sets(draw: st.DrawFn) -> dict[str, Any]:
    """A valid stimulus set as a YAML document (a dict for ``yaml.safe_dump``)."""
    long = draw(st.booleans())
    n_factors = draw(st.integers(1, 3)) if long else 1
    names = ["condition"]
    if long:
        pool = [n for n in NAMES if n not in RESERVED]
        names = draw(st.lists(st.sampled_from(pool), min_size=n_factors, max_size=n_factors,
                              unique=True))  # fmt: skip
    factors = {}
    for i, factor in enumerate(names):
        n_levels = draw(st.integers(2, 5 if i == 0 else 3))
        factors[factor] = draw(
            st.lists(st.sampled_from(NAMES), min_size=n_levels, max_size=n_levels, unique=True)
        )
    cells = list(itertools.product(*factors.values()))
    grouping = draw(st.sampled_from(["none", "some", "paired"]))
    # every level of every factor gets >= 4 items (and >= 4 groups when paired)
    lowest = max(math.ceil(4 * len(levels) / len(cells)) for levels in factors.values())
    lowest = max(lowest, 4) if grouping == "paired" else lowest
    per_level = len(cells) // len(next(iter(factors.values())))
    highest = max(lowest, min(40 // per_level, MAX_ITEMS // len(cells)))
    per_cell = draw(st.integers(lowest, highest))
    window = draw(st.none() | st.fixed_dictionaries({}, optional={
        "align": st.sampled_from(ALIGNS), "size": st.integers(1, 6)}))  # fmt: skip
    targets = window is not None and window.get("align") == "target"
    counter = itertools.count()

    def item(cell: tuple[str, ...], replicate: int) -> dict[str, Any]:
        n = next(counter)
        words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=39))
        long_one = replicate == 0 and window is not None and "size" in window
        words = ["Once", *(WORDS[:12] if long_one else []), *words, f"w{n}x"]
        record: dict[str, Any] = {"text": " ".join(words)}
        record.update(zip(factors, cell, strict=True))
        if targets or draw(st.booleans()):
            record["target"] = "Once" if long_one and targets else f"w{n}x"
        if grouping == "paired":
            record["group"] = f"t{replicate}"
        elif grouping == "some" and draw(st.booleans()):
            record["group"] = f"g{draw(st.integers(0, 20))}"
        return record

    items = [item(cell, r) for r in range(per_cell) for cell in cells]
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["name"] = draw(st.sampled_from(NAMES))
    if window is not None:
        doc["window"] = window
    primary = next(iter(factors))
    levels = factors[primary]
    if len(levels) > 2 and draw(st.booleans()):
        doc["contrasts"] = [[levels[2], levels[0]]]
    if long:
        doc["factors"] = factors
        doc["items"] = items
        if draw(st.booleans()):
            doc["test"] = [
                {
                    **it,
                    "text": f"held out {it['text']}",
                    **({"group": "h"} if "group" in it else {}),
                }
                for it in items[: len(cells)]
            ]
    else:
        doc["conditions"] = {lev: [] for lev in levels}
        for it in items:
            doc["conditions"][it[primary]].append(it["text"])
        if draw(st.booleans()):
            doc["test"] = {lev: [f"held out {lev} {i} w" for i in range(2)] for lev in levels}
    return doc


def dump(doc: dict[str, Any], folder: Path, name: str = "set.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def tiny(tiny_assets: dict) -> list[str]:
    return ["--model", tiny_assets["model"], "--dtype", "float32", "--layer", "1"]


FAST = [
    "--sae", "none", "--k", "2", "--permutations", "4", "--repeats", "1", "--bootstrap", "10",
    "--snippets", "0", "--no-figures", "--quiet",
]  # fmt: skip


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=stimulus_sets())
def test_every_valid_set_runs_to_a_report(
    doc: dict[str, Any], tiny_assets: dict, isolated_cache: Path
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = dump(doc, Path(folder))
        checked = invoke("validate", str(path), "--model", tiny_assets["model"])
        if checked.exit_code == 2 and "[window" in checked.output:
            reject()  # a drawn window size no item fills: refused by design
        assert checked.exit_code == 0, checked.output
        ran = invoke("run", str(path), *tiny(tiny_assets), *FAST, "--output", folder)
        assert ran.exit_code == 0, ran.output
        (results,) = Path(folder).glob("*/run-*/results.json")
        record = json.loads(results.read_text())
        assert (results.parent / "report.html").is_file()
        used = {lev for c in record["concepts"] for lev in c["levels"]}
        primary = next(iter(record["stimuli"]["factors"].values()))
        unused = [lev for lev in primary if lev not in used]
        assert all(any(repr(lev) in w for w in record["warnings"]) for lev in unused)


def mutations(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(what, broken copy of ``doc``, the field the error must name)."""
    out = []

    def broken(what: str, field: str, change: Any) -> None:
        copy = json.loads(json.dumps(doc))
        change(copy)
        out.append((what, copy, field))

    broken("unknown field", "colour", lambda d: d.update(colour="red"))
    broken("wrong type", "window.size", lambda d: d.update(window={"size": "big"}))
    broken("unknown target", "target", lambda d: d.update(target="no such level"))
    broken("window no item fills", "window.size", lambda d: d.update(window={"size": 999}))
    if "items" in doc:
        first = doc["items"][0]
        broken("missing field", "items[0]", lambda d: d["items"][0].pop("text"))
        broken("empty text", "items[1].text", lambda d: d["items"][1].update(text="  "))
        factor = next(iter(doc["factors"]))
        broken("unknown level", f"items[0].{factor}",
               lambda d: d["items"][0].update({factor: "no such level"}))  # fmt: skip
        broken("duplicate", "text", lambda d: d["items"][1].update(text=first["text"]))
        broken("wrong type", "items[0].text", lambda d: d["items"][0].update(text=5))
    else:
        level = next(iter(doc["conditions"]))
        first = doc["conditions"][level][0]
        broken("missing field", "conditions", lambda d: d.pop("conditions"))
        broken("empty text", f"conditions.{level}[1]",
               lambda d: d["conditions"][level].__setitem__(1, ""))  # fmt: skip
        broken("duplicate", "text", lambda d: d["conditions"][level].append(first.upper()))
        broken("wrong type", f"conditions.{level}[0]",
               lambda d: d["conditions"][level].__setitem__(0, 3.5))  # fmt: skip
    return out


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=stimulus_sets())
def test_broken_sets_exit_2_naming_file_line_and_field(
    doc: dict[str, Any], tiny_assets: dict, isolated_cache: Path
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for what, copy, field in mutations(doc):
            path = dump(copy, Path(folder), "broken.yaml")
            commands = (
                ["validate", str(path), "--model", tiny_assets["model"]],
                ["run", str(path), *tiny(tiny_assets), *FAST, "--output", folder],
            )
            for command in commands if what == "window no item fills" else commands[:1]:
                result = invoke(*command)
                errors = [x for x in result.output.splitlines() if x.startswith("error:")]
                assert result.exit_code == 2 and len(errors) == 1, (what, result.output)
                assert "Traceback" not in result.output, (what, result.output)
                assert f"{path}:" in errors[0] and f"[{field}]" in errors[0], (what, errors[0])


@pytest.mark.parametrize("command", ["validate", "run"])
def test_no_such_file_exits_2(command: str, tmp_path: Path) -> None:
    result = invoke(command, str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_categorical_rsa_bootstrap_of_unequal_mixed_groups() -> None:
    """Found by `test_every_valid_set_runs_to_a_report` (a long-form set with some groups):
    a bootstrap of groups of unequal size has another length than the set, and the CI
    indexed item pairs of the set's length (IndexError, or pairs silently dropped)."""
    rng = np.random.default_rng(0)
    labels = np.tile([1, 0], 6)
    groups = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 4])  # some hold both conditions
    result = categorical_rsa(
        rng.normal(size=(12, 5)), labels, groups=groups, n_permutations=9, n_bootstrap=100
    )
    sizes = {bootstrap_indices(labels, rng, groups).size for _ in range(50)}
    assert len(sizes) > 1 and np.isfinite(result.bootstrap).sum() > 90
