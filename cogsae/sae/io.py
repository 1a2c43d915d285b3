"""Save and load SAEs: SAELens folders (cogsae's own format) and EleutherAI sparsify folders.

cogsae writes the SAELens on-disk layout: a folder with ``cfg.json`` and
``sae_weights.safetensors`` holding ``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae],
``W_dec`` [d_sae, d_in], ``b_dec`` [d_in] (and ``threshold`` [d_sae] for jumprelu).
cfg.json carries the SAELens fields (architecture, d_in, d_sae, k, dtype, model_name,
hook_name "blocks.{L}.hook_resid_post", hook_layer, apply_b_dec_to_input,
normalize_activations "none", context_size, plus the nested ``metadata`` of SAELens >= 6).
The input scale s of the April-update normalisation is folded into the weights on saving
(``W_enc * s``, ``W_dec / s``, ``b_dec / s``; ``b_enc`` and ``threshold`` unchanged), so
SAELens (which ignores ``norm_scaling_factor`` in a folder) computes the same encodings.

`load_sae` reads:
- SAELens folders: "standard", "topk" (SAELens >= 6 ``k``, or older
  ``activation_fn_str == "topk"`` with ``activation_fn_kwargs.k``) and "jumprelu"
  (``threshold`` or ``log_threshold``), flat or nested (``metadata`` / ``meta``) cfg;
  "blocks.{L}.hook_resid_pre" is read as layer L-1 (the same tensor). TopK folders with
  ``rescale_acts_by_decoder_norm`` (what SAELens's trainer writes) are read with the
  decoder row norms folded in, as SAELens does: ``W_enc * n``, ``b_enc * n``, ``W_dec / n``.
  Older cogsae folders (``normalize_activations: expected_average_only_in`` with
  ``norm_scaling_factor``) keep their scale. Any other value of a field that changes the
  computation (per-token normalisation, head hooks, non-residual hooks, fine-tuning
  scale, other activations) is refused rather than read wrongly.
- sparsify folders: ``cfg.json`` (``d_in``, ``k``, ``num_latents`` or
  ``expansion_factor``, ``activation == "topk"``) and ``sae.safetensors`` with
  ``encoder.weight`` [d_sae, d_in], ``encoder.bias``, ``W_dec`` [d_sae, d_in], ``b_dec``;
  encoding is topk(relu((x - b_dec) @ encoder.weight.T + encoder.bias)), so they load as
  "topk" with ``apply_b_dec_to_input``. The layer comes from a folder name "layers.L"
  (sparsify hooks the output of ``model.layers[L]``, cogsae's layer L).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cogsae import __version__
from cogsae._io import atomic_path, files_fingerprint
from cogsae.errors import CogsaeError
from cogsae.model import LoadedModel
from cogsae.sae.base import ARCHITECTURES, SAE, SAEConfig

DEFAULT_SAE_DIR = Path(__file__).resolve().parent.parent / "default_sae"
"""The shipped SAE: layer 15 of SmolLM2-135M-Instruct (see its README.md)."""

SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
SAE_FILES = frozenset(
    {"cfg.json", SAELENS_WEIGHTS, SPARSIFY_WEIGHTS, "training.json", "metrics.json"}
)
"""Files an SAE folder written or read by cogsae may hold (`cogsae train-sae` replaces it)."""
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_HOOK = re.compile(r"blocks\.(\d+)\.hook_resid_(pre|post)$")


def save_sae(sae: SAE, folder: str | Path, dtype: str = "float32") -> Path:
    """Write ``sae`` as a SAELens folder (cfg.json + sae_weights.safetensors), atomically.

    The input scale is folded into the weights (module doc), so the folder says
    ``normalize_activations: none`` and loads back with ``norm_scale`` 1.0 and the same
    encodings (up to float rounding).
    """
    if dtype not in _DTYPES:
        raise CogsaeError(f"unknown dtype {dtype!r}; choose from {sorted(_DTYPES)}", field="dtype")
    cfg = sae.cfg
    meta = {
        "model_name": cfg.model_name,
        "hook_name": cfg.hook_name,
        "hook_layer": cfg.layer,
        "context_size": cfg.context_size,
        "prepend_bos": False,
    }
    record: dict[str, Any] = {
        "architecture": cfg.architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": dtype,
        "device": "cpu",
        **meta,
        "hook_head_index": None,
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "activation_fn_str": "topk" if cfg.architecture == "topk" else "relu",
        "metadata": meta,
        "cogsae_version": __version__,
    }
    if cfg.architecture == "topk":
        record["k"] = cfg.k
        record["activation_fn_kwargs"] = {"k": cfg.k}
        record["rescale_acts_by_decoder_norm"] = False
    state = {name: p.detach().to("cpu", torch.float32) for name, p in sae.named_parameters()}
    tensors = {
        name: t.to(_DTYPES[dtype]).contiguous()
        for name, t in _fold_input_scale(state, cfg.norm_scale).items()
    }
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / SAELENS_WEIGHTS))
        (tmp / "cfg.json").write_text(json.dumps(record, indent=2) + "\n")
    return folder


def load_sae(path_or_name: str | Path, model: LoadedModel | None = None) -> SAE:
    """Load an SAE folder (cogsae / SAELens / sparsify) or "default" (the shipped SAE).

    The SAE comes back in float32, eval mode, on ``model``'s device if given. With a
    ``model``: a d_in different from its d_model is a `CogsaeError`; a recorded model
    name or layer different from the model's is a warning (the SAE may still be useful).
    """
    folder = DEFAULT_SAE_DIR if str(path_or_name) == "default" else Path(path_or_name)
    cfg, state = _read(folder, load_file)
    sae = SAE(cfg)
    expected = {name: tuple(p.shape) for name, p in sae.named_parameters()}
    got = {name: tuple(t.shape) for name, t in state.items()}
    if got != expected:
        raise CogsaeError(
            f"weights do not match cfg.json: expected {expected}, found {got}", path=folder
        )
    sae.load_state_dict({name: t.float() for name, t in state.items()})
    if model is not None:
        check_compatible(sae, model, folder)
        sae.to(model.device)
    return sae.eval()


def read_sae_config(path_or_name: str | Path) -> SAEConfig:
    """The config (d_sae, layer, model name, ...) of an SAE folder or "default", without
    reading its weights: `load_sae`'s parser given shape-only (meta) tensors."""
    folder = DEFAULT_SAE_DIR if str(path_or_name) == "default" else Path(path_or_name)
    return _read(folder, _shapes)[0]


def _shapes(path: Path) -> dict[str, torch.Tensor]:
    """Meta tensors of the shapes stored in a safetensors file (nothing is read)."""
    with safe_open(str(path), framework="pt") as fh:
        return {
            name: torch.empty(fh.get_slice(name).get_shape(), device="meta")
            for name in fh.keys()  # noqa: SIM118 - not a dict
        }


def _read(
    folder: Path, read_state: Callable[[Path], dict[str, torch.Tensor]]
) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """(config, weights) of an SAE folder; ``read_state`` reads a safetensors file."""
    cfg_path = folder / "cfg.json"
    if not cfg_path.is_file():
        raise CogsaeError("not an SAE folder (no cfg.json)", path=folder, field="sae")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise CogsaeError(f"invalid JSON: {err.msg}", path=cfg_path, line=err.lineno) from err
    if (folder / SAELENS_WEIGHTS).is_file():
        return _read_saelens(raw, read_state(folder / SAELENS_WEIGHTS), cfg_path)
    if (folder / SPARSIFY_WEIGHTS).is_file():
        return _read_sparsify(raw, read_state(folder / SPARSIFY_WEIGHTS), folder, cfg_path)
    raise CogsaeError(
        f"no {SAELENS_WEIGHTS} (SAELens) or {SPARSIFY_WEIGHTS} (sparsify)",
        path=folder,
        field="sae",
    )


def sae_files_fingerprint(path_or_name: str | Path) -> str:
    """Content hash of an SAE folder's cfg.json and weights, without loading it (cached
    per file size and mtime, see `cogsae._io.files_fingerprint`)."""
    folder = DEFAULT_SAE_DIR if str(path_or_name) == "default" else Path(path_or_name)
    files = [folder / name for name in ("cfg.json", SAELENS_WEIGHTS, SPARSIFY_WEIGHTS)]
    present = [f for f in files if f.is_file()]
    if not present:
        raise CogsaeError("not an SAE folder (no cfg.json)", path=folder, field="sae")
    return files_fingerprint(present)


def check_compatible(sae: SAE, model: LoadedModel, where: str | Path = "SAE") -> None:
    """Error if the SAE's d_in is not the model's d_model; warn on model or layer mismatch."""
    cfg = sae.cfg
    if cfg.d_in != model.d_model:
        raise CogsaeError(
            f"SAE d_in {cfg.d_in} does not match model {model.name!r} d_model {model.d_model}",
            path=where,
            field="sae",
        )
    if cfg.model_name is not None and _model_key(cfg.model_name) != _model_key(model.name):
        warnings.warn(
            f"{where}: SAE was trained on {cfg.model_name!r}, but the model is {model.name!r}",
            stacklevel=3,
        )
    if cfg.layer is not None and cfg.layer != model.layer:
        warnings.warn(
            f"{where}: SAE was trained on layer {cfg.layer}, but the model reads layer "
            f"{model.layer}",
            stacklevel=3,
        )


def _model_key(name: str) -> str:
    """Compare model names loosely: no hub owner, lower case, no "-instruct" suffix."""
    return name.rsplit("/", 1)[-1].lower().removesuffix("-instruct")


def _read_saelens(
    raw: dict[str, Any], state: dict[str, torch.Tensor], cfg_path: Path
) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    meta = {**raw, **(raw.get("metadata") or raw.get("meta") or {})}
    architecture = raw.get("architecture", "standard")
    k = raw.get("k")
    activation = raw.get("activation_fn_str") or "relu"
    if activation == "topk":
        architecture = "topk"
        k = k or (raw.get("activation_fn_kwargs") or {}).get("k")
    if architecture not in ARCHITECTURES:
        raise CogsaeError(
            f"unsupported SAE architecture {architecture!r} (cogsae reads {ARCHITECTURES})",
            path=cfg_path,
            field="architecture",
        )
    _refuse_unsupported(raw, meta, activation, architecture, cfg_path)
    normalize = raw.get("normalize_activations") or "none"
    factor = raw.get("norm_scaling_factor")
    if normalize == "expected_average_only_in" and not (
        isinstance(factor, int | float) and factor > 0
    ):
        raise CogsaeError(
            "unsupported: normalize_activations expected_average_only_in without a positive "
            "norm_scaling_factor (fold the factor into the weights)",
            path=cfg_path,
            field="norm_scaling_factor",
        )
    if "log_threshold" in state:
        state["threshold"] = state.pop("log_threshold").exp()
    if raw.get("rescale_acts_by_decoder_norm") and {"W_enc", "b_enc", "W_dec"} <= set(state):
        state = _fold_decoder_norms(state)
    cfg = _config(
        cfg_path,
        architecture=architecture,
        d_in=raw.get("d_in"),
        d_sae=raw.get("d_sae"),
        k=int(k) if architecture == "topk" and k is not None else None,
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
        norm_scale=float(factor) if normalize == "expected_average_only_in" else 1.0,
        model_name=meta.get("model_name"),
        layer=_layer(meta.get("hook_name"), meta.get("hook_layer")),
        context_size=meta.get("context_size"),
    )
    return cfg, state


def _refuse_unsupported(
    raw: dict[str, Any], meta: dict[str, Any], activation: str, architecture: str, cfg_path: Path
) -> None:
    """CogsaeError for a SAELens cfg value whose computation cogsae does not implement."""
    hook = meta.get("hook_name") or ""
    problems = [
        (
            activation not in ("relu", "topk"),
            "activation_fn_str",
            f"activation {activation!r} (cogsae implements relu and topk)",
        ),
        (
            (raw.get("normalize_activations") or "none")
            not in ("none", "expected_average_only_in"),
            "normalize_activations",
            f"normalize_activations {raw.get('normalize_activations')!r} (cogsae implements "
            "none and expected_average_only_in with a norm_scaling_factor)",
        ),
        (
            bool(raw.get("rescale_acts_by_decoder_norm")) and architecture != "topk",
            "rescale_acts_by_decoder_norm",
            f"rescale_acts_by_decoder_norm on a {architecture} SAE (defined for topk)",
        ),
        (
            meta.get("hook_head_index") is not None,
            "hook_head_index",
            "an SAE on one attention head (hook_head_index)",
        ),
        (
            (raw.get("reshape_activations") or "none") != "none",
            "reshape_activations",
            f"reshape_activations {raw.get('reshape_activations')!r}",
        ),
        (
            bool(raw.get("finetuning_scaling_factor")),
            "finetuning_scaling_factor",
            "a fine-tuning scaling factor",
        ),
        (
            hook.startswith("blocks.") and _HOOK.match(hook) is None,
            "hook_name",
            f"hook {hook!r}: cogsae reads the residual stream (hook_resid_post / _pre)",
        ),
    ]
    for bad, field, what in problems:
        if bad:
            raise CogsaeError(f"unsupported: {what}", path=cfg_path, field=field)


def _fold_input_scale(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """Weights of the same SAE for unscaled inputs: W_enc [d_in, d_sae] * s, W_dec
    [d_sae, d_in] / s, b_dec [d_in] / s; b_enc and threshold unchanged (see `SAE`)."""
    return {
        **state,
        "W_enc": state["W_enc"] * scale,
        "W_dec": state["W_dec"] / scale,
        "b_dec": state["b_dec"] / scale,
    }


def _fold_decoder_norms(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SAELens ``rescale_acts_by_decoder_norm``: latent i's pre-activation is multiplied by
    n_i = ||W_dec[i]|| before the top-k and divided out in decoding; folding n [d_sae]
    into W_enc, b_enc and W_dec gives the same encodings with unit decoder rows."""
    norms = state["W_dec"].float().norm(dim=-1).clamp(min=1e-8)
    return {
        **state,
        "W_enc": state["W_enc"].float() * norms,
        "b_enc": state["b_enc"].float() * norms,
        "W_dec": state["W_dec"].float() / norms[:, None],
    }


def _layer(hook_name: str | None, hook_layer: int | None) -> int | None:
    """cogsae layer L of a SAELens hook: resid_post of block L, or resid_pre of L+1."""
    match = _HOOK.match(hook_name or "")
    if match is None:
        return hook_layer
    block = int(match.group(1))
    return block if match.group(2) == "post" else block - 1


def _read_sparsify(
    raw: dict[str, Any], state: dict[str, torch.Tensor], folder: Path, cfg_path: Path
) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    if (
        raw.get("activation", "topk") != "topk"
        or raw.get("transcode")
        or raw.get("skip_connection")
        or "W_skip" in state
    ):
        raise CogsaeError(
            "only sparsify TopK autoencoders are supported (not groupmax, transcoders or "
            "skip connections)",
            path=cfg_path,
            field="activation",
        )
    missing = {"encoder.weight", "encoder.bias", "W_dec", "b_dec"} - set(state)
    if missing:
        raise CogsaeError(f"missing tensors {sorted(missing)}", path=folder / SPARSIFY_WEIGHTS)
    d_in = raw.get("d_in")
    d_sae = raw.get("num_latents") or (
        d_in * raw["expansion_factor"] if d_in and raw.get("expansion_factor") else None
    )
    match = re.fullmatch(r"(?:model\.)?layers\.(\d+)", folder.resolve().name)
    cfg = _config(
        cfg_path,
        architecture="topk",
        d_in=d_in,
        d_sae=d_sae,
        k=raw.get("k"),
        apply_b_dec_to_input=True,
        layer=int(match.group(1)) if match else None,
    )
    weights = {
        "W_enc": state["encoder.weight"].T.contiguous(),
        "b_enc": state["encoder.bias"],
        "W_dec": state["W_dec"],
        "b_dec": state["b_dec"],
    }
    return cfg, weights


def _config(cfg_path: Path, **fields: Any) -> SAEConfig:
    """SAEConfig from parsed fields; bad or missing values name cfg.json."""
    for name in ("d_in", "d_sae"):
        if not isinstance(fields[name], int) or fields[name] <= 0:
            raise CogsaeError(f"{name} must be a positive integer", path=cfg_path, field=name)
    try:
        return SAEConfig(**fields)
    except ValueError as err:
        raise CogsaeError(str(err), path=cfg_path, field="k") from err
