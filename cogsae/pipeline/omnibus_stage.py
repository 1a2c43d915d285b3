"""The omnibus stage of `cogsae run`: every level of a factor with 3 or more levels at once.

Beside the declared target-vs-reference contrast (``stages.analyse_concept``), such a
factor gets one more concept entry of kind "omnibus": per-unit Welch ANOVA over all levels
in every space, and cross-validated one-vs-rest readouts of every omnibus selector in every
space beside the dense probe and the confound baseline, scored by the macro one-vs-rest
AUROC on one CV plan stratified by level, with permutation p-values (at most
`OMNIBUS_PERMUTATIONS`), corrected repeated-CV intervals and paired comparisons replicated
on two other partitions, as for two-level readouts (``cogsae.analysis.omnibus``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from cogsae import streams
from cogsae.activations import Activations
from cogsae.analysis.cv import CVPlan, make_plan
from cogsae.analysis.ensemble import MethodResult, compare
from cogsae.analysis.omnibus import (
    LEVEL_SCORES,
    OMNIBUS_METHODS,
    DenseOvR,
    LevelReadout,
    LevelSelectedL1,
    evaluate_levels,
    omnibus_anova,
)
from cogsae.analysis.resampling import permutation_blocks, permute_labels
from cogsae.constants import (
    CONFOUND,
    DENSE_L2,
    MAX_ACTIVATION,
    OMNIBUS,
    OMNIBUS_PERMUTATIONS,
    RANDOM,
    RSA_CATEGORICAL,
)
from cogsae.pipeline.config import RunConfig, replication_seeds
from cogsae.pipeline.plan import Analysis
from cogsae.pipeline.results import ConceptResult
from cogsae.pipeline.verdicts import Contrast, confound_pairs, design_warnings, with_stability
from cogsae.stimuli import StimulusSet
from cogsae.streams import Stream


class RunInputs(Protocol):
    """What the omnibus stage reads of a run in progress (``cogsae.pipeline.stages.Run``)."""

    config: RunConfig
    stimuli: StimulusSet
    progress: bool


def level_contrast(run: RunInputs, factor: str) -> Contrast:
    """Every item of the set with its level index of ``factor`` (declaration order) as its
    label, shuffled within the permutation blocks when the run shuffles labels."""
    stimuli = run.stimuli
    levels = stimuli.factors[factor]
    labels = np.array([levels.index(it.levels[factor]) for it in stimuli.items])
    groups = stimuli.groups()
    blocks = permutation_blocks(stimuli.design(), factor, groups)
    if run.config.shuffle_labels is not None:
        rng = streams.rng(run.config.shuffle_labels, Stream.SHUFFLE_LABELS)
        labels = permute_labels(labels, rng, groups, blocks=blocks)
    return Contrast(np.arange(labels.size), labels, groups, blocks)


def omnibus_pairs(spaces: list[str]) -> list[tuple[str, str]]:
    """The paired comparisons of an omnibus entry: SAE vs raw for every selector; in each
    space categorical RSA vs max-activation and every selector vs k random units; every
    selector of every space vs the raw dense probe."""
    pairs: list[tuple[str, str]] = []
    if "sae" in spaces:
        pairs += [(f"sae:{m}", f"raw:{m}") for m in LEVEL_SCORES]
    for space in spaces:
        pairs.append((f"{space}:{RSA_CATEGORICAL}", f"{space}:{MAX_ACTIVATION}"))
        pairs += [(f"{space}:{m}", f"{space}:{RANDOM}") for m in LEVEL_SCORES]
    return pairs + [(f"{space}:{m}", f"raw:{DENSE_L2}") for space in spaces for m in LEVEL_SCORES]


def _readouts(space: str, k: int) -> list[LevelReadout]:
    """The omnibus readouts of ``space``: every selector and k random units; raw: the probe."""
    chosen: list[LevelReadout] = [LevelSelectedL1(method, k) for method in OMNIBUS_METHODS]
    return [*chosen, DenseOvR()] if space == "raw" else chosen


def _evaluate_all(
    run: RunInputs, spaces: dict[str, Activations], nuisance: Activations, plan: CVPlan
) -> list[MethodResult]:
    """Every omnibus readout of every space, and the confound baseline, on one plan."""
    k, progress = run.config.k[0], run.progress
    results: list[MethodResult] = []
    for space, acts in spaces.items():
        results += evaluate_levels(_readouts(space, k), acts, plan, progress=progress)
    results += evaluate_levels([DenseOvR(name=CONFOUND)], nuisance, plan, progress=progress)
    return results


def analyse_omnibus(
    run: RunInputs, analysis: Analysis, spaces: dict[str, Activations], nuisance: Activations
) -> ConceptResult:
    """The omnibus concept entry of the plan's ``analysis`` (a factor with 3 or more
    levels; see the module doc), on the folds the plan chose for it."""
    config, stimuli, factor = run.config, run.stimuli, analysis.factor
    levels = list(stimuli.factors[factor])
    contrast = level_contrast(run, factor)
    labels, groups = contrast.labels, contrast.groups
    target, reference = stimuli.contrast_levels(factor)
    result = ConceptResult(
        factor, target, reference, contrast.items, labels, kind=OMNIBUS, levels=levels
    )
    result.cv = analysis.cv.to_dict()
    result.warnings, result.paired_items = design_warnings(stimuli, factor, contrast)
    for space, acts in spaces.items():
        result.anova[space] = omnibus_anova(acts.window_mean(), labels, levels, groups=groups)

    def plan_for(n_permutations: int, seed: int) -> CVPlan:
        return make_plan(
            labels,
            groups,
            blocks=contrast.blocks,
            n_splits=analysis.cv.n_splits,
            n_repeats=config.n_repeats,
            n_permutations=n_permutations,
            seed=seed,
            n_levels=len(levels),
        )

    n_permutations = min(config.n_permutations, OMNIBUS_PERMUTATIONS)
    result.methods = _evaluate_all(run, spaces, nuisance, plan_for(n_permutations, config.seed))
    replicates = [
        _evaluate_all(run, spaces, nuisance, plan_for(0, again))
        for again in replication_seeds(config.seed)
    ]
    pairs = omnibus_pairs(list(spaces))
    result.comparisons = with_stability(
        compare(result.methods, pairs), [compare(r, pairs) for r in replicates]
    )
    checks = confound_pairs([m.label for m in result.methods])
    result.confound = with_stability(
        compare(result.methods, checks), [compare(r, checks) for r in replicates]
    )
    return result
