"""The container every analysis consumes: windowed activations with a validity mask."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Activations:
    """Windowed activations of one unit space (raw residual dims or SAE features).

    Attributes:
        values: [items, positions, units] activations (float16/float32). Positions an
            item does not have hold 0 but are flagged False in ``mask``; never average them.
        mask: [items, positions] bool, True where the position is a real token of the item.
        space: "raw" or "sae" (or any name for another unit space).
        tokens: per item, the token strings of its window positions (len == mask[i].sum()).
        meta: free-form provenance (model, layer, window, stimuli hash, ...).
    """

    values: np.ndarray
    mask: np.ndarray
    space: str = "raw"
    tokens: list[list[str]] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.values.shape[2])

    def window_mean(self) -> np.ndarray:
        """[items, units] mean over each item's valid positions (float32)."""
        return window_mean(self.values, self.mask)

    def subset(self, items: np.ndarray) -> Activations:
        """The same space restricted to ``items`` (indices or boolean mask)."""
        idx = np.arange(self.n_items)[items]
        return Activations(
            self.values[idx],
            self.mask[idx],
            self.space,
            [self.tokens[i] for i in idx] if self.tokens else [],
            dict(self.meta),
        )


def window_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of ``values`` [items, positions, units] over valid positions -> [items, units].

    Masked positions contribute nothing; an item with no valid position is an error.
    """
    counts = mask.sum(axis=1)
    if np.any(counts == 0):
        raise ValueError("an item has no valid window position")
    weights = (mask / counts[:, None]).astype(np.float32)
    return np.einsum("ip,ipu->iu", weights, values, dtype=np.float32, casting="same_kind")
