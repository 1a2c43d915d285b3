"""Linear readouts over a snippet sample, shard by shard: the run's corpus scoring past one machine.

The local corpus stage stores the float16 residual of every sampled snippet
(`cogsae.corpus.scan_snippets`) and reads all ensembles from it at once. `readout_scan`
gives the same top snippets without ever holding that residual: the seeded sample
(`sample_snippets`) is cut into exactly the local scan's length-sorted batches, one shard
each (every forward pass sees the batch shapes the local scan ran), and each shard (in
this process, or on Ray actors holding the model and the SAE) computes the decision of
every readout on its snippets and keeps its ``n_top`` best; the driver merges them under
the total order (decision desc, snippet id asc) of the local stable argsort. Workers send
back only those tops, so memory does not grow with the number of snippets.

The local path multiplies all rows of the sample at once, and the BLAS kernels round a
row by where it falls in their blocks of `BLOCK` rows (the trailing partial block is
handled apart; SAE encoding runs in `BLOCK`-row batches). A shard therefore places each
of its rows at its global row in a block of the local length (`_blockwise`), so its
floats are the local path's bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from cogsae.corpus.scan import (
    DEFAULT_SNIPPETS,
    batch_rows,
    pad_id,
    sample_snippets,
    scan_key,
    snippet_settings,
)
from cogsae.corpus.shards import worker_models
from cogsae.corpus.sources import corpus_files, length_sorted_batches
from cogsae.engine import Engine, map_actors
from cogsae.model import LoadedModel
from cogsae.sae.base import SAE, encode_batched

BLOCK = 4096
"""Rows per block of the local readout: `encode_batched`'s batch and the row block of the
BLAS matrix-vector kernel (OpenBLAS sgemv)."""
SNIPPET_BATCH = 64
"""Snippets per forward pass, as `scan_snippets` runs them."""
_MIN_CALL = 64
"""Fewest rows an SAE encode call gets (zero rows pad it): from here on a row's code does
not depend on the call's size."""


class LinearReadout(Protocol):
    """A linear readout of per-token activations: decision = x[units] @ weights + bias."""

    @property
    def units(self) -> np.ndarray: ...

    @property
    def weights(self) -> np.ndarray: ...

    @property
    def bias(self) -> float: ...


@dataclass(frozen=True)
class ReadoutTop:
    """The best snippets of one readout, in (decision desc, snippet id asc) order.

    Attributes:
        snippets: [n] int64 snippet ids (indices into the sample).
        decisions: [n] float64 decision of each (mean of its per-token decisions).
        per_token: per snippet [length - 1] float32 per-token decisions (positions >= 1).
    """

    snippets: np.ndarray
    decisions: np.ndarray
    per_token: list[np.ndarray]


def best(snippets: np.ndarray, decisions: np.ndarray, n_top: int) -> np.ndarray:
    """Indices of the ``n_top`` best rows under (decision desc, snippet id asc)."""
    return np.lexsort((snippets, -decisions))[:n_top]


def merge_tops(a: ReadoutTop, b: ReadoutTop, n_top: int) -> ReadoutTop:
    """The ``n_top`` best of two tops over disjoint snippets."""
    snippets = np.concatenate([a.snippets, b.snippets])
    decisions = np.concatenate([a.decisions, b.decisions])
    per_token = [*a.per_token, *b.per_token]
    keep = best(snippets, decisions, n_top)
    return ReadoutTop(snippets[keep], decisions[keep], [per_token[i] for i in keep])


def readout_values(
    residual: torch.Tensor, used: np.ndarray, sae: SAE | None, batch_size: int = BLOCK
) -> np.ndarray:
    """[rows, len(used)] float32 activations of the ``used`` units of ``residual`` [rows,
    d_model]: its own dimensions (``sae`` None) or the SAE's features."""
    units = torch.from_numpy(used)
    if sae is None:
        return residual[:, units].float().numpy()
    return encode_batched(sae, residual, batch_size, units=units).numpy()


def decisions(
    values: np.ndarray, used: np.ndarray, rows: np.ndarray, readout: LinearReadout, matvec: Callable
) -> tuple[np.ndarray, np.ndarray]:
    """(decision [S] float64, per-token decisions [R] float32) of ``readout`` on ``values``
    [R, len(used)], snippet s owning rows ``rows[s]:rows[s + 1]``; ``matvec(a, w)`` is the
    product a [R, m] @ w [m]."""
    columns = np.searchsorted(used, readout.units)
    weights = readout.weights.astype(np.float32)
    per_token = matvec(values[:, columns], weights) + np.float32(readout.bias)
    return np.add.reduceat(per_token, rows[:-1]) / np.diff(rows), per_token


def _blockwise(global_rows: np.ndarray, total: int) -> Callable:
    """A matvec that computes each row as it falls in the local product over ``total`` rows:
    at its place in a zero block of the local block's length."""

    def matvec(a: np.ndarray, w: np.ndarray) -> np.ndarray:
        out = np.empty(len(a), dtype=np.float32)
        for start, rows in _by_block(global_rows, total):
            block = np.zeros((min(BLOCK, total - start), a.shape[1]), np.float32, order="F")
            block[global_rows[rows] - start] = a[rows]
            out[rows] = (block @ w)[global_rows[rows] - start]
        return out

    return matvec


def _by_block(global_rows: np.ndarray, total: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first global row, member positions [n]) of every local block ``global_rows`` touch."""
    block_of = global_rows // BLOCK
    for b in np.unique(block_of):
        yield int(b) * BLOCK, np.flatnonzero(block_of == b)


def _encoded(
    sae: SAE, residual: torch.Tensor, used: np.ndarray, global_rows: np.ndarray, total: int
) -> np.ndarray:
    """`readout_values` of SAE features for rows at ``global_rows`` of the local encode over
    ``total`` rows: rows of a short local batch are encoded in one of that length, the
    others together (padded to `_MIN_CALL` rows)."""
    out = np.empty((len(residual), len(used)), dtype=np.float32)
    shared = []
    for start, rows in _by_block(global_rows, total):
        length = min(BLOCK, total - start)
        if length >= _MIN_CALL:
            shared.append(rows)
            continue
        block = residual.new_zeros((length, residual.shape[1]))
        block[global_rows[rows] - start] = residual[rows]
        out[rows] = readout_values(block, used, sae)[global_rows[rows] - start]
    if shared:
        rows = np.concatenate(shared)
        padded = residual.new_zeros((max(len(rows), _MIN_CALL), residual.shape[1]))
        padded[: len(rows)] = residual[rows]
        out[rows] = readout_values(padded, used, sae)[: len(rows)]
    return out


@dataclass(frozen=True)
class SnippetBatch:
    """One shard: a local scan batch of snippets.

    Attributes:
        members: [B] snippet ids, in batch order.
        input_ids, mask: [B, seq] the right-padded batch.
        first_rows: [B] int64 global row (in the local scan's residual) of each member's
            position 1.
    """

    members: np.ndarray
    input_ids: torch.Tensor
    mask: torch.Tensor
    first_rows: np.ndarray


@dataclass(frozen=True)
class ShardReadout:
    """The per-shard work of `readout_scan` (picklable, for Ray actors): a batch -> blocks
    0..L -> float16 rows -> every readout's top snippets.

    Attributes:
        readouts: space ("raw" or "sae") -> label -> readout.
        total: rows of the whole sample (the local product's length).
        n_top: snippets kept per readout.
    """

    readouts: Mapping[str, Mapping[str, LinearReadout]]
    total: int
    n_top: int

    @torch.inference_mode()
    def __call__(
        self, models: tuple[Any, ...], task: SnippetBatch
    ) -> tuple[int, dict[str, ReadoutTop]]:
        """(rows scanned, label -> the shard's top snippets)."""
        loaded, sae = models if len(models) == 2 else (models[0], None)
        flat = batch_rows(loaded, task.input_ids, task.mask, torch.float16)
        counts = task.mask.sum(1).numpy() - 1
        rows = np.concatenate([[0], np.cumsum(counts)])
        global_rows = np.repeat(task.first_rows - rows[:-1], counts) + np.arange(rows[-1])
        out = {}
        for space, readouts in self.readouts.items():
            used = np.unique(np.concatenate([r.units for r in readouts.values()]).astype(np.int64))
            if space == "sae":
                values = _encoded(sae, flat, used, global_rows, self.total)
            else:
                values = readout_values(flat, used, None)
            matvec = _blockwise(global_rows, self.total)
            for label, readout in readouts.items():
                decision, per_token = decisions(values, used, rows, readout, matvec)
                keep = best(task.members, decision, self.n_top)
                out[label] = ReadoutTop(
                    task.members[keep].astype(np.int64),
                    decision[keep],
                    [per_token[rows[i] : rows[i + 1]] for i in keep],
                )
        return int(rows[-1]), out


@dataclass
class SnippetTops:
    """What `readout_scan` found.

    Attributes:
        key: the key the local scan of the same sample has (`scan_key`).
        texts: [S] the sampled snippets; ids: [S] their token ids.
        tops: label -> its best snippets.
    """

    key: str
    texts: list[str]
    ids: list[list[int]]
    tops: dict[str, ReadoutTop]


def readout_scan(
    loaded: LoadedModel,
    sae: SAE | None,
    readouts: Mapping[str, Mapping[str, LinearReadout]],
    corpus: Sequence[str | Path] = (),
    *,
    n_snippets: int = DEFAULT_SNIPPETS,
    seed: int = 0,
    n_top: int = 20,
    engine: Engine = "local",
    workers: int | None = None,
    loader: Callable[[], LoadedModel] | None = None,
    progress: bool = True,
) -> SnippetTops:
    """The ``n_top`` best snippets of every readout over the sample `scan_snippets` reads
    (its defaults: 8-40 tokens, batches of `SNIPPET_BATCH`), equal to reading that scan.

    Args:
        loaded: the model and layer.
        sae: the SAE of the "sae" space (None if no readout is in it).
        readouts: space ("raw" or "sae") -> label -> readout.
        corpus: text / .jsonl files; empty = the default corpus.
        engine: "local" or "ray" (``workers`` actors holding the model and the SAE).
        loader: under Ray, builds the model on each worker instead of shipping ``loaded``.
    """
    paths = corpus_files(corpus)
    texts, ids = sample_snippets(paths, loaded.tokenizer, n_snippets, seed=seed)
    key = scan_key(loaded, paths, snippet_settings(n_snippets, 8, 40, seed))
    lengths = np.array([len(x) - 1 for x in ids])
    first_rows = np.concatenate([[0], np.cumsum(lengths)])
    batches = length_sorted_batches(ids, SNIPPET_BATCH, pad_id(loaded.tokenizer))
    tasks = (SnippetBatch(m, i, k, first_rows[m]) for m, i, k in batches)
    labels = [label for group in readouts.values() for label in group]
    empty = ReadoutTop(np.zeros(0, np.int64), np.zeros(0), [])
    tops = dict.fromkeys(labels, empty)
    bar = tqdm(total=int(first_rows[-1]), desc="readout scan", unit="tok", disable=not progress)

    def finished(result: tuple[int, dict[str, ReadoutTop]]) -> None:
        n_rows, part = result
        for label, top in part.items():
            tops[label] = merge_tops(tops[label], top, n_top)
        bar.update(n_rows)

    models = (loaded,) if sae is None else (loaded, sae)
    map_actors(
        worker_models(*models, engine=engine, loader=loader),
        ShardReadout(readouts, int(first_rows[-1]), n_top),
        tasks,
        finished,
        engine=engine,
        workers=workers,
    )
    bar.close()
    return SnippetTops(key, texts, ids, tops)
