"""Agreement of a judge with the hand-labelled calibration set, and threshold fitting.

``cogsae/data/judge_calibration.yaml``: 390 snippet-concept pairs over 12 concepts, each
labelled on `RUBRIC` by one annotator following ``cogsae/data/relevance_rubric.md`` (48
texts written for the file, 342 sentences of the default corpus). `judge_agreement`
reports Spearman rho of the judge's continuous value with the labels, quadratic-weighted
kappa of its 0-3 scores with the fixed thresholds (in-sample when the thresholds were
fitted on this set), and the held-out kappa: thresholds refitted on the other concepts
for each concept (`fit_thresholds`), the figure to quote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations_with_replacement
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from cogsae.judges.base import Judge, ThresholdJudge, to_rubric

CALIBRATION_PATH = Path(__file__).resolve().parent.parent / "data" / "judge_calibration.yaml"


@dataclass(frozen=True)
class CalibrationItem:
    """A hand-labelled text.

    Attributes:
        concept: the concept it is judged against.
        text: the text.
        label: its relevance on `RUBRIC`, 0..3.
    """

    concept: str
    text: str
    label: int


def load_calibration(path: str | Path = CALIBRATION_PATH) -> list[CalibrationItem]:
    """The calibration texts of ``path`` (``concepts: [{concept, texts: [{text, label}]}]``)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return [
        CalibrationItem(entry["concept"], item["text"], int(item["label"]))
        for entry in data["concepts"]
        for item in entry["texts"]
    ]


@dataclass
class Agreement:
    """Agreement of a judge with the hand labels of the calibration set.

    Attributes:
        judge: its name.
        n: calibration texts.
        spearman: Spearman rho of the judge's continuous value (its score for judges
            without one) with the labels.
        kappa: quadratic-weighted Cohen kappa of its 0-3 scores with the labels.
        kappa_loco: the same with thresholds refitted (`fit_thresholds`) on the other
            concepts for each concept (equals ``kappa`` for judges without thresholds).
        per_concept: concept -> Spearman rho within it.
    """

    judge: str
    n: int
    spearman: float
    kappa: float
    kappa_loco: float
    per_concept: dict[str, float]


def judge_agreement(judge: Judge, items: Sequence[CalibrationItem] | None = None) -> Agreement:
    """Measure ``judge`` against the calibration set (default: the shipped one)."""
    items = list(items) if items is not None else load_calibration()
    concepts = list(dict.fromkeys(it.concept for it in items))
    labels = np.array([it.label for it in items])
    of = np.array([concepts.index(it.concept) for it in items])
    values = np.empty(len(items))
    for c, concept in enumerate(concepts):
        texts = [it.text for it in items if it.concept == concept]
        if isinstance(judge, ThresholdJudge):
            values[of == c] = judge.values(concept, texts)
        else:
            values[of == c] = judge.score(concept, texts)
    if isinstance(judge, ThresholdJudge):
        scores = to_rubric(values, judge.thresholds)
        loco = np.empty(len(items), dtype=np.int64)
        for c in range(len(concepts)):
            cuts = fit_thresholds(values[of != c], labels[of != c])
            loco[of == c] = to_rubric(values[of == c], cuts)
    else:
        scores = loco = values.astype(np.int64)
    return Agreement(
        judge=judge.name,
        n=len(items),
        spearman=float(spearmanr(values, labels).statistic),
        kappa=float(cohen_kappa_score(labels, scores, weights="quadratic")),
        kappa_loco=float(cohen_kappa_score(labels, loco, weights="quadratic")),
        per_concept={
            concept: float(spearmanr(values[of == c], labels[of == c]).statistic)
            for c, concept in enumerate(concepts)
        },
    )


def fit_thresholds(
    values: np.ndarray, labels: np.ndarray, max_candidates: int = 48
) -> tuple[float, float, float]:
    """The 3 ascending thresholds maximizing quadratic kappa of `to_rubric` with ``labels``.

    Exhaustive (first maximum) over non-decreasing triples of -inf, +inf and the
    midpoints between consecutive distinct ``values`` [n], so a score may go unused; with
    more than ``max_candidates`` distinct values, between consecutive of that many
    quantiles of ``values`` instead (the triples grow with the cube of the candidates).
    Kappa in closed form for 0..3 scores:
    1 - sum_i (l_i - s_i)^2 / (sum_ij (l_i - s_j)^2 / n).
    """
    distinct = np.unique(values)
    if distinct.size > max_candidates:
        distinct = np.unique(np.quantile(values, np.linspace(0, 1, max_candidates)))
    candidates = [-np.inf, *((distinct[1:] + distinct[:-1]) / 2), np.inf]
    cuts = np.array(list(combinations_with_replacement(candidates, 3)))  # [m, 3]
    scores = (values[None, :, None] >= cuts[:, None, :]).sum(-1)  # [m, n]
    labels = labels.astype(np.float64)
    n = labels.size
    observed = ((labels - scores) ** 2).sum(1)
    expected = (labels**2).sum() + (scores**2).sum(1) - 2 * labels.sum() * scores.sum(1) / n
    kappa = 1 - observed / np.where(expected > 0, expected, np.inf)
    return tuple(float(c) for c in cuts[np.argmax(kappa)])
