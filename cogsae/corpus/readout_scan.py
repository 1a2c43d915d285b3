"""Linear readouts over a snippet sample, batch by batch: the run's corpus scoring on one
machine or many.

Both engines read every readout batch by batch, over exactly the length-sorted batches
`scan_snippets` runs (`batch_tops`): locally from the cached scan's stored rows
(`scan_tops`), on Ray from a fresh forward pass of the same batch on an actor holding
the model and the SAE (`readout_scan`). Each batch keeps every readout's ``n_top`` best
snippets and the driver merges them under the total order (decision desc, snippet id
asc). A batch's rows are the same float16 values either way and go through the same
operations on arrays of the same shapes, so the engines agree bit for bit; workers send
back only their tops, so memory does not grow with the number of snippets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from cogsae.corpus.scan import (
    DEFAULT_SNIPPETS,
    SNIPPET_BATCH,
    SNIPPET_TOKENS,
    CorpusScan,
    batch_rows,
    pad_id,
    sample_snippets,
    scan_key,
    snippet_settings,
)
from cogsae.corpus.shards import worker_models
from cogsae.corpus.sources import corpus_files, length_sorted_batches, length_sorted_groups
from cogsae.engine import Engine, map_actors
from cogsae.model import LoadedModel
from cogsae.sae.base import SAE, encode_batched

ENCODE_BATCH = 4096
"""Rows per SAE encode call (`encode_batched`)."""


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


def readout_values(residual: torch.Tensor, used: np.ndarray, sae: SAE | None) -> np.ndarray:
    """[rows, len(used)] float32 activations of the ``used`` units of ``residual`` [rows,
    d_model]: its own dimensions (``sae`` None) or the SAE's features."""
    units = torch.from_numpy(used)
    if sae is None:
        return residual[:, units].float().numpy()
    return encode_batched(sae, residual, ENCODE_BATCH, units=units).numpy()


def decisions(
    values: np.ndarray, used: np.ndarray, rows: np.ndarray, readout: LinearReadout
) -> tuple[np.ndarray, np.ndarray]:
    """(decision [S] float64, per-token decisions [R] float32) of ``readout`` on ``values``
    [R, len(used)], snippet s owning rows ``rows[s]:rows[s + 1]``."""
    columns = np.searchsorted(used, readout.units)
    weights = readout.weights.astype(np.float32)
    per_token = values[:, columns] @ weights + np.float32(readout.bias)
    return np.add.reduceat(per_token, rows[:-1]) / np.diff(rows), per_token


def batch_tops(
    flat: torch.Tensor,
    members: np.ndarray,
    counts: np.ndarray,
    readouts: Mapping[str, Mapping[str, LinearReadout]],
    sae: SAE | None,
    n_top: int,
) -> dict[str, ReadoutTop]:
    """Label -> the ``n_top`` best of one batch's snippets ``members`` [B], whose rows
    (positions >= 1, ``counts`` [B] each, in member order) are ``flat`` [rows, d_model].

    Args:
        readouts: space ("raw" or "sae") -> label -> readout.
        sae: the SAE of the "sae" space (None if no readout is in it).
    """
    rows = np.concatenate([[0], np.cumsum(counts)])
    out = {}
    for space, group in readouts.items():
        used = np.unique(np.concatenate([r.units for r in group.values()]).astype(np.int64))
        values = readout_values(flat, used, sae if space == "sae" else None)
        for label, readout in group.items():
            decision, per_token = decisions(values, used, rows, readout)
            keep = best(members, decision, n_top)
            out[label] = ReadoutTop(
                members[keep].astype(np.int64),
                decision[keep],
                [per_token[rows[i] : rows[i + 1]] for i in keep],
            )
    return out


_EMPTY = ReadoutTop(np.zeros(0, np.int64), np.zeros(0), [])


def merge_all(tops: dict[str, ReadoutTop], part: Mapping[str, ReadoutTop], n_top: int) -> None:
    """Merge one batch's ``part`` into the running ``tops`` (label -> top), in place."""
    for label, top in part.items():
        tops[label] = merge_tops(tops.get(label, _EMPTY), top, n_top)


def scan_tops(
    scan: CorpusScan,
    readouts: Mapping[str, Mapping[str, LinearReadout]],
    sae: SAE | None,
    n_top: int,
) -> dict[str, ReadoutTop]:
    """Label -> top snippets of every readout on a stored snippet scan (`scan_snippets`),
    read over the scan's own length-sorted batches, as `readout_scan` reads them."""
    lengths = np.diff(scan.starts.numpy())
    first = scan.rows.numpy()
    tops: dict[str, ReadoutTop] = {}
    for members in length_sorted_groups(lengths, SNIPPET_BATCH):
        flat = torch.cat([scan.residual[first[i] : first[i + 1]] for i in members])
        merge_all(
            tops, batch_tops(flat, members, lengths[members] - 1, readouts, sae, n_top), n_top
        )
    return tops


@dataclass(frozen=True)
class SnippetBatch:
    """One shard: a batch of snippets, as `scan_snippets` runs it.

    Attributes:
        members: [B] snippet ids, in batch order.
        input_ids, mask: [B, seq] the right-padded batch.
    """

    members: np.ndarray
    input_ids: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class ShardReadout:
    """The per-shard work of `readout_scan` (picklable, for Ray actors): a batch -> blocks
    0..L -> float16 rows -> every readout's top snippets (`batch_tops`).

    Attributes:
        readouts: space ("raw" or "sae") -> label -> readout.
        n_top: snippets kept per readout.
    """

    readouts: Mapping[str, Mapping[str, LinearReadout]]
    n_top: int

    @torch.inference_mode()
    def __call__(
        self, models: tuple[Any, ...], task: SnippetBatch
    ) -> tuple[int, dict[str, ReadoutTop]]:
        """(rows scanned, label -> the shard's top snippets)."""
        loaded, sae = models if len(models) == 2 else (models[0], None)
        flat = batch_rows(loaded, task.input_ids, task.mask, torch.float16)
        counts = task.mask.sum(1).numpy() - 1
        return len(flat), batch_tops(flat, task.members, counts, self.readouts, sae, self.n_top)


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
    (its default bounds `SNIPPET_TOKENS`, batches of `SNIPPET_BATCH`), equal to `scan_tops`
    of that scan.

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
    key = scan_key(loaded, paths, snippet_settings(n_snippets, *SNIPPET_TOKENS, seed))
    batches = length_sorted_batches(ids, SNIPPET_BATCH, pad_id(loaded.tokenizer))
    tasks = (SnippetBatch(*batch) for batch in batches)
    tops: dict[str, ReadoutTop] = {}
    total = sum(len(x) - 1 for x in ids)
    bar = tqdm(total=total, desc="readout scan", unit="tok", disable=not progress)

    def finished(result: tuple[int, dict[str, ReadoutTop]]) -> None:
        n_rows, part = result
        merge_all(tops, part, n_top)
        bar.update(n_rows)

    models = (loaded,) if sae is None else (loaded, sae)
    map_actors(
        worker_models(*models, engine=engine, loader=loader),
        ShardReadout(readouts, n_top),
        tasks,
        finished,
        engine=engine,
        workers=workers,
    )
    bar.close()
    return SnippetTops(key, texts, ids, tops)
