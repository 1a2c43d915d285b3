"""Sweeps: the grid of runs over stimulus sets x layers x seeds, each an ordinary run.

Every grid cell is a `RunConfig` with that set, layer and seed (and the layer's SAE, or
"none"), so it lands in the usual run folder ``<output>/<set>/<run id>`` and resumes like
any run. Before the cells are dispatched, every set is extracted at all the sweep's layers
in one forward pass per batch (`cogsae.extract.extract_layers`), so the cells hit the
activation cache. The cells run through `cogsae.engine.map_tasks`: in order with the local
engine, as parallel Ray tasks with the ray engine. ``<output>/sweeps/<sweep id>/sweep.json``
lists every cell and its run folder (`cogsae.report.sweep` combines them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cogsae._io import cache_dir, inside, stable_hash, write_json
from cogsae.engine import Engine, check_engine, map_tasks
from cogsae.errors import CogsaeError
from cogsae.extract import extract_layers
from cogsae.model import load_model
from cogsae.pipeline.config import RunConfig
from cogsae.pipeline.stages import Run, execute, prepare
from cogsae.sae.io import SHIPPED_SAES, read_sae_config, resolve_sae_folder

SWEEP_MANIFEST = "sweep.json"
"""File of a sweep folder listing its cells (read by `cogsae.report.sweep`)."""
SAE_FLAG = "--sae"


def sae_by_layer(specs: Sequence[str], layers: Iterable[int]) -> dict[int, str]:
    """layer -> SAE folder for the sweep's ``layers``, from ``--sae`` values.

    A value is ``LAYER=PATH`` (the SAE of that layer; PATH may be a release folder), or
    ``PATH``: a release folder holding one SAE per layer (each sweep layer it holds gets
    its SAE; layers it lacks get none), a single SAE folder or "default" (it serves the
    layer it records). "none" adds nothing. Two SAEs for one layer, a ``LAYER=`` outside
    ``layers`` and a PATH that serves none of them are errors. No values at all: the
    shipped SAEs (`SHIPPED_SAES`) at the layers they serve, so a plain sweep compares SAE
    features with raw units wherever cogsae has an SAE.
    """
    layers = sorted(set(layers))
    if not specs:
        return {
            layer: folder
            for spec in SHIPPED_SAES
            for layer in layers
            if (folder := _serving(spec, layer))
        }
    chosen: dict[int, str] = {}
    for spec in specs:
        if spec == "none":
            continue
        head, sep, tail = spec.partition("=")
        if sep and head.strip().isdigit():
            layer = int(head)
            if layer not in layers:
                raise CogsaeError(f"{spec}: layer {layer} is not one of --layers", field=SAE_FLAG)
            found = {layer: _sae_folder(tail, layer)}
        else:
            found = {layer: folder for layer in layers if (folder := _serving(spec, layer))}
            if not found:
                raise CogsaeError(
                    f"{spec} holds no SAE of layers {layers}; name the layer as LAYER=PATH",
                    field=SAE_FLAG,
                )
        twice = sorted(set(found) & set(chosen))
        if twice:
            raise CogsaeError(f"two SAEs given for layer(s) {twice}", field=SAE_FLAG)
        chosen.update(found)
    return chosen


def _sae_folder(spec: str, layer: int) -> str:
    """``spec`` itself when it is one SAE folder (or "default"), else the subfolder of the
    release folder ``spec`` that reads ``layer``."""
    folder = resolve_sae_folder(spec, layer)
    return spec if spec == "default" or folder == Path(spec) else str(folder)


def _serving(spec: str, layer: int) -> str | None:
    """The SAE folder of ``spec`` that reads ``layer``, or None if it holds none."""
    try:
        folder = _sae_folder(spec, layer)
    except CogsaeError as err:
        if err.field != "layer":
            raise
        return None
    return folder if read_sae_config(folder).layer == layer else None


def grid(
    base: RunConfig,
    sets: Iterable[str],
    layers: Iterable[int],
    seeds: Iterable[int],
    saes: dict[int, str],
) -> list[RunConfig]:
    """The cells' configs, set-major then layer then seed: ``base`` with that stimulus
    file, layer, seed and the layer's SAE ("none" where ``saes`` has none). A cell scores
    its corpus on the local engine: under Ray it is itself a task, and actors it started
    would wait for the CPUs the other cells hold."""
    return [
        replace(
            base,
            stimuli=stimuli,
            layer=layer,
            seed=seed,
            sae=saes.get(layer, "none"),
            engine="local",
            workers=None,
        )
        for stimuli in sets
        for layer in layers
        for seed in seeds
    ]


@dataclass(frozen=True)
class CellTask:
    """One cell as a task: its config and the cache folder the worker must use (a Ray
    worker does not see the driver's later environment changes)."""

    config: RunConfig
    cache: str


def run_cell(task: CellTask) -> str:
    """Execute one cell's run (reusing its finished stages); returns its run folder."""
    os.environ["COGSAE_CACHE"] = task.cache
    return str(execute(task.config, progress=False))


def sweep(
    configs: list[RunConfig],
    *,
    engine: str = "local",
    progress: bool = True,
    finish: Callable[[Path], Any] | None = None,
) -> Path:
    """Run the grid ``configs`` (from `grid`); returns the sweep folder.

    Every cell is validated first (`prepare`: a bad set or option fails before any work),
    then each set is extracted at all its layers in one pass (`preextract`), the manifest
    is written, the cells run through `map_tasks` on ``engine``, ``finish`` (e.g. the
    report writer) is called on each run folder, and the manifest is rewritten with every
    cell done. Re-running the same sweep reuses its finished runs.
    """
    checked = check_engine(engine)
    if not configs:
        raise CogsaeError("a sweep needs at least one set, layer and seed", field="--layers")
    runs = [prepare(config, progress=False) for config in configs]
    output = Path(configs[0].output)
    sweep_id = "sweep-" + stable_hash([run.key for run in runs], length=10)
    folder = inside(output, Path("sweeps") / sweep_id, field="--output")
    manifest = _manifest(sweep_id, runs, output, checked)
    write_json(folder / SWEEP_MANIFEST, manifest)
    for cell, directory in zip(
        manifest["cells"], run_all(runs, engine=checked, progress=progress), strict=True
    ):
        if finish is not None:
            finish(directory)
        cell["done"] = True
    write_json(folder / SWEEP_MANIFEST, manifest)
    return folder


def run_all(runs: list[Run], *, engine: Engine, progress: bool = True) -> list[Path]:
    """Execute the prepared ``runs``: each set extracted once at all its layers
    (`preextract`), then every run as a task of `map_tasks` on ``engine`` (in order, or
    as parallel Ray tasks); returns their run folders in order."""
    preextract(runs, progress=progress)
    tasks = [CellTask(run.config, str(cache_dir())) for run in runs]
    return [Path(directory) for directory in map_tasks(run_cell, tasks, engine=engine)]


def _manifest(sweep_id: str, runs: list[Run], output: Path, engine: Engine) -> dict[str, Any]:
    """The sweep's record: its axes and, per cell, set, layer, seed, SAE, run key and run
    folder (relative to the output root ``output``)."""
    cells = [
        {
            "stimuli": run.config.stimuli,
            "set": run.stimuli.name,
            "layer": run.config.layer,
            "seed": run.config.seed,
            "sae": run.config.sae,
            "run_key": run.key,
            "run": str(run.directory.relative_to(output.resolve())),
            "done": False,
        }
        for run in runs
    ]
    return {
        "sweep": sweep_id,
        "engine": engine,
        "sets": list(dict.fromkeys(cell["stimuli"] for cell in cells)),
        "layers": list(dict.fromkeys(cell["layer"] for cell in cells)),
        "seeds": list(dict.fromkeys(cell["seed"] for cell in cells)),
        "config": {k: v for k, v in asdict(runs[0].config).items() if k not in _PER_CELL},
        "cells": cells,
    }


_PER_CELL = ("stimuli", "layer", "seed", "sae", "run_id")
"""RunConfig fields that differ between the cells (the rest is the sweep's config)."""


def preextract(runs: list[Run], *, progress: bool = True) -> None:
    """Extract each set (main and test items) at every layer its cells read, one forward
    pass per batch, into the per-layer activation cache the cells then read."""
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        plan = run.plan
        what = (plan.content, plan.model, plan.dtype, plan.device, plan.device_map, plan.window)
        groups.setdefault(what, []).append(run)
    models: dict[tuple[Any, ...], Any] = {}
    for (_, *placement, window), members in groups.items():
        layers = sorted({run.plan.layer for run in members})
        name, dtype, device, device_map = key = tuple(placement)
        if key not in models:
            models[key] = load_model(name, dtype=dtype, device=device, device_map=device_map)
        loaded = models[key]
        stimuli = members[0].stimuli
        for test in (False, True) if stimuli.test_items else (False,):
            extract_layers(stimuli, loaded, layers, window, test=test, progress=progress)
