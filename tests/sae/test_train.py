"""SAE training: recovery of planted directions, normalisation, dead latents, resumption,
the activation cache and shuffle buffer."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cogsae.corpus import iter_documents, iter_token_chunks, select_documents
from cogsae.model import LoadedModel
from cogsae.sae.data import cache_activations, shuffled_batches, typical_tokens
from cogsae.sae.io import load_sae, save_sae
from cogsae.sae.train import DeadLatentTracker, TrainConfig, _restore, train_sae


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """Small matrices train faster on one thread (and do not fight other processes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy_data(
    n: int, d: int = 32, m: int = 48, p: float = 0.06
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse non-negative combinations of ``m`` random unit directions in ``d`` dims, scaled
    and offset (so the input scale and b_dec matter): ([n, d] data, [m, d] directions)."""
    gen = torch.Generator().manual_seed(0)
    directions = torch.randn(m, d, generator=gen)
    directions /= directions.norm(dim=-1, keepdim=True)
    codes = (torch.rand(n, m, generator=gen) < p) * (torch.rand(n, m, generator=gen) + 0.5)
    return codes @ directions * 7.0 + 3.0, directions


def batches_of(data: torch.Tensor, size: int):
    return lambda: (data[i : i + size] for i in range(0, len(data) - size + 1, size))


def mean_max_cosine(directions: torch.Tensor, learned: torch.Tensor) -> float:
    learned = learned / learned.norm(dim=-1, keepdim=True)
    return float((directions @ learned.T).max(dim=1).values.mean())


@pytest.mark.parametrize(
    ("architecture", "lr", "extra"),
    [("topk", 1e-2, {"k": 4}), ("standard", 3e-3, {"l1_coefficient": 1.0})],
)
def test_toy_model_recovers_planted_directions(
    one_thread: None, architecture: str, lr: float, extra: dict
) -> None:
    data, directions = toy_data(40_000)
    config = TrainConfig(
        architecture=architecture,
        d_sae=96,
        lr=lr,
        batch_size=256,
        n_tokens=len(data),
        dead_tokens=5_000,
        norm_sample_tokens=2_048,
        **extra,
    )
    sae, log = train_sae(batches_of(data, 256), 32, config, progress=False)
    assert mean_max_cosine(directions, sae.decoder_directions.detach()) >= 0.9
    assert log[-1]["fvu"] < 0.3


def test_normalisation_scale_is_estimated_stored_and_applied(
    one_thread: None, tmp_path: Path
) -> None:
    data, _ = toy_data(4_096)
    config = TrainConfig(d_sae=64, k=4, batch_size=256, n_tokens=2_048, norm_sample_tokens=1_024)
    sae, _ = train_sae(batches_of(data, 256), 32, config, progress=False)
    expected = math.sqrt(32) / float(data[:1024].norm(dim=-1).mean())
    assert sae.cfg.norm_scale == pytest.approx(expected, rel=1e-5)
    save_sae(sae, tmp_path / "sae")  # the scale is folded into the saved weights
    stored = load_file(tmp_path / "sae" / "sae_weights.safetensors")
    torch.testing.assert_close(stored["W_enc"], sae.W_enc.detach() * expected)
    loaded = load_sae(tmp_path / "sae")
    x = data[:100]
    with torch.no_grad():
        pre = (x * expected) @ sae.W_enc + sae.b_enc
        top = pre.topk(4, dim=-1)
        f = loaded.encode(x)
        torch.testing.assert_close(
            f, torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())
        )
        torch.testing.assert_close(loaded.decode(f), (f @ sae.W_dec + sae.b_dec) / expected)


def test_dead_latent_tracker() -> None:
    tracker = DeadLatentTracker(d_sae=3, window=100)
    steps = [([1, 0, 0], 60, [0, 0, 0]), ([0, 1, 0], 60, [0, 0, 1]), ([0, 0, 0], 50, [1, 0, 1])]
    for fired, n_tokens, dead in [*steps, ([1, 0, 1], 1, [0, 0, 0])]:
        tracker.update(torch.tensor(fired, dtype=torch.bool), n_tokens)
        assert tracker.dead.tolist() == [bool(d) for d in dead]


def test_training_reports_dead_latents(one_thread: None) -> None:
    """An overwhelming L1 penalty silences every latent: all dead once the window passed."""
    data, _ = toy_data(8_192)
    config = TrainConfig(
        architecture="standard",
        d_sae=64,
        l1_coefficient=1e3,
        lr=1e-2,
        batch_size=256,
        n_tokens=8_192,
        dead_tokens=4_096,
        l1_warmup_frac=0.0,
    )
    _, log = train_sae(batches_of(data, 256), 32, config, progress=False)
    assert log[0]["dead"] == 0.0  # step 10: 2,560 tokens, the window has not passed yet
    assert log[-1]["dead"] == 1.0 and log[-1]["l0"] == 0.0


def test_resume_after_interruption_matches_uninterrupted(one_thread: None, tmp_path: Path) -> None:
    data, _ = toy_data(2_048, d=16, m=24)
    config = TrainConfig(
        d_sae=32,
        k=3,
        lr=3e-3,
        batch_size=64,
        n_tokens=20 * 64,
        checkpoint_every=5,
        dead_tokens=128,
        norm_sample_tokens=128,
    )
    reference, ref_log = train_sae(batches_of(data, 64), 16, config, progress=False)

    def interrupted() -> Iterator[torch.Tensor]:
        for index, batch in enumerate(batches_of(data, 64)()):
            if index == 13:  # after the step-10 checkpoint
                raise KeyboardInterrupt
            yield batch

    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_sae(interrupted, 16, config, checkpoint=checkpoint, progress=False)
    assert _restore(checkpoint, config)["step"] == 10
    resumed, log = train_sae(
        batches_of(data, 64), 16, config, checkpoint=checkpoint, progress=False
    )
    for name, value in reference.state_dict().items():
        assert torch.allclose(resumed.state_dict()[name], value, atol=1e-6), name
    assert [row["loss"] for row in log] == pytest.approx([row["loss"] for row in ref_log])
    assert not checkpoint.exists()


def test_typical_tokens_drop_massive_activations() -> None:
    x = torch.ones(100, 4)
    x[7] *= 50
    keep = typical_tokens(x, 10.0)
    assert keep.sum() == 99 and not keep[7]


def test_activation_cache_resumes_and_skips_position_zero(
    tiny_model: LoadedModel,
    isolated_cache: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    corpus = tmp_path / "corpus.txt"
    words = "the cat dog sat ran on under a mat tree house quickly slowly red blue".split()  # noqa: SIM905
    rng = np.random.default_rng(0)
    corpus.write_text(
        "\n\n".join(" ".join(rng.choice(words, 12)) for _ in range(400)), encoding="utf-8"
    )
    kwargs = {"context_length": 16, "batch_size": 8, "chunks_per_shard": 10, "progress": False}
    cache = cache_activations(tiny_model, [corpus], 400, **kwargs)[tiny_model.layer]
    assert len(cache.shards) == 3 and cache.n_tokens == 3 * 10 * 15  # positions >= 1 only
    first = np.load(cache.shards[1])
    cache.shards[1].unlink()
    again = cache_activations(tiny_model, [corpus], 400, **kwargs)[tiny_model.layer]
    assert again.folder == cache.folder
    np.testing.assert_array_equal(np.load(again.shards[1]), first)
    original = np.load(again.shards[2])
    flipped = bytearray(again.shards[2].read_bytes())
    flipped[-7] ^= 0x40  # a bit flip in the data: the file still loads, the numbers lie
    again.shards[2].write_bytes(bytes(flipped))
    with caplog.at_level(logging.WARNING):
        repaired = cache_activations(tiny_model, [corpus], 400, **kwargs)[tiny_model.layer]
    assert "shard_00002.npy fails its checksum" in caplog.text
    np.testing.assert_array_equal(np.load(repaired.shards[2]), original)
    # the cached rows are the layer-L residual at positions 1.. of the first chunks
    documents = select_documents(iter_documents([corpus]), "train")
    chunks = iter_token_chunks(documents, tiny_model.tokenizer, 16)
    ids = torch.stack([next(chunks) for _ in range(10)])
    hidden = tiny_model.residual(ids, torch.ones_like(ids))[:, 1:].reshape(-1, 64)
    np.testing.assert_allclose(np.load(cache.shards[0]), hidden.half().numpy(), atol=1e-3)


def test_shuffled_batches_cover_every_token_once(tmp_path: Path) -> None:
    shards = []
    for i in range(3):
        path = tmp_path / f"shard_{i}.npy"
        np.save(path, np.arange(i * 100, (i + 1) * 100, dtype=np.float16).reshape(-1, 1))
        shards.append(path)
    batches = list(shuffled_batches(shards, batch_size=20, buffer_tokens=60, seed=3))
    values = torch.cat(batches).flatten()
    assert sorted(values.tolist()) == list(range(300))
    assert values[:100].tolist() != list(range(100))
    again = torch.cat(list(shuffled_batches(shards, 20, 60, seed=3))).flatten()
    assert torch.equal(values, again)
    assert len(list(shuffled_batches(shards, 20, 60, seed=3, n_tokens=95))) == 4
