"""`cogsae run`: the concept hunt, stage by stage, resumable.

stimuli -> raw activations (cached) -> SAE features -> per concept: contrasts, population
RSA, cross-validated ensembles of every selection method in every space beside the
baselines, paired comparisons, held-out transfer, corpus scan -> results.json (read by
`cogsae.report`).

Each finished stage is stored as data (`cogsae._io.save_data`: JSON + npz, checksummed,
never pickled) in ``<run dir>/stages/`` together with the run key it was computed under;
a run restarted with the same arguments finds the same run dir and reuses a stage only
when its key matches. Everything a run resolves (stimuli, fitted window, model, layer,
SAE, folds) is resolved once by `cogsae.pipeline.plan.build_plan`; the run key hashes that
plan: the stimulus file's content, the model's and the SAE's file hashes, the resolved
window, layer and folds and every analysis option.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from cogsae import streams
from cogsae._io import (
    check_writable,
    inside,
    load_data,
    safe_name,
    save_data,
    write_json,
)
from cogsae.activations import Activations
from cogsae.analysis.contrasts import (
    factorial_glm,
    univariate_contrast,
)
from cogsae.analysis.cv import make_plan
from cogsae.analysis.design import NUISANCE_NAMES, nuisance_features
from cogsae.analysis.ensemble import (
    CVPlan,
    DenseL2,
    DiffMeans,
    MethodResult,
    SelectedL1,
    compare,
    evaluate,
)
from cogsae.analysis.overlap import mark_coinciding, selection_overlap
from cogsae.analysis.resampling import permutation_blocks, permute_labels
from cogsae.analysis.rsa import (
    categorical_rsa,
    discriminative_rsa,
)
from cogsae.constants import (
    CONFOUND,
    CONTRAST,
    DENSE_L2,
    MAX_ACTIVATION,
    NUISANCE,
    OMNIBUS,
    RANDOM,
    RSA_CATEGORICAL,
    RSA_DISCRIMINATIVE,
)
from cogsae.engine import check_engine
from cogsae.errors import CogsaeError
from cogsae.extract import Window, extract_activations
from cogsae.model import LoadedModel, load_model
from cogsae.pipeline.causal_stage import run_causal
from cogsae.pipeline.config import (
    RunConfig,
    replication_seeds,
)
from cogsae.pipeline.corpus_stage import score_corpus
from cogsae.pipeline.geometry_stage import geometry_record
from cogsae.pipeline.omnibus_stage import analyse_omnibus
from cogsae.pipeline.plan import Analysis, RunPlan, build_plan
from cogsae.pipeline.results import ConceptResult, RunResult
from cogsae.pipeline.verdicts import Contrast, confound_pairs, design_warnings, with_stability
from cogsae.sae.base import SAE, encode_batched
from cogsae.sae.io import load_sae
from cogsae.stimuli import StimulusSet, length_check
from cogsae.streams import Stream
from cogsae.version import __version__

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Run:
    """A run in progress: its resolved plan, directory and stage timings."""

    plan: RunPlan
    directory: Path
    timings: dict[str, float] = field(default_factory=dict)
    progress: bool = True

    @property
    def config(self) -> RunConfig:
        return self.plan.config

    @property
    def stimuli(self) -> StimulusSet:
        return self.plan.stimuli

    @property
    def window(self) -> Window:
        """The fitted window (always with a size)."""
        return self.plan.window

    @property
    def key(self) -> str:
        return self.plan.key

    @property
    def tokenizer(self) -> Any:
        return self.plan.tokenizer

    def stage(self, name: str, compute: Callable[[], T]) -> T:
        """Stage ``name`` from ``stages/name.npz`` if it was stored under this run's key,
        else computed and stored (a broken or foreign file is reported and replaced)."""
        path = self.directory / "stages" / f"{name}.npz"
        cached = load_data(path, self.key)
        if cached is not None:
            return cached
        start = time.perf_counter()
        value = compute()
        self.timings[name] = round(time.perf_counter() - start, 2)
        # The folder is created with its first stage, not before; run.json keeps the stage
        # times, so a report rebuilt from reused stages still says what they cost.
        write_json(
            self.directory / RUN_RECORD,
            {"key": self.key, "config": asdict(self.config), "timings_s": self.timings},
        )
        save_data(path, value, self.key)
        return value


RUN_RECORD = "run.json"
"""File in a run folder naming the run key it belongs to."""


def run_directory(config: RunConfig, stimuli: StimulusSet, key: str) -> Path:
    """``<output>/<set name>[-shuffled<seed>]/<run id>``, always inside ``output``.

    The set's name becomes a safe file name (its display name stays in the report); a
    ``--run-id`` must already be one (no separators, no ``..``).
    """
    name = safe_name(stimuli.name)
    if config.shuffle_labels is not None:
        name += f"-shuffled{config.shuffle_labels}"
    run_id = config.run_id or f"run-{key}"
    if safe_name(run_id) != run_id:
        raise CogsaeError(
            f"run id {run_id!r} must be a plain name (letters, digits, . _ + = -)",
            field="--run-id",
        )
    return inside(config.output, Path(name) / run_id, field="--output")


def _claim(directory: Path, key: str) -> dict[str, float]:
    """Refuse a run folder that holds a run made with other settings (``--run-id`` reuse);
    return the stage times recorded by an earlier run with the same key."""
    record = directory / RUN_RECORD
    if not record.exists():
        return {}
    try:
        found = json.loads(record.read_text())
        found_key, timings = found.get("key"), dict(found.get("timings_s", {}))
    except (OSError, ValueError, AttributeError, TypeError):
        found_key, timings = None, {}
    if found_key != key:
        raise CogsaeError(
            f"holds a run made with other settings (run key {found_key}, now {key}); "
            "choose another --run-id or delete the folder",
            path=directory,
            field="--run-id",
        )
    return timings


def prepare(config: RunConfig, progress: bool = True) -> Run:
    """Resolve the run once (`build_plan`: stimuli, model, SAE, window, folds) and check
    the output folder, before any expensive work."""
    plan = build_plan(config)
    directory = run_directory(config, plan.stimuli, plan.key)
    check_writable(config.output, field="--output")
    timings = _claim(directory, plan.key)
    return Run(plan, directory, timings, progress)


def _load(run: Run) -> tuple[LoadedModel, SAE | None]:
    """The model and SAE of a run's plan (SAE None for no SAE), checked against each other."""
    plan = run.plan
    loaded = load_model(
        plan.model,
        layer=plan.layer,
        dtype=plan.dtype,
        device=plan.device,
        device_map=plan.device_map,
        fingerprint=plan.model_fingerprint,
    )
    return loaded, None if plan.sae is None else load_sae(plan.sae, loaded)


@torch.inference_mode()
def encode_activations(raw: Activations, sae: SAE, batch_size: int = 4096) -> Activations:
    """SAE feature activations [items, positions, d_sae] (float32) of raw activations.

    Only valid positions are encoded (`encode_batched`); masked slots stay exactly 0.
    """
    out = np.zeros((*raw.mask.shape, sae.cfg.d_sae), dtype=np.float32)
    out[raw.mask] = encode_batched(sae, torch.from_numpy(raw.values[raw.mask]), batch_size).numpy()
    return Activations(out, raw.mask, "sae", raw.tokens, {**raw.meta, "space": "sae"})


def _contrast(run: Run, analysis: Analysis) -> Contrast:
    """The contrast of ``analysis``, labels shuffled (within its blocks) if the run asks."""
    factor = analysis.factor
    all_labels = run.stimuli.labels(factor, levels=analysis.levels)
    items = np.flatnonzero(all_labels >= 0)
    labels = all_labels[items]
    subset = lambda a: None if a is None else a[items]  # noqa: E731
    groups = subset(run.stimuli.groups())
    blocks = subset(permutation_blocks(run.stimuli.design(), factor, run.stimuli.groups()))
    if run.config.shuffle_labels is not None:
        rng = streams.rng(run.config.shuffle_labels, Stream.SHUFFLE_LABELS)
        labels = permute_labels(labels, rng, groups, blocks=blocks)
    return Contrast(items, labels, groups, blocks)


def readouts(space: str, config: RunConfig, k: int) -> list[SelectedL1 | DiffMeans | DenseL2]:
    """The readouts evaluated in ``space``: each method, k random units, raw baselines."""
    chosen: list = [SelectedL1(method, k) for method in (*config.methods, RANDOM)]
    if space == "raw":
        chosen += [DiffMeans(), DenseL2()]
    return chosen


def comparison_pairs(spaces: list[str], methods: tuple[str, ...]) -> list[tuple[str, str]]:
    """The confirmatory paired comparisons of a run.

    SAE vs raw for every method; within each space RSA vs max-activation, RSA vs the
    contrast, discriminative vs categorical RSA and every method vs k random units; every
    method vs the dense probe.
    """
    pairs: list[tuple[str, str]] = []
    if "sae" in spaces:
        pairs += [(f"sae:{m}", f"raw:{m}") for m in methods]
    for space in spaces:
        if {RSA_DISCRIMINATIVE, MAX_ACTIVATION} <= set(methods):
            pairs.append((f"{space}:rsa_discriminative", f"{space}:max_activation"))
        if {RSA_CATEGORICAL, MAX_ACTIVATION} <= set(methods):
            pairs.append((f"{space}:rsa_categorical", f"{space}:max_activation"))
        pairs += [
            (f"{space}:{m}", f"{space}:{CONTRAST}")
            for m in (RSA_DISCRIMINATIVE, RSA_CATEGORICAL)
            if {m, CONTRAST} <= set(methods)
        ]
        if {RSA_DISCRIMINATIVE, RSA_CATEGORICAL} <= set(methods):
            pairs.append((f"{space}:rsa_discriminative", f"{space}:rsa_categorical"))
        pairs += [(f"{space}:{m}", f"{space}:random") for m in methods]
    pairs += [(f"{space}:{m}", f"raw:{DENSE_L2}") for space in spaces for m in methods]
    return pairs


def _evaluate_all(
    run: Run,
    spaces: dict[str, Activations],
    nuisance: Activations,
    contrast: Contrast,
    plan: CVPlan,
    k: int,
) -> list[MethodResult]:
    """Every readout of every space, and the confound baseline, on one plan."""
    results: list[MethodResult] = []
    for space, acts in spaces.items():
        results += evaluate(
            readouts(space, run.config, k), acts.subset(contrast.items), plan, progress=run.progress
        )
    results += evaluate(
        [DenseL2(name=CONFOUND)], nuisance.subset(contrast.items), plan, progress=run.progress
    )
    return results


def analyse_concept(
    run: Run,
    analysis: Analysis | str,
    spaces: dict[str, Activations],
    test_spaces: dict[str, Activations],
    nuisance: Activations,
) -> ConceptResult:
    """All statistics of one concept (see `ConceptResult`); ``analysis`` is one of the
    plan's analyses, or a factor name for that factor's declared contrast."""
    config = run.config
    stimuli = run.stimuli
    if isinstance(analysis, str):
        analysis = next(
            a
            for a in run.plan.analyses
            if a.factor == analysis and not a.extra and a.kind != OMNIBUS
        )
    factor, n_splits = analysis.factor, analysis.cv.n_splits
    contrast = _contrast(run, analysis)
    items, labels, groups = contrast.items, contrast.labels, contrast.groups
    result = ConceptResult(
        factor, analysis.target, analysis.reference, items, labels, kind=analysis.kind
    )
    result.cv, result.tag = analysis.cv.to_dict(), safe_name(analysis.stage)
    result.warnings, result.paired_items = design_warnings(run.stimuli, factor, contrast)
    glm = stimuli.is_factorial and factor == stimuli.primary_factor and not analysis.extra
    if glm and any(len(levels) != 2 for levels in stimuli.factors.values()):
        glm = False
        result.warnings.append(
            "the factorial GLM needs 2 levels per factor; it is skipped for this design"
        )
    seed = config.seed
    for space, acts in spaces.items():
        sub = acts.subset(items)
        means = sub.window_mean()
        result.contrasts[space] = univariate_contrast(means, labels, groups=groups, seed=seed)
        result.categorical[space] = categorical_rsa(
            means,
            labels,
            space=space,
            groups=groups,
            blocks=contrast.blocks,
            n_permutations=config.n_permutations,
            n_bootstrap=min(config.n_bootstrap, 200),
            seed=seed,
        )
        result.discriminative[space] = discriminative_rsa(
            sub.values,
            labels,
            mask=sub.mask,
            groups=groups,
            blocks=contrast.blocks,
            n_folds=n_splits,
            n_permutations=config.n_permutations,
            seed=seed,
        )
        if glm:
            design = {f: np.array([it.levels[f] for it in stimuli.items]) for f in stimuli.factors}
            levels = {f: stimuli.contrast_levels(f) for f in stimuli.factors}
            result.glm[space] = factorial_glm(acts.window_mean(), design, levels=levels)

    main_k, *other_k = config.k

    def plan_for(n_permutations: int, plan_seed: int) -> CVPlan:
        return make_plan(
            labels,
            groups,
            blocks=contrast.blocks,
            n_splits=n_splits,
            n_repeats=config.n_repeats,
            n_permutations=n_permutations,
            seed=plan_seed,
        )

    plan = plan_for(config.n_permutations, seed)
    result.methods = _evaluate_all(run, spaces, nuisance, contrast, plan, main_k)
    if other_k:
        curve_plan = plan_for(0, seed)  # the same folds, no permutations
        for acts in spaces.values():
            for k in other_k:
                curve = [SelectedL1(m, k) for m in (*config.methods, RANDOM)]
                result.k_curve += evaluate(
                    curve, acts.subset(items), curve_plan, progress=run.progress
                )
    replicates = [
        _evaluate_all(run, spaces, nuisance, contrast, plan_for(0, again), main_k)
        for again in replication_seeds(seed)
    ]
    pairs = comparison_pairs(list(spaces), config.methods)
    result.selection_overlap = selection_overlap(result.methods)
    result.comparisons = mark_coinciding(
        with_stability(compare(result.methods, pairs), [compare(r, pairs) for r in replicates]),
        result.selection_overlap,
    )
    checks = confound_pairs([m.label for m in result.methods])
    result.confound = with_stability(
        compare(result.methods, checks), [compare(r, checks) for r in replicates]
    )
    if test_spaces and factor == stimuli.primary_factor:
        result.transfer = _transfer(run, analysis, result.methods, test_spaces)
    return result


def _transfer(
    run: Run, analysis: Analysis, methods: list[MethodResult], test_spaces: dict[str, Activations]
) -> dict[str, Any]:
    """Final ensembles scored on the held-out ``test:`` items of the analysis' two levels."""
    from cogsae.analysis.transfer import transfer_score

    labels = run.stimuli.labels(analysis.factor, test=True, levels=analysis.levels)
    keep = np.flatnonzero(labels >= 0)
    if keep.size == 0 or len(set(labels[keep])) < 2:
        return {}
    groups = run.stimuli.groups(test=True)
    labels, groups = labels[keep], None if groups is None else groups[keep]
    test_spaces = {space: acts.subset(keep) for space, acts in test_spaces.items()}
    return {
        result.label: transfer_score(
            result.model,
            test_spaces[result.space],
            labels,
            groups,
            n_bootstrap=run.config.n_bootstrap,
            seed=run.config.seed,
        ).to_record()
        for result in methods
        if result.space in test_spaces
    }


def execute(config: RunConfig, progress: bool = True) -> Path:
    """Run every stage (reusing finished ones); returns the run directory.

    Writes results.json and what needs the live results (per-unit tables, volcano, RDM and
    profile figures); `cogsae.report.write_report` turns the directory into the report.
    """
    run = prepare(config, progress)
    log.info("run directory %s", run.directory)
    loaded: dict[str, Any] = {}

    def model_and_sae() -> tuple[LoadedModel, Any]:
        if not loaded:
            loaded["model"], loaded["sae"] = _load(run)
        return loaded["model"], loaded["sae"]

    def extract_stage() -> dict[str, dict[str, Activations]]:
        model, sae = model_and_sae()
        splits = {"items": False, "test": True} if run.stimuli.test_items else {"items": False}
        out: dict[str, dict[str, Activations]] = {}
        for split, test in splits.items():
            raw = extract_activations(run.stimuli, model, run.window, test=test, progress=progress)
            out[split] = {"raw": raw}
            if sae is not None:
                out[split]["sae"] = encode_activations(raw, sae)
        return out

    spaces = run.stage("activations", extract_stage)
    nuisance = nuisance_activations(run.stimuli, run.tokenizer, run.window)

    def analyse(analysis: Analysis) -> ConceptResult:
        if analysis.kind == OMNIBUS:
            return analyse_omnibus(run, analysis, spaces["items"], nuisance)
        return analyse_concept(run, analysis, spaces["items"], spaces.get("test", {}), nuisance)

    concepts = [
        run.stage(f"concept-{safe_name(analysis.stage)}", lambda a=analysis: analyse(a))
        for analysis in run.plan.analyses  # the primary factor first, omnibus entries last
    ]
    if config.n_snippets > 0 and config.shuffle_labels is None:
        primary = concepts[0]
        primary.corpus = run.stage("corpus", lambda: _corpus_stage(run, primary, *model_and_sae()))
    if config.causal:
        causal = lambda: _causal_stage(run, concepts[0], spaces["items"], *model_and_sae())  # noqa: E731
        concepts[0].causal = run.stage("causal", causal)
    provenance = {
        "cogsae": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dtype": config.dtype,
        "run_key": run.key,
        "timings_s": run.timings,
    }
    lengths = length_check(run.stimuli, run.tokenizer)
    result = RunResult.from_run(run.stimuli, config, spaces["items"], concepts, provenance, lengths)
    result.warnings = list(run.plan.warnings)
    figures = run.directory / "figures" if config.figures else None
    result.geometry = run.stage(
        "geometry", lambda: geometry_record(run, spaces["items"], concepts, figures)
    )
    for concept in concepts:
        concept.write_tables(run.directory / "tables")
        if config.figures:
            concept.write_figures(run.directory / "figures", spaces["items"])
    result.write(run.directory)
    return run.directory


def nuisance_activations(stimuli: StimulusSet, tokenizer: Any, window: Window) -> Activations:
    """The nuisance variables of every item as a one-position unit space "nuisance"."""
    values = nuisance_features(stimuli, tokenizer, window)[:, None, :]
    mask = np.ones(values.shape[:2], dtype=bool)
    return Activations(values, mask, NUISANCE, meta={"units": list(NUISANCE_NAMES)})


def _corpus_stage(run: Run, concept: ConceptResult, model: LoadedModel, sae: Any) -> dict[str, Any]:
    """Top corpus examples of every method's final ensemble, judged for relevance."""
    return score_corpus(
        [m for m in concept.methods if m.space in ("raw", "sae")],  # model units only
        model,
        sae,
        concept=run.stimuli.concept,
        corpus=list(run.config.corpus),
        n_snippets=run.config.n_snippets,
        n_examples=run.config.n_examples,
        judge=run.config.judge,
        seed=run.config.seed,
        engine=check_engine(run.config.engine),
        workers=run.config.workers,
        progress=run.progress,
    ).to_record()


def _causal_stage(
    run: Run, concept: ConceptResult, spaces: dict[str, Activations], model: LoadedModel, sae: Any
) -> dict[str, Any]:
    """Steering and ablation of every readout of ``concept`` against random unit sets."""
    procedures = lambda space: readouts(space, run.config, run.config.k[0])  # noqa: E731
    return run_causal(
        run.config, run.stimuli, concept, spaces, model, sae, procedures, run.progress
    )
