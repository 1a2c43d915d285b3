"""The Ray engine on a local 2-CPU cluster gives the local engine's activation shards and
feature scans; resume skips finished shards; a killed worker loses and duplicates nothing."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cogsae.corpus import corpus_chunks, residual_batches
from cogsae.corpus.feature_scan import FeatureScan, chunk_tokens, feature_scan, merge_scans
from cogsae.corpus.shards import read_manifest
from cogsae.inspect import inspect_feature_scan, write_inspection
from cogsae.model import LoadedModel
from cogsae.sae.base import SAE, encode_batched
from cogsae.sae.data import ActivationCache, cache_activations
from cogsae.sae.metrics import sae_metrics
from tests.helpers import CONSTANT, dying_loader, random_sae

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.usefixtures("ray_cluster")

CACHE_KWARGS = {"context_length": 16, "batch_size": 4, "chunks_per_shard": 8, "progress": False}
N_TOKENS = 5 * 8 * 15  # five shards


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words = "the cat dog sat ran on under a mat tree house quickly slowly red blue".split()  # noqa: SIM905
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(
        "\n\n".join(" ".join(rng.choice(words, rng.integers(4, 30))) for _ in range(300)),
        encoding="utf-8",
    )
    return path


@pytest.fixture()
def local_shards(
    tiny_model: LoadedModel,
    isolated_cache: Path,
    corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> ActivationCache:
    """The local engine's activation cache; cogsae's cache then points at a fresh folder,
    for an independent second build."""
    local = cache_activations(tiny_model, [corpus], N_TOKENS, **CACHE_KWARGS)[tiny_model.layer]
    (tmp_path / "ray").mkdir()
    monkeypatch.setenv("COGSAE_CACHE", str(tmp_path / "ray"))
    return local


def assert_same_shards(local: Path, remote: Path) -> None:
    """Same manifest (chunk ids, token counts, checksums) and byte-identical shard files."""
    assert local.name == remote.name
    ours, theirs = read_manifest(local), read_manifest(remote)
    assert ours == theirs
    for index in ours:
        name = f"shard_{index:05d}.npy"
        assert (local / name).read_bytes() == (remote / name).read_bytes()


def test_ray_shards_equal_local_shards_and_resume_skips_finished(
    tiny_model: LoadedModel, local_shards: ActivationCache, corpus: Path
) -> None:
    local = local_shards
    manifest = json.loads((local.folder / "manifest.json").read_text())
    ranges = [(s["first_chunk"], s["n_chunks"]) for s in manifest["shards"]]
    assert ranges == [(8 * i, 8) for i in range(5)] and local.n_tokens == N_TOKENS
    remote = cache_activations(tiny_model, [corpus], N_TOKENS, engine="ray", **CACHE_KWARGS)[
        tiny_model.layer
    ]
    assert remote.n_tokens == local.n_tokens
    assert_same_shards(local.folder, remote.folder)
    # resume: only the missing shard is written again
    inodes = {p.name: p.stat().st_ino for p in remote.shards}
    remote.shards[3].unlink()
    again = cache_activations(tiny_model, [corpus], N_TOKENS, engine="ray", **CACHE_KWARGS)[
        tiny_model.layer
    ]
    changed = [p.name for p in again.shards if p.stat().st_ino != inodes[p.name]]
    assert changed == ["shard_00003.npy"]
    assert_same_shards(local.folder, again.folder)


def test_killed_worker_loses_and_duplicates_nothing(
    tiny_model: LoadedModel,
    tiny_assets: dict,
    local_shards: ActivationCache,
    corpus: Path,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "died"
    loader = functools.partial(dying_loader, tiny_assets["model"], str(marker))
    remote = cache_activations(
        tiny_model, [corpus], N_TOKENS, engine="ray", loader=loader, **CACHE_KWARGS
    )[tiny_model.layer]
    assert marker.exists()  # a worker did die mid-build
    records = read_manifest(remote.folder)
    ids = [c for r in records.values() for c in range(r.first_chunk, r.first_chunk + r.n_chunks)]
    assert sorted(ids) == list(range(40)) and len(ids) == 40
    assert_same_shards(local_shards.folder, remote.folder)


def dense_reference(
    loaded: LoadedModel, sae: SAE, corpus: Path, n_chunks: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes [tokens, d_sae] of the first unpacked chunks, with each row's chunk id and
    position [tokens], computed in the same batches as the scans."""
    chunks = list(corpus_chunks([corpus], loaded.tokenizer, 16, pack=False, limit=n_chunks))
    with torch.inference_mode():
        batches = residual_batches(loaded, chunks, batch_size)
        codes = torch.cat([encode_batched(sae, rows, 4096) for rows in batches]).numpy()
    chunk = np.repeat(np.arange(len(chunks)), [len(c) - 1 for c in chunks])
    position = np.concatenate([np.arange(1, len(c)) for c in chunks])
    return codes, chunk, position


def test_ray_feature_scan_equals_local_scan_and_the_dense_truth(
    tiny_model: LoadedModel, isolated_cache: Path, corpus: Path
) -> None:
    sae = random_sae(64, 128, seed=3)
    kwargs = {
        "n_tokens": 1500,
        "context_length": 16,
        "top_k": 5,
        "n_sample": 7,
        "batch_size": 2,
        "cache": False,
        "progress": False,
    }
    one = feature_scan(tiny_model, sae, [corpus], chunks_per_shard=10_000, **kwargs)
    sharded = feature_scan(tiny_model, sae, [corpus], chunks_per_shard=6, **kwargs)
    remote = feature_scan(tiny_model, sae, [corpus], chunks_per_shard=6, engine="ray", **kwargs)
    for scan in (sharded, remote):
        for name, value in vars(one).items():
            np.testing.assert_array_equal(getattr(scan, name), value, err_msg=name)
    assert one.n_tokens >= 1500
    codes, chunk, position = dense_reference(tiny_model, sae, corpus, one.n_chunks, 2)
    assert len(codes) == one.n_tokens
    np.testing.assert_array_equal(one.active, (codes > 0).sum(0))
    for feature in range(128):
        values, chunks, positions = one.top(feature)
        column = codes[:, feature]
        order = sorted(
            (r for r in np.flatnonzero(column > 0)),
            key=lambda r: (-column[r], chunk[r], position[r]),
        )
        best: list[int] = []
        for r in order:
            if chunk[r] not in {chunk[b] for b in best} and len(best) < 5:
                best.append(r)
        np.testing.assert_array_equal(values, column[best])
        np.testing.assert_array_equal(chunks, chunk[best])
        np.testing.assert_array_equal(positions, position[best])
        sampled, _, _ = one.sample(feature)
        assert len(sampled) == min(7, int((column > 0).sum()))
    # ties (the constant feature) are broken by chunk id, then position
    _, chunks, positions = one.top(CONSTANT)
    assert chunks.tolist() == [0, 1, 2, 3, 4] and positions.tolist() == [1] * 5
    # a chunk id names the same tokens again
    wanted = {int(c) for c in one.top_chunk[:3]}
    found = chunk_tokens(one, [corpus], tiny_model.tokenizer, wanted)
    reference = list(corpus_chunks([corpus], tiny_model.tokenizer, 16, pack=False))
    assert all(torch.equal(found[c], reference[c]) for c in wanted)


def test_feature_scan_is_saved_as_data_and_merge_is_order_free(
    tiny_model: LoadedModel, isolated_cache: Path, corpus: Path
) -> None:
    sae = random_sae(64, 128, seed=4)
    kwargs = {"n_tokens": 300, "context_length": 16, "chunks_per_shard": 5, "progress": False}
    scan = feature_scan(tiny_model, sae, [corpus], **kwargs)
    stored = list((isolated_cache / "scans").glob("features-*.npz"))
    assert len(stored) == 1
    with np.load(stored[0], allow_pickle=False) as npz:  # plain arrays, nothing executable
        assert "structure" in npz.files
    again = feature_scan(tiny_model, sae, [corpus], **kwargs)
    assert isinstance(again, FeatureScan)
    for name, value in vars(scan).items():
        np.testing.assert_array_equal(getattr(again, name), value, err_msg=name)
    a, b = scan, feature_scan(tiny_model, sae, [corpus], **{**kwargs, "n_tokens": 30})
    ab, ba = merge_scans(a, b), merge_scans(b, a)
    for name in ("active", "top_value", "top_chunk", "sample_token"):
        np.testing.assert_array_equal(getattr(ab, name), getattr(ba, name))


def test_feature_page_from_a_feature_scan(
    tiny_model: LoadedModel, isolated_cache: Path, corpus: Path, tmp_path: Path
) -> None:
    sae = random_sae(64, 128, seed=5)
    scan = feature_scan(
        tiny_model, sae, [corpus], n_tokens=400, context_length=16, chunks_per_shard=5,
        top_k=4, n_sample=50, progress=False,
    )  # fmt: skip
    feature = int(np.argmax(scan.active[2:])) + 2  # a feature that fires somewhere
    ins, sample = inspect_feature_scan(tiny_model, sae, scan, feature, [corpus], n_top=3)
    values, chunks, positions = scan.top(feature)
    assert ins.n_tokens == scan.n_tokens and ins.density == scan.density[feature]
    assert len(ins.top) == 3 and np.array_equal(sample, scan.sample(feature)[0])
    reference = list(corpus_chunks([corpus], tiny_model.tokenizer, 16, pack=False))
    for example, value, chunk, position in zip(ins.top, values, chunks, positions, strict=False):
        focus = tiny_model.tokenizer.decode([int(reference[chunk][position])])
        assert example.tokens[example.focus] == focus
        assert example.value == pytest.approx(value, rel=1e-4)
    assert [label[:6] for label, _ in ins.by_quantile] == ["q75-10", "q50-75", "q25-50", "q0-25 "]
    page = write_inspection(ins, sample, tmp_path / "page")
    assert "Top-activating examples" in page.read_text()


def test_ray_sae_metrics_equal_local_up_to_summation_order(
    tiny_model: LoadedModel, corpus: Path
) -> None:
    sae = random_sae(64, 128, seed=6)
    kwargs = {"context_length": 16, "batch_size": 4, "progress": False}
    local = sae_metrics(sae, tiny_model, [corpus], 150, **kwargs).to_dict()
    remote = sae_metrics(
        sae, tiny_model, [corpus], 150, engine="ray", chunks_per_shard=4, **kwargs
    ).to_dict()
    assert local["n_tokens"] == remote["n_tokens"] > 0
    assert remote == pytest.approx(local, rel=1e-9)
