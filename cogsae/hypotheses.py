"""Hypotheses of a stimulus set: ``contrasts:`` (extra pairwise contrasts), ``ordered:``,
``features:`` and ``models:`` (model RDMs).

The names of the model RDMs a set allows are defined here, where the YAML is checked, so a
``models:`` entry that the design cannot support is an error with its file and line
(docs/methods.md, "Model RDMs and their inference").
"""

from __future__ import annotations

from pathlib import Path

import yaml

from cogsae.errors import CogsaeError
from cogsae.yaml_fields import check_fields, mapping, mark_line, names, sequence, string


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


def parse_contrasts(
    node: yaml.Node,
    path: Path,
    factors: dict[str, list[str]],
    declared: dict[str, tuple[str, str]],
) -> list[tuple[str, str, str]]:
    """``contrasts:``: a list of ``[target, reference]`` levels of the primary factor, or of
    ``{factor: F, target: a, reference: b}`` (factor default: the primary one); a pair
    already analysed (``declared``: each factor's (target, reference); an earlier entry;
    either order) is an error."""
    primary = next(iter(factors))
    seen = {frozenset((f, *levels)) for f, levels in declared.items()}
    out: list[tuple[str, str, str]] = []
    for i, entry in enumerate(sequence(node, path, "contrasts")):
        what, line = f"contrasts[{i}]", mark_line(entry)
        if isinstance(entry, yaml.MappingNode):
            fields = mapping(entry, path, what)
            check_fields(fields, {"factor", "target", "reference"}, entry, path, what)
            missing = [name for name in ("target", "reference") if name not in fields]
            if missing:
                raise CogsaeError(f"missing field {missing[0]!r}", path=path, line=line, field=what)
            factor = (
                string(fields["factor"], path, f"{what}.factor") if "factor" in fields else primary
            )
            pair = [string(fields[n], path, f"{what}.{n}") for n in ("target", "reference")]
        else:
            nodes = sequence(entry, path, what)
            if len(nodes) != 2:
                raise CogsaeError(
                    "a contrast is [target, reference] or {factor, target, reference}",
                    path=path,
                    line=line,
                    field=what,
                )
            factor = primary
            pair = [string(n, path, f"{what}[{j}]") for j, n in enumerate(nodes)]
        if factor not in factors:
            raise CogsaeError(
                f"unknown factor {factor!r} (factors: {', '.join(factors)})",
                path=path,
                line=line,
                field=f"{what}.factor",
            )
        for level in pair:
            if level not in factors[factor]:
                raise CogsaeError(
                    f"level {level!r} is not a level of {factor!r} {factors[factor]}",
                    path=path,
                    line=line,
                    field=what,
                )
        if pair[0] == pair[1]:
            raise CogsaeError(
                f"contrasts {pair[0]!r} with itself", path=path, line=line, field=what
            )
        if frozenset((factor, *pair)) in seen:
            raise CogsaeError(
                f"{factor} {pair[0]!r} vs {pair[1]!r} is analysed already",
                path=path,
                line=line,
                field=what,
            )
        seen.add(frozenset((factor, *pair)))
        out.append((factor, pair[0], pair[1]))
    return out
