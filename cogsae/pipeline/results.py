"""What a run measured, per concept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cogsae.analysis.contrasts import ContrastResult, GLMResult
from cogsae.analysis.ensemble import MethodResult
from cogsae.analysis.rsa import CategoricalRSA, DiscriminativeRSA


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
        warnings: design warnings (paired items without groups, label-pure groups, ...).
        paired_items: items that look paired across conditions in a set without groups
            (cross-validation then splits pairs: no readout is crowned, no verdict drawn).
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
    confound: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    paired_items: int = 0
    transfer: dict[str, Any] = field(default_factory=dict)
    corpus: dict[str, Any] = field(default_factory=dict)
