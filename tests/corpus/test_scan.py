"""One corpus scan: document chunks and sentence snippets share one loop and one cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cogsae.corpus import sample_snippets, scan_chunks, scan_snippets
from cogsae.errors import CogsaeError
from cogsae.model import LoadedModel
from tests.helpers import SNIPPET_CORPUS, snippet_corpus


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    return snippet_corpus(tmp_path)


def test_sample_snippets_splits_sentences_within_bounds(corpus: Path, tiny_tokenizer) -> None:
    texts, ids = sample_snippets([corpus], tiny_tokenizer, 6, min_tokens=5, max_tokens=16, seed=1)
    assert len(texts) == len(set(texts)) == 6  # the repeated sentence is sampled once at most
    for text, tokens in zip(texts, ids, strict=True):
        assert text in " ".join(SNIPPET_CORPUS.split())
        assert 5 <= len(tokens) <= 16
        assert tokens == tiny_tokenizer(text)["input_ids"]
    assert (
        sample_snippets([corpus], tiny_tokenizer, 6, min_tokens=5, max_tokens=16, seed=1)[0]
        == texts
    )
    with pytest.raises(CogsaeError, match="snippets"):
        sample_snippets([corpus], tiny_tokenizer, 50, min_tokens=5, max_tokens=16)


def test_snippet_scan_matches_direct_forward(
    corpus: Path, tiny_model: LoadedModel, isolated_cache: Path
) -> None:
    scan = scan_snippets(tiny_model, [corpus], n_snippets=8, min_tokens=5, batch_size=3)
    assert scan.residual.dtype == torch.float16 and scan.n_segments == len(scan.texts) == 8
    assert scan.residual.shape == (len(scan.ids) - scan.n_segments, tiny_model.d_model)
    for i in (0, 5):
        enc = tiny_model.tokenize([scan.texts[i]])
        direct = tiny_model.residual(**enc)[0, 1:].float().numpy()
        rows = scan.residual[scan.rows[i] : scan.rows[i + 1]].float().numpy()
        np.testing.assert_allclose(rows, direct, rtol=1e-2, atol=1e-2)


def scans(model: LoadedModel, corpus: Path) -> dict[str, object]:
    """Both kinds of scan of ``corpus`` (small settings)."""
    return {
        "chunks": scan_chunks(model, [corpus], n_tokens=60, context_length=16, progress=False),
        "snippets": scan_snippets(model, [corpus], n_snippets=6, min_tokens=5, progress=False),
    }


def test_both_scans_share_one_cache_and_a_cached_call_runs_no_model(
    corpus: Path, tiny_model: LoadedModel, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = scans(tiny_model, corpus)
    assert first["chunks"].texts is None and first["chunks"].residual.dtype == tiny_model.dtype
    assert first["chunks"].n_tokens == 60
    files = sorted(p.name for p in (isolated_cache / "scans").iterdir())
    assert len(files) == 2 and all(name.endswith(".safetensors") for name in files)
    assert not (isolated_cache / "snippets").exists()

    def fail(*_: object) -> None:
        raise AssertionError("the model ran although the scan is cached")

    monkeypatch.setattr(LoadedModel, "residual", fail)
    again = scans(tiny_model, corpus)
    for kind, scan in first.items():
        cached = again[kind]
        assert cached.key == scan.key and cached.texts == scan.texts
        for name in ("ids", "starts", "residual"):
            assert torch.equal(getattr(cached, name), getattr(scan, name)), (kind, name)


def test_a_broken_scan_cache_is_rebuilt(
    corpus: Path, tiny_model: LoadedModel, isolated_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = scans(tiny_model, corpus)
    for path in (isolated_cache / "scans").iterdir():
        path.write_bytes(path.read_bytes()[:-7])
    rebuilt = scans(tiny_model, corpus)
    assert caplog.text.count("rebuilding it") == 2
    for kind, scan in first.items():
        assert torch.equal(rebuilt[kind].residual, scan.residual)
    assert not caplog.clear() and scans(tiny_model, corpus)
    assert "rebuilding" not in caplog.text


def test_chunk_scan_needs_enough_tokens(
    corpus: Path, tiny_model: LoadedModel, isolated_cache: Path
) -> None:
    with pytest.raises(CogsaeError, match="only"):
        scan_chunks(tiny_model, [corpus], n_tokens=10_000, progress=False)
