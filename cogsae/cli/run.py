"""`cogsae run` and `cogsae report`: the concept hunt and its report."""

from __future__ import annotations

from dataclasses import dataclass

import click

from cogsae.cli.options import announce_dtype, options
from cogsae.flags import option
from cogsae.pipeline.config import RunConfig


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
        dirs: run folders.
        output: folder of the combined report (several dirs); None = results/combined.
    """

    dirs: tuple[str, ...] = option(help="Run folders.", argument=True, metavar="DIRS...")
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
    """Rebuild the report of a run DIR, or combine several runs into one comparison."""
    from pathlib import Path

    from cogsae.report import combine_reports, write_report

    if len(opts.dirs) == 1 and opts.output is None:
        click.echo(f"report: {write_report(Path(opts.dirs[0]))}")
        return
    target = Path(opts.output or "results/combined")
    click.echo(f"report: {combine_reports([Path(d) for d in opts.dirs], target)}")
