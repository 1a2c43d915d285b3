"""SAE training and encoding throughput: cogsae against a plain PyTorch reference.

Both run in this process on the same synthetic activations (d_in 576, SmolLM2's width):
- training: activations/s of TopK steps (forward, loss, backward, Adam, decoder
  renormalisation). cogsae's step selects latents from one encoder product in --dtype
  ("auto": bfloat16 where the CPU has native bf16, else float32) and back-propagates
  through the k selected latents only (sparse matmuls); the reference is the textbook
  dense float32 version (scatter the top-k into a dense code, autograd).
- encoding: seconds to encode 100k activations with `SAE.encode` (exact float32, what
  analyses use) against the reference encoder.

Usage: python benchmarks/sae_training.py [--d-sae 8192] [--k 64] [--batch-size 1024]
       [--threads N] [--dtype auto|bfloat16|float32]
       [--shards DIR [--train-shards 0-6] [--held-out 9] [--tokens 204800] [--lr 1.5e-3]]

With ``--shards DIR`` (a folder of cached float16 activation shards, shard_NNNNN.npy, as
`cogsae.sae.data.cache_activations` writes them), it compares instead quality at equal
tokens against ``sae_lens``'s `SAETrainer` (TopK, its defaults but for the shared
settings): both train on the same shuffled typical tokens of ``--train-shards``
(``--tokens`` of them, ``--batch-size`` per step, the same ``--lr``, input scaled to mean
norm sqrt(d_in), the same dead-latent window) and are scored by one function on the
held-out shard: FVE = 1 - sum ||x - x'||^2 / sum ||x - mean||^2 in model space, and the
fraction of latents that never fire there. Throughput is training activations/s of the
training loop alone (activations already in memory). sae_lens is optional
(``pip install cogsae[test-interop]``).

On a CPU with native bf16, ``ONEDNN_MAX_CPU_ISA=AVX2`` in the environment makes torch run
(and report) bf16 as a CPU without it does: emulated, ~50x slower than float32.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cogsae.model import native_bf16
from cogsae.sae.data import typical_tokens
from cogsae.sae.train import TrainConfig, _init_sae, _Trainer


class ReferenceTopK(nn.Module):
    """Straightforward TopK SAE: dense code, autograd everywhere."""

    def __init__(self, d_in: int, d_sae: int, k: int) -> None:
        super().__init__()
        self.k = k
        w = torch.randn(d_sae, d_in)
        w /= w.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w)
        self.W_enc = nn.Parameter(w.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = x @ self.W_enc + self.b_enc
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x) @ self.W_dec + self.b_dec


def reference_step(model: ReferenceTopK, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    loss = (model(x) - x).pow(2).sum(-1).mean() / (x - x.mean(0)).pow(2).sum(-1).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        model.W_dec /= model.W_dec.norm(dim=-1, keepdim=True)


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Seconds per call after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def throughput_vs_reference(args: argparse.Namespace, config: TrainConfig) -> None:
    """Training and encoding speed against `ReferenceTopK` on synthetic activations."""
    x = torch.randn(args.batch_size, args.d_in) * 3 + torch.randn(args.d_in)
    trainer = _Trainer(_init_sae(x, args.d_in, config, {}), config)
    reference = ReferenceTopK(args.d_in, args.d_sae, args.k)
    opt = torch.optim.Adam(reference.parameters(), lr=config.lr)
    ours = timed(lambda: trainer.train_step(x), args.steps)
    theirs = timed(lambda: reference_step(reference, opt, x), args.steps)

    sae = trainer.sae.eval()
    data = torch.randn(args.encode, args.d_in) * 3
    chunk = 8192

    @torch.no_grad()
    def encode_all(encode: Callable[[torch.Tensor], torch.Tensor]) -> None:
        for start in range(0, len(data), chunk):
            encode(data[start : start + chunk])

    enc_ours = timed(lambda: encode_all(sae.encode), 1)
    enc_theirs = timed(lambda: encode_all(reference.encode), 1)

    print(header(args, config))
    print(f"{'':34}{'cogsae':>12}{'reference':>12}{'ratio':>8}")
    print(
        f"{'training (activations/s)':34}{args.batch_size / ours:12,.0f}"
        f"{args.batch_size / theirs:12,.0f}{theirs / ours:7.2f}x"
    )
    print(
        f"{f'encode {args.encode:,} activations (s)':34}{enc_ours:12.2f}{enc_theirs:12.2f}"
        f"{enc_theirs / enc_ours:7.2f}x"
    )


def header(args: argparse.Namespace, config: TrainConfig) -> str:
    return (
        f"TopK SAE d_in={args.d_in} d_sae={args.d_sae} k={args.k} batch={args.batch_size} "
        f"threads={args.threads} selection dtype={config.dtype} "
        f"(native CPU bf16: {native_bf16('cpu')})"
    )


def load_typical(folder: Path, shards: Sequence[int], max_norm_multiple: float) -> torch.Tensor:
    """[n, d_in] float32: the tokens of ``folder``'s ``shards`` that are not massive
    activations (`typical_tokens`, per shard), the tokens both trainers learn from."""
    parts = []
    for index in shards:
        x = torch.from_numpy(np.load(folder / f"shard_{index:05d}.npy").astype(np.float32))
        parts.append(x[typical_tokens(x, max_norm_multiple)])
    return torch.cat(parts)


def training_batches(folder: Path, args: argparse.Namespace, config: TrainConfig) -> list:
    """``config.n_tokens`` training tokens in one fixed shuffled order, as batches."""
    x = load_typical(folder, args.train_shards, config.max_norm_multiple)
    if len(x) < config.n_tokens:
        raise SystemExit(f"the training shards hold {len(x):,} tokens; lower --tokens")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(config.seed))
    return list(x[order[: config.n_steps * config.batch_size]].split(config.batch_size))


def norm_batches(batches: list, config: TrainConfig) -> list:
    """The first batches, from which both trainers estimate the input scale."""
    return batches[: max(1, config.norm_sample_tokens // config.batch_size)]


def train_cogsae(batches: list, d_in: int, config: TrainConfig) -> tuple[Any, float]:
    """cogsae's TopK SAE trained on ``batches``; returns (SAE, seconds in training steps)."""
    trainer = _Trainer(
        _init_sae(torch.cat(norm_batches(batches, config)), d_in, config, {}), config
    )
    start = time.perf_counter()
    for batch in batches:
        trainer.train_step(batch)
    return trainer.sae.eval(), time.perf_counter() - start


def train_sae_lens(batches: list, d_in: int, config: TrainConfig) -> tuple[Any, float] | None:
    """sae_lens's TopK SAE trained by its `SAETrainer` on ``batches`` (same lr, tokens,
    batch, input scaling and dead-latent window; its defaults otherwise); None without
    sae_lens. Returns (SAE, seconds in `SAETrainer.fit`)."""
    if importlib.util.find_spec("sae_lens") is None:
        return None
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(config.seed)
    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(
            d_in=d_in,
            d_sae=config.d_sae,
            k=config.k,
            dtype="float32",
            device="cpu",
            normalize_activations="expected_average_only_in",
        )
    )
    trainer_config = SAETrainerConfig(
        total_training_samples=len(batches) * config.batch_size,
        train_batch_size_samples=config.batch_size,
        lr=config.lr,
        lr_end=config.lr / 10,  # what its runner sets; unused by the constant schedule
        dead_feature_window=config.dead_tokens // config.batch_size,
        device="cpu",
    )
    trainer = SAETrainer(trainer_config, sae, data_provider=iter(batches))
    first = norm_batches(batches, config)
    trainer.activation_scaler.estimate_scaling_factor(d_in, iter(first), len(first))
    start = time.perf_counter()
    trainer.fit()
    return sae.eval(), time.perf_counter() - start


@torch.no_grad()
def held_out_scores(sae: Any, x: torch.Tensor, chunk: int = 4096) -> tuple[float, float]:
    """(FVE, dead fraction) of ``sae`` (model-space ``encode`` / ``decode``) on ``x``
    [n, d_in]: FVE = 1 - sum ||x - x'||^2 / sum ||x - mean||^2; dead = share of latents
    that fire on no token of ``x``."""
    error, fired = 0.0, None
    for part in x.split(chunk):
        codes = sae.encode(part)
        error += float((sae.decode(codes) - part).pow(2).sum())
        now = (codes > 0).any(0)
        fired = now if fired is None else fired | now
    assert fired is not None
    total = float((x - x.mean(0)).pow(2).sum())
    return 1 - error / total, 1 - float(fired.float().mean())


def quality_vs_sae_lens(args: argparse.Namespace, config: TrainConfig) -> None:
    """Throughput, held-out FVE and dead latents against sae_lens at equal tokens."""
    folder = Path(args.shards)
    batches = training_batches(folder, args, config)
    held_out = load_typical(folder, [args.held_out], config.max_norm_multiple)
    runs = {"cogsae": train_cogsae(batches, args.d_in, config)}
    theirs = train_sae_lens(batches, args.d_in, config)
    if theirs is None:
        print("sae_lens is not installed (pip install cogsae[test-interop]); cogsae alone:")
    else:
        runs["sae_lens"] = theirs
    scores = {name: held_out_scores(sae, held_out) for name, (sae, _) in runs.items()}
    speed = {name: len(batches) * config.batch_size / secs for name, (_, secs) in runs.items()}
    print(header(args, config))
    print(
        f"{len(batches) * config.batch_size:,} training tokens (shards {args.train_shards}), "
        f"lr {config.lr:g}; held-out shard {args.held_out}: {len(held_out):,} tokens"
    )
    ratio = f"{'ratio':>8}" if "sae_lens" in runs else ""
    print(f"{'':28}" + "".join(f"{name:>12}" for name in runs) + ratio)
    rows = [
        ("training (activations/s)", speed, "{:12,.0f}"),
        ("held-out FVE", {n: s[0] for n, s in scores.items()}, "{:12.3f}"),
        ("held-out dead latents", {n: s[1] for n, s in scores.items()}, "{:12.1%}"),
    ]
    for label, values, fmt in rows:
        line = f"{label:28}" + "".join(fmt.format(v) for v in values.values())
        if values.get("sae_lens"):
            line += f"{values['cogsae'] / values['sae_lens']:7.2f}x"
        print(line)


def shard_range(text: str) -> list[int]:
    """ "0-6" -> [0, ..., 6]; "0,3" -> [0, 3]."""
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(part) for part in text.split(",")]


def main() -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--d-sae", type=int, default=defaults.d_sae)
    parser.add_argument("--k", type=int, default=defaults.k)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--encode", type=int, default=100_000, help="activations to encode")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dtype", default="auto", help="latent-selection product precision")
    parser.add_argument("--shards", help="activation shard folder: compare with sae_lens")
    parser.add_argument("--train-shards", type=shard_range, default=shard_range("0-6"))
    parser.add_argument("--held-out", type=int, default=9, help="held-out shard index")
    parser.add_argument("--tokens", type=int, default=204_800, help="training tokens")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = TrainConfig(
        d_sae=args.d_sae,
        k=args.k,
        lr=args.lr,
        batch_size=args.batch_size,
        n_tokens=args.tokens if args.shards else 10**9,
        dead_tokens=defaults.dead_tokens if args.shards else 10**9,
        dtype=args.dtype,
    )
    if args.shards:
        quality_vs_sae_lens(args, config)
    else:
        throughput_vs_reference(args, config)


if __name__ == "__main__":
    main()
