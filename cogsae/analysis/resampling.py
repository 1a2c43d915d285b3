"""Label permutations and bootstrap resamples that respect the dependence of the items.

Under "labels carry no information" only some relabellings are exchangeable: labels over
independent items, whole groups' labels among label-pure groups, labels within each group
of a matched design, and in factorial designs only within the cells of the other factors
(``permutation_blocks``). The CV plan, the RSAs and the max-|t| contrast null all draw
their permutations here; bootstrap resamples keep groups whole the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def label_pure(labels: np.ndarray, groups: np.ndarray) -> bool:
    """True when every group of ``groups`` [items] holds a single label (between-group design)."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    return bool((labels == labels[first][inverse]).all())


def permutation_blocks(
    design: Mapping[str, np.ndarray], factor: str, groups: np.ndarray | None = None
) -> np.ndarray | None:
    """[items] exchangeability block ids for permuting ``factor`` in a factorial design.

    Permuting one factor across the whole set also moves the other factors' effects into
    its null (a template's items differ in the other factors too). Blocks keep those fixed:
    with groups that hold both levels of ``factor``, a block is (group, levels of the other
    factors) and labels swap inside it; groups that are label-pure for ``factor`` are
    exchangeable whole with the pure groups that cover the same cells of the other factors,
    so they share one block per such coverage. Without groups a block is a cell of the
    other factors. None for single-factor designs (``permute_labels`` alone is exact).

    Args:
        design: factor name -> [items] level of each item (all factors of the set).
        factor: the factor whose labels are permuted.
        groups: [items] group ids, or None.
    """
    others = [np.asarray(values).astype(str) for name, values in design.items() if name != factor]
    if not others:
        return None
    cell = np.unique(np.column_stack(others), axis=0, return_inverse=True)[1].ravel()
    if groups is None:
        return cell
    level = np.asarray(design[factor]).astype(str)
    keys = np.empty(len(cell), dtype=object)
    for group in np.unique(groups):
        idx = np.flatnonzero(groups == group)
        if len(np.unique(level[idx])) > 1:
            keys[idx] = [f"g{group}|{c}" for c in cell[idx]]
        else:
            keys[idx] = "pure|" + ",".join(map(str, np.unique(cell[idx])))
    return np.unique(keys.astype(str), return_inverse=True)[1]


def permute_labels(
    labels: np.ndarray,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
    strata: np.ndarray | None = None,
    blocks: np.ndarray | None = None,
) -> np.ndarray:
    """One label permutation that respects the dependence structure of the items.

    Without groups, labels are shuffled across items. With ``groups`` [items]: if every
    group has a single label (between-group design) the group labels are shuffled across
    groups; otherwise (matched designs, e.g. a template written in both conditions) labels
    are shuffled within each group. With ``blocks`` [items] (factorial designs, see
    ``permutation_blocks``) the same happens inside each block only, so the other factors
    stay balanced. With ``strata`` [items] (e.g. cross-validation folds) the permutation
    happens inside each stratum, so every stratum keeps its items.
    """
    if strata is not None:
        blocks = strata if blocks is None else _joint(strata, blocks)
    if blocks is not None:
        return _permute_within_blocks(labels, rng, groups, blocks)
    if groups is None:
        return rng.permutation(labels)
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    if label_pure(labels, groups):
        return rng.permutation(labels[first])[inverse]
    return _shuffle_within(labels, inverse, rng)


def _joint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[items] ids of the (a, b) combinations."""
    return np.unique(np.column_stack([a, b]).astype(str), axis=0, return_inverse=True)[1].ravel()


def _permute_within_blocks(
    labels: np.ndarray, rng: np.random.Generator, groups: np.ndarray | None, blocks: np.ndarray
) -> np.ndarray:
    """``permute_labels`` inside each block of ``blocks`` [items], vectorized over blocks.

    In a block whose groups (its items, without groups) each hold one label, group labels
    are shuffled across the block's groups; in any other block labels are shuffled within
    each group.
    """
    _, block = np.unique(blocks, return_inverse=True)
    if groups is None:
        unit = np.arange(len(labels))
    else:
        members = np.column_stack([block, groups]).astype(str)
        unit = np.unique(members, axis=0, return_inverse=True)[1].ravel()
    n_units = int(unit.max()) + 1
    lowest = np.full(n_units, labels.max(), dtype=labels.dtype)  # any number of levels
    highest = np.zeros(n_units, dtype=labels.dtype)
    np.minimum.at(lowest, unit, labels)
    np.maximum.at(highest, unit, labels)
    unit_block = np.zeros(n_units, dtype=np.intp)
    unit_block[unit] = block
    block_pure = np.ones(int(block.max()) + 1, dtype=bool)
    np.logical_and.at(block_pure, unit_block, lowest == highest)
    whole = _shuffle_within(lowest, unit_block, rng)[unit]
    within = _shuffle_within(labels, unit, rng)
    return np.where(block_pure[block], whole, within)


def _shuffle_within(labels: np.ndarray, blocks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shuffle ``labels`` within each block id of ``blocks`` [items], vectorized."""
    by_block = np.argsort(blocks, kind="stable")
    shuffled = np.lexsort((rng.random(len(labels)), blocks))
    out = np.empty_like(labels)
    out[by_block] = labels[shuffled]
    return out


def bootstrap_indices(
    labels: np.ndarray, rng: np.random.Generator, groups: np.ndarray | None = None
) -> np.ndarray:
    """Item indices of one bootstrap sample: resample groups (or items) with replacement.

    Resampling is stratified by condition when every group has one label, so each
    condition keeps its number of groups; matched groups (both labels) are resampled whole.
    """
    blocks = np.arange(len(labels)) if groups is None else np.unique(groups, return_inverse=True)[1]
    n_blocks = int(blocks.max()) + 1
    lowest = np.ones(n_blocks, dtype=labels.dtype)
    highest = np.zeros(n_blocks, dtype=labels.dtype)
    np.minimum.at(lowest, blocks, labels)
    np.maximum.at(highest, blocks, labels)
    if (lowest == highest).all():
        chosen = np.concatenate(
            [rng.choice(np.flatnonzero(lowest == c), int((lowest == c).sum())) for c in (0, 1)]
        )
    else:
        chosen = rng.choice(n_blocks, n_blocks)
    order = np.argsort(blocks, kind="stable")
    bounds = np.searchsorted(blocks[order], np.arange(n_blocks + 1))
    return np.concatenate([order[bounds[b] : bounds[b + 1]] for b in chosen])
