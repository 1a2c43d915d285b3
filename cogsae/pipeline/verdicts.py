"""Pieces every concept entry of a run shares (two-level and omnibus): the items and labels
it analyses, its design warnings and the replication stability of its paired comparisons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cogsae.analysis.contrasts import groups_warning
from cogsae.analysis.design import find_pairs
from cogsae.constants import ALPHA, CONFOUND_LABEL
from cogsae.stimuli import StimulusSet


@dataclass
class Contrast:
    """The items of one concept's contrast and how they may be permuted.

    Attributes:
        items: [n] indices of the items in the contrast (other levels left out).
        labels: [n] 1 target / 0 reference, or level indices in an omnibus entry (shuffled
            when the run shuffles labels).
        groups: [n] item groups, or None.
        blocks: [n] permutation blocks (factorial designs: template x other factors), or None.
    """

    items: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None
    blocks: np.ndarray | None


def confound_pairs(labels: list[str]) -> list[tuple[str, str]]:
    """Every readout against the confound baseline (its own Holm family)."""
    return [(label, CONFOUND_LABEL) for label in labels if label != CONFOUND_LABEL]


def design_warnings(stimuli: StimulusSet, factor: str, contrast: Contrast) -> tuple[list[str], int]:
    """Design problems that can make a report confidently wrong, in words, and the number of
    items that look paired across conditions although the set gives no groups."""
    if contrast.groups is None:
        pairing = find_pairs(stimuli, factor)
        return ([pairing.message()] if pairing.n_paired else []), pairing.n_paired
    message = groups_warning(contrast.labels, contrast.groups)
    return ([message] if message else []), 0


def with_stability(main: pd.DataFrame, replicates: list[pd.DataFrame]) -> list[dict[str, Any]]:
    """Comparison records, each marked ``stable`` when every replication partition reaches
    the same verdict: significant (corrected p < 0.05) in the same direction, or not."""
    records = main.to_dict("records")
    again = [table.to_dict("records") for table in replicates]
    for i, row in enumerate(records):
        row["replication_p_corrected"] = [rows[i]["p_corrected"] for rows in again]
        row["stable"] = all(_verdict(row) == _verdict(rows[i]) for rows in again)
    return records


def _verdict(row: dict[str, Any]) -> int:
    """+1 / -1 for a significant difference in that direction, 0 for none."""
    return int(np.sign(row["diff"])) if row["p_corrected"] < ALPHA else 0
