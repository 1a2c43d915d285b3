"""SAE quality on held-out text: L0, variance explained, MSE, dead latents, CE loss recovered.

Definitions, over the evaluated tokens: positions >= 1 of packed ``context_length`` chunks
minus the rare massive-activation tokens (norm > 10x the batch median, see
`cogsae.sae.data.typical_tokens`; SAE training skips them too):
- ``l0``: mean number of non-zero latents per token.
- ``fraction_variance_explained``: 1 - sum ||x - x'||^2 / sum ||x - mean(x)||^2.
- ``mse``: mean over tokens and dimensions of (x - x')^2, in model space.
- ``dead_fraction``: fraction of latents that never fired on these tokens.
- ``ce_loss_recovered``: (L_zero - L_spliced) / (L_zero - L_clean), where L is the mean
  next-token cross-entropy of the model with layer L's output left alone (clean),
  replaced by the SAE reconstruction (spliced) or by zeros (zero ablation), all through
  `cogsae.model.residual_hook`. Position 0 and the massive tokens keep their original
  activation in every run: the SAE was not trained there (attention sinks of huge norm).
  The losses are averaged over the predictions made at positions >= 1.
- ``massive_token_fraction``: share of positions >= 1 left out as massive, and
  ``fve_including_massive``: the variance explained if they were counted (they hold a
  large share of the variance, so this number swings with a handful of tokens).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from cogsae.corpus import Subset, corpus_chunks, token_batches
from cogsae.corpus.shards import ShardTask, shard_tasks, worker_models
from cogsae.engine import Engine, map_actors
from cogsae.errors import CogsaeError
from cogsae.model import LoadedModel, residual_hook
from cogsae.sae.base import SAE
from cogsae.sae.data import typical_tokens


@dataclass
class SAEMetrics:
    """Quality of an SAE on ``n_tokens`` tokens (see module doc for definitions)."""

    n_tokens: int
    l0: float
    fraction_variance_explained: float
    mse: float
    dead_fraction: float
    ce_loss_clean: float
    ce_loss_spliced: float
    ce_loss_zero_ablation: float
    ce_loss_recovered: float
    massive_token_fraction: float
    fve_including_massive: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def sae_metrics(
    sae: SAE,
    loaded: LoadedModel,
    corpus: Sequence[str | Path],
    n_tokens: int,
    *,
    subset: Subset = "heldout",
    context_length: int = 128,
    batch_size: int = 8,
    max_norm_multiple: float = 10.0,
    progress: bool = True,
    engine: Engine = "local",
    chunks_per_shard: int = 64,
    workers: int | None = None,
    loader: Callable[[], LoadedModel] | None = None,
) -> SAEMetrics:
    """Measure ``sae`` at ``loaded``'s layer on ``n_tokens`` tokens of ``corpus``.

    ``subset="heldout"`` reads the documents that `cache_activations(subset="train")`
    leaves out (`select_documents`), so the numbers are on text the SAE never saw.
    Massive-activation tokens (`typical_tokens` with ``max_norm_multiple``) are treated
    like position 0: left out of the statistics and unedited in the CE runs.

    Args:
        engine: "local" (one pass in this process) or "ray": shards of
            ``chunks_per_shard`` chunks on ``workers`` Ray actors that each hold the
            model (``loader`` builds it there, else it is shipped) and the SAE; their sums
            are added, so the figures equal the local ones up to float summation order.
    """
    n_chunks = math.ceil(n_tokens / (context_length - 1))
    chunks = corpus_chunks(corpus, loaded.tokenizer, context_length, subset=subset, limit=n_chunks)
    total = _Sums(sae.cfg.d_sae)
    map_actors(
        worker_models(loaded, sae, engine=engine, loader=loader),
        _ShardSums(batch_size, max_norm_multiple, progress and engine == "local"),
        shard_tasks(chunks, chunks_per_shard if engine == "ray" else n_chunks),
        total.merge,
        engine=engine,
        workers=workers,
    )
    typical, every, losses = total.typical, total.every, total.losses
    if typical.n == 0:
        raise CogsaeError("the corpus yielded no complete chunk to evaluate", field="corpus")
    clean, spliced, zero = (losses[k] / total.done for k in ("clean", "spliced", "zero"))
    return SAEMetrics(
        n_tokens=typical.n,
        l0=total.l0 / typical.n,
        fraction_variance_explained=typical.fve(),
        mse=typical.sse / (typical.n * sae.cfg.d_in),
        dead_fraction=float((~total.fired).float().mean()),
        ce_loss_clean=clean,
        ce_loss_spliced=spliced,
        ce_loss_zero_ablation=zero,
        ce_loss_recovered=(zero - spliced) / (zero - clean),
        massive_token_fraction=1 - typical.n / total.n_all,
        fve_including_massive=every.fve(),
    )


class _Sums:
    """The additive statistics of `sae_metrics` over some chunks (shards add up)."""

    def __init__(self, d_sae: int) -> None:
        self.typical, self.every = _Residuals(), _Residuals()
        self.losses = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
        self.l0, self.n_all, self.done = 0.0, 0, 0
        self.fired = torch.zeros(d_sae, dtype=torch.bool)  # [d_sae] fired on a typical token

    def merge(self, other: _Sums) -> None:
        """Add ``other``'s chunks to these."""
        self.typical.merge(other.typical)
        self.every.merge(other.every)
        for name, value in other.losses.items():
            self.losses[name] += value
        self.l0, self.n_all, self.done = (
            self.l0 + other.l0,
            self.n_all + other.n_all,
            self.done + other.done,
        )
        self.fired |= other.fired


@dataclass(frozen=True)
class _ShardSums:
    """The per-shard work of `sae_metrics` (picklable, for Ray actors): a shard's chunks in
    batches of ``batch_size`` -> clean / spliced / zero-ablated runs -> its `_Sums`."""

    batch_size: int
    max_norm_multiple: float
    progress: bool

    @torch.inference_mode()
    def __call__(self, models: tuple[LoadedModel, SAE], task: ShardTask) -> _Sums:
        loaded, sae = models
        sums = _Sums(sae.cfg.d_sae)
        typical, every, losses = sums.typical, sums.every, sums.losses
        bar = tqdm(
            total=sum(len(c) - 1 for c in task.chunks),
            unit="tok",
            unit_scale=True,
            desc="sae metrics",
            disable=not self.progress,
        )
        for ids, _ in token_batches(task.chunks, loaded.tokenizer, self.batch_size):
            ids = ids.to(loaded.device)
            clean, hidden = _next_token_loss(loaded, ids, None)
            x = hidden[:, 1:].float().reshape(-1, sae.cfg.d_in)
            keep = typical_tokens(x, self.max_norm_multiple)
            f = sae.encode(x)
            recon = sae.decode(f)
            every.add(x, recon)
            typical.add(x[keep], recon[keep])
            sums.l0 += float((f[keep] > 0).sum())
            sums.fired |= (f[keep] > 0).any(0).cpu()
            spliced, _ = _next_token_loss(loaded, ids, torch.where(keep[:, None], recon, x))
            zero, _ = _next_token_loss(loaded, ids, torch.where(keep[:, None], 0.0, x))
            for name, value in (("clean", clean), ("spliced", spliced), ("zero", zero)):
                losses[name] += value * len(ids)
            sums.n_all += len(x)
            sums.done += len(ids)
            bar.update(len(x))
        bar.close()
        return sums


class _Residuals:
    """Running sums for the fraction of variance explained, in float64."""

    def __init__(self) -> None:
        self.n, self.sse, self.sq = 0, 0.0, 0.0
        self.total: torch.Tensor | float = 0.0

    def add(self, x: torch.Tensor, recon: torch.Tensor) -> None:
        """Add tokens ``x`` [n, d] and their reconstructions [n, d]."""
        x64 = x.double()
        self.n += len(x)
        self.sse += float((x64 - recon.double()).pow(2).sum())
        self.sq += float(x64.pow(2).sum())
        self.total = self.total + x64.sum(0)

    def merge(self, other: _Residuals) -> None:
        """Add ``other``'s tokens."""
        self.n += other.n
        self.sse += other.sse
        self.sq += other.sq
        self.total = self.total + other.total

    def fve(self) -> float:
        """1 - SSE / total sum of squares around the mean."""
        sst = self.sq - float(torch.as_tensor(self.total).pow(2).sum()) / self.n
        return 1 - self.sse / sst


def _next_token_loss(
    loaded: LoadedModel, ids: torch.Tensor, replacement: torch.Tensor | None
) -> tuple[float, torch.Tensor]:
    """Mean CE of the predictions at positions 1..T-2 (targets ids[:, 2:]) and the clean
    layer-L output [B, T, d]; ``replacement`` [B * (T-1), d], if given, replaces positions
    1.. of layer L's output (position 0 is kept)."""
    captured: list[torch.Tensor] = []

    def edit(hidden: torch.Tensor) -> torch.Tensor | None:
        captured.append(hidden)
        if replacement is None:
            return None
        new = replacement.to(hidden.dtype).reshape(len(hidden), -1, hidden.shape[-1])
        return torch.cat([hidden[:, :1], new], dim=1)

    with residual_hook(loaded, edit):
        logits = loaded.model(input_ids=ids, use_cache=False).logits
    pred = logits[:, 1:-1].float()
    loss = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), ids[:, 2:].reshape(-1))
    return float(loss), captured[0]
