"""Hypotheses of a stimulus set: ``ordered:``, ``features:`` and ``models:`` (model RDMs).

The names of the model RDMs a set allows are defined here, where the YAML is checked, so a
``models:`` entry that the design cannot support is an error with its file and line
(docs/methods.md, "Model RDMs and their inference").
"""

from __future__ import annotations

from pathlib import Path

import yaml

from cogsae.errors import CogsaeError
from cogsae.yaml_fields import mark_line, names, sequence


def model_rdm_names(
    factors: dict[str, list[str]], ordered: list[str], features: list[str]
) -> list[str]:
    """Every model RDM a set allows (docs/methods.md, "Model RDMs and their inference"):
    category per factor, graded per ordered factor, interaction (2 x 2 designs), one per
    feature and all features together (2 or more), semantic, length."""
    names = [f"category:{f}" for f in factors] + [f"graded:{f}" for f in ordered]
    if len(factors) == 2 and all(len(levels) == 2 for levels in factors.values()):
        names.append("interaction")
    names += [f"feature:{f}" for f in features]
    if len(features) > 1:
        names.append("feature:all")
    return [*names, "semantic", "length"]


def check_hypotheses(
    fields: dict[str, yaml.Node], path: Path, factors: dict[str, list[str]], taken: set[str]
) -> tuple[list[str], list[str], list[str]]:
    """``ordered``, ``features`` and ``models`` of a set's top-level ``fields``, each checked
    against the design (``taken``: item field names a feature may not have)."""
    ordered, features, models = (
        names(fields, key, path) for key in ("ordered", "features", "models")
    )
    for i, name in enumerate(ordered):
        if name not in factors:
            line = mark_line(sequence(fields["ordered"], path, "ordered")[i])
            raise CogsaeError(
                f"{name!r} is not a declared factor", path=path, line=line, field="ordered"
            )
    for i, name in enumerate(features):
        if name in factors or name in taken:
            line = mark_line(sequence(fields["features"], path, "features")[i])
            raise CogsaeError(
                f"feature {name!r} is a taken name", path=path, line=line, field="features"
            )
    if features and "conditions" in fields:
        raise CogsaeError(
            "per-item features need the long form (factors + items)",
            path=path,
            line=mark_line(fields["features"]),
            field="features",
        )
    allowed = model_rdm_names(factors, ordered, features)
    for i, name in enumerate(models):
        if name not in allowed:
            raise CogsaeError(
                f"unknown model RDM {name!r} for this set (allowed: {', '.join(allowed)})",
                path=path,
                line=mark_line(sequence(fields["models"], path, "models")[i]),
                field="models",
            )
    return ordered, features, models
