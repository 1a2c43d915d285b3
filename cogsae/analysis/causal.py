"""First-order causal effects of steering and ablation at layer L, for many directions at once.

An intervention adds ``delta`` to the layer-L residual stream at every edited position
(positions >= 1 of each item, as `cogsae.interventions`). Its effect on item i is the
change of the item's mean per-token log-probability; the concept effect is the difference
of differences (mean change over target items - mean change over reference items), as
`cogsae.interventions.measure_effect` defines it. Here the change is estimated to first
order from one forward and backward pass (attribution patching):
``d_i ~= sum_p g_ip . delta_ip``, with ``g_ip`` the gradient of item i's mean log-prob
with respect to the residual at position p. Then

- steering by ``alpha * u`` (unit ``u``): ``d_i = alpha * (sum_p g_ip) . u``;
- projecting out ``u`` (raw ablation): ``delta_ip = -(x_ip . u) u``, so
  ``d_i = -sum_p (x_ip . u)(g_ip . u)``;
- clamping SAE features S to 0 (SAE ablation, error term kept):
  ``delta_ip = -sum_{j in S} f_j(x_ip) W_dec[j]``, ``d_i = -sum_{j in S} A_ij`` with
  ``A_ij = sum_p f_j(x_ip) (g_ip . W_dec[j])``.

One gradient pass then prices thousands of random directions, so a null of random unit
sets costs matrix products instead of forward passes (docs/methods.md, "Causal tests").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

from cogsae.analysis.resampling import bootstrap_indices
from cogsae.analysis.transfer import percentile_ci
from cogsae.corpus import length_sorted_batches
from cogsae.errors import CogsaeError
from cogsae.model import LoadedModel, residual_hook

if TYPE_CHECKING:
    from cogsae.sae.base import SAE


@dataclass
class Sensitivity:
    """Layer-L residuals and log-prob gradients of a set of texts.

    Attributes:
        residual: [items, seq, d_model] float32 residual at layer L (0 on padding).
        gradient: [items, seq, d_model] float32 gradient of each item's mean per-token
            log-prob with respect to its residual; 0 at positions an edit leaves alone
            (position 0 unless ``include_first``, padding).
        edited: [items, seq] bool, the positions an edit changes.
    """

    residual: np.ndarray
    gradient: np.ndarray
    edited: np.ndarray

    @property
    def mean_norm(self) -> float:
        """Mean L2 norm of the residual over edited positions (the unit of alpha)."""
        return float(np.linalg.norm(self.residual[self.edited], axis=1).mean())

    def steer(self, directions: np.ndarray) -> np.ndarray:
        """[items, m] change per unit alpha of steering along unit ``directions`` [m, d]."""
        return self.gradient.sum(axis=1) @ directions.T

    def steer_each(self, directions: np.ndarray) -> np.ndarray:
        """[items] change per unit alpha when item i is steered along ``directions[i]``."""
        return np.einsum("id,id->i", self.gradient.sum(axis=1), directions)

    def project_out(self, directions: np.ndarray, batch: int = 256) -> np.ndarray:
        """[items, m] change when each unit direction of ``directions`` [m, d] is projected out."""
        out = []
        for start in range(0, directions.shape[0], batch):
            u = directions[start : start + batch].T  # [d, b]
            out.append(-((self.residual @ u) * (self.gradient @ u)).sum(axis=1))
        return np.concatenate(out, axis=1)

    def project_out_each(self, directions: np.ndarray) -> np.ndarray:
        """[items] change when ``directions[i]`` is projected out of item i."""
        xu = np.einsum("ipd,id->ip", self.residual, directions)
        gu = np.einsum("ipd,id->ip", self.gradient, directions)
        return -(xu * gu).sum(axis=1)

    def feature_attribution(self, sae: SAE, batch: int = 1024) -> np.ndarray:
        """[items, d_sae] A_ij: change of item i when feature j alone is clamped to 0 is -A_ij."""
        n, seq, d = self.residual.shape
        rows = np.flatnonzero(self.edited.ravel())
        x = torch.from_numpy(self.residual.reshape(-1, d)[rows])
        g = torch.from_numpy(self.gradient.reshape(-1, d)[rows])
        item = torch.from_numpy(rows // seq)
        decoder = sae.decoder_directions.detach().float().cpu()  # [d_sae, d]
        out = torch.zeros(n, decoder.shape[0])
        with torch.inference_mode():
            for start in range(0, rows.size, batch):
                part = slice(start, start + batch)
                acts = sae.encode(x[part].to(sae.decoder_directions)).float().cpu()
                out.index_add_(0, item[part], acts * (g[part] @ decoder.T))
        return out.numpy().astype(np.float64)


def sensitivity(
    loaded: LoadedModel,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    include_first: bool = False,
    progress: bool = True,
) -> Sensitivity:
    """Residuals and mean-log-prob gradients at layer L of ``texts`` (one forward and
    backward pass per batch; items do not interact, so the gradient of the batch's summed
    mean log-probs is each item's own gradient)."""
    ids = [torch.tensor(x) for x in loaded.tokenizer(list(texts))["input_ids"]]
    if min(len(x) for x in ids) < 2:
        raise CogsaeError("every text needs at least 2 tokens to score", field="texts")
    seq, d = max(len(x) for x in ids), loaded.d_model
    residual = np.zeros((len(ids), seq, d), dtype=np.float32)
    gradient = np.zeros_like(residual)
    edited = np.zeros((len(ids), seq), dtype=bool)
    captured: list[torch.Tensor] = []

    def leaf(hidden: torch.Tensor) -> torch.Tensor:
        """Replace the block-L output by a leaf tensor, to take the gradient there."""
        captured[:] = [hidden.detach().requires_grad_(True)]
        return captured[0]

    batches = length_sorted_batches(ids, batch_size, loaded.tokenizer.pad_token_id)
    for members, input_ids, mask in tqdm(batches, desc="causal gradients", disable=not progress):
        input_ids, mask = input_ids.to(loaded.device), mask.to(loaded.device)
        with torch.enable_grad(), residual_hook(loaded, leaf):
            logits = loaded.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            token_logp = logp.gather(-1, input_ids[:, 1:, None])[..., 0]
            real = mask[:, 1:].float()
            mean = (token_logp * real).sum(1) / real.sum(1)
            (grad,) = torch.autograd.grad(mean.sum(), captured[0])
        width = input_ids.shape[1]
        keep = mask.bool().clone()
        if not include_first:
            keep[:, 0] = False
        residual[members, :width] = (captured[0].detach().float() * mask[..., None]).cpu().numpy()
        gradient[members, :width] = (grad.float() * keep[..., None]).cpu().numpy()
        edited[members, :width] = keep.cpu().numpy()
    return Sensitivity(residual, gradient, edited)


@dataclass
class Resamples:
    """Bootstrap resamples of a contrast's items as count weights, shared by every effect.

    Attributes:
        labels: [items] 1 target / 0 reference.
        target: [B, items] how often each target item is drawn in each resample.
        reference: [B, items] the same for reference items.
    """

    labels: np.ndarray
    target: np.ndarray
    reference: np.ndarray

    @classmethod
    def draw(
        cls,
        labels: np.ndarray,
        groups: np.ndarray | None,
        rng: np.random.Generator,
        n_boot: int,
    ) -> Resamples:
        """``n_boot`` resamples (`bootstrap_indices`: by condition, groups whole)."""
        n = labels.size
        counts = np.stack(
            [
                np.bincount(bootstrap_indices(labels, rng, groups), minlength=n)
                for _ in range(n_boot)
            ]
        ).astype(np.float64)
        return cls(labels, counts * (labels == 1), counts * (labels == 0))

    def effect(self, delta: np.ndarray) -> np.ndarray:
        """[m] difference of differences of per-item changes ``delta`` [items, m]."""
        return delta[self.labels == 1].mean(axis=0) - delta[self.labels == 0].mean(axis=0)

    def boot(self, delta: np.ndarray) -> np.ndarray:
        """[B, m] the effect in every resample."""
        t = self.target @ delta / self.target.sum(axis=1, keepdims=True)
        r = self.reference @ delta / self.reference.sum(axis=1, keepdims=True)
        return t - r


@dataclass(frozen=True)
class CausalTest:
    """One intervention of one readout against its random null.

    Attributes:
        effect: difference of differences (nats/token).
        ci_low, ci_high: percentile bootstrap interval of ``effect``.
        p_random: (1 + #{|t_null| >= |t|}) / (1 + R), t = effect / its bootstrap SE.
        null_low, null_high: 2.5% and 97.5% quantiles of the null's effects.
    """

    effect: float
    ci_low: float
    ci_high: float
    p_random: float
    null_low: float
    null_high: float


def studentized(effect: np.ndarray, boot: np.ndarray) -> np.ndarray:
    """[m] effect over its bootstrap standard error (0 where both are 0)."""
    se = boot.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, effect / se, np.where(effect == 0, 0.0, np.inf))


def random_null_test(
    delta: np.ndarray, null: np.ndarray, resamples: Resamples, level: float = 0.95
) -> CausalTest:
    """Test per-item changes ``delta`` [items] of a readout against ``null`` [items, R].

    Readout and null interventions are ranked by their studentized effects, so that an
    intervention that moves every item a lot (and so has a wide effect distribution
    under any labelling) is not mistaken for one that moves the concept.
    """
    both = np.column_stack([delta, null])
    effect, boot = resamples.effect(both), resamples.boot(both)
    t = np.abs(studentized(effect, boot))
    p = (1 + int(np.sum(t[1:] >= t[0] - 1e-12))) / (1 + null.shape[1])
    low, high = percentile_ci(boot[:, 0], level)
    null_low, null_high = np.quantile(effect[1:], [(1 - level) / 2, (1 + level) / 2])
    return CausalTest(
        float(effect[0]), float(low), float(high), p, float(null_low), float(null_high)
    )


def paired_difference(
    delta_a: np.ndarray, delta_b: np.ndarray, resamples: Resamples, level: float = 0.95
) -> dict[str, float]:
    """Effect of A minus effect of B on the same items: diff, percentile CI over the
    shared resamples, and a two-sided normal p from the bootstrap SE of the difference."""
    diff = delta_a - delta_b
    effect = float(resamples.effect(diff[:, None])[0])
    boot = resamples.boot(diff[:, None])[:, 0]
    low, high = percentile_ci(boot, level)
    se = float(boot.std(ddof=1))
    p = float(2 * stats.norm.sf(abs(effect) / se)) if se > 0 else float(effect == 0)
    return {"diff": effect, "ci_low": float(low), "ci_high": float(high), "p": p}


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows of ``vectors`` [m, d] scaled to unit norm (zero rows stay 0)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def random_unit_sets(
    active: np.ndarray, exclude: np.ndarray, size: int, n_sets: int, rng: np.random.Generator
) -> np.ndarray:
    """[n_sets, size] random sets of units drawn from ``active`` minus ``exclude``."""
    pool = np.setdiff1d(active, exclude)
    if pool.size < size:
        raise CogsaeError(f"only {pool.size} units outside the readout for a null of size {size}")
    return np.stack([rng.choice(pool, size, replace=False) for _ in range(n_sets)])
