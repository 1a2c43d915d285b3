"""Corpus scans, SAE codes, readouts, examples and the logit lens (inspect CLI: see
test_interventions.test_cli_commands_end_to_end)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cogsae.corpus import CorpusScan, scan_chunks
from cogsae.errors import CogsaeError
from cogsae.inspect import (
    Readout,
    ensemble_readout,
    feature_maxima,
    feature_readout,
    inspect_readout,
    load_ensemble,
    logit_lens,
    render_html,
    sae_codes,
    summary,
    unit_readout,
    write_inspection,
)
from cogsae.model import LoadedModel
from tests.helpers import REPO, random_sae

CORPUS = "\n\n".join(
    [
        "The cat sat on the mat and looked at the dog.",
        "A long paragraph about the weather: it rained all day, then the sun came out, "
        "and the children ran outside to play in the puddles until dinner time.",
        "Stocks fell sharply on Monday as investors worried about the cat food market.",
        "The committee met again on Tuesday to discuss the budget for the new library.",
    ]
    * 8
)


@pytest.fixture()
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


@pytest.fixture()
def scan(tiny_model: LoadedModel, corpus_file: Path, isolated_cache: Path) -> CorpusScan:
    return scan_chunks(
        tiny_model, [corpus_file], n_tokens=300, context_length=24, batch_size=4, progress=False
    )


def test_scan_rows_are_layer_l_residuals_without_position_0(
    tiny_model: LoadedModel, scan: CorpusScan, corpus_file: Path, isolated_cache: Path
) -> None:
    assert scan.n_tokens == 300
    assert len(scan.ids) - (len(scan.starts) - 1) == 300
    index = scan.token_index()
    assert not np.isin(scan.starts[:-1].numpy(), index).any()
    starts = scan.starts.tolist()
    for c in (0, 3, len(starts) - 2):
        ids = scan.ids[starts[c] : starts[c + 1]][None]
        expected = tiny_model.residual(ids, torch.ones_like(ids))[0, 1:]
        rows = np.flatnonzero((index > starts[c]) & (index < starts[c + 1]))
        torch.testing.assert_close(scan.residual[rows], expected, rtol=1e-5, atol=1e-5)
    cached = list((isolated_cache / "scans").glob("*.safetensors"))
    assert len(cached) == 1
    again = scan_chunks(tiny_model, [corpus_file], n_tokens=300, context_length=24)
    assert again.key == scan.key and torch.equal(again.residual, scan.residual)
    other = scan_chunks(tiny_model, [corpus_file], n_tokens=200, context_length=24)
    assert other.key != scan.key and other.n_tokens == 200


def test_sae_codes_are_encodings_and_readouts_read_them(
    tiny_model: LoadedModel, scan: CorpusScan
) -> None:
    sae = random_sae(tiny_model.d_model, 24)
    codes = sae_codes(scan, sae)
    with torch.no_grad():
        dense = sae.encode(scan.residual).numpy()
    np.testing.assert_allclose(codes.toarray(), dense, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(feature_maxima(codes), dense.max(0), rtol=1e-6)
    np.testing.assert_allclose(sae_codes(scan, sae).toarray(), codes.toarray())  # from cache
    readout = feature_readout(codes, sae, 7)
    np.testing.assert_allclose(readout.values, dense[:, 7], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(readout.direction, sae.decoder_directions[7].detach())
    raw = unit_readout(scan, 5)
    np.testing.assert_array_equal(raw.values, scan.residual[:, 5].numpy())
    assert raw.direction.nonzero().ravel().tolist() == [5]
    with pytest.raises(CogsaeError, match="out of range"):
        feature_readout(codes, sae, 24)


def test_logit_lens_finds_planted_tokens_through_final_norm(tiny_model: LoadedModel) -> None:
    loaded = copy.copy(tiny_model)
    loaded.model = copy.deepcopy(tiny_model.model)
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(loaded.d_model, generator=gen)
    gain = torch.rand(loaded.d_model, generator=gen) + 0.5
    promoted, suppressed = loaded.tokenizer([" apple", " banana"], add_special_tokens=False)[
        "input_ids"
    ]
    with torch.no_grad():
        loaded.model.model.norm.weight.copy_(gain)
        unembed = loaded.model.get_output_embeddings().weight
        unembed[promoted[0]] = 10 * v / v.norm()
        unembed[suppressed[0]] = -10 * v / v.norm()
    lens = logit_lens(loaded, v / gain, k=3)  # the final norm multiplies by gain first
    assert lens.positive[0][0] == " apple"
    assert lens.negative[0][0] == " banana"
    assert lens.positive[0][1] > lens.positive[1][1] and lens.negative[0][1] < 0


def test_inspection_examples_center_on_the_active_tokens(
    tiny_model: LoadedModel, scan: CorpusScan, tmp_path: Path
) -> None:
    index = scan.token_index()
    cat = tiny_model.tokenizer(" cat", add_special_tokens=False)["input_ids"][0]
    is_cat = (scan.ids[index] == cat).numpy()
    values = np.where(is_cat, 2.0 + np.arange(len(index)) / len(index), 0.0)
    readout = Readout("planted", values, torch.randn(tiny_model.d_model))
    ins = inspect_readout(tiny_model, scan, readout, context={"model": "tiny"}, n_top=3)
    assert ins.density == pytest.approx(is_cat.mean()) and ins.max == values.max()
    assert len(ins.top) == 3 and all(ex.tokens[ex.focus] == " cat" for ex in ins.top)
    assert [ex.value for ex in ins.top] == sorted((ex.value for ex in ins.top), reverse=True)
    assert ins.top[0].value == values.max()
    for ex in ins.top:
        assert ex.values[ex.focus] == ex.value
        assert all(v in (None, 0.0) for i, v in enumerate(ex.values) if i != ex.focus)
    assert len(ins.by_quantile) == 4
    assert all(ex.tokens[ex.focus] == " cat" for _, exs in ins.by_quantile for ex in exs)
    page = render_html(ins, b"png")
    assert "background:rgba(217,72,15,1.00)" in page and "<link" not in page
    assert "http" not in page and "data:image/png;base64," in page
    assert "\u00ab cat\u00bb" in summary(ins) and "planted (model tiny)" in summary(ins)
    html_path = write_inspection(ins, values, tmp_path / "out")
    assert html_path.is_file() and (tmp_path / "out" / "histogram.png").is_file()
    assert json.loads((tmp_path / "out" / "inspection.json").read_text())["label"] == "planted"


def test_ensemble_score_and_direction(
    tiny_model: LoadedModel, scan: CorpusScan, tmp_path: Path
) -> None:
    sae = random_sae(tiny_model.d_model, 24)
    entry = {
        "method": "contrast",
        "k": 2,
        "selected_units": [3, 9],
        "final_model": {
            "units": [3, 9],
            "coef": [1.5, -0.5],
            "intercept": 0.25,
            "mean": [0.1, 0.2],
            "scale": [2.0, 4.0],
        },
    }
    results = tmp_path / "results.json"
    methods = [{**entry, "space": "raw"}, {**entry, "space": "sae"}]
    other = {"factor": "tense", "methods": [{**entry, "space": "raw", "coef": [0, 0]}]}
    results.write_text(json.dumps({"concepts": [{"factor": "outcome", "methods": methods}, other]}))
    raw = load_ensemble(f"{results}:contrast:raw")
    readout = ensemble_readout(scan, raw)
    acts = scan.residual[:, [3, 9]].numpy()
    expected = ((acts - [0.1, 0.2]) / [2.0, 4.0]) @ [1.5, -0.5] + 0.25
    np.testing.assert_allclose(readout.values, expected, rtol=1e-5)
    assert readout.direction[[3, 9]].tolist() == [0.75, -0.125]
    assert readout.direction.abs().sum() == pytest.approx(0.875)
    sae_space = load_ensemble(f"{results}:contrast:sae")
    direction = sae_space.direction(tiny_model.d_model, sae)
    dirs = sae.decoder_directions.detach()
    torch.testing.assert_close(direction, 0.75 * dirs[3] - 0.125 * dirs[9])
    with pytest.raises(CogsaeError, match="has: contrast:raw, contrast:sae"):
        load_ensemble(f"{results}:rsa:raw")
    with pytest.raises(CogsaeError, match=r"RESULTS\.json:METHOD:SPACE"):
        load_ensemble(str(results))
    assert load_ensemble(f"{results}:contrast@tense:raw").units == [3, 9]
    with pytest.raises(CogsaeError, match="has: outcome, tense"):
        load_ensemble(f"{results}:contrast@colour:raw")


def test_ensemble_of_a_real_run() -> None:
    """The curated run's results.json names its ensembles as `cogsae run` writes them."""
    results = REPO / "results" / "examples" / "success" / "results.json"
    record = json.loads(results.read_text())["concepts"][0]
    entry = next(m for m in record["methods"] if (m["method"], m["space"]) == ("contrast", "sae"))
    ensemble = load_ensemble(f"{results}:contrast:sae")
    assert ensemble.units == entry["final_model"]["units"] and ensemble.space == "sae"
    weights = np.asarray(entry["final_model"]["coef"]) / entry["final_model"]["scale"]
    np.testing.assert_allclose(ensemble.model.weights, weights)
