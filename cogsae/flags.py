"""Command-line metadata of config dataclass fields, and the option groups several
commands share.

A config field carries its option in ``field(metadata=...)`` (see `option`): its help,
and where they differ from the defaults its flag name, choices or path kind. The CLI
generator (`cogsae.cli.options`) turns these fields into click options, and error
messages name the same flags through `flag`, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cogsae.engine import ENGINES
from cogsae.model import DTYPE_CHOICES

_NO_DEFAULT: Any = dataclasses.MISSING


def option(
    default: Any = _NO_DEFAULT,
    help: str = "",
    *,
    flag: str | None = None,
    aliases: tuple[str, ...] = (),
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    path: str | None = None,
    separator: str | None = None,
    argument: bool = False,
) -> Any:
    """A dataclass field that is also a command-line option (or, with ``argument``, the
    command's positional argument).

    Args:
        default: the field's default; none = a required option.
        help: the option's help text.
        flag: the flag; default ``--`` + the field name with dashes.
        aliases: further flags accepted for the same option.
        choices: accepted values.
        metavar: placeholder shown in the help.
        path: "file" (an existing file), "new file" or "dir": a path that must be one.
        separator: a tuple field given as one value, split on this ("1,2,4").
        argument: the command's positional argument instead of an option.
    """
    metadata = {
        "help": help,
        "flag": flag,
        "aliases": aliases,
        "choices": choices,
        "metavar": metavar,
        "path": path,
        "separator": separator,
        "argument": argument,
    }
    return dataclasses.field(default=default, metadata=metadata)


def same_as(cls: type, name: str) -> Any:
    """A field with the default and option of ``cls``'s field ``name`` (one declaration
    for an option that several configs carry)."""
    source = _field(cls, name)
    return dataclasses.field(default=source.default, metadata=source.metadata)


def flag(cls: type, name: str) -> str:
    """The flag of ``cls``'s field ``name`` (``flag(RunConfig, "n_permutations")`` ->
    "--permutations"); the bare field name for a field that is not an option."""
    metadata = _field(cls, name).metadata
    if "help" not in metadata:
        return name
    return metadata["flag"] or "--" + name.replace("_", "-")


def _field(cls: type, name: str) -> dataclasses.Field[Any]:
    """The dataclass field ``name`` of ``cls``."""
    return {f.name: f for f in dataclasses.fields(cls)}[name]


@dataclass
class ModelOptions:
    """Which model to run and how: shared by every command that loads one.

    Attributes:
        model: model name or path; None = the set's ``model.name``, else the SAE's, else
            the default (`cogsae.resolve`).
        layer: decoder block L; None = the set's ``model.layer``, else the SAE's, else the
            middle block.
        dtype: model precision; "auto" is resolved for ``device``.
        device: "cpu" or "cuda[:N]".
        device_map: for a model larger than one device, a transformers device map (e.g.
            "auto": blocks spread over the visible GPUs); None = the whole model on
            ``device``.
    """

    model: str | None = option(
        None,
        "Model: 'smollm2-135m' (embedded default), a local checkpoint folder, or a Hugging "
        "Face id in the local cache. Default: the set's model:, else the SAE's, else "
        "smollm2-135m.",
    )
    layer: int | None = option(
        None,
        "Decoder block L whose output is read (0-based; hidden_states[L+1]). Default: the "
        "set's model.layer, else the SAE's layer, else the middle block (15 for the default).",
    )
    dtype: str = option(
        "auto",
        "Model precision. auto: bfloat16 on CUDA and on CPUs with native bf16 "
        "(AVX512-BF16/AMX), float32 elsewhere (emulated bf16 is ~100x slower there).",
        choices=DTYPE_CHOICES,
    )
    device: str = option("cpu", "cpu, cuda or cuda:N.")
    device_map: str | None = option(
        None,
        "Spread a model larger than one device over several: a transformers device map "
        "such as 'auto' (--device still names the device kind).",
    )


@dataclass
class SAEOptions:
    """The SAE whose latents form the "sae" space.

    Attributes:
        sae: SAE folder, "default" (the shipped one) or "none" (raw space only).
    """

    sae: str = option(
        "default",
        "SAE folder (cogsae, SAELens or sparsify format), 'default' (shipped for the default "
        "model, layer 15) or 'none' for raw units only. Its layer is used unless the set or "
        "--layer names one; a different one is an error.",
    )


@dataclass
class WindowOptions:
    """The token window read per item, overriding the set's ``window:``.

    Attributes:
        window_align: alignment; None = the set's, else "start".
        window_size: size N; None = the set's, else fitted to the items.
    """

    window_align: str | None = option(
        None,
        "Window alignment (default: the set's, else start).",
        flag="--window",
        choices=("start", "end", "center", "target"),
    )
    window_size: int | None = option(
        None,
        "Window size N (default: the set's, else the longest item's length, at most 32).",
    )


@dataclass
class CorpusOptions:
    """The text a command scans or trains on.

    Attributes:
        corpus: text or .jsonl files; empty = the built-in corpus.
        n_tokens: tokens read (each command sets its own default).
        context_length: tokens per chunk.
    """

    corpus: tuple[str, ...] = option(
        (), "Corpus text or .jsonl file (repeatable). Default: the built-in corpus.", path="file"
    )
    n_tokens: int = option(20_000, "Corpus tokens read.", flag="--tokens")
    context_length: int = option(128, "Tokens per corpus chunk.")


@dataclass
class EngineOptions:
    """Where a command's corpus or grid work runs (`cogsae.engine`); both engines give the
    same results.

    Attributes:
        engine: "local" (this process) or "ray" (``RAY_ADDRESS``, else a local cluster).
        workers: Ray actors, each holding the model; None = one per GPU of the cluster,
            else one per CPU.
    """

    engine: str = option(
        "local", "Run here, or on Ray (RAY_ADDRESS or a local cluster).", choices=ENGINES
    )
    workers: int | None = option(
        None, "Ray workers holding the model (default: per GPU, else per CPU)."
    )
