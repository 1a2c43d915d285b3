"""Extraction throughput: cogsae against the practical limit and against the prior work's way.

Prints tokens/s, in one process on the same stimuli, of
  cogsae      extract_activations (--dtype, default "auto": bfloat16 where the hardware
              runs it natively, else float32; batched by length, stops after block L,
              windows),
  truncated   a bare forward, same dtype, of a copy of the model cut to blocks 0..L, same
              batches (the practical limit: no hook, no windowing),
  naive       one sentence at a time, fp32, full forward with output_hidden_states,
and the ratios cogsae/truncated (target >= 0.9) and cogsae/naive (target >= 5).
``ONEDNN_MAX_CPU_ISA=AVX2`` in the environment shows a CPU without native bf16 on one
that has it ("auto" then runs float32).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from cogsae.extract import Window, extract_activations
from cogsae.model import DTYPE_CHOICES, dtype_name, load_model, native_bf16
from cogsae.stimuli import load_stimuli

REPO = Path(__file__).resolve().parents[1]


def _best_of(repeats: int, func) -> float:
    """Shortest wall time of ``repeats`` calls (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stimuli", default=str(REPO / "stimuli" / "success.yaml"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    stimuli = load_stimuli(args.stimuli)
    model = load_model(dtype=args.dtype, device=args.device)
    window = Window.for_stimuli(stimuli)
    texts = stimuli.texts()
    n_tokens = sum(len(ids) for ids in model.tokenizer(texts)["input_ids"])

    def run_cogsae() -> None:
        extract_activations(
            stimuli, model, window, batch_size=args.batch_size, cache=False, progress=False
        )

    truncated = copy.deepcopy(model.model.model)
    truncated.layers = truncated.layers[: model.layer + 1]
    ordered = sorted(texts, key=lambda t: len(model.tokenizer(t)["input_ids"]))
    batches = [
        model.tokenize(ordered[i : i + args.batch_size])
        for i in range(0, len(ordered), args.batch_size)
    ]

    def run_truncated() -> None:
        for batch in batches:
            truncated(**batch, use_cache=False)

    naive_model = load_model(dtype="float32", device=args.device).model

    def run_naive() -> None:
        for text in texts:
            enc = model.tokenizer(text, return_tensors="pt").to(model.device)
            naive_model(**enc, output_hidden_states=True)

    run_cogsae()  # warm-up
    t_cogsae = _best_of(args.repeats, run_cogsae)
    t_truncated = _best_of(args.repeats, run_truncated)
    t_naive = _best_of(1, run_naive)
    rate = {
        name: n_tokens / t
        for name, t in [("cogsae", t_cogsae), ("truncated", t_truncated), ("naive", t_naive)]
    }
    print(
        f"{len(texts)} items, {n_tokens} tokens, layer {model.layer}, "
        f"{torch.get_num_threads()} threads, dtype {dtype_name(model.dtype)} "
        f"(--dtype {args.dtype}; native bf16: {native_bf16(args.device)})"
    )
    for name, value in rate.items():
        print(f"  {name:<10} {value:9.0f} tokens/s")
    print(
        f"  cogsae / truncated forward      = {rate['cogsae'] / rate['truncated']:.2f}x "
        "(target >= 0.9)"
    )
    print(
        f"  cogsae / naive fp32 one-by-one  = {rate['cogsae'] / rate['naive']:.2f}x (target >= 5)"
    )


if __name__ == "__main__":
    main()
