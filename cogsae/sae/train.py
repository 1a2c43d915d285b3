"""Train an SAE on layer-L activations (or a release: one SAE per layer), resumable.

Pipeline (``cogsae train-sae``): corpus -> `cache_activations` (float16 shards on disk,
resumable) -> `shuffled_batches` (shuffle buffer across documents) -> `train_sae`
(``epochs`` passes, checkpoints every ``checkpoint_every`` steps; an interrupted run
resumes from its checkpoint by replaying the deterministic batch stream) -> SAELens folder.

Recipes (all in the normalised space where the mean input norm is sqrt(d_in)):
- "standard" (Anthropic, April 2024 update): ReLU; loss = sum_d (x - x')^2 +
  lambda * sum_i f_i ||W_dec,i||; lambda warmed up linearly over the first 5% of steps;
  no pre-encoder bias; W_dec rows start with norm 0.1 and W_enc = W_dec^T.
- "topk" (Gao et al. 2024): loss = ||x - x'||^2 / Var(x) (fraction of variance
  unexplained) + aux_coefficient * AuxK, where AuxK reconstructs the residual error with
  the top ``aux_k`` pre-activations among dead latents, reviving them; W_dec rows kept at
  unit norm (gradient component along each row removed, rows renormalised each step).
  The training step is sparse: latents are selected from one dense encoder product, in
  ``TrainConfig.dtype`` (bfloat16 where ``TrainConfig.device`` runs it natively, else
  float32: emulated bf16 is ~100x slower), and the encoder / decoder gradients touch only
  the selected latents (sparse matmuls), so a step costs about one dense encoder product.
Both: Adam, gradient norm clipped to 1, learning rate decayed linearly to zero over the
last 20% of steps, b_dec initialised at the mean of the first batch, dead-latent tracking
(a latent is dead if it has not fired in the last ``dead_tokens`` tokens).
"""

from __future__ import annotations

import io
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cogsae._io import (
    cache_dir,
    load_cache,
    read_checked,
    stable_hash,
    write_checked,
    write_json,
)
from cogsae.corpus import corpus_record
from cogsae.engine import Engine
from cogsae.errors import CogsaeError
from cogsae.flags import flag, option
from cogsae.model import LoadedModel, dtype_name, resolve_dtype
from cogsae.sae.base import SAE, SAEConfig
from cogsae.sae.data import (
    ActivationCache,
    cache_activations,
    shuffled_batches,
    typical_tokens,
)
from cogsae.sae.io import save_sae

BatchSource = Callable[[], Iterator[np.ndarray | torch.Tensor]]
"""A function returning a fresh, deterministic iterator of [batch, d_in] activation batches."""


@dataclass
class TrainConfig:
    """Hyperparameters of one SAE training run.

    Attributes:
        architecture: "topk" (default; reliable on small budgets) or "standard" (ReLU+L1).
        d_sae: number of latents.
        k: active latents per token (topk only).
        l1_coefficient: final L1 weight lambda (standard only; April update uses 5).
        lr: peak Adam learning rate.
        batch_size: activations (tokens) per optimizer step.
        n_tokens: distinct training tokens (activations cached and read per epoch).
        epochs: passes over the ``n_tokens`` activations, each in its own shuffled order;
            steps = epochs * (n_tokens // batch_size). More than one trades extraction,
            the costly stage on a CPU, for training steps.
        buffer_tokens: shuffle-buffer size in tokens (see `shuffled_batches`).
        seed: seed of weight initialisation and of the batch order.
        checkpoint_every: steps between resumable checkpoints (0: never).
        dead_tokens: a latent is dead if it has not fired in the last this many tokens.
        aux_k: dead latents used by the AuxK loss (topk); None means d_in // 2.
        aux_coefficient: weight of the AuxK loss (topk; Gao et al. use 1/32).
        l1_warmup_frac: fraction of steps over which lambda rises linearly from 0.
        lr_decay_frac: final fraction of steps over which the lr decays linearly to 0.
        max_grad_norm: gradient norm clipping threshold.
        norm_sample_tokens: tokens (first batches) used to estimate the input scale.
        max_norm_multiple: tokens whose norm exceeds this multiple of their batch's median
            norm (attention sinks, see `typical_tokens`) are skipped.
        device: where training runs: "cpu", "cuda" or "cuda:N" (``train-sae`` passes
            its --device, the model's).
        dtype: precision of the latent-selection product (topk), the bulk of a step;
            "auto" resolves on creation to bfloat16 where ``device`` runs it natively,
            else float32 (`cogsae.model.resolve_dtype`).
    """

    architecture: str = option(
        "topk", "topk (TopK) or standard (ReLU + L1).", choices=("topk", "standard")
    )
    d_sae: int = option(8192, "Number of latents.")
    k: int = option(64, "Active latents per token (topk).")
    l1_coefficient: float = option(5.0, "L1 weight (standard).", flag="--l1")
    lr: float = option(1.5e-3, "Peak Adam learning rate.")
    batch_size: int = option(1024, "Tokens per step.")
    n_tokens: int = option(2_000_000, "Distinct training tokens.", flag="--tokens")
    epochs: int = option(1, "Passes over the --tokens activations.")
    buffer_tokens: int = option(262_144, "Shuffle buffer size.")
    seed: int = option(0, "Seed of the initialisation and the batch order.")
    checkpoint_every: int = option(200, "Steps between checkpoints (0: never).")
    dead_tokens: int = option(100_000, "Dead if silent this many tokens.")
    aux_k: int | None = None
    aux_coefficient: float = 1 / 32
    l1_warmup_frac: float = 0.05
    lr_decay_frac: float = 0.2
    max_grad_norm: float = 1.0
    norm_sample_tokens: int = 32_768
    max_norm_multiple: float = 10.0
    device: str = "cpu"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise CogsaeError(
                "--device cuda asked for, but torch sees no CUDA device", field="device"
            )
        self.dtype = dtype_name(resolve_dtype(self.dtype, self.device))
        if self.architecture not in ("topk", "standard"):
            raise CogsaeError(
                f"can train 'topk' or 'standard', not {self.architecture!r}",
                field=flag(TrainConfig, "architecture"),
            )
        if self.epochs < 1:
            raise CogsaeError("epochs must be at least 1", field=flag(TrainConfig, "epochs"))
        if self.n_tokens < self.batch_size:
            raise CogsaeError(
                "n_tokens must be at least one batch", field=flag(TrainConfig, "n_tokens")
            )

    @property
    def n_steps(self) -> int:
        return self.epochs * (self.n_tokens // self.batch_size)  # full batches per epoch


class DeadLatentTracker:
    """Counts, per latent, the tokens since it last fired; dead = count >= ``window``."""

    def __init__(self, d_sae: int, window: int) -> None:
        self.window = window
        self.tokens_since_fired = torch.zeros(d_sae, dtype=torch.long)

    def update(self, fired: torch.Tensor, n_tokens: int) -> None:
        """Record ``n_tokens`` tokens in which the latents marked in ``fired`` [d_sae] fired."""
        self.tokens_since_fired += n_tokens
        self.tokens_since_fired[fired.cpu()] = 0

    @property
    def dead(self) -> torch.Tensor:
        """[d_sae] bool, True for latents silent for at least ``window`` tokens."""
        return self.tokens_since_fired >= self.window


def train_sae(
    source: BatchSource,
    d_in: int,
    config: TrainConfig,
    *,
    sae_fields: dict[str, Any] | None = None,
    checkpoint: Path | None = None,
    progress: bool = True,
) -> tuple[SAE, list[dict[str, float]]]:
    """Train an SAE for ``config.n_steps`` steps on batches from ``source``.

    Args:
        source: fresh deterministic iterators of [batch_size, d_in] batches (model space).
        d_in: activation width.
        config: hyperparameters.
        sae_fields: extra `SAEConfig` fields to record (model_name, layer, context_size).
        checkpoint: file for resumable checkpoints; resumed if it exists with the same
            config, deleted after a successful run. None: no checkpoints.
        progress: show a tqdm bar (tokens/s, loss, L0, dead fraction).

    Returns:
        The trained SAE (eval mode) and the training log (one row per 10 steps).
    """
    state = _restore(checkpoint, config) if checkpoint is not None else None
    batches = (torch.as_tensor(b, dtype=torch.float32).to(config.device) for b in source())
    if state is None:
        first = list(
            itertools.islice(batches, max(1, config.norm_sample_tokens // config.batch_size))
        )
        if not first:
            raise CogsaeError("no activations to train on", field="corpus")
        sae = _init_sae(torch.cat(first).cpu(), d_in, config, sae_fields or {}).to(config.device)
        trainer = _Trainer(sae, config)
        batches = itertools.chain(first, batches)
    else:
        sae = SAE(SAEConfig(**state["sae_config"]))
        sae.load_state_dict(state["sae"])
        sae = sae.to(config.device)
        trainer = _Trainer(sae, config)
        trainer.load_state(state)
        batches = itertools.islice(batches, trainer.step, None)  # replay up to the checkpoint
    bar = tqdm(
        total=config.n_steps * config.batch_size,
        initial=trainer.step * config.batch_size,
        unit="tok",
        unit_scale=True,
        desc=f"train {config.architecture} SAE ({config.dtype})",
        disable=not progress,
    )
    while trainer.step < config.n_steps:
        batch = next(batches, None)
        if batch is None:
            raise CogsaeError(
                f"ran out of activations after {trainer.step * config.batch_size} tokens; "
                f"n_tokens asks for {config.n_tokens}",
                field="n_tokens",
            )
        stats = trainer.train_step(batch)
        bar.update(len(batch))
        if trainer.step % 10 == 0 or trainer.step == config.n_steps:
            bar.set_postfix(
                loss=f"{stats['loss']:.4f}", L0=f"{stats['l0']:.1f}", dead=f"{stats['dead']:.3f}"
            )
        if (
            checkpoint is not None
            and config.checkpoint_every
            and (trainer.step % config.checkpoint_every == 0)
        ):
            _save(checkpoint, config, trainer)
    bar.close()
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return sae.cpu().eval(), trainer.log


def _init_sae(sample: torch.Tensor, d_in: int, config: TrainConfig, fields: dict) -> SAE:
    """A fresh SAE: input scale so that mean ||x * scale|| = sqrt(d_in), b_dec = mean."""
    if sample.shape[-1] != d_in:
        raise CogsaeError(f"activations have width {sample.shape[-1]}, expected {d_in}")
    torch.manual_seed(config.seed)
    sample = sample[typical_tokens(sample, config.max_norm_multiple)]
    scale = math.sqrt(d_in) / float(sample.norm(dim=-1).mean())
    sae = SAE(
        SAEConfig(
            architecture=config.architecture,  # type: ignore[arg-type]
            d_in=d_in,
            d_sae=config.d_sae,
            k=config.k if config.architecture == "topk" else None,
            norm_scale=scale,
            **fields,
        )
    )
    with torch.no_grad():
        w_dec = torch.randn(config.d_sae, d_in)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        if config.architecture == "standard":
            w_dec *= 0.1
        sae.W_dec.copy_(w_dec)
        sae.W_enc.copy_(w_dec.T)
        sae.b_dec.copy_((sample * scale).mean(0))
    return sae


class _Trainer:
    """Optimizer, schedules, dead tracking and the loss of one architecture."""

    def __init__(self, sae: SAE, config: TrainConfig) -> None:
        self.sae = sae.train()
        self.config = config
        self.opt = torch.optim.Adam(sae.parameters(), lr=config.lr, fused=True)
        self.dtype = resolve_dtype(config.dtype, config.device)
        self.tracker = DeadLatentTracker(config.d_sae, config.dead_tokens)
        self.step = 0
        self.log: list[dict[str, float]] = []
        self.started = time.perf_counter()

    def lr_factor(self) -> float:
        """1 until the last ``lr_decay_frac`` of steps, then linear to 0."""
        decay_start = self.config.n_steps * (1 - self.config.lr_decay_frac)
        if self.step < decay_start:
            return 1.0
        return max(0.0, (self.config.n_steps - self.step) / (self.config.n_steps - decay_start))

    def l1_factor(self) -> float:
        """Linear warm-up of the L1 coefficient over the first ``l1_warmup_frac`` of steps."""
        warmup = self.config.n_steps * self.config.l1_warmup_frac
        return 1.0 if warmup <= 0 else min(1.0, (self.step + 1) / warmup)

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        """One Adam step on ``batch`` [batch_size, d_in] (model space); returns its stats."""
        x = batch[typical_tokens(batch, self.config.max_norm_multiple)] * self.sae.cfg.norm_scale
        if self.config.architecture == "topk":
            loss, stats, fired = self._topk_loss(x)
        else:
            loss, stats, fired = self._standard_loss(x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.architecture == "topk":
            _remove_parallel_grad(self.sae.W_dec)
        torch.nn.utils.clip_grad_norm_(self.sae.parameters(), self.config.max_grad_norm)
        for group in self.opt.param_groups:
            group["lr"] = self.config.lr * self.lr_factor()
        self.opt.step()
        if self.config.architecture == "topk":
            with torch.no_grad():
                self.sae.W_dec /= self.sae.W_dec.norm(dim=-1, keepdim=True)
        self.tracker.update(fired, len(x))
        self.step += 1
        stats["loss"] = float(loss.detach())
        stats["dead"] = float(self.tracker.dead.float().mean())
        if self.step % 10 == 0 or self.step == self.config.n_steps:
            elapsed = time.perf_counter() - self.started
            self.log.append({"step": self.step, "elapsed_s": round(elapsed, 1), **stats})
        return stats

    def _topk_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        sae, k = self.sae, self.config.k
        with torch.no_grad():
            pre = torch.addmm(sae.b_enc.to(self.dtype), x.to(self.dtype), sae.W_enc.to(self.dtype))
            top = pre.topk(k, dim=-1, sorted=False).indices
            dead = self.tracker.dead.nonzero().squeeze(1)
            aux_k = min(self.config.aux_k or x.shape[-1] // 2, len(dead))
            if aux_k:
                aux = dead[pre[:, dead].topk(aux_k, dim=-1, sorted=False).indices]
                top = torch.cat([top, aux], dim=1)
        values = _SparseEncode.apply(x, sae.W_enc, sae.b_enc, pre, top)
        acts = values[:, :k].relu()
        recon = _SparseDecode.apply(top[:, :k], acts, sae.W_dec) + sae.b_dec
        error = x - recon
        variance = (x - x.mean(0)).pow(2).sum(-1).mean()
        fvu = error.pow(2).sum(-1).mean() / variance
        loss = fvu
        aux_loss = torch.zeros(())
        if aux_k:
            e_hat = _SparseDecode.apply(top[:, k:], values[:, k:], sae.W_dec)
            aux_loss = (e_hat - error.detach()).pow(2).sum(-1).mean() / variance
            loss = loss + self.config.aux_coefficient * min(len(dead) / aux_k, 1.0) * aux_loss
        fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=x.device)
        fired[top[:, :k][acts.detach() > 0]] = True
        l0 = float((acts > 0).sum(-1).float().mean())
        stats = {"fvu": float(fvu.detach()), "aux": float(aux_loss.detach()), "l0": l0}
        return loss, stats, fired

    def _standard_loss(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        sae = self.sae
        f = (x @ sae.W_enc + sae.b_enc).relu()
        recon = f @ sae.W_dec + sae.b_dec
        mse = (recon - x).pow(2).sum(-1).mean()
        l1 = (f * sae.W_dec.norm(dim=-1)).sum(-1).mean()
        loss = mse + self.config.l1_coefficient * self.l1_factor() * l1
        with torch.no_grad():
            fvu = mse / (x - x.mean(0)).pow(2).sum(-1).mean()
            active = f > 0
        stats = {
            "fvu": float(fvu),
            "l1": float(l1.detach()),
            "l0": float(active.sum(-1).float().mean()),
        }
        return loss, stats, active.any(0)

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "sae_config": asdict(self.sae.cfg),
            "sae": {name: t.cpu() for name, t in self.sae.state_dict().items()},
            "opt": self.opt.state_dict(),
            "tokens_since_fired": self.tracker.tokens_since_fired,
            "log": self.log,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.opt.load_state_dict(state["opt"])
        self.tracker.tokens_since_fired = state["tokens_since_fired"]
        self.log = state["log"]


def _save(path: Path, config: TrainConfig, trainer: _Trainer) -> None:
    """Write a checkpoint atomically, behind a checksum (`cogsae._io.write_checked`)."""
    buf = io.BytesIO()
    torch.save({"config": asdict(config), **trainer.state()}, buf)
    write_checked(path, buf.getvalue())


def _restore(path: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it exists, checks out and was written with ``config``.

    Read with ``weights_only=True`` (tensors and plain data, no code); a broken one is
    reported in one line and training starts afresh.
    """
    state = load_cache(path, lambda p: torch.load(io.BytesIO(read_checked(p)), weights_only=True))
    return state if isinstance(state, dict) and state.get("config") == asdict(config) else None


@torch.no_grad()
def _remove_parallel_grad(w_dec: torch.nn.Parameter) -> None:
    """Project out of each W_dec row's gradient its component along the (unit) row."""
    if w_dec.grad is not None:
        w_dec.grad -= (w_dec.grad * w_dec).sum(-1, keepdim=True) * w_dec


class _SparseEncode(torch.autograd.Function):
    """Pre-activations at selected latents, [B, K], with a sparse backward.

    Forward reads them from ``pre`` [B, d_sae] (computed without grad); backward gives
    dL/dW_enc = x^T G and dL/db_enc = sum_b G, with G [B, d_sae] non-zero only at the K
    selected latents per row, as a sparse matmul (cost ~ B * K * d_in, not B * d_sae * d_in).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        w_enc: torch.Tensor,
        b_enc: torch.Tensor,
        pre: torch.Tensor,
        idx: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, idx)
        ctx.d_sae = w_enc.shape[1]
        return pre.gather(1, idx).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        x, idx = ctx.saved_tensors
        g_sparse = _latent_by_row(idx, grad, ctx.d_sae, len(x))
        grad_w = torch.sparse.mm(g_sparse, x).T
        grad_b = x.new_zeros(ctx.d_sae).index_add_(0, idx.flatten(), grad.flatten())
        return None, grad_w, grad_b, None, None


class _SparseDecode(torch.autograd.Function):
    """sum_j values[b, j] * W_dec[idx[b, j]] -> [B, d_in], with sparse gradients."""

    @staticmethod
    def forward(
        ctx: Any, idx: torch.Tensor, values: torch.Tensor, w_dec: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(idx, values, w_dec)
        return F.embedding_bag(idx, w_dec, per_sample_weights=values, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        idx, values, w_dec = ctx.saved_tensors
        grad_w = torch.sparse.mm(_latent_by_row(idx, values, len(w_dec), len(grad)), grad)
        grad_values = torch.empty_like(values)
        for start in range(0, len(idx), 256):  # chunks bound the [rows, K, d_in] gather
            rows = slice(start, start + 256)
            grad_values[rows] = torch.einsum("bkd,bd->bk", w_dec[idx[rows]], grad[rows])
        return None, grad_values, grad_w


def _latent_by_row(idx: torch.Tensor, values: torch.Tensor, d_sae: int, n: int) -> torch.Tensor:
    """Sparse [d_sae, n] matrix with ``values[b, j]`` at (idx[b, j], b) (duplicates summed)."""
    rows = torch.arange(n, device=idx.device).repeat_interleave(idx.shape[1])
    return torch.sparse_coo_tensor(
        torch.stack([idx.flatten(), rows]),
        values.flatten(),
        (d_sae, n),
        check_invariants=False,
    )


def train_sae_on_corpus(
    loaded: LoadedModel,
    corpus: Sequence[str | Path],
    out: str | Path,
    config: TrainConfig,
    *,
    context_length: int = 128,
    save_dtype: str = "float32",
    progress: bool = True,
    engine: Engine = "local",
) -> SAE:
    """The whole ``cogsae train-sae`` pipeline; returns the SAE saved at ``out``.

    Caches ``config.n_tokens`` layer-L activations of the "train" documents of ``corpus``
    (`cache_activations`, resumable), then trains on them (`train_sae_on_cache`).
    ``engine``: where the activation shards are built, "local" or "ray" (same shards).
    """
    cache = cache_activations(
        loaded,
        corpus,
        config.n_tokens,
        context_length=context_length,
        progress=progress,
        engine=engine,
    )[loaded.layer]
    return train_sae_on_cache(
        cache, loaded, loaded.layer, corpus, out, config, context_length, save_dtype, progress
    )


def train_sae_on_cache(
    cache: ActivationCache,
    loaded: LoadedModel,
    layer: int,
    corpus: Sequence[str | Path],
    out: str | Path,
    config: TrainConfig,
    context_length: int,
    save_dtype: str,
    progress: bool,
) -> SAE:
    """Train layer ``layer``'s SAE on cached activations and save it at ``out``.

    ``config.epochs`` passes through the shuffle buffer (`shuffled_batches`, one order
    per epoch), with a checkpoint in the cache (keyed by config and activations; resumed
    after an interruption); then writes ``out`` (SAELens folder, weights in
    ``save_dtype``) and ``out/training.json`` (config, data provenance, training log).
    """
    if cache.n_tokens < config.n_tokens:
        raise CogsaeError(
            f"the corpus has only {cache.n_tokens} training tokens; lower --tokens",
            field="n_tokens",
        )
    run_key = stable_hash(asdict(config), cache.folder.name)
    checkpoint = cache_dir() / "sae_checkpoints" / f"{run_key}.pt"

    def epochs() -> Iterator[torch.Tensor]:
        for epoch in range(config.epochs):
            yield from shuffled_batches(
                cache.shards,
                config.batch_size,
                config.buffer_tokens,
                config.seed,
                config.n_tokens,
                epoch=epoch,
            )

    sae, log = train_sae(
        epochs,
        loaded.d_model,
        config,
        sae_fields={"model_name": loaded.name, "layer": layer, "context_size": context_length},
        checkpoint=checkpoint,
        progress=progress,
    )
    out = save_sae(sae, out, dtype=save_dtype)
    write_json(
        out / "training.json",
        {
            "config": asdict(config),
            "model": loaded.name,
            "layer": layer,
            "model_dtype": dtype_name(loaded.dtype),
            "corpus": corpus_record(corpus),
            "subset": "train",
            "context_length": context_length,
            "activation_cache": cache.folder.name,
            "log": log,
        },
    )
    return sae
