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
- sparsify (EleutherAI) folders: ``cfg.json`` (``d_in``, ``k``, ``num_latents`` or
  ``expansion_factor``, ``activation == "topk"``) and ``sae.safetensors`` with
  ``encoder.weight`` [d_sae, d_in], ``encoder.bias`` [d_sae], ``W_dec`` [d_sae, d_in],
  ``b_dec`` [d_in]. sparsify encodes topk(relu((x - b_dec) @ encoder.weight.T +
  encoder.bias)) and decodes f @ W_dec + b_dec, so they load as "topk" with
  ``apply_b_dec_to_input`` and ``W_enc = encoder.weight.T``. ``multi_topk`` and
  ``normalize_decoder`` only change training; "groupmax", transcoders (``transcode``) and
  skip connections (``skip_connection``, ``W_skip``) are refused. The folder name is the
  hookpoint, a module path under the model's base (``LlamaModel``): "layers.L" is the
  output of decoder block L, i.e. cogsae's layer L; a "seedN" folder takes its parent's
  name; hookpoints inside a block ("layers.L.mlp", "layers.L.self_attn", ...) or outside
  the blocks ("embed_tokens", "norm") are refused; any other name (a renamed folder)
  leaves the layer unknown.
- release folders with one SAE folder per hookpoint (sparsify's multi-layer output, SAELens
  releases): `resolve_sae_folder` picks the subfolder whose residual-stream layer (from the
  sparsify folder name or the SAELens hook) is the one asked for, and refuses, listing the
  layers it holds, when none or several match.
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

from cogsae._io import atomic_path, files_fingerprint
from cogsae.errors import CogsaeError
from cogsae.model import LoadedModel
from cogsae.sae.base import ARCHITECTURES, SAE, SAEConfig
from cogsae.version import __version__

DEFAULT_SAE_DIR = Path(__file__).resolve().parent.parent / "default_sae"
"""The shipped SAE: layer 15 of SmolLM2-135M-Instruct (see its README.md)."""
RELEASE_DIR = Path(__file__).resolve().parent.parent / "sae_release"
"""The shipped release folder: SAEs of further layers of SmolLM2-135M-Instruct, those that
met the release targets (see its README.md)."""
SHIPPED_SAES: tuple[str, ...] = (str(RELEASE_DIR), "default")
"""The SAEs (names or folders) cogsae ships; a sweep without --sae uses them at the layers
they serve (`cogsae.pipeline.sweep.sae_by_layer`)."""

SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
SAE_FILES = frozenset(
    {"cfg.json", SAELENS_WEIGHTS, SPARSIFY_WEIGHTS, "training.json", "metrics.json"}
)
"""Files an SAE folder written or read by cogsae may hold (`cogsae train-sae` replaces it)."""
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_RESIDUAL = re.compile(r"blocks\.(\d+)\.hook_resid_(pre|post)|(?:model\.)?layers\.(\d+)")
"""Residual-stream hooks: TransformerLens names (SAELens) and block module paths (sparsify)."""
_NOT_RESIDUAL = re.compile(
    r"(?:model\.)?(?:(?:blocks|layers)\.\d+\..*|hook_.*|ln_final.*|embed_tokens|norm|lm_head)"
)
"""Hooks elsewhere: inside a block (mlp, attention, ...), the embeddings, the final norm."""
_SEED = re.compile(r"seed\d+")
_RELEASE_CFGS = ("*/cfg.json", "*/seed*/cfg.json")
"""Where a release folder holds SAE folders: one per hookpoint, or per hookpoint and seed
(sparsify trained with several ``init_seeds``)."""
_SPARSIFY_FIELDS = frozenset(
    {"d_in", "k", "num_latents", "expansion_factor", "activation", "normalize_decoder"}
    | {"multi_topk", "transcode", "skip_connection", "signed"}
)
"""sparsify cfg.json fields cogsae knows (others are refused when set)."""


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


def load_sae(
    path_or_name: str | Path, model: LoadedModel | None = None, *, layer: int | None = None
) -> SAE:
    """Load an SAE folder (cogsae / SAELens / sparsify), a release folder with one SAE per
    layer, or "default" (the shipped SAE).

    ``layer`` (default: ``model``'s layer) picks the subfolder of a release folder (see
    `resolve_sae_folder`); given explicitly, an SAE recorded on another layer is a
    `CogsaeError`. The SAE comes back in float32, eval mode, on ``model``'s device
    if given. With a ``model``: a d_in different from its d_model is a `CogsaeError`; a
    recorded model name or layer different from the model's is a warning (the SAE may
    still be useful).
    """
    folder = resolve_sae_folder(
        path_or_name, model.layer if layer is None and model is not None else layer
    )
    cfg, state = _read(folder, load_file)
    if layer is not None and cfg.layer is not None and cfg.layer != layer:
        raise CogsaeError(
            f"the SAE reads layer {cfg.layer}, not the layer {layer} asked for",
            path=folder,
            field="layer",
        )
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


def read_sae_config(path_or_name: str | Path, layer: int | None = None) -> SAEConfig:
    """The config (d_sae, layer, model name, ...) of an SAE folder, release folder (``layer``
    picks the subfolder, `resolve_sae_folder`) or "default", without reading its weights:
    `load_sae`'s parser given shape-only (meta) tensors."""
    return _read(resolve_sae_folder(path_or_name, layer), _shapes)[0]


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
    raw = _read_cfg(cfg_path)
    if (folder / SAELENS_WEIGHTS).is_file():
        return _read_saelens(raw, read_state(folder / SAELENS_WEIGHTS), cfg_path)
    if (folder / SPARSIFY_WEIGHTS).is_file():
        return _read_sparsify(raw, read_state(folder / SPARSIFY_WEIGHTS), folder, cfg_path)
    raise CogsaeError(
        f"no {SAELENS_WEIGHTS} (SAELens) or {SPARSIFY_WEIGHTS} (sparsify)",
        path=folder,
        field="sae",
    )


def resolve_sae_folder(path_or_name: str | Path, layer: int | None = None) -> Path:
    """The single SAE folder that ``path_or_name`` means for residual-stream ``layer``.

    An SAE folder (with a cfg.json) is itself; "default" is the shipped SAE; a
    release folder (no cfg.json) gives its one subfolder whose SAE reads ``layer`` (any
    layer if it holds a single SAE). `CogsaeError` (field "layer") lists the layers it
    holds when ``layer`` is missing, absent or held by several subfolders, and names the
    subfolders skipped because they read something other than the residual stream.
    """
    folder = DEFAULT_SAE_DIR if str(path_or_name) == "default" else Path(path_or_name)
    if (folder / "cfg.json").is_file():
        return folder
    found = [f.parent for pattern in _RELEASE_CFGS for f in folder.glob(pattern)]
    subfolders = sorted(found) if folder.is_dir() else []
    if not subfolders:
        raise CogsaeError(
            "not an SAE folder (no cfg.json, nor subfolders with one)", path=folder, field="sae"
        )
    by_layer: dict[int | None, list[str]] = {}
    skipped = []
    for sub in subfolders:
        try:
            by_layer.setdefault(_residual_layer(sub), []).append(str(sub.relative_to(folder)))
        except CogsaeError as err:
            if err.field not in ("hook_name", "hookpoint"):
                raise
            skipped.append(str(sub.relative_to(folder)))
    every = [name for names in by_layer.values() for name in names]
    held = every if layer is None else by_layer.get(layer, [])
    if len(held) == 1:
        return folder / held[0]
    layers = "; ".join(
        f"{'unknown' if key is None else key}: {', '.join(names)}"
        for key, names in sorted(by_layer.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
    )
    others = f"; not on the residual stream: {', '.join(skipped)}" if skipped else ""
    raise CogsaeError(
        f"{'several SAEs' if held else 'no SAE'} for "
        f"{'an unspecified layer' if layer is None else f'layer {layer}'} in this release "
        f"folder; residual-stream layers here: {layers or 'none'}{others}",
        path=folder,
        field="layer",
    )


def sae_files_fingerprint(path_or_name: str | Path, layer: int | None = None) -> str:
    """Content hash of an SAE folder's cfg.json and weights, without loading it (cached
    per file size and mtime, see `cogsae._io.files_fingerprint`); ``layer`` picks the
    folder of a release folder as in `resolve_sae_folder`."""
    folder = resolve_sae_folder(path_or_name, layer)
    files = [folder / name for name in ("cfg.json", SAELENS_WEIGHTS, SPARSIFY_WEIGHTS)]
    return files_fingerprint([f for f in files if f.is_file()])


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
    meta = _saelens_meta(raw)
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
        layer=_saelens_layer(meta, cfg_path),
        context_size=meta.get("context_size"),
    )
    return cfg, state


def _refuse_unsupported(
    raw: dict[str, Any], meta: dict[str, Any], activation: str, architecture: str, cfg_path: Path
) -> None:
    """CogsaeError for a SAELens cfg value whose computation cogsae does not implement."""
    _refuse(
        cfg_path,
        [
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
        ],
    )


def _refuse(where: Path, problems: list[tuple[bool, str, str]]) -> None:
    """CogsaeError "unsupported: <what>" naming the field of the first true problem."""
    for bad, field, what in problems:
        if bad:
            raise CogsaeError(f"unsupported: {what}", path=where, field=field)


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


def _read_cfg(cfg_path: Path) -> dict[str, Any]:
    """Parsed cfg.json; invalid JSON names the file and line."""
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise CogsaeError(f"invalid JSON: {err.msg}", path=cfg_path, line=err.lineno) from err


def _saelens_meta(raw: dict[str, Any]) -> dict[str, Any]:
    """SAELens cfg fields, flat (SAELens < 6) or nested in ``metadata`` / ``meta``."""
    return {**raw, **(raw.get("metadata") or raw.get("meta") or {})}


def _saelens_layer(meta: dict[str, Any], cfg_path: Path) -> int | None:
    """cogsae layer of a SAELens hook_name, else its ``hook_layer``."""
    hook = meta.get("hook_name") or ""
    layer = _hook_layer(hook, cfg_path, "hook_name") if hook else None
    return meta.get("hook_layer") if layer is None else layer


def _sparsify_layer(folder: Path) -> int | None:
    """cogsae layer of a sparsify folder, named after its hookpoint (a "seedN" folder after
    its parent's); None for a name that is not a hookpoint."""
    folder = folder.resolve()
    name = folder.parent.name if _SEED.fullmatch(folder.name) else folder.name
    return _hook_layer(name, folder, "hookpoint")


def _hook_layer(hook: str, where: Path, field: str) -> int | None:
    """cogsae layer L of a residual-stream hook: "blocks.L.hook_resid_post",
    "blocks.{L+1}.hook_resid_pre" or "layers.L" (block L's output); None for a name that
    is no known hook; CogsaeError for a hook elsewhere (inside a block, the embeddings)."""
    match = _RESIDUAL.fullmatch(hook)
    if match and match.group(3) is not None:
        return int(match.group(3))
    if match and (layer := int(match.group(1)) - (match.group(2) == "pre")) >= 0:
        return layer
    if match is None and _NOT_RESIDUAL.fullmatch(hook) is None:
        return None
    raise CogsaeError(
        f"unsupported: hook {hook!r}: cogsae reads the residual stream at a block's output "
        "(blocks.L.hook_resid_post, blocks.L+1.hook_resid_pre, layers.L)",
        path=where,
        field=field,
    )


def _residual_layer(folder: Path) -> int | None:
    """cogsae layer of an SAE folder (None: unknown); CogsaeError off the residual stream."""
    if (folder / SAELENS_WEIGHTS).is_file():
        return _saelens_layer(_saelens_meta(_read_cfg(folder / "cfg.json")), folder / "cfg.json")
    return _sparsify_layer(folder)


def _read_sparsify(
    raw: dict[str, Any], state: dict[str, torch.Tensor], folder: Path, cfg_path: Path
) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    unknown = sorted(key for key, value in raw.items() if key not in _SPARSIFY_FIELDS and value)
    _refuse(
        cfg_path,
        [
            (
                raw.get("activation", "topk") != "topk",
                "activation",
                f"activation {raw.get('activation')!r} (cogsae implements TopK)",
            ),
            (bool(raw.get("transcode")), "transcode", "a transcoder (transcode: true)"),
            (
                bool(raw.get("skip_connection")) or "W_skip" in state,
                "skip_connection",
                "a skip connection (skip_connection, W_skip)",
            ),
            (bool(raw.get("signed")), "signed", "signed latents (signed: true)"),
            (bool(unknown), ", ".join(unknown), f"unknown sparsify field(s) {unknown}"),
        ],
    )
    missing = {"encoder.weight", "encoder.bias", "W_dec", "b_dec"} - set(state)
    if missing:
        raise CogsaeError(f"missing tensors {sorted(missing)}", path=folder / SPARSIFY_WEIGHTS)
    d_in = raw.get("d_in")
    d_sae = raw.get("num_latents") or (
        d_in * raw["expansion_factor"] if d_in and raw.get("expansion_factor") else None
    )
    cfg = _config(
        cfg_path,
        architecture="topk",
        d_in=d_in,
        d_sae=d_sae,
        k=raw.get("k"),
        apply_b_dec_to_input=True,
        layer=_sparsify_layer(folder),
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
