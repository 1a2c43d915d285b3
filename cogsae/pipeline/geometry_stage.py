"""The geometry stage of a run: the set's model RDMs evaluated in every unit space.

Spaces: the window means of all raw units and all SAE features, and the selected units of
each selection readout's final ensemble (primary concept). Every item of the set takes
part (all levels of every factor). The stage returns the ``geometry`` entry of
results.json (`cogsae.analysis.geometry.GeometryResult.to_record`, plus the 2-D MDS
coordinates of the raw and SAE item geometry) and draws the model RDMs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from rsatoolbox.model import ModelFixed
from rsatoolbox.rdm import RDMs

from cogsae import streams
from cogsae.activations import Activations
from cogsae.analysis.geometry import evaluate_models, group_ids, group_permutations
from cogsae.analysis.rdm_models import chosen_models, model_rdms, semantic_embeddings
from cogsae.analysis.rsa import default_metric, unit_rdm
from cogsae.errors import CogsaeError
from cogsae.pipeline.results import ConceptResult, _save
from cogsae.streams import Stream

log = logging.getLogger(__name__)
MDS_SPACES = ("raw", "sae")
"""Spaces whose item geometry is laid out in 2-D (MDS) for the report."""


def data_rdms(spaces: dict[str, Activations], concept: ConceptResult | None) -> dict[str, RDMs]:
    """Space label -> data RDM of the items: "raw", "sae" (all units) and "<space>:<method>"
    (a readout's final selected units; readouts on all units are left out)."""
    means = {space: acts.window_mean() for space, acts in spaces.items()}
    out = {space: unit_rdm(m, space=space) for space, m in means.items()}
    for method in concept.methods if concept is not None else []:
        units = method.model.units
        if method.space not in means or not 0 < units.size < means[method.space].shape[1]:
            continue
        try:
            out[method.label] = unit_rdm(
                means[method.space][:, units], default_metric(method.space)
            )
        except CogsaeError as err:  # e.g. an item with all selected units equal
            log.warning("geometry: %s left out: %s", method.label, err.message)
    return out


def mds_layout(rdm: RDMs, seed: int) -> np.ndarray:
    """[items, 2] metric MDS coordinates of a data RDM (sklearn, precomputed dissimilarities)."""
    from sklearn.manifold import MDS

    matrix = np.sqrt(np.maximum(rdm.get_matrices()[0], 0.0))  # squared distances -> distances
    rng = streams.rng(seed, Stream.GEOMETRY, 1)
    seed_word = int(rng.integers(2**31 - 1))
    mds = MDS(2, metric="precomputed", init="classical_mds", random_state=seed_word, n_init=1)
    return mds.fit_transform(matrix)


def geometry_record(
    run: Any,
    spaces: dict[str, Activations],
    concepts: list[ConceptResult],
    figures: Path | None = None,
) -> dict[str, Any]:
    """The ``geometry`` entry of results.json for a run (`cogsae.pipeline.stages.Run`).

    Model rows {space, model, r, ci_low, ci_high, p}, comparison rows {space, a, b, diff,
    ci_low, ci_high, p, p_corrected}, the settings, models left out and why, and MDS
    coordinates with each item's level of the primary factor. With labels shuffled (a null
    run) the model RDMs' items are permuted (groups whole), so no model should fit.
    """
    stimuli, config = run.stimuli, run.config
    names = chosen_models(stimuli)
    skipped = {}
    embeddings = None
    if "semantic" in names:
        try:
            embeddings = semantic_embeddings(stimuli.texts())
        except CogsaeError as err:
            skipped["semantic"] = err.message
    n_tokens = np.array([len(ids) for ids in run.tokenizer(stimuli.texts())["input_ids"]])
    # models the set names in ``models:`` must be rankable; defaults that are not are skipped
    models = model_rdms(stimuli, n_tokens, embeddings, names, None if stimuli.models else skipped)
    group = group_ids(stimuli.groups(), len(stimuli.items))
    if config.shuffle_labels is not None:
        shuffle = streams.rng(config.shuffle_labels, Stream.SHUFFLE_LABELS, 1)
        perm = group_permutations(group, 1, shuffle)[0]
        models = [ModelFixed(m.name, _matrix(m)[perm][:, perm]) for m in models]
    data = data_rdms(spaces, concepts[0] if concepts else None)
    result = evaluate_models(
        data,
        models,
        groups=stimuli.groups(),
        n_bootstrap=config.n_bootstrap,
        n_permutations=config.n_permutations,
        rng=streams.rng(config.seed, Stream.GEOMETRY),
        progress=run.progress,
    )
    record = result.to_record()
    primary = stimuli.design()[stimuli.primary_factor]
    record["factor"] = stimuli.primary_factor
    record["metrics"] = {space: rdm.dissimilarity_measure for space, rdm in data.items()}
    record["skipped"] = skipped
    record["mds"] = {
        space: {
            "xy": np.round(mds_layout(data[space], config.seed), 5).tolist(),
            "condition": primary.tolist(),
        }
        for space in MDS_SPACES
        if space in data
    }
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
        _save(model_rdm_grid(models, primary), figures / "geometry_models.png")
    return record


def _matrix(model: ModelFixed) -> np.ndarray:
    """[items, items] predicted RDM of a fixed model."""
    return model.predict_rdm().get_matrices()[0]


def model_rdm_grid(models: list[ModelFixed], condition: np.ndarray) -> Figure:
    """Every model RDM as a heatmap, items sorted by ``condition`` [items] (stable)."""
    order = np.argsort(condition, kind="stable")
    fig = Figure(figsize=(2.6 * len(models), 2.9))
    axes = np.atleast_1d(fig.subplots(1, len(models)))
    for ax, model in zip(axes, models, strict=True):
        matrix = _matrix(model)[np.ix_(order, order)]
        ax.imshow(matrix, cmap="viridis", interpolation="nearest")
        ax.set_title(model.name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("model RDMs (items sorted by condition)", fontsize=10)
    return fig
