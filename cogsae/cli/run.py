"""`cogsae run`, `cogsae sweep` and `cogsae report`: the concept hunt, grids of it, reports."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import click

from cogsae.cli.options import announce_dtype, group, options
from cogsae.engine import check_engine
from cogsae.flags import EngineOptions, option, same_as
from cogsae.pipeline.config import RunConfig

SWEEP_SHARED = tuple(
    f.name
    for f in dataclasses.fields(RunConfig)
    if "help" in f.metadata
    and f.name not in ("stimuli", "layer", "seed", "sae", "run_id", "engine", "workers")
)
"""RunConfig options a sweep passes to every cell (the rest vary per cell, are derived, or
are the sweep's own: its --engine runs the cells, each scoring its corpus locally)."""


@dataclass
class Progress:
    """Options of how a command reports progress.

    Attributes:
        quiet: no progress bars.
    """

    quiet: bool = option(False, "No progress bars.")


@dataclass
class ReportOptions:
    """Options of `cogsae report`.

    Attributes:
        dirs: run folders, or one sweep or bench folder (``<output>/sweeps/<sweep id>``,
            ``<output>/bench/<bench id>``).
        output: folder of the combined report (several dirs); None = results/combined.
    """

    dirs: tuple[str, ...] = option(
        help="Run folders, or one sweep or bench folder.", argument=True, metavar="DIRS..."
    )
    output: str | None = option(
        None,
        "Folder of the combined report (several DIRS); default results/combined.",
        aliases=("--out",),
    )


@click.command()
@options(config=RunConfig, progress=Progress)
def run(config: RunConfig, progress: Progress) -> None:
    """Hunt a concept: compare every selection method in SAE and raw space.

    Extracts (cached) layer-L activations of FILE's items, encodes them with the SAE,
    runs contrasts and population RSA, evaluates k-unit ensembles selected by
    discriminative RSA, categorical RSA, max-activation and Welch-t contrast (plus k random
    units, a difference-of-means and a dense probe) with selection inside every fold,
    permutation p-values, paired comparisons, held-out transfer and a corpus scan. Writes
    results/<set>/<run>/report.html and friends. Re-running with the same options reuses
    finished stages.
    """
    from cogsae.pipeline import execute
    from cogsae.report import write_report

    requested = click.get_current_context().params["config__dtype"]
    announce_dtype(requested, config.device, config.dtype)
    click.echo(f"report: {write_report(execute(config, progress=not progress.quiet))}")


@click.command()
@options(opts=ReportOptions)
def report(opts: ReportOptions) -> None:
    """Rebuild the report of a run DIR, combine several runs into one comparison, combine
    a sweep folder's runs into AUROC against layer, or rebuild a bench folder's report."""
    from cogsae.report import combine_reports, write_report
    from cogsae.report.bench import is_bench, write_bench_report
    from cogsae.report.sweep import is_sweep, write_sweep_report

    if len(opts.dirs) == 1 and is_bench(Path(opts.dirs[0])):
        click.echo(f"report: {write_bench_report(Path(opts.dirs[0]))}")
        return
    if len(opts.dirs) == 1 and is_sweep(Path(opts.dirs[0])):
        click.echo(f"report: {write_sweep_report(Path(opts.dirs[0]))}")
        return
    if len(opts.dirs) == 1 and opts.output is None:
        click.echo(f"report: {write_report(Path(opts.dirs[0]))}")
        return
    target = Path(opts.output or "results/combined")
    click.echo(f"report: {combine_reports([Path(d) for d in opts.dirs], target)}")


@dataclass
class SweepOptions:
    """Options of `cogsae sweep`: the grid's axes, its SAEs and where it runs.

    Attributes:
        sets: stimulus YAML files.
        layers: decoder blocks read, one run each.
        seeds: root seeds, one run each.
        sae: SAEs as ``LAYER=PATH`` (repeatable) or a release folder with one SAE per
            layer (`cogsae.pipeline.sweep.sae_by_layer`); layers without one run raw only.
            Not given: the shipped SAEs at the layers they serve; "none": raw only.
        engine: "local" (cells in order) or "ray" (cells as parallel Ray tasks).
    """

    sets: tuple[str, ...] = option(help="Stimulus YAML files.", argument=True, metavar="SETS...")
    layers: tuple[int, ...] = option((), "Layers to read, e.g. 6,12,15,20.", separator=",")
    seeds: tuple[int, ...] = option((0,), "Root seeds, e.g. 0,1,2.", separator=",")
    sae: tuple[str, ...] = option(
        (),
        "SAE of a layer as LAYER=PATH (repeatable), or a release folder / SAE folder / "
        "'default' serving the layers it holds; layers without an SAE run raw only. "
        "Default: the shipped SAEs at their layers; 'none': raw only.",
        metavar="[LAYER=]PATH",
    )
    engine: str = same_as(EngineOptions, "engine")


@click.command()
@options(sweep=SweepOptions, config=group(RunConfig, *SWEEP_SHARED, stimuli=""), progress=Progress)
def sweep(sweep: SweepOptions, config: RunConfig, progress: Progress) -> None:
    """Run the grid SETS x --layers x --seeds, each cell an ordinary `cogsae run`.

    Every set is first extracted at all layers in one forward pass, so the cells read the
    activation cache. Cells land in the usual run folders (re-running reuses finished
    ones); <output>/sweeps/<sweep id>/sweep.json lists them and report.html there shows
    held-out AUROC against layer per method and space.
    """
    from cogsae.pipeline.sweep import grid, sae_by_layer
    from cogsae.pipeline.sweep import sweep as run_sweep
    from cogsae.report import write_report
    from cogsae.report.sweep import write_sweep_report

    requested = click.get_current_context().params["config__dtype"]
    announce_dtype(requested, config.device, config.dtype)
    saes = sae_by_layer(sweep.sae, sweep.layers)
    configs = grid(config, sweep.sets, sweep.layers, sweep.seeds, saes)
    folder = run_sweep(
        configs, engine=check_engine(sweep.engine), progress=not progress.quiet, finish=write_report
    )
    click.echo(f"report: {write_sweep_report(folder)}")
