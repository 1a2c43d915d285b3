"""The `cogsae` command line: thin wrappers that string the pipeline stages together.

One module per command group: `data` (validate, extract), `units` (inspect, attribute),
`clamp`, `run` (run, sweep, report), `bench`, `sae` (train-sae, sae-metrics). Options are
generated from config dataclasses (`cogsae.cli.options`). Every command turns a
`CogsaeError` (bad user input) into one line on stderr and exit status 2; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import click

from cogsae.cli.bench import bench
from cogsae.cli.clamp import clamp
from cogsae.cli.data import extract, validate
from cogsae.cli.run import report, run, sweep
from cogsae.cli.sae import sae_metrics_command, train_sae_command
from cogsae.cli.units import attribute, inspect


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cogsae")
def main() -> None:
    """cogsae: find where a language model (or its sparse autoencoder) represents a concept.

    Typical use: write a stimulus set (see stimuli/success.yaml), then

        cogsae validate stimuli/success.yaml
        cogsae run stimuli/success.yaml

    which extracts activations, selects units by contrast, RSA and max-activation in SAE and
    raw space, scores them with cross-validated ensembles and writes a report under results/.
    """


for command in (
    validate,
    extract,
    inspect,
    clamp,
    attribute,
    run,
    sweep,
    bench,
    report,
    train_sae_command,
    sae_metrics_command,
):
    main.add_command(command)
