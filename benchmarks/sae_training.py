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

On a CPU with native bf16, ``ONEDNN_MAX_CPU_ISA=AVX2`` in the environment makes torch run
(and report) bf16 as a CPU without it does: emulated, ~50x slower than float32.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from cogsae.model import native_bf16
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


def main() -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--d-sae", type=int, default=defaults.d_sae)
    parser.add_argument("--k", type=int, default=defaults.k)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--encode", type=int, default=100_000, help="activations to encode")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dtype", default="auto", help="latent-selection product precision")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, args.d_in) * 3 + torch.randn(args.d_in)

    config = TrainConfig(
        d_sae=args.d_sae,
        k=args.k,
        batch_size=args.batch_size,
        n_tokens=10**9,
        dead_tokens=10**9,
        dtype=args.dtype,
    )
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

    print(
        f"TopK SAE d_in={args.d_in} d_sae={args.d_sae} k={args.k} batch={args.batch_size} "
        f"threads={args.threads} selection dtype={config.dtype} "
        f"(native CPU bf16: {native_bf16('cpu')})"
    )
    print(f"{'':34}{'cogsae':>12}{'reference':>12}{'ratio':>8}")
    print(
        f"{'training (activations/s)':34}{args.batch_size / ours:12,.0f}"
        f"{args.batch_size / theirs:12,.0f}{theirs / ours:7.2f}x"
    )
    print(
        f"{f'encode {args.encode:,} activations (s)':34}{enc_ours:12.2f}{enc_theirs:12.2f}"
        f"{enc_theirs / enc_ours:7.2f}x"
    )


if __name__ == "__main__":
    main()
