"""`cogsae validate` and `cogsae extract`: check stimulus sets and cache their activations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from cogsae.cli.options import group, model_options, options
from cogsae.errors import CogsaeError
from cogsae.flags import ModelOptions, WindowOptions, flag, option


@dataclass
class ValidateOptions:
    """Options of `cogsae validate`.

    Attributes:
        files: stimulus YAML files to check.
        write_groups: where to write a grouped long-form copy of the (single) set.
    """

    files: tuple[str, ...] = option(help="Stimulus YAML files.", argument=True, metavar="FILES...")
    write_groups: str | None = option(
        None,
        "Write a long-form copy of the (single) set with a group on every item, "
        "near-duplicate items across conditions sharing one.",
        path="new file",
    )


@dataclass
class ExtractOptions:
    """Options of `cogsae extract`.

    Attributes:
        file: the stimulus YAML.
        batch_size: items per forward pass.
        no_cache: recompute even if cached.
    """

    file: str = option(help="Stimulus YAML.", argument=True, metavar="FILE")
    batch_size: int = option(32, "Items per forward pass.")
    no_cache: bool = option(False, "Recompute even if cached.")


@click.command()
@options(opts=ValidateOptions, model=group(ModelOptions, "model"))
def validate(opts: ValidateOptions, model: ModelOptions) -> None:
    """Check stimulus sets and print a summary of each.

    Parses every file first (structure errors need no tokenizer), then prints conditions,
    item counts, token lengths per condition with a test of whether they differ, and the
    window, checking that it can be filled. A set without groups whose items look paired
    across conditions gets a warning. --model names the tokenizer that counts tokens.
    Exits 2 on the first problem, naming file, line and field.
    """
    from cogsae.stimuli import load_stimuli

    if opts.write_groups and len(opts.files) > 1:
        where = flag(ValidateOptions, "write_groups")
        raise CogsaeError(f"{where} takes a single FILE", field=where)
    sets = [load_stimuli(path) for path in opts.files]  # structural errors first: no tokenizer

    from cogsae import resolve
    from cogsae.model import load_tokenizer

    tokenizers: dict[str, Any] = {}
    for stimuli in sets:
        name = resolve.model_name(model.model, stimuli.model)
        if name not in tokenizers:
            tokenizers[name] = load_tokenizer(name)
        _check_set(stimuli, tokenizers[name], opts.write_groups)


def _check_set(stimuli: Any, tokenizer: Any, groups_out: str | None) -> None:
    """Print the summary, window and pairing advice of one set; write its grouped copy."""
    from cogsae.analysis.design import find_pairs, write_grouped
    from cogsae.extract import MAX_WINDOW_SIZE, Window, check_window_fillable
    from cogsae.stimuli import summary_text

    window = Window.for_stimuli(stimuli)
    check_window_fillable(tokenizer, stimuli, window)
    click.echo(summary_text(stimuli, tokenizer))
    fitted = window.fit(tokenizer, stimuli)
    how = (
        "window.size of the set"
        if window.size is not None
        else f"no window.size: the longest item's length, at most {MAX_WINDOW_SIZE}"
    )
    click.echo(f"  window: {fitted.align}, {fitted.size} tokens ({how})")
    advice = find_pairs(stimuli).message() if stimuli.groups() is None else None
    if advice:
        click.echo(f"  warning: {advice}")
    if groups_out:
        out = write_grouped(stimuli, groups_out)
        click.echo(f"wrote {out} (long form, a group on every item)")


@click.command()
@options(opts=ExtractOptions, model=ModelOptions, window=WindowOptions)
def extract(opts: ExtractOptions, model: ModelOptions, window: WindowOptions) -> None:
    """Extract windowed layer-L activations of a stimulus set and cache them.

    Prints the cache file: an .npz (no pickles) with values [items, positions, d_model],
    mask [items, positions] and, in its JSON ``structure`` entry, the window's tokens;
    keyed by model (name and weights), layer, dtype, window and stimuli content, so later
    runs reuse it. Model and layer: `cogsae.resolve` (no SAE involved).
    """
    from cogsae import resolve
    from cogsae.extract import Window, check_window_fillable, extract_activations
    from cogsae.stimuli import load_stimuli

    stimuli = load_stimuli(opts.file)
    loaded, _ = resolve.load(model_options(model), None, stimuli.model)
    chosen = Window.for_stimuli(stimuli, align=window.window_align, size=window.window_size)
    check_window_fillable(loaded.tokenizer, stimuli, chosen)
    for test in [False, True] if stimuli.test_items else [False]:
        acts = extract_activations(
            stimuli, loaded, chosen, test=test, batch_size=opts.batch_size, cache=not opts.no_cache
        )
        split = "test items" if test else "items"
        click.echo(
            f"{stimuli.name}: {acts.n_items} {split} x {acts.values.shape[1]} positions x "
            f"{acts.n_units} units (layer {loaded.layer}, {acts.mask.mean():.0%} of slots valid) "
            f"-> {acts.meta['cache']}"
        )
