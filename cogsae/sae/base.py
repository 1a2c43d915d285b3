"""Sparse autoencoder architectures behind one interface, in the model's activation space.

All architectures share the SAELens parameterisation (names and shapes as saved on disk):

    x_s  = x * norm_scale - (b_dec if apply_b_dec_to_input else 0)      # [..., d_in]
    pre  = x_s @ W_enc + b_enc                                          # [..., d_sae]
    f    = act(pre)                                                     # [..., d_sae]
    x'   = (f @ W_dec + b_dec) / norm_scale                             # [..., d_in]

with ``act`` one of
- "standard": ReLU (trained with an L1 penalty, Anthropic's April 2024 recipe);
- "topk": keep the k largest pre-activations, then ReLU (OpenAI / EleutherAI TopK);
- "jumprelu": ReLU(pre) where pre > threshold, else 0 (Gemma Scope; loaded, not trained).

``norm_scale`` is the dataset-level input normalisation of the April update (training
inputs scaled so that their mean L2 norm is sqrt(d_in)); it is estimated from data at
training time, stored in cfg.json and applied inside `encode` / `decode`, so callers
always pass and receive model-space activations. Hence the model-space decoder is
``decoder_directions = W_dec / norm_scale`` and ``decoder_bias = b_dec / norm_scale``,
and ``decode(f) == f @ decoder_directions + decoder_bias`` exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import scipy.sparse
import torch
from torch import nn

from cogsae._io import state_fingerprint

Architecture = Literal["standard", "topk", "jumprelu"]
ARCHITECTURES: tuple[str, ...] = ("standard", "topk", "jumprelu")


@dataclass
class SAEConfig:
    """What an SAE is and where it reads the model (saved as SAELens-style cfg.json).

    Attributes:
        architecture: "standard" (ReLU), "topk" or "jumprelu" (see module doc).
        d_in: input width, the model's d_model.
        d_sae: number of latents (features).
        k: active latents per token for "topk"; None otherwise.
        apply_b_dec_to_input: subtract b_dec from the (scaled) input before encoding.
            cogsae trains without it (April update); SAELens and sparsify SAEs use it.
        norm_scale: factor multiplying model activations before encoding (and dividing
            the reconstruction); 1.0 means no normalisation.
        model_name: name of the model the SAE was trained on (cogsae's recorded name,
            e.g. "smollm2-135m"), or None if unknown.
        layer: decoder block L whose output the SAE reads (cogsae's layer convention:
            SAELens "blocks.{L}.hook_resid_post"), or None if unknown.
        context_size: token context length used in training, if known.
    """

    architecture: Architecture
    d_in: int
    d_sae: int
    k: int | None = None
    apply_b_dec_to_input: bool = False
    norm_scale: float = 1.0
    model_name: str | None = None
    layer: int | None = None
    context_size: int | None = None

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown SAE architecture {self.architecture!r}")
        if self.architecture == "topk" and not (self.k and 0 < self.k <= self.d_sae):
            raise ValueError(f"topk SAE needs 0 < k <= d_sae, got k={self.k}")

    @property
    def hook_name(self) -> str | None:
        """SAELens / TransformerLens name of the hook point, "blocks.{L}.hook_resid_post"."""
        return None if self.layer is None else f"blocks.{self.layer}.hook_resid_post"


class SAE(nn.Module):
    """A sparse autoencoder on layer-L residual activations (any of `ARCHITECTURES`).

    Parameters (float32 in memory): ``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae],
    ``W_dec`` [d_sae, d_in], ``b_dec`` [d_in], and ``threshold`` [d_sae] for "jumprelu".
    """

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_enc = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_in))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        if cfg.architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(cfg.d_sae))

    def scale_input(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space ``x`` [..., d_in] -> the SAE's input space (scaled, b_dec removed)."""
        x = x.to(self.W_enc.dtype) * self.cfg.norm_scale
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations [..., d_sae] of model-space ``x`` [..., d_in]."""
        return self.scale_input(x) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations [..., d_sae] (non-negative, sparse) of ``x`` [..., d_in]."""
        pre = self.pre_activations(x)
        if self.cfg.architecture == "topk":
            top = pre.topk(self.cfg.k, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())
        if self.cfg.architecture == "jumprelu":
            return pre.relu() * (pre > self.threshold)
        return pre.relu()

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Model-space reconstruction [..., d_in] of features ``f`` [..., d_sae]."""
        return (f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec) / self.cfg.norm_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction [..., d_in] of model-space ``x`` [..., d_in]."""
        return self.decode(self.encode(x))

    @property
    def decoder_directions(self) -> torch.Tensor:
        """[d_sae, d_in] model-space direction of each latent: decode(f) = f @ this + bias.

        Interventions use it: setting latent i to c moves x by (c - f_i(x)) * row i.
        """
        return self.W_dec / self.cfg.norm_scale

    @property
    def decoder_bias(self) -> torch.Tensor:
        """[d_in] model-space decoder bias (the reconstruction of all-zero features)."""
        return self.b_dec / self.cfg.norm_scale

    def fingerprint(self) -> str:
        """Content hash of the config, parameters and buffers (a cache key)."""
        return state_fingerprint(self.state_dict(), repr(self.cfg))


@torch.inference_mode()
def encode_batched(
    sae: SAE,
    x: torch.Tensor,
    batch_size: int,
    *,
    units: Sequence[int] | torch.Tensor | None = None,
    sparse: bool = False,
) -> torch.Tensor | scipy.sparse.csr_array:
    """Float32 feature activations [n, d_sae] of model-space ``x`` [n, d_in], on the CPU.

    ``x`` is encoded ``batch_size`` rows at a time on the SAE's device and in its dtype,
    so memory stays bounded; ``units`` keeps only those features' columns [n, len(units)],
    ``sparse`` returns a scipy CSR array (each batch is sparsified before the next runs).
    """
    param = sae.W_enc
    width = sae.cfg.d_sae if units is None else len(units)
    parts = []
    for block in x.split(batch_size):
        codes = sae.encode(block.to(param.device, param.dtype))
        codes = (codes if units is None else codes[:, units]).float().cpu()
        parts.append(scipy.sparse.csr_array(codes.numpy()) if sparse else codes)
    if sparse:
        return scipy.sparse.csr_array(scipy.sparse.vstack(parts) if parts else (0, width))
    return torch.cat(parts) if parts else torch.zeros(0, width)
