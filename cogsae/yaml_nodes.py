"""YAML node helpers: typed values of a composed YAML document with file:line errors.

Parsers of the stimulus format read nodes (not plain Python values) so that every error
can name the line it came from.
"""

from __future__ import annotations

from pathlib import Path

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


def int_node(node: yaml.Node, path: Path, what: str) -> int:
    """An integer scalar, or a CogsaeError naming ``what``."""
    if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:int":
        raise CogsaeError("must be an integer", path=path, line=mark_line(node), field=what)
    return int(node.value)


def check_fields(
    fields: dict[str, yaml.Node], allowed: set[str], node: yaml.Node, path: Path, what: str
) -> None:
    """A CogsaeError on the first field of ``fields`` not in ``allowed``."""
    for name, value in fields.items():
        if name not in allowed:
            raise CogsaeError(
                f"unknown field {name!r} (allowed: {', '.join(sorted(allowed))})",
                path=path,
                line=mark_line(value),
                field=f"{what}.{name}" if what else name,
            )
