"""The relevance scale and the two kinds of judge: any `Judge`, and a `ThresholdJudge` whose
continuous value is cut into the scale by fixed thresholds."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

import numpy as np

RUBRIC = {0: "unrelated", 1: "vaguely related", 2: "related", 3: "clearly the concept"}
"""The relevance scale every judge scores on."""

NO_SCORE = -1
"""Score of a text a judge could not score (an unparseable API reply); never averaged."""


class Judge(Protocol):
    """Scores texts' relevance to a concept on `RUBRIC` (0-3; `NO_SCORE` if it cannot)."""

    name: str

    def score(self, concept: str, texts: list[str]) -> np.ndarray:
        """[len(texts)] int scores in 0..3 (or `NO_SCORE`)."""
        ...


def to_rubric(values: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """[n] int 0..3: the number of the 3 ascending ``thresholds`` that ``values`` [n] reach.

    value < t1 -> 0, t1 <= value < t2 -> 1, t2 <= value < t3 -> 2, value >= t3 -> 3.
    """
    return np.searchsorted(np.asarray(thresholds), np.asarray(values), side="right")


class ThresholdJudge(ABC):
    """A judge with a continuous relevance value mapped to 0-3 by fixed thresholds.

    Attributes:
        name: the judge's name in `make_judge` and reports.
        thresholds: 3 ascending cut points of `values` (see `to_rubric`).
    """

    name: str
    thresholds: tuple[float, float, float]

    @abstractmethod
    def values(self, concept: str, texts: list[str]) -> np.ndarray:
        """[len(texts)] float relevance value; higher = more about ``concept``."""

    def score(self, concept: str, texts: list[str]) -> np.ndarray:
        """[len(texts)] int scores 0..3."""
        return to_rubric(self.values(concept, texts), self.thresholds)
