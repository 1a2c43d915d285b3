"""Stimulus-design diagnostics: hidden item pairing and per-item nuisance variables.

- `find_pairs`: items of different conditions that are near-duplicates (minimal pairs,
  shared templates). Such items are not independent; a set that pairs them without
  ``group`` fields lets cross-validation split a pair across folds, which inflates (or,
  with a decoder that learns the template, deflates below chance) every held-out score.
  `Pairing.suggested_groups` turns the pairs into group ids, `write_grouped` into a set.
- `nuisance_features`: per-item variables that can carry a condition difference without
  the concept (token count, window coverage and position, word length), computed exactly
  as extraction tokenizes and windows the items.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from transformers import PreTrainedTokenizerBase

from cogsae.errors import CogsaeError
from cogsae.extract import Window, tokenize_items
from cogsae.stimuli import Item, StimulusSet

PAIR_THRESHOLD = 0.75
"""Word-level similarity at or above which two items count as paired.

Similarity is the fraction of the shorter item's words that the longer one repeats in
the same order: M / min(n_a, n_b), with M the words in difflib's matching blocks of the
two lower-cased word sequences. A one-word substitution gives (n - 1) / n (0.75 for a
4-word sentence, 0.83 for 6 words), an inserted "not" gives 1. Unrelated sentences of
the project's sets that share a frame ("We lost the umbrella on our very first evening."
/ "We got lost in Venice on our very first evening.") reach 0.78 at most; sentences that
merely share a topic stay below 0.65.
"""

_WORD = re.compile(r"\w+(?:'\w+)*")

NUISANCE_NAMES = ("n_tokens", "n_window_positions", "last_window_position", "mean_word_length")
"""Columns of `nuisance_features`."""


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` (letters, digits, inner apostrophes; punctuation dropped)."""
    return _WORD.findall(text.lower())


@dataclass
class Pairing:
    """Near-duplicate items across conditions.

    Attributes:
        items: the compared items (the set's items or its test items), in set order.
        first: [pairs] index into ``items`` of each pair's earlier item.
        second: [pairs] index of its later item.
        similarity: [pairs] word-level similarity (see ``PAIR_THRESHOLD``), descending.
        threshold: similarity at or above which items were paired.
    """

    items: list[Item]
    first: np.ndarray
    second: np.ndarray
    similarity: np.ndarray
    threshold: float

    @property
    def n_paired(self) -> int:
        """Number of items in at least one pair."""
        return len(np.union1d(self.first, self.second))

    def suggested_groups(self, prefix: str = "g") -> np.ndarray:
        """[items] group id per item: connected components of the pair graph.

        Items linked by pairs (directly or through others) share a group; an unpaired item
        is its own group. Ids are ``<prefix>001`` ... in order of each group's first item.
        """
        n = len(self.items)
        graph = sparse.coo_matrix((np.ones(len(self.first)), (self.first, self.second)), (n, n))
        _, component = connected_components(graph, directed=False)
        _, first_item, order = np.unique(component, return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first_item))
        width = len(str(len(first_item)))
        return np.array([f"{prefix}{r + 1:0{max(width, 3)}d}" for r in rank[order]])

    def message(self) -> str | None:
        """The `cogsae validate` advice when items look paired, else None."""
        if not len(self.first):
            return None
        a, b = self.items[self.first[0]], self.items[self.second[0]]
        return (
            f"{self.n_paired} of {len(self.items)} items look paired across conditions "
            f"(e.g. line {a.line} / line {b.line}, similarity {self.similarity[0]:.2f}); add "
            "`group:` fields so cross-validation keeps pairs together, or run "
            "`cogsae validate --write-groups OUT.yaml`"
        )


def _word_counts(texts: list[list[str]]) -> sparse.csr_matrix:
    """[texts, vocabulary] word counts."""
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, ws in enumerate(texts):
        for w in ws:
            rows.append(i)
            cols.append(vocab.setdefault(w, len(vocab)))
    data = np.ones(len(rows))
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(texts), max(len(vocab), 1)))


def _shared_words(counts: sparse.csr_matrix) -> np.ndarray:
    """[texts, texts] multiset intersection sizes: sum over words of min(count_a, count_b).

    min(a, b) = sum_k [a >= k][b >= k], so it is a sum of sparse indicator products.
    """
    shared = np.zeros((counts.shape[0], counts.shape[0]))
    for k in range(1, int(counts.max()) + 1 if counts.nnz else 1):
        layer = (counts >= k).astype(np.float64)
        shared += (layer @ layer.T).toarray()
    return shared


def _similarity(a: list[str], b: list[str]) -> float:
    """Fraction of the shorter word sequence that the other repeats in order."""
    blocks = SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks()
    return sum(block.size for block in blocks) / min(len(a), len(b))


def find_pairs(
    stimuli: StimulusSet,
    factor: str | None = None,
    threshold: float = PAIR_THRESHOLD,
    *,
    test: bool = False,
) -> Pairing:
    """Pairs of items in different conditions whose word sequences are near-duplicates.

    Args:
        stimuli: the set.
        factor: compare items that differ in this factor; None = items in different design
            cells (any factor), so that templates crossed over several factors are found.
        threshold: similarity at or above which two items are paired (``PAIR_THRESHOLD``).
        test: look at the held-out test items instead of the main items.

    The bag-of-words bound |shared words| / min(n_a, n_b) >= similarity is computed for
    all pairs at once; difflib runs only on the candidates above the threshold.
    """
    if not 0.0 < threshold <= 1.0:
        raise CogsaeError(f"threshold must be in (0, 1], got {threshold}", field="threshold")
    items = stimuli.test_items if test else stimuli.items
    factors = list(stimuli.factors) if factor is None else [factor]
    levels = np.array([[it.levels[f] for f in factors] for it in items], dtype=object)
    texts = [words(it.text) for it in items]
    lengths = np.array([len(ws) for ws in texts], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        shortest = np.minimum(lengths[:, None], lengths[None, :])
        bound = _shared_words(_word_counts(texts)) / shortest
    differ = (levels[:, None, :] != levels[None, :, :]).any(axis=2)
    first, second = np.nonzero(np.triu(differ & (bound >= threshold), k=1))
    similarity = np.array(
        [_similarity(texts[i], texts[j]) for i, j in zip(first, second, strict=True)]
    )
    keep = similarity >= threshold
    order = np.argsort(-similarity[keep], kind="stable")
    return Pairing(
        items, first[keep][order], second[keep][order], similarity[keep][order], threshold
    )


def write_grouped(stimuli: StimulusSet, out: str | Path, threshold: float = PAIR_THRESHOLD) -> Path:
    """Write the set in long form with a ``group`` on every item (from `find_pairs`).

    Main and test items are paired separately (groups ``g001``... and ``t001``...). The
    copy reads back with the same items, conditions and test items; YAML comments of the
    original are not kept.
    """
    if stimuli.groups() is not None or stimuli.groups(test=True) is not None:
        raise CogsaeError(
            "the set already has group fields; --write-groups only fills sets without them",
            path=stimuli.path,
            field="group",
        )
    doc: dict[str, Any] = {
        "name": stimuli.name,
        "description": stimuli.description,
        "concept": stimuli.concept,
        "target": stimuli.target,
        "reference": stimuli.reference,
    }
    if stimuli.model:
        doc["model"] = dict(stimuli.model)
    if stimuli.window:
        doc["window"] = dict(stimuli.window)
    doc["factors"] = {f: list(levels) for f, levels in stimuli.factors.items()}
    for key, test, prefix in (("items", False, "g"), ("test", True, "t")):
        items = stimuli.test_items if test else stimuli.items
        if not items:
            continue
        groups = find_pairs(stimuli, threshold=threshold, test=test).suggested_groups(prefix)
        doc[key] = [
            {
                "text": it.text,
                **it.levels,
                "group": str(group),
                **({"target": it.target} if it.target is not None else {}),
            }
            for it, group in zip(items, groups, strict=True)
        ]
    out = Path(out)
    out.write_text(
        yaml.safe_dump(
            doc, sort_keys=False, allow_unicode=True, width=200, default_flow_style=None
        ),
        encoding="utf-8",
    )
    return out


def nuisance_features(
    stimuli: StimulusSet,
    tokenizer: PreTrainedTokenizerBase,
    window: Window | None = None,
    *,
    test: bool = False,
) -> np.ndarray:
    """[items, len(NUISANCE_NAMES)] float64 nuisance variables per item.

    Columns (``NUISANCE_NAMES``): token count of the item; number of valid window
    positions; token index of the last valid window position (where the window sits in
    the sentence); mean word length in characters. Tokens and windows come from
    ``cogsae.extract.tokenize_items``, so they match what extraction reads. A readout of
    these alone that decodes the condition means the contrast has a confound.
    """
    window = window or Window.for_stimuli(stimuli)
    items = stimuli.test_items if test else stimuli.items
    ids, slots = tokenize_items(tokenizer, items, window)
    word_length = [np.mean([len(w) for w in words(it.text)] or [0.0]) for it in items]
    return np.column_stack(
        [
            [len(x) for x in ids],
            (slots >= 0).sum(axis=1),
            slots.max(axis=1),
            word_length,
        ]
    ).astype(np.float64)
