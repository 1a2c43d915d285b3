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
            type=click.Choice(["auto", "bfloat16", "float32", "float16"]),
            default="auto",
            show_default=True,
            help="Model precision. auto: bfloat16 on CUDA and on CPUs with native bf16 "
            "(AVX512-BF16/AMX), float32 elsewhere (emulated bf16 is ~100x slower there).",
        ),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
    ]

    @functools.wraps(func)
    def resolved(*args: Any, dtype: str, device: str, **kwargs: Any) -> Any:
        from cogsae.model import dtype_name, resolve_dtype

        chosen = dtype_name(resolve_dtype(dtype, device))
        click.echo(
            f"dtype: {chosen}" + (f" (auto on {device})" if dtype == "auto" else ""), err=True
        )
        return func(*args, dtype=chosen, device=device, **kwargs)

    for option in reversed(options):
        resolved = option(resolved)
    return resolved


def _window_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--window/--window-size, overriding the set's window:."""
    func = click.option(
        "--window-size",
        type=int,
        default=None,
        help="Window size N (default: the set's, else the longest item's length, at most 32).",
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
@click.option(
    "--write-groups",
    "groups_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a long-form copy of the (single) set with a group on every item, "
    "near-duplicate items across conditions sharing one.",
)
@user_errors
def validate(files: tuple[str, ...], model_name: str | None, groups_out: str | None) -> None:
    """Check stimulus sets and print a summary of each.

    Parses every file first (structure errors need no tokenizer), then prints conditions,
    item counts, token lengths per condition with a test of whether they differ, and the
    window, checking that it can be filled. A set without groups whose items look paired
    across conditions gets a warning. Exits 2 on the first problem, naming file, line and
    field.
    """
    from cogsae.stimuli import load_stimuli, summary_text

    if groups_out and len(files) > 1:
        raise CogsaeError("--write-groups takes a single FILE", field="--write-groups")
    sets = [load_stimuli(path) for path in files]  # structural errors first: no tokenizer yet

    from cogsae.analysis.design import find_pairs, write_grouped
    from cogsae.extract import MAX_WINDOW_SIZE, Window, check_window_fillable
    from cogsae.model import DEFAULT_MODEL, load_tokenizer

    tokenizers: dict[str, Any] = {}
    for stimuli in sets:
        name = model_name or stimuli.model.get("name", DEFAULT_MODEL)
        if name not in tokenizers:
            tokenizers[name] = load_tokenizer(name)
        window = Window.for_stimuli(stimuli)
        check_window_fillable(tokenizers[name], stimuli, window)
        click.echo(summary_text(stimuli, tokenizers[name]))
        fitted = window.fit(tokenizers[name], stimuli)
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

    Prints the cache file: an .npz (no pickles) with values [items, positions, d_model],
    mask [items, positions] and, in its JSON ``structure`` entry, the window's tokens;
    keyed by model (name and weights), layer, dtype, window and stimuli content, so later
    runs reuse it.
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


# --------------------------------------------------------------------------- unit inspection
# and interventions (cogsae.inspect, cogsae.interventions)


def _sae_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--sae and --corpus, shared by inspect / clamp / attribute."""
    func = click.option(
        "--corpus",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="Corpus text or .jsonl file (repeatable). Default: the built-in corpus.",
    )(func)
    return click.option(
        "--sae",
        "sae_name",
        default="default",
        show_default=True,
        help="SAE: 'default' (shipped, layer 15 of smollm2-135m) or an SAE folder "
        "(cogsae / SAELens / sparsify). Its layer is used unless --layer is given.",
    )(func)


def _load_with_sae(
    model_name: str | None,
    layer: int | None,
    dtype: str,
    device: str,
    sae_name: str | None,
    suggested: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """(LoadedModel, SAE or None): the model read at --layer, else the SAE's layer, else
    ``suggested`` (a stimulus set's ``model:``); no SAE is loaded when ``sae_name`` is None."""
    from cogsae.model import DEFAULT_MODEL, load_model
    from cogsae.sae.io import check_compatible, load_sae

    suggested = suggested or {}
    sae = load_sae(sae_name) if sae_name else None
    if layer is None:
        layer = sae.cfg.layer if sae is not None else None
        layer = suggested.get("layer") if layer is None else layer
    loaded = load_model(
        model_name or suggested.get("name", DEFAULT_MODEL), layer=layer, dtype=dtype, device=device
    )
    if sae is not None:
        check_compatible(sae, loaded, sae_name)
        sae.to(loaded.device)
    return loaded, sae


def _slug(*parts: object) -> str:
    """A file-name-safe join of ``parts`` ("smollm2-135m-L15-sae-feature-12")."""
    from cogsae._io import safe_name

    return safe_name("-".join(map(str, parts))).lower()


def _strength(text: str, field: str) -> tuple[float, bool]:
    """'2.5' -> (2.5, False); '3x' -> (3.0, True): a multiple of a corpus statistic."""
    relative = text.strip().lower().endswith("x")
    try:
        return float(text.strip()[:-1] if relative else text), relative
    except ValueError as err:
        raise CogsaeError(f"expected a number or Kx, got {text!r}", field=field) from err


def _split_value(spec: str) -> tuple[str, str | None]:
    """'HEAD=VALUE' -> (HEAD, VALUE); 'HEAD' -> (HEAD, None)."""
    head, sep, value = spec.rpartition("=")
    return (head, value) if sep else (spec, None)


def _steer_source(source: str) -> tuple[str, Any]:
    """("feature", N), ("unit", N) or ("ensemble", Ensemble) from a --steer SOURCE."""
    from cogsae.inspect import load_ensemble

    kind, _, index = source.partition(":")
    if kind in ("feature", "unit"):
        if not index.isdigit():
            raise CogsaeError(f"expected {kind}:N, got {source!r}", field="steer")
        return kind, int(index)
    return "ensemble", load_ensemble(source)


@main.command("inspect")
@click.option("--feature", type=int, default=None, help="SAE feature to inspect.")
@click.option("--unit", type=int, default=None, help="Raw residual dimension to inspect.")
@click.option(
    "--ensemble",
    "ensemble_spec",
    default=None,
    metavar="RESULTS.json:METHOD:SPACE",
    help="A run's ensemble (its per-token score), e.g. results/success/RUN/results.json:rsa:sae.",
)
@_sae_options
@click.option("--tokens", "n_tokens", type=int, default=20_000, show_default=True)
@_model_options
@click.option("--examples", type=int, default=12, show_default=True, help="Top examples shown.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Output folder. Default: results/inspect/<model>-L<layer>-<sae>-<unit>.",
)
@user_errors
def inspect(
    feature: int | None,
    unit: int | None,
    ensemble_spec: str | None,
    sae_name: str,
    corpus: tuple[str, ...],
    n_tokens: int,
    model_name: str | None,
    layer: int | None,
    dtype: str,
    device: str,
    examples: int,
    out: str | None,
) -> None:
    """Inspect one unit over a corpus: density, histogram, top and quantile examples, logit lens.

    Give exactly one of --feature, --unit, --ensemble. The corpus scan (layer-L residual of
    --tokens tokens) is cached. Writes index.html (self-contained), histogram.png,
    summary.txt and inspection.json, and prints the summary.
    """
    from pathlib import Path

    from cogsae import inspect as features
    from cogsae.corpus import scan_chunks

    if sum(x is not None for x in (feature, unit, ensemble_spec)) != 1:
        raise CogsaeError("give exactly one of --feature, --unit, --ensemble", field="feature")
    ensemble = features.load_ensemble(ensemble_spec) if ensemble_spec else None
    needs_sae = feature is not None or (ensemble is not None and ensemble.space == "sae")
    loaded, sae = _load_with_sae(model_name, layer, dtype, device, sae_name if needs_sae else None)
    scan = scan_chunks(loaded, corpus, n_tokens=n_tokens)
    codes = features.sae_codes(scan, sae) if sae is not None else None
    if feature is not None:
        readout = features.feature_readout(codes, sae, feature)
    elif unit is not None:
        readout = features.unit_readout(scan, unit)
    else:
        readout = features.ensemble_readout(scan, ensemble, sae, codes)
    sae_tag = Path(sae_name).name if sae is not None else "raw"
    context = {
        "model": loaded.name,
        "layer": loaded.layer,
        "sae": sae_tag,
        "corpus": ", ".join(corpus) or "default",
    }
    inspection = features.inspect_readout(loaded, scan, readout, context=context, n_top=examples)
    folder = Path(
        out
        or Path(
            "results", "inspect", _slug(loaded.name, f"L{loaded.layer}", sae_tag, readout.label)
        )
    )
    page = features.write_inspection(inspection, readout.values, folder)
    click.echo(features.summary(inspection))
    click.echo(f"-> {page}")


@main.command("clamp")
@click.option("--prompt", "prompts", multiple=True, help="Prompt to continue (repeatable).")
@click.option(
    "--feature",
    "feature_specs",
    multiple=True,
    metavar="N[=VALUE]",
    help="Clamp SAE feature N to VALUE: a number, or Kx = K times the feature's max over the "
    "corpus scan; N=0 ablates (repeatable). With --measure give N alone: the value is swept.",
)
@click.option(
    "--steer",
    "steer_spec",
    default=None,
    metavar="SOURCE[=COEF]",
    help="Add COEF * the unit-norm direction of SOURCE: feature:N (decoder vector), unit:N, "
    "or RESULTS.json:METHOD:SPACE (a run's ensemble). COEF: a number (the added vector's "
    "norm) or Kx = K times the mean residual norm over the corpus scan.",
)
@click.option(
    "--measure",
    "measure_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Stimulus YAML: sweep --strengths, report the change of target vs reference "
    "mean log-probability (difference of differences, bootstrap CI) as CSV and PNG.",
)
@click.option(
    "--strengths",
    default=None,
    help="Comma-separated sweep for --measure (numbers or Kx). Default: 0x,1x,2x,4x,8x "
    "for --feature; -1x,-0.5x,-0.25x,0.25x,0.5x,1x for --steer.",
)
@_sae_options
@click.option(
    "--tokens", "n_tokens", type=int, default=20_000, show_default=True, help="Scan for Kx."
)
@_model_options
@click.option("--max-new-tokens", type=int, default=40, show_default=True)
@click.option("--sample", is_flag=True, help="Sample instead of greedy decoding.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling/bootstrap seed.")
@click.option("--include-first", is_flag=True, help="Also edit position 0 (the attention sink).")
@click.option("--boot", "n_boot", type=int, default=2000, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for --measure outputs. Default: results/interventions/<set>-<intervention>.",
)
@user_errors
def clamp(
    prompts: tuple[str, ...],
    feature_specs: tuple[str, ...],
    steer_spec: str | None,
    measure_path: str | None,
    strengths: str | None,
    sae_name: str,
    corpus: tuple[str, ...],
    n_tokens: int,
    model_name: str | None,
    layer: int | None,
    dtype: str,
    device: str,
    max_new_tokens: int,
    sample: bool,
    seed: int,
    include_first: bool,
    n_boot: int,
    out: str | None,
) -> None:
    """Clamp, ablate or steer at layer L: generations with and without (--prompt, values
    given: --feature N=VALUE, --steer SOURCE=COEF), or a measured effect (--measure, values
    swept by --strengths).

    Edits go through the layer-L hook (the extraction point), keep the SAE's error term
    (x' = x + sum_i (c_i - f_i(x)) d_i) and leave position 0 alone unless --include-first.
    """
    from pathlib import Path

    from cogsae import inspect as features
    from cogsae import interventions
    from cogsae.corpus import scan_chunks
    from cogsae.stimuli import load_stimuli

    if bool(prompts) == bool(measure_path):
        raise CogsaeError("give --prompt (generation) or --measure (a sweep)", field="prompt")
    clamps = [_split_value(spec) for spec in feature_specs]  # (N, VALUE or None)
    if not all(index.strip().isdigit() for index, _ in clamps):
        raise CogsaeError(f"expected N or N=VALUE, got {feature_specs}", field="feature")
    clamp_ids = tuple(int(index) for index, _ in clamps)
    steer_source, steer_coef = _split_value(steer_spec) if steer_spec else (None, None)
    steer_kind, steer_unit = _steer_source(steer_source) if steer_source else (None, None)
    if not clamps and steer_source is None:
        raise CogsaeError("give --feature and/or --steer", field="feature")
    if prompts and (any(v is None for _, v in clamps) or (steer_source and steer_coef is None)):
        raise CogsaeError("generation needs N=VALUE and SOURCE=COEF", field="feature")
    if measure_path and (
        (clamps and steer_source) or any(v is not None for _, v in clamps) or steer_coef
    ):
        raise CogsaeError(
            "--measure sweeps one intervention: give --feature N ... or --steer SOURCE, "
            "without values (they come from --strengths)",
            field="measure",
        )
    stimuli = load_stimuli(measure_path) if measure_path else None
    needs_sae = (
        bool(clamps)
        or steer_kind == "feature"
        or (steer_kind == "ensemble" and steer_unit.space == "sae")
    )
    loaded, sae = _load_with_sae(
        model_name,
        layer,
        dtype,
        device,
        sae_name if needs_sae else None,
        stimuli.model if stimuli else None,
    )
    if steer_kind == "feature":
        direction = features.feature_direction(sae, steer_unit)
    elif steer_kind == "unit":
        direction = features.unit_direction(loaded.d_model, steer_unit)
    else:
        direction = None if steer_unit is None else steer_unit.direction(loaded.d_model, sae)
    scan = functools.cache(lambda: scan_chunks(loaded, corpus, n_tokens=n_tokens))
    maxima = functools.cache(lambda: features.feature_maxima(features.sae_codes(scan(), sae)))

    def edits(clamp_values: list[str], coef: str | None) -> tuple[Any, ...]:
        """The edits for these VALUE / COEF strings, Kx resolved against the corpus scan."""
        out: list[Any] = []
        if clamps:
            values = []
            for feature, text in zip(clamp_ids, clamp_values, strict=True):
                value, relative = _strength(text, "feature")
                values.append(value * float(maxima()[feature]) if relative else value)
            out.append(interventions.Clamp(sae, clamp_ids, tuple(values)))
        if direction is not None and coef is not None:
            value, relative = _strength(coef, "steer")
            norm = float(scan().residual.float().norm(dim=1).mean()) if relative else 1.0
            out.append(interventions.Steer(direction, value * norm))
        return tuple(out)

    if prompts:
        active = edits([str(v) for _, v in clamps], steer_coef)
        described = ", ".join(
            [f"feature {spec}" for spec in feature_specs]
            + ([f"steer {steer_spec}"] if steer_spec else [])
        )
        gen = {
            "max_new_tokens": max_new_tokens,
            "sample": sample,
            "seed": seed,
            "include_first": include_first,
        }
        for prompt in prompts:
            click.echo(f"prompt: {prompt!r}")
            click.echo(f"  without: {interventions.generate(loaded, prompt, **gen)!r}")
            with_edit = interventions.generate(loaded, prompt, active, **gen)
            click.echo(f"  with {described}: {with_edit!r}")
        return
    default = "0x,1x,2x,4x,8x" if clamps else "-1x,-0.5x,-0.25x,0.25x,0.5x,1x"
    labels = [s.strip() for s in (strengths or default).split(",") if s.strip()]
    settings = [
        interventions.Setting(
            label,
            _strength(label, "strengths")[0],
            edits([label] * len(clamps), None if clamps else label),
        )
        for label in labels
    ]
    effects = interventions.measure_effect(
        loaded, stimuli, settings, n_boot=n_boot, seed=seed, include_first=include_first
    )
    what = f"features {','.join(map(str, clamp_ids))}" if clamps else f"steer {steer_source}"
    folder = Path(out or Path("results", "interventions", _slug(stimuli.name, what)))
    title = (
        f"{stimuli.name}: {stimuli.target} - {stimuli.reference}, {what} "
        f"({loaded.name} L{loaded.layer})"
    )
    interventions.write_effects(effects, folder / "effects.csv", folder / "effects.png", title)
    click.echo(title)
    click.echo(f"  {'strength':>9} {'effect':>9}  {'95% CI':^22} {'target':>9} {'reference':>9}")
    for e in effects:
        click.echo(
            f"  {e.label:>9} {e.effect:+9.4f}  [{e.ci_low:+9.4f}, {e.ci_high:+9.4f}] "
            f"{e.target_delta:+9.4f} {e.reference_delta:+9.4f}"
        )
    click.echo(f"  (nats/token vs no intervention) -> {folder}/effects.csv, effects.png")


@main.command("attribute")
@click.option("--feature", "feature_ids", multiple=True, type=int, help="SAE feature (repeatable).")
@click.option(
    "--ensemble",
    "ensemble_spec",
    default=None,
    metavar="RESULTS.json:METHOD:sae",
    help="Also take the units of a run's SAE-space ensemble.",
)
@_sae_options
@click.option("--tokens", "n_tokens", type=int, default=2048, show_default=True)
@_model_options
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="CSV path.")
@user_errors
def attribute(
    feature_ids: tuple[int, ...],
    ensemble_spec: str | None,
    sae_name: str,
    corpus: tuple[str, ...],
    n_tokens: int,
    model_name: str | None,
    layer: int | None,
    dtype: str,
    device: str,
    batch_size: int,
    out: str | None,
) -> None:
    """Ablate SAE features one at a time on a corpus sample; compare with gradient attribution.

    For each feature: the change in mean next-token loss when it is ablated (error term
    kept) and its first-order estimate -f_i (d_i . dL/dx) at layer L, with their Pearson
    and Spearman correlation. Use --dtype float32: bf16 rounding is of the order of
    single-feature effects.
    """
    from pathlib import Path

    from cogsae import inspect as features
    from cogsae import interventions

    ids = list(feature_ids)
    if ensemble_spec:
        ensemble = features.load_ensemble(ensemble_spec)
        if ensemble.space != "sae":
            raise CogsaeError("attribution needs an SAE-space ensemble", field="ensemble")
        ids += [u for u in ensemble.units if u not in ids]
    if not ids:
        raise CogsaeError("give --feature and/or --ensemble", field="feature")
    loaded, sae = _load_with_sae(model_name, layer, dtype, device, sae_name)
    batches = interventions.corpus_batches(loaded, corpus, n_tokens=n_tokens, batch_size=batch_size)
    result = interventions.ablation_attribution(loaded, sae, ids, batches)
    path = Path(
        out
        or Path(
            "results",
            "attribution",
            _slug(loaded.name, f"L{loaded.layer}", Path(sae_name).name) + ".csv",
        )
    )
    interventions.write_attribution(result, path)
    click.echo(f"loss {result.loss:.4f} nats/token over {result.n_tokens} tokens")
    click.echo(f"  {'feature':>8} {'ablation':>10} {'predicted':>10}")
    for f, a, b in zip(result.features, result.ablation, result.attribution, strict=True):
        click.echo(f"  {f:>8} {a:+10.5f} {-b:+10.5f}")
    click.echo(f"  correlation: Pearson {result.pearson:.3f}, Spearman {result.spearman:.3f}")
    click.echo(f"-> {path}")


def _int_list(_ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    """Parse "8" or "1,2,4,8,16" into a tuple of positive ints."""
    try:
        ks = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected integers like 8 or 1,2,4,8, got {value!r}") from None
    if not ks or min(ks) < 1:
        raise click.BadParameter("k must be positive")
    return ks


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_model_options
@_window_options
@click.option(
    "--sae",
    default="default",
    show_default=True,
    help="SAE folder (cogsae, SAELens or sparsify format), 'default' (shipped for the default "
    "model, layer 15) or 'none' for raw units only.",
)
@click.option(
    "--k",
    "k",
    default="8",
    show_default=True,
    callback=_int_list,
    help="Units per ensemble; a list (e.g. 1,2,4,8,16) adds an AUROC-vs-k curve. The first "
    "value is the main analysis.",
)
@click.option("--folds", "n_splits", type=int, default=5, show_default=True)
@click.option(
    "--repeats",
    "n_repeats",
    type=int,
    default=10,
    show_default=True,
    help="Repeats of the outer k-fold cross-validation (the corrected repeated-CV t-test "
    "needs them for stable verdicts).",
)
@click.option(
    "--permutations",
    "n_permutations",
    type=int,
    default=1000,
    show_default=True,
    help="Label permutations per readout at most (selection re-run in each; null readouts "
    "stop early).",
)
@click.option(
    "--bootstrap",
    "n_bootstrap",
    type=int,
    default=1000,
    show_default=True,
    help="Bootstrap resamples of the population-RSA and held-out transfer intervals.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Root seed of the run.")
@click.option(
    "--shuffle-labels",
    type=int,
    default=None,
    metavar="SEED",
    help="Permute condition labels with SEED first: a null run that must come out "
    "non-significant at the nominal rate.",
)
@click.option(
    "--corpus",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Text/jsonl files to scan for top examples (default: the default SAE's corpus).",
)
@click.option(
    "--snippets",
    "n_snippets",
    type=int,
    default=1000,
    show_default=True,
    help="Corpus snippets scanned for concept scoring (0 skips the scan).",
)
@click.option(
    "--judge",
    type=click.Choice(["auto", "embedding", "model", "api", "none"]),
    default="auto",
    show_default=True,
    help="Relevance judge of corpus examples: auto = an LLM API when COGSAE_JUDGE_URL and "
    "COGSAE_JUDGE_MODEL are set, else a sentence-embedding judge (agreement with a hand-labelled "
    "set: weighted kappa 0.65; the 135M model's own yes/no judge scored -0.01).",
)
@click.option("--output", default="results", show_default=True, help="Results root folder.")
@click.option("--run-id", default=None, help="Run folder name (default: hash of the options).")
@click.option(
    "--no-figures",
    "figures",
    is_flag=True,
    flag_value=False,
    default=True,
    help="Skip the PNG figures (for batches of null runs).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def run(file: str, quiet: bool, **options: Any) -> None:
    """Hunt a concept: compare every selection method in SAE and raw space.

    Extracts (cached) layer-L activations of FILE's items, encodes them with the SAE,
    runs contrasts and population RSA, evaluates k-unit ensembles selected by
    discriminative RSA, categorical RSA, max-activation and Welch-t contrast (plus k random
    units, a difference-of-means and a dense probe) with selection inside every fold,
    permutation p-values, paired comparisons, held-out transfer and a corpus scan. Writes
    results/<set>/<run>/report.html and friends. Re-running with the same options reuses
    finished stages.
    """
    from cogsae.pipeline import RunConfig, execute
    from cogsae.report import write_report

    options["model"] = options.pop("model_name")
    options["window_align"] = options.pop("window_align")
    config = RunConfig(stimuli=file, **options)
    click.echo(f"report: {write_report(execute(config, progress=not quiet))}")


@main.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "--output",
    default=None,
    help="Folder of the combined report (several DIRS); default results/combined.",
)
@user_errors
def report(dirs: tuple[str, ...], output: str | None) -> None:
    """Rebuild the report of a run DIR, or combine several runs into one comparison."""
    from pathlib import Path

    from cogsae.report import combine_reports, render_report

    if len(dirs) == 1 and output is None:
        click.echo(f"report: {render_report(Path(dirs[0]))}")
        return
    target = Path(output or "results/combined")
    click.echo(f"report: {combine_reports([Path(d) for d in dirs], target)}")


# --------------------------------------------------------------------------- SAE training and
# evaluation (cogsae.sae)


@main.command("train-sae")
@_model_options
@click.option(
    "--corpus",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Corpus text or .jsonl file (repeatable). Default: the built-in corpus.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="SAE folder.")
@click.option(
    "--overwrite", is_flag=True, help="Replace --out even if it holds files other than an SAE."
)
@click.option("--architecture", type=click.Choice(["topk", "standard"]), default=None)
@click.option("--d-sae", type=int, default=None, help="Number of latents.")
@click.option("--k", type=int, default=None, help="Active latents per token (topk).")
@click.option("--l1", "l1_coefficient", type=float, default=None, help="L1 weight (standard).")
@click.option("--lr", type=float, default=None, help="Peak Adam learning rate.")
@click.option("--batch-size", type=int, default=None, help="Tokens per step.")
@click.option("--tokens", "n_tokens", type=int, default=None, help="Training tokens (one epoch).")
@click.option("--buffer-tokens", type=int, default=None, help="Shuffle buffer size.")
@click.option("--seed", type=int, default=None)
@click.option("--checkpoint-every", type=int, default=None, help="Steps between checkpoints.")
@click.option("--dead-tokens", type=int, default=None, help="Dead if silent this many tokens.")
@click.option("--context-length", type=int, default=128, show_default=True)
@click.option(
    "--save-dtype",
    type=click.Choice(["float32", "float16", "bfloat16"]),
    default="float32",
    show_default=True,
    help="Precision of the saved weights.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def train_sae_command(
    model_name: str | None,
    layer: int | None,
    dtype: str,
    device: str,
    corpus: tuple[str, ...],
    out: str,
    overwrite: bool,
    context_length: int,
    save_dtype: str,
    quiet: bool,
    **hyper: Any,
) -> None:
    """Train an SAE on layer-L activations of a corpus (resumable; see cogsae.sae.train).

    Options left out take the TrainConfig defaults (topk, d_sae 8192, k 64, ...). --dtype
    is the model's precision (activation cache); the SAE's latent-selection product uses
    bfloat16 only where this CPU runs it natively (TrainConfig.dtype "auto").
    Rerunning the same command after an interruption resumes the activation cache and
    the training checkpoint.
    """
    from cogsae._io import check_replaceable
    from cogsae.corpus import corpus_files
    from cogsae.model import DEFAULT_MODEL, load_model
    from cogsae.sae.io import SAE_FILES
    from cogsae.sae.train import TrainConfig, train_sae_on_corpus

    config = TrainConfig(**{key: value for key, value in hyper.items() if value is not None})
    check_replaceable(out, SAE_FILES, overwrite=overwrite)
    loaded = load_model(model_name or DEFAULT_MODEL, layer=layer, dtype=dtype, device=device)
    train_sae_on_corpus(
        loaded,
        corpus_files(corpus),
        out,
        config,
        context_length=context_length,
        save_dtype=save_dtype,
        progress=not quiet,
    )
    click.echo(f"sae: {out}")


@main.command("sae-metrics")
@click.argument("sae_name", metavar="SAE")
@_model_options
@click.option(
    "--corpus",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Corpus text or .jsonl file (repeatable). Default: the built-in corpus.",
)
@click.option(
    "--subset",
    type=click.Choice(["heldout", "train", "all"]),
    default="heldout",
    show_default=True,
    help="Documents to read (heldout: those SAE training skips).",
)
@click.option("--tokens", "n_tokens", type=int, default=50_000, show_default=True)
@click.option("--context-length", type=int, default=128, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Chunks per batch.")
@click.option("--out", default=None, help="Metrics JSON. Default: SAE/metrics.json.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def sae_metrics_command(
    sae_name: str,
    model_name: str | None,
    layer: int | None,
    dtype: str,
    device: str,
    corpus: tuple[str, ...],
    subset: str,
    n_tokens: int,
    context_length: int,
    batch_size: int,
    out: str | None,
    quiet: bool,
) -> None:
    """L0, variance explained, MSE, dead fraction and CE loss recovered of SAE ('default' or
    a folder) at its layer, on held-out text; writes a JSON file and prints it."""
    import json
    from pathlib import Path

    from cogsae._io import write_json
    from cogsae.corpus import corpus_files, corpus_record
    from cogsae.model import DEFAULT_MODEL, load_model
    from cogsae.sae.io import DEFAULT_SAE_DIR, check_compatible, load_sae
    from cogsae.sae.metrics import sae_metrics

    sae = load_sae(sae_name)
    loaded = load_model(
        model_name or sae.cfg.model_name or DEFAULT_MODEL,
        layer=sae.cfg.layer if layer is None else layer,
        dtype=dtype,
        device=device,
    )
    check_compatible(sae, loaded, sae_name)
    paths = corpus_files(corpus)
    metrics = sae_metrics(
        sae.to(loaded.device),
        loaded,
        paths,
        n_tokens,
        subset=subset,  # type: ignore[arg-type]
        context_length=context_length,
        batch_size=batch_size,
        progress=not quiet,
    )
    folder = DEFAULT_SAE_DIR if sae_name == "default" else Path(sae_name)
    record = {
        "sae": sae_name,
        "model": loaded.name,
        "layer": loaded.layer,
        "dtype": dtype,
        "corpus": corpus_record(paths),
        "subset": subset,
        "context_length": context_length,
        "position_0_and_massive_tokens": "excluded from the statistics, unedited in the CE runs",
        **metrics.to_dict(),
    }
    target = Path(out) if out else folder / "metrics.json"
    write_json(target, record)
    click.echo(json.dumps(record, indent=2))
    click.echo(f"metrics: {target}")
