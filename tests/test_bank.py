"""The concept bank (stimuli/bank/): the properties its README states hold for every set."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cogsae.analysis.design import find_pairs
from cogsae.stimuli import StimulusSet, length_check, load_stimuli
from tests.helpers import REPO

BANK = REPO / "stimuli" / "bank"
PATHS = sorted(BANK.glob("*.yaml"))
MIN_ITEMS, MIN_TEST = 40, 10


def _factor_view(stim: StimulusSet, factor: str, *, test: bool) -> StimulusSet:
    """The set with ``factor`` moved first (so `length_check` tests it) and, for ``test``,
    the held-out items in place of the main ones."""
    target, reference = stim.contrast_levels(factor)
    factors = {factor: stim.factors[factor]} | stim.factors
    items = stim.test_items if test else stim.items
    return dataclasses.replace(
        stim, factors=factors, target=target, reference=reference, items=items, test_items=[]
    )


def test_bank_has_the_stated_coverage() -> None:
    sets = [load_stimuli(p) for p in PATHS]
    assert len(sets) >= 24
    two_by_two = [s for s in sets if [len(v) for v in s.factors.values()] == [2, 2]]
    multi_level = [s for s in sets if any(len(v) >= 3 for v in s.factors.values())]
    assert len(two_by_two) >= 4 and len(multi_level) >= 4
    readme = (BANK / "README.md").read_text(encoding="utf-8")
    for s in sets:
        assert f"`{s.name}`" in readme, f"{s.name} missing from the bank's README table"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_bank_set(path: Path, tokenizer) -> None:
    stim = load_stimuli(path)
    assert stim.name == path.stem and stim.concept != path.stem and stim.description
    for factor, levels in stim.factors.items():
        for level in levels:
            n = sum(it.levels[factor] == level for it in stim.items)
            n_test = sum(it.levels[factor] == level for it in stim.test_items)
            assert n >= MIN_ITEMS and n_test >= MIN_TEST, (factor, level, n, n_test)
    texts = [" ".join(t.lower().split()) for t in stim.texts() + stim.texts(test=True)]
    assert len(set(texts)) == len(texts)
    if stim.groups() is None:  # independent items must not look like minimal pairs
        assert find_pairs(stim).message() is None
        assert find_pairs(stim, test=True).message() is None
    for factor in stim.factors:  # every factor, main and held-out items: no length confound
        for test in (False, True):
            check = length_check(_factor_view(stim, factor, test=test), tokenizer)
            assert check.p_value >= 0.05, (factor, "test" if test else "items", check)
