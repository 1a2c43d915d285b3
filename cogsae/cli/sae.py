"""`cogsae train-sae` and `cogsae sae-metrics`: train an SAE on a corpus and measure it
(`cogsae.sae`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import click

from cogsae.cli.options import group, model_options, options
from cogsae.cli.run import Progress
from cogsae.engine import check_engine
from cogsae.flags import CorpusOptions, EngineOptions, ModelOptions, option
from cogsae.sae.train import TrainConfig


@dataclass
class TrainOptions:
    """Options of `cogsae train-sae` beside the `TrainConfig` hyperparameters.

    Attributes:
        out: the SAE folder written (with ``layers``: the release folder).
        layers: train one SAE per layer, from one activation pass, into a release folder
            (``out/blocks.L.hook_resid_post``); --layer is then ignored.
        overwrite: replace ``out`` even if it holds files other than an SAE.
        save_dtype: precision of the saved weights.
    """

    out: str = option(help="SAE folder.", aliases=("--output",), path="dir")
    layers: tuple[int, ...] = option(
        (), "One SAE per layer into --out (a release folder), e.g. 6,12,15,20,25.", separator=","
    )
    overwrite: bool = option(False, "Replace --out even if it holds files other than an SAE.")
    save_dtype: str = option(
        "float32", "Precision of the saved weights.", choices=("float32", "float16", "bfloat16")
    )


@dataclass
class MetricsOptions:
    """Options of `cogsae sae-metrics`.

    Attributes:
        sae: "default" or an SAE folder.
        subset: documents read: "heldout" (those SAE training skips), "train" or "all".
        batch_size: corpus chunks per batch.
        out: metrics JSON; None = <SAE folder>/metrics.json.
    """

    sae: str = option(help="SAE: 'default' or an SAE folder.", argument=True, metavar="SAE")
    subset: str = option(
        "heldout",
        "Documents to read (heldout: those SAE training skips).",
        choices=("heldout", "train", "all"),
    )
    batch_size: int = option(8, "Corpus chunks per batch.")
    out: str | None = option(
        None, "Metrics JSON. Default: SAE/metrics.json.", aliases=("--output",), path="new file"
    )


@click.command("train-sae")
@options(
    model=ModelOptions,
    corpus=group(CorpusOptions, "corpus", "context_length"),
    opts=TrainOptions,
    config=TrainConfig,
    engine=group(EngineOptions, "engine"),
    progress=Progress,
)
def train_sae_command(
    model: ModelOptions,
    corpus: CorpusOptions,
    opts: TrainOptions,
    config: TrainConfig,
    engine: EngineOptions,
    progress: Progress,
) -> None:
    """Train an SAE on layer-L activations of a corpus (resumable; see cogsae.sae.train).

    Options left out take the TrainConfig defaults shown. --dtype is the model's
    precision (activation cache); the SAE trains on --device too, its latent-selection
    product in bfloat16 only where that device runs it natively (TrainConfig.dtype
    "auto"). Rerunning the same command after an interruption resumes the activation
    cache and the training checkpoint.
    """
    from cogsae import resolve
    from cogsae._io import check_replaceable
    from cogsae.corpus import corpus_files
    from cogsae.sae.io import SAE_FILES
    from cogsae.sae.train import train_sae_on_corpus

    config = replace(config, device=model.device, dtype="auto")  # the SAE trains beside the model
    if opts.layers:
        from cogsae.sae.release import train_release

        model.layer = max(opts.layers)
        loaded, _ = resolve.load(model_options(model), None)
        folders = train_release(
            loaded,
            corpus_files(corpus.corpus),
            opts.out,
            config,
            opts.layers,
            context_length=corpus.context_length,
            save_dtype=opts.save_dtype,
            progress=not progress.quiet,
            engine=check_engine(engine.engine),
        )
        for layer, folder in folders.items():
            click.echo(f"layer {layer}: {folder}")
        return
    check_replaceable(opts.out, SAE_FILES, overwrite=opts.overwrite)
    loaded, _ = resolve.load(model_options(model), None)
    train_sae_on_corpus(
        loaded,
        corpus_files(corpus.corpus),
        opts.out,
        config,
        context_length=corpus.context_length,
        save_dtype=opts.save_dtype,
        progress=not progress.quiet,
        engine=check_engine(engine.engine),
    )
    click.echo(f"sae: {opts.out}")


@click.command("sae-metrics")
@options(
    opts=MetricsOptions,
    model=ModelOptions,
    corpus=group(CorpusOptions, n_tokens=50_000),
    engine=EngineOptions,
    progress=Progress,
)
def sae_metrics_command(
    opts: MetricsOptions,
    model: ModelOptions,
    corpus: CorpusOptions,
    engine: EngineOptions,
    progress: Progress,
) -> None:
    """L0, variance explained, MSE, dead fraction and CE loss recovered of SAE ('default', an
    SAE folder, or a release folder's SAE of --layer) at its layer, on held-out text;
    writes a JSON file (default: in the SAE's folder) and prints it."""
    import json
    from pathlib import Path

    from cogsae import resolve
    from cogsae._io import write_json
    from cogsae.corpus import corpus_files, corpus_record
    from cogsae.sae.io import resolve_sae_folder
    from cogsae.sae.metrics import sae_metrics

    model = model_options(model)
    loaded, sae = resolve.load(model, opts.sae)
    paths = corpus_files(corpus.corpus)
    metrics = sae_metrics(
        sae,
        loaded,
        paths,
        corpus.n_tokens,
        subset=opts.subset,  # type: ignore[arg-type]
        context_length=corpus.context_length,
        batch_size=opts.batch_size,
        progress=not progress.quiet,
        engine=check_engine(engine.engine),
        workers=engine.workers,
    )
    folder = resolve_sae_folder(opts.sae, loaded.layer)
    record = {
        "sae": opts.sae,
        "model": loaded.name,
        "layer": loaded.layer,
        "dtype": model.dtype,
        "corpus": corpus_record(paths),
        "subset": opts.subset,
        "context_length": corpus.context_length,
        "position_0_and_massive_tokens": "excluded from the statistics, unedited in the CE runs",
        **metrics.to_dict(),
    }
    target = Path(opts.out) if opts.out else folder / "metrics.json"
    write_json(target, record)
    click.echo(json.dumps(record, indent=2))
    click.echo(f"metrics: {target}")
