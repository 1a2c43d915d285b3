"""Release folders: one activation pass for several layers, one SAE per layer, epochs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cogsae.cli import main
from cogsae.errors import CogsaeError
from cogsae.model import LoadedModel
from cogsae.pipeline.sweep import sae_by_layer
from cogsae.sae.data import cache_activations, shuffled_batches
from cogsae.sae.io import load_sae
from cogsae.sae.release import release_folder
from cogsae.sae.train import TrainConfig
from tests.helpers import word_corpus

CACHE_KWARGS = {"context_length": 16, "batch_size": 8, "chunks_per_shard": 10, "progress": False}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"))


def test_one_pass_caches_each_layer_as_a_one_layer_cache(
    tiny_model: LoadedModel, corpus: Path, isolated_cache: Path
) -> None:
    layers = cache_activations(tiny_model, [corpus], 400, layers=[0, 2], **CACHE_KWARGS)
    assert set(layers) == {0, 2} and layers[0].folder != layers[2].folder
    for layer in (0, 2):
        shards = [p.stat().st_mtime_ns for p in layers[layer].shards]
        alone = cache_activations(tiny_model, [corpus], 400, layers=[layer], **CACHE_KWARGS)[layer]
        assert alone.folder == layers[layer].folder  # the one-layer call reuses the pass
        assert [p.stat().st_mtime_ns for p in alone.shards] == shards  # nothing rebuilt
        assert alone.n_tokens == layers[layer].n_tokens == 3 * 10 * 15
    # the rows are each layer's own residual stream
    ids = next(iter(tiny_model.tokenize(["the cat sat on the mat"]).values()))
    hidden = tiny_model.residuals(ids, torch.ones_like(ids), [0, 2])
    assert not torch.allclose(hidden[0], hidden[2])
    first = {layer: np.load(layers[layer].shards[0]) for layer in (0, 2)}
    assert not np.allclose(first[0], first[2])


def test_a_layer_missing_from_an_earlier_pass_is_rebuilt(
    tiny_model: LoadedModel, corpus: Path, isolated_cache: Path
) -> None:
    """The deepest layer's folder drives the pass; shards it has from a one-layer run but
    a shallower layer lacks are rebuilt, and a lost shallow shard is rebuilt too."""
    deep_only = cache_activations(tiny_model, [corpus], 400, layers=[2], **CACHE_KWARGS)[2]
    both = cache_activations(tiny_model, [corpus], 400, layers=[1, 2], **CACHE_KWARGS)
    assert both[2].folder == deep_only.folder and len(both[1].shards) == 3
    assert all(p.is_file() for p in both[1].shards)
    before = np.load(both[1].shards[1])
    both[1].shards[1].unlink()
    again = cache_activations(tiny_model, [corpus], 400, layers=[1, 2], **CACHE_KWARGS)
    np.testing.assert_array_equal(np.load(again[1].shards[1]), before)
    manifest = json.loads((again[1].folder / "manifest.json").read_text())
    assert [r["index"] for r in manifest["shards"]] == [0, 1, 2]


def test_epochs_reorder_the_same_tokens(tmp_path: Path) -> None:
    shards = []
    for i in range(4):
        path = tmp_path / f"shard_{i}.npy"
        np.save(path, (np.arange(200 * 2) + 1000 * i).reshape(200, 2).astype(np.float16))
        shards.append(path)
    first, second = (
        torch.cat(list(shuffled_batches(shards, 50, 300, seed=0, epoch=e))) for e in (0, 1)
    )
    assert not torch.equal(first, second)
    assert sorted(first[:, 0].tolist()) == sorted(second[:, 0].tolist())  # same tokens
    assert torch.equal(first, torch.cat(list(shuffled_batches(shards, 50, 300, seed=0))))
    assert TrainConfig(n_tokens=1000, batch_size=100, epochs=3).n_steps == 30
    # each epoch stops at its last full batch: 10 steps each, not 21 in all
    assert TrainConfig(n_tokens=1050, batch_size=100, epochs=2).n_steps == 20


def test_train_sae_layers_writes_a_release_the_sweep_reads(
    tiny_assets: dict, corpus: Path, isolated_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "release"
    train = ["train-sae", "--model", tiny_assets["model"], "--corpus", str(corpus), "--quiet"]
    train += ["--layers", "0,2", "--out", str(out), "--d-sae", "16", "--k", "2"]
    train += ["--tokens", "400", "--batch-size", "100", "--epochs", "2", "--context-length", "16"]
    result = CliRunner().invoke(main, train)
    assert result.exit_code == 0, result.output
    for layer in (0, 2):
        sae = load_sae(out, layer=layer)
        assert (sae.cfg.layer, sae.cfg.d_sae, sae.cfg.k) == (layer, 16, 2)
        log = json.loads((release_folder(out, layer) / "training.json").read_text())["log"]
        assert log[-1]["step"] == 8  # 400 tokens x 2 epochs / 100 per step
    assert sae_by_layer([str(out)], [0, 1, 2]) == {
        0: str(release_folder(out, 0)),
        2: str(release_folder(out, 2)),
    }
    stamps = [(release_folder(out, layer) / "training.json").stat().st_mtime_ns for layer in (0, 2)]
    again = CliRunner().invoke(main, train)
    assert again.exit_code == 0, again.output
    assert stamps == [
        (release_folder(out, layer) / "training.json").stat().st_mtime_ns for layer in (0, 2)
    ]  # finished layers are kept, not retrained
    metrics = ["sae-metrics", str(out), "--model", tiny_assets["model"], "--layer", "2"]
    metrics += ["--corpus", str(corpus), "--tokens", "100", "--subset", "all", "--quiet"]
    result = CliRunner().invoke(main, [*metrics, "--context-length", "16"])
    assert result.exit_code == 0, result.output
    record = json.loads((release_folder(out, 2) / "metrics.json").read_text())
    assert record["layer"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_training_on_cuda_without_cuda_is_a_clear_error(
    tiny_assets: dict, corpus: Path, tmp_path: Path
) -> None:
    with pytest.raises(CogsaeError, match="no CUDA device") as err:
        TrainConfig(device="cuda")
    assert err.value.field == "device"
    train = ["train-sae", "--model", tiny_assets["model"], "--corpus", str(corpus)]
    result = CliRunner().invoke(main, [*train, "--device", "cuda", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "no CUDA device" in result.output
