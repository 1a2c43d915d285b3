"""Typed reads of YAML nodes with file:line errors (the stimulus file's building blocks).

Each function takes a ``yaml.Node`` (from ``yaml.compose``, so the line is known) and
returns a plain value, or raises a `CogsaeError` naming the file, the line and the field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from cogsae.errors import CogsaeError


def mark_line(node: yaml.Node) -> int:
    """1-based line where ``node`` starts."""
    return node.start_mark.line + 1


def mapping(node: yaml.Node, path: Path, what: str) -> dict[str, yaml.Node]:
    """Keys -> value nodes of a YAML mapping node, or a CogsaeError naming ``what``."""
    if not isinstance(node, yaml.MappingNode):
        raise CogsaeError(f"{what} must be a mapping", path=path, line=mark_line(node), field=what)
    out: dict[str, yaml.Node] = {}
    for key, value in node.value:
        name = str(key.value)
        if name in out:
            raise CogsaeError(f"duplicate key {name!r}", path=path, line=mark_line(key), field=what)
        out[name] = value
    return out


def sequence(node: yaml.Node, path: Path, what: str) -> list[yaml.Node]:
    """The element nodes of a YAML list node, or a CogsaeError naming ``what``."""
    if not isinstance(node, yaml.SequenceNode):
        raise CogsaeError(f"{what} must be a list", path=path, line=mark_line(node), field=what)
    return list(node.value)


def string(node: yaml.Node, path: Path, what: str, *, empty_ok: bool = False) -> str:
    """A string scalar (non-blank unless ``empty_ok``), or a CogsaeError naming ``what``."""
    if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:str":
        raise CogsaeError("must be a string", path=path, line=mark_line(node), field=what)
    if not empty_ok and not node.value.strip():
        raise CogsaeError("must not be empty", path=path, line=mark_line(node), field=what)
    return str(node.value)


def integer(node: yaml.Node, path: Path, what: str) -> int:
    """An integer scalar, or a CogsaeError naming ``what``."""
    if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:int":
        raise CogsaeError("must be an integer", path=path, line=mark_line(node), field=what)
    return int(node.value)


def number(node: yaml.Node, path: Path, what: str) -> float:
    """A finite int or float scalar (booleans and strings are refused)."""
    numeric = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    if not isinstance(node, yaml.ScalarNode) or node.tag not in numeric:
        raise CogsaeError("must be a number", path=path, line=mark_line(node), field=what)
    value = float(yaml.safe_load(node.value))
    if not np.isfinite(value):
        raise CogsaeError("must be a finite number", path=path, line=mark_line(node), field=what)
    return value


def names(fields: dict[str, yaml.Node], key: str, path: Path) -> list[str]:
    """The distinct strings of the optional top-level list ``key`` (empty when absent)."""
    if key not in fields:
        return []
    nodes = sequence(fields[key], path, key)
    names = [string(n, path, f"{key}[{i}]") for i, n in enumerate(nodes)]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise CogsaeError(
                f"{name!r} is listed twice", path=path, line=mark_line(nodes[i]), field=key
            )
    return names


def check_fields(
    fields: dict[str, yaml.Node], allowed: set[str], node: yaml.Node, path: Path, what: str
) -> None:
    for name, value in fields.items():
        if name not in allowed:
            raise CogsaeError(
                f"unknown field {name!r} (allowed: {', '.join(sorted(allowed))})",
                path=path,
                line=mark_line(value),
                field=f"{what}.{name}" if what else name,
            )
