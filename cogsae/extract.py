"""Windowed residual-stream extraction at layer L, batched by length and cached on disk.

A window is a span of N token positions per item (docs/methods.md, "Windows and masks"):
``start`` (first N tokens after position 0), ``end`` (last N), ``center`` (N around the
middle), ``target`` (N around a given substring). Position 0 (BOS, or the first token,
which carries a huge-norm "attention sink" activation in these models) is excluded by
default. Slots an item cannot fill are masked, never zero-padded into statistics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from cogsae._io import (
    cache_dir,
    load_data,
    safe_name,
    save_data,
    stable_hash,
)
from cogsae.activations import Activations
from cogsae.corpus import batch_chunks
from cogsae.errors import CogsaeError
from cogsae.model import LoadedModel, model_fingerprint
from cogsae.stimuli import WINDOW_ALIGNS, Item, StimulusSet
from cogsae.version import __version__

MAX_WINDOW_SIZE = 32
"""Cap of the default window size (the longest item's length) when a set gives none."""


@dataclass(frozen=True)
class Window:
    """Which token positions of each item are read.

    Attributes:
        align: "start", "end", "center" or "target" (around the item's ``target`` substring).
        size: N, the number of window slots; None fits the set (`fit`): the longest item's
            length in readable positions, at most `MAX_WINDOW_SIZE`. Slots a shorter item
            lacks are masked, never padded, so fitting loses nothing.
        include_first: also allow position 0 (BOS / first token); off by default because
            its activation norm is orders of magnitude above the rest.
    """

    align: str = "start"
    size: int | None = None
    include_first: bool = False

    def __post_init__(self) -> None:
        if self.align not in WINDOW_ALIGNS:
            raise CogsaeError(
                f"unknown window align {self.align!r}; choose from {', '.join(WINDOW_ALIGNS)}",
                field="window.align",
            )
        if self.size is not None and self.size < 1:
            raise CogsaeError("window size must be >= 1", field="window.size")

    @classmethod
    def for_stimuli(cls, stimuli: StimulusSet, **overrides: object) -> Window:
        """The set's own window (YAML ``window:``), with non-None ``overrides`` on top."""
        spec = {**stimuli.window, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**spec)

    def fit(self, tokenizer: PreTrainedTokenizerBase, stimuli: StimulusSet) -> Window:
        """This window with a size: its own, else the longest item's (main and test items,
        so both splits share one shape) readable positions, at most `MAX_WINDOW_SIZE`."""
        if self.size is not None:
            return self
        first = 0 if self.include_first else 1
        texts = [it.text for it in stimuli.items + stimuli.test_items]
        longest = max(len(ids) for ids in tokenizer(texts)["input_ids"]) - first
        return replace(self, size=max(1, min(longest, MAX_WINDOW_SIZE)))


def window_positions(
    n_tokens: int, window: Window, target_span: tuple[int, int] | None = None
) -> np.ndarray:
    """Token index read by each window slot, [size] int, -1 where the item has no token.

    Args:
        n_tokens: length of the tokenized item.
        window: the window.
        target_span: [first, last) token indices of the target substring (align="target").
    """
    first = 0 if window.include_first else 1
    size = window.size
    if size is None:
        raise ValueError("window has no size: fit it to the set first (Window.fit)")
    if window.align == "start":
        begin = first
    elif window.align == "end":
        begin = n_tokens - size
    elif window.align == "center":
        begin = (first + n_tokens) // 2 - size // 2
    else:
        if target_span is None:
            raise CogsaeError(
                "align='target' needs a target substring on every item", field="target"
            )
        begin = (target_span[0] + target_span[1]) // 2 - size // 2
    idx = np.arange(begin, begin + size)
    return np.where((idx >= first) & (idx < n_tokens), idx, -1)


def _target_span(offsets: list[tuple[int, int]], item: Item) -> tuple[int, int] | None:
    """Token indices [first, last) overlapping the item's target substring."""
    if item.target is None:
        return None
    char0 = item.text.index(item.target)
    char1 = char0 + len(item.target)
    hits = [i for i, (a, b) in enumerate(offsets) if b > char0 and a < char1 and b > a]
    return (hits[0], hits[-1] + 1) if hits else None


def tokenize_items(
    tokenizer: PreTrainedTokenizerBase, items: list[Item], window: Window
) -> tuple[list[list[int]], np.ndarray]:
    """Token ids per item and the [items, size] token index of each window slot (-1 = none)."""
    enc = tokenizer([it.text for it in items], return_offsets_mapping=True)
    ids = enc["input_ids"]
    slots = np.stack(
        [
            window_positions(len(ids[i]), window, _target_span(enc["offset_mapping"][i], it))
            for i, it in enumerate(items)
        ]
    )
    if window.align == "target":
        missing = [it for it in items if it.target is None]
        if missing:
            raise CogsaeError(
                f"window align='target' but {len(missing)} items have no target",
                line=missing[0].line,
                field="target",
            )
    return ids, slots


def check_window_fillable(
    tokenizer: PreTrainedTokenizerBase, stimuli: StimulusSet, window: Window
) -> np.ndarray:
    """[items] number of valid slots per item; a window that no item fills at all is an error.

    An item longer than the model's context (`context_length`) is an error too: it is
    refused here rather than truncated, so no reported number silently stops reading
    part of an item. A ``window`` without a size is fitted to the set first
    (`Window.fit`); only a size the user gave can be too large.
    """
    check_context(tokenizer, stimuli)
    given = window.size is not None
    window = window.fit(tokenizer, stimuli)
    _, slots = tokenize_items(tokenizer, stimuli.items, window)
    valid = (slots >= 0).sum(axis=1)
    if given and valid.max() < window.size:
        raise CogsaeError(
            f"no item can fill a {window.align} window of {window.size} tokens "
            f"(longest item gives {valid.max()} positions); set window.size in the YAML "
            "or pass --window-size",
            path=stimuli.path,
            line=stimuli.window_line if window.size == stimuli.window.get("size") else None,
            field="window.size",
        )
    empty = [it for it, v in zip(stimuli.items, valid, strict=True) if v == 0]
    if empty:
        raise CogsaeError(
            "item has no token inside the window",
            path=stimuli.path,
            line=empty[0].line,
            field="window",
        )
    return valid


def context_length(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The model's context in tokens: the tokenizer's limit if it records one, else the
    ``max_position_embeddings`` of the model config beside it; None if neither is known."""
    if tokenizer.model_max_length < 10**8:  # HF's "no limit recorded" sentinel is ~1e30
        return int(tokenizer.model_max_length)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(tokenizer.name_or_path, local_files_only=True)
    except (OSError, ValueError):
        return None
    limit = getattr(config, "max_position_embeddings", None)
    return int(limit) if limit else None


def check_context(tokenizer: PreTrainedTokenizerBase, stimuli: StimulusSet) -> None:
    """Refuse any item (main or ``test:``) with more tokens than the model's context."""
    limit = context_length(tokenizer)
    for items in (stimuli.items, stimuli.test_items):
        if not items or limit is None:
            continue
        lengths = [len(ids) for ids in tokenizer([it.text for it in items])["input_ids"]]
        for item, n in zip(items, lengths, strict=True):
            if n > limit:
                raise CogsaeError(
                    f"item has {n} tokens, more than the model's context of {limit}; "
                    "shorten or split it",
                    path=stimuli.path,
                    line=item.line,
                    field="text",
                )


def length_batches(lengths: list[int], batch_size: int, max_tokens: int) -> list[np.ndarray]:
    """Item indices in batches of similar length: at most ``batch_size`` items and at most
    ``max_tokens`` padded tokens each (a long item is never padded into short ones' batch).
    """
    batches: list[np.ndarray] = []
    current: list[int] = []
    for i in np.argsort(lengths, kind="stable"):
        # sorted ascending, so item i is the longest of the batch it joins
        if current and (len(current) == batch_size or (len(current) + 1) * lengths[i] > max_tokens):
            batches.append(np.array(current))
            current = []
        current.append(int(i))
    if current:
        batches.append(np.array(current))
    return batches


def extraction_key(
    model: LoadedModel, stimuli: StimulusSet, window: Window, test: bool, layer: int | None = None
) -> str:
    """Cache key: model (name and weights), layer (default the model's), dtype, window,
    stimuli content, version."""
    return stable_hash(
        model.name,
        model_fingerprint(model),
        model.layer if layer is None else layer,
        str(model.dtype),
        asdict(window),
        stimuli.content_hash(),
        test,
        __version__,
    )


def extract_activations(
    stimuli: StimulusSet,
    model: LoadedModel,
    window: Window | None = None,
    *,
    test: bool = False,
    **settings: Any,
) -> Activations:
    """Layer-L residual activations of the set's items in a window (L: ``model.layer``).

    The one-layer case of `extract_layers` (the same batching, cache and ``settings``:
    batch_size, max_batch_tokens, cache, progress); only blocks 0..L run.

    Returns:
        Activations with values [items, size, d_model] float32, mask [items, size] and the
        token strings of each item's valid slots.
    """
    return extract_layers(stimuli, model, [model.layer], window, test=test, **settings)[model.layer]


def extract_layers(
    stimuli: StimulusSet,
    model: LoadedModel,
    layers: Iterable[int],
    window: Window | None = None,
    *,
    test: bool = False,
    batch_size: int = 32,
    max_batch_tokens: int = 8192,
    cache: bool = True,
    progress: bool = True,
) -> dict[int, Activations]:
    """Residual activations of the set's items in a window at each of ``layers``.

    Items are sorted by token length and run in batches of at most ``batch_size`` items
    and ``max_batch_tokens`` padded tokens, so padding is minimal and one long item runs
    alone instead of padding a whole batch. Each batch is one forward pass that stops
    after the deepest layer asked for (`LoadedModel.residuals`), so a layer's values are
    bit-identical whether it is extracted alone or with others. Each layer is cached on
    disk on its own (data only, checksummed; a broken file is rebuilt) under a key of
    (model name and weights, layer, dtype, window, stimuli content): a re-run with other
    analysis settings, or at one of these layers, reads it, and only missing layers run.

    Args:
        stimuli: the validated set.
        model: the loaded model (its own ``layer`` is not read).
        layers: decoder blocks to read.
        window: defaults to the set's own window; a window without a size is fitted to the
            set (`Window.fit`).
        test: extract the held-out ``test:`` items instead of the main items.

    Returns:
        layer -> Activations (values [items, size, d_model] float32, mask [items, size],
        the token strings of each item's valid slots), in ascending layer order.
    """
    window = (window or Window.for_stimuli(stimuli)).fit(model.tokenizer, stimuli)
    items = stimuli.test_items if test else stimuli.items
    if not items:
        raise CogsaeError("the set has no test: section", path=stimuli.path, field="test")
    wanted = sorted(set(layers))
    outside = [layer for layer in wanted if not 0 <= layer < model.n_layers]
    if outside or not wanted:
        raise CogsaeError(
            f"layers {outside} out of range: the model has {model.n_layers} blocks",
            field="layer",
        )
    files = {}
    found: dict[int, Activations] = {}
    for layer in wanted:
        key = extraction_key(model, stimuli, window, test, layer)
        path = cache_dir() / "activations" / f"{safe_name(stimuli.name)}-{key}.npz"
        files[layer] = (path, key)
        cached = load_data(path, key) if cache else None
        if cached is not None:
            meta = _meta(model, stimuli, window, test, layer, path)
            found[layer] = Activations(
                cached["values"], cached["mask"], "raw", cached["tokens"], meta
            )
    missing = [layer for layer in wanted if layer not in found]
    if missing:
        computed = _forward(
            stimuli, model, items, window, missing, batch_size, max_batch_tokens, progress
        )
        for layer, (values, mask, tokens) in computed.items():
            path, key = files[layer]
            if cache:
                save_data(path, {"values": values, "mask": mask, "tokens": tokens}, key)
            meta = _meta(model, stimuli, window, test, layer, path)
            found[layer] = Activations(values, mask, "raw", tokens, meta)
    return {layer: found[layer] for layer in wanted}


def _meta(
    model: LoadedModel,
    stimuli: StimulusSet,
    window: Window,
    test: bool,
    layer: int,
    path: Path,
) -> dict[str, Any]:
    """Provenance of one layer's extraction (recorded in `Activations.meta`)."""
    return {
        "model": model.name,
        "layer": layer,
        "dtype": str(model.dtype).removeprefix("torch."),
        "window": asdict(window),
        "stimuli": stimuli.name,
        "stimuli_hash": stimuli.content_hash(),
        "split": "test" if test else "items",
        "cache": str(path),
    }


def _forward(
    stimuli: StimulusSet,
    model: LoadedModel,
    items: list[Item],
    window: Window,
    layers: list[int],
    batch_size: int,
    max_batch_tokens: int,
    progress: bool,
) -> dict[int, tuple[np.ndarray, np.ndarray, list[list[str]]]]:
    """layer -> (values [items, size, d_model] float32, mask [items, size], tokens) of
    ``items``, from length-sorted batches, each one forward pass through blocks
    0..max(layers)."""
    ids, slots = tokenize_items(model.tokenizer, items, window)
    values = {
        layer: np.zeros((len(items), window.size, model.d_model), dtype=np.float32)
        for layer in layers
    }
    pad = model.tokenizer.pad_token_id
    names = ",".join(map(str, layers))
    bar = tqdm(
        total=len(items), desc=f"extract {stimuli.name} L{names}", disable=not progress, unit="item"
    )
    for batch in length_batches([len(x) for x in ids], batch_size, max_batch_tokens):
        chunks = [torch.tensor(ids[i]) for i in batch]
        input_ids, attention = next(batch_chunks(chunks, len(chunks), pad))
        streams = model.residuals(input_ids.to(model.device), attention.to(model.device), layers)
        for layer, stream in streams.items():
            hidden = stream.float().cpu().numpy()
            for row, i in enumerate(batch):
                valid = slots[i] >= 0
                values[layer][i, valid] = hidden[row, slots[i][valid]]
        bar.update(len(batch))
    bar.close()
    mask = slots >= 0
    tokens = [
        model.tokenizer.convert_ids_to_tokens([ids[i][j] for j in slots[i] if j >= 0])
        for i in range(len(items))
    ]
    return {layer: (values[layer], mask, tokens) for layer in layers}
