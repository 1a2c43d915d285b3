"""Layer-L activations for SAE training: a resumable float16 disk cache and a shuffle buffer.

Training runs in two stages so that each is resumable and the model runs once:
1. `cache_activations` streams corpus -> token chunks (ids 0..N-1) -> ``LoadedModel.residual``
   (`cogsae.corpus.corpus_chunks`, `cogsae.corpus.layer_batches`) and writes the
   activations (position 0 and padding excluded) as float16 shards ``shard_NNNNN.npy``
   [tokens, d_model] of a fixed number of chunks, each written atomically and listed
   in ``manifest.json`` (`cogsae.corpus.shards`). A rerun skips the shards already in
   the manifest, so an interrupted extraction resumes where it stopped, and a larger
   token budget only extracts the missing shards. With ``engine="ray"`` the shards are
   built by Ray actors that each hold the model; the files are the same.
2. `shuffled_batches` reads the shards (in a seeded random order) through a shuffle
   buffer, which mixes tokens from many chunks and documents, into training batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cogsae import streams
from cogsae._io import atomic_path, cache_dir, stable_hash, write_json
from cogsae.corpus import Subset, corpus_chunks, files_hash, layer_batches
from cogsae.corpus.shards import (
    ShardRecord,
    ShardTask,
    build_shards,
    read_manifest,
    shard_name,
    valid_records,
    worker_models,
    write_manifest,
)
from cogsae.engine import Engine
from cogsae.model import LoadedModel, model_fingerprint


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


CACHE_FORMAT = 2
"""Version of the activation cache folder layout (2: shards listed in ``manifest.json``)."""


def cache_activations(
    loaded: LoadedModel,
    corpus: Sequence[str | Path],
    n_tokens: int,
    *,
    layers: Sequence[int] | None = None,
    subset: Subset = "train",
    context_length: int = 128,
    batch_size: int = 32,
    chunks_per_shard: int = 256,
    progress: bool = True,
    engine: Engine = "local",
    workers: int | None = None,
    loader: Callable[[], LoadedModel] | None = None,
) -> dict[int, ActivationCache]:
    """Extract (or reuse) at least ``n_tokens`` activations of ``corpus`` at each of
    ``layers`` (default: ``loaded.layer``), from one forward pass through blocks
    0..max(layers) per batch.

    The corpus is read with `iter_documents`, split with `select_documents(subset)` and
    packed into ``context_length`` chunks with ids 0..N-1 (`corpus_chunks`); shard s holds
    chunks ``[s * chunks_per_shard, (s + 1) * chunks_per_shard)``
    (``chunks_per_shard * (context_length - 1)`` tokens). Each layer has its own cache
    folder, the one a one-layer call for that layer uses, so ``train-sae --layer L``
    reuses a multi-layer pass. The deepest layer's folder drives `build_shards` (its
    manifest says which shards are done); a shard's other layers are written first, so
    a shard in that manifest has every layer's file (`_adopt_shards` records them).

    Args:
        layers: decoder blocks read (each 0..n_layers-1).
        engine: "local" (this process, in shard order) or "ray" (``workers`` Ray actors,
            each loading the model once, one GPU each when the cluster has GPUs); both
            write the same shards.
        workers: Ray actors (default: one per GPU, else one per CPU of the cluster).
        loader: under the Ray engine, builds the model on each worker (e.g.
            ``functools.partial(load_model, path, layer=L, dtype=...)``) instead of
            shipping ``loaded``'s weights through the object store; it must give the
            same weights as ``loaded`` (which still keys the cache and tokenizes).

    Returns:
        layer -> its `ActivationCache` (same shards, same token counts).
    """
    paths = [Path(p).resolve() for p in corpus]
    identity = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    wanted = sorted(set([loaded.layer] if layers is None else layers))
    folders: dict[int, Path] = {}
    for layer in wanted:
        settings = {
            "format": CACHE_FORMAT,
            "model": loaded.name,
            "weights": model_fingerprint(loaded),
            "layer": layer,
            "dtype": str(loaded.dtype),
            "corpus": identity,
            "subset": subset,
            "context_length": context_length,
            "chunks_per_shard": chunks_per_shard,
        }
        folders[layer] = cache_dir() / "activations" / stable_hash(settings)
        folders[layer].mkdir(parents=True, exist_ok=True)
        write_json(folders[layer] / "meta.json", settings)
    primary, others = folders[wanted[-1]], [folders[layer] for layer in wanted[:-1]]
    _drop_incomplete(primary, others, chunks_per_shard)
    n_shards = math.ceil(n_tokens / (chunks_per_shard * (context_length - 1)))
    chunks = corpus_chunks(
        paths, loaded.tokenizer, context_length, subset=subset, limit=n_shards * chunks_per_shard
    )
    records = build_shards(
        primary,
        chunks,
        chunks_per_shard,
        worker_models(loaded, engine=engine, loader=loader),
        ActivationShardWriter(tuple(folders.items()), batch_size),
        engine=engine,
        workers=workers,
        progress=progress,
        desc="activations" if len(wanted) == 1 else f"activations at layers {wanted}",
    )
    for folder in others:  # their files of this pass, written before the primary's
        _adopt_shards(folder, records, read_manifest(folder), chunks_per_shard)
    n_cached = sum(r.n_tokens for r in records.values())
    return {
        layer: ActivationCache(folder, [folder / shard_name(i) for i in sorted(records)], n_cached)
        for layer, folder in folders.items()
    }


def _drop_incomplete(primary: Path, others: Sequence[Path], chunks_per_shard: int) -> None:
    """Before a multi-layer pass: make ``primary``'s manifest list only shards every folder
    holds, so that a shard some other folder lacks (e.g. the primary was filled by an
    earlier one-layer run) is rebuilt. A one-layer call has nothing to do (`build_shards`
    checks its one folder)."""
    if not others:
        return
    done = valid_records(primary, read_manifest(primary))
    keep = set(done)
    for folder in others:
        records = valid_records(folder, read_manifest(folder))
        keep &= _adopt_shards(folder, done, records, chunks_per_shard)
    write_manifest(primary, {i: done[i] for i in sorted(keep)}, chunks_per_shard)


def _adopt_shards(
    folder: Path,
    done: dict[int, ShardRecord],
    records: dict[int, ShardRecord],
    chunks_per_shard: int,
) -> set[int]:
    """Add to ``folder``'s manifest (now ``records``) its file of each primary shard in
    ``done`` it does not list yet, with its checksum: that file was written whole before
    the primary's (atomic writes, primary last). Returns the shards it then lists."""
    for index, record in done.items():
        path = folder / shard_name(index)
        if index not in records and path.is_file():
            records[index] = replace(record, sha256=files_hash([path]))
    write_manifest(folder, records, chunks_per_shard)
    return set(records)


@dataclass(frozen=True)
class ActivationShardWriter:
    """The per-shard work of `cache_activations` (picklable, for Ray actors): chunk
    ids -> blocks 0..max(layer) -> per layer, float16 rows [tokens, d_model] (positions
    >= 1, chunk order) -> an atomically written ``shard_NNNNN.npy`` in that layer's
    folder, the last (deepest) layer's last; returns the last one's record."""

    folders: tuple[tuple[int, Path], ...]
    batch_size: int

    def __call__(self, models: tuple[LoadedModel], task: ShardTask) -> ShardRecord:
        (loaded,) = models
        layers = [layer for layer, _ in self.folders]
        parts: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
        for batch in layer_batches(loaded, task.chunks, self.batch_size, layers):
            for layer, acts in batch.items():
                parts[layer].append(acts.to("cpu", torch.float16).numpy())
        for layer, folder in self.folders:
            rows = np.concatenate(parts[layer])
            path = folder / shard_name(task.index)
            with atomic_path(path) as tmp, tmp.open("wb") as fh:
                np.save(fh, rows)
        return ShardRecord(
            task.index, task.first_chunk, len(task.chunks), len(rows), files_hash([path])
        )


def _shard_len(path: Path) -> int:
    return int(np.load(path, mmap_mode="r").shape[0])


def shuffled_batches(
    shards: Sequence[Path],
    batch_size: int,
    buffer_tokens: int,
    seed: int,
    n_tokens: int | None = None,
    epoch: int = 0,
) -> Iterator[torch.Tensor]:
    """Float32 batches [batch_size, d] drawn once from the shards through a shuffle buffer.

    Shards are visited in a seeded random order; tokens enter a buffer of
    ``buffer_tokens`` rows and leave it in a seeded random order, so a batch mixes tokens
    from many documents and shards. The stream is a pure function of its arguments
    (training resumes by replaying it and skipping the batches already done). Stops after
    ``n_tokens`` tokens (default: all) or at the last full batch. Each ``epoch`` (a pass
    over the same shards) has its own order; epoch 0's is the one-epoch order.
    """
    rng = streams.rng(seed, streams.Stream.SAE_SHUFFLE, *([epoch] if epoch else []))
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
