"""Activation-caching throughput: the local engine against Ray with 1 and 2 workers.

Prints tokens/s of `cogsae.sae.data.cache_activations` (a fresh cache each time) with the
local engine and with the Ray engine on a local cluster (1 and 2 actors, each loading
the model once from disk), and the ratios Ray/local (the engine's overhead and, with 2
workers, its speed-up where cores allow). The Ray times include starting the actors and
loading the model in them, not starting the cluster. With CUDA it also prints tokens/s
of the local engine on the GPU for the default model and for a 1B-class Llama built
from a config with random weights (hidden 2048, 16 blocks, as Llama-3.2-1B).
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cogsae._io import cache_dir
from cogsae.corpus import corpus_files
from cogsae.engine import Engine, ray_module
from cogsae.model import DEFAULT_MODEL, LoadedModel, load_model
from cogsae.sae.data import cache_activations


def tokens_per_second(
    loaded: LoadedModel,
    args: argparse.Namespace,
    engine: Engine = "local",
    workers: int | None = None,
    loader: Callable[[], LoadedModel] | None = None,
) -> float:
    """Tokens/s of one activation cache build of ``args.tokens`` tokens in a fresh cache."""
    with tempfile.TemporaryDirectory() as cache:
        os.environ["COGSAE_CACHE"] = cache
        (Path(cache) / "models").symlink_to(Path(args.models))
        start = time.perf_counter()
        built = cache_activations(
            loaded,
            corpus_files(args.corpus),
            args.tokens,
            context_length=args.context,
            batch_size=args.batch_size,
            chunks_per_shard=args.chunks_per_shard,
            progress=False,
            engine=engine,
            workers=workers,
            loader=loader,
        )[loaded.layer]
        return built.n_tokens / (time.perf_counter() - start)


def billion_class(tokenizer: object) -> LoadedModel:
    """A Llama-3.2-1B-shaped model with random weights (bf16, on CUDA), reading layer 8."""
    config = LlamaConfig(
        vocab_size=128_256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=2048,
    )
    model = LlamaForCausalLM(config).to("cuda", torch.bfloat16).eval()
    return LoadedModel(model, tokenizer, "llama-1b-random", layer=8, fingerprint="random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--corpus", nargs="*", default=[], help="default: the default corpus")
    parser.add_argument("--tokens", type=int, default=16_256)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunks-per-shard", type=int, default=16)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    args.corpus = [str(p) for p in corpus_files(args.corpus)]  # built once, before the runs
    loaded = load_model(args.model, dtype=args.dtype)
    args.models = str(cache_dir() / "models")  # the converted models, shared by every run
    loader = functools.partial(load_model, args.model, layer=loaded.layer, dtype=args.dtype)
    print(f"{args.model} layer {loaded.layer} {loaded.dtype}, {args.tokens} tokens, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs")  # fmt: skip
    local = tokens_per_second(loaded, args)
    print(f"local          {local:9.0f} tok/s")
    ray_module()  # start the cluster outside the timings
    for workers in (1, 2):
        rate = tokens_per_second(loaded, args, "ray", workers, loader)
        print(f"ray x{workers}         {rate:9.0f} tok/s   ray/local {rate / local:.2f}")
    if torch.cuda.is_available():
        gpu = load_model(args.model, dtype="bfloat16", device="cuda")
        print(f"cuda {args.model:9} {tokens_per_second(gpu, args):9.0f} tok/s (local engine)")
        big = billion_class(gpu.tokenizer)
        print(f"cuda 1B-class  {tokens_per_second(big, args):9.0f} tok/s (local engine)")


if __name__ == "__main__":
    main()
