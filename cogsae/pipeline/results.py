"""What a run measured: per concept (`ConceptResult`) and as a whole (`RunResult`).

Both serialize themselves into the results.json layout that the report reads; the readout
correction (Benjamini-Hochberg q over a concept's readouts, each tail) is applied here, once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cogsae._io import atomic_path, safe_name, write_json
from cogsae.activations import Activations
from cogsae.analysis import vis
from cogsae.analysis.contrasts import ContrastResult, GLMResult
from cogsae.analysis.ensemble import MethodResult
from cogsae.analysis.omnibus import AnovaResult
from cogsae.analysis.rsa import CategoricalRSA, DiscriminativeRSA
from cogsae.constants import (
    ALPHA,
    CONTRAST,
    CONTRAST_KIND,
    INTERVAL,
    OMNIBUS,
    READOUT_CORRECTION,
    RSA_DISCRIMINATIVE,
)
from cogsae.pipeline.config import RunConfig
from cogsae.stimuli import LengthCheck, StimulusSet


def corrected(p_values: list[float]) -> list[float]:
    """``p_values`` corrected over the family by `READOUT_CORRECTION` (BH)."""
    from statsmodels.stats.multitest import multipletests

    return multipletests(p_values, method=READOUT_CORRECTION)[1].tolist() if p_values else []


def method_record(
    result: MethodResult, q: float, q_lower: float, corpus: dict[str, Any] | None = None
) -> dict[str, Any]:
    """JSON-ready record of one readout with its corrected upper (``q``) and lower q, and the
    enrichment of its top corpus examples' relevance over the base rate (None when the
    ``corpus`` record, `CorpusScore.to_record`, has no judged entry for it)."""
    model = result.model
    scored = ((corpus or {}).get("methods") or {}).get(result.label) or {}
    return {
        "method": result.method,
        "space": result.space,
        "k": result.k,
        "auroc": result.auroc,
        "auroc_ci": list(result.auroc_ci),
        "fold_aurocs": np.round(result.fold_aurocs, 4).tolist(),
        "balanced_accuracy": result.balanced_accuracy,
        "balanced_accuracy_ci": list(result.balanced_accuracy_ci),
        "p_value": result.p_value,
        "p_corrected": q,
        "p_lower": result.p_lower,
        "q_lower": q_lower,
        "below_chance": bool(q_lower < ALPHA),
        "n_permutations_run": int(result.null_aurocs.size),
        "selected_units": model.units.tolist() if model.units.size <= 64 else None,
        "fold_units": [u.tolist() for u in result.selected_units] if result.k <= 64 else None,
        "stability": result.stability,
        "relevance_enrichment": scored.get("relevance_enrichment"),
        "relevance_p": scored.get("relevance_p"),
        "null_aurocs": np.round(result.null_aurocs, 4).tolist(),
        "final_model": {
            "units": model.units.tolist(),
            "coef": model.coef.tolist(),
            "intercept": model.intercept,
            "mean": model.mean.tolist(),
            "scale": model.scale.tolist(),
        },
    }


def _save(fig: Figure, path: Path) -> None:
    """``fig`` as a PNG at ``path`` (atomically, at the report's resolution)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def _csv(frame: Any, path: Path) -> None:
    """``frame`` (a pandas DataFrame) as CSV at ``path`` (atomically, 6 significant digits)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, float_format="%.6g")


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
        comparisons: paired comparisons table (records), each with ``stable``: whether
            the replication partition agrees on direction and significance.
        confound: comparisons of every readout with the confound baseline (records).
        selection_overlap: {space, a, b, jaccard, coincide} for every pair of selection
            methods of a space: mean fold-wise Jaccard overlap of their selected units.
        warnings: design warnings (paired items without groups, label-pure groups, ...).
        paired_items: items that look paired across conditions in a set without groups
            (cross-validation then splits pairs: no readout is crowned, no verdict drawn).
        transfer: method label -> held-out ``test:`` scores (if the set has a test section).
        corpus: method label -> corpus scan (top examples with relevance), if run.
        kind: "contrast" (target vs reference) or "omnibus" (every level of a factor with
            3 or more levels; ``labels`` are then level indices into ``levels``).
        levels: the levels whose items the analysis used (default: target, reference).
        cv: the folds it used: n_splits, requested and why fewer (`cogsae.pipeline.plan`).
        tag: file-name part of its tables and figures (default: the factor, with
            "-omnibus" for an omnibus entry).
        anova: space -> per-unit Welch ANOVA over all levels (omnibus entries).
        causal: the causal stage's record (`cogsae.pipeline.causal_stage.run_causal`:
            rows, comparisons, steering examples), primary concept only, if run.
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
    confound: list[dict[str, Any]] = field(default_factory=list)
    selection_overlap: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    paired_items: int = 0
    transfer: dict[str, Any] = field(default_factory=dict)
    corpus: dict[str, Any] = field(default_factory=dict)
    kind: str = CONTRAST_KIND
    levels: list[str] = field(default_factory=list)
    cv: dict[str, Any] = field(default_factory=dict)
    tag: str = ""
    anova: dict[str, AnovaResult] = field(default_factory=dict)
    causal: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.levels = self.levels or [self.target, self.reference]
        omnibus = "-omnibus" if self.kind == OMNIBUS else ""
        self.tag = self.tag or safe_name(self.factor + omnibus)  # the factor may be any text

    def q_values(self) -> tuple[list[float], list[float]]:
        """[methods] upper- and lower-tail q of every readout, corrected over the readouts."""
        return (
            corrected([m.p_value for m in self.methods]),
            corrected([m.p_lower for m in self.methods]),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary of the concept: the ``concepts`` entry of results.json."""
        q_upper, q_lower = self.q_values()
        plan = self.methods[0].plan
        record: dict[str, Any] = {
            "factor": self.factor,
            "kind": self.kind,
            "levels": list(self.levels),
            "tag": self.tag,
            "target": self.target,
            "reference": self.reference,
            "n_items": int(self.items.size),
            "n_target": int((self.labels == 1).sum()),
            "warnings": self.warnings,
            "paired_items": self.paired_items,
            "methods": [
                method_record(m, q, ql, self.corpus)
                for m, q, ql in zip(self.methods, q_upper, q_lower, strict=True)
            ],
            "readout_correction": READOUT_CORRECTION,
            "interval": INTERVAL,
            "cv": {
                "repeats": plan.n_repeats,
                "folds": plan.n_splits,
                "test_fraction": plan.test_fraction,
                "requested": self.cv.get("requested", plan.n_splits),
                "reason": self.cv.get("reason", ""),
            },
            "k_curve": [
                {
                    "method": m.method,
                    "space": m.space,
                    "k": m.k,
                    "auroc": m.auroc,
                    "auroc_ci": list(m.auroc_ci),
                }
                for m in self.k_curve
            ],
            "comparisons": self.comparisons,
            "confound": self.confound,
            "selection_overlap": self.selection_overlap,
            "population_rsa": {space: self._rsa_record(space) for space in self.categorical},
            "contrasts": {space: _contrast_record(c) for space, c in self.contrasts.items()},
            "glm": {
                space: {
                    name: int(np.nansum(glm.q[i] < ALPHA)) for i, name in enumerate(glm.contrasts)
                }
                for space, glm in self.glm.items()
            },
            "transfer": self.transfer,
            "corpus": self.corpus,
            "causal": self.causal.get("rows", []),
            "causal_comparisons": self.causal.get("comparisons", []),
            "steering_examples": self.causal.get("steering_examples", []),
            "causal_settings": {
                k: v
                for k, v in self.causal.items()
                if k not in ("rows", "comparisons", "steering_examples")
            },
        }
        if self.anova:
            counts = np.bincount(self.labels, minlength=len(self.levels)).tolist()
            record["n_per_level"] = dict(zip(self.levels, counts, strict=True))
            record["anova"] = {space: _anova_record(a) for space, a in self.anova.items()}
        return record

    def _rsa_record(self, space: str) -> dict[str, Any]:
        """Population categorical and discriminative RSA of one space."""
        cat, disc = self.categorical[space], self.discriminative[space]
        return {
            "categorical": {
                "r": cat.r,
                "p": cat.p,
                "ci": [cat.ci_low, cat.ci_high],
                "method": cat.method,
                "metric": cat.metric,
            },
            "discriminative": {
                "between": disc.between,
                "within": disc.within,
                "difference": disc.difference,
                "p_between": disc.p_between,
                "p_difference": disc.p_difference,
                "edi": disc.edi,
            },
        }

    def write_tables(self, folder: Path) -> None:
        """Per-unit CSV tables that results.json only summarizes (contrasts, GLM)."""
        folder.mkdir(parents=True, exist_ok=True)
        for space, con in self.contrasts.items():
            _csv(con.to_frame(), folder / f"contrasts_{self.tag}_{space}.csv")
        for space, glm in self.glm.items():
            _csv(glm.to_frame(), folder / f"glm_{space}.csv")
        for space, anova in self.anova.items():
            _csv(anova.to_frame(), folder / f"anova_{self.tag}_{space}.csv")

    def write_figures(self, folder: Path, spaces: dict[str, Activations]) -> None:
        """PNGs that need the live results: volcano, RDM heatmap and the position profile
        of the best selection-based readout, per space (``spaces``: the items' activations)."""
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{self.target} vs {self.reference}"
        for space, con in self.contrasts.items():
            _save(
                vis.volcano_plot(con, title=f"{space}: {name}"),
                folder / f"volcano_{self.tag}_{space}.png",
            )
            _save(
                vis.rdm_heatmap(self.categorical[space].rdms, self.labels, title=f"{space} RDM"),
                folder / f"rdm_{self.tag}_{space}.png",
            )
            best = max(
                (
                    m
                    for m in self.methods
                    if m.space == space and m.method in (RSA_DISCRIMINATIVE, CONTRAST)
                ),
                key=lambda m: m.auroc,
                default=None,
            )
            if best is not None:
                sub = spaces[space].subset(self.items)
                profile = vis.position_profile(
                    sub.values,
                    sub.mask,
                    self.labels,
                    best.model.units,
                    title=f"{space}:{best.method} units",
                )
                _save(profile, folder / f"profile_{self.tag}_{space}.png")


def _contrast_record(con: ContrastResult) -> dict[str, Any]:
    """Unit counts and the 10 strongest active units of one space's contrast."""
    order = np.argsort(np.where(con.active, con.p, np.inf), kind="stable")[:10]
    return {
        "n_units": int(con.t.size),
        "n_active": int(con.active.sum()),
        "n_q05": int(np.nansum(con.q < ALPHA)),
        "top": [
            {
                "unit": int(u),
                "t": float(con.t[u]),
                "q": float(con.q[u]),
                "g": float(con.g[u]),
                "auroc": float(con.auroc[u]),
            }
            for u in order
        ],
    }


def _anova_record(anova: AnovaResult) -> dict[str, Any]:
    """Unit counts and the 10 strongest active units of one space's omnibus ANOVA."""
    order = np.argsort(np.where(anova.active, anova.p, np.inf), kind="stable")[:10]
    return {
        "test": "Welch one-way ANOVA",
        "unit_of_analysis": anova.unit_of_analysis,
        "n_observations": anova.n_observations,
        "n_units": int(anova.F.size),
        "n_active": int(anova.active.sum()),
        "n_q05": int(np.nansum(anova.q < ALPHA)),
        "top": [
            {
                "unit": int(u),
                "F": float(anova.F[u]),
                "df2": float(anova.df2[u]),
                "q": float(anova.q[u]),
                "level_means": anova.level_means[:, u].tolist(),
            }
            for u in order
        ],
    }


@dataclass
class RunResult:
    """A finished run as results.json holds it (plain JSON values, corrections applied).

    Attributes:
        stimuli: the set (name, path, levels, sizes, design rows, token-length test).
        model: model name, layer, dtype and window of the activations.
        spaces: unit space -> number of units.
        config: the `RunConfig` as a dict.
        shuffled_labels: whether labels were shuffled (a null run).
        provenance: versions, run key and stage timings.
        concepts: one `ConceptResult.to_dict` record per analysis, the primary first.
        warnings: run-level design warnings (e.g. levels no analysis uses).
        geometry: model RDMs evaluated in every space
            (`cogsae.pipeline.geometry_stage.geometry_record`); empty for older runs.
    """

    stimuli: dict[str, Any]
    model: dict[str, Any]
    spaces: dict[str, int]
    config: dict[str, Any]
    shuffled_labels: bool
    provenance: dict[str, Any]
    concepts: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    geometry: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_run(
        cls,
        stimuli: StimulusSet,
        config: RunConfig,
        spaces: dict[str, Activations],
        concepts: list[ConceptResult],
        provenance: dict[str, Any],
        lengths: LengthCheck,
    ) -> RunResult:
        """Summarize a run (``spaces``: the items' activations per space)."""
        raw = spaces["raw"]
        return cls(
            stimuli={
                "name": stimuli.name,
                "path": str(stimuli.path),
                "description": stimuli.description,
                "concept": stimuli.concept,
                "factors": stimuli.factors,
                "target": stimuli.target,
                "reference": stimuli.reference,
                "n_items": len(stimuli.items),
                "n_test_items": len(stimuli.test_items),
                "grouped": stimuli.groups() is not None,
                "design": lengths.rows,
                "length_test": {
                    "test": lengths.test,
                    "statistic": lengths.statistic,
                    "p": lengths.p_value,
                },
            },
            model={k: raw.meta[k] for k in ("model", "layer", "dtype", "window")},
            spaces={name: acts.n_units for name, acts in spaces.items()},
            config=asdict(config),
            shuffled_labels=config.shuffle_labels is not None,
            provenance=provenance,
            concepts=[c.to_dict() for c in concepts],
        )

    def to_dict(self) -> dict[str, Any]:
        """The results.json layout (top-level keys in their fixed order)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """A `RunResult` from a loaded results.json."""
        return cls(**data)

    def write(self, directory: Path) -> Path:
        """Write results.json into ``directory`` (atomically); returns its path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "results.json"
        write_json(path, self.to_dict())
        return path
