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


def _model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--model/--layer/--dtype/--device, shared by every command that runs the model."""
    options = [
        click.option(
            "--model",
            "model_name",
            default=None,
            help="Model: 'smollm2-135m' (embedded default), a local checkpoint folder, or a "
            "Hugging Face id in the local cache. Default: the set's model:, else smollm2-135m.",
        ),
        click.option(
            "--layer",
            type=int,
            default=None,
            help="Decoder block L whose output is read (0-based; hidden_states[L+1]). "
            "Default: the set's model.layer, else the middle block (15 for the default).",
        ),
        click.option(
            "--dtype",
            type=click.Choice(["bfloat16", "float32", "float16"]),
            default="bfloat16",
            show_default=True,
            help="Model precision (bf16 is ~2x faster on CPU).",
        ),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _window_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--window/--window-size, overriding the set's window:."""
    func = click.option(
        "--window-size", type=int, default=None, help="Window size N (default: the set's, else 16)."
    )(func)
    return click.option(
        "--window",
        "window_align",
        type=click.Choice(["start", "end", "center", "target"]),
        default=None,
        help="Window alignment (default: the set's, else start).",
    )(func)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--model", "model_name", default=None, help="Tokenizer to count tokens with.")
@user_errors
def validate(files: tuple[str, ...], model_name: str | None) -> None:
    """Check stimulus sets and print a summary of each.

    Prints conditions, item counts, token lengths per condition with a test of whether
    they differ, and checks that the window can be filled. Exits 2 on the first problem,
    naming file, line and field.
    """
    from cogsae.extract import Window, check_window_fillable
    from cogsae.model import DEFAULT_MODEL, load_tokenizer
    from cogsae.stimuli import load_stimuli, summary_text

    for path in files:
        stimuli = load_stimuli(path)
        tokenizer = load_tokenizer(model_name or stimuli.model.get("name", DEFAULT_MODEL))
        window = Window.for_stimuli(stimuli)
        check_window_fillable(tokenizer, stimuli, window)
        click.echo(summary_text(stimuli, tokenizer))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_model_options
@_window_options
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--no-cache", is_flag=True, help="Recompute even if cached.")
@user_errors
def extract(
    file: str,
    model_name: str | None,
    layer: int | None,
    dtype: str,
    device: str,
    window_align: str | None,
    window_size: int | None,
    batch_size: int,
    no_cache: bool,
) -> None:
    """Extract windowed layer-L activations of a stimulus set and cache them.

    Prints the cache file: an .npz with values [items, positions, d_model], mask
    [items, positions] and the window's tokens, keyed by model, layer, dtype, window and
    stimuli content, so later runs reuse it.
    """
    from cogsae.extract import Window, check_window_fillable, extract_activations
    from cogsae.model import load_model
    from cogsae.stimuli import load_stimuli

    stimuli = load_stimuli(file)
    model = load_model(
        model_name or stimuli.model.get("name", "smollm2-135m"),
        layer=layer if layer is not None else stimuli.model.get("layer"),
        dtype=dtype,
        device=device,
    )
    window = Window.for_stimuli(stimuli, align=window_align, size=window_size)
    check_window_fillable(model.tokenizer, stimuli, window)
    for test in [False, True] if stimuli.test_items else [False]:
        acts = extract_activations(
            stimuli, model, window, test=test, batch_size=batch_size, cache=not no_cache
        )
        split = "test items" if test else "items"
        click.echo(
            f"{stimuli.name}: {acts.n_items} {split} x {acts.values.shape[1]} positions x "
            f"{acts.n_units} units (layer {model.layer}, {acts.mask.mean():.0%} of slots valid) "
            f"-> {acts.meta['cache']}"
        )
