"""The run's configuration: every option that determines a run, and what its hash covers."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from cogsae._io import stable_hash
from cogsae.errors import CogsaeError
from cogsae.model import DEFAULT_MODEL, dtype_name, resolve_dtype, source_fingerprint
from cogsae.sae.io import sae_files_fingerprint
from cogsae.stimuli import StimulusSet
from cogsae.version import __version__

SELECTION_METHODS = ("rsa_discriminative", "rsa_categorical", "max_activation", "contrast")
"""Selection methods compared in every space (the six combinations plus `contrast`)."""

BASELINES = ("diff_means", "dense_l2")
"""All-raw-unit readouts reported beside the methods (plus k random units per space)."""

CONFOUND = "nuisance:confound"
"""The confound baseline: an L2 probe on nuisance variables alone (token count, window
positions, last position, word length); a method that does not beat it may read length."""


def replication_seeds(seed: int) -> tuple[int, int]:
    """Seeds of the two replication partitions of a run with ``seed``: its neighbours
    seed - 1 and seed + 1 (seed + 2 stands in for -1), so two runs with adjacent seeds each
    check the other's partition and any verdict they disagree on is marked in both."""
    return (seed - 1 if seed > 0 else seed + 2), seed + 1


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
    n_repeats: int = 10
    n_permutations: int = 1000
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

    def key(self, stimuli: StimulusSet) -> str:
        """Hash of what produces the numbers: every option that changes results (not the
        output location), the stimulus file's content, the model's and the SAE's files."""
        fields = asdict(self)
        for name in ("output", "run_id", "device", "figures", "stimuli"):
            fields.pop(name)
        if stimuli.path is None:
            raise CogsaeError("a run needs a stimulus file", field="stimuli")
        content = hashlib.sha256(Path(stimuli.path).read_bytes()).hexdigest()
        model = source_fingerprint(self.model_name(stimuli))
        sae = "none" if self.sae == "none" else sae_files_fingerprint(self.sae)
        return stable_hash(fields, content, model, sae, __version__, length=10)

    def model_name(self, stimuli: StimulusSet) -> str:
        """The model a run on ``stimuli`` loads: the option, else the set's, else the default."""
        return self.model or stimuli.model.get("name", DEFAULT_MODEL)
