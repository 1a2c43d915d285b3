"""Model RDMs: the hypotheses of a stimulus set as rsatoolbox ``ModelFixed`` objects.

Each model predicts a dissimilarity for every pair of items i, j (docs/methods.md, "Model
RDMs and their inference"):

- ``category:<factor>``: 0 when the two items share the factor's level, 1 otherwise;
- ``graded:<factor>``: |rank_i - rank_j| of the levels of an ordered factor (``ordered:``);
- ``interaction``: 2 x 2 designs, 0 when the items' cells lie on the same diagonal of the
  design (same level on both factors or different on both), 1 otherwise: the RDM of the
  interaction contrast (+1 on one diagonal, -1 on the other);
- ``feature:<name>``: |a_i - a_j| of a numeric per-item field (``features:``);
  ``feature:all``: the Euclidean distance over all features, each z-scored first so that no
  feature's scale dominates;
- ``semantic``: cosine distance of sentence embeddings (all-MiniLM-L6-v2, the offline
  embedding judge's model): what sentence meaning alone predicts;
- ``length``: |n_i - n_j| of token counts, a nuisance model.

The names a set allows are `cogsae.hypotheses.model_rdm_names`; ``models:`` picks some.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rsatoolbox.model import ModelFixed

from cogsae.errors import CogsaeError
from cogsae.hypotheses import model_rdm_names
from cogsae.stimuli import StimulusSet


def _absolute_difference(values: np.ndarray) -> np.ndarray:
    """[items, items] |v_i - v_j| of [items] values."""
    values = np.asarray(values, dtype=np.float64)
    return np.abs(values[:, None] - values[None, :])


def semantic_embeddings(texts: list[str]) -> np.ndarray:
    """[items, 384] unit-norm sentence embeddings of ``texts`` (the embedding judge's
    `cogsae.judges.local.EmbeddingJudge.embed`)."""
    from cogsae.judges.local import EmbeddingJudge

    return EmbeddingJudge().embed(texts).numpy().astype(np.float64)


def model_matrix(
    name: str,
    stimuli: StimulusSet,
    n_tokens: np.ndarray,
    embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """[items, items] predicted dissimilarities of model ``name`` for the set's items.

    Args:
        name: a model name of `cogsae.hypotheses.model_rdm_names`.
        stimuli: the set (its items, factors, ordered factors and features).
        n_tokens: [items] token count of each item (the ``length`` model).
        embeddings: [items, dim] unit-norm sentence embeddings (the ``semantic`` model).
    """
    kind, _, arg = name.partition(":")
    design = stimuli.design()
    if kind == "category":
        return (design[arg][:, None] != design[arg][None, :]).astype(np.float64)
    if kind == "graded":
        rank = {level: r for r, level in enumerate(stimuli.factors[arg])}
        return _absolute_difference([rank[level] for level in design[arg]])
    if kind == "interaction":
        first, second = (
            (design[f] == stimuli.factors[f][0]).astype(int) for f in list(stimuli.factors)[:2]
        )
        diagonal = first == second
        return (diagonal[:, None] != diagonal[None, :]).astype(np.float64)
    if name == "feature:all":
        z = np.column_stack([_zscore(v) for v in stimuli.features.values()])
        return np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
    if kind == "feature":
        return _absolute_difference(stimuli.features[arg])
    if kind == "semantic":
        if embeddings is None:
            raise CogsaeError("the semantic model needs sentence embeddings", field="models")
        return np.clip(1.0 - embeddings @ embeddings.T, 0.0, 2.0) * (1 - np.eye(len(embeddings)))
    if kind == "length":
        return _absolute_difference(n_tokens)
    raise CogsaeError(f"unknown model RDM {name!r}", field="models")


def _zscore(values: np.ndarray) -> np.ndarray:
    """[items] values centred and scaled to unit SD (a constant feature stays 0)."""
    values = np.asarray(values, dtype=np.float64)
    sd = values.std()
    return (values - values.mean()) / (sd if sd > 0 else 1.0)


def chosen_models(stimuli: StimulusSet) -> list[str]:
    """The set's ``models:`` if given, else every model it allows."""
    allowed = model_rdm_names(stimuli.factors, stimuli.ordered, list(stimuli.features))
    return list(stimuli.models) or allowed


def model_rdms(
    stimuli: StimulusSet,
    n_tokens: np.ndarray,
    embeddings: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    skipped: dict[str, str] | None = None,
) -> list[ModelFixed]:
    """rsatoolbox fixed models of ``names`` (default `chosen_models`; ``semantic`` is left out
    when ``embeddings`` is None). A model that predicts one value for every pair (e.g. a
    feature constant over items, or equal token counts) cannot be ranked: it is refused, or,
    when ``skipped`` is given (models the user did not ask for by name), left out and
    recorded there with the reason."""
    names = list(names) if names is not None else chosen_models(stimuli)
    if embeddings is None:
        names = [n for n in names if n != "semantic"]
    models = []
    for name in names:
        matrix = model_matrix(name, stimuli, n_tokens, embeddings)
        if np.ptp(matrix[np.triu_indices(len(matrix), k=1)]) == 0:
            reason = f"model RDM {name!r} predicts the same dissimilarity for every pair"
            if skipped is None:
                raise CogsaeError(reason, path=stimuli.path, field="models")
            skipped[name] = reason
            continue
        models.append(ModelFixed(name, matrix))
    return models
