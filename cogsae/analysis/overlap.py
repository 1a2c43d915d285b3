"""How much two selection methods' choices overlap, fold by fold.

docs/methods.md, "Selection overlap".

Two methods that select nearly the same units in every training fold are one procedure
under two names: a paired comparison of their readouts then measures fitting noise, not
a difference of methods, and is reported as "coincide" instead of a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np

from cogsae.analysis.ensemble import MethodResult
from cogsae.analysis.selection import SELECTORS
from cogsae.constants import COINCIDE_JACCARD


def fold_jaccard(a: MethodResult, b: MethodResult) -> float:
    """Mean over the shared held-out folds of the Jaccard index of the two readouts' units."""
    if a.plan is not b.plan:
        raise ValueError("selection overlap needs both readouts evaluated on the same plan")
    overlaps = [
        len(set(x.tolist()) & set(y.tolist())) / len(set(x.tolist()) | set(y.tolist()))
        for x, y in zip(a.selected_units, b.selected_units, strict=True)
    ]
    return float(np.mean(overlaps))


def selection_overlap(results: Sequence[MethodResult]) -> list[dict[str, Any]]:
    """Rows {space, a, b, jaccard, coincide} for every pair of selection methods of a space
    (readouts that select units: the ``SELECTORS``, "random" included), in results order;
    ``coincide``: jaccard >= ``COINCIDE_JACCARD``."""
    rows = []
    spaces = dict.fromkeys(r.space for r in results)
    for space in spaces:
        chosen = [r for r in results if r.space == space and r.method in SELECTORS]
        for a, b in combinations(chosen, 2):
            jaccard = fold_jaccard(a, b)
            rows.append(
                {
                    "space": space,
                    "a": a.method,
                    "b": b.method,
                    "jaccard": jaccard,
                    "coincide": bool(jaccard >= COINCIDE_JACCARD),
                }
            )
    return rows


def mark_coinciding(
    comparisons: list[dict[str, Any]], overlap: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``comparisons`` records (a, b labels "space:method"), each with ``coincide``: True
    when both readouts select in the same space and their selections coincide."""
    same = {
        frozenset((f"{row['space']}:{row['a']}", f"{row['space']}:{row['b']}"))
        for row in overlap
        if row["coincide"]
    }
    return [{**row, "coincide": frozenset((row["a"], row["b"])) in same} for row in comparisons]
