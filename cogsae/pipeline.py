"""`cogsae run`: the concept hunt, stage by stage, resumable.

stimuli -> raw activations (cached) -> SAE features -> per concept: contrasts, population
RSA, cross-validated ensembles of every selection method in every space beside the
baselines, paired comparisons, held-out transfer, corpus scan -> results.json + report.

Each finished stage is pickled (atomically) in ``<run dir>/stages/``; a run restarted
with the same arguments finds the same run dir and skips what is done.
"""

from __future__ import annotations

import logging
import pickle
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from cogsae import __version__
from cogsae._io import atomic_path, stable_hash
from cogsae.activations import Activations
from cogsae.contrasts import (
    ContrastResult,
    GLMResult,
    factorial_glm,
    permute_labels,
    univariate_contrast,
)
from cogsae.ensemble import (
    DenseL2,
    DiffMeans,
    MethodResult,
    SelectedL1,
    compare,
    evaluate,
    make_plan,
)
from cogsae.errors import CogsaeError
from cogsae.extract import Window, check_window_fillable, extract_activations
from cogsae.model import (
    DEFAULT_MODEL,
    LoadedModel,
    dtype_name,
    load_model,
    load_tokenizer,
    resolve_dtype,
)
from cogsae.rsa import CategoricalRSA, DiscriminativeRSA, categorical_rsa, discriminative_rsa
from cogsae.stimuli import StimulusSet, length_check, load_stimuli

log = logging.getLogger(__name__)
T = TypeVar("T")

SELECTION_METHODS = ("rsa_discriminative", "rsa_categorical", "max_activation", "contrast")
"""Selection methods compared in every space (the six combinations plus `contrast`)."""

BASELINES = ("diff_means", "dense_l2")
"""All-raw-unit readouts reported beside the methods (plus k random units per space)."""


@dataclass
class RunConfig:
    """Everything that determines a run; its hash names the run directory.

    Attributes:
        stimuli: path of the stimulus YAML.
        model: model name or path; None = the set's ``model.name``, else the default.
        layer: decoder block L; None = the set's ``model.layer``, else the middle block.
        dtype: model precision for extraction; "auto" (default) is resolved on creation
            for ``device`` (`cogsae.model.resolve_dtype`), so the run key and results record
            the dtype actually used.
        device: "cpu" or "cuda[:N]".
        sae: SAE folder, "default" (the shipped one) or "none" (raw space only).
        window_align: window alignment; None = the set's, else "start".
        window_size: window size; None = the set's, else fitted to the items
            (`cogsae.extract.Window.fit`).
        k: units per ensemble; the first value is the main analysis (with permutations),
            further values give the AUROC-vs-k curve (no permutations).
        methods: selection methods to compare.
        n_splits: outer cross-validation folds.
        n_repeats: repeats of the outer cross-validation.
        n_permutations: label permutations for p-values (selection re-run in each).
        n_bootstrap: bootstrap resamples for CIs.
        seed: root seed of every random choice.
        shuffle_labels: if set, permute the condition labels with this seed first (the
            null proof: the run must then come out non-significant at the nominal rate).
        corpus: text files to scan for top examples; empty = the default SAE corpus.
        n_snippets: corpus snippets scanned (0 = no corpus scan).
        n_examples: top examples kept per method for judging.
        judge: relevance judge of corpus examples: "auto" (the API judge when
            COGSAE_JUDGE_URL/MODEL are set, else "embedding"), "embedding", "model", "api"
            or "none".
        output: results root; the run goes to ``<output>/<set>/<run id>``.
        run_id: name of the run directory; None = derived from this config's hash.
        figures: draw the PNG figures (off for batches of null runs, where only the
            numbers matter).
    """

    stimuli: str
    model: str | None = None
    layer: int | None = None
    dtype: str = "auto"
    device: str = "cpu"
    sae: str = "default"
    window_align: str | None = None
    window_size: int | None = None
    k: tuple[int, ...] = (8,)
    methods: tuple[str, ...] = SELECTION_METHODS
    n_splits: int = 5
    n_repeats: int = 1
    n_permutations: int = 100
    n_bootstrap: int = 1000
    seed: int = 0
    shuffle_labels: int | None = None
    corpus: tuple[str, ...] = ()
    n_snippets: int = 1000
    n_examples: int = 10
    judge: str = "auto"
    output: str = "results"
    run_id: str | None = None
    figures: bool = True

    def __post_init__(self) -> None:
        self.dtype = dtype_name(resolve_dtype(self.dtype, self.device))
        if not self.k or min(self.k) < 1:
            raise CogsaeError("k must be one or more positive integers", field="--k")
        unknown = set(self.methods) - set(SELECTION_METHODS)
        if unknown:
            raise CogsaeError(
                f"unknown method(s) {sorted(unknown)}; choose from {SELECTION_METHODS}",
                field="--methods",
            )
        if self.n_permutations < 0 or self.n_bootstrap < 1 or self.n_repeats < 1:
            raise CogsaeError(
                "permutations >= 0, bootstrap >= 1, repeats >= 1", field="--n-permutations"
            )

    def key(self) -> str:
        """Hash of every field that changes results (not output location)."""
        fields = asdict(self)
        for name in ("output", "run_id", "device", "figures"):
            fields.pop(name)
        fields["stimuli"] = str(Path(self.stimuli).resolve())
        return stable_hash(fields, __version__, length=10)


@dataclass
class ConceptResult:
    """Everything measured for one concept (a factor of the design, target vs reference).

    Attributes:
        factor: the design factor; the primary factor is the set's concept.
        target, reference: its contrasted levels.
        items: [n] indices of the items in the contrast (others' levels are left out).
        labels: [n] 1 target / 0 reference (shuffled when the run shuffles labels).
        contrasts: space -> per-unit univariate contrast.
        glm: factorial GLM per space (factorial designs only; primary concept only).
        categorical: space -> population categorical RSA over all units.
        discriminative: space -> population discriminative RSA over all units.
        methods: main-k results of every readout in every space (same folds).
        k_curve: results for further k values (no permutations).
        comparisons: paired comparisons table (records).
        transfer: method label -> held-out ``test:`` scores (if the set has a test section).
        corpus: method label -> corpus scan (top examples with relevance), if run.
    """

    factor: str
    target: str
    reference: str
    items: np.ndarray
    labels: np.ndarray
    contrasts: dict[str, ContrastResult] = field(default_factory=dict)
    glm: dict[str, GLMResult] = field(default_factory=dict)
    categorical: dict[str, CategoricalRSA] = field(default_factory=dict)
    discriminative: dict[str, DiscriminativeRSA] = field(default_factory=dict)
    methods: list[MethodResult] = field(default_factory=list)
    k_curve: list[MethodResult] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    transfer: dict[str, Any] = field(default_factory=dict)
    corpus: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """A run in progress: its config, directory, loaded inputs and stage timings."""

    config: RunConfig
    directory: Path
    stimuli: StimulusSet
    window: Window
    timings: dict[str, float] = field(default_factory=dict)
    progress: bool = True

    def stage(self, name: str, compute: Callable[[], T]) -> T:
        """Return stage ``name`` from ``stages/name.pkl``, computing and saving it if absent."""
        path = self.directory / "stages" / f"{name}.pkl"
        if path.exists():
            with path.open("rb") as fh:
                return pickle.load(fh)
        start = time.perf_counter()
        value = compute()
        self.timings[name] = round(time.perf_counter() - start, 2)
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            pickle.dump(value, fh)
        return value


def run_directory(config: RunConfig, stimuli: StimulusSet) -> Path:
    """``<output>/<set name>[-shuffled<seed>]/<run id>``."""
    name = stimuli.name
    if config.shuffle_labels is not None:
        name += f"-shuffled{config.shuffle_labels}"
    return Path(config.output) / name / (config.run_id or f"run-{config.key()}")


def prepare(config: RunConfig, progress: bool = True) -> Run:
    """Validate the stimuli and options before any expensive work."""
    stimuli = load_stimuli(config.stimuli)
    window = Window.for_stimuli(stimuli, align=config.window_align, size=config.window_size)
    if config.n_splits < 2:
        raise CogsaeError("need at least 2 folds", field="--folds")
    return Run(config, run_directory(config, stimuli), stimuli, window, progress=progress)


def _load(run: Run) -> tuple[LoadedModel, Any]:
    """The model and SAE of a run (SAE None when ``sae == "none"``)."""
    from cogsae.sae.io import load_sae

    config = run.config
    model = load_model(
        config.model or run.stimuli.model.get("name", DEFAULT_MODEL),
        layer=config.layer if config.layer is not None else run.stimuli.model.get("layer"),
        dtype=config.dtype,
        device=config.device,
    )
    check_window_fillable(model.tokenizer, run.stimuli, run.window)
    sae = None if config.sae == "none" else load_sae(config.sae, model)
    return model, sae


@torch.inference_mode()
def encode_activations(raw: Activations, sae: Any, batch_size: int = 4096) -> Activations:
    """SAE feature activations [items, positions, d_sae] (float32) of raw activations.

    Only valid positions are encoded; masked slots stay exactly 0.
    """
    device = sae.W_enc.device
    flat = torch.from_numpy(raw.values[raw.mask])
    out = np.zeros((*raw.mask.shape, sae.cfg.d_sae), dtype=np.float32)
    feats = [
        sae.encode(flat[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, len(flat), batch_size)
    ]
    out[raw.mask] = torch.cat(feats).numpy() if feats else 0
    return Activations(out, raw.mask, "sae", raw.tokens, {**raw.meta, "space": "sae"})


def _labels(run: Run, factor: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(items in the contrast, their labels, their groups), labels shuffled if asked."""
    all_labels = run.stimuli.labels(factor)
    items = np.flatnonzero(all_labels >= 0)
    labels = all_labels[items]
    groups = run.stimuli.groups()
    groups = None if groups is None else groups[items]
    if run.config.shuffle_labels is not None:
        rng = np.random.default_rng([run.config.shuffle_labels, 7])
        labels = permute_labels(labels, rng, groups)
    return items, labels, groups


def readouts(space: str, config: RunConfig, k: int) -> list:
    """The readouts evaluated in ``space``: each method, k random units, raw baselines."""
    chosen: list = [SelectedL1(method, k) for method in (*config.methods, "random")]
    if space == "raw":
        chosen += [DiffMeans(), DenseL2()]
    return chosen


def comparison_pairs(spaces: list[str], methods: tuple[str, ...]) -> list[tuple[str, str]]:
    """The confirmatory paired comparisons of a run.

    SAE vs raw for every method; within each space RSA vs max-activation, discriminative
    vs categorical RSA and every method vs k random units; every method vs the dense probe.
    """
    pairs: list[tuple[str, str]] = []
    if "sae" in spaces:
        pairs += [(f"sae:{m}", f"raw:{m}") for m in methods]
    for space in spaces:
        if {"rsa_discriminative", "max_activation"} <= set(methods):
            pairs.append((f"{space}:rsa_discriminative", f"{space}:max_activation"))
        if {"rsa_categorical", "max_activation"} <= set(methods):
            pairs.append((f"{space}:rsa_categorical", f"{space}:max_activation"))
        if {"rsa_discriminative", "rsa_categorical"} <= set(methods):
            pairs.append((f"{space}:rsa_discriminative", f"{space}:rsa_categorical"))
        pairs += [(f"{space}:{m}", f"{space}:random") for m in methods]
    pairs += [(f"{space}:{m}", "raw:dense_l2") for space in spaces for m in methods]
    return pairs


def analyse_concept(
    run: Run, factor: str, spaces: dict[str, Activations], test_spaces: dict[str, Activations]
) -> ConceptResult:
    """All statistics of one concept (see `ConceptResult`)."""
    config = run.config
    stimuli = run.stimuli
    items, labels, groups = _labels(run, factor)
    target, reference = stimuli.contrast_levels(factor)
    result = ConceptResult(factor, target, reference, items, labels)
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
            n_permutations=config.n_permutations,
            n_bootstrap=min(config.n_bootstrap, 200),
            seed=seed,
        )
        result.discriminative[space] = discriminative_rsa(
            sub.values,
            labels,
            mask=sub.mask,
            groups=groups,
            n_folds=config.n_splits,
            n_permutations=config.n_permutations,
            seed=seed,
        )
        if stimuli.is_factorial and factor == stimuli.primary_factor:
            design = {f: np.array([it.levels[f] for it in stimuli.items]) for f in stimuli.factors}
            levels = {f: stimuli.contrast_levels(f) for f in stimuli.factors}
            result.glm[space] = factorial_glm(acts.window_mean(), design, levels=levels)

    main_k, *other_k = config.k
    plan = make_plan(
        labels,
        groups,
        n_splits=config.n_splits,
        n_repeats=config.n_repeats,
        n_permutations=config.n_permutations,
        seed=seed,
    )
    for space, acts in spaces.items():
        result.methods += evaluate(
            readouts(space, config, main_k),
            acts.subset(items),
            plan,
            n_bootstrap=config.n_bootstrap,
            progress=run.progress,
        )
    if other_k:
        curve_plan = make_plan(
            labels,
            groups,
            n_splits=config.n_splits,
            n_repeats=config.n_repeats,
            n_permutations=0,
            seed=seed,
        )
        for acts in spaces.values():
            for k in other_k:
                curve = [SelectedL1(m, k) for m in (*config.methods, "random")]
                result.k_curve += evaluate(
                    curve, acts.subset(items), curve_plan, n_bootstrap=200, progress=run.progress
                )
    table = compare(result.methods, comparison_pairs(list(spaces), config.methods))
    result.comparisons = table.to_dict("records")
    if test_spaces and factor == stimuli.primary_factor:
        result.transfer = _transfer(run, factor, result.methods, test_spaces)
    return result


def _transfer(
    run: Run, factor: str, methods: list[MethodResult], test_spaces: dict[str, Activations]
) -> dict[str, Any]:
    """Final ensembles scored on the held-out ``test:`` items."""
    from cogsae.scoring import transfer_score

    labels = run.stimuli.labels(factor, test=True)
    keep = np.flatnonzero(labels >= 0)
    return {
        result.label: transfer_score(
            result.model,
            test_spaces[result.space].subset(keep),
            labels[keep],
            n_bootstrap=run.config.n_bootstrap,
            seed=run.config.seed,
        ).to_record()
        for result in methods
    }


def execute(config: RunConfig, progress: bool = True) -> Path:
    """Run every stage (reusing finished ones) and write the report; returns the run dir."""
    from cogsae.report import write_report

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
    concepts = [
        run.stage(
            f"concept-{factor}",
            lambda factor=factor: analyse_concept(
                run, factor, spaces["items"], spaces.get("test", {})
            ),
        )
        for factor in run.stimuli.factors  # the primary factor first
    ]
    if config.n_snippets > 0 and config.shuffle_labels is None:
        primary = concepts[0]
        primary.corpus = run.stage("corpus", lambda: _corpus_stage(run, primary, *model_and_sae()))
    provenance = {
        "cogsae": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dtype": config.dtype,
        "run_key": config.key(),
        "timings_s": run.timings,
    }
    tokenizer = load_tokenizer(config.model or run.stimuli.model.get("name", DEFAULT_MODEL))
    lengths = length_check(run.stimuli, tokenizer)
    write_report(run.directory, run.stimuli, config, spaces, concepts, provenance, lengths)
    return run.directory


def _corpus_stage(run: Run, concept: ConceptResult, model: LoadedModel, sae: Any) -> dict[str, Any]:
    """Top corpus examples of every method's final ensemble, judged for relevance."""
    from cogsae.scoring import score_corpus

    return score_corpus(
        concept.methods,
        model,
        sae,
        concept=run.stimuli.concept,
        corpus=list(run.config.corpus),
        n_snippets=run.config.n_snippets,
        n_examples=run.config.n_examples,
        judge=run.config.judge,
        seed=run.config.seed,
        progress=run.progress,
    ).to_record()
