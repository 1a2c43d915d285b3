"""The run's configuration: every option that determines a run, and which enter its key
(`cogsae.pipeline.plan.RunPlan.key` hashes the resolved plan)."""

from __future__ import annotations

from dataclasses import dataclass

from cogsae.constants import SELECTION_METHODS
from cogsae.errors import CogsaeError
from cogsae.flags import (
    CorpusOptions,
    EngineOptions,
    ModelOptions,
    SAEOptions,
    WindowOptions,
    flag,
    option,
    same_as,
)
from cogsae.model import dtype_name, resolve_dtype

UNKEYED = ("output", "run_id", "device", "device_map", "engine", "workers", "figures", "stimuli")
"""RunConfig fields left out of the run key: where results go and where work runs, not
what the numbers are (the stimulus file enters the key by its content)."""


def replication_seeds(seed: int) -> tuple[int, int]:
    """Seeds of the two replication partitions of a run with ``seed``: its neighbours
    seed - 1 and seed + 1 (seed + 2 stands in for -1), so two runs with adjacent seeds each
    check the other's partition and any verdict they disagree on is marked in both."""
    return (seed - 1 if seed > 0 else seed + 2), seed + 1


@dataclass
class RunConfig:
    """Everything that determines a run; the hash of its resolved plan names the run directory.

    Attributes:
        stimuli: path of the stimulus YAML.
        model: model name or path; None = the set's ``model.name``, else the SAE's, else
            the default (`cogsae.resolve`).
        layer: decoder block L; None = the set's ``model.layer``, else the SAE's, else the
            middle block; an SAE of another layer is an error (`cogsae.resolve`).
        dtype: model precision for extraction; "auto" (default) is resolved on creation
            for ``device`` (`cogsae.model.resolve_dtype`), so the run key and results record
            the dtype actually used.
        device: "cpu" or "cuda[:N]".
        device_map: transformers device map for a model larger than one device (e.g.
            "auto"); None = all on ``device``. Not part of the run key.
        sae: SAE folder, "default" (the shipped one) or "none" (raw space only).
        window_align: window alignment; None = the set's, else "start".
        window_size: window size; None = the set's, else fitted to the items
            (`cogsae.extract.Window.fit`).
        k: units per ensemble; the first value is the main analysis (with permutations),
            further values give the AUROC-vs-k curve (no permutations).
        methods: selection methods to compare.
        n_splits: outer cross-validation folds.
        n_repeats: repeats of the outer cross-validation (10 x 5-fold by default: the
            corrected repeated-CV t-test needs repeats for stable verdicts).
        n_permutations: label permutations for p-values (selection re-run in each); the
            smallest p is 1 / (1 + n), and null readouts stop early.
        n_bootstrap: bootstrap resamples for the population-RSA and held-out transfer CIs.
        seed: root seed of every random choice.
        shuffle_labels: if set, permute the condition labels with this seed first (the
            null proof: the run must then come out non-significant at the nominal rate).
        corpus: text files to scan for top examples; empty = the default SAE corpus.
        n_snippets: corpus snippets scanned (0 = no corpus scan).
        n_examples: top examples kept per method for judging.
        judge: relevance judge of corpus examples: "auto" (the API judge when
            COGSAE_JUDGE_URL/MODEL are set, else "embedding"), "embedding", "model", "api"
            or "none".
        engine: where the corpus scoring runs: "local" (the cached snippet scan) or "ray"
            (shards on Ray actors, the same examples); not part of the run key.
        workers: Ray actors of the corpus scoring (None: one per GPU, else per CPU).
        output: results root; the run goes to ``<output>/<set>/<run id>``.
        run_id: name of the run directory; None = derived from this config's hash.
        figures: draw the PNG figures (off for batches of null runs, where only the
            numbers matter).
        causal: run the causal stage (steering and ablation of every readout of the primary
            concept against random unit sets, `cogsae.pipeline.causal_stage`).
        causal_alphas: steering strengths of the causal tests, in units of the mean
            residual norm at layer L (first-order effects: small strengths).
        causal_null: R, random unit sets (random directions for the dense baselines) per
            readout in the causal null; the smallest p is 1 / (1 + R).
    """

    stimuli: str = option(help="Stimulus YAML.", argument=True, metavar="FILE")
    model: str | None = same_as(ModelOptions, "model")
    layer: int | None = same_as(ModelOptions, "layer")
    dtype: str = same_as(ModelOptions, "dtype")
    device: str = same_as(ModelOptions, "device")
    device_map: str | None = same_as(ModelOptions, "device_map")
    sae: str = same_as(SAEOptions, "sae")
    window_align: str | None = same_as(WindowOptions, "window_align")
    window_size: int | None = same_as(WindowOptions, "window_size")
    k: tuple[int, ...] = option(
        (8,),
        "Units per ensemble; a list (e.g. 1,2,4,8,16) adds an AUROC-vs-k curve. The first "
        "value is the main analysis.",
        separator=",",
    )
    methods: tuple[str, ...] = SELECTION_METHODS
    n_splits: int = option(5, "Outer cross-validation folds.", flag="--folds")
    n_repeats: int = option(
        10,
        "Repeats of the outer k-fold cross-validation (the corrected repeated-CV t-test "
        "needs them for stable verdicts).",
        flag="--repeats",
    )
    n_permutations: int = option(
        1000,
        "Label permutations per readout at most (selection re-run in each; null readouts "
        "stop early).",
        flag="--permutations",
    )
    n_bootstrap: int = option(
        1000,
        "Bootstrap resamples of the population-RSA and held-out transfer intervals.",
        flag="--bootstrap",
    )
    seed: int = option(0, "Root seed of the run.")
    shuffle_labels: int | None = option(
        None,
        "Permute condition labels with SEED first: a null run that must come out "
        "non-significant at the nominal rate.",
        metavar="SEED",
    )
    corpus: tuple[str, ...] = same_as(CorpusOptions, "corpus")
    n_snippets: int = option(
        1000, "Corpus snippets scanned for concept scoring (0 skips the scan).", flag="--snippets"
    )
    n_examples: int = 10
    judge: str = option(
        "auto",
        "Relevance judge of corpus examples: auto = an LLM API when COGSAE_JUDGE_URL and "
        "COGSAE_JUDGE_MODEL are set, else a sentence-embedding judge (agreement with 390 "
        "hand-labelled snippets: quadratic-weighted kappa 0.63 held out; the 135M model's "
        "own yes/no judge scored -0.01).",
        choices=("auto", "embedding", "model", "api", "none"),
    )
    engine: str = same_as(EngineOptions, "engine")
    workers: int | None = same_as(EngineOptions, "workers")
    output: str = option("results", "Results root folder.", aliases=("--out",))
    run_id: str | None = option(None, "Run folder name (default: hash of the options).")
    figures: bool = option(
        True, "Skip the PNG figures (for batches of null runs).", flag="--no-figures"
    )
    causal: bool = option(
        True, "Skip the causal stage (steering and ablation tests).", flag="--no-causal"
    )
    causal_alphas: tuple[float, ...] = option(
        (-0.1, 0.1),
        "Steering strengths of the causal tests, in mean residual norms at layer L.",
        separator=",",
    )
    causal_null: int = option(
        1000, "Random unit sets (or directions) per readout in the causal null."
    )

    def __post_init__(self) -> None:
        self.dtype = dtype_name(resolve_dtype(self.dtype, self.device))
        if not self.k or min(self.k) < 1:
            raise CogsaeError("k must be one or more positive integers", field=flag(RunConfig, "k"))
        unknown = set(self.methods) - set(SELECTION_METHODS)
        if unknown:
            raise CogsaeError(
                f"unknown method(s) {sorted(unknown)}; choose from {SELECTION_METHODS}",
                field=flag(RunConfig, "methods"),
            )
        for name, least in (
            ("n_permutations", 0),
            ("n_bootstrap", 1),
            ("n_repeats", 1),
            ("causal_null", 1),
        ):
            if getattr(self, name) < least:
                raise CogsaeError(f"must be at least {least}", field=flag(RunConfig, name))
