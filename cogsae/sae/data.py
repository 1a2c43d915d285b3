"""Layer-L activations for SAE training: a resumable float16 disk cache and a shuffle buffer.

Training runs in two stages so that each is resumable and the model runs once:
1. `cache_activations` streams corpus -> token chunks -> ``LoadedModel.residual``
   (`cogsae.corpus.corpus_chunks`, `cogsae.corpus.residual_batches`) and writes the
   activations (position 0 and padding excluded) as float16 shards ``shard_NNNNN.npy``
   [tokens, d_model], each written atomically. A rerun skips the shards already on disk,
   so an interrupted extraction resumes where it stopped, and a larger token budget only
   extracts the missing shards.
2. `shuffled_batches` reads the shards (in a seeded random order) through a shuffle
   buffer, which mixes tokens from many chunks and documents, into training batches.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cogsae import streams
from cogsae._io import atomic_path, cache_dir, stable_hash, write_json, write_text
from cogsae.corpus import Subset, corpus_chunks, files_hash, residual_batches
from cogsae.model import LoadedModel, model_fingerprint

log = logging.getLogger(__name__)


@dataclass
class ActivationCache:
    """Float16 activation shards of one (model, layer, corpus, subset, context) setting.

    Attributes:
        folder: the cache folder holding ``shard_NNNNN.npy`` and ``meta.json``.
        shards: shard files in corpus order, each [tokens, d_model] float16.
        n_tokens: total tokens over ``shards``.
    """

    folder: Path
    shards: list[Path]
    n_tokens: int


def typical_tokens(x: torch.Tensor, max_norm_multiple: float) -> torch.Tensor:
    """[n] bool: False for massive-activation tokens of ``x`` [n, d], whose norm exceeds
    ``max_norm_multiple`` times the median norm of ``x``.

    Like position 0, a few tokens (attention sinks: an early position of a chunk, some
    delimiters) carry activations ~100x the typical norm at layer 15 of SmolLM2; 5 such
    tokens in 32k hold over half of the total variance. SAE training skips them and SAE
    metrics leave them unedited, so that neither is a lottery on a handful of tokens.
    """
    norms = x.float().norm(dim=-1)
    return norms <= max_norm_multiple * norms.median()


def cache_activations(
    loaded: LoadedModel,
    corpus: Sequence[str | Path],
    n_tokens: int,
    *,
    subset: Subset = "train",
    context_length: int = 128,
    batch_size: int = 32,
    chunks_per_shard: int = 256,
    progress: bool = True,
) -> ActivationCache:
    """Extract (or reuse) at least ``n_tokens`` layer-L activations of ``corpus``.

    The corpus is read with `iter_documents`, split with `select_documents(subset)`,
    packed into ``context_length`` chunks (`iter_token_chunks`) and run through blocks
    0..L in batches of ``batch_size`` chunks. A shard holds ``chunks_per_shard`` chunks
    (``chunks_per_shard * (context_length - 1)`` tokens), so shard i always covers the
    same chunks and resuming only needs to skip ``i * chunks_per_shard`` chunks.
    """
    paths = [Path(p).resolve() for p in corpus]
    identity = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    settings = {
        "model": loaded.name,
        "weights": model_fingerprint(loaded),
        "layer": loaded.layer,
        "dtype": str(loaded.dtype),
        "corpus": identity,
        "subset": subset,
        "context_length": context_length,
        "chunks_per_shard": chunks_per_shard,
    }
    folder = cache_dir() / "activations" / stable_hash(settings)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "meta.json", settings)
    tokens_per_shard = chunks_per_shard * (context_length - 1)
    n_shards = math.ceil(n_tokens / tokens_per_shard)
    shards = [folder / f"shard_{i:05d}.npy" for i in range(n_shards)]
    done = _checked_shards(shards)
    if done < n_shards:
        chunks = corpus_chunks(paths, loaded.tokenizer, context_length, subset=subset)
        chunks = itertools.islice(chunks, done * chunks_per_shard, None)
        bar = tqdm(
            total=n_shards * tokens_per_shard,
            initial=done * tokens_per_shard,
            unit="tok",
            unit_scale=True,
            desc="activations",
            disable=not progress,
        )
        for index in range(done, n_shards):
            shard_chunks = list(itertools.islice(chunks, chunks_per_shard))
            if not shard_chunks:
                break
            parts = []
            for acts in residual_batches(loaded, shard_chunks, batch_size):
                parts.append(acts.to("cpu", torch.float16).numpy())
                bar.update(len(parts[-1]))
            with atomic_path(shards[index]) as tmp, tmp.open("wb") as fh:
                np.save(fh, np.concatenate(parts))
            write_text(_checksum_path(shards[index]), files_hash([shards[index]]))
        bar.close()
    shards = [s for s in shards if s.is_file()]
    total = sum(_shard_len(s) for s in shards)
    return ActivationCache(folder=folder, shards=shards, n_tokens=total)


def _checksum_path(shard: Path) -> Path:
    return shard.with_suffix(".sha256")


def _checked_shards(shards: Sequence[Path]) -> int:
    """How many leading shards exist and pass their checksum. The first one that fails is
    reported in one warning line naming it; it and the shards after it are rebuilt."""
    for index, shard in enumerate(shards):
        if not shard.is_file():
            return index
        checksum = _checksum_path(shard)
        if not checksum.is_file() or checksum.read_text().strip() != files_hash([shard]):
            log.warning("activation shard %s fails its checksum; rebuilding it", shard)
            return index
    return len(shards)


def _shard_len(path: Path) -> int:
    return int(np.load(path, mmap_mode="r").shape[0])


def shuffled_batches(
    shards: Sequence[Path],
    batch_size: int,
    buffer_tokens: int,
    seed: int,
    n_tokens: int | None = None,
) -> Iterator[torch.Tensor]:
    """Float32 batches [batch_size, d] drawn once from the shards through a shuffle buffer.

    Shards are visited in a seeded random order; tokens enter a buffer of
    ``buffer_tokens`` rows and leave it in a seeded random order, so a batch mixes tokens
    from many documents and shards. The stream is a pure function of its arguments
    (training resumes by replaying it and skipping the batches already done). Stops after
    ``n_tokens`` tokens (default: all) or at the last full batch.
    """
    rng = streams.rng(seed, streams.Stream.SAE_SHUFFLE)
    order = rng.permutation(len(shards))
    limit = n_tokens if n_tokens is not None else sum(_shard_len(s) for s in shards)
    buffer = np.empty((0, 0), dtype=np.float16)
    emitted = 0
    for position, shard_index in enumerate(order):
        shard = np.load(shards[shard_index])
        buffer = shard if buffer.size == 0 else np.concatenate([buffer, shard])
        last = position == len(order) - 1
        if len(buffer) < buffer_tokens and not last:
            continue
        buffer = buffer[rng.permutation(len(buffer))]
        keep = 0 if last else buffer_tokens // 2
        n_out = (len(buffer) - keep) // batch_size * batch_size
        for start in range(0, n_out, batch_size):
            if emitted + batch_size > limit:
                return
            yield torch.from_numpy(buffer[start : start + batch_size].astype(np.float32))
            emitted += batch_size
        buffer = buffer[n_out:]
