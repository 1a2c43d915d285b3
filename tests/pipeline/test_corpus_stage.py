"""The run's corpus stage: top snippets per ensemble (raw and SAE space) and their record."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cogsae.activations import Activations
from cogsae.analysis.ensemble import LinearModel
from cogsae.corpus import CorpusScan, scan_snippets
from cogsae.errors import CogsaeError
from cogsae.judges import NO_SCORE, Relevance, ThresholdJudge, to_rubric
from cogsae.model import LoadedModel
from cogsae.pipeline import RunConfig
from cogsae.pipeline.corpus_stage import CorpusExample, CorpusScore, score_corpus, top_examples
from cogsae.pipeline.plan import build_plan
from cogsae.sae.base import SAE, SAEConfig
from tests.helpers import linear, snippet_corpus


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    return snippet_corpus(tmp_path)


def planted_scan() -> CorpusScan:
    """6 snippets of 3-5 tokens, d_model 4; unit 3 is large in snippets 4 and 1 only."""
    lengths = [4, 3, 5, 3, 4, 3]
    starts = np.concatenate([[0], np.cumsum(lengths)])
    rng = np.random.default_rng(0)
    residual = rng.normal(0, 0.1, size=(starts[-1] - len(lengths), 4)).astype(np.float16)
    rows = starts - np.arange(len(starts))
    residual[rows[4] : rows[5], 3] = 9.0
    residual[rows[1] : rows[2], 3] = 5.0
    ids = np.arange(starts[-1]) % 50 + 300
    texts = [f"snippet {i}" for i in range(6)]
    return CorpusScan(*map(torch.from_numpy, (ids, starts, residual)), "planted", texts)


def test_top_examples_rank_planted_snippets(tiny_tokenizer) -> None:
    scan = planted_scan()
    model = linear([3], [2.0], intercept=-1.0)
    (examples,) = top_examples(scan, {"raw:planted": model}, tiny_tokenizer, n_top=3).values()
    assert [e.text for e in examples[:2]] == ["snippet 4", "snippet 1"]
    assert examples[0].decision == pytest.approx(2 * 9.0 - 1.0, rel=1e-3)
    first = examples[0]
    assert first.token_decisions[0] is None
    assert len(first.tokens) == len(first.token_decisions) == 4
    assert np.mean(first.token_decisions[1:]) == pytest.approx(first.decision)
    assert "".join(first.tokens) == tiny_tokenizer.decode(scan.ids[scan.starts[4] : scan.starts[5]])


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


def test_top_examples_in_sae_space_encode_on_the_fly(tiny_tokenizer) -> None:
    scan = planted_scan()
    torch.manual_seed(0)
    sae = SAE(SAEConfig("standard", d_in=4, d_sae=10))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    model = linear([2, 7], [1.0, -1.0], intercept=0.5)
    codes = sae.encode(scan.residual.float()).detach().numpy()
    per_token = codes[:, [2, 7]] @ np.array([1.0, -1.0]) + 0.5
    rows = scan.rows.numpy()
    expected = np.add.reduceat(per_token, rows[:-1]) / np.diff(rows)
    (examples,) = top_examples(scan, {"sae:m": model}, tiny_tokenizer, sae=sae, n_top=6).values()
    got = {e.text: e.decision for e in examples}
    for i, text in enumerate(scan.texts):
        assert got[text] == pytest.approx(expected[i], rel=1e-4, abs=1e-4)
    with pytest.raises(CogsaeError, match="out of range"):
        top_examples(scan, {"bad": linear([10], [1.0])}, tiny_tokenizer, sae=sae)


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
    base = record["base"]
    assert len(base["examples"]) == 3
    assert {e["text"] for e in base["examples"]} <= set(
        scan_snippets(tiny_model, [corpus], n_snippets=8).texts
    )
    for e in base["examples"]:
        assert e["relevance"] == to_rubric([len(e["text"]) % 4], judge.thresholds)[0]
    assert entry["relevance_enrichment"] == pytest.approx(
        entry["mean_relevance"] - base["mean_relevance"]
    )
    assert 0 < entry["relevance_p"] <= 1
    assert record["files"] == [{"name": corpus.name, "hash": record["files"][0]["hash"]}]
    unjudged = score_corpus(
        [raw], tiny_model, None, concept="mills", corpus=[corpus], n_snippets=8, judge="none"
    ).to_record()
    assert unjudged["judge"] is None and unjudged["methods"]["raw:a"]["mean_relevance"] is None
    assert unjudged["methods"]["raw:a"]["relevance_p"] is None
    assert unjudged["base"]["mean_relevance"] is None and len(unjudged["base"]["examples"]) == 8
    with pytest.raises(CogsaeError, match="SAE"):
        score_corpus([sae_method], tiny_model, None, concept="x", corpus=[corpus], n_snippets=8)


@pytest.mark.usefixtures("ray_cluster")
def test_score_corpus_on_ray_records_the_local_examples(
    corpus: Path, tiny_model: LoadedModel, isolated_cache: Path
) -> None:
    raw = SimpleNamespace(label="raw:a", space="raw", model=linear([3, 9], [1.0, -1.0]))
    kwargs = {"concept": "mills", "corpus": [corpus], "n_snippets": 8, "judge": "none"}
    local = score_corpus([raw], tiny_model, None, progress=False, **kwargs).to_record()
    remote = score_corpus([raw], tiny_model, None, engine="ray", workers=1, **kwargs)
    assert remote.to_record() == local


def test_engine_and_workers_leave_the_run_key(tiny_assets: dict) -> None:
    base = RunConfig(tiny_assets["stimuli"], model=tiny_assets["model"], sae="none")
    assert build_plan(replace(base, engine="ray", workers=3)).key == build_plan(base).key


def test_unjudged_example_records_no_score() -> None:
    example = CorpusExample("a", 0.0, ["a"], [None])
    none = Relevance(np.array([NO_SCORE]), float("nan"), (float("nan"), float("nan")), "unsure")
    record = CorpusScore(1, "k", {"m": [example]}, {"m": none}, "unsure", [], []).to_record()
    assert record["methods"]["m"]["mean_relevance"] is None
    assert record["methods"]["m"]["ci"] == [None, None]
    assert record["methods"]["m"]["examples"][0]["relevance"] == NO_SCORE
