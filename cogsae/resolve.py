"""Which model, layer and SAE a command or run uses: one priority order for all of them.

Model: the explicit option (``--model``) > the stimulus set's ``model.name`` > the SAE's
recorded model > the default model (smollm2-135m).

Layer: the explicit option (``--layer``) > the set's ``model.layer`` > the SAE's recorded
layer > the model's middle block (`cogsae.model.load_model`).

An SAE that records a layer other than the chosen one is an error, not a silent choice:
its latents would be read off the wrong residual stream. (A recorded model name that
differs only warns, `cogsae.sae.io.check_compatible`: names of one model vary.) For the
default model and SAE every source agrees on smollm2-135m, layer 15, so `cogsae run`
reads what it always did.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cogsae.errors import CogsaeError
from cogsae.flags import ModelOptions, flag
from cogsae.model import DEFAULT_MODEL, LoadedModel, load_model
from cogsae.sae.base import SAE, SAEConfig
from cogsae.sae.io import load_sae, read_sae_config


def requested_layer(layer: int | None, suggested: Mapping[str, Any]) -> int | None:
    """The layer asked for before any SAE is consulted: ``layer``, else the set's."""
    return layer if layer is not None else suggested.get("layer")


def sae_config(sae: str | None, layer: int | None = None) -> SAEConfig | None:
    """The config of SAE ``sae`` ("default", a folder, or a release folder whose subfolder
    for ``layer`` is meant), read without its weights; None for no SAE (None or "none")."""
    return None if sae in (None, "none") else read_sae_config(sae, layer)


def model_name(
    model: str | None, suggested: Mapping[str, Any], sae: SAEConfig | None = None
) -> str:
    """The model to load: ``model``, else ``suggested["name"]`` (a set's ``model:``), else
    the SAE's recorded model, else the default."""
    return model or suggested.get("name") or (sae and sae.model_name) or DEFAULT_MODEL


def layer(
    layer: int | None, suggested: Mapping[str, Any], sae: SAEConfig | None = None
) -> int | None:
    """The layer to read: ``layer``, else ``suggested["layer"]``, else the SAE's; None
    means the model's middle block. A chosen layer the SAE was not trained on is a
    `CogsaeError` naming both."""
    chosen = requested_layer(layer, suggested)
    trained = sae.layer if sae is not None else None
    if chosen is not None and trained is not None and chosen != trained:
        source = "--layer" if layer is not None else "the stimulus set's model.layer"
        raise CogsaeError(
            f"the SAE was trained on layer {trained}, but {source} asks for layer {chosen}; "
            f"use --layer {trained} or an SAE of layer {chosen}",
            field=flag(ModelOptions, "layer"),
        )
    return chosen if chosen is not None else trained


def load(
    options: ModelOptions, sae: str | None, suggested: Mapping[str, Any] | None = None
) -> tuple[LoadedModel, SAE | None]:
    """(model, SAE or None) for ``options``, SAE ``sae`` (None or "none": no SAE) and a
    stimulus set's ``model:`` mapping ``suggested``, in the module's priority order; the
    SAE comes checked against the model and on its device."""
    suggested = suggested or {}
    cfg = sae_config(sae, requested_layer(options.layer, suggested))
    loaded = load_model(
        model_name(options.model, suggested, cfg),
        layer=layer(options.layer, suggested, cfg),
        dtype=options.dtype,
        device=options.device,
        device_map=options.device_map,
    )
    return loaded, None if cfg is None else load_sae(str(sae), loaded)
