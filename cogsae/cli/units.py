"""`cogsae inspect` and `attribute`: one unit over a corpus, and ablation vs gradient
attribution of SAE features (`cogsae.inspect`, `cogsae.interventions`); `load`,
`unit_options` and `slug` are shared with `cogsae.cli.clamp`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from cogsae.cli.options import group, model_options, options
from cogsae.errors import CogsaeError
from cogsae.flags import CorpusOptions, EngineOptions, ModelOptions, SAEOptions, flag, option


@dataclass
class InspectOptions:
    """Options of `cogsae inspect` (exactly one of feature, unit, ensemble).

    Attributes:
        feature: SAE feature to inspect.
        unit: raw residual dimension to inspect.
        ensemble: "RESULTS.json:METHOD:SPACE", a run's ensemble (its per-token score).
        examples: top examples shown.
        out: output folder; None = results/inspect/<model>-L<layer>-<sae>-<unit>.
    """

    feature: int | None = option(None, "SAE feature to inspect.")
    unit: int | None = option(None, "Raw residual dimension to inspect.")
    ensemble: str | None = option(
        None,
        "A run's ensemble (its per-token score), e.g. results/success/RUN/results.json:rsa:sae.",
        metavar="RESULTS.json:METHOD:SPACE",
    )
    examples: int = option(12, "Top examples shown.")
    out: str | None = option(
        None,
        "Output folder. Default: results/inspect/<model>-L<layer>-<sae>-<unit>.",
        aliases=("--output",),
        path="dir",
    )


@dataclass
class AttributeOptions:
    """Options of `cogsae attribute`.

    Attributes:
        feature: SAE features to ablate.
        ensemble: "RESULTS.json:METHOD:sae": also take this SAE-space ensemble's units.
        batch_size: corpus chunks per batch.
        out: CSV path; None = results/attribution/<model>-L<layer>-<sae>.csv.
    """

    feature: tuple[int, ...] = option((), "SAE feature (repeatable).")
    ensemble: str | None = option(
        None,
        "Also take the units of a run's SAE-space ensemble.",
        metavar="RESULTS.json:METHOD:sae",
    )
    batch_size: int = option(8, "Corpus chunks per batch.")
    out: str | None = option(None, "CSV path.", aliases=("--output",), path="new file")


def load(
    model: ModelOptions, sae: SAEOptions, needs_sae: bool, suggested: Mapping[str, Any] | None
) -> tuple[Any, Any]:
    """(model, SAE or None) by `cogsae.resolve`; the SAE only when ``needs_sae``."""
    from cogsae import resolve

    if needs_sae and sae.sae == "none":
        raise CogsaeError("SAE features need an SAE", field=flag(SAEOptions, "sae"))
    return resolve.load(model_options(model), sae.sae if needs_sae else None, suggested)


def unit_options(cls: type, **corpus_defaults: Any) -> Callable[..., Any]:
    """The options of a command on one model, SAE and corpus scan: ``cls`` (as ``opts``),
    `SAEOptions`, --corpus/--tokens (with ``corpus_defaults``) and `ModelOptions`."""
    return options(
        opts=cls,
        sae=SAEOptions,
        corpus=group(CorpusOptions, "corpus", "n_tokens", **corpus_defaults),
        model=ModelOptions,
    )


def slug(*parts: object) -> str:
    """A file-name-safe join of ``parts`` ("smollm2-135m-L15-sae-feature-12")."""
    from cogsae._io import safe_name

    return safe_name("-".join(map(str, parts))).lower()


@click.command("inspect")
@options(
    opts=InspectOptions,
    sae=SAEOptions,
    corpus=group(CorpusOptions, "corpus", "n_tokens"),
    model=ModelOptions,
    engine=EngineOptions,
)
def inspect(
    opts: InspectOptions,
    sae: SAEOptions,
    corpus: CorpusOptions,
    model: ModelOptions,
    engine: EngineOptions,
) -> None:
    """Inspect one unit over a corpus: density, histogram, top and quantile examples, logit lens.

    Give exactly one of --feature, --unit, --ensemble. An SAE feature is read from a
    feature scan of --tokens tokens (density, top examples and a quantile sample of every
    feature; --engine ray spreads it over Ray workers, with the same result); a raw unit or
    an ensemble from the cached layer-L residual scan. Writes index.html (self-contained),
    histogram.png, summary.txt and inspection.json, and prints the summary.
    """
    from cogsae import inspect as features

    if sum(x is not None for x in (opts.feature, opts.unit, opts.ensemble)) != 1:
        raise CogsaeError(
            "give exactly one of --feature, --unit, --ensemble",
            field=flag(InspectOptions, "feature"),
        )
    if opts.feature is None and engine.engine != "local":
        raise CogsaeError(
            "--engine ray scans SAE features (--feature); --unit and --ensemble run here",
            field=flag(EngineOptions, "engine"),
        )
    ensemble = features.load_ensemble(opts.ensemble) if opts.ensemble else None
    needs_sae = opts.feature is not None or (ensemble is not None and ensemble.space == "sae")
    loaded, encoder = load(model, sae, needs_sae, None)
    sae_tag = Path(sae.sae).name if encoder is not None else "raw"
    context = {
        "model": loaded.name,
        "layer": loaded.layer,
        "sae": sae_tag,
        "corpus": ", ".join(corpus.corpus) or "default",
    }
    if opts.feature is not None:
        inspection, values = _feature_page(loaded, encoder, opts, corpus, engine, context)
        label = inspection.label
    else:
        inspection, values, label = _readout_page(loaded, encoder, ensemble, opts, corpus, context)
    folder = Path(
        opts.out
        or Path("results", "inspect", slug(loaded.name, f"L{loaded.layer}", sae_tag, label))
    )
    page = features.write_inspection(inspection, values, folder)
    click.echo(features.summary(inspection))
    click.echo(f"-> {page}")


def _feature_page(
    loaded: Any,
    sae: Any,
    opts: InspectOptions,
    corpus: CorpusOptions,
    engine: EngineOptions,
    context: dict[str, Any],
) -> tuple[Any, Any]:
    """(inspection, sampled values) of SAE feature ``opts.feature`` from a feature scan."""
    from cogsae import inspect as features
    from cogsae.corpus import corpus_files
    from cogsae.corpus.feature_scan import feature_scan
    from cogsae.engine import check_engine

    if not 0 <= opts.feature < sae.cfg.d_sae:
        raise CogsaeError(
            f"the SAE has features 0..{sae.cfg.d_sae - 1}", field=flag(InspectOptions, "feature")
        )
    paths = corpus_files(corpus.corpus)
    scan = feature_scan(
        loaded,
        sae,
        paths,
        n_tokens=corpus.n_tokens,
        top_k=opts.examples,
        engine=check_engine(engine.engine),
        workers=engine.workers,
    )
    return features.inspect_feature_scan(
        loaded, sae, scan, opts.feature, paths, context=context, n_top=opts.examples
    )


def _readout_page(
    loaded: Any,
    sae: Any,
    ensemble: Any,
    opts: InspectOptions,
    corpus: CorpusOptions,
    context: dict[str, Any],
) -> tuple[Any, Any, str]:
    """(inspection, per-token values, label) of a raw unit or an ensemble, from the
    layer-L residual scan."""
    from cogsae import inspect as features
    from cogsae.corpus import scan_chunks

    scan = scan_chunks(loaded, corpus.corpus, n_tokens=corpus.n_tokens)
    if opts.unit is not None:
        readout = features.unit_readout(scan, opts.unit)
    else:
        codes = features.sae_codes(scan, sae) if sae is not None else None
        readout = features.ensemble_readout(scan, ensemble, sae, codes)
    inspection = features.inspect_readout(
        loaded, scan, readout, context=context, n_top=opts.examples
    )
    return inspection, readout.values, readout.label


@click.command("attribute")
@unit_options(AttributeOptions, n_tokens=2048)
def attribute(
    opts: AttributeOptions, sae: SAEOptions, corpus: CorpusOptions, model: ModelOptions
) -> None:
    """Ablate SAE features one at a time on a corpus sample; compare with gradient attribution.

    For each feature: the change in mean next-token loss when it is ablated (error term
    kept) and its first-order estimate -f_i (d_i . dL/dx) at layer L, with their Pearson
    and Spearman correlation. Use --dtype float32: bf16 rounding is of the order of
    single-feature effects.
    """
    from cogsae import inspect as features
    from cogsae import interventions

    ids = list(opts.feature)
    if opts.ensemble:
        ensemble = features.load_ensemble(opts.ensemble)
        if ensemble.space != "sae":
            raise CogsaeError(
                "attribution needs an SAE-space ensemble", field=flag(AttributeOptions, "ensemble")
            )
        ids += [u for u in ensemble.units if u not in ids]
    if not ids:
        raise CogsaeError(
            "give --feature and/or --ensemble", field=flag(AttributeOptions, "feature")
        )
    loaded, encoder = load(model, sae, True, None)
    batches = interventions.corpus_batches(
        loaded, corpus.corpus, n_tokens=corpus.n_tokens, batch_size=opts.batch_size
    )
    result = interventions.ablation_attribution(loaded, encoder, ids, batches)
    name = slug(loaded.name, f"L{loaded.layer}", Path(sae.sae).name) + ".csv"
    path = Path(opts.out or Path("results", "attribution", name))
    interventions.write_attribution(result, path)
    click.echo(f"loss {result.loss:.4f} nats/token over {result.n_tokens} tokens")
    click.echo(f"  {'feature':>8} {'ablation':>10} {'predicted':>10}")
    for f, a, b in zip(result.features, result.ablation, result.attribution, strict=True):
        click.echo(f"  {f:>8} {a:+10.5f} {-b:+10.5f}")
    click.echo(f"  correlation: Pearson {result.pearson:.3f}, Spearman {result.spearman:.3f}")
    click.echo(f"-> {path}")
