"""Click options generated from config dataclasses (fields declared with `cogsae.flags.option`).

``@options(model=ModelOptions, corpus=group(CorpusOptions, n_tokens=2048))`` adds one
click option per option field of each class (flag, type, default, help, choices,
repeatable for tuples) and calls the command with ``model=ModelOptions(...)``,
``corpus=CorpusOptions(...)``. Commands share the same declarations, so a flag has one
name, one help and one meaning everywhere.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from cogsae.errors import CogsaeError
from cogsae.flags import ModelOptions


@dataclass(frozen=True)
class Group:
    """A config class as a command's options: ``only`` its fields named (all option fields
    when None), with per-command ``defaults``."""

    cls: type
    only: tuple[str, ...] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def fields(self) -> list[dataclasses.Field[Any]]:
        """The fields that become options or arguments."""
        return [
            f
            for f in dataclasses.fields(self.cls)
            if "help" in f.metadata and (self.only is None or f.name in self.only)
        ]

    def default(self, f: dataclasses.Field[Any]) -> Any:
        """The field's default in this command."""
        return self.defaults.get(f.name, f.default)


def group(cls: type, *only: str, **defaults: Any) -> Group:
    """``cls``'s option fields (or only those named) with this command's defaults."""
    return Group(cls, only or None, defaults)


def options(**groups: type | Group) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the options of every group; the command gets each as one instance.
    Building the instances validates them, so `user_errors` reports what that refuses."""
    specs = {name: g if isinstance(g, Group) else Group(g) for name, g in groups.items()}

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            for name, spec in specs.items():
                values = {f.name: kwargs.pop(f"{name}__{f.name}") for f in spec.fields()}
                defaults = {k: v for k, v in spec.defaults.items() if k not in values}
                kwargs[name] = spec.cls(**defaults, **values)
            return func(**kwargs)

        command = user_errors(command)
        params = [_param(name, spec, f) for name, spec in specs.items() for f in spec.fields()]
        for param in reversed(params):
            command = param(command)
        return command

    return decorate


def _param(name: str, spec: Group, f: dataclasses.Field[Any]) -> Callable[..., Any]:
    """The click option (or argument) of field ``f`` of group ``name``."""
    meta = f.metadata
    kind, repeated = _kind(typing.get_type_hints(spec.cls)[f.name])
    dest = f"{name}__{f.name}"
    if meta["path"] is not None:
        path = meta["path"]  # "file" (existing), "new file" or "dir"
        kind = click.Path(exists=path == "file", dir_okay=path == "dir", file_okay=path != "dir")
    elif meta["choices"] is not None:
        kind = click.Choice(meta["choices"])
    if meta["argument"]:
        nargs = -1 if repeated else 1
        return click.argument(dest, metavar=meta["metavar"], type=kind, nargs=nargs)
    default = spec.default(f)
    settings: dict[str, Any] = {"help": meta["help"], "metavar": meta["metavar"]}
    if default is dataclasses.MISSING:
        settings["required"] = True
    else:
        hidden = default is None or default is False or default == ()
        settings.update(default=default, show_default=not hidden)
    if kind is bool:
        settings.update(is_flag=True, flag_value=not default, show_default=False)
    elif meta["separator"] is not None:
        settings.update(
            default=meta["separator"].join(map(str, default)),
            callback=functools.partial(_split, meta["separator"], kind),
        )
    else:
        settings.update(type=kind, multiple=repeated)
    flags = [meta["flag"] or "--" + f.name.replace("_", "-"), *meta["aliases"]]
    return click.option(*flags, dest, **settings)


def _kind(hint: Any) -> tuple[Any, bool]:
    """(value type, repeatable) of a field type: ``int | None`` -> (int, False),
    ``tuple[str, ...]`` -> (str, True)."""
    if isinstance(hint, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return hint, False


def _split(
    separator: str, kind: type, _ctx: click.Context, _param: click.Parameter, value: str
) -> tuple[Any, ...]:
    """ "1,2,4" -> (1, 2, 4); "" (an empty default) -> ()."""
    try:
        return tuple(kind(v) for v in value.split(separator)) if value.strip() else ()
    except ValueError:
        raise click.BadParameter(f"expected a list like 1{separator}2{separator}4") from None


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Report `CogsaeError` as ``error: <file:line [field]: message>`` and an OS error
    (disk full, read-only or missing folder, permissions) as ``error: <path>: <reason>``;
    both exit 2 without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CogsaeError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except OSError as err:
            where = err.filename if err.filename is not None else "file system"
            click.echo(f"error: {where}: {err.strerror or err}", err=True)
            sys.exit(2)

    return wrapper


def announce_dtype(requested: str, device: str, chosen: str) -> None:
    """Say on stderr which dtype "auto" chose, once per command."""
    suffix = f" (auto on {device})" if requested == "auto" else ""
    click.echo(f"dtype: {chosen}{suffix}", err=True)


def model_options(model: ModelOptions) -> ModelOptions:
    """``model`` with its dtype resolved for its device (and announced)."""
    from cogsae.model import dtype_name, resolve_dtype

    chosen = dtype_name(resolve_dtype(model.dtype, model.device))
    announce_dtype(model.dtype, model.device, chosen)
    return dataclasses.replace(model, dtype=chosen)
