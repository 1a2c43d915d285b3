"""`cogsae clamp`: clamp, ablate or steer at layer L, in generation or in a measured sweep
(`cogsae.interventions`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from cogsae.cli.units import load, slug, unit_options
from cogsae.errors import CogsaeError
from cogsae.flags import CorpusOptions, ModelOptions, SAEOptions, flag, option


@dataclass
class ClampOptions:
    """Options of `cogsae clamp`: generation (prompts) or a measured sweep (measure).

    Attributes:
        prompt: prompts to continue.
        feature: "N=VALUE" clamps (generation) or "N" (swept by strengths).
        steer: "SOURCE[=COEF]": a direction added at layer L.
        measure: stimulus YAML of the sweep.
        strengths: comma-separated sweep; None = the default sweep of the edit.
        max_new_tokens, sample, seed, include_first: generation settings (seed: also of
            the bootstrap).
        boot: bootstrap resamples of the sweep's intervals.
        out: folder of the sweep's outputs.
    """

    prompt: tuple[str, ...] = option((), "Prompt to continue (repeatable).")
    feature: tuple[str, ...] = option(
        (),
        "Clamp SAE feature N to VALUE: a number, or Kx = K times the feature's max over the "
        "corpus scan; N=0 ablates (repeatable). With --measure give N alone: the value is "
        "swept.",
        metavar="N[=VALUE]",
    )
    steer: str | None = option(
        None,
        "Add COEF * the unit-norm direction of SOURCE: feature:N (decoder vector), unit:N, "
        "or RESULTS.json:METHOD:SPACE (a run's ensemble). COEF: a number (the added vector's "
        "norm) or Kx = K times the mean residual norm over the corpus scan.",
        metavar="SOURCE[=COEF]",
    )
    measure: str | None = option(
        None,
        "Stimulus YAML: sweep --strengths, report the change of target vs reference "
        "mean log-probability (difference of differences, bootstrap CI) as CSV and PNG.",
        path="new file",
    )
    strengths: str | None = option(
        None,
        "Comma-separated sweep for --measure (numbers or Kx). Default: 0x,1x,2x,4x,8x "
        "for --feature; -1x,-0.5x,-0.25x,0.25x,0.5x,1x for --steer.",
    )
    max_new_tokens: int = option(40, "Tokens generated per prompt.")
    sample: bool = option(False, "Sample instead of greedy decoding.")
    seed: int = option(0, "Sampling/bootstrap seed.")
    include_first: bool = option(False, "Also edit position 0 (the attention sink).")
    boot: int = option(2000, "Bootstrap resamples of the measured effects.")
    out: str | None = option(
        None,
        "Folder for --measure outputs. Default: results/interventions/<set>-<intervention>.",
        aliases=("--output",),
        path="dir",
    )


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


@dataclass
class EditPlan:
    """The edits asked for: feature clamps and/or one steering source, values still text.

    Attributes:
        clamps: (feature N, VALUE or None) per --feature.
        steer: the --steer SOURCE, or None.
        coef: its COEF, or None.
        kind: "feature", "unit" or "ensemble" (the source's kind), or None.
        source: the feature or unit index, or the loaded `Ensemble`.
    """

    clamps: list[tuple[int, str | None]]
    steer: str | None
    coef: str | None
    kind: str | None
    source: Any

    @classmethod
    def parse(cls, opts: ClampOptions) -> EditPlan:
        """Parse --feature and --steer and check that they fit --prompt or --measure."""
        feature = flag(ClampOptions, "feature")
        if bool(opts.prompt) == bool(opts.measure):
            raise CogsaeError(
                "give --prompt (generation) or --measure (a sweep)",
                field=flag(ClampOptions, "prompt"),
            )
        split = [_split_value(spec) for spec in opts.feature]
        if not all(index.strip().isdigit() for index, _ in split):
            raise CogsaeError(f"expected N or N=VALUE, got {opts.feature}", field=feature)
        clamps = [(int(index), value) for index, value in split]
        steer, coef = _split_value(opts.steer) if opts.steer else (None, None)
        kind, source = _steer_source(steer) if steer else (None, None)
        if not clamps and steer is None:
            raise CogsaeError("give --feature and/or --steer", field=feature)
        if opts.prompt and (any(v is None for _, v in clamps) or (steer and coef is None)):
            raise CogsaeError("generation needs N=VALUE and SOURCE=COEF", field=feature)
        if opts.measure and ((clamps and steer) or any(v is not None for _, v in clamps) or coef):
            raise CogsaeError(
                "--measure sweeps one intervention: give --feature N ... or --steer SOURCE, "
                "without values (they come from --strengths)",
                field=flag(ClampOptions, "measure"),
            )
        return cls(clamps, steer, coef, kind, source)

    @property
    def ids(self) -> tuple[int, ...]:
        """The clamped features."""
        return tuple(index for index, _ in self.clamps)

    @property
    def needs_sae(self) -> bool:
        """Whether an edit reads the SAE (a clamp, a feature direction, an SAE ensemble)."""
        return (
            bool(self.clamps)
            or self.kind == "feature"
            or (self.kind == "ensemble" and self.source.space == "sae")
        )


def _steer_source(source: str) -> tuple[str, Any]:
    """("feature", N), ("unit", N) or ("ensemble", Ensemble) from a --steer SOURCE."""
    from cogsae.inspect import load_ensemble

    kind, _, index = source.partition(":")
    if kind in ("feature", "unit"):
        if not index.isdigit():
            raise CogsaeError(
                f"expected {kind}:N, got {source!r}", field=flag(ClampOptions, "steer")
            )
        return kind, int(index)
    return "ensemble", load_ensemble(source)


class Editor:
    """Builds `cogsae.interventions` edits from VALUE / COEF texts, resolving Kx against a
    corpus scan made (once) only when a relative value needs it."""

    def __init__(self, plan: EditPlan, loaded: Any, sae: Any, corpus: CorpusOptions) -> None:
        from cogsae import inspect as features
        from cogsae.corpus import scan_chunks

        self.plan, self.sae = plan, sae
        if plan.kind == "feature":
            self.direction = features.feature_direction(sae, plan.source)
        elif plan.kind == "unit":
            self.direction = features.unit_direction(loaded.d_model, plan.source)
        elif plan.kind == "ensemble":
            self.direction = plan.source.direction(loaded.d_model, sae)
        else:
            self.direction = None
        self.scan = functools.cache(
            lambda: scan_chunks(loaded, corpus.corpus, n_tokens=corpus.n_tokens)
        )
        self.maxima = functools.cache(
            lambda: features.feature_maxima(features.sae_codes(self.scan(), sae))
        )

    def edits(self, clamp_values: list[str], coef: str | None) -> tuple[Any, ...]:
        """The edits for these VALUE / COEF strings, Kx resolved against the corpus scan."""
        from cogsae import interventions

        out: list[Any] = []
        if self.plan.clamps:
            values = []
            for feature, text in zip(self.plan.ids, clamp_values, strict=True):
                value, relative = _strength(text, flag(ClampOptions, "feature"))
                values.append(value * float(self.maxima()[feature]) if relative else value)
            out.append(interventions.Clamp(self.sae, self.plan.ids, tuple(values)))
        if self.direction is not None and coef is not None:
            value, relative = _strength(coef, flag(ClampOptions, "steer"))
            norm = float(self.scan().residual.float().norm(dim=1).mean()) if relative else 1.0
            out.append(interventions.Steer(self.direction, value * norm))
        return tuple(out)


def _generate(opts: ClampOptions, loaded: Any, editor: Editor) -> None:
    """Print each prompt's continuation without and with the edits."""
    from cogsae import interventions

    plan = editor.plan
    active = editor.edits([str(v) for _, v in plan.clamps], plan.coef)
    described = ", ".join(
        [f"feature {spec}" for spec in opts.feature]
        + ([f"steer {opts.steer}"] if opts.steer else [])
    )
    gen = {
        "max_new_tokens": opts.max_new_tokens,
        "sample": opts.sample,
        "seed": opts.seed,
        "include_first": opts.include_first,
    }
    for prompt in opts.prompt:
        click.echo(f"prompt: {prompt!r}")
        click.echo(f"  without: {interventions.generate(loaded, prompt, **gen)!r}")
        with_edit = interventions.generate(loaded, prompt, active, **gen)
        click.echo(f"  with {described}: {with_edit!r}")


def _measure(opts: ClampOptions, loaded: Any, editor: Editor, stimuli: Any) -> None:
    """Sweep the strengths on the set, write effects.csv/png and print the table."""
    from cogsae import interventions

    plan = editor.plan
    default = "0x,1x,2x,4x,8x" if plan.clamps else "-1x,-0.5x,-0.25x,0.25x,0.5x,1x"
    labels = [s.strip() for s in (opts.strengths or default).split(",") if s.strip()]
    where = flag(ClampOptions, "strengths")
    settings = [
        interventions.Setting(
            label,
            _strength(label, where)[0],
            editor.edits([label] * len(plan.clamps), None if plan.clamps else label),
        )
        for label in labels
    ]
    effects = interventions.measure_effect(
        loaded,
        stimuli,
        settings,
        n_boot=opts.boot,
        seed=opts.seed,
        include_first=opts.include_first,
    )
    what = f"features {','.join(map(str, plan.ids))}" if plan.clamps else f"steer {plan.steer}"
    folder = Path(opts.out or Path("results", "interventions", slug(stimuli.name, what)))
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


@click.command("clamp")
@unit_options(ClampOptions)
def clamp(opts: ClampOptions, sae: SAEOptions, corpus: CorpusOptions, model: ModelOptions) -> None:
    """Clamp, ablate or steer at layer L: generations with and without (--prompt, values
    given: --feature N=VALUE, --steer SOURCE=COEF), or a measured effect (--measure, values
    swept by --strengths).

    Edits go through the layer-L hook (the extraction point), keep the SAE's error term
    (x' = x + sum_i (c_i - f_i(x)) d_i) and leave position 0 alone unless --include-first.
    --tokens is the corpus scan that Kx values are relative to.
    """
    from cogsae.stimuli import load_stimuli

    plan = EditPlan.parse(opts)
    stimuli = load_stimuli(opts.measure) if opts.measure else None
    loaded, encoder = load(model, sae, plan.needs_sae, stimuli.model if stimuli else None)
    editor = Editor(plan, loaded, encoder, corpus)
    if stimuli is None:
        _generate(opts, loaded, editor)
    else:
        _measure(opts, loaded, editor, stimuli)
