"""A release folder: one SAE per layer, trained from one activation pass.

``cogsae train-sae --layers 6,12,15,20,25 --out DIR`` runs the corpus once through blocks
0..max(layers) (`cogsae.sae.data.cache_activations`), then trains each layer's SAE
on its activations (`cogsae.sae.train.train_sae_on_cache`) into
``DIR/blocks.L.hook_resid_post``, the layout `cogsae.sae.io.resolve_sae_folder` reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from cogsae._io import load_cache
from cogsae.engine import Engine
from cogsae.model import LoadedModel
from cogsae.sae.data import cache_activations
from cogsae.sae.train import TrainConfig, train_sae_on_cache


def train_release(
    loaded: LoadedModel,
    corpus: Sequence[str | Path],
    out: str | Path,
    config: TrainConfig,
    layers: Sequence[int],
    *,
    context_length: int = 128,
    save_dtype: str = "float32",
    progress: bool = True,
    engine: Engine = "local",
) -> dict[int, Path]:
    """``cogsae train-sae --layers``: a release folder ``out`` with one SAE per layer.

    One pass through blocks 0..max(layers) caches every layer's activations
    (`cache_activations`); then each layer's SAE is trained with ``config``
    (`train_sae_on_cache`) into ``out/blocks.L.hook_resid_post`` (`release_folder`). A
    layer whose folder already holds an SAE trained with ``config`` on the same
    activations is kept, so a rerun after an interruption resumes at the layer it
    stopped in (whose checkpoint resumes the steps). Returns layer -> its folder.
    """
    caches = cache_activations(
        loaded,
        corpus,
        config.n_tokens,
        layers=layers,
        context_length=context_length,
        progress=progress,
        engine=engine,
    )
    folders = {}
    for layer, cache in caches.items():
        folder = release_folder(out, layer)
        if not _trained(folder, config, cache.folder.name):
            train_sae_on_cache(
                cache, loaded, layer, corpus, folder, config, context_length, save_dtype, progress
            )
        folders[layer] = folder
    return folders


def release_folder(release: str | Path, layer: int) -> Path:
    """The folder of layer ``layer``'s SAE in a release folder (its SAELens hook name)."""
    return Path(release) / f"blocks.{layer}.hook_resid_post"


def _trained(folder: Path, config: TrainConfig, activations: str) -> bool:
    """Whether ``folder`` holds an SAE trained with ``config`` on the activation cache
    named ``activations`` (its training.json, written last, says so)."""
    record = load_cache(folder / "training.json", lambda p: json.loads(p.read_text()))
    return (
        isinstance(record, dict)
        and record.get("config") == asdict(config)
        and record.get("activation_cache") == activations
    )
