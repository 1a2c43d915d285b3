"""Per-feature statistics of an SAE over a whole corpus, computed shard by shard and merged.

A feature page needs, per SAE feature, its density, its strongest examples and the shape
of its activation distribution, over as many tokens as possible: far more than fit in
memory as a dense [tokens, d_sae] matrix. `feature_scan` streams the corpus as numbered
chunks in shards (`cogsae.corpus.shards`), runs each shard through the model and the SAE
(in this process or on Ray actors that each hold both) and reduces it to a small
`FeatureScan`; the shards' scans are merged with `merge_scans`. Every statistic is a
selection under a total order, so the merge is exact and does not depend on how the
corpus was sharded or in which order the shards finished:

- density: the count of tokens with activation > 0 (integers add exactly);
- top examples: per feature the ``top_k`` strongest chunks (one example per chunk, at its
  strongest position), ordered by (value desc, chunk id, position);
- quantile sample: per feature the ``n_sample`` active tokens with the smallest hash of
  their global token id (chunk id * context length + position), a uniform random sample
  of the feature's active tokens that any sharding selects identically.

A scan is stored with `cogsae._io.save_data` (checksummed arrays, no pickle).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cogsae._io import cache_dir, load_data, save_data, stable_hash
from cogsae.corpus.scan import corpus_chunks, residual_batches
from cogsae.corpus.shards import (
    ShardRecord,
    ShardTask,
    check_complete,
    shard_tasks,
    worker_models,
)
from cogsae.corpus.sources import Subset, corpus_files, files_hash
from cogsae.engine import Engine, map_actors
from cogsae.model import LoadedModel, model_fingerprint
from cogsae.sae.base import SAE, encode_batched
from cogsae.version import __version__


@dataclass(frozen=True)
class FeatureScan:
    """Density, top examples and a quantile sample of every SAE feature over a corpus.

    Entries of ``top_*`` (M rows) and ``sample_*`` (Q rows) are sorted by feature, then
    by their selection order (module doc).

    Attributes:
        key: settings key (model, layer, dtype, SAE, corpus, chunking, limits).
        context_length: longest chunk; with ``subset`` and ``pack`` it fixes the chunk ids
            (`chunk_tokens` finds a chunk again).
        subset: documents read (`cogsae.corpus.select_documents`).
        pack: whether documents were packed into full chunks (else cut one by one).
        top_k: examples kept per feature.
        n_sample: sample size kept per feature.
        first_chunk: first chunk id covered; n_chunks: chunks covered.
        n_tokens: tokens scanned (positions >= 1 of every chunk).
        active: [d_sae] int64 tokens with activation > 0, per feature.
        top_feature: [M] int64 feature of each top example.
        top_value: [M] float32 its activation.
        top_chunk: [M] int64 its chunk id.
        top_position: [M] int64 its position in the chunk (>= 1).
        sample_feature: [Q] int64 feature of each sampled active token.
        sample_value: [Q] float32 its activation.
        sample_token: [Q] int64 its global token id, chunk id * context_length + position.
    """

    key: str
    context_length: int
    subset: str
    pack: bool
    top_k: int
    n_sample: int
    first_chunk: int
    n_chunks: int
    n_tokens: int
    active: np.ndarray
    top_feature: np.ndarray
    top_value: np.ndarray
    top_chunk: np.ndarray
    top_position: np.ndarray
    sample_feature: np.ndarray
    sample_value: np.ndarray
    sample_token: np.ndarray

    @property
    def density(self) -> np.ndarray:
        """[d_sae] fraction of scanned tokens where each feature is active (> 0)."""
        return self.active / max(self.n_tokens, 1)

    def top(self, feature: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values, chunk ids, positions) [<= top_k] of ``feature``'s top examples, best first."""
        rows = self.top_feature == feature
        return self.top_value[rows], self.top_chunk[rows], self.top_position[rows]

    def sample(self, feature: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values, chunk ids, positions) [<= n_sample] of ``feature``'s sampled active tokens."""
        rows = self.sample_feature == feature
        tokens = self.sample_token[rows]
        return self.sample_value[rows], tokens // self.context_length, tokens % self.context_length


# --------------------------------------------------------------------------- reduce


def _priority(tokens: np.ndarray) -> np.ndarray:
    """[n] uint64 splitmix64 hash of global token ids: the sample's random order."""
    z = tokens.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _first_per_group(groups: np.ndarray, n: int) -> np.ndarray:
    """[len(groups)] bool: the first ``n`` rows of each run of equal values in sorted ``groups``."""
    if len(groups) == 0:
        return np.zeros(0, dtype=bool)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    rank = np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    return rank < n


def _select_top(
    feature: np.ndarray, value: np.ndarray, chunk: np.ndarray, position: np.ndarray, k: int
) -> np.ndarray:
    """Row order [<= n] of the top examples: per (feature, chunk) the strongest position
    (earliest on ties), then per feature the ``k`` best by (value desc, chunk, position)."""
    order = np.lexsort((position, -value, chunk, feature))
    best = order[_first_per_group(feature[order] * (chunk.max(initial=0) + 1) + chunk[order], 1)]
    ranked = best[np.lexsort((position[best], chunk[best], -value[best], feature[best]))]
    return ranked[_first_per_group(feature[ranked], k)]


def _select_sample(feature: np.ndarray, token: np.ndarray, n: int) -> np.ndarray:
    """Row order of the sample: per feature the ``n`` tokens of smallest `_priority`."""
    order = np.lexsort((token, _priority(token), feature))
    return order[_first_per_group(feature[order], n)]


def _reduced(
    base: FeatureScan,
    active: np.ndarray,
    top: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    sample: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> FeatureScan:
    """``base`` with the given counts and with the top / sample candidates selected."""
    keep = _select_top(*top, base.top_k)
    pick = _select_sample(sample[0], sample[2], base.n_sample)
    return replace(
        base,
        active=active,
        top_feature=top[0][keep],
        top_value=top[1][keep],
        top_chunk=top[2][keep],
        top_position=top[3][keep],
        sample_feature=sample[0][pick],
        sample_value=sample[1][pick],
        sample_token=sample[2][pick],
    )


def merge_scans(a: FeatureScan, b: FeatureScan) -> FeatureScan:
    """The scan of the union of two scans' (disjoint) chunks, as one scan of both would be."""
    joined = replace(
        a,
        first_chunk=min(a.first_chunk, b.first_chunk),
        n_chunks=a.n_chunks + b.n_chunks,
        n_tokens=a.n_tokens + b.n_tokens,
    )

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(a, name), getattr(b, name)])

    return _reduced(
        joined,
        a.active + b.active,
        (cat("top_feature"), cat("top_value"), cat("top_chunk"), cat("top_position")),
        (cat("sample_feature"), cat("sample_value"), cat("sample_token")),
    )


@dataclass(frozen=True)
class ShardFeatureScan:
    """The per-shard work of `feature_scan` (picklable, for Ray actors): a shard's chunks ->
    blocks 0..L -> SAE codes -> its `FeatureScan`. ``template`` carries the settings."""

    template: FeatureScan
    batch_size: int

    @torch.inference_mode()
    def __call__(self, models: tuple[LoadedModel, SAE], task: ShardTask) -> FeatureScan:
        loaded, sae = models
        lengths = np.array([len(c) - 1 for c in task.chunks])
        row_chunk = np.repeat(task.first_chunk + np.arange(len(lengths)), lengths)
        row_position = np.concatenate([np.arange(1, n + 1) for n in lengths])
        codes = [
            encode_batched(sae, acts, 4096, sparse=True).tocoo()
            for acts in residual_batches(loaded, task.chunks, self.batch_size)
        ]
        offsets = np.cumsum([0] + [c.shape[0] for c in codes])
        rows = np.concatenate([c.row + o for c, o in zip(codes, offsets, strict=False)])
        feature = np.concatenate([c.col for c in codes]).astype(np.int64)
        value = np.concatenate([c.data for c in codes]).astype(np.float32)
        on = value > 0
        rows, feature, value = rows[on], feature[on], value[on]
        chunk, position = row_chunk[rows], row_position[rows]
        base = replace(
            self.template,
            first_chunk=task.first_chunk,
            n_chunks=len(task.chunks),
            n_tokens=int(lengths.sum()),
        )
        return _reduced(
            base,
            np.bincount(feature, minlength=sae.cfg.d_sae).astype(np.int64),
            (feature, value, chunk.astype(np.int64), position.astype(np.int64)),
            (feature, value, chunk.astype(np.int64) * base.context_length + position),
        )


# --------------------------------------------------------------------------- the scan


def feature_scan(
    loaded: LoadedModel,
    sae: SAE,
    corpus: Sequence[str | Path] = (),
    *,
    n_tokens: int = 1_000_000,
    context_length: int = 128,
    subset: Subset = "all",
    pack: bool = False,
    top_k: int = 20,
    n_sample: int = 1000,
    chunks_per_shard: int = 256,
    batch_size: int = 16,
    engine: Engine = "local",
    workers: int | None = None,
    loader: Callable[[], LoadedModel] | None = None,
    cache: bool = True,
    progress: bool = True,
) -> FeatureScan:
    """Density, top examples and a quantile sample of every feature of ``sae`` over the
    first chunks of ``corpus`` holding at least ``n_tokens`` tokens (module doc).

    Args:
        loaded: the model and layer (``sae`` reads its residual stream).
        corpus: text / .jsonl files; empty = the default corpus.
        pack: pack documents into full chunks (as SAE training does); default: cut each
            document on its own, so that no example mixes two documents.
        chunks_per_shard: chunks per unit of work (one Ray task each).
        engine: "local" or "ray" (``workers`` actors, each holding the model and the SAE,
            one GPU each when the cluster has GPUs); both give the same scan.
        loader: under Ray, builds the model on each worker instead of shipping ``loaded``.
        cache: reuse / store the scan in ``<cache>/scans`` (keyed by all the settings).
    """
    paths = corpus_files(corpus)
    key = stable_hash(
        "features",
        loaded.name,
        model_fingerprint(loaded),
        loaded.layer,
        str(loaded.dtype),
        sae.fingerprint(),
        files_hash(paths),
        n_tokens,
        context_length,
        subset,
        pack,
        top_k,
        n_sample,
        __version__,
    )
    path = cache_dir() / "scans" / f"features-{key}.npz"
    cached = load_data(path, key) if cache and path.is_file() else None
    if cached is not None:
        return cached
    template = _empty(key, context_length, subset, pack, top_k, n_sample, sae.cfg.d_sae)
    chunks = _until_tokens(
        corpus_chunks(paths, loaded.tokenizer, context_length, subset=subset, pack=pack), n_tokens
    )
    merged, records = template, {}
    bar = tqdm(total=n_tokens, desc="feature scan", unit="tok", disable=not progress)

    def finished(part: FeatureScan) -> None:
        nonlocal merged
        merged = merge_scans(merged, part)
        index = part.first_chunk // chunks_per_shard
        records[index] = ShardRecord(index, part.first_chunk, part.n_chunks, part.n_tokens, "")
        bar.update(part.n_tokens)

    map_actors(
        worker_models(loaded, sae, engine=engine, loader=loader),
        ShardFeatureScan(template, batch_size),
        shard_tasks(chunks, chunks_per_shard),
        finished,
        engine=engine,
        workers=workers,
    )
    bar.close()
    check_complete(records, merged.n_chunks, chunks_per_shard)
    if cache:
        save_data(path, merged, key)
    return merged


def _empty(
    key: str, context_length: int, subset: str, pack: bool, top_k: int, n_sample: int, d_sae: int
) -> FeatureScan:
    """The scan of no tokens (the identity of `merge_scans`)."""
    ints, floats = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    return FeatureScan(
        key, context_length, subset, pack, top_k, n_sample, 0, 0, 0,
        np.zeros(d_sae, dtype=np.int64), ints, floats, ints, ints, ints, floats, ints,
    )  # fmt: skip


def _until_tokens(chunks: Iterable[torch.Tensor], n_tokens: int) -> Iterator[torch.Tensor]:
    """The first chunks of ``chunks`` holding at least ``n_tokens`` tokens at positions >= 1."""
    total = 0
    for chunk in chunks:
        if total >= n_tokens:
            return
        yield chunk
        total += len(chunk) - 1


def chunk_tokens(
    scan: FeatureScan, corpus: Sequence[str | Path], tokenizer: Any, ids: Iterable[int]
) -> dict[int, torch.Tensor]:
    """Token ids [<= context_length] of the chunks ``ids`` of the corpus ``scan`` read,
    found again by streaming its chunks up to the largest id."""
    wanted = set(ids)
    found: dict[int, torch.Tensor] = {}
    chunks = corpus_chunks(
        corpus_files(corpus), tokenizer, scan.context_length, subset=scan.subset, pack=scan.pack
    )
    for chunk_id, chunk in enumerate(itertools.islice(chunks, max(wanted, default=-1) + 1)):
        if chunk_id in wanted:
            found[chunk_id] = chunk
    return found
