"""`cogsae bench`: many stimulus sets, each an ordinary run, pooled into one verdict per claim."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import click

from cogsae.cli.options import announce_dtype, group, options
from cogsae.cli.run import Progress
from cogsae.engine import check_engine
from cogsae.flags import EngineOptions, option, same_as
from cogsae.pipeline.config import RunConfig

BENCH_SHARED = tuple(
    f.name
    for f in dataclasses.fields(RunConfig)
    if "help" in f.metadata and f.name not in ("stimuli", "run_id", "engine", "workers")
)
"""RunConfig options a bench passes to every set's run (the set varies; --engine is the
bench's own: it runs the sets, each scoring its corpus locally)."""


@dataclass
class BenchOptions:
    """Options of `cogsae bench`: the sets and where their runs execute.

    Attributes:
        sets: stimulus YAML files, or folders standing for every ``*.yaml`` in them.
        engine: "local" (runs in order) or "ray" (runs as parallel Ray tasks).
    """

    sets: tuple[str, ...] = option(
        help="Stimulus YAML files, or folders (every *.yaml in them).",
        argument=True,
        metavar="SETS...",
    )
    engine: str = same_as(EngineOptions, "engine")


@click.command()
@options(bench=BenchOptions, config=group(RunConfig, *BENCH_SHARED, stimuli=""), progress=Progress)
def bench(bench: BenchOptions, config: RunConfig, progress: Progress) -> None:
    """Run every set of SETS as an ordinary `cogsae run` and pool the concepts.

    Each set lands in its usual run folder (re-running reuses finished runs); then
    <output>/bench/<bench id>/bench.json pools them: per readout the mean held-out AUROC
    over concepts, per claim (SAE vs raw, RSA vs max-activation, discriminative vs
    categorical, each readout vs the dense probe) a random-effects meta-analysis of the
    per-concept paired differences, Holm-corrected, with a sign test; report.html there
    shows them with a forest plot per claim.
    """
    from cogsae.pipeline.bench import bench as run_bench
    from cogsae.pipeline.bench import bench_configs, bench_sets
    from cogsae.report import write_report
    from cogsae.report.bench import write_bench_report

    requested = click.get_current_context().params["config__dtype"]
    announce_dtype(requested, config.device, config.dtype)
    configs = bench_configs(config, bench_sets(bench.sets))
    folder = run_bench(
        configs, engine=check_engine(bench.engine), progress=not progress.quiet, finish=write_report
    )
    click.echo(f"report: {write_bench_report(folder)}")
