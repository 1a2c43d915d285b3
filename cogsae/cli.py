"""The `cogsae` command line: thin wrappers that string the pipeline stages together.

Every command turns a `CogsaeError` (bad user input) into one line on stderr and exit
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from cogsae.errors import CogsaeError


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Report `CogsaeError` as ``error: <file:line [field]: message>`` and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CogsaeError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)

    return wrapper


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
